"""One content cache for every kind of entry xling reuses: keyed by a hash of what made it, checked when read.

:class:`ContentCache` is the policy, a codec the format:

* :class:`TensorCodec`: one tensor in a safetensors file whose metadata holds its sha256
  (:data:`CHECKSUM_KEY`) and the key it was written under (:data:`KEY_KEY`): the embedding cache;
* :class:`JsonCodec`: a JSON file naming its key and the sha256 of its value: the prediction cache;
* :class:`FolderCodec`: a folder some other code wrote in place (a trained module), made reusable by a
  marker file naming its key, its weights checked against the checksums its own record holds.

Keys are the sha256 of canonical JSON (:func:`content_key`). A file entry lives at
``root/<key[:2]>/<key><suffix>``; a folder entry is named by its caller (``name=``). An entry is
used only when it is sound and bound to the key asked for; a damaged or foreign one is one
``xling: note:`` line and a miss (the caller recomputes), an entry of an older xling that names no key
one note per run. Writes are atomic (a temporary beside the entry, then a rename): a reader never sees
half an entry. This module is a leaf: the engine (embeddings) and the recipes use it alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from xling.io import (atomic_path, atomic_write_text, cache_write, checksum_problem, discard, json_digest, note,
                      tensor_digest)

CHECKSUM_KEY = "xling_sha256"  # safetensors metadata: the sha256 of the tensor
KEY_KEY = "xling_key"  # safetensors metadata: the cache key the entry was written under

#: What :meth:`Codec.read` returns for an entry that is simply not this key's (no note): a module
#: folder trained for another recipe, a folder without a marker.
MISS = "miss"
#: ... for an entry written by an older xling, before entries named their key (one note per run).
NO_KEY = "names no key"


def content_key(obj: Any, length: int = 32) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj`` as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _bound(digest: str, want, stored_key, key: str) -> str | None:
    """What is wrong with a file entry's checksum or key (``None``: its value is the one written under ``key``)."""
    if want is None:
        return "has no checksum"
    if digest != want:
        return "failed its checksum"
    if stored_key is None:
        return NO_KEY
    if stored_key != key:
        return f"was written under another key ({str(stored_key)[:12]}...), not {key[:12]}..."
    return None


class Codec:
    """How one kind of entry is written, read and checked."""

    suffix = ""
    discard_damaged = True  # a damaged entry is removed (a folder entry is rewritten in place instead)

    def damaged(self, path: Path, problem: str) -> str:
        return f"cache entry {path} {problem}; recomputing"

    def read(self, path: Path, key: str, **expect) -> tuple[str | None, Any]:
        """``(None, value)`` for a sound entry of ``key``, else ``(what is wrong, None)``."""
        raise NotImplementedError

    def write(self, path: Path, key: str, value, meta: dict | None) -> None:
        raise NotImplementedError


class FileCodec(Codec):
    """An entry that is one file: written beside its place and renamed onto it; a full disk or a read-only
    cache is a note and the run goes on without the entry."""

    def write(self, path: Path, key: str, value, meta: dict | None) -> None:
        if path.is_dir() and not path.is_symlink():
            discard(path)
        with cache_write(path), atomic_path(path) as tmp:
            self.save(tmp, key, value, meta)

    def save(self, tmp: Path, key: str, value, meta: dict | None) -> None:
        raise NotImplementedError


