"""The ``train`` recipe: fine-tune a model on a task's source language, once or once per seed.

:func:`train` checks what it can before anything is loaded (the seed list, the
model name, the output folder), loads the task, reads the parallel pairs of the
optional middle-layer alignment loss (Liu & Niehues 2025: ``align_data``,
checked against the task's dev and test items, the layer found on the base
model when ``align_layer="auto"``), then trains with
:func:`xling.harness.training.train_task`: into ``out``, or with ``seeds`` one
model per seed into ``out/seed-<s>`` and the spread of the best dev accuracy
across seeds in ``out/seeds.csv`` (:mod:`xling.harness.seeds`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from xling.errors import XlingError
from xling.methods.train import TrainConfig


@dataclass
class TrainResult:
    """What :func:`train` wrote: one ``(seed, folder, xling_train.json)`` per model, and the seed spread."""

    out: Path
    runs: list[tuple[int, Path, dict]] = field(default_factory=list)
    seeds: list[int] | None = None
    spread: list[dict] | None = None
    spread_csv: Path | None = None


def _load_task(task, options: dict):
    """``task`` as it is when already a task, else loaded with ``options`` (a builder's TypeError is a bad option)."""
    if hasattr(task, "data"):
        return task
    from xling.tasks.registry import load_task

    try:
        return load_task(task, **options)
    except TypeError as exc:
        if not options:  # not the user's options: a real error, not a misleading "bad --task-option"
            raise
        raise XlingError(f"bad --task-option for {task}: {exc}") from None


def alignment_inputs(task, model: str, config: TrainConfig, *, lang: str | None, align_data: str,
                     align_langs: Sequence[str] | None, align_layer: str | int, align_max_pairs: int,
                     align_drop_overlap: bool, seed: int) -> tuple[list[tuple[str, str]], dict, int]:
    """``(pairs, align_info, layer)`` of the alignment loss: pairs of the source language with ``align_langs``
    (default: every other language of the task's test split, or of ``align_data`` for a source-only task)."""
    from xling.harness.alignment import resolve_align_layer
    from xling.harness.sources import corpus_targets, load_align_corpus, read_align_pairs
    from xling.methods.train import check_align_pairs

    source = task.resolve_lang(lang, "train") if lang else task.source_lang
    langs = [task.resolve_lang(x) for x in align_langs] if align_langs else \
        [x for x in task.langs("test") if x != source]
    corpus = load_align_corpus(align_data, source, langs)  # once, for the pairs and the auto layer
    if not langs:  # a task with the source language only: every other language of the alignment corpus
        langs = corpus_targets(corpus, source)
    pairs, align_info = read_align_pairs(align_data, source, langs, align_max_pairs, seed, corpus=corpus)
    pairs = check_align_pairs(pairs, task, align_drop_overlap, where=f"--align-data {align_data}")
    layer, layer_info = resolve_align_layer(align_layer, model, align_data, source, align_info["langs"],
                                            device=config.device, dtype=config.dtype, corpus=corpus)
    align_info["layer_rule"] = layer_info
    return pairs, align_info, layer


def train(
    model: str,
    task,
    *,
    config: TrainConfig,
    task_options: dict | None = None,
    lang: str | None = None,
    out: str | Path = "xling-out/train/model",
    adapters: Sequence[str | Path] = (),
    seeds: str | Sequence[int] | None = None,
    align_data: str | None = None,
    align_langs: Sequence[str] | None = None,
    align_layer: str | int = "auto",
    align_max_pairs: int = 4000,
    align_drop_overlap: bool = False,
    overwrite: bool = False,
    on_trained: Callable[[Path, dict], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``task`` (a task, or a name/spec loaded with ``task_options``) and write ``out``.

    ``config``: the hyperparameters (its ``seed`` is the one seed without ``seeds``;
    ``align_layer`` is set here from ``align_layer``). ``seeds`` (a list, or
    ``"0,1,2"``): one model per seed into ``out/seed-<s>``, and the spread of the
    best dev accuracy in ``out/seeds.csv``. ``on_trained(folder, info)`` is called
    after each model is written (``info``: its ``xling_train.json``).
    """
    from xling.harness.seeds import parse_seeds
    from xling.harness.training import train_task
    from xling.io import check_output_target
    from xling.models.builtin import check_model_name
    from xling.modules.trained import read_train_info

    seeds = parse_seeds(seeds)  # a bad list fails before anything is loaded
    check_model_name(model)  # a typo is reported before the task or any corpus is read
    check_output_target(out, overwrite=overwrite, command="train")  # before anything is loaded
    task = _load_task(task, task_options or {})
    cfg = config
    pairs, align_info = None, None
    if align_data:
        pairs, align_info, layer = alignment_inputs(
            task, model, cfg, lang=lang, align_data=align_data, align_langs=align_langs, align_layer=align_layer,
            align_max_pairs=align_max_pairs, align_drop_overlap=align_drop_overlap, seed=cfg.seed)
        cfg = dataclasses.replace(cfg, align_layer=layer)
    result = TrainResult(out=Path(out), seeds=seeds)

    def one(seed, folder):
        folder = train_task(model, task, lang=lang, out=folder, adapters=adapters,
                            config=dataclasses.replace(cfg, seed=seed), align_pairs=pairs, align_info=align_info,
                            overwrite=overwrite)
        info = read_train_info(folder) or {}
        result.runs.append((seed, folder, info))
        if on_trained is not None:
            on_trained(folder, info)
        return info

    if seeds is None:
        one(cfg.seed, out)
        return result
    from xling.harness.seeds import run_seeds, spread, write_spread
    from xling.io import mark_output

    mark_output(out, "train")  # one folder per seed inside: the folder is xling's
    done = run_seeds(seeds, one, out, progress=cfg.progress)
    result.spread = spread([(s, [{"language": info.get("language"), "best_dev": info.get("best_dev")}])
                            for s, info in done], ["language"], ["best_dev"])
    result.spread_csv = write_spread(out, result.spread, ["language"], ["best_dev"], seeds)
    return result


def format_trained(folder: Path, info: dict) -> str:
    """One line on a written model: method, examples, steps, time and the best dev score."""
    best = info.get("best_dev")
    return (f"wrote {folder} ({info.get('method')}; {info.get('train_examples')} {info.get('language')} examples, "
            f"{info.get('steps')} steps, {info.get('train_seconds')}s"
            + (f"; best dev {best:.4f} at epoch {info.get('best_epoch')}" if best is not None else "") + ")")


def format_spread(result: TrainResult) -> str:
    """The best dev accuracy of each seed, their mean and sd (``seeds`` runs only)."""
    from xling.harness.seeds import format_spread as table

    return table(result.spread, ["language"], "best_dev", result.seeds,
                 title=f"best dev accuracy over {len(result.seeds)} seeds")


__all__ = ["TrainResult", "alignment_inputs", "format_spread", "format_trained", "train"]
