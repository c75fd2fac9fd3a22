"""``xling train``, ``xling eval``, ``xling task`` and ``xling predict``: flags -> config -> recipe -> summary.

The recipes are :func:`xling.recipes.train.run.train`, :func:`xling.recipes.eval.run.evaluate`
and :func:`xling.recipes.predict.run.predict`.
"""

from __future__ import annotations

import sys

from xling.cli.common import load_task_cli


def add_eval_parsers(sub) -> None:
    """``xling train``, ``xling eval``, ``xling predict`` (and ``xling task``); their flags are the fields of their
    configs (:mod:`xling.recipes.train.config`, ...), and the ``cmd_*`` functions only print."""
    from xling.cli.common import add_placement_flags
    from xling.harness.config import add_command
    from xling.recipes.eval.config import EvalConfig
    from xling.recipes.task.config import TaskConfig
    from xling.recipes.train.config import TrainRunConfig

    add_command(sub, "train", TrainRunConfig, cmd_train, extra=add_placement_flags,
                help="fine-tune a model on a task's source language (full or LoRA)",
                description="Train a task head on the source-language training split, with early stopping on the "
                            "source-language dev split; writes a model folder for xling eval.")
    add_command(sub, "eval", EvalConfig, cmd_eval, extra=add_placement_flags,
                help="evaluate a trained model on every language of a task (transfer gap)",
                description="Accuracy / macro-F1 (entity F1 for tagging) per language, the transfer gap, HTML report, "
                            "CSV and results-store rows. Resumable.")
    add_command(sub, "task", TaskConfig, cmd_task, help="show a task: splits, languages, labels, examples")

    add_predict_parser(sub)


def cmd_train(cfg) -> int:
    from xling.recipes.train.run import format_spread, format_trained, train

    def trained(folder, info):
        print(format_trained(folder, info))
        for w in info.get("warnings") or []:
            print(f"xling: warning: {folder}: {w}", file=sys.stderr, flush=True)

    result = train(cfg.model, cfg.task, config=cfg.hparams(), task_options=cfg.task_options, lang=cfg.lang,
                   out=cfg.out, adapters=cfg.adapters, seeds=cfg.seeds, align_data=cfg.align_data,
                   align_langs=cfg.align_langs, align_layer=cfg.align_layer, align_max_pairs=cfg.align_max_pairs,
                   align_drop_overlap=cfg.align_drop_overlap, overwrite=cfg.overwrite, on_trained=trained)
    if result.seeds is not None:
        print(format_spread(result))
        print(f"wrote {result.spread_csv}")
    return 0


def cmd_eval(cfg) -> int:
    from xling.recipes.eval.run import evaluate, format_summary

    result = evaluate(cfg)  # checks --model (and the store) before it loads the task
    if getattr(result, "kind", None) == "harness":
        from xling.harness.lm_harness import format_harness_summary

        print(format_harness_summary(result))
        print(f"wrote {cfg.out}/report.html, harness_results.json, harness_scores.csv, predictions.csv"
              + ("" if cfg.store is None else f"; results store {cfg.store} (runs "
                 f"{', '.join(r.run_id for r in result.runs)})"))
        return 0
    if getattr(result, "kind", None) == "icl":
        print(result.summary())
        wrote = [f"{cfg.out}/icl.csv, icl_differences.csv, report.html, demonstrations.jsonl, predictions.csv"] \
            if cfg.out is not None else []
        wrote += [f"results store {cfg.store} (one eval run per source: "
                  f"{', '.join(f'{s} {rid}' for s, rid in result.run_ids.items())})"] if cfg.store is not None else []
        if wrote:
            print("wrote " + "; ".join(wrote))
        return 0
    if getattr(result, "kind", None) == "generation":
        print(result.summary())
        wrote = [f"{cfg.out}/report.html, generations.jsonl, generation_scores.csv, predictions.csv"] \
            if cfg.out is not None else []
        wrote += [f"results store {cfg.store} (run {result.run_id})"] if cfg.store is not None else []
        if wrote:
            print("wrote " + "; ".join(wrote))
        return 0
    print(format_summary(result))
    print(f"wrote {cfg.out}/report.html, scores.csv, per_language.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (run {result.run_id})"))
    return 0


def cmd_task(cfg) -> int:
    from xling.textsafe import term

    task = load_task_cli(cfg)
    if cfg.export_harness is not None:
        from xling.io import output_folder
        from xling.tasks.harness_export import export_harness_task

        with output_folder(cfg.export_harness, command="task", overwrite=cfg.overwrite,
                           flag="--export-harness") as tmp:
            manifest = export_harness_task(task, tmp, langs=cfg.langs, final=cfg.export_harness)
        print(f"wrote {cfg.export_harness}: harness group {manifest['group']} ({len(manifest['tasks'])} languages, "
              f"{sum(manifest['n_examples'].values())} examples); run it with xling eval --harness "
              f"{cfg.export_harness}, or lm_eval --include_path {cfg.export_harness} --tasks {manifest['group']}")
        return 0
    print(task.summary())
    print("labels: " + ", ".join(task.labels))
    for split in task.splits:
        langs = task.langs(split)
        print(f"{split}: " + ", ".join(f"{lg}={len(task.data[split][lg])}" for lg in langs))
    test = task.data.get("test", {}).get(task.source_lang, [])
    for e in test[: cfg.show]:
        label = task.labels[e.label] if task.type == "classification" and e.label is not None else e.label
        if task.type == "generation":  # a translation's verse id, or a task file's reference output
            label = e.target if e.target is not None else e.id
        text = e.text if e.tokens is None else " ".join(e.tokens)
        print(f"--- {term(label)}: {term(text)}")  # one line each, escapes shown, never run
    return 0


def add_predict_parser(sub) -> None:
    """``xling predict``: the flags are the fields of :class:`xling.recipes.predict.config.PredictConfig`."""
    from xling.harness.config import add_command
    from xling.recipes.predict.config import PredictConfig

    add_command(sub, "predict", PredictConfig, cmd_predict,
                help="predict per-language task scores from alignment (MEXA-style)",
                description="Fit score ~ alignment across languages with nested leave-one-language-out selection of "
                            "the layer aggregation; Pearson, Spearman, MAE with bootstrap CIs; predict languages "
                            "that have alignment but no task data.")


def cmd_predict(cfg) -> int:
    from xling.recipes.predict.run import format_models_summary, format_summary, predict, predict_models

    if cfg.models:
        multi = predict_models(cfg.models, cfg)
        for m, r in multi.per_model.items():
            print(f"== {m}")
            print(format_summary(r))
        print()
        print(format_models_summary(multi))
        print(f"wrote {cfg.out}/models.csv, models.json and one folder per model")
        return 0
    result = predict(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/report.html, predictions.csv" + ("" if not cfg.write_store or cfg.store is None else
                                                              f"; results store {cfg.store} (run {result.run_id})"))
    return 0


__all__ = ["add_eval_parsers", "add_predict_parser", "cmd_eval", "cmd_predict", "cmd_task", "cmd_train"]
