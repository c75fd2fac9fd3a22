"""The options of ``xling lens``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import (at_least, between, check_config, device_option, dtype_option, option,
                                  overwrite_option, quiet_option, store_option)

DEFAULT_OUT = Path("xling-out") / "lens"
TASKS = ("translation", "repetition", "cloze")
DEFAULT_LANGS = ["de", "es", "ru", "hi", "ja", "ar"]  # FreeDict has eng-<lang> for each; 5 scripts
ORDERS = ("frequent", "file", "sample")


@dataclasses.dataclass
class LensConfig:
    model: str = option("gemma-3-270m", help="a decoder: gemma-3-270m (default), smollm2-135m, a folder, a .gguf "
                                             "file or a hub id")
    langs: list[str] | None = option(None, help=f"comma-separated target languages (default "
                                                f"{','.join(DEFAULT_LANGS)})")
    task: str = option("translation", choices=TASKS,
                       help="translation (source word -> target word, default), repetition (target word repeated) or "
                            "cloze (a Bible verse of the target language with the word blanked)")
    source: str | None = option(None, help="source language of the translation prompts (default French; German for "
                                           "a French target)")
    pairs: str = option("freedict", help="word pairs: freedict (Debian's FreeDict eng-<lang>, fetched once; default) "
                                         "or a TSV file with a header of language codes, English included, one "
                                         "concept a row")
    order: str | None = option(None, choices=ORDERS,
                               help="which word pairs first: frequent English words (default with freedict; counts "
                                    "from the built-in Bible), the file's order (default with a TSV), or a seeded "
                                    "sample")
    max_prompts: int = option(100, check=at_least(1), help="prompts per language")
    shots: int = option(5, check=between(1, 20), help="demonstrations per prompt")
    seed: int = option(0, help="which word pairs are sampled")
    batch_size: int = option(8, check=at_least(1), help="prompts per forward pass")
    dtype: str = dtype_option()
    device: str = device_option()
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    overwrite: bool = overwrite_option()
    progress: bool = quiet_option()
    store: str | Path | None = store_option("results store (SQLite) read for an align run of the model (MEXA per "
                                            "layer); 'none' to skip")

    def __post_init__(self):
        check_config(self)


__all__ = ["DEFAULT_LANGS", "DEFAULT_OUT", "LensConfig", "ORDERS", "TASKS"]
