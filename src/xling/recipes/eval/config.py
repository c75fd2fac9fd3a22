"""The options of ``xling eval``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import (threads_option, at_least, check_config, device_option, dtype_option, executor_option, option,
                                  overwrite_option, quiet_option, ray_address_option, ray_workers_option,
                                  store_option, task_options_option)

DEFAULT_OUT = Path("xling-out") / "eval"
DEFAULT_STOP = ("\n",)
DEFAULT_MODEL = "xling-out/train/model"
DEFAULT_TASK = "libreoffice-topic"
#: ``--demos``: the demonstration sources of in-context learning (:data:`xling.methods.icl.DEMO_SOURCES`).
DEMO_SOURCES = ("source", "target", "retrieved")
TASK_HELP = ("built-in task name (libreoffice-topic, default; bible-mt: translation by prompted generation), a JSON "
             "task spec, or a .jsonl/.csv/.tsv file")


def stop_strings(value: str) -> list[str]:
    """``--stop``: a comma list; ``\\n``, ``\\t`` and ``\\\\`` in it are a newline, a tab and a backslash."""
    out = []
    for part in value.split(","):
        text, i = [], 0
        while i < len(part):
            pair = part[i:i + 2]
            if pair in ("\\n", "\\t", "\\\\"):
                text.append({"\\n": "\n", "\\t": "\t", "\\\\": "\\"}[pair])
                i += 2
            else:
                text.append(part[i])
                i += 1
        if text:
            out.append("".join(text))
    if not out:
        raise XlingError(f"--stop: no stop string in {value!r}")
    return out


def _template_problem(v):
    from xling.tasks.zeroshot import template_problem

    return template_problem(v)


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
    template: str | None = option(None, help="zero-shot prompt, with {text} (and {text_pair})",
                                  check=lambda v: _template_problem(v))
    verbalizers: dict[str, str] | None = option(None, cli=False)  # zero-shot: label -> the word scored
    normalize: str = option("mean", choices=("mean", "sum"), help="zero-shot: mean or summed token log-prob")
    # generation tasks (--task bible-mt, or a task file with a target field): prompted greedy generation
    shots: int = option(5, check=at_least(0), help="generation: demonstrations per prompt, the first N of the "
                                                    "task's train split, the same for every item; with --demos: k, "
                                                    "the demonstrations of every in-context prompt")
    max_new_tokens: int = option(128, check=at_least(1), help="generation: tokens generated at most per item")
    stop: list[str] | None = option(None, parse=stop_strings, metavar="S1,S2",
                                    help="generation: stop strings, comma-separated, \\n for a newline "
                                         "(default: a newline, the end of a one-line answer)")
    correct_chrf: float = option(50.0, check=at_least(0),
                                 help="generation: an item is correct when on target with sentence chrF >= this "
                                      "(0-100)")
    n_boot: int = option(1000, check=at_least(0), help="generation and --demos: bootstrap resamples of the items "
                                                         "per interval")
    # in-context learning (xling.recipes.eval.icl): k (--shots) train-split demonstrations, from three sources
    demos: list[str] | None = option(None, choices=DEMO_SOURCES, metavar="SOURCES", group="in-context learning",
                                     help="in-context learning with a decoder, comma-separated demonstration "
                                          "sources compared per language: source (k fixed train items in "
                                          "--demo-source-lang), target (the same items in the test language), "
                                          "retrieved (per item, the k source-language train items nearest to it "
                                          "by --demo-encoder); e.g. --demos source,target,retrieved")
    demo_source_lang: str | None = option(None, group="in-context learning",
                                          help="the language of the source and retrieved demonstrations (default: "
                                               "the task's source language, English for the built-in tasks; for a "
                                               "translation task, a language other than its pivot)")
    demo_encoder: str = option("e5-small", group="in-context learning",
                               help="the sentence encoder that retrieves demonstrations: a built-in model, a folder "
                                    "or a hub id (mean-pooled last layer, cosine similarity)")
    demo_prefix: str | None = option(None, group="in-context learning",
                                     help="text put before every text the encoder embeds (default: 'query: ' for "
                                          "the built-in e5-small, else none)")
    demo_seed: int = option(0, group="in-context learning",
                            help="the seed of the fixed demonstrations' order (the same seed, the same items)")
    demo_balance: bool = option(True, flag="--no-demo-balance", negate=True, group="in-context learning",
                                help="classification: take the fixed (source and target) demonstrations one label "
                                     "at a time, so k demonstrations show min(k, labels) labels (default); "
                                     "--no-demo-balance takes the first k of the seeded order whatever their labels")
    # lm-evaluation-harness tasks (xling.harness.lm_harness; the 'harness' extra)
    harness: list[str] | None = option(None, metavar="TASKS", group="lm-evaluation-harness",
                                       help="run lm-evaluation-harness tasks instead of --task, comma-separated: "
                                            "xling's own tasks (bible-genre, a task file: written as local harness "
                                            "tasks, nothing fetched), a folder of xling task --export-harness, or "
                                            "harness names (xnli, belebele, global_mmlu: their data needs the network)")
    harness_include: str | None = option(None, group="lm-evaluation-harness",
                                         help="a folder of your own harness task YAMLs, for names in --harness")
    harness_fewshot: int | None = option(None, check=at_least(0), group="lm-evaluation-harness",
                                         help="few-shot examples per harness prompt (default: each task's own "
                                              "setting, else 0)")
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
        if self.harness:  # options the harness path would silently drop are refused, one line naming the flag
            clash = [f for f, on in (("--demos", bool(self.demos)), ("--task", self.task != DEFAULT_TASK),
                                     ("--normalize", self.normalize != "mean"),
                                     ("--executor", self.executor != "local")) if on]
            if clash:
                hint = {"--demos": "in-context learning runs on xling's own tasks (--task), without --harness",
                        "--task": "name the task in --harness instead",
                        "--normalize": "the harness reports both acc (summed) and acc_norm (per character)",
                        "--executor": "the harness runs in this process"}[clash[0]]
                raise XlingError(f"{clash[0]} does not apply with --harness: {hint}")


__all__ = ["DEFAULT_MODEL", "DEFAULT_OUT", "DEFAULT_STOP", "DEFAULT_TASK", "DEMO_SOURCES", "EvalConfig", "TASK_HELP",
           "stop_strings"]
