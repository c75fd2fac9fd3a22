"""Small IO helpers shared by every layer: the cache folder and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import platformdirs


def cache_dir(*parts: str) -> Path:
    """The xling cache folder (``$XLING_CACHE`` or the user cache dir), created on demand."""
    root = os.environ.get("XLING_CACHE") or platformdirs.user_cache_dir("xling")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and folders. On any exception the temporary is removed, so a
    reader never sees a half-written output.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir():
            _replace_folder(tmp_path, target)
        else:
            os.replace(tmp_path, target)
    except BaseException:
        import shutil

        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()
        raise


def _replace_folder(tmp: Path, target: Path, attempts: int = 50) -> None:
    """Rename the finished folder ``tmp`` onto ``target``, replacing an existing folder whole.

    A folder cannot be renamed onto a non-empty one, so the old one is first moved
    aside under a unique name. Concurrent writers of the same target each retry until
    their own rename lands: the last one wins and the folder is always one writer's
    whole output, never a mix, and no writer fails with "Directory not empty".
    """
    import errno
    import shutil

    aside: list[Path] = []
    try:
        for _ in range(attempts):
            try:
                os.rename(tmp, target)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            try:
                if target.is_dir() and not target.is_symlink():
                    os.rename(target, old)  # replaces the empty placeholder ``old``
                else:
                    os.rmdir(old)
                    os.replace(target, old)
            except FileNotFoundError:  # another writer moved it first: try again
                with contextlib.suppress(OSError):
                    os.rmdir(old)
                continue
            aside.append(old)
        raise OSError(f"could not replace {target}: other writers kept replacing it")
    finally:
        for old in aside:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    old.unlink()


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def note(message: str) -> None:
    """One ``xling: note: ...`` line on stderr (a recoverable problem, e.g. a damaged cache entry)."""
    import sys

    print("xling: note: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing) for the block.

    With ``wait=False`` a lock held by another process raises :class:`BlockingIOError`
    at once. The lock is released when the block ends or the process dies; the lock
    file itself is left in place (removing it would race with a waiting process).
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_for(target: str | os.PathLike) -> Path:
    """The lock file guarding ``target``: ``cache_dir("locks")/<hash of its absolute path>.lock``.

    Kept in the cache rather than beside ``target`` so that output and cache folders
    hold no stray lock files.
    """
    key = hashlib.sha256(str(Path(target).expanduser().absolute()).encode()).hexdigest()[:24]
    return cache_dir("locks") / f"{Path(target).name[:40]}-{key}.lock"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, *, wait: bool = True) -> Iterator[Path]:
    """One run at a time writes the output folder ``out`` (a lock from :func:`lock_for`).

    Recipes that write their files one by one into ``--out`` (align, eval, predict,
    transfer) hold it while writing, so concurrent runs never leave a folder mixing
    one run's ``run.json`` with another's report: the folder holds the files of the
    last run to finish. ``wait=False`` refuses at once with a one-line
    :class:`~xling.errors.XlingError` when another run holds it (``xling transfer``
    holds it for the whole run, because it trains modules inside ``--out``).
    """
    from xling.errors import XlingError

    out = Path(out)
    try:
        with file_lock(lock_for(out), wait=wait):
            yield out
    except BlockingIOError:
        raise XlingError(f"another xling run is writing {out}; wait for it to finish or choose another --out") from None


# ----------------------------------------------------------------------------- folder manifests
#
# A folder written once and read many times (a converted model, a cached package tree)
# carries ``xling_manifest.json``: the size and sha256 of every file in it. Reading it
# back, :func:`manifest_problem` re-hashes the files and names the first difference.
# Re-hashing a folder of several hundred MB takes about a second, so a verified state
# is remembered in ``.xling_manifest.stamp`` beside the manifest: (size, mtime_ns,
# ctime_ns, inode) of every file plus the manifest's own hash. A later check whose
# files all have the same stamp trusts the earlier verification and hashes nothing;
# any write to a file changes its mtime/ctime and forces a full re-hash. (ctime cannot
# be set back by ``touch``, so an edit that restores the mtime is still caught.)

MANIFEST_NAME = "xling_manifest.json"
_STAMP_NAME = ".xling_manifest.stamp"
MANIFEST_VERSION = 1


def _manifest_files(folder: Path) -> list[str]:
    skip = {MANIFEST_NAME, _STAMP_NAME}
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if rel in skip or p.is_dir():
            continue
        out.append(rel)
    return sorted(out)


def _stat_key(p: Path) -> list[int]:
    st = p.lstat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _write_stamp(folder: Path, manifest_bytes: bytes, files: list[str]) -> None:
    import json

    stamp = {
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "files": {rel: _stat_key(folder / rel) for rel in files},
    }
    try:
        atomic_write_text(folder / _STAMP_NAME, json.dumps(stamp))
    except OSError:
        pass  # a read-only folder is verified every time


def write_manifest(folder: str | os.PathLike) -> dict:
    """Hash every file under ``folder`` into ``folder/xling_manifest.json``; return the manifest.

    Call it last, once the folder holds its final content (and before renaming a
    temporary folder into place: the stamp survives the rename).
    """
    import json

    folder = Path(folder)
    files = _manifest_files(folder)
    manifest = {
        "version": MANIFEST_VERSION,
        "files": {rel: {"size": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)} for rel in files},
    }
    data = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    atomic_write_bytes(folder / MANIFEST_NAME, data)
    _write_stamp(folder, data, files)
    return manifest


def manifest_problem(folder: str | os.PathLike, *, use_stamp: bool = True) -> str | None:
    """``None`` when ``folder`` matches its manifest, else a short reason (for a note or an error).

    Missing, added, resized or changed files and a missing or unreadable manifest are
    all problems. ``use_stamp=False`` always re-hashes.
    """
    import json

    folder = Path(folder)
    mpath = folder / MANIFEST_NAME
    if not folder.is_dir():
        return "is not a folder"
    try:
        data = mpath.read_bytes()
        manifest = json.loads(data)
        expected = manifest["files"]
        if not isinstance(expected, dict):
            raise TypeError
    except FileNotFoundError:
        return f"has no {MANIFEST_NAME}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable {MANIFEST_NAME}"
    files = _manifest_files(folder)
    extra = sorted(set(files) - set(expected))
    if extra:
        return f"holds {extra[0]}, which is not in its manifest"
    missing = sorted(set(expected) - set(files))
    if missing:
        return f"lacks {missing[0]}"
    if use_stamp:
        try:
            stamp = json.loads((folder / _STAMP_NAME).read_text(encoding="utf-8"))
            if stamp.get("manifest_sha256") == hashlib.sha256(data).hexdigest() and stamp.get("files") == {
                rel: _stat_key(folder / rel) for rel in files
            }:
                return None
        except (OSError, ValueError, AttributeError):
            pass
    for rel in files:
        want = expected[rel]
        try:
            p = folder / rel
            if not isinstance(want, dict) or p.stat().st_size != want.get("size"):
                return f"has {rel} of the wrong size"
            if sha256_file(p) != want.get("sha256"):
                return f"has {rel}, which failed its checksum"
        except OSError:
            return f"has an unreadable {rel}"
    _write_stamp(folder, data, files)
    return None


def verify_manifest(folder: str | os.PathLike, *, use_stamp: bool = True) -> bool:
    """True when ``folder`` holds exactly the files of its ``xling_manifest.json``, unchanged."""
    return manifest_problem(folder, use_stamp=use_stamp) is None


# ----------------------------------------------------------------------------- cache entries


def discard(path: str | os.PathLike) -> None:
    """Remove a cache entry whatever it has become (file, folder, link); never raises."""
    import shutil

    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def tensor_digest(tensors) -> str:
    """sha256 of named tensors: names, dtypes, shapes and the raw bytes (``{name: tensor}``)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def json_digest(obj) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces)."""
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_SHA_MEMO: dict[tuple, str] = {}


def file_checksums(folder: str | os.PathLike, pattern: str = "*.safetensors") -> dict[str, str]:
    """``{file name: sha256}`` of the files of ``folder`` matching ``pattern`` (top level only)."""
    folder = Path(folder)
    return {p.name: _sha256_memo(p) for p in sorted(folder.glob(pattern)) if p.is_file()}


def _sha256_memo(p: Path) -> str:
    """sha256 of ``p``, remembered for this process while its (size, mtime, ctime, inode) stay the same."""
    key = (str(p.absolute()), *_stat_key(p))
    sha = _SHA_MEMO.get(key)
    if sha is None:
        sha = _SHA_MEMO[key] = sha256_file(p)
    return sha


def checksum_problem(folder: str | os.PathLike, checksums: dict | None) -> str | None:
    """Which recorded file of ``folder`` is missing or no longer matches its sha256 (``None``: all match).

    ``checksums`` is ``{file name: sha256}`` as written by :func:`file_checksums`;
    ``None`` (an artefact written before checksums were recorded) checks nothing.
    """
    if not checksums:
        return None
    folder = Path(folder)
    for name, want in sorted(checksums.items()):
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        try:
            if _sha256_memo(p) != want:
                return f"{name} does not match its recorded sha256"
        except OSError:
            return f"{name} is unreadable"
    return None
