"""The options of ``xling probe``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import (threads_option, at_least, check_config, device_option, dtype_option, flag, option, overwrite_option,
                                  quiet_option, store_option, task_options_option)
from xling.harness.seeds import parse_seeds
from xling.methods.probe import check_probe_options
from xling.models.loading import DEFAULT_MODEL

DEFAULT_OUT = Path("xling-out") / "probe"
DEFAULT_L2 = (1e-3, 1e-2, 1e-1, 1.0)
#: Config fields that say how the command line ran the probe, not what one probe run is (left out of its record).
NOT_RECORDED = ("seeds",)


def _l2(value: str) -> tuple[float, ...]:
    """``--l2 0.1,1`` -> ``(0.1, 1.0)``."""
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise XlingError(f"{flag('l2')} expects comma-separated numbers, got {value!r}") from None


@dataclasses.dataclass
class ProbeConfig:
    """Everything a probe run depends on; see :func:`xling.recipes.probe.run.probe`."""

    model: str = option(DEFAULT_MODEL, help="built-in e5-small (default), gemma-3-270m, smollm2-135m, a folder, a "
                                            ".gguf file or a hub id")
    task: str = option("bible-genre", help="a classification task (default bible-genre)")
    task_options: dict = task_options_option("task builder option, e.g. test_size=200 (repeatable)")
    langs: list[str] | None = option(None, help="comma-separated test languages (default: all)")
    layer: str | int = option("auto", help="hidden state of the probe, or auto (chosen on source dev)")
    l2: tuple[float, ...] = option(DEFAULT_L2, parse=_l2, metavar="A,B,...",
                                   help=f"comma-separated l2 grid (default {','.join(f'{v:g}' for v in DEFAULT_L2)})")
    pooling: str = option("auto", help="as for align (auto: mean for encoders, weighted-mean for decoders)")
    max_train: int | None = option(check=at_least(1), default=None, flag="--train-size", short="--max-train",
                                   help="use at most N training examples (--max-train: the older name)")
    max_test: int | None = option(check=at_least(1), default=None, flag="--test-size", short="--max-test",
                                  help="score at most N test examples per language (--max-test: the older name)")
    batch_size: int = option(32, check=at_least(1), help="texts per forward pass")
    max_length: int | None = option(check=at_least(1), default=None, help="tokens per text (default: the model's own context; longer texts are "
                                               "cut, with one note line)")
    device: str = device_option()
    dtype: str = dtype_option()
    threads: int | None = threads_option()
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    cache: bool = option(True, flag="--no-cache", negate=True,
                         help="recompute the embeddings and write them over their cache entries")
    progress: bool = quiet_option()
    seed: int | None = option(None, cli=False)  # None: the first max_train examples; a seed: a seeded sample (probe)
    overwrite: bool = overwrite_option()
    seeds: list[int] | None = option(None, parse=parse_seeds, metavar="S1,S2,...",
                                     help="refit the probe once per seed on a seeded training sample (a random "
                                          "--train-size subset, or a bootstrap resample of the training set), each "
                                          "run into OUT/seed-<s>; report each language's accuracy per seed, its mean "
                                          "and sd across seeds (OUT/seeds.csv)")

    def __post_init__(self):
        check_config(self)
        check_probe_options(self)
        self.seeds = parse_seeds(self.seeds)


__all__ = ["DEFAULT_L2", "DEFAULT_OUT", "NOT_RECORDED", "ProbeConfig"]
