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
    path = Path(cache_root(), *parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a read-only parent: one line, not a traceback
        from xling.errors import XlingError

        raise XlingError(f"cannot use the xling cache folder {path}: {_os_reason(exc)}; "
                         f"set XLING_CACHE to a writable folder") from None
    if not path.is_dir():
        from xling.errors import XlingError

        raise XlingError(f"cannot use the xling cache folder {path}: it is not a folder; "
                         f"set XLING_CACHE to a writable folder")
    return path


def cache_root() -> Path:
    """Where the xling cache lives (``$XLING_CACHE`` or the user cache dir); nothing is created."""
    return Path(os.environ.get("XLING_CACHE") or platformdirs.user_cache_dir("xling")).expanduser()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and folders. On any exception the temporary is removed, so a
    reader never sees a half-written output.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
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
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".old", dir=target.parent))
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

    from xling.textsafe import term

    print("xling: note: " + term(" ".join(str(message).split())), file=sys.stderr, flush=True)


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
    try:
        folder = cache_dir("locks")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError
    except Exception:  # a read-only or unusable cache: the locks go to the temporary folder instead
        folder = Path(tempfile.gettempdir(), f"xling-locks-{os.getuid() if hasattr(os, 'getuid') else 0}")
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{Path(target).name[:40]}-{key}.lock"


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
    skip = {MANIFEST_NAME, _STAMP_NAME, OUTPUT_RECORD}
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


# ----------------------------------------------------------------------------- output folders
#
# An output folder (``--out``, ``--save-embeddings``) is xling's only when xling wrote
# it: every folder a command writes carries ``.xling-output.json`` (the command, the
# xling version, when). :func:`check_output_target` runs at a command's edge, before
# any work: it refuses a path that is a file, a non-empty folder without that record
# (a user's own folder) unless ``overwrite``, the cache folder, a folder inside it or
# any parent of it, the working folder or a parent of it, and a path whose parent
# cannot be written. :func:`output_folder` then builds the new folder aside (a hidden
# temporary beside it) and swaps it in whole at the end: a failure (a full disk, an
# exception, Ctrl-C) leaves the old folder as it was. Temporaries are named
# ``.<name>.xling-tmp-<host>-<pid>-...``; the next write into the same parent removes
# those whose process is gone (``kill -9``), and never anything else.

