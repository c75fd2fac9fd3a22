"""The model folder of a vocabulary change: load a model with its tokenizer, write the changed one back.

The surgery itself is pure (:mod:`xling.methods.vocab.model`, :mod:`xling.methods.vocab.tokenizer`); this module
is the file format around it: a standard transformers folder with safetensors weights (never pickles), the config
and a ``tokenizer.json`` that replaces the stale tokenizer files, and the bytes on disk before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from xling.errors import XlingError
from xling.methods.vocab.model import model_class

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
#: Tokenizer files made stale by a new vocabulary; tokenizer.json replaces them.
STALE_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
    "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tekken.json",
)
#: Copied as they are: the chat template, and the licence and notice files a derivative must carry (the Gemma
#: Terms of Use ask for a copy of the terms and the NOTICE with every model derivative; a trimmed or extended model
#: is one).
TOKENIZER_FILES = ("special_tokens_map.json", "chat_template.jinja", "chat_template.json")
COPY_FILES = ("special_tokens_map.json", "chat_template.jinja", "chat_template.json", "LICENSE", "LICENSE.txt",
              "LICENSE.md", "NOTICE", "NOTICE.md", "GEMMA_TERMS.html", "USE_POLICY.md")


def resolve_folder(name: str, revision: str | None = None) -> Path:
    """The local folder of a model name (see :func:`xling.models.loading.model_folder`)."""
    from xling.models.loading import model_folder

    return Path(model_folder(name, revision))


def load_tokenizer(name: str, *, quiet: bool = True):
    """(folder, tokenizer) of a ``--model`` value without reading its weights
    (:func:`xling.models.loading.tokenizer_folder`); remote code is never run."""
    from transformers import AutoTokenizer

    from xling.models.loading import tokenizer_folder

    folder = Path(tokenizer_folder(name, quiet=quiet))
    try:
        return folder, AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:
        raise XlingError(f"model {name}: cannot load its tokenizer ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def load_model_and_tokenizer(name: str, dtype: str = "auto", timings: dict | None = None):
    """(folder, model, tokenizer) with the full architecture (heads kept), safetensors only.

    ``timings``, when given, receives the seconds the tokenizer and the model took to load (``tokenizer``,
    ``model``, ``total``; the folder already prepared)."""
    import time

    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_folder(name)
    t0 = time.perf_counter()
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
    t1 = time.perf_counter()
    kw = {} if dtype == "auto" else {"dtype": {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]}
    model, info = model_class(config).from_pretrained(folder, use_safetensors=True, output_loading_info=True,
                                                      **({"dtype": "auto"} | kw))
    # weights the class has but the checkpoint lacks (e.g. a pooler) were initialised at random: never save them
    model._xling_missing_keys = sorted(info.get("missing_keys") or [])
    model.eval()
    if timings is not None:
        t2 = time.perf_counter()
        timings.update(tokenizer=round(t1 - t0, 4), model=round(t2 - t1, 4), total=round(t2 - t0, 4))
    return folder, model, tokenizer


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


def save_folder(model, tj: dict, source: Path, dest: Path, new_id: Callable[[int], int | None] | None = None, *,
                tokenizer_config: dict | None = None, copy_tokenizer_files: bool = True,
                extra_notices: tuple[Path, ...] = ()) -> None:
    """Write a standard transformers folder: safetensors weights, config, tokenizer.json.

    The tokenizer config is the source's (or ``tokenizer_config``), minus what names stale files or
    remote code; ``tokenizer_class`` becomes ``TokenizersBackend`` (the fast
    tokenizer loaded from ``tokenizer.json`` verbatim) unless it already is,
    because model-specific classes in transformers 5 rebuild their pipeline
    from the vocabulary and could diverge from the JSON edited here.
    ``added_tokens_decoder`` ids go through ``new_id``. The source's chat template and special-tokens map are
    copied unless ``copy_tokenizer_files`` is false (a tokenizer from elsewhere); the licence and notice files of
    the source and then of each of ``extra_notices`` are copied (a transplanted model carries those of the model
    and of the tokenizer's donor; a file of the same name with other content is kept as ``<folder>-<name>``).
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
    cfg = dict(tokenizer_config) if tokenizer_config is not None else {}
    src_cfg = source / "tokenizer_config.json"
    if tokenizer_config is None and src_cfg.is_file():
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
        if name in TOKENIZER_FILES and not copy_tokenizer_files:
            continue
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)
    for folder in extra_notices:
        for name in COPY_FILES:
            src = Path(folder) / name
            if name in TOKENIZER_FILES or not src.is_file():
                continue
            target = dest / name
            if target.exists():
                if target.read_bytes() == src.read_bytes():
                    continue
                target = dest / f"{Path(folder).name}-{name}"
            if not target.exists():
                shutil.copyfile(src, target)
    _normal_permissions(dest)


def _normal_permissions(folder: Path) -> None:
    """Give every written file the usual mode (0666 less the umask); some writers leave 0600."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)


__all__ = ["COPY_FILES", "STALE_TOKENIZER_FILES", "TOKENIZER_FILES", "WEIGHT_SUFFIXES", "folder_bytes",
           "load_model_and_tokenizer",
           "load_tokenizer", "resolve_folder", "save_folder"]
