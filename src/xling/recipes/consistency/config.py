"""The options of ``xling consistency``: one field each, and the flag is generated from it
(:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import at_least, between, check_config, option, overwrite_option
from xling.harness.store import DEFAULT_STORE

DEFAULT_OUT = Path("xling-out") / "consistency"
STORE_HELP = "results store the run is read from (default $XLING_STORE, else results.sqlite in the user data folder)"


@dataclasses.dataclass
class ConsistencyConfig:
    """``xling consistency RUN_ID``: see :func:`xling.recipes.consistency.run.consistency`."""

    run_id: str = option(positional=True, metavar="RUN_ID",
                         help="an eval, probe, matrix or transfer run of the results store (or an unambiguous prefix "
                              "of its id; xling runs lists them)")
    condition: str | None = option(None, metavar="C", help="the condition of a transfer run to read (needed when it "
                                                           "has several: task, stack, add, ...)")
    store: str | Path = option(DEFAULT_STORE, parse=str, help=STORE_HELP)
    out: str | Path | None = option(DEFAULT_OUT, none=True,
                                    help="folder for consistency.csv and report.html; 'none': no files")
    n_boot: int = option(1000, check=at_least(1), help="bootstrap resamples of each pair's items")
    seed: int = option(0, help="seed of the bootstrap")
    level: float = option(0.95, check=between(0.5, 0.999), help="level of the bootstrap intervals")
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        check_config(self)


__all__ = ["ConsistencyConfig", "DEFAULT_OUT"]
