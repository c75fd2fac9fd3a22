"""``xling transfer``: the modular cross-lingual transfer experiment, end to end.

One command trains (or reuses) the modules and compares the ways of combining them
on every target language of a task:

* language modules: a LoRA per language (the source and each target) trained by
  masked LM (encoders) or causal LM (decoders) on unlabeled text
  (default ``unlabeled:<task>``: the task's domain text without its dev/test text);
* task modules: a task LoRA trained on the base (``task``), one trained on top of
  the source-language module (``task@src``, MAD-X; Pfeiffer et al. 2020), one trained
  with the middle-layer alignment loss on parallel text (``task+align``; Liu &
  Niehues 2025), and, for the ceiling, one per target trained on the gold
  translations of the training set (``tt:<lang>``, translate-train).

Conditions (:data:`CONDITIONS`; a per-target one is built for each target language):

=============  ==========================================================================
``task``       task module alone (trained on the base): plain zero-shot transfer
``no-lang``    baseline: the MAD-X task module with no language module
``src-lang``   baseline: the MAD-X task module with the source-language module kept
``stack``      MAD-X: the target-language module replaces the source one under the task module
``add``        arithmetic: ``dW_task + lambda dW_tgt`` (Chronopoulou et al. 2023)
``add-swap``   arithmetic: ``dW_task + lambda (dW_tgt - dW_src)``
``layer-swap`` the task module with its bottom b / top t layers from the target-language
               module (Bandarkar et al. 2025), optional linear transition zone
``align``      the task module trained with middle-layer alignment (Liu & Niehues 2025)
``madx2``      MAD-X 2.0: ``stack`` without the language module in the last layer
               (Pfeiffer et al. 2021)
``lang-expert`` baseline: the target-language module alone, with the task module's head
``translate-test`` baseline (``--translate-test MODEL``): each target test item translated into the
               source language by a prompted decoder, scored by the task module
               (:mod:`xling.harness.translate`; Conneau et al. 2018, Artetxe et al. 2020)
``translate-train`` the ceiling: a task module trained on the target language's gold
               translations of the training set
=============  ==========================================================================

Choices are made on dev, never on test (:func:`_select`): the lambda of ``add`` and
``add-swap`` from ``--lambdas`` and the bottom/top/transition of ``layer-swap`` from
``--swap auto`` (a grid scaled to the depth of the model), per target language, by
the accuracy of each candidate composition on the source-language dev set
(``--select-on source-dev``, the zero-shot protocol: no target label is used) or on
the target language's dev set (``target-dev``: a few hundred target labels, not
zero-shot; Keung et al. 2020 show English dev selection can mislead). A dev tie is
listed and broken by :data:`TIE_RULES` (:func:`pick_on_dev`: the gentlest composition).
:func:`honesty_warnings` says when every condition is within noise of chance (no best
condition is named then) and when the ceiling is not above the reference beyond noise.

Each condition is reported per language with the difference to ``task`` and its 95%
paired-bootstrap interval, and, when ``translate-train`` ran, the share of the
transfer gap it closes, ``(score - task) / (ceiling - task)`` (mean over targets of
numerator and denominator), with a bootstrap interval from the same resamples.

Every composition is exact arithmetic on dW (:func:`xling.modules.apply.compose_into`,
the same code as ``xling compose``), applied to one in-memory copy of the base
task model: weights are restored between conditions, so the base is loaded once.
Modules are saved in PEFT format under ``OUT/modules`` and reused when their
recipe (base, text, hyper-parameters) is unchanged; predictions are cached, so an
interrupted run resumes. ``--executor ray`` trains the modules not reusable on Ray
workers, one unit per module, each marked reusable as soon as it is trained; the
evaluation stays in this process. Outputs: ``transfer.csv`` (per language and condition),
``summary.csv`` (per condition, with a paired bootstrap CI of the difference to
``task``), ``predictions.csv`` (each test item's prediction per condition and language, keyed by its
parallel id: ``xling consistency RUN_ID --condition C``), ``report.html``, ``run.json`` and the results store.

The recipe runs in four stages, one module each: :mod:`~xling.recipes.transfer.plan` (the swap grid, the
conditions resolved to module paths, the reuse keys, the dev-choice rule), :mod:`~xling.recipes.transfer.units`
(language and task modules trained or reused, locally or on Ray), :mod:`~xling.recipes.transfer.evaluate` (each
composed model scored) and :mod:`~xling.recipes.transfer.summarise` (the paired bootstrap, the warnings, the
table, report and outputs); this module orders them.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from xling.errors import XlingError
from xling.methods.stats import bootstrap_study
from xling.recipes.transfer.config import (CONDITIONS, DEFAULT_LAMBDAS, DEFAULT_MODEL, DEFAULT_OUT,  # noqa: F401
                                           DEFAULT_TARGETS, DEFAULT_TASK, NOT_RECORDED, SELECT_ON, TASK_TARGETS,
                                           Condition, TransferConfig)

from xling.recipes.transfer.plan import (COLLAPSE, DEFAULT_ALIGN_DATA, OPTIONAL, RECIPE_FILE, RECIPE_VERSION,  # noqa: F401 - stage 1
                                         TIE_RULES, _fmt_choice, _key, _log, _mark, _modules, _resolve_condition,
                                         _reusable, _tie_order, module_fingerprint, pick_on_dev, swap_grid)
from xling.recipes.transfer.units import (_ModuleUnits, _align_folder, _alignment_inputs, _module_jobs, _returns,  # noqa: F401 - stage 2
                                          _train_modules)
from xling.recipes.transfer.evaluate import _Bench  # noqa: F401 - stage 3
from xling.recipes.transfer.summarise import (TransferResult, _write, format_table, honesty_warnings, render_report)  # noqa: F401 - stage 4


def run_transfer(config: TransferConfig | None = None, *, task=None, executor=None, **kwargs) -> TransferResult:
    """Run the modular transfer experiment; see the module docstring.

    The run owns ``--out`` (where it trains and reuses its modules) from start to
    end: a second run into the same folder is refused with one line.

    ``executor`` (:mod:`xling.harness.executor`) overrides the one ``config.executor``
    names: with ``ray`` the modules to train (each language module, each task module)
    are units trained on Ray workers, each into its folder, marked there as soon as
    it is complete; the driver reads them, evaluates every condition in this process
    (one base model in memory, the dev choices in order) and writes the outputs and
    the store.
    """
    from xling.io import check_output_target, mark_output, output_lock
    from xling.harness.executor import make_executor

    cfg = config if config is not None else TransferConfig(**kwargs)
    # a file, the cache or a user's own folder: refused before any work. The folder is written incrementally
    # (its modules are the resume cache), so it is not swapped whole: it is marked as xling's at the start
    check_output_target(cfg.out, overwrite=cfg.overwrite, command="transfer")
    ex = executor if executor is not None else make_executor(  # a missing ray fails now, before anything is read
        cfg.executor, address=cfg.ray_address, workers=cfg.ray_workers, threads=cfg.threads or 1)
    with output_lock(cfg.out, wait=False):
        check_output_target(cfg.out, overwrite=cfg.overwrite, command="transfer")
        mark_output(cfg.out, "transfer")
        return _run_transfer(cfg, task, ex)


def _run_transfer(config: TransferConfig, task, executor=None) -> TransferResult:
    import torch

    from xling.harness.consistency import prediction_record
    from xling.harness.scores import PredictionCache, prediction_problem
    from xling.harness.store import items_hash
    from xling.tasks.metrics import main_metric, task_metrics
    from xling.tasks.registry import load_task

    cfg = config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.store is not None:  # an unusable store fails now, not after the run
        from xling.harness.store import ResultsStore

        ResultsStore(cfg.store).check()
    translator = None
    if cfg.translate_test is not None:  # the generation extra and a decoder, before any long work
        from xling.harness.translate import check_translator

        translator = check_translator(cfg.translate_test, dtype=cfg.dtype, device=cfg.device)
    task = load_task(task if task is not None else cfg.task, **(cfg.task_options or {}))
    if task.type != "classification":
        raise XlingError(f"xling transfer runs classification tasks; {task.name} is {task.type}")
    source = task.resolve_lang(cfg.source_lang, "test") if cfg.source_lang else task.source_lang
    wanted = cfg.langs if cfg.langs is not None else \
        [t for t in TASK_TARGETS.get(task.name, DEFAULT_TARGETS) if t in task.data.get("test", {})] or \
        [t for t in task.langs("test") if t != source][:5]
    targets = []
    for code in wanted:
        lang = task.resolve_lang(code, "test")
        if lang == source:
            raise XlingError(f"{code} is the source language ({source}); name target languages only")
        if lang not in targets:
            targets.append(lang)
    if not targets:
        raise XlingError("no target languages")
    notes: list[str] = []
    names = list(cfg.conditions) if cfg.conditions is not None else list(CONDITIONS)
    if cfg.conditions is None and cfg.translate_test is None:
        names.remove("translate-test")  # run only with a translator (--translate-test MODEL)
    if cfg.conditions is None:  # the default set: drop what this task cannot support, with a note
        if not all(task.data.get("train", {}).get(t) for t in targets):
            names.remove("translate-train")
            notes.append(f"translate-train skipped: task {task.name} has no training data in every target language")
        if cfg.align_data is None and task.name not in DEFAULT_ALIGN_DATA:
            names.remove("align")
            notes.append(f"align skipped: task {task.name} has no built-in parallel text; pass --align-data")
    elif "translate-train" in names:
        for t in targets:
            if not task.data.get("train", {}).get(t):
                raise XlingError(f"translate-train needs gold translations of the training set: task {task.name} "
                                 f"has no training data in {t}")
    for n in notes:
        _log(n, cfg.progress)
    conds = [CONDITIONS[c] for c in names]
    needed = {role for c in conds for role in c.inputs}
    out = Path(cfg.out)
    mdir = Path(cfg.modules_dir) if cfg.modules_dir is not None else out / "modules"
    mdir.mkdir(parents=True, exist_ok=True)
    _log(f"{task.name}: source {source}, targets {', '.join(targets)}; conditions {', '.join(names)}",
         cfg.progress)
    examples = {}
    for lang in [source, *targets]:
        ex = task.examples("test", lang)
        examples[lang] = ex[: cfg.max_test] if cfg.max_test else ex
    translated = None
    t_tr = time.perf_counter()
    if any(c.translate for c in conds):  # before the modules: the translator leaves memory before training
        from xling.harness.translate import translate_examples

        translated = translate_examples(translator, cfg.translate_test, task, {t: examples[t] for t in targets},
                                        source, shots=cfg.translate_shots, demos=cfg.translate_demos,
                                        max_new_tokens=cfg.translate_max_new_tokens, batch_size=cfg.batch_size,
                                        use_cache=cfg.cache, progress=cfg.progress)
    t_tr = time.perf_counter() - t_tr
    t_mod = time.perf_counter()
    modules = _train_modules(cfg, task, source, targets, mdir, needed, executor)
    t_mod = time.perf_counter() - t_mod
    paths = {role: m["path"] for role, m in modules.items()}
    if "lang:src" in needed:
        paths["lang:src"] = paths[f"lang:{source}"]
    fps = {str(m["path"]): module_fingerprint(m["path"]) for m in modules.values()}
    from xling.modules.lora import LoraModule

    for m in modules.values():
        m["dw_norm"] = round(LoraModule(m["path"]).delta_norm(), 4)
    n_layers = None
    if any(c.choice == "swap" for c in conds) and cfg.swap == "auto":
        from transformers import AutoConfig

        from xling.models.layers import num_layers
        from xling.models.loading import load_model

        n_layers = num_layers(AutoConfig.from_pretrained(load_model(cfg.model, quiet=True, lazy=True).path))

    dev_examples: dict[str, list] = {}
    if any(c.choice for c in conds):
        for lang in ([source] if cfg.select_on == "source-dev" else targets):
            if not (task.data.get("dev") or {}).get(lang):
                raise XlingError(f"--select-on {cfg.select_on}: task {task.name} has no dev data in {lang}"
                                 + ("; pass --lambda and --swap B,T,W to fix the choices" if lang == source else ""))
            ex = task.examples("dev", lang)
            dev_examples[lang] = ex[: cfg.max_dev] if cfg.max_dev else ex
    cache = PredictionCache()  # cfg.cache False (--no-cache): recompute, and write over the entries
    state = {"bench": None, "current": None, "predicted": 0, "total": 0}

    def candidates(c: Condition) -> list:
        if c.choice == "lambda":
            return list(cfg.lambdas)
        if c.choice == "swap":
            return swap_grid(n_layers) if cfg.swap == "auto" else [tuple(cfg.swap)]
        return [None]

    def predictions(c: Condition, choice, tgt, lang: str, split: str, ex: list, bar) -> list:
        inputs, weights, options = _resolve_condition(c, cfg, paths, tgt, choice)
        spec_base = {"transfer": RECIPE_VERSION, "base": modules[c.inputs[0].replace("tt:tgt", f"tt:{tgt}")]["key"],
                     "method": c.method, "inputs": [fps[str(p)] for p in inputs], "weights": weights,
                     "options": options, "max_length": cfg.task_max_length, "task": task.name}
        data = task.fingerprint(split, lang)
        if c.translate:  # the translated items: their texts (translator, prompts, settings) are the data
            spec_base["translations"] = translated.fingerprints[lang]
            data = {"task": data, "translated": translated.fingerprints[lang]}
        key = PredictionCache.key({**spec_base, "data": data, "lang": lang,
                                   "n": len(ex), **({"split": split} if split != "test" else {})})
        got = cache.get(key, functools.partial(prediction_problem, task.type, task.labels, ex)) if cfg.cache else None
        if got is None:
            if state["bench"] is None:
                state["bench"] = _Bench(cfg, task, paths.get("task", paths.get("task@src", paths.get("task+align"))))
            comp = json.dumps([str(p) for p in inputs] + [c.method, weights, options], default=str)
            if state["current"] != comp:
                state["bench"].set(inputs, c.method, weights, options)
                state["current"] = comp
            if bar is not None:
                bar.set_description(f"{c.name} {lang} {split}")
            got = state["bench"].predict(ex, bar.update if bar is not None else None)
            state["predicted"] += len(ex)
            cache.put(key, got, {"condition": c.name, "lang": lang, "split": split, **spec_base})
        elif bar is not None:
            bar.update(len(ex))
        state["total"] += len(ex)
        return got

    def accuracy(preds, ex) -> float:
        return sum(int(p == e.label) for p, e in zip(preds, ex)) / max(1, len(ex))

    # the plan: per condition, the evaluation languages and (per target) the candidates to choose among on dev
    total = 0
    for c in conds:
        n_cand = len(candidates(c))
        if c.per_target:
            for t in targets:
                total += len(examples[t])
                if n_cand > 1:
                    total += n_cand * len(dev_examples[source if cfg.select_on == "source-dev" else t])
        else:
            total += sum(len(examples[lang]) for lang in [source, *targets])
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="ex", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    t_eval = time.perf_counter()
    preds: dict[tuple[str, str], list[int]] = {}
    choices: list[dict] = []
    try:
        for c in conds:
            if not c.per_target:
                for lang in [source, *targets]:
                    preds[(c.name, lang)] = predictions(c, None, None, lang, "test", examples[lang], bar)
                continue
            for t in targets:
                cands = candidates(c)
                chosen = cands[0]
                if len(cands) > 1:
                    dev_lang = source if cfg.select_on == "source-dev" else t
                    scored = []
                    for cand in cands:
                        p = predictions(c, cand, t, dev_lang, "dev", dev_examples[dev_lang], bar)
                        scored.append((accuracy(p, dev_examples[dev_lang]), cand))
                    chosen, tied = pick_on_dev(scored, c.choice)
                    choices.append({"condition": c.name, "lang": t, "chosen": chosen, "split": f"dev:{dev_lang}",
                                    "candidates": [{"value": cand, "dev": round(v, 6)} for v, cand in scored]})
                    if len(tied) > 1:
                        choices[-1]["tied"] = tied
                        notes.append(f"{c.name} {t}: dev tie ({dev_lang} accuracy {max(v for v, _ in scored):.3f}) "
                                     f"between {c.choice} {', '.join(_fmt_choice(x) for x in tied)}; chose "
                                     f"{_fmt_choice(chosen)} ({TIE_RULES[c.choice]})")
                elif c.choice:
                    choices.append({"condition": c.name, "lang": t, "chosen": chosen, "split": "fixed",
                                    "candidates": []})
                preds[(c.name, t)] = predictions(c, chosen, t, t, "test",
                                                 translated.examples[t] if c.translate else examples[t], bar)
    finally:
        if bar is not None:
            bar.close()
    t_eval = time.perf_counter() - t_eval

    metric = main_metric(task.type)
    correct = {(cn, lang): [int(p == e.label) for p, e in zip(v, examples[lang])] for (cn, lang), v in preds.items()}
    ref = "task" if "task" in names else names[0]
    ceiling = "translate-train" if "translate-train" in names else None
    stats = bootstrap_study({c.name: [correct[(c.name, t)] for t in targets] for c in conds}, ref, ceiling,
                            cfg.bootstrap, cfg.seed)
    rows = []
    for c in conds:
        for lang in [source, *targets]:
            if (c.name, lang) not in preds:
                continue
            gold = [e.label for e in examples[lang]]
            scores = task_metrics(task.type, task.labels, gold, preds[(c.name, lang)])
            row = {"lang": lang, "role": "source" if lang == source else "target", "condition": c.name,
                   "n": len(gold), **{k: round(float(v), 6) for k, v in scores.items()}}
            if lang != source:
                j = targets.index(lang)
                st = stats[c.name]
                row.update({"delta": round(st["lang_delta"][j], 6),
                            "delta_lo": None if st["lang_lo"][j] is None else round(st["lang_lo"][j], 6),
                            "delta_hi": None if st["lang_hi"][j] is None else round(st["lang_hi"][j], 6)})
            rows.append(row)
    summary = []

    def r6(v):
        return None if v is None else round(v, 6)

    for c in conds:
        accs = [next(r[metric] for r in rows if r["condition"] == c.name and r["lang"] == t) for t in targets]
        st = stats[c.name]
        src = next((r[metric] for r in rows if r["condition"] == c.name and r["lang"] == source), None)
        summary.append({"condition": c.name, "description": c.description, "method": c.method,
                        f"mean_target_{metric}": round(sum(accs) / len(accs), 6),
                        f"source_{metric}": src, "reference": ref, "ceiling": ceiling,
                        "delta": r6(st["delta"]), "delta_lo": r6(st["delta_lo"]), "delta_hi": r6(st["delta_hi"]),
                        "gap_closed": r6(st["gap_closed"]), "gap_closed_lo": r6(st["gap_closed_lo"]),
                        "gap_closed_hi": r6(st["gap_closed_hi"])})
    warnings = honesty_warnings(summary, {c.name: [correct[(c.name, t)] for t in targets] for c in conds},
                                len(task.labels), metric)
    translation: dict = {}
    if translated is not None:
        from xling.harness.translate import translation_quality, translation_warnings

        quality, tr_notes = translation_quality(translated, task, source, n_boot=cfg.bootstrap,
                                                seed=cfg.seed)
        notes += tr_notes
        warnings += translation_warnings(quality, source)
        for r in rows:
            if r["condition"] in [c.name for c in conds if c.translate] and r["lang"] in quality:
                r.update({f"translation_{k}": v for k, v in quality[r["lang"]].items() if k != "n"})
        off = [q for q in quality.values() if q.get("off_target_n")]
        k_off = sum(q["off_target"] * q["off_target_n"] for q in off)
        n_off = sum(q["off_target_n"] for q in off)
        for s in summary:
            if CONDITIONS[s["condition"]].translate and n_off:
                from xling.methods.stats import wilson_interval

                lo, hi = wilson_interval(round(k_off), n_off)
                s.update({"translation_off_target": round(k_off / n_off, 6),
                          "translation_off_target_lo": round(lo, 6), "translation_off_target_hi": round(hi, 6)})
        translation = {**translated.settings, "quality": quality, "timings": translated.timings,
                       "seconds": round(t_tr, 1)}
    for w in warnings:
        print(f"xling: warning: {w}", file=sys.stderr, flush=True)
    result = TransferResult(translation=translation, translations=translated.records if translated else [],
        rows=rows, summary=summary, source=source, targets=targets, conditions=names, warnings=warnings,
        modules={role: {k: (str(v) if isinstance(v, Path) else v) for k, v in m.items()} for role, m in modules.items()},
        metric=metric, run_id=uuid.uuid4().hex[:12],
        timings={"modules_s": round(t_mod, 1), "eval_s": round(t_eval, 1),
                 **({"translate_s": round(t_tr, 1)} if translated is not None else {}),
                 "total_s": round(time.perf_counter() - t0, 1), "examples": state["total"],
                 "predicted": state["predicted"], "modules_trained": sum(not m["reused"] for m in modules.values())},
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in NOT_RECORDED},
        choices=choices, notes=notes,
        items=[{"condition": cn, "lang": lang, "ids_hash": items_hash(examples[lang]), "correct": v}
               for (cn, lang), v in correct.items()],
        predictions=[{"condition": cn, "lang": lang,
                      "record": prediction_record(examples[lang], v, task.type, task.labels)}
                     for (cn, lang), v in preds.items()],
    )
    result.config["started"] = started
    _write(result, cfg, task)
    return result


def run_transfer_seeds(config: TransferConfig, seeds: Sequence[int], *, task=None,
                       executor=None) -> tuple[list[tuple[int, TransferResult]], list[dict]]:
    """``--seeds``: the whole experiment once per seed (every module trained with that seed), each in ``OUT/seed-<s>``
    (modules in ``OUT/seed-<s>/modules``, or ``MODULES_DIR/seed-<s>``), then per condition the mean over seeds of the
    mean target score and of the difference to the reference, with the sd across seeds next to the mean of the
    seeds' paired-bootstrap intervals (:func:`xling.harness.seeds.spread`); written to ``OUT/seeds.csv`` and
    ``OUT/seeds.json`` (with the per-language rows). Returns the per-seed results and the per-condition rows.
    """
    import dataclasses

    from xling.io import check_output_target, mark_output
    from xling.harness.seeds import run_seeds, spread, write_spread

    cfg = config
    check_output_target(cfg.out, overwrite=cfg.overwrite, command="transfer")
    mark_output(cfg.out, "transfer")

    def one(seed, out):
        mods = None if cfg.modules_dir is None else Path(cfg.modules_dir) / f"seed-{seed}"
        return run_transfer(dataclasses.replace(cfg, seed=seed, out=out, modules_dir=mods), task=task,
                            executor=executor)

    done = run_seeds(seeds, one, cfg.out, progress=cfg.progress)
    metric = done[0][1].metric
    mean = f"mean_target_{metric}"
    rows = spread([(s, r.summary) for s, r in done], ["condition"], [mean, "delta"],
                  bounds={"delta": ("delta_lo", "delta_hi")})
    lang_rows = spread([(s, [x for x in r.rows if x["role"] == "target"]) for s, r in done], ["lang", "condition"],
                       [metric, "delta"], bounds={"delta": ("delta_lo", "delta_hi")})
    warnings = {s: r.warnings for s, r in done if r.warnings}
    write_spread(cfg.out, rows, ["condition"], [mean, "delta"], seeds,
                 extra={"metric": metric, "per_language": lang_rows, "warnings": warnings,
                        "runs": {s: r.run_id for s, r in done}})
    return done, rows


def format_seeds(done: list[tuple[int, TransferResult]], rows: list[dict]) -> str:
    """The ``--seeds`` table: per condition each seed's mean target score, mean ± sd, then the difference to the
    reference: mean ± sd across seeds and the mean of the seeds' 95% paired-bootstrap intervals."""
    from xling.harness.seeds import format_spread

    seeds = [s for s, _ in done]
    metric = done[0][1].metric
    ref = done[0][1].summary[0].get("reference") if done[0][1].summary else None
    lines = [format_spread(rows, ["condition"], f"mean_target_{metric}", seeds,
                           title=f"mean target {metric} over {len(seeds)} seeds"), "",
             format_spread(rows, ["condition"], "delta", seeds,
                           title=f"difference to {ref}: across-seed sd next to the mean bootstrap interval")]
    for s, r in done:
        for w in r.warnings:
            lines.append(f"warning (seed {s}): {w}")
    return "\n".join(lines)


__all__ = ["CONDITIONS", "Condition", "TransferConfig", "TransferResult", "run_transfer", "format_table",
           "run_transfer_seeds", "format_seeds", "DEFAULT_TARGETS"]
