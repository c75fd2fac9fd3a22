"""The options of ``xling matrix``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import (between, threads_option, at_least, check_config, device_option, dtype_option, flag, option,
                                  overwrite_option, quiet_option, store_option, task_options_option)
from xling.harness.seeds import parse_seeds
from xling.models.loading import DEFAULT_MODEL

DEFAULT_OUT = Path("xling-out") / "matrix"
DEFAULT_L2 = (1e-1, 1.0)  # l2 = 1e-2 took ~50x longer to converge on bible-genre features (add it with --l2)
METHODS = ("probe", "lora", "full")
#: Config fields that say how the command line ran the matrix, not what one matrix is (left out of its record).
NOT_RECORDED = ("langs", "seeds")


def parse_l2(value: str) -> tuple[float, ...]:
    """``--l2 0.1,1`` -> ``(0.1, 1.0)``."""
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise XlingError(f"--l2 expects comma-separated numbers, got {value!r}") from None


@dataclasses.dataclass
class MatrixConfig:
    """Everything a transfer matrix depends on; see :func:`xling.recipes.matrix.run.transfer_matrix`."""

    model: str = option(DEFAULT_MODEL, help="built-in e5-small (default), a folder, a .gguf file or a hub id")
    task: object = option("bible-genre", help="a classification task with training data in several languages "
                                              "(default bible-genre)")  # or a Task
    task_options: dict = task_options_option("task builder option, e.g. train_size=500 (repeatable)")
    sources: list[str] | None = option(None, help="comma-separated source languages (default: every language with "
                                                  "training data)")
    targets: list[str] | None = option(None, help="comma-separated target languages (default: every test language)")
    method: str = option("probe", choices=METHODS,
                         help="probe (default: logistic regression on frozen features), lora or full (fine-tuning "
                              "per source)")
    reference: str | None = option(None, help="the source every cell is compared with (default: the task's source "
                                              "language, English)")
    layer: str | int = option("auto", help="probe hidden state for every source, or auto (each source's dev set)")
    l2: tuple[float, ...] = option(DEFAULT_L2, parse=parse_l2, metavar="A,B,...",
                                   help="comma-separated l2 grid of the probe")
    pooling: str = option("auto", help="as for align (auto: mean for encoders, weighted-mean for decoders)")
    max_train: int | None = option(check=at_least(1), default=None, flag="--train-size", short="--max-train",
                                   help="at most N training examples per source (--max-train: the older name)")
    max_test: int | None = option(check=at_least(1), default=None, flag="--test-size", short="--max-test",
                                  help="at most N test examples per target (--max-test: the older name)")
    epochs: int = option(3, check=at_least(1), help="fine-tuning epochs (--method lora|full)")
    lr: float | None = option(check=between(1e-12, 10), default=None, help="fine-tuning learning rate (default: 5e-5 full, 5e-4 lora)")
    seed: int = option(0, help="seed of the bootstrap resamples and of the fine-tuning")
    n_boot: int = option(1000, check=at_least(1), help="bootstrap resamples per cell")
    batch_size: int = option(32, check=at_least(1), help="examples per forward pass")
    max_length: int = option(check=at_least(1), default=128, help="tokens per text at most")
    device: str = device_option()
    dtype: str = dtype_option()
    threads: int | None = threads_option()
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    cache: bool = option(True, flag="--no-cache", negate=True, help="recompute the embeddings")
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()
    langs: list[str] | None = option(None, help="comma-separated languages in both roles, source and target (as "
                                                "--sources and --targets together; either of those overrides it)")
    seeds: list[int] | None = option(None, parse=parse_seeds, metavar="S1,S2,...",
                                     help="--method lora|full: train every source's model once per seed into "
                                          "OUT/seed-<s>; report each cell's accuracy per seed, mean and sd across "
                                          "seeds next to the bootstrap CI (OUT/seeds.csv)")

    def __post_init__(self):
        check_config(self)
        from xling.methods.probe import check_probe_options

        check_probe_options(self)
        if self.langs:
            self.sources = self.sources or list(self.langs)
            self.targets = self.targets or list(self.langs)
        self.seeds = parse_seeds(self.seeds)
        if self.seeds is not None and self.method == "probe":
            raise XlingError(f"{flag('seeds')} needs {flag('method')} lora or full: the probe matrix is deterministic "
                             f"given its data (its {flag('seed')} only draws the bootstrap resamples)")


__all__ = ["DEFAULT_L2", "DEFAULT_OUT", "METHODS", "MatrixConfig", "NOT_RECORDED", "parse_l2"]
