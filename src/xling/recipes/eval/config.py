"""The options of ``xling eval``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.harness.config import (threads_option, at_least, check_config, device_option, dtype_option, executor_option, option,
                                  overwrite_option, quiet_option, ray_address_option, ray_workers_option,
                                  store_option, task_options_option)

DEFAULT_OUT = Path("xling-out") / "eval"
DEFAULT_MODEL = "xling-out/train/model"
DEFAULT_TASK = "libreoffice-topic"
TASK_HELP = "built-in task name (libreoffice-topic, default), a JSON task spec, or a .jsonl/.csv/.tsv file"


@dataclasses.dataclass
class EvalConfig:
    """Everything an evaluation depends on; see :func:`xling.recipes.eval.run.evaluate`."""

    model: str = option(DEFAULT_MODEL, help="the model folder of xling train, or a decoder with --zero-shot")
    task: str = option(DEFAULT_TASK, help=TASK_HELP)
    langs: list[str] | None = option(None, help="comma-separated languages (default: all of the split)")
    split: str = option("test", help="the split scored")
    max_examples: int | None = option(None, flag="--test-size", check=at_least(1),
                                      help="score the first N examples per language of --split (default: all)")
    source_lang: str | None = option(None, flag="--source",
                                     help="source language for the gap (default: the training language)")
    batch_size: int = option(32, check=at_least(1), help="examples per forward pass (default 32; length-sorted; "
                                                         "results do not depend on it)")
    max_length: int | None = option(None, check=at_least(4),
                                    help="default: the training max length (or 256 zero-shot)")
    zero_shot: bool = option(False, help="decoder LLMs: score each label's log-likelihood after a prompt, no training")
    template: str | None = option(None, help="zero-shot prompt, with {text} (and {text_pair})")
    verbalizers: dict[str, str] | None = option(None, cli=False)  # zero-shot: label -> the word scored
    normalize: str = option("mean", choices=("mean", "sum"), help="zero-shot: mean or summed token log-prob")
    task_options: dict = task_options_option()
    device: str = device_option()
    dtype: str = dtype_option()
    threads: int | None = threads_option()
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    cache: bool = option(True, flag="--no-cache", negate=True,
                         help="recompute predictions and write them over their cache entries")
    progress: bool = quiet_option()
    executor: str = executor_option()  # where the languages run (xling.harness.executor)
    ray_address: str | None = ray_address_option()
    ray_workers: int = ray_workers_option()  # torch threads each: threads, default 1
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        check_config(self)


__all__ = ["DEFAULT_MODEL", "DEFAULT_OUT", "DEFAULT_TASK", "EvalConfig", "TASK_HELP"]
