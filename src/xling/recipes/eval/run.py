"""The ``eval`` recipe: zero-shot cross-lingual transfer scores and the transfer gap.

A model fine-tuned on the source language (``xling train``) is evaluated on the
test split of every language of a task (XTREME protocol, Hu et al. 2020):
accuracy and macro-F1 for classification, accuracy for multiple choice, entity
F1 (exact spans) for tagging. The transfer gap is

    gap = score(source) - mean over targets != source of score(target)

Decoder LLMs can be evaluated without training (``zero_shot=True``): labels are
scored by their log-likelihood after a prompt (:mod:`xling.tasks.zeroshot`).

Inference is batched and length-sorted. Predictions are cached on disk per
(model fingerprint, task, language, test data, settings), so an interrupted
evaluation resumes with the next unfinished language and a rerun reads the
weights only if something is missing. Outputs, each written atomically, under
``out``: ``scores.csv`` (per language and metric), ``per_language.csv`` (wide),
``report.html`` (table, bar chart, and the alignment-vs-score scatter when the
results store holds an ``align`` run of the same base model on the task's own corpus,
:func:`corpus_family`), ``run.json``; and
the scores go to the results store (``task_scores``; classification and
multiple-choice runs also per-item correctness, ``item_scores``, for paired
intervals in ``xling compare``), and each item's prediction next to its correctness, keyed by the item's
parallel id (``predictions.csv`` and the store's ``predictions``, read by ``xling consistency``).

The report and the summary are drawn by :mod:`xling.harness.scores_report`; the flags of
``xling train|eval|task`` are read by :mod:`xling.cli.eval`.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError
from xling.harness.scores import (PRED_CACHE_VERSION, EvalResult, PredictionCache, TaskModel,  # noqa: F401
                                  alignment_for, check_model, corpus_family, dominant_class_note, one_class_warning,
                                  prediction_problem, run_record, save_to_store, transfer_gap, write_outputs)
from xling.harness.scores_report import (chance_level, format_summary, group_warnings,  # noqa: F401
                                         render_eval_report, wide_rows)
from xling.recipes.eval.config import DEFAULT_OUT, EvalConfig  # noqa: F401 - the options live there

_Model = TaskModel  # eval's name for the model handle (tests patch it here)


def _say_estimate(cfg, handle, table, langs, total) -> None:
    """One line before inference: its rough duration (:mod:`xling.engine.estimate`), when the model's size is
    known from its config (the base model's, or the trained folder's ``config.json``)."""
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    config = getattr(getattr(handle, "lm", None), "config", None)
    if config is None:
        try:
            config = json.loads((Path(cfg.model).expanduser() / "config.json").read_text())
        except (OSError, ValueError):
            return
    params = model_params(config)
    if params <= 0:
        return
    def passes(e):  # what the model reads: the text (and pair, or words), once per choice for multiple choice
        text = " ".join(x for x in (e.text, e.text_pair, " ".join(e.tokens or [])) if x)
        return [text + " " + c for c in e.choices] if e.choices else [text]

    texts = (t for lang in langs for e in table[lang] for t in passes(e))
    device = "cpu" if str(cfg.device) in ("auto", "cpu") and not _cuda() else str(cfg.device)
    load = current_load()
    secs = estimate_seconds(count_tokens(texts, handle.max_length), forward_params(config), device=device, load=load)
    say(estimate_line("eval", model=handle.name, params=params, seconds=secs, device=device, langs=len(langs),
                      texts=total, text_word="example", note="(less where predictions are cached)", load=load))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- the units


def _returns(value):
    return value


def _task_stub(task):
    """What a worker needs of the task (name, type, labels): not its data, which the units carry."""
    import dataclasses

    return dataclasses.replace(task, data={}, meta={})


class _EvalUnits:
    """The worker of an evaluation: unit ``(lang, examples, cache key, cache meta)`` -> its predictions.

    Reads the prediction cache (unless ``--no-cache``); otherwise predicts, loading the model
    on first use, and writes the entry (atomic, checksummed). In this process it gets the
    driver's model handle and progress bar; on Ray (picklable) it builds its own handle.
    """

    def __init__(self, cfg: EvalConfig, task, cache_root: str | Path, handle=None, bar=None):
        self.cfg = cfg
        self.task = task
        self.handle = handle if handle is not None else _Model(cfg, task)
        self.cache = PredictionCache(cache_root)
        self.bar = bar

    def __call__(self, unit) -> dict:
        lang, examples, key, meta = unit
        task, bar = self.task, self.bar
        if bar is not None:
            bar.set_description(f"evaluating {lang}")
        check = functools.partial(prediction_problem, task.type, task.labels, examples)
        preds = self.cache.get(key, check) if self.cfg.cache else None
        if preds is not None:
            if bar is not None:
                bar.update(len(examples))
            return {"preds": preds, "cached": True, "infer_s": 0.0, "loaded": self.handle.loaded}
        ti = time.perf_counter()
        preds = self.handle.predict(examples, bar.update if bar is not None else None)
        infer_s = time.perf_counter() - ti
        self.cache.put(key, preds, meta)
        return {"preds": preds, "cached": False, "infer_s": infer_s, "loaded": self.handle.loaded}


# ----------------------------------------------------------------------------- the recipe


def evaluate(config: EvalConfig | None = None, *, task=None, executor=None, **kwargs) -> EvalResult:
    """Evaluate a trained model (or a decoder, zero-shot) on every language of a task.

    A generation task (``bible-mt``, a task file with a ``target`` field) is generated for by a decoder and
    scored with chrF, BLEU and language fidelity instead (:mod:`xling.recipes.eval.generation`; the result is a
    :class:`~xling.harness.generation.GenerationResult`).

    With ``demos`` set (``--demos source,target,retrieved``), a decoder is prompted with k train-split
    demonstrations from each source and the sources are compared per language with paired intervals
    (:mod:`xling.recipes.eval.icl`; the result is an :class:`~xling.recipes.eval.icl.IclResult`).

    With ``harness`` set (``--harness``), lm-evaluation-harness tasks run on the model instead
    (:func:`xling.harness.lm_harness.run_harness`; the result is a :class:`~xling.harness.lm_harness.HarnessResult`).

    Pass an :class:`EvalConfig` or its fields as keywords; ``task`` may be a
    ready :class:`~xling.tasks.core.Task`. ``executor`` (:mod:`xling.harness.executor`)
    overrides the one ``config.executor`` names: with ``ray`` each language's
    predictions are made on a Ray worker (the model loaded once per worker) and
    written to the prediction cache there; the driver reads the cached languages
    itself, computes the scores and writes the outputs and the store.
    """
    import dataclasses

    import torch

    from xling.harness.outputs import worker_model_name
    from xling.harness.executor import make_executor
    from xling.harness.consistency import prediction_record
    from xling.harness.store import items_hash
    from xling.tasks.metrics import main_metric, task_metrics
    from xling.tasks.registry import load_task

    if task is not None and not hasattr(task, "data"):  # a name or path: a config field
        kwargs["task"], task = str(task), None
    cfg = config if config is not None else EvalConfig(**kwargs)
    if cfg.harness:  # lm-evaluation-harness tasks on the model xling loads: xling.harness.lm_harness
        from xling.harness.lm_harness import run_harness

        return run_harness(cfg)
    ex = executor if executor is not None else make_executor(  # a missing ray fails now, before the task
        cfg.executor, address=cfg.ray_address, workers=cfg.ray_workers, threads=cfg.threads or 1)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    from xling.harness.outputs import preflight

    preflight(cfg, "eval")  # a folder that is not xling's, an unusable store: refused before any work
    if cfg.demos:  # in-context learning, three demonstration sources: recipes/eval/icl.py
        from xling.recipes.eval.icl import evaluate_icl

        return evaluate_icl(cfg, task=task)
    from xling.tasks.generation import is_generation_task

    if is_generation_task(task if task is not None else cfg.task):  # prompted generation: recipes/eval/generation.py
        from xling.recipes.eval.generation import evaluate_generation

        return evaluate_generation(cfg, task=task)
    lm = check_model(cfg)  # before the task: a wrong --model must not wait for a task build
    task = task if task is not None else load_task(cfg.task, **cfg.task_options)
    if cfg.max_examples is not None:
        task = task.capped({cfg.split: cfg.max_examples})
    table = task.data.get(cfg.split) or {}
    if not table:
        raise XlingError(f"task {task.name} has no {cfg.split} split")
    t_data = time.perf_counter()
    handle = _Model(cfg, task, lm)
    source = cfg.source_lang or handle.info.get("language") or task.source_lang
    try:
        source = task.resolve_lang(source, cfg.split)
    except XlingError:
        if cfg.source_lang:
            raise
    if cfg.langs is not None:
        langs = []
        for code in cfg.langs:
            lang = task.resolve_lang(code, cfg.split)
            if lang not in langs:
                langs.append(lang)
    else:
        langs = sorted(table, key=lambda x: (x != source, x))
    cache = PredictionCache()  # cfg.cache False (--no-cache): recompute, and write over the entries
    total = sum(len(table[lang]) for lang in langs)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        _say_estimate(cfg, handle, table, langs, total)
        bar = tqdm(total=total, unit="ex", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    rows: list[dict] = []
    n_examples: dict[str, int] = {}
    from_cache = 0
    warned: dict[str, str] = {}
    correct: dict[str, list[int]] = {}
    ids_hash: dict[str, str] = {}
    records: dict[str, dict] = {}  # lang -> each item's prediction, keyed by its parallel id (predictions.csv)
    metric = main_metric(task.type)
    t_infer = 0.0
    units = []
    for lang in langs:
        spec = {"model": handle.fingerprint, "task": task.name, "data": task.fingerprint(cfg.split, lang),
                "lang": lang, **handle.settings()}
        units.append((lang, table[lang], PredictionCache.key(spec),
                      {"model": handle.name, **{k: v for k, v in spec.items() if k != "verbalizers"}}))
    remote = ex.name != "local"
    predicted: dict[str, dict] = {}
    try:
        if not remote:  # in this process: today's loop, the progress bar per batch
            worker = _EvalUnits(cfg, task, cache.root, handle, bar)
            todo = units
        else:  # cached languages are read here; the others go to the workers, each loading the model once
            worker, todo = None, []
            for unit in units:
                lang, examples, key, _ = unit
                check = functools.partial(prediction_problem, task.type, task.labels, examples)
                preds = cache.get(key, check) if cfg.cache else None
                if preds is None:
                    todo.append(unit)
                    continue
                predicted[lang] = {"preds": preds, "cached": True, "infer_s": 0.0, "loaded": False}
                if bar is not None:
                    bar.update(len(examples))
        remote_cfg = dataclasses.replace(cfg, model=worker_model_name(str(cfg.model)), progress=False)
        make = functools.partial(_returns, worker) if worker is not None else \
            functools.partial(_EvalUnits, remote_cfg, _task_stub(task), str(cache.root))

        def on_result(j, u, value):
            predicted[todo[u][0]] = value
            if remote and bar is not None:
                bar.update(len(todo[u][1]))
                bar.set_description(f"evaluating: {len(predicted)}/{len(units)} languages done")

        from xling.harness.executor import Job

        ex.run([Job(make, todo, [f"eval {handle.name}, language {u[0]}" for u in todo])], on_result=on_result)
    finally:
        if bar is not None:
            bar.close()
    for lang in langs:
        value = predicted[lang]
        preds = value["preds"]
        from_cache += value["cached"]
        t_infer += value["infer_s"]
        examples = table[lang]
        gold = [e.tags if task.type == "token-classification" else e.label for e in examples]
        n_examples[lang] = len(examples)
        warning = (one_class_warning(task.type, task.labels, preds)
                   or dominant_class_note(task.type, task.labels, preds, gold))
        if warning:
            warned[lang] = warning
        if task.type != "token-classification":  # per-item correctness: classification and multiple choice
            correct[lang] = [int(p == g) for p, g in zip(preds, gold)]
            ids_hash[lang] = items_hash(examples)
            records[lang] = prediction_record(examples, preds, task.type, task.labels)
        for m, v in task_metrics(task.type, task.labels, gold, preds).items():
            rows.append({"model": handle.name, "task": task.name, "lang": lang, "split": cfg.split,
                         "metric": m, "value": float(v)})
    model_loaded = handle.loaded or any(v["loaded"] for v in predicted.values())
    for warning, wlangs in group_warnings(warned):  # after the progress bar: one line per kind of warning
        print(f"xling: warning: {', '.join(wlangs)}: {warning}", file=sys.stderr)
    t_done = time.perf_counter()
    n_total = sum(n_examples.values())
    result = EvalResult(
        rows=rows, run_id=uuid.uuid4().hex[:12], model=handle.name, base_model=handle.base_model, task=task.name,
        task_type=task.type, split=cfg.split, source=source, langs=langs, n_examples=n_examples, main_metric=metric,
        timings={"data_s": round(t_data - t0, 3), "inference_s": round(t_infer, 3), "total_s": round(t_done - t0, 3),
                 "languages_from_cache": from_cache, "model_loaded": model_loaded,
                 "examples_per_s": round(n_total / t_infer, 1) if t_infer > 0 else None},
        meta={"model_fingerprint": handle.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
              "settings": handle.settings(), "train_info": {k: v for k, v in handle.info.items() if k != "curve"},
              "dev_curve": handle.info.get("curve"), "started": started, "device": cfg.device,
              "torch": torch.__version__, "labels": task.labels, "warnings": warned},
        correct=correct, ids_hash=ids_hash, predictions=records,
    )
    store_align = alignment_for(result, Path(cfg.store)) if cfg.store is not None else None
    if cfg.out is not None:
        from xling.io import output_folder

        # built aside and swapped in whole under the output lock: one run's files, never a mix; a failure
        # (a full disk) leaves the earlier folder as it was
        with output_folder(cfg.out, command="eval", overwrite=cfg.overwrite) as tmp:
            write_outputs(result, tmp, cfg, store_align)
    if cfg.store is not None:
        save_to_store(result, Path(cfg.store), cfg)
    return result


# ----------------------------------------------------------------------------- outputs


__all__ = ["EvalConfig", "EvalResult", "evaluate", "transfer_gap", "PredictionCache", "render_eval_report",
           "format_summary"]
