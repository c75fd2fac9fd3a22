"""Model surgery for vocabulary changes: find every vocabulary-indexed tensor and rewrite its rows.

Architecture-agnostic: the input embedding comes from ``get_input_embeddings()``
and the output projection from ``get_output_embeddings()`` (``None`` for bare
encoders). Tied weights (one ``Parameter`` object referenced from several
modules: GPT-2's ``lm_head``, T5's ``shared``/``embed_tokens``) are found by
identity and replaced once, so they stay tied; an output bias (``lm_head.bias``,
BERT's ``cls.predictions.bias``, BART's ``final_logits_bias`` buffer) is any
parameter or buffer whose name mentions ``bias`` and that has a dimension of
the vocabulary size. Each tensor is rewritten by one gather
(``index_select``): the new rows are the only extra memory, and the old tensor
is released as soon as its last reference is replaced, so trimming needs at
most about one copy of the embedding matrix on top of the loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from xling.errors import XlingError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
#: Tokenizer files made stale by a new vocabulary; tokenizer.json replaces them.
STALE_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
    "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tekken.json",
)
COPY_FILES = ("special_tokens_map.json", "chat_template.jinja", "chat_template.json")


@dataclass
class VocabTensor:
    """One vocabulary-indexed tensor and every place that references it."""

    tensor: torch.Tensor
    dim: int  # the vocabulary dimension
    refs: list[tuple[torch.nn.Module, str, bool]]  # (module, attribute, is_parameter)
    role: str  # input, output, bias


def resolve_folder(name: str, revision: str | None = None) -> Path:
    """The local folder of a model name (see :func:`xling.models.loading.model_folder`)."""
    from xling.models.loading import model_folder

    return Path(model_folder(name, revision))


def model_class(config):
    """The class named by ``config.architectures`` (keeps LM heads), else ``AutoModel``."""
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls
    return transformers.AutoModel


def load_model_and_tokenizer(name: str, dtype: str = "auto"):
    """(folder, model, tokenizer) with the full architecture (heads kept), safetensors only."""
    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_folder(name)
    if not list(folder.glob("*.safetensors")):
        raise XlingError(f"model {name}: no .safetensors weights in {folder} (xling never loads pickled weights)")
    try:
        config = AutoConfig.from_pretrained(folder)
    except ValueError as exc:
        raise XlingError(f"model {name}: unsupported config ({str(exc).splitlines()[0]})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        raise XlingError(f"model {name}: cannot load its tokenizer ({type(exc).__name__})") from None
    kw = {} if dtype == "auto" else {"dtype": {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]}
    model, info = model_class(config).from_pretrained(folder, use_safetensors=True, output_loading_info=True,
                                                      **({"dtype": "auto"} | kw))
    # weights the class has but the checkpoint lacks (e.g. a pooler) were initialised at random: never save them
    model._xling_missing_keys = sorted(info.get("missing_keys") or [])
    model.eval()
    return folder, model, tokenizer


def vocab_tensors(model: torch.nn.Module) -> list[VocabTensor]:
    """Every tensor with a vocabulary dimension, each once, with all its references."""
    inp = model.get_input_embeddings()
    if inp is None or not hasattr(inp, "weight"):
        raise XlingError(f"{type(model).__name__} has no input embedding matrix")
    V = inp.weight.shape[0]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    roles: dict[int, tuple[torch.Tensor, str, int]] = {id(inp.weight): (inp.weight, "input", 0)}
    if out is not None and getattr(out, "weight", None) is not None and id(out.weight) not in roles:
        if out.weight.shape[0] != V:
            raise XlingError(f"output embeddings have {out.weight.shape[0]} rows but input embeddings {V}")
        roles[id(out.weight)] = (out.weight, "output", 0)
    if out is not None and getattr(out, "bias", None) is not None:
        roles[id(out.bias)] = (out.bias, "bias", 0)
    found: dict[int, VocabTensor] = {}
    for module in model.modules():
        for store, is_param in ((module._parameters, True), (module._buffers, False)):
            for attr, t in store.items():
                if t is None:
                    continue
                if id(t) in roles:
                    tensor, role, dim = roles[id(t)]
                elif "bias" in attr.lower() and V in t.shape and t.dim() <= 2 and t.shape[-1] == V:
                    tensor, role, dim = t, "bias", t.dim() - 1
                else:
                    continue
                vt = found.setdefault(id(t), VocabTensor(tensor, dim, [], role))
                vt.refs.append((module, attr, is_param))
    return list(found.values())


def _replace(vt: VocabTensor, new: torch.Tensor) -> None:
    param = None
    for module, attr, is_param in vt.refs:
        if is_param:
            if param is None:
                param = torch.nn.Parameter(new, requires_grad=vt.tensor.requires_grad)
            module._parameters[attr] = param
        else:
            module._buffers[attr] = new


def _fix_modules(model: torch.nn.Module, new_size: int, pad_map: Callable[[int], int | None]) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.weight.shape[0] == new_size:
            if module.num_embeddings != new_size:
                module.num_embeddings = new_size
                if module.padding_idx is not None:
                    module.padding_idx = pad_map(module.padding_idx)
        elif isinstance(module, torch.nn.Linear) and module.weight.shape[0] == new_size:
            module.out_features = new_size


def vocab_rows(model: torch.nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


@torch.no_grad()
def trim_model_(model: torch.nn.Module, keep: torch.Tensor) -> None:
    """Keep rows ``keep`` (sorted old ids) of every vocabulary tensor, in place; update the config."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    V = vocab_rows(model)
    if keep.numel() == 0 or int(keep.max()) >= V:
        raise XlingError(f"cannot keep ids up to {int(keep.max()) if keep.numel() else -1}: the model has {V} rows")
    pos = {int(o): n for n, o in enumerate(keep.tolist())}
    for vt in vocab_tensors(model):
        idx = keep.to(vt.tensor.device)
        new = vt.tensor.detach().index_select(vt.dim, idx)
        _replace(vt, new)
        del new
    _fix_modules(model, len(keep), lambda old: pos.get(int(old)))
    _set_vocab_size(model, len(keep))
    remap_token_ids(model, lambda old: pos.get(int(old)))