class TensorCodec(FileCodec):
    """One tensor ``name`` in a safetensors file; the metadata holds the caller's fields (as strings), the
    tensor's sha256 (dtype, shape and bytes) and the key. Sound means: that checksum and key, the dtype
    ``dtype``, the ``shape`` asked for (``None`` in it matches any size) and finite values."""

    suffix = ".safetensors"

    def __init__(self, name: str = "embeddings", dtype: str = "float32"):
        self.name = name
        self.dtype = dtype

    def save(self, tmp: Path, key: str, value, meta: dict | None) -> None:
        from safetensors.torch import save_file

        value = value.contiguous()
        metadata = {k: str(v) for k, v in (meta or {}).items()}
        metadata[CHECKSUM_KEY] = tensor_digest({self.name: value})
        metadata[KEY_KEY] = key
        save_file({self.name: value}, str(tmp), metadata=metadata)

    def read(self, path: Path, key: str, shape: tuple | None = None) -> tuple[str | None, Any]:
        import torch
        from safetensors import safe_open

        if not path.is_file():
            return "is not a file", None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if set(f.keys()) != {self.name}:
                    return f"does not hold one {self.name} tensor", None
                t = f.get_tensor(self.name)
        except Exception:  # noqa: BLE001 - any unreadable entry is recomputed
            return "is unreadable", None
        problem = _bound(tensor_digest({self.name: t}), meta.get(CHECKSUM_KEY), meta.get(KEY_KEY), key)
        if problem is not None:
            return problem, None
        if str(t.dtype) != f"torch.{self.dtype}":
            return f"has dtype {str(t.dtype).replace('torch.', '')}, not {self.dtype}", None
        if shape is not None and (t.dim() != len(shape)
                                  or any(w is not None and w != g for w, g in zip(shape, t.shape))):
            return f"has shape {tuple(t.shape)}, not {tuple('?' if w is None else w for w in shape)}", None
        if not bool(torch.isfinite(t).all()):
            return "holds NaN or infinite values", None
        return None, t


