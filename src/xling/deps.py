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
    "lm_eval": ("harness", "lm-eval>=0.4.12"),
    "sacrebleu": ("generation", "sacrebleu>=2.4"),
    "lingua": ("generation", "lingua-language-detector>=2.0"),
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


def require_extra(extra: str, what: str = "this") -> None:
    """Import every module of ``extra`` (a feature that needs all of them, e.g. ``generation``: sacrebleu and
    lingua); if any is missing, raise one line naming ``pip install 'xling[extra]'`` and what the extra holds."""
    modules = [m for m, (e, _) in EXTRAS.items() if e == extra]
    if not modules:
        raise KeyError(f"{extra!r} is not an extra of xling (see xling.deps.EXTRAS)")
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        holds = " and ".join(EXTRAS[m][1] for m in modules)
        raise XlingError(f"{what} needs the '{extra}' extra: pip install 'xling[{extra}]' (in the xling checkout: "
                         f"pip install -e '.[{extra}]'; it holds {holds})")


def available(module: str) -> bool:
    """Whether the optional dependency ``module`` can be imported."""
    install_hint(module)
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


__all__ = ["EXTRAS", "available", "install_hint", "require", "require_extra"]