@torch.no_grad()
def extend_model_(model: torch.nn.Module, new_size: int, rows: Callable[[VocabTensor, torch.Tensor], torch.Tensor],
                  first_new: int) -> None:
    """Grow every vocabulary tensor to ``new_size`` rows; rows ``first_new..`` come from ``rows``.

    ``rows(vt, old)`` returns the values of the new rows (``new_size -
    first_new`` of them along ``vt.dim``) given the old tensor. Rows below
    ``first_new`` are kept as they are; unused rows between the tokenizer's end
    and the old matrix end are overwritten.
    """
    V = vocab_rows(model)
    if first_new > V:
        raise XlingError(f"the model has {V} embedding rows but its tokenizer {first_new} tokens")
    for vt in vocab_tensors(model):
        old = vt.tensor.detach()
        fresh = rows(vt, old).to(dtype=old.dtype, device=old.device)
        head = old.narrow(vt.dim, 0, first_new)
        new = torch.cat([head, fresh], dim=vt.dim)
        if new.shape[vt.dim] != new_size:
            raise RuntimeError(f"extension produced {new.shape[vt.dim]} rows, expected {new_size}")
        _replace(vt, new)
    _fix_modules(model, new_size, lambda old: old)
    _set_vocab_size(model, new_size)


def _configs(model) -> list:
    cfgs = [model.config]
    try:
        text = model.config.get_text_config()
    except Exception:
        text = None
    if text is not None and text is not model.config:
        cfgs.append(text)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        cfgs.append(gen)
    return cfgs


def _set_vocab_size(model, size: int) -> None:
    for cfg in _configs(model)[:2]:
        if hasattr(cfg, "vocab_size"):
            cfg.vocab_size = size


_ID_KEYS = ("_token_id", "_token_ids", "suppress_tokens")