class JsonCodec(FileCodec):
    """A JSON file ``{"meta", "key", "sha256", <field>}``: the value is a list under ``field`` and ``sha256`` its
    :func:`~xling.io.json_digest`. Sound means: that checksum and key, a list, and ``valid(value)`` (when given)
    naming no problem."""

    suffix = ".json"

    def __init__(self, field: str = "predictions", what: str = "prediction list"):
        self.field = field
        self.what = what

    def save(self, tmp: Path, key: str, value, meta: dict | None) -> None:
        tmp.write_text(json.dumps({"meta": meta, "key": key, "sha256": json_digest(value), self.field: value}),
                       encoding="utf-8")

    def read(self, path: Path, key: str, valid: Callable[[list], str | None] | None = None) -> tuple[str | None, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            value = data[self.field]
            want, stored_key = data.get("sha256"), data.get("key")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "is unreadable", None
        problem = _bound(json_digest(value), want, stored_key, key)
        if problem is None and not isinstance(value, list):
            problem = f"holds no {self.what}"
        if problem is None and valid is not None:
            problem = valid(value)
        return (problem, None) if problem is not None else (None, value)


class FolderCodec(Codec):
    """A folder written in place by other code (a trained module), reusable once ``marker`` (``{"key",
    "recipe"}``) names the key asked for and every ``required`` file is there. Its files must still match
    the ``checksums`` that ``record`` holds (a record without them checks nothing). The value written is
    the recipe the marker records; the value read is the folder. A damaged folder is not removed: the
    caller writes it anew in place."""

    discard_damaged = False

    def __init__(self, marker: str, required: tuple[str, ...], record: str, what: str = "module",
                 redo: str = "retraining it"):
        self.marker = marker
        self.required = required
        self.record = record
        self.what = what
        self.redo = redo

    def damaged(self, path: Path, problem: str) -> str:
        return f"{self.what} {path}: {problem}; {self.redo}"

    def write(self, path: Path, key: str, value, meta: dict | None = None) -> None:
        atomic_write_text(path / self.marker, json.dumps({"key": key, "recipe": value}, indent=2, default=str) + "\n")

    def read(self, path: Path, key: str) -> tuple[str | None, Any]:
        f = path / self.marker
        if not (f.is_file() and all((path / name).is_file() for name in self.required)):
            return MISS, None
        try:
            if json.loads(f.read_text(encoding="utf-8")).get("key") != key:
                return MISS, None
        except (OSError, ValueError, AttributeError):
            return MISS, None
        try:
            checksums = json.loads((path / self.record).read_text(encoding="utf-8")).get("checksums")
        except (OSError, ValueError, AttributeError):
            return f"has an unreadable {self.record}", None
        problem = checksum_problem(path, checksums if isinstance(checksums, dict) else None)
        return (problem, None) if problem is not None else (None, path)


_LEGACY_NOTED: set[str] = set()  # the caches that have said "written by an older xling" in this run


class ContentCache:
    """Entries of one codec under ``root``, keyed by :meth:`key` (``version`` is part of every key).

    :meth:`get` returns the value of a sound entry bound to the key, else ``None`` (absent, or
    damaged/foreign: one note, the entry discarded, the caller recomputes and writes it with :meth:`put`).
    :meth:`put_background` writes on one background thread (GPU runs: hashing and writing overlap the
    next work); :meth:`get` of that key and :meth:`flush` wait for it.
    """

    def __init__(self, root: str | Path, codec: Codec, version: int, *, name: str = "content", key_length: int = 32):
        self.root = Path(root)
        self.codec = codec
        self.version = version
        self.name = name  # in notes: "<name> cache entry ... not written"
        self.key_length = key_length
        self._pending: dict[str, object] = {}  # key -> Future of a background write
        self._writer = None

    def key(self, obj: dict) -> str:
        """The key of the entry made from ``obj`` (a JSON-able dict), this cache's version included."""
        return content_key({"v": self.version, **obj}, self.key_length)

    def path(self, key: str, name: str | None = None) -> Path:
        """Where the entry lives: ``root/name`` for an entry named by its caller, else by its key."""
        return self.root / name if name is not None else self.root / key[:2] / f"{key}{self.codec.suffix}"

    def get(self, key: str, *, name: str | None = None, **expect):
        """The entry's value, or ``None`` when absent or not to be trusted (see the codec for what is checked)."""
        fut = self._pending.pop(key, None)
        if fut is not None:  # written in the background: wait for it
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - no entry then; the caller recomputes
                return None
        p = self.path(key, name)
        if not os.path.lexists(p):
            return None
        problem, value = self.codec.read(p, key, **expect)
        if problem is None:
            return value
        if problem == MISS:
            return None
        if problem == NO_KEY:  # stale, said once per run
            if self._first_legacy():
                note(f"cache entry {p} and others like it were written by an older xling (no key); recomputing")
        else:
            note(self.codec.damaged(p, problem))
        if self.codec.discard_damaged:
            discard(p)
        return None

    def _first_legacy(self) -> bool:
        """Whether this is the first entry of an older xling this cache meets in this run."""
        first = self.name not in _LEGACY_NOTED
        _LEGACY_NOTED.add(self.name)
        return first

    def put(self, key: str, value, meta: dict | None = None, *, name: str | None = None) -> None:
        """Write the entry atomically (a file entry that cannot be written is a note; the run goes on)."""
        self.codec.write(self.path(key, name), key, value, meta)

    def put_background(self, key: str, value, meta: dict | None = None) -> None:
        """:meth:`put` on one background thread. ``value`` must not change afterwards. :meth:`get` of the same
        key and :meth:`flush` wait for it; so does exit."""
        if self._writer is None:
            import atexit
            from concurrent.futures import ThreadPoolExecutor

            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xling-cache")
            atexit.register(self.flush)
        self._pending[key] = self._writer.submit(self.put, key, value, meta)

    def flush(self) -> None:
        """Wait for every background write; a failed one is one note (the entry is simply absent)."""
        pending, self._pending = self._pending, {}
        for key, fut in pending.items():
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - a cache entry is optional; the run's results stand
                note(f"{self.name} cache entry {key[:12]} not written ({type(exc).__name__}: {exc})")


__all__ = ["ContentCache", "Codec", "FileCodec", "TensorCodec", "JsonCodec", "FolderCodec", "content_key",
           "CHECKSUM_KEY", "KEY_KEY", "MISS", "NO_KEY"]
