"""The options of ``xling align``, ``xling corpus`` and ``xling models``: one field each, and the flag is generated
from it (:mod:`xling.harness.config`).

:class:`AlignConfig` is the alignment engine's own config, defined beside the engine that every recipe shares
(:mod:`xling.harness.alignment`) and named here for the command.
"""

from __future__ import annotations

import dataclasses

from xling.harness.alignment import (CORPUS_HELP, DEFAULT_MAX_SENTENCES, DEFAULT_METRICS, DEFAULT_OUT,  # noqa: F401
                                     AlignConfig, metric_option)
from xling.harness.config import option


@dataclasses.dataclass
class CorpusConfig:
    """``xling corpus``: which corpus, which languages, how many rows to print."""

    data: str | None = option(None, help=CORPUS_HELP)
    langs: list[str] | None = option(None, help="comma-separated languages (default: the corpus's)")
    show: int = option(0, metavar="N", help="print the first N aligned rows")


@dataclasses.dataclass
class ModelsConfig:
    """``xling models``: list the built-in models, or fetch one now."""

    prepare: str | None = option(None, metavar="NAME",
                                 help="fetch and convert one built-in model now (otherwise done on first use)")


__all__ = ["AlignConfig", "CORPUS_HELP", "CorpusConfig", "DEFAULT_MAX_SENTENCES", "DEFAULT_METRICS", "DEFAULT_OUT",
           "ModelsConfig", "metric_option"]
