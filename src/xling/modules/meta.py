"""``xling_module.json``: what a stored module is and what it was trained or composed from.

A module folder is a PEFT LoRA folder (``adapter_config.json`` +
``adapter_model.safetensors``, loadable with ``PeftModel.from_pretrained``) plus
this file. Fields:

- ``kind``: ``language``, ``task`` or ``composed``;
- ``base_model`` and ``base_fingerprint``: the base it was trained on (the
  fingerprint is :func:`base_fingerprint`, the same as ``LoadedModel.fingerprint``);
  applying a module to a base with another fingerprint is refused;
- ``language`` (normalised, e.g. ``deu_Latn``), ``task``;
- ``data_hash``: hash of the training data; ``metrics``: free-form scores;
- ``composition``: for composed modules, the recipe (inputs, method, weights,
  options, rank, per-target re-factorisation errors);
- ``checksums``: ``{file name: sha256}`` of the folder's ``.safetensors`` files,
  recorded by :func:`write_meta` (every writer of a module calls it last) and
  checked by :func:`check_weights` wherever a module is read (LoRA and sparse
  modules, ``load_trained``): edited or damaged weights are a one-line error
  naming the folder. Modules written before checksums existed have none and load
  unchecked;
- ``created``, ``xling_version``, and ``extra`` for anything else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xling.errors import XlingError

META_FILE = "xling_module.json"
FORMAT = "xling-module/1"
KINDS = ("language", "task", "composed")


@dataclass
class ModuleMeta:
    kind: str
    base_model: str | None = None
    base_fingerprint: str | None = None
    language: str | None = None
    task: str | None = None
    data_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    created: str | None = None
    xling_version: str | None = None
    composition: dict[str, Any] | None = None
    checksums: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise XlingError(f"module kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.language:
            from xling.data.langcodes import normalize_lang

            self.language = normalize_lang(self.language)
        if self.created is None:
            self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self.xling_version is None:
            from xling import __version__

            self.xling_version = __version__

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "metadata") -> "ModuleMeta":
        if not isinstance(data, dict):
            raise XlingError(f"{source} is not a JSON object")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        extra = dict(kw.pop("extra", None) or {})
        extra.update({k: v for k, v in data.items() if k not in known and k != "format"})
        if "kind" not in kw:
            raise XlingError(f"{source} has no 'kind' (language, task or composed)")
        return cls(**kw, extra=extra)


def read_meta(folder: str | Path) -> ModuleMeta | None:
    """The folder's ``xling_module.json``, or None when it has none (a plain PEFT folder)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    return ModuleMeta.from_dict(load_json_file(path), str(path))


def load_json_file(path: Path):
    """A module's JSON file; bad bytes, bad JSON, deep nesting or huge integers are one line naming it."""
    from xling.data.readers import parse_json

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise XlingError(f"{path}: cannot read it as UTF-8 text ({type(exc).__name__})") from None
    return parse_json(text, path)


def meta_json(meta: ModuleMeta) -> str:
    return json.dumps(meta.to_dict(), indent=2, sort_keys=False, default=str) + "\n"


def base_fingerprint(folder: str | Path) -> str:
    """Fingerprint of a model folder, identical to ``load_model(folder).fingerprint``."""
    from transformers import AutoConfig

    from xling.models.loading import _fingerprint

    folder = Path(folder)
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise XlingError(f"model folder {folder}: cannot read its config ({str(exc).splitlines()[0]})") from None
    return _fingerprint(folder, config)


def write_meta(folder: str | Path, meta: ModuleMeta, filename: str = META_FILE) -> None:
    """Write ``meta`` into ``folder`` with the checksums of the weights now there; call it after the weights."""
    from xling.io import atomic_write_text, file_checksums

    meta.checksums = file_checksums(folder) or None
    atomic_write_text(Path(folder) / filename, meta_json(meta))


def check_weights(folder: str | Path, meta: ModuleMeta | None, filename: str = META_FILE) -> None:
    """Raise :class:`XlingError` when a weights file no longer matches the checksum in ``filename``."""
    from xling.io import checksum_problem

    problem = checksum_problem(folder, meta.checksums if meta is not None else None)
    if problem is not None:
        raise XlingError(f"module {folder}: {problem} in {filename} (edited or damaged since it was written); "
                         f"train or compose it again")
