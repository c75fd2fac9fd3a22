"""``xling transfer``: the modular transfer experiment (recipe: :func:`xling.recipes.transfer.run.run_transfer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xling.cli.common import add_executor_flags, add_overwrite_flag, task_options
from xling.errors import XlingError


def add_transfer_parser(sub) -> None:
    from xling.harness.store import DEFAULT_STORE
    from xling.recipes.transfer.run import (CONDITIONS, DEFAULT_LAMBDAS, DEFAULT_MODEL, DEFAULT_OUT, DEFAULT_TARGETS,
                                     DEFAULT_TASK, SELECT_ON, TASK_TARGETS)

    p = sub.add_parser(
        "transfer", help="modular transfer experiment: language + task modules, composed several ways",
        description="Train (or reuse) language modules for the source and each target language and task modules "
                    "(on the base and on the source-language module), then compare on every target: "
                    + "; ".join(f"{c.name} = {c.description}" for c in CONDITIONS.values()) + ".")
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model (default: the built-in multilingual-e5-small)")
    p.add_argument("--task", default=DEFAULT_TASK, help="task name or file (default bible-genre: parallel train/dev/test, so translate-train and alignment data are built in)")
    p.add_argument("--langs", default=None, help="target languages, comma-separated (default for "
                                                 + DEFAULT_TASK + ": "
                                                 + ",".join(TASK_TARGETS.get(DEFAULT_TASK, DEFAULT_TARGETS))
                                                 + "; other tasks: those of " + ",".join(DEFAULT_TARGETS)
                                                 + " they have, else their first five test languages)")
    p.add_argument("--source-lang", default=None, help="source language (default: the task's)")
    p.add_argument("--task-option", action="append", metavar="NAME=VALUE",
                   help="options of a built-in task, e.g. train_size=500 (repeatable)")
    p.add_argument("--text", default=None, help="unlabeled text for language modules: unlabeled:TASK (default "
                                                "unlabeled:<task>), a corpus spec with every language, or a path "
                                                "with {lang} (e.g. mono/{lang}.txt, {lang} = deu_Latn)")
    p.add_argument("--conditions", default=None, help="comma-separated subset of: " + ",".join(CONDITIONS))
    p.add_argument("--lang-steps", type=int, default=40, help="optimizer steps per language module (default 40)")
    p.add_argument("--lang-lr", type=float, default=1.5e-3)
    p.add_argument("--lang-batch-size", type=int, default=16)
    p.add_argument("--lang-max-length", type=int, default=64)
    p.add_argument("--no-head-transform", action="store_true",
                   help="language modules of an encoder without an MLM head: plain tied head, no trained transform")
    p.add_argument("--task-epochs", type=int, default=3, help="task module epochs; the best on the source dev set is kept (default 3)")
    p.add_argument("--task-lr", type=float, default=2e-3, help="task module learning rate (default 2e-3)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank of every module")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha of every module")
    p.add_argument("--lambdas", default=",".join(str(x) for x in DEFAULT_LAMBDAS),
                   help="candidate scales of the language module in add/add-swap, chosen on dev (default "
                        + ",".join(str(x) for x in DEFAULT_LAMBDAS) + ")")
    p.add_argument("--lambda", dest="add_lambda", type=float, default=None, help="one fixed scale instead (no choice)")
    p.add_argument("--swap", default="auto", help="layer swap BOTTOM,TOP[,TRANSITION], or auto: chosen on dev from a "
                                                  "grid scaled to the model's depth (default)")
    p.add_argument("--select-on", default="source-dev", choices=list(SELECT_ON),
                   help="where lambda and the swap are chosen: the source dev set (zero-shot, default) or each "
                        "target's dev set (uses target labels)")
    p.add_argument("--dev-size", "--max-dev", dest="max_dev", type=int, default=300, metavar="N",
                   help="dev examples per language for the choices (default 300; --max-dev: the older name)")
    g = p.add_argument_group("condition align: middle-layer alignment (Liu & Niehues 2025)")
    g.add_argument("--align-data", default=None,
                   help="parallel text (any --data spec); default: the task's built-in one (bible-genre:align)")
    g.add_argument("--align-layer", default="auto", help="hidden-state index, or auto (default; see xling train)")
    g.add_argument("--align-weight", type=float, default=1.0)
    g.add_argument("--align-mode", default="alternate", choices=["alternate", "sum"])
    g.add_argument("--align-max-pairs", type=int, default=4000)
    g.add_argument("--align-drop-overlap", action="store_true",
                   help="remove pairs containing a dev/test item of the task (default: refuse them)")
    p.add_argument("--test-size", "--max-test", dest="max_test", type=int, default=None, metavar="N",
                   help="evaluate the first N test examples per language (--max-test: the older name)")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="run the whole experiment once per seed (every module trained per seed) into OUT/seed-<s>; "
                        "report per condition the mean over seeds and the sd across seeds next to the bootstrap "
                        "interval (OUT/seeds.csv); replaces --seed")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--modules-dir", default=None, help="where modules are kept (default OUT/modules)")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    p.add_argument("--no-cache", action="store_true", help="retrain every module and recompute every prediction, overwriting the cached ones")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    add_overwrite_flag(p)
    add_executor_flags(p)  # the units here: the module trainings (each language module, each task module)
    p.set_defaults(func=cmd_transfer)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def cmd_transfer(args) -> int:
    from xling.models.builtin import check_model_name
    from xling.recipes.transfer.run import TransferConfig, format_table, run_transfer

    check_model_name(args.model)  # a typo is reported before the task is built
    from xling.harness.seeds import parse_seeds

    seeds = parse_seeds(args.seeds)
    if args.swap.strip().lower() == "auto":
        swap: Any = "auto"
    else:
        try:
            swap = tuple(int(x) for x in args.swap.split(","))
        except ValueError:
            raise XlingError(f"--swap takes auto or BOTTOM,TOP[,TRANSITION] as integers, got {args.swap!r}") from None
        if len(swap) == 2:
            swap = (*swap, 0)
    try:
        lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    except ValueError:
        raise XlingError(f"--lambdas takes comma-separated numbers, got {args.lambdas!r}") from None
    cfg = TransferConfig(
        model=args.model, task=args.task, task_options=task_options(args), langs=_split(args.langs), source_lang=args.source_lang, text=args.text,
        conditions=_split(args.conditions), lang_steps=args.lang_steps, lang_lr=args.lang_lr,
        lang_batch_size=args.lang_batch_size, lang_max_length=args.lang_max_length,
        head_transform=not args.no_head_transform, task_epochs=args.task_epochs,
        task_lr=args.task_lr, r=args.r, alpha=args.alpha, add_lambda=args.add_lambda, lambdas=lambdas, swap=swap,
        select_on=args.select_on, max_dev=args.max_dev, align_data=args.align_data, align_layer=args.align_layer,
        align_weight=args.align_weight, align_mode=args.align_mode, align_max_pairs=args.align_max_pairs,
        align_drop_overlap=args.align_drop_overlap,
        max_test=args.max_test, batch_size=args.batch_size, bootstrap=args.bootstrap, seed=args.seed,
        out=args.out, modules_dir=args.modules_dir, store=None if args.store.lower() == "none" else args.store,
        cache=not args.no_cache, device=args.device, dtype=args.dtype, threads=args.threads,
        progress=not args.quiet, executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers,
        overwrite=args.overwrite)
    if seeds is not None:
        from xling.recipes.transfer.run import format_seeds, run_transfer_seeds

        done, rows = run_transfer_seeds(cfg, seeds)
        print(format_seeds(done, rows))
        print(f"wrote {Path(cfg.out) / 'seeds.csv'} (and seeds.json; each seed's run in {Path(cfg.out)}/seed-<s>)")
        return 0
    result = run_transfer(cfg)
    print(format_table(result))
    print(f"wrote {Path(cfg.out) / 'report.html'} (and transfer.csv, summary.csv, run.json)")
    return 0


__all__ = ["add_transfer_parser", "cmd_transfer"]
