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
from typing import Callable

import torch

from xling.errors import XlingError

@dataclass
class VocabTensor:
    """One vocabulary-indexed tensor and every place that references it."""

    tensor: torch.Tensor
    dim: int  # the vocabulary dimension
    refs: list[tuple[torch.nn.Module, str, bool]]  # (module, attribute, is_parameter)
    role: str  # input, output, bias


def model_class(config):
    """The class named by ``config.architectures`` (keeps LM heads), else ``AutoModel``."""
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls
    return transformers.AutoModel


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


def _fix_modules(model: torch.nn.Module, old_size: int, new_size: int, pad_map: Callable[[int], int | None]) -> None:
    """Module attributes that describe the vocabulary follow the new matrices: ``num_embeddings`` and
    ``padding_idx`` of the embeddings, ``out_features`` of the head, and the plain ``vocab_size`` /
    ``padding_idx`` copies decoder classes keep of their config (``LlamaForCausalLM.vocab_size``,
    ``LlamaModel.padding_idx``, ``XLMRobertaEmbeddings.padding_idx``), which ``save_pretrained`` does not write but
    in-memory use reads (a reloaded folder takes them from the updated config)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.weight.shape[0] == new_size:
            if module.num_embeddings != new_size:
                module.num_embeddings = new_size
                if module.padding_idx is not None:
                    module.padding_idx = pad_map(module.padding_idx)
        elif isinstance(module, torch.nn.Linear) and module.weight.shape[0] == new_size:
            module.out_features = new_size
        elif old_size != new_size and not isinstance(module, torch.nn.Embedding):  # a position table's padding_idx
            if isinstance(vars(module).get("vocab_size"), int) and module.vocab_size == old_size:
                module.vocab_size = new_size
            pad = vars(module).get("padding_idx")
            if isinstance(pad, int) and pad >= 0:
                module.padding_idx = pad_map(pad)


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
    _fix_modules(model, V, len(keep), lambda old: pos.get(int(old)))
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
    _fix_modules(model, V, new_size, lambda old: old)
    _set_vocab_size(model, new_size)


@torch.no_grad()
def replace_vocab_(model: torch.nn.Module, new_size: int, rows: Callable[[VocabTensor, torch.Tensor], torch.Tensor],
                   new_id: Callable[[int], int | None]) -> None:
    """Give the model another vocabulary of ``new_size`` ids, in place: every vocabulary tensor becomes
    ``rows(vt, old)`` (``new_size`` along ``vt.dim``; tied tensors stay one tensor), and the config's token ids and
    the embeddings' ``padding_idx`` go through ``new_id`` (old id -> new id, None drops it)."""
    V = vocab_rows(model)
    for vt in vocab_tensors(model):
        old = vt.tensor.detach()
        new = rows(vt, old).to(dtype=old.dtype, device=old.device)
        if new.shape[vt.dim] != new_size:
            raise RuntimeError(f"replacement produced {new.shape[vt.dim]} rows, expected {new_size}")
        _replace(vt, new)
        del old
    for module in model.modules():  # as _fix_modules, but ids are remapped also when the size did not change
        if isinstance(module, torch.nn.Embedding) and module.weight.shape[0] == new_size:
            module.num_embeddings = new_size
            if module.padding_idx is not None:
                module.padding_idx = new_id(module.padding_idx)
        elif isinstance(module, torch.nn.Linear) and module.weight.shape[0] == new_size:
            module.out_features = new_size
        elif not isinstance(module, torch.nn.Embedding):
            if isinstance(vars(module).get("vocab_size"), int) and module.vocab_size == V:
                module.vocab_size = new_size
            pad = vars(module).get("padding_idx")
            if isinstance(pad, int) and pad >= 0:
                module.padding_idx = new_id(pad)
    _set_vocab_size(model, new_size)
    remap_token_ids(model, new_id)


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
