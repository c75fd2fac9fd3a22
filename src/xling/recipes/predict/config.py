"""The options of ``xling predict``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import between, at_least, check_config, flag, option, overwrite_option, store_option
from xling.methods.predict import MODELS

DEFAULT_OUT = Path("xling-out") / "predict"
#: Config fields that say how the command line ran the prediction, not what one prediction is (left out of its record).
NOT_RECORDED = ("models",)


@dataclasses.dataclass
class PredictConfig:
    """Everything a prediction depends on; see :func:`xling.recipes.predict.run.predict`."""

    store: str | Path | None = store_option("results store to read (and write); 'none' to skip")
    align_run: str | None = option(None, metavar="RUN_ID",
                                   help="align run id (default: latest align run of the eval run's base model)")
    align_csv: str | None = option(None, metavar="FILE", help="alignment.csv of xling align instead of the store")
    align_model: str | None = option(None, help="model of the align run (default: the eval run's base model)")
    align_corpus: str | None = option(None, help="corpus of the align run (default: task:<task> if present)")
    align_metric: str = option("mexa", help="alignment metric the scores are predicted from")
    scores_run: str | None = option(None, metavar="RUN_ID", help="eval run id (default: the latest eval run)")
    scores_csv: str | None = option(None, metavar="FILE",
                                    help="CSV of task scores (lang + metric columns, or lang,metric,value)")
    task: str | None = option(None, help="only eval runs of this task")
    model: str | None = option(None, help="only eval runs of this (base) model; its align run too")
    metric: str | None = option(None, help="task metric (default: the eval run's main metric, e.g. accuracy)")
    split: str = option("test", help="split of the eval run's scores")
    exclude: list[str] | None = option(None, help="comma-separated languages to leave out (default: the source "
                                                  "language)")
    predictor: str = option("linear", choices=MODELS, help="score ~ alignment fit")
    aggregations: list[str] | None = option(None, help="comma-separated: mean, max, layer:K (default: all)")
    n_boot: int = option(check=at_least(1), default=1000, help="bootstrap resamples of the confidence intervals")
    seed: int = option(0, help="seed of the bootstrap")
    level: float = option(check=between(0.5, 0.999), default=0.95, help="confidence level of the intervals")
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    write_store: bool = option(True, flag="--no-store", negate=True,
                               help="do not write the predictions to the store")
    overwrite: bool = overwrite_option()
    models: list[str] | None = option(None, help="comma-separated models: predict for each, then average over them")

    def __post_init__(self):
        if self.predictor not in MODELS:
            raise XlingError(f"unknown predictor {self.predictor!r} (use {', '.join(MODELS)})")
        if self.n_boot < 0:
            raise XlingError(f"{flag('n_boot')} must be >= 0, got {self.n_boot}")
        if not 0 < self.level < 1:
            raise XlingError(f"{flag('level')} must be in (0, 1), got {self.level}")
        check_config(self)


__all__ = ["DEFAULT_OUT", "NOT_RECORDED", "PredictConfig"]
