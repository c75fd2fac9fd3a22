"""gettext ``.po`` catalogs and UI-message cleaning, shared by the built-in corpora.

:func:`parse_po` reads a catalog (``msgctxt``, ``msgid``, ``msgid_plural``,
``msgstr[n]``, multi-line strings, C escapes; the header entry and obsolete
``#~`` entries are skipped); :func:`clean_message` strips placeholders and
markup from a UI message (Django, Firefox and LibreOffice strings alike), and
:func:`english_ok` says whether a cleaned English message is a usable sentence.

The corpora cache what these produce: a change here means bumping their ``PARSER_VERSION``.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from xling.data.files import read_text
from xling.errors import XlingError


# --------------------------------------------------------------------------
# gettext .po parsing
# --------------------------------------------------------------------------


@dataclass
class PoEntry:
    """One message of a .po catalog."""

    msgid: str
    msgstr: list[str]
    msgctxt: str | None = None
    msgid_plural: str | None = None
    flags: set[str] = field(default_factory=set)
    line: int = 0

    @property
    def fuzzy(self) -> bool:
        return "fuzzy" in self.flags

    @property
    def translation(self) -> str:
        """The singular translation (``msgstr`` or ``msgstr[0]``)."""
        return self.msgstr[0] if self.msgstr else ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.msgctxt or "", self.msgid)


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    '"': '"',
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "'": "'",
    "?": "?",
}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.S)
_BARE_QUOTE = re.compile(r'(?<!\\)(?:\\\\)*"')
_KEYWORD_RE = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(.*)$")


def _unquote(text: str, where: str) -> str:
    """Decode one C-style quoted string literal from a .po file."""
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise XlingError(f"{where}: expected a quoted string, got {text[:40]!r}")
    body = text[1:-1]
    if "\\" not in body:  # fast path: nothing to decode
        if '"' in body:
            raise XlingError(f"{where}: unescaped quote in string")
        return body
    # An unescaped quote inside the literal means the line is malformed.
    if _BARE_QUOTE.search(body):
        raise XlingError(f"{where}: unescaped quote in string")
    if (len(body) - len(body.rstrip("\\"))) % 2:
        raise XlingError(f"{where}: string ends with a lone backslash")

    def repl(m: re.Match) -> str:
        esc = m.group(1)
        if esc[0] == "x":
            return chr(int(esc[1:], 16))
        if esc[0] in "01234567":
            return chr(int(esc, 8))
        if esc in _ESCAPES:
            return _ESCAPES[esc]
        raise XlingError(f"{where}: unknown escape \\{esc}")

    return _ESCAPE_RE.sub(repl, body)


def parse_po_text(text: str, name: str = "<po>") -> list[PoEntry]:
    """Parse the text of a gettext .po catalog into entries.

    Returns every entry except the header (``msgid ""``) and obsolete ``#~``
    entries, fuzzy ones included (see :attr:`PoEntry.fuzzy`). A malformed
    catalog raises :class:`XlingError` naming ``name`` and the line.
    """
    entries: list[PoEntry] = []
    cur: dict | None = None  # fields of the entry being read
    flags: set[str] = set()
    last: tuple[str, int | None] | None = None  # the field a continuation line extends
    start_line = 0

    def finish():
        nonlocal cur, last
        if cur is not None:
            where = f"{name}:{cur['line']}"
            if "msgid" not in cur:
                raise XlingError(f"{where}: entry without msgid")
            if not cur["msgstr"]:
                raise XlingError(f"{where}: entry without msgstr")
            if cur.get("msgid_plural") is not None:
                n = max(cur["msgstr"]) + 1
                if sorted(cur["msgstr"]) != list(range(n)):
                    raise XlingError(f"{where}: plural entry has msgstr indices {sorted(cur['msgstr'])}")
                strs = [cur["msgstr"][i] for i in range(n)]
            else:
                if set(cur["msgstr"]) != {None}:
                    raise XlingError(f"{where}: msgstr[n] in an entry without msgid_plural")
                strs = [cur["msgstr"][None]]
            entry = PoEntry(
                msgid=cur["msgid"],
                msgstr=strs,
                msgctxt=cur.get("msgctxt"),
                msgid_plural=cur.get("msgid_plural"),
                flags=cur["flags"],
                line=cur["line"],
            )
            if entry.msgid != "" or entry.msgctxt is not None:
                entries.append(entry)
        cur = None
        last = None

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{name}:{lineno}"
        if not line:
            continue
        if line.startswith("#"):
            if cur is not None and cur["msgstr"]:
                finish()
            if line.startswith("#~"):
                continue  # obsolete entry: not part of the catalog
            if line.startswith("#,"):
                flags |= {f.strip() for f in line[2:].split(",") if f.strip()}
            last = None
            continue
        if line.startswith('"'):
            if cur is None or last is None:
                raise XlingError(f"{where}: string continuation outside an entry")
            value = _unquote(line, where)
            kw, idx = last
            if kw == "msgstr":
                cur["msgstr"][idx] += value
            else:
                cur[kw] += value
            continue
        m = _KEYWORD_RE.match(line)
        if not m:
            raise XlingError(f"{where}: cannot parse line {line[:40]!r}")
        kw, idx, rest = m.group(1), m.group(2), m.group(3)
        value = _unquote(rest, where)
        if kw.startswith("msgstr"):
            if cur is None or "msgid" not in cur:
                raise XlingError(f"{where}: msgstr without msgid")
            index = int(idx) if idx is not None else None
            if index in cur["msgstr"]:
                raise XlingError(f"{where}: duplicate {kw}")
            cur["msgstr"][index] = value
            last = ("msgstr", index)
            continue
        # msgctxt / msgid / msgid_plural
        if kw in ("msgctxt", "msgid") and cur is not None and (cur["msgstr"] or kw in cur):
            finish()
        if cur is None:
            start_line = lineno
            cur = {"msgstr": {}, "flags": flags, "line": start_line}
            flags = set()
        if kw in cur:
            raise XlingError(f"{where}: duplicate {kw}")
        if kw == "msgid_plural" and "msgid" not in cur:
            raise XlingError(f"{where}: msgid_plural before msgid")
        if kw == "msgctxt" and "msgid" in cur:
            raise XlingError(f"{where}: msgctxt after msgid")
        cur[kw] = value
        last = (kw, None)
    if cur is not None:
        finish()
    return entries


def parse_po(path: str | os.PathLike) -> list[PoEntry]:
    """Parse a .po file (UTF-8). See :func:`parse_po_text`."""
    path = Path(path)
    return parse_po_text(read_text(path), str(path))


# --------------------------------------------------------------------------
# cleaning
# --------------------------------------------------------------------------

# No space flag: "100% sure" is text, not the directive "% s".
_PCT_FORMAT = re.compile(r"%(?:\([^)\s]*\))?[#0+\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_PCT_BROKEN = re.compile(r"%\([^)\s]*\)")
_BRACES = re.compile(r"\{[\w.\[\]:!-]*\}")
_BLOCK_TAGS = re.compile(
    r"</?(?:br|p|div|li|ul|ol|tr|td|th|table|h[1-6]|hr|pre|blockquote|dl|dt|dd)\b[^<>]*>", re.I
)
_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s+[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]\w*);")
_EMPTY_PAIRS = re.compile(r"(\(\s*\)|\[\s*\]|“\s*”|„\s*“|‘\s*’|«\s*»|»\s*«|「\s*」|『\s*』|\"\s*\"|'\s*'|《\s*》|（\s*）)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)\]）」』》])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[（「『《])\s+")


def clean_message(text: str, extra_patterns: tuple[re.Pattern, ...] = ()) -> str:
    """Remove placeholders and markup from a UI message; collapse whitespace.

    Removes Python %-format directives (``%(name)s``, ``%s``, ``%d``,
    ``%%``), ``{name}``/``{0}`` fields, HTML tags (block tags become a space)
    and entities (decoded), brackets and quotes left empty by the removal, and
    anything matched by ``extra_patterns``. May return an empty string.
    """
    s = text
    for pat in extra_patterns:
        s = pat.sub(" ", s)
    s = _PCT_FORMAT.sub(" ", s)
    s = _PCT_BROKEN.sub(" ", s)  # a translator's %(name) without its conversion
    s = _BRACES.sub(" ", s)
    s = _BLOCK_TAGS.sub(" ", s)
    s = _TAG.sub("", s)
    if "&" in s:
        s = html.unescape(s)
        s = _TAG.sub("", s)
        s = _ENTITY.sub(" ", s)
    s = s.replace("\u00a0", " ").replace("\u202f", " ")
    s = " ".join(s.split())
    prev = None
    while prev != s:
        prev = s
        s = _EMPTY_PAIRS.sub(" ", s)
        s = " ".join(s.split())
    s = _SPACE_BEFORE_PUNCT.sub(r"\1", s)
    s = _SPACE_AFTER_OPEN.sub(r"\1", s)
    return s.strip(" -–—:,;")


def english_ok(text: str, min_chars: int = 10, min_words: int = 2) -> bool:
    """Whether a cleaned English message is long enough to be a useful sentence."""
    return len(text) >= min_chars and len(text.split()) >= min_words and any(c.isalpha() for c in text)


__all__ = ["PoEntry", "parse_po", "parse_po_text", "clean_message", "english_ok"]
