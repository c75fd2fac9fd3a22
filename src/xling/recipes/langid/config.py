"""The options of ``xling langid``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import between, at_least, check_config, device_option, flag, option, overwrite_option, quiet_option
from xling.models.loading import DEFAULT_MODEL

DEFAULT_OUT = Path("xling-out") / "langid"


@dataclasses.dataclass
class LangIdConfig:
    """Everything a langid run depends on; see :func:`xling.recipes.langid.run.langid`."""

    model: str = option(DEFAULT_MODEL, help="built-in e5-small (default), gemma-3-270m, smollm2-135m, a folder, a "
                                            ".gguf file or a hub id")
    data: str = option("django", help="any xling corpus")
    langs: list[str] | None = option(None, help="comma-separated languages besides the pivot (default: the corpus's)")
    pivot: str = option("eng", help="MEXA's pivot language")
    max_sentences: int = option(check=at_least(2), default=200, help="sentences per language")
    train_fraction: float = option(check=between(0.05, 0.95), default=0.5, help="share of sentence ids to train on")
    l2: float = option(check=at_least(0), default=1e-2, help="L2 penalty of the probe (default 0.01)")
    pooling: str = option("auto", help="as for align (auto: mean for encoders, weighted-mean for decoders)")
    layers: str | None = option(None, help="hidden states, e.g. 0,6,12 or 4-8 (default all)")
    batch_size: int = option(check=at_least(1), default=32, help="sentences per forward pass")
    max_length: int | None = option(check=at_least(1), default=None, help="tokens per sentence (default: the model's own context)")
    seed: int = option(0, help="which sentence ids are held out")
    dtype: str = option("fp32", choices=("fp32", "bf16", "fp16"), help="fp32, bf16 or fp16")
    device: str = device_option()
    cache: bool = option(True, flag="--no-cache", negate=True,
                         help="recompute the embeddings and write them over their cache entries")
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    overwrite: bool = overwrite_option()
    progress: bool = quiet_option()

    def __post_init__(self):
        check_config(self)
        if not 0.1 <= self.train_fraction <= 0.9:
            raise XlingError(f"{flag('train_fraction')} must be between 0.1 and 0.9, got {self.train_fraction}")
        if self.max_sentences < 10:
            raise XlingError(f"{flag('max_sentences')} must be at least 10 for a held-out split, got "
                             f"{self.max_sentences}")
        if not self.l2 >= 0:
            raise XlingError(f"{flag('l2')} must be >= 0, got {self.l2}")


__all__ = ["DEFAULT_OUT", "LangIdConfig"]
