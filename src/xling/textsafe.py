"""Outputs that cannot attack their reader, and inputs that cannot exhaust memory.

A leaf helper (imports only the standard library and other leaves), used by every layer.

* :func:`term` -- text echoed to a terminal from user data (corpus sentences, task
  texts, model, corpus and language names, error lines) with its control characters
  escaped as Python writes them (``\\x1b``, ``\\r``, ``\\x9b``, ``\\u202e``): C0 and C1
  controls, DEL, and the Unicode bidi embedding/override/isolate controls and line or
  paragraph separators. An ANSI escape sequence starts with ESC (C0) or CSI (C1), so
  none can recolour, move the cursor, retitle the window or hide text. Printable
  Unicode (accents, CJK, emoji) is kept as is.
* :func:`csv_text` -- the one CSV writer of every ``*.csv`` xling writes, with the
  OWASP rule against CSV (formula) injection: a *string* cell that starts with ``=``,
  ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so that a
  spreadsheet shows it as text instead of evaluating it (a cell that starts with ``'``
  gets one too, which makes the rule reversible: :func:`csv_uncell` undoes it exactly
  when xling reads its own CSVs back). Numbers are written as numbers, never
  neutralised: ``-0.5`` stays ``-0.5``. Other control characters than tab and line
  breaks (ESC, CSI, bidi overrides) are written escaped as :func:`term` writes them,
  so ``cat results.csv`` cannot recolour the terminal (not undone on reading back).
* :func:`cap_texts` -- each text cut to :func:`char_cap` characters before it reaches a
  tokenizer that truncates to ``max_length`` tokens. A fast tokenizer builds its
  per-character alignment tables for the whole text before truncating (a single
  200 MB line with ``--max-length 32`` grew past 14 GB); the cap bounds that work.
"""

from __future__ import annotations

import csv
import io
import numbers
from typing import Iterable, Sequence

# ----------------------------------------------------------------------------- terminal

_EXTRA_CONTROLS = {0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _is_control(o: int) -> bool:
    return o < 0x20 or 0x7F <= o <= 0x9F or o in _EXTRA_CONTROLS


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    return f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}"


def term(text, *, keep: str = "") -> str:
    """``text`` (any value: ``str()`` of it) safe to print: every control character escaped.

    ``keep`` names control characters kept as they are (``"\\n\\t"`` for a block xling
    laid out itself); user data that should stay on one line is escaped whole.
    """
    s = str(text)
    if not any(_is_control(ord(c)) for c in s):
        return s
    return "".join(_escape_char(c) if _is_control(ord(c)) and c not in keep else c for c in s)


# ----------------------------------------------------------------------------- CSV

#: OWASP's formula triggers, plus ``'`` itself so that neutralising can be undone exactly.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value, float_format: str = ".6g"):
    """One cell: numbers as numbers (floats with ``float_format``), ``None`` empty, strings neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return format(float(value), float_format)
    s = str(value)
    s = "'" + s if s.startswith(_FORMULA_START) else s
    # a terminal escape in a label or sentence must not reach whoever runs `cat` on the file: control characters
    # other than tab and line breaks (which the csv module quotes) are written as term() writes them
    return term(s, keep="\t\n\r") if any(_is_control(ord(c)) for c in s) else s


def csv_uncell(value: str) -> str:
    """Undo :func:`csv_cell`'s neutralisation of a string read back from a CSV."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def csv_text(rows: Iterable, columns: Sequence[str], *, float_format: str = ".6g") -> str:
    """A whole CSV (header ``columns``, then ``rows``) as text, every cell through :func:`csv_cell`.

    A row is a mapping (its keys outside ``columns`` are ignored, missing ones empty) or a
    sequence in column order. Lines end with ``\\n``; fields are quoted where needed by
    the :mod:`csv` module, so a comma, quote or newline in a name cannot shift a column.
    """
    # The csv module quotes a field that holds a character of the line terminator: with "\r\n"
    # every field holding a \r or \n is quoted (with "\n" alone, a bare \r would break the row);
    # each row then ends in "\n" like every CSV xling wrote before.
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    out = []
    for cells in ([csv_cell(c) for c in columns],
                  *([csv_cell(v, float_format) for v in ([r.get(c) for c in columns] if hasattr(r, "get") else r)]
                    for r in rows)):
        buf.seek(0)
        buf.truncate()
        w.writerow(cells)
        out.append(buf.getvalue()[:-2] + "\n")
    return "".join(out)


# ----------------------------------------------------------------------------- bounded tokenization

#: Characters per token kept before tokenizing. Subword vocabularies average 3-5
#: characters per token (about 1-2 in CJK scripts) and their longest entries are a few
#: dozen characters, so the first ``max_length`` tokens of a text lie within its first
#: ``32 * max_length`` characters unless those tokens average more than 32 characters
#: each (long runs of characters the normaliser deletes, or a WordPiece vocabulary
#: mapping words of over 32 characters to one unknown token). For every other text the
#: token ids are those of the uncut text.
CHARS_PER_TOKEN = 32


def char_cap(max_length: int) -> int:
    """The number of characters kept of a text truncated to ``max_length`` tokens."""
    return max(int(max_length), 1) * CHARS_PER_TOKEN


def cap_texts(texts: Sequence[str], max_length: int) -> tuple[list[str], int]:
    """``(texts cut to char_cap(max_length) characters, how many were cut)``."""
    cap = char_cap(max_length)
    out, n = [], 0
    for t in texts:
        if isinstance(t, str) and len(t) > cap:
            out.append(t[:cap])
            n += 1
        else:
            out.append(t)
    return out, n


def cap_words(words: Sequence[str], max_length: int) -> tuple[list[str], bool]:
    """Pre-split words (token classification) cut to :func:`char_cap` characters in all, one per
    separating space; ``(words kept, whether anything was cut)``. The words after the cut are
    beyond the tokenizer's truncation under the same bound, so their labels are cut either way."""
    budget = char_cap(max_length)
    out: list[str] = []
    for w in words:
        if len(w) > budget:
            if budget > 0:
                out.append(w[:budget])
            return out, True
        out.append(w)
        budget -= len(w) + 1
    return out, False


def note_capped(n: int, max_length: int, where: str = "") -> None:
    """One ``xling: note:`` line saying how many texts were cut (nothing when none was)."""
    if n:
        import sys

        at = f"{where}: " if where else ""
        note = lambda m: print("xling: note: " + term(" ".join(str(m).split())), file=sys.stderr, flush=True)  # noqa: E731 - as xling.io.note (a leaf: no import of io)
        note(f"{at}{n} text{'s' if n != 1 else ''} longer than {char_cap(max_length)} characters "
             f"({CHARS_PER_TOKEN} per token of --max-length {max_length}) cut to that before tokenizing")


class SafeStream:
    """A text stream whose ``write`` escapes control characters (:func:`term`), newlines and tabs kept.

    The CLI wraps ``sys.stdout`` in one while a command runs, so no table, summary or
    listing can carry a terminal escape from a name or a sentence onto the user's
    terminal; every other attribute (``flush``, ``fileno``, ``isatty``, ``buffer``...)
    is the wrapped stream's.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, s: str) -> int:
        self._stream.write(term(s, keep="\n\t"))
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


__all__ = ["CHARS_PER_TOKEN", "SafeStream", "cap_texts", "cap_words", "char_cap", "csv_cell", "csv_text", "csv_uncell",
           "note_capped", "term"]
