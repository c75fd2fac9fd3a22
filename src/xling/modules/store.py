"""The module store: a folder of named modules: LoRA (PEFT folders with ``xling_module.json``)
and sparse LT-SFT diffs (``sparse_diff.safetensors`` with ``xling_sft.json``).

Default location: ``cache_dir("modules")`` (``$XLING_CACHE/modules``). A module is
referred to by its folder name in the store, or by any path to a module folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from xling.errors import XlingError
from xling.io import atomic_path, cache_dir, sha256_file
from xling.modules.lora import CONFIG_FILE, WEIGHTS_FILE, LoraModule
from xling.modules.meta import META_FILE, ModuleMeta, write_meta
from xling.modules.sparse import SFT_FILE, SFT_META, SparseModule, is_sparse_module, summarize_sparse

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or name in (".", ".."):
        raise XlingError(f"invalid module name '{name}' (letters, digits, . _ + -; no slashes)")
    return name


class ModuleStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else cache_dir("modules")

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and _is_module(p))

    def path(self, name: str) -> Path:
        """Folder of module ``name``; a clear error listing the available ones if absent."""
        p = self.root / name
        if _NAME.match(name) and _is_module(p):
            return p
        names = self.names()
        hint = f" (available: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if names \
            else " (the store is empty)"
        raise XlingError(f"no module '{name}' in {self.root}{hint}")

    def resolve(self, ref: str | Path) -> Path:
        """A module folder from a path (if it exists) or a store name."""
        p = Path(ref).expanduser()
        if p.is_dir():
            if not _is_module(p):
                raise XlingError(f"{p} is not a module folder (no {CONFIG_FILE} or {SFT_FILE})")
            return p
        if any(sep in str(ref) for sep in ("/", "\\")):
            raise XlingError(f"module folder not found: {ref}")
        return self.path(str(ref))

    def add(self, src: str | Path, name: str, meta: ModuleMeta | None = None, *, overwrite: bool = False) -> Path:
        """Copy a PEFT LoRA folder into the store as ``name`` (atomically), with ``meta`` if given."""
        check_name(name)
        src = Path(src)
        sparse = is_sparse_module(src)
        m = SparseModule(src) if sparse else LoraModule(src)  # validates
        dst = self.root / name
        if dst.exists() and not overwrite:
            raise XlingError(f"module '{name}' already exists in {self.root} (pass overwrite to replace it)")
        meta = meta or m.meta
        meta_file = SFT_META if sparse else META_FILE
        with atomic_path(dst) as tmp:
            tmp.mkdir(parents=True)
            for f in src.iterdir():  # weights, config, a task module's head, tokenizer and training record
                if f.is_file() and f.name != meta_file and f.suffix in (".json", ".safetensors", ".md", ".model", ".txt"):
                    shutil.copy2(f, tmp / f.name)
            if meta is not None:
                meta.name = name
                write_meta(tmp, meta, meta_file)
        return dst

    def remove(self, name: str) -> None:
        shutil.rmtree(self.path(name))

    def list(self) -> list[dict]:
        """One summary row per module (unreadable modules are listed with their error)."""
        rows = []
        for name in self.names():
            try:
                rows.append(summarize(self.root / name, name))
            except XlingError as exc:
                rows.append({"name": name, "error": str(exc)})
        return rows


def _is_module(p: Path) -> bool:
    return (p / CONFIG_FILE).is_file() or (p / SFT_FILE).is_file()


def summarize(folder: str | Path, name: str | None = None, *, with_hash: bool = False) -> dict:
    """What ``xling modules show`` prints: metadata plus the module's shape facts (LoRA or sparse)."""
    if is_sparse_module(folder) and not (Path(folder) / CONFIG_FILE).is_file():
        return summarize_sparse(folder, name, with_hash=with_hash)
    m = LoraModule(folder, name)
    try:
        meta = m.meta.to_dict() if m.meta else None
        leaves = sorted({t.module.rsplit(".", 1)[-1] for t in m.targets.values()})
        row = {
            "name": m.name,
            "path": str(m.path),
            "type": "lora",
            "kind": m.meta.kind if m.meta else None,
            "language": m.meta.language if m.meta else None,
            "task": m.meta.task if m.meta else None,
            "base_model": m.base_model,
            "base_fingerprint": m.base_fingerprint,
            "ranks": m.ranks,
            "alpha": m.config.get("lora_alpha"),
            "targets": len(m.targets),
            "target_modules": leaves,
            "params": m.num_params,
            "fan_in_fan_out": bool(m.config.get("fan_in_fan_out")),
            "meta": meta,
        }
        if with_hash:
            row["sha256"] = sha256_file(m.path / WEIGHTS_FILE)
        return row
    finally:
        m.close()
