"""Bilingual dictionaries (word pairs): FreeDict (dictd format) and TSV, for WECHSEL's Procrustes alignment
(``xling vocab-extend``) and ``xling lens``.

FreeDict dictionaries are Debian packages ``dict-freedict-<src>-<tgt>`` (ISO
639-3 codes, e.g. ``dict-freedict-eng-por``); :func:`freedict` downloads one
with ``apt-get download`` and unpacks it with ``dpkg -x`` under
``cache_dir("debian")`` (:func:`xling.data.debian.fetch_package`, the same cache as the
LibreOffice and Firefox corpora).

The dictd format is two files: ``NAME.index``, one line per headword,
``headword<TAB>offset<TAB>length`` with offset and length in dictd's base-64
digits (``A-Z a-z 0-9 + /``, most significant first), and ``NAME.dict.dz``,
the gzip-compatible (dictzip) text those numbers point into. A FreeDict entry
is the headword line (with pronunciation and part of speech), then one
translation line per sense, optionally numbered (``1. gato``), senses and
synonyms separated by commas or semicolons. Only single-word headwords and
single-word translations are used (word vectors are per word);
``00database*`` entries (metadata) are skipped.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from xling.errors import XlingError

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(B64)}
_NUMBERED = re.compile(r"^\s*\d+\.\s*")
_WORD = re.compile(r"^[^\W\d_](?:[^\W\d_]|['-])*$")


def b64_number(text: str) -> int:
    """A dictd base-64 number (``"jp"`` -> 35 * 64 + 41)."""
    n = 0
    for ch in text.strip():
        if ch not in _B64_VALUE:
            raise ValueError(f"not a dictd base-64 digit: {ch!r}")
        n = n * 64 + _B64_VALUE[ch]
    return n


def parse_entry(text: str) -> tuple[str, list[str]]:
    """(headword, translations) of one FreeDict entry."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "", []
    head = lines[0].split(" /")[0].split(" <")[0].strip()
    out: list[str] = []
    for ln in lines[1:]:
        ln = _NUMBERED.sub("", ln).strip()
        if not ln or ln.lower().startswith(("see:", "synonym", "note:", "example", "antonym")) or ln.startswith(('"', "(")):
            continue
        for part in re.split(r"[;,]", ln):
            word = re.sub(r"\(.*?\)|\[.*?\]", "", part).strip()
            if word and word not in out:
                out.append(word)
    return head, out


def read_dictd(index: str | Path) -> list[tuple[str, str]]:
    """Single-word (source, target) pairs from a dictd ``.index`` and its ``.dict.dz``/``.dict``."""
    index = Path(index)
    if not index.is_file():
        raise XlingError(f"dictionary index not found: {index}")
    stem = index.name[: -len(".index")] if index.name.endswith(".index") else index.stem
    data_path = next((p for p in (index.with_name(stem + ".dict.dz"), index.with_name(stem + ".dict")) if p.is_file()), None)
    if data_path is None:
        raise XlingError(f"{index}: no {stem}.dict.dz or {stem}.dict beside it")
    try:
        raw = gzip.open(data_path).read() if data_path.suffix == ".dz" else data_path.read_bytes()
    except (OSError, EOFError) as exc:
        raise XlingError(f"{data_path}: cannot read dictionary data ({exc})") from None
    pairs: list[tuple[str, str]] = []
    seen = set()
    for n, line in enumerate(index.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith("00database") or fields[0].startswith("00-database"):
            continue
        try:
            off, length = b64_number(fields[1]), b64_number(fields[2])
        except ValueError:
            raise XlingError(f"{index}:{n}: malformed dictd index line") from None
        head, translations = parse_entry(raw[off : off + length].decode("utf-8", errors="replace"))
        if not _WORD.match(head):
            continue
        for t in translations:
            if _WORD.match(t) and (head, t) not in seen:
                seen.add((head, t))
                pairs.append((head, t))
    return pairs


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """Pairs from a ``source<TAB>target`` (or space-separated) file, one pair a line."""
    path = Path(path)
    if not path.is_file():
        raise XlingError(f"dictionary not found: {path}")
    pairs = []
    from xling.data.files import read_text

    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            raise XlingError(f"{path}:{n}: expected SOURCE<TAB>TARGET")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def freedict(src: str, tgt: str) -> Path:
    """The ``.index`` of FreeDict ``src-tgt`` (ISO 639-3), downloaded from Debian on first use."""
    from xling.data.debian import fetch_package

    src, tgt = src.split("_")[0], tgt.split("_")[0]
    pkg = f"dict-freedict-{src}-{tgt}"
    root = fetch_package(pkg)
    found = sorted(root.rglob(f"freedict-{src}-{tgt}.index"))
    if not found:
        raise XlingError(f"Debian package {pkg} has no freedict-{src}-{tgt}.index")
    return found[0]


def load_dictionary(spec: str, src: str, tgt: str) -> list[tuple[str, str]]:
    """``freedict`` (Debian FreeDict src-tgt, or tgt-src reversed), a dictd ``.index``, or a TSV file."""
    if spec == "freedict":
        try:
            return read_dictd(freedict(src, tgt))
        except XlingError as first:
            try:
                return [(b, a) for a, b in read_dictd(freedict(tgt, src))]
            except XlingError:
                raise first from None
    path = Path(spec).expanduser()
    if path.name.endswith(".index"):
        return read_dictd(path)
    return read_tsv(path)