def config_token_ids(model) -> set[int]:
    """Every id named by a ``*_token_id(s)`` (or ``*suppress_tokens``) field of the config or generation config."""
    ids: set[int] = set()
    for cfg in _configs(model):
        for key, value in vars(cfg).items():
            if not key.endswith(_ID_KEYS) or value is None:
                continue
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, int) and v >= 0:
                    ids.add(v)
    return ids


def remap_token_ids(model, new_id: Callable[[int], int | None]) -> None:
    """Rewrite ``*_token_id(s)`` fields through ``new_id`` (None drops an id)."""
    for cfg in _configs(model):
        for key, value in list(vars(cfg).items()):
            if not key.endswith(_ID_KEYS) or value is None:
                continue
            if isinstance(value, (list, tuple)):
                mapped = [new_id(v) if isinstance(v, int) and v >= 0 else v for v in value]
                setattr(cfg, key, [v for v in mapped if v is not None])
            elif isinstance(value, int) and value >= 0:
                setattr(cfg, key, new_id(value))


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Unique parameters in total and in vocabulary tensors (tied counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    vocab = sum(vt.tensor.numel() for vt in vocab_tensors(model) if any(r[2] for r in vt.refs))
    return {"total": int(total), "vocabulary": int(vocab), "other": int(total - vocab)}


def folder_bytes(folder: Path) -> dict[str, int]:
    """Bytes on disk: weights, tokenizer files and everything."""
    folder = Path(folder)
    sizes = {"weights": 0, "tokenizer": 0, "total": 0}
    for f in folder.iterdir():
        if not f.is_file():
            continue
        n = f.stat().st_size
        sizes["total"] += n
        if f.name.endswith(WEIGHT_SUFFIXES):
            sizes["weights"] += n
        elif f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")) or f.suffix == ".model":
            sizes["tokenizer"] += n
    return sizes


def save_folder(model, tj: dict, source: Path, dest: Path, new_id: Callable[[int], int | None] | None = None) -> None:
    """Write a standard transformers folder: safetensors weights, config, tokenizer.json.

    The tokenizer config is the source's, minus what names stale files or
    remote code; ``tokenizer_class`` becomes ``TokenizersBackend`` (the fast
    tokenizer loaded from ``tokenizer.json`` verbatim) unless it already is,
    because model-specific classes in transformers 5 rebuild their pipeline
    from the vocabulary and could diverge from the JSON edited here.
    ``added_tokens_decoder`` ids go through ``new_id``.
    """
    import json
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    missing = set(getattr(model, "_xling_missing_keys", ()) or ())
    if missing:
        state = {k: v for k, v in model.state_dict().items() if k not in missing}
        model.save_pretrained(dest, state_dict=state)
    else:
        model.save_pretrained(dest)
    from xling.methods.vocab.tokenizer import build_tokenizer

    build_tokenizer(tj).save(str(dest / "tokenizer.json"))
    cfg = {}
    src_cfg = source / "tokenizer_config.json"
    if src_cfg.is_file():
        try:
            cfg = json.loads(src_cfg.read_text(encoding="utf-8"))
        except ValueError:
            cfg = {}
    for key in ("vocab_file", "merges_file", "tokenizer_file", "auto_map", "spm_file"):
        cfg.pop(key, None)
    if cfg.get("tokenizer_class") not in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        if cfg.get("tokenizer_class"):
            cfg["xling_original_tokenizer_class"] = cfg["tokenizer_class"]
        cfg["tokenizer_class"] = "TokenizersBackend"
    cfg["backend"] = "tokenizers"
    if isinstance(cfg.get("added_tokens_decoder"), dict):
        mapped = {}
        for k, v in cfg["added_tokens_decoder"].items():
            nid = new_id(int(k)) if new_id is not None else int(k)
            if nid is not None:
                mapped[str(nid)] = v
        cfg["added_tokens_decoder"] = mapped
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in COPY_FILES:
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)
    _normal_permissions(dest)


def _normal_permissions(folder: Path) -> None:
    """Give every written file the usual mode (0666 less the umask); some writers leave 0600."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)
