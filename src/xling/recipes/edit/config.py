"""The options of ``xling edit``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.data.facts import DEFAULT_CHOICES, DEFAULT_SHOTS, RELATIONS
from xling.harness.config import (at_least, between, check_config, device_option, dtype_option, option,
                                  overwrite_option, quiet_option, store_option)

DEFAULT_OUT = Path("xling-out") / "edit"
#: Evaluation languages by default: five scripts (Latin, Cyrillic, Devanagari, Japanese, Arabic).
DEFAULT_LANGS = ["en", "de", "es", "fr", "sw", "ru", "hi", "ja", "ar"]
NORMALIZE = ("mean", "sum")
#: The script groups of propagation: languages written in the edit language's script, and the others.
SAME, OTHER = "same script", "other script"


def _layers(text: str):
    """``middle`` (None: the middle third of the blocks) or comma-separated block indices."""
    if text.strip().lower() == "middle":
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected 'middle' or comma-separated block indices, got {text!r}") from None


@dataclasses.dataclass
class EditConfig:
    model: str = option("gemma-3-270m", help="a decoder: gemma-3-270m (default), smollm2-135m, a folder, a .gguf "
                                             "file or a hub id")
    lang: list[str] = option(["en"], help="comma-separated languages the edits are made in, one set of edits each (default "
                                  "en; XME compares English with another, e.g. en,sw)")
    langs: list[str] | None = option(None, help=f"comma-separated languages the edits are measured in (default "
                                                f"{','.join(DEFAULT_LANGS)}); the edit languages are added")
    relations: list[str] | None = option(None, choices=RELATIONS,
                                         help=f"comma-separated fact relations (default all: {', '.join(RELATIONS)})")
    edits: int = option(20, check=at_least(1), help="facts edited per edit language (a seeded sample)")
    locality: int = option(10, check=at_least(0),
                           help="unrelated facts (other subjects) checked per edit in every language")
    rank: int = option(1, check=at_least(1), help="LoRA rank of the update (1: rank-one per edited matrix)")
    steps: int = option(20, check=at_least(1), help="Adam steps on the edited statement at most")
    stop_nll: float = option(0.1, check=at_least(0), help="stop an edit early once the new answer's mean token "
                                                          "negative log-likelihood is below this (0: never)")
    lr: float = option(5e-3, check=lambda v: None if v > 0 else "must be > 0", help="Adam learning rate")
    layers: list[int] | None = option(None, parse=_layers, metavar="middle|I,J,...",
                                      help="blocks whose feed-forward output projection is edited: 'middle' (default: "
                                           "the middle third) or comma-separated indices")
    choices: int = option(DEFAULT_CHOICES, check=between(2, 5), help="choices per fact (chance 1/choices)")
    shots: int = option(DEFAULT_SHOTS, check=between(0, 10), help="demonstration lines before each question")
    normalize: str = option("mean", choices=NORMALIZE, help="a choice's score: mean token log-probability "
                                                            "(default) or the sum")
    seed: int = option(0, help="which facts are edited, their new answers, the unrelated facts and the adapter")
    batch_size: int = option(16, check=at_least(1), help="prompt-choice pairs per forward pass")
    max_length: int = option(256, check=at_least(8), help="tokens kept per prompt and choice")
    bootstrap: int = option(1000, check=at_least(0), help="bootstrap resamples over edits for the intervals")
    dtype: str = dtype_option()
    device: str = device_option()
    out: str | Path | None = option(DEFAULT_OUT, none=True, help="output folder; 'none': no files")
    overwrite: bool = overwrite_option()
    progress: bool = quiet_option()
    store: str | Path | None = store_option()

    def __post_init__(self):
        check_config(self)


__all__ = ["DEFAULT_LANGS", "DEFAULT_OUT", "EditConfig", "NORMALIZE", "OTHER", "SAME"]
