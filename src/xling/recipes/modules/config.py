"""The options of ``xling modules list|show``: one field each, the flags generated (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import option

STORE_HELP = "module store folder (default: the xling cache)"


@dataclasses.dataclass
class ModulesListConfig:
    """``xling modules list``: which module store."""

    modules_dir: str | Path | None = option(None, short="--store", help=STORE_HELP)


@dataclasses.dataclass
class ModulesShowConfig:
    """``xling modules show NAME``: one module, by name in the store or by folder."""

    module: str = option(positional=True, metavar="NAME", help="module name in the store, or a module folder")
    modules_dir: str | Path | None = option(None, short="--store", help=STORE_HELP)


__all__ = ["ModulesListConfig", "ModulesShowConfig", "STORE_HELP"]
