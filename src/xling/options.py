"""``KEY=VALUE`` option values shared by the recipes, the registries and the command line.

:func:`option_value` reads a value whose type is not declared (JSON when it
parses); :func:`option_kind` and :func:`convert_option` turn a value, a
command-line string or a Python value, into an option's declared type (bool,
int, float, str, list): the one place where option strings are converted
(:meth:`xling.registry.Registry.coerce` uses them).

A leaf module (no xling imports but the error type), so recipes in
:mod:`xling.recipes` parse option values without importing the CLI that sits on
top of them.
"""

from __future__ import annotations

import json
import math

from xling.errors import XlingError


def option_value(raw: str):
    """A ``KEY=VALUE`` flag's value: JSON when it parses (numbers, booleans, lists), else the string.

    A value JSON cannot hold in Python (an integer of thousands of digits, lists
    nested thousands deep) is a one-line error, not a traceback.
    """
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
    except (ValueError, RecursionError):
        raise XlingError(f"option value {raw[:30]!r}... is too long or too deeply nested to read") from None


#: Option kinds by the Python type of a default value.
_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "tuple"}
_WHAT = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string", "list": "a list",
         "tuple": "a list"}
_ITEMS = {"bool": "true/false values", "int": "integers", "float": "numbers", "str": "strings"}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_SEQUENCES = ("list", "tuple", "sequence", "iterable", "collection")


def option_kind(default=None, annotation=None) -> str | None:
    """An option's declared type: ``"bool"``, ``"int"``, ``"float"``, ``"str"``, ``"list"`` or ``"tuple"``, a
    sequence with its items' type (``"tuple[int]"``), or None (any).

    Taken from the default's type, else from the annotation (a type, or its text under
    ``from __future__ import annotations``: ``"int | None"``, ``"Sequence[str] | None"``).
    """
    if isinstance(default, (list, tuple)) and default and type(default[0]) in _KINDS:
        return f"{_KINDS[type(default)]}[{_KINDS[type(default[0])]}]"
    if default is not None and type(default) in _KINDS:
        return _KINDS[type(default)]
    if annotation is None:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    parts = [t.strip() for t in text.split("|") if t.strip() not in ("None", "NoneType", "")]
    if len(parts) != 1:
        return None
    head, _, inner = parts[0].partition("[")
    head, inner = head.rsplit(".", 1)[-1], inner[:-1] if inner.endswith("]") else ""
    if head == "Optional":
        return option_kind(None, inner)
    if head in ("bool", "int", "float", "str"):
        return head
    if head.lower() in _SEQUENCES:
        seq = "tuple" if head.lower() == "tuple" else "list"
        item = option_kind(None, inner.split(",")[0]) if inner else None
        return f"{seq}[{item}]" if item in ("bool", "int", "float", "str") else seq
    return None


def _convert(value, kind: str):
    """``value`` as ``kind``; ValueError when it is not one."""
    text = value.strip() if isinstance(value, str) else None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError
    if kind == "str":
        return str(value)
    seq, _, item = kind.partition("[")
    if seq in ("list", "tuple"):
        if text is not None:
            items = option_value(text) if text.startswith("[") else [t.strip() for t in text.split(",") if t.strip()]
        else:
            items = value
        if not isinstance(items, (list, tuple)):
            raise ValueError
        items = [_convert(x, item[:-1]) for x in items] if item else list(items)
        return tuple(items) if seq == "tuple" else items
    if isinstance(value, bool):
        raise ValueError  # never a number
    if kind == "int":
        if text is not None:
            return int(text)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    if kind == "float":
        return float(text if text is not None else value)
    raise ValueError


def convert_option(value, kind: str | None, where: str = "option"):
    """``value`` as an option of ``kind`` (:func:`option_kind`); a mismatch is one line: ``<where> must be ...``.

    Strings are converted (``true``/``false``/``yes``/``no``/``1``/``0``; numbers; a list is a JSON list or
    comma-separated items); Python values are checked: an integral float is an integer, a bool is never a
    number, and a number must be finite. ``kind`` None keeps the value (a string is read by :func:`option_value`).
    """
    if kind is None:
        return option_value(value) if isinstance(value, str) else value
    try:
        out = _convert(value, kind)
    except (TypeError, ValueError, OverflowError):
        what = _WHAT.get(kind) or f"a list of {_ITEMS.get(kind.partition('[')[2][:-1], 'items')}"
        raise XlingError(f"{where} must be {what}, got {value!r}") from None
    if kind == "float" and not math.isfinite(out):
        raise XlingError(f"{where} must be finite, got {out}")
    return out


__all__ = ["option_value", "option_kind", "convert_option"]
