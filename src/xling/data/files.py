"""Reading user text files: UTF-8 text, lines and JSON, every failure one line naming the file and line.

The corpus readers (:mod:`xling.data.readers`), the built-in corpora and the
task and module readers above them all read files through these.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator

from xling.errors import XlingError


def read_text(path: str | os.PathLike) -> str:
    """Read a whole UTF-8 file (BOM stripped); bad bytes -> XlingError naming file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise XlingError(f"corpus not found: {path}") from None
    except OSError as exc:
        raise XlingError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise XlingError(f"{path}: UTF-16 text (byte-order mark); save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise XlingError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise XlingError(f"{path}:{line}: NUL byte in text (a binary file, or UTF-16 without a byte-order mark?)")
    return text


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_PAIRED = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


class _LongInt(ValueError):
    pass


def _parse_int(literal: str) -> int:
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()  # Python 3.11+: int() refuses longer ones
    if limit and len(literal.lstrip("-")) > limit:
        raise _LongInt(literal)
    return int(literal)


def parse_json(text: str, path: str | os.PathLike, line: int | None = None):
    """``json.loads`` for user files: every way JSON can be hostile is one line naming the file and line.

    Besides syntax errors: nesting too deep for Python's recursion limit,
    integers longer than Python converts (4300 digits), and lone UTF-16
    surrogate escapes such as ``"\\ud800"`` (not text: they cannot be
    encoded, hashed or written later). ``line`` is the line number of a
    JSON-lines record; for a whole file the line is found in ``text``.
    """

    def at(pos: int | None) -> str:
        if line is not None:
            return f"{path}:{line}"
        return f"{path}:{text.count(chr(10), 0, pos) + 1}" if pos is not None and pos >= 0 else str(path)

    try:
        obj = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise XlingError(f"{at(exc.pos)}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except _LongInt as exc:
        digits = str(exc)
        raise XlingError(f"{at(text.find(digits))}: integer of {len(digits.lstrip('-'))} digits is too long") from None
    except RecursionError:
        raise XlingError(f"{at(None)}: JSON nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        lone = _SURROGATE_ESCAPE.search(_PAIRED.sub("", text))
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pos = text.find(lone.group()) if lone else None
            raise XlingError(f"{at(pos)}: lone UTF-16 surrogate escape in a string "
                             f"({lone.group() if lone else 'unpaired'}); not valid text") from None
    return obj


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, without line ends.

    Only ``\\n`` (and ``\\r\\n``) end a line: Unicode separators such as
    U+2028 inside a sentence do not split it, which keeps files aligned. A
    final newline does not make an extra empty line.
    """
    text = read_text(path)
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def json_objects(path: str | os.PathLike, what: str = "a JSON object") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file.

    A line that is not JSON, or not an object, is a one-line error naming
    ``file:line`` (``what`` says what the object should be).
    """
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        obj = parse_json(line, path, lineno)
        if not isinstance(obj, dict):
            raise XlingError(f"{path}:{lineno}: expected {what}")
        yield lineno, obj


__all__ = ["read_text", "read_lines", "parse_json", "json_objects"]
