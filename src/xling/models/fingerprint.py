"""Content fingerprints of model folders: every byte that decides the numbers.

A model's fingerprint keys the embedding and prediction caches and names the
base a module was trained on, so it must change whenever the vectors could:

- the config (as transformers reads it);
- every weights file, hashed whole (a ``layer_swap`` or TIES merge written into
  the same folder changes tensors in the middle of the file, which a hash of the
  file's ends would miss);
- the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json``, ``added_tokens.json``, vocab, merges and
  SentencePiece files): a changed normaliser or vocabulary changes the ids;
- every other top-level file of the folder, except hidden files, READMEs and
  licences, xling's manifest, and weights formats xling never reads (pickles,
  GGUF, ONNX...).

Hashing several GB on every run would cost more than a cached run, so each
file's sha256 is remembered in the cache (``hashes/``), keyed by its absolute
path and its (size, mtime_ns, ctime_ns, inode), as the folder manifests of
:mod:`xling.io` are; any write to the file changes that stamp (``ctime`` cannot
be set back), and a file written in the last few seconds is never remembered
(a second write within the file system's timestamp granularity would otherwise
keep the stamp). A folder with a verified ``xling_manifest.json`` (the built-in
models) takes the sha256 recorded there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from xling.errors import XlingError
from xling.io import MANIFEST_NAME, atomic_write_text, cache_dir, manifest_problem, sha256_file

FINGERPRINT_VERSION = 2
#: Files of a model folder that never decide its hidden states.
_SKIP_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".md", ".lock", ".tmp")
_SKIP_PREFIXES = ("readme", "license", "licence", "notice", "copying")
#: A file changed this recently (seconds) may change again within its timestamp granularity: not memoised.
_RACY_S = 3.0

_MEMO: dict[tuple, str] = {}


def _stamp(p: Path) -> tuple[int, int, int, int]:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _memo_path(p: Path) -> Path:
    return cache_dir("hashes") / (hashlib.sha256(str(p).encode()).hexdigest()[:32] + ".json")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a whole file, remembered (in this process and in the cache) per file version."""
    p = Path(path).absolute()
    before = _stamp(p)
    key = (str(p), *before)
    sha = _MEMO.get(key)
    if sha is not None:
        return sha
    mp = _memo_path(p)
    try:
        rec = json.loads(mp.read_text(encoding="utf-8"))
        if rec.get("path") == str(p) and rec.get("stat") == list(before) and isinstance(rec.get("sha256"), str):
            _MEMO[key] = rec["sha256"]
            return rec["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    sha = sha256_file(p)
    after = _stamp(p)
    if after == before and time.time() - max(after[1], after[2]) / 1e9 > _RACY_S:
        _MEMO[key] = sha
        try:
            atomic_write_text(mp, json.dumps({"path": str(p), "stat": list(after), "sha256": sha}))
        except OSError:
            pass  # a read-only cache: hashed again next run
    return sha


def fingerprinted_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The top-level files of ``folder`` that the fingerprint covers (sorted by name)."""
    out = []
    for f in sorted(folder.iterdir()):
        name = f.name.lower()
        if name.startswith(".") or f.name in exclude or f.name == MANIFEST_NAME or not f.is_file():
            continue
        if name.endswith(_SKIP_SUFFIXES) or name.startswith(_SKIP_PREFIXES):
            continue
        out.append(f)
    return out


def _manifest_hashes(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` from the folder's verified manifest, or ``{}``."""
    if not (folder / MANIFEST_NAME).is_file() or manifest_problem(folder) is not None:
        return {}
    try:
        files = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
        return {k: v["sha256"] for k, v in files.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def folder_digest(folder: str | os.PathLike, extra: str = "", exclude: tuple[str, ...] = ()) -> str:
    """sha256 over ``extra`` and the name and whole-content sha256 of every fingerprinted file."""
    folder = Path(folder)
    known = _manifest_hashes(folder)
    h = hashlib.sha256(f"xling-fingerprint-v{FINGERPRINT_VERSION}\0{extra}\0".encode())
    for f in fingerprinted_files(folder, exclude):
        try:
            sha = known.get(f.name) or file_sha256(f)
        except OSError as exc:
            raise XlingError(f"{f}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        h.update(f"{f.name}\0{sha}\0".encode())
    return h.hexdigest()


def model_fingerprint(folder: str | os.PathLike, config) -> str:
    """The fingerprint of a model folder: its config, weights and tokenizer files (16 hex digits)."""
    cfg = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return folder_digest(folder, cfg, exclude=("config.json",))[:16]


# ----------------------------------------------------------------------------- legacy fingerprints

#: Fingerprints already accepted by their legacy value in this process (one note each).
_LEGACY_NOTED: set[tuple[str, str]] = set()


def _legacy_hash_file_ends(h, path: Path) -> None:
    """Feed ``h`` a file's name, size and first and last MiB, as xling did before whole-file hashing."""
    size = path.stat().st_size
    h.update(path.name.encode() + str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(size - (1 << 20))
            h.update(fh.read())


def legacy_model_fingerprint(folder: str | os.PathLike, config) -> str:
    """The fingerprint older xling versions recorded as a module's ``base_fingerprint``: the config
    (``to_dict``, sorted JSON) and, for each ``*.safetensors`` file by name, its name, size and first and
    last MiB (16 hex digits). Weaker than :func:`model_fingerprint`: an edit in the middle of a large
    weights file, or to the tokenizer, leaves it unchanged. Used only to accept modules written before."""
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            _legacy_hash_file_ends(h, f)
        except OSError as exc:
            raise XlingError(f"{f}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    return h.hexdigest()[:16]


def recorded_base_matches(recorded: str | None, folder: str | os.PathLike, current: str, who: str,
                          config=None) -> bool:
    """Whether the base fingerprint ``recorded`` by ``who`` (a module, a trained folder) names the model in
    ``folder``, whose fingerprint is ``current``. Nothing recorded, or ``current``: yes. Otherwise the
    legacy fingerprint of ``folder`` (:func:`legacy_model_fingerprint`) is tried: a module written by an
    older xling matches by it, with one ``xling: note:`` line saying so (once per module and base)."""
    if not recorded or recorded == current:
        return True
    if config is None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise XlingError(f"model folder {folder}: cannot read its config ({str(exc).splitlines()[0]})") from None
    if recorded != legacy_model_fingerprint(folder, config):
        return False
    if (who, current) not in _LEGACY_NOTED:
        _LEGACY_NOTED.add((who, current))
        from xling.io import note

        note(f"{who} was written by an older xling: it is matched to its base by the weaker legacy fingerprint "
             f"{recorded} (config and the first and last MiB of each weights file; now {current}); write it "
             f"again to record the full fingerprint")
    return True
