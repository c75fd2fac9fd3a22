"""GGUF checkpoints into safetensors transformers folders, once.

transformers reads GGUF files (``from_pretrained(folder, gguf_file=name)``,
with the PyPI package ``gguf``) by dequantising every tensor to float, which
takes tens of seconds to minutes. :func:`convert_gguf` does it once and saves a
plain transformers folder (``model.safetensors``, ``config.json``, tokenizer,
``xling_manifest.json`` with the sha256 of every file, ``xling_source.json``
naming the GGUF and its sha256); later loads read the folder in seconds. The
weights are the dequantised GGUF values in float32, not the upstream bf16
checkpoint, and nothing is lost: they are exactly what transformers' own GGUF
load computes (``tests/test_gguf.py`` checks the logits).

:func:`gguf_model_folder` does this for any local ``.gguf`` file (``--model
path/to/model.gguf``), cached by the file's sha256; the built-in decoders
(:mod:`xling.models.builtin`) assemble their GGUF from pinned PyPI wheels first.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

from xling.deps import require
from xling.errors import XlingError
from xling.io import atomic_path, cache_dir, file_lock, lock_for, manifest_problem, note, sha256_file, write_manifest

SOURCE_JSON = "xling_source.json"
FORMAT = "xling-gguf/1"


def _plain(model) -> None:
    """Drop the GGUF quantisation record so the dequantised model saves as ordinary safetensors."""
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, extra_files: dict[str, bytes] | None = None,
                 source: dict | None = None, quiet: bool = False) -> Path:
    """Convert one GGUF file into the transformers folder ``out_dir`` (written atomically).

    ``extra_files`` (name -> bytes, e.g. a licence) are stored in the folder too;
    ``source`` is recorded in ``xling_source.json``.
    """
    require("gguf", "reading GGUF checkpoints")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise XlingError(f"GGUF file not found: {gguf_path}")
    with open(gguf_path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise XlingError(f"{gguf_path}: not a GGUF file (no GGUF magic number)")
    hf_logging.set_verbosity_error()
    if quiet:
        hf_logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:  # transformers' config validation (hidden size not a multiple of the heads, ...)
        from huggingface_hub.errors import StrictDataclassError as config_error
    except ImportError:
        config_error = ValueError
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, IndexError, OSError, EOFError, OverflowError, RuntimeError, struct.error,
            config_error) as exc:
        # a truncated or damaged file fails in the GGUF reader (struct.error, OverflowError) or in the weight load
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise XlingError(f"{gguf_path}: transformers cannot read this GGUF ({first[:200]})") from None
    _plain(model)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for fname, data in (extra_files or {}).items():
            (tmp / fname).write_bytes(data)
        meta = {"format": FORMAT, "gguf_file": name, **(source or {})}
        (tmp / SOURCE_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        write_manifest(tmp)
    del model
    return out_dir


def folder_ok(folder: Path, sha256: str, *, quiet: bool = False) -> bool:
    """Whether ``folder`` is a complete conversion of the GGUF with ``sha256`` whose files are unchanged."""
    try:
        meta = json.loads((folder / SOURCE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("format") != FORMAT or meta.get("gguf_sha256") != sha256:
        return False
    problem = manifest_problem(folder)
    if problem is not None:
        if not quiet:
            note(f"converted model {folder} {problem}; converting it again")
        return False
    return True


def gguf_model_folder(gguf_path: str | Path, *, quiet: bool = False) -> Path:
    """The converted folder of a local ``.gguf`` file (cached by its sha256)."""
    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file():
        raise XlingError(f"GGUF file not found: {gguf_path}")
    sha = sha256_file(gguf_path)
    target = cache_dir("models") / f"gguf-{gguf_path.stem[:40]}-{sha[:12]}"
    if folder_ok(target, sha):
        return target
    with file_lock(lock_for(target)):
        if folder_ok(target, sha, quiet=True):
            return target
        if target.exists():
            shutil.rmtree(target)
        if not quiet:
            print(f"xling: converting {gguf_path.name} to a safetensors folder (once): {target}", file=sys.stderr)
        return convert_gguf(gguf_path, target, source={"gguf_sha256": sha}, quiet=quiet)


__all__ = ["convert_gguf", "gguf_model_folder", "folder_ok", "SOURCE_JSON"]
