"""The options of ``xling rank``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import at_least, check_config, option, overwrite_option
from xling.harness.store import DEFAULT_STORE

DEFAULT_OUT = Path("xling-out") / "rank"


@dataclasses.dataclass
class RankConfig:
    """Which transfer matrix to learn from, and how; see :func:`xling.recipes.rank.run.rank_sources`."""

    store: str | Path = option(DEFAULT_STORE, parse=str, help="results store holding xling matrix runs (default "
                                                              "$XLING_STORE or results.sqlite in the user data folder)")
    matrix: str | None = option(None, help="matrix id (default: the latest in the store)")
    metric: str = option("accuracy", help="matrix score to rank by (accuracy or macro_f1)")
    targets: list[str] | None = option(None, flag="--target", help="comma-separated languages to recommend sources for")
    features: list[str] | None = option(None, help="comma-separated features (default: all available)")
    typology: bool = option(True, flag="--no-typology", negate=True,
                            help="no URIEL distances (no typology extra needed)")
    k: int = option(3, check=at_least(1), help="NDCG cut-off (default 3)")
    top: int = option(10, check=at_least(1), help="graded relevance of the training labels: the best source of a "
                                                  "target gets TOP, the next TOP-1, ..., the rest 0")
    n_boot: int = option(1000, check=at_least(1), help="bootstrap resamples")
    seed: int = option(0, help="seed of the ranker and the bootstrap")
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        from xling.methods.rank import FEATURE_DIRECTION

        check_config(self)
        for f in self.features or []:
            if f not in FEATURE_DIRECTION:
                raise XlingError(f"unknown feature {f!r}; features: {', '.join(FEATURE_DIRECTION)}")


__all__ = ["DEFAULT_OUT", "RankConfig"]
