"""``KEY=VALUE`` option values shared by the recipes and the command line.

A leaf module (no xling imports but the error type), so recipes in
:mod:`xling.recipes` parse option values without importing the CLI that sits on
top of them.
"""

from __future__ import annotations

import json

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


__all__ = ["option_value"]
