"""The options of ``xling neurons``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import (between, at_least, check_config, device_option, flag, option, overwrite_option, quiet_option,
                                  store_option)

DEFAULT_OUT = Path("xling-out") / "neurons"
DEFAULT_LANGS = ["en", "de", "fr", "ru", "zh", "hi"]


@dataclasses.dataclass
class NeuronsConfig:
    """Everything a neurons run depends on; see :func:`xling.recipes.neurons.run.neurons`."""

    model: str = option("gemma-3-270m", help="a decoder: gemma-3-270m (default), smollm2-135m, a folder, a .gguf "
                                             "file or a hub id")
    langs: list[str] | None = option(None, help=f"comma-separated languages (default {','.join(DEFAULT_LANGS)})")
    data: str = option("bible", help="any xling corpus (default bible): held-out sentences first, counting on the "
                                     "rest")
    max_tokens: int = option(check=at_least(1), default=20000, help="tokens counted per language (default 20,000)")
    held_out: int = option(check=at_least(1), default=50, help="held-out sentences per language for perplexity")
    ablate: bool = option(False, help="measure the perplexity matrix with and without each language's neurons")
    top_rate: float = option(check=between(1e-6, 1), default=0.01, help="share of neurons kept by lowest LAPE (default 0.01, the paper's 1%)")
    filter_rate: float = option(check=between(0, 1), default=0.95, help="percentile of activation probabilities a neuron must exceed in some "
                                           "language")
    activation_bar_ratio: float = option(check=between(0, 1), default=0.95, help="percentile a language's probability must exceed for the neuron "
                                                    "to be its")
    batch_size: int = option(check=at_least(1), default=8, help="sentences per forward pass")
    max_length: int = option(check=at_least(1), default=256, help="tokens per sentence at most")
    seed: int = option(0, help="seed of the random control sets and the bootstrap")
    bootstrap: int = option(check=at_least(1), default=1000, help="bootstrap resamples of the intervals")
    dtype: str = option("fp32", choices=("fp32", "bf16", "fp16"), help="fp32, bf16 or fp16")
    device: str = device_option()
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    overwrite: bool = overwrite_option()
    progress: bool = quiet_option()
    store: str | Path | None = store_option("results store (SQLite) read for an align run of the model (MEXA "
                                            "correlation); 'none' to skip")

    def __post_init__(self):
        check_config(self)
        if self.max_tokens < 100:
            raise XlingError(f"{flag('max_tokens')} must be at least 100, got {self.max_tokens}")
        if self.held_out < 2:
            raise XlingError(f"{flag('held_out')} must be at least 2 sentences, got {self.held_out}")
        for name in ("top_rate", "filter_rate", "activation_bar_ratio"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise XlingError(f"{flag(name)} must be in (0, 1], got {v}")
        if self.batch_size < 1 or self.max_length < 8:
            raise XlingError(f"{flag('batch_size')} must be at least 1 and {flag('max_length')} at least 8")


__all__ = ["DEFAULT_LANGS", "DEFAULT_OUT", "NeuronsConfig"]