OUTPUT_RECORD = ".xling-output.json"
_TEMP_TAG = ".xling-tmp-"
# errno values that mean "the disk or the permissions stop this write": one line, exit 2
_WRITE_ERRNOS = frozenset(
    getattr(__import__("errno"), n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG")
    if hasattr(__import__("errno"), n))
_SWEPT: set[str] = set()


def _host_tag() -> str:
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(target: Path) -> str:
    """``.<name>.xling-tmp-<host>-<pid>-``: whose temporary it is, for :func:`sweep_stale_temporaries`."""
    return f".{target.name[:80]}{_TEMP_TAG}{_host_tag()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def sweep_stale_temporaries(parent: str | os.PathLike, *, again: bool = False) -> list[Path]:
    """Remove xling temporaries in ``parent`` left by a process of this host that is gone (``kill -9``).

    Only names of the form ``.<name>.xling-tmp-<host>-<pid>-<random>.tmp|.old`` whose
    ``<host>`` is this machine and whose ``<pid>`` runs no process are removed; a live
    writer's temporary, another machine's, and anything else stay. Done once per
    folder and process (``again=True`` forces it); never raises. Returns what was removed.
    """
    import re
    import shutil

    parent = Path(parent)
    key = str(parent.absolute())
    if key in _SWEPT and not again:
        return []
    _SWEPT.add(key)
    pattern = re.compile(r"^\..*" + re.escape(_TEMP_TAG) + r"([0-9a-f]{8})-(\d+)-[A-Za-z0-9_]+\.(tmp|old)$")
    host, me, removed = _host_tag(), os.getpid(), []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or m.group(1) != host or int(m.group(2)) == me or _pid_alive(int(m.group(2))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _os_reason(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EFBIG) or exc.errno == getattr(errno, "EDQUOT", None):
        return "the disk is full (or a size limit was reached)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if isinstance(exc, FileExistsError) or exc.errno == errno.ENOTDIR:
        return "a file is in the way"
    return exc.strerror or str(exc)


def write_error_line(exc: BaseException) -> str | None:
    """The one line for an :class:`OSError` that stops a write (full disk, quota, read-only, permission),
    naming the path; ``None`` for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in _WRITE_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else None
    return f"cannot write {where}: {_os_reason(exc)}" if where else f"cannot write: {_os_reason(exc)}"


def _within(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or inside it (both resolved)."""
    return a == b or b in a.parents


def output_record(folder: str | os.PathLike) -> dict | None:
    """The ``.xling-output.json`` of ``folder`` (``None``: absent or unreadable)."""
    import json

    try:
        rec = json.loads((Path(folder) / OUTPUT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("written_by") == "xling" else None


def mark_output(folder: str | os.PathLike, command: str) -> Path:
    """Write ``.xling-output.json`` into ``folder`` (created if missing): xling wrote this folder."""
    import json
    from datetime import datetime, timezone

    from xling import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"written_by": "xling", "command": command, "xling_version": __version__,
           "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(folder / OUTPUT_RECORD, json.dumps(rec, indent=1) + "\n")
    return folder / OUTPUT_RECORD


def check_output_target(out: str | os.PathLike, *, overwrite: bool = False, command: str = "xling",
                        flag: str = "--out") -> Path:
    """Refuse, in one :class:`~xling.errors.XlingError` line, an output folder that is not xling's to write.

    Called at a command's edge, before any work. Refused: ``out`` is a file (never
    replaced by a folder, even with ``overwrite``); ``out`` is a non-empty folder
    without ``.xling-output.json`` (unless ``overwrite``); ``out`` is the xling cache
    folder, inside it or a parent of it, or the working folder or a parent of it (even
    with ``overwrite``); the nearest existing parent is not a writable folder.
    Returns ``out``.
    """
    from xling.errors import XlingError

    out = Path(out).expanduser()
    real = Path(os.path.realpath(out))
    cache = Path(os.path.realpath(cache_root()))
    if _within(real, cache):
        raise XlingError(f"{flag} {out} is {'the xling cache folder' if real == cache else 'inside the xling cache folder'}"
                         f" ({cache}); choose a folder outside it")
    if _within(cache, real):
        raise XlingError(f"{flag} {out} holds the xling cache folder ({cache}); choose another folder")
    with contextlib.suppress(OSError):
        if _within(Path(os.path.realpath(os.getcwd())), real):
            raise XlingError(f"{flag} {out} is the working folder or a parent of it; choose a new folder inside it")
    if os.path.lexists(out) and not out.is_dir():
        raise XlingError(f"{flag} {out} is a file, not a folder; xling never replaces a file with a folder: "
                         f"choose another path")
    if out.is_dir() and not overwrite and output_record(out) is None:
        try:
            nonempty = next(os.scandir(out), None) is not None
        except OSError as exc:
            raise XlingError(f"{flag} {out} cannot be read: {_os_reason(exc)}") from None
        if nonempty:
            raise XlingError(f"{flag} {out} is a folder with files that xling did not write; refusing to overwrite "
                             f"it: choose a new or empty folder, or pass --overwrite to replace it")
    parent = real.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise XlingError(f"{flag} {out} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise XlingError(f"{flag} {out} cannot be written: the folder {parent} is not writable")
    return out


@contextlib.contextmanager
def output_folder(out: str | os.PathLike, *, command: str, overwrite: bool = False,
                  keep: tuple[str, ...] = (), flag: str = "--out") -> Iterator[Path]:
    """Write the output folder ``out`` aside and swap it in whole: yields the temporary path to fill.

    The yielded path does not exist yet: the writer creates it (``mkdir`` or
    :func:`atomic_path`). On success ``.xling-output.json`` is added and the folder
    replaces ``out`` whole (:func:`_replace_folder`); on any failure ``out`` is left as
    it was. Holds :func:`output_lock` throughout (concurrent runs leave one run's whole
    folder) and re-checks ``out`` under it (:func:`check_output_target`). ``keep``:
    entries of the old folder carried over into the new one just before the swap (the
    fine-tuned models of ``xling matrix``). A full disk, a quota, a read-only or
    unwritable folder is one :class:`~xling.errors.XlingError` line naming ``out``.
    """
    from xling.errors import XlingError

    out = Path(out).expanduser()
    check_output_target(out, overwrite=overwrite, command=command, flag=flag)
    try:
        with output_lock(out):
            check_output_target(out, overwrite=overwrite, command=command, flag=flag)
            with atomic_path(out) as tmp:
                yield tmp
                tmp.mkdir(parents=True, exist_ok=True)
                for name in keep:
                    old = out / name
                    if out.is_dir() and os.path.lexists(old) and not os.path.lexists(tmp / name):
                        os.rename(old, tmp / name)
                mark_output(tmp, command)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        raise XlingError(f"cannot write {out}: {_os_reason(exc)}; the earlier {out} (if any) is unchanged") from None


_CACHE_WRITE_NOTED: set[str] = set()


@contextlib.contextmanager
def cache_write(path: str | os.PathLike) -> Iterator[None]:
    """Writing a cache entry: a full disk, a quota, a read-only or unwritable cache folder is a one-line
    note (once per reason and process) and the run goes on without the entry; other errors propagate."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        reason = _os_reason(exc)
        if reason not in _CACHE_WRITE_NOTED:
            _CACHE_WRITE_NOTED.add(reason)
            note(f"cache entry {path} not written ({reason}); going on without it (later entries: no further note)")
