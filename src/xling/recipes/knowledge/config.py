"""The options of ``xling knowledge``: one field each; the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.data.facts import DEFAULT_CHOICES, DEFAULT_SHOTS, RELATIONS
from xling.harness.config import (at_least, between, check_config, device_option, dtype_option, option,
                                  overwrite_option, quiet_option, store_option)

DEFAULT_OUT = Path("xling-out") / "knowledge"
NORMALIZE = ("mean", "sum")
#: The script groups of "known in English, known elsewhere".
SAME_SCRIPT, OTHER_SCRIPT = "same script as English", "other scripts"


@dataclasses.dataclass
class KnowledgeConfig:
    model: str = option("gemma-3-270m", help="a decoder: gemma-3-270m (default), smollm2-135m, a folder, a .gguf "
                                             "file or a hub id")
    langs: list[str] | None = option(None, help="comma-separated languages with CLDR names (default: the 22 of the "
                                                "built-in Bible); English is always added, as the reference")
    relations: list[str] | None = option(None, choices=RELATIONS,
                                         help=f"comma-separated relations (default all: {', '.join(RELATIONS)})")
    choices: int = option(DEFAULT_CHOICES, check=between(2, 5), help="choices per item (chance 1/choices)")
    shots: int = option(DEFAULT_SHOTS, check=between(0, 10),
                        help="demonstration lines '<subject>: <answer>' of other facts before each question")
    max_per_relation: int | None = option(None, check=at_least(1),
                                          help="at most this many facts per relation (a seeded sample; default all)")
    seed: int = option(0, help="distractors, answer positions and the --max-per-relation sample")
    normalize: str = option("mean", choices=NORMALIZE,
                            help="a choice's score: mean (default: its summed token log-probability divided by its "
                                 "token count, so long names are not penalised) or sum")
    batch_size: int = option(32, check=at_least(1), help="prompt-choice pairs per forward pass")
    max_length: int = option(256, check=at_least(8), help="tokens kept per prompt and choice")
    bootstrap: int = option(1000, check=at_least(0), help="bootstrap resamples for the intervals (0: none)")
    dtype: str = dtype_option()
    device: str = device_option()
    out: str | Path | None = option(DEFAULT_OUT, none=True, help="output folder; 'none': no files")
    overwrite: bool = overwrite_option()
    progress: bool = quiet_option()
    store: str | Path | None = store_option()

    def __post_init__(self):
        check_config(self)


__all__ = ["DEFAULT_OUT", "KnowledgeConfig", "NORMALIZE", "OTHER_SCRIPT", "SAME_SCRIPT"]
