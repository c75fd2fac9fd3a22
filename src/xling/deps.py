"""Optional dependencies: which extra provides which module, and one line when it is missing.

Core commands need only ``pip install -e .``. A few features need an extra
(``pyproject.toml``, ``[project.optional-dependencies]``)::

    require("datasets", "reading a saved Hugging Face dataset (data/ds)")   # the module, or XlingError
    available("pyarrow")                                                    # True / False, never raises

A missing extra is a user mistake: :func:`require` raises
:class:`~xling.errors.XlingError` with one line naming the ``pip install`` to
run. Recipes call it before any long work (downloads, model loads), and the
modules themselves import through it, so the message is the same everywhere.
``tests/test_deps.py`` checks this table against ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from xling.errors import XlingError

#: Top-level import name -> (extra, requirement as declared in that extra).
EXTRAS: dict[str, tuple[str, str]] = {
    "datasets": ("datasets", "datasets>=2.14"),
    "pyarrow": ("parquet", "pyarrow>=14"),
    "wordfreq": ("vocab", "wordfreq>=3"),
    "gguf": ("gguf", "gguf>=0.10"),
    "lightgbm": ("rank", "lightgbm>=4"),
    "urielplus": ("typology", "urielplus==1.3.2"),
    "ray": ("ray", "ray>=2.9"),
    "accelerate": ("device-map", "accelerate>=0.26"),
    "bitsandbytes": ("quant", "bitsandbytes>=0.43"),
}


def install_hint(module: str) -> str:
    """``the 'X' extra: pip install ...`` for the extra that provides ``module``."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise KeyError(f"{module!r} is not an optional dependency of xling (see xling.deps.EXTRAS)")
    extra, requirement = EXTRAS[top]
    return f"the '{extra}' extra: pip install '{requirement}' (or, in the xling checkout, pip install -e '.[{extra}]')"


def require(module: str, what: str = "this") -> ModuleType:
    """Import and return ``module`` (an optional dependency); if it is missing, raise one line.

    ``what`` names the feature that needs it, e.g. ``"the 'wordfreq' corpus"``.
    Only a missing module is turned into :class:`XlingError`; a module that is
    installed but fails for another reason raises as it is.
    """
    hint = install_hint(module)  # KeyError for a module that is not in EXTRAS: a programming error
    try:
        return importlib.import_module(module)
    except ImportError:
        raise XlingError(f"{what} needs {hint}") from None


def available(module: str) -> bool:
    """Whether the optional dependency ``module`` can be imported."""
    install_hint(module)
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


__all__ = ["EXTRAS", "available", "install_hint", "require"]
