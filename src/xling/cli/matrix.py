"""``xling matrix`` (source x target transfer matrix) and ``xling rank`` (which source to transfer from).

Recipes: :func:`xling.recipes.matrix.run.transfer_matrix`, :func:`xling.recipes.rank.run.rank_sources`.
"""

from __future__ import annotations

from xling.cli.common import add_overwrite_flag, load_task_cli
from xling.errors import XlingError


def add_matrix_parser(sub) -> None:
    from xling.models.loading import DEFAULT_MODEL
    from xling.recipes.matrix.run import DEFAULT_L2, DEFAULT_OUT, METHODS
    from xling.harness.store import DEFAULT_STORE

    p = sub.add_parser("matrix", help="source x target transfer matrix (train on each language, test on every one)",
                       description="Train on every source language in turn (default: a linear probe on frozen "
                                   "features, layer and l2 chosen on each source's own dev set) and score every "
                                   "target's test set; bootstrap CIs per cell and against the English source; pair "
                                   "features (MEXA, retrieval, token overlap, training size) for xling rank.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="built-in e5-small (default), a folder, a .gguf file or a hub id")
    p.add_argument("--task", default="bible-genre", help="a classification task with training data in several "
                                                         "languages (default bible-genre)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="task builder option, e.g. train_size=500")
    p.add_argument("--sources", default=None, help="comma-separated source languages (default: every language with "
                                                   "training data)")
    p.add_argument("--targets", default=None, help="comma-separated target languages (default: every test language)")
    p.add_argument("--langs", default=None, help="comma-separated languages in both roles, source and target (as "
                                                 "--sources and --targets together; either of those overrides it)")
    p.add_argument("--method", default="probe", choices=METHODS,
                   help="probe (default: logistic regression on frozen features), lora or full (fine-tuning per source)")
    p.add_argument("--reference", default=None, help="the source every cell is compared with (default: the task's "
                                                     "source language, English)")
    p.add_argument("--layer", default="auto", help="probe hidden state for every source, or auto (each source's dev set)")
    p.add_argument("--l2", default=",".join(f"{v:g}" for v in DEFAULT_L2), help="comma-separated l2 grid of the probe")
    p.add_argument("--pooling", default="auto")
    p.add_argument("--train-size", "--max-train", dest="max_train", type=int, default=None, metavar="N",
                   help="at most N training examples per source (--max-train: the older name)")
    p.add_argument("--test-size", "--max-test", dest="max_test", type=int, default=None, metavar="N",
                   help="at most N test examples per target (--max-test: the older name)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (--method lora|full)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: 5e-5 full, 5e-4 lora)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="--method lora|full: train every source's model once per seed into OUT/seed-<s>; report each "
                        "cell's accuracy per seed, mean and sd across seeds next to the bootstrap CI (OUT/seeds.csv)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per cell")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    p.add_argument("--no-cache", action="store_true", help="recompute the embeddings")
    p.add_argument("--quiet", action="store_true")
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_matrix)


def _langs(value):
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def cmd_matrix(args) -> int:
    from xling.models.builtin import check_model_name
    from xling.recipes.matrix.run import MatrixConfig, format_summary, transfer_matrix

    check_model_name(args.model)  # a typo is reported before the task is built
    from xling.harness.seeds import parse_seeds

    seeds = parse_seeds(args.seeds)
    if seeds is not None and args.method == "probe":
        raise XlingError("--seeds needs --method lora or full: the probe matrix is deterministic given its data "
                         "(its --seed only draws the bootstrap resamples)")
    try:
        l2 = tuple(float(v) for v in args.l2.split(",") if v.strip())
    except ValueError:
        raise XlingError(f"--l2 expects comma-separated numbers, got {args.l2!r}") from None
    cfg = MatrixConfig(model=args.model, task=args.task, sources=_langs(args.sources or args.langs),
                       targets=_langs(args.targets or args.langs), method=args.method, reference=args.reference, layer=args.layer,
                       l2=l2, pooling=args.pooling, max_train=args.max_train, max_test=args.max_test,
                       epochs=args.epochs, lr=args.lr, seed=args.seed, n_boot=args.n_boot, batch_size=args.batch_size,
                       max_length=args.max_length, device=args.device, dtype=args.dtype, threads=args.threads,
                       out=args.out, store=None if args.store.lower() == "none" else args.store,
                       cache=not args.no_cache, progress=not args.quiet, overwrite=args.overwrite)
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before the task is built
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="matrix")
    if cfg.store is not None:  # an unusable store fails before the task is built
        from xling.harness.store import ResultsStore

        ResultsStore(cfg.store).check()
    cfg.task = load_task_cli(args)
    if seeds is not None:
        return _matrix_seeds(cfg, seeds)
    result = transfer_matrix(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/report.html, matrix.csv, features.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (matrix {result.matrix_id})"))
    return 0


def _matrix_seeds(cfg, seeds: list[int]) -> int:
    """``--seeds``: the matrix once per training seed (:func:`xling.harness.seeds.run_seeds`), then the spread per cell."""
    import dataclasses

    from xling.recipes.matrix.run import cell_rows, transfer_matrix
    from xling.harness.seeds import format_spread, run_seeds, spread, write_spread

    if cfg.out is not None:
        from xling.io import mark_output

        mark_output(cfg.out, "matrix")
    done = run_seeds(seeds, lambda s, out: transfer_matrix(dataclasses.replace(cfg, seed=s, out=out)), cfg.out,
                     progress=cfg.progress)
    rows = spread([(s, cell_rows(r)) for s, r in done], ["source", "target"], ["accuracy", "diff"],
                  bounds={"accuracy": ("lo", "hi"), "diff": ("diff_lo", "diff_hi")})
    print(format_spread(rows, ["source", "target"], "accuracy", seeds,
                        title=f"{cfg.method} transfer matrix: accuracy per cell over {len(seeds)} training seeds"))
    if cfg.out is not None:
        print(f"wrote {write_spread(cfg.out, rows, ['source', 'target'], ['accuracy', 'diff'], seeds)} and one "
              f"folder per seed")
    return 0


def add_rank_parser(sub) -> None:
    from xling.recipes.rank.run import DEFAULT_OUT
    from xling.harness.store import DEFAULT_STORE

    p = sub.add_parser("rank", help="rank source languages for a target (LangRank-style, from xling matrix results)",
                       description="Learn to rank source languages from a transfer matrix in the results store "
                                   "(LightGBM lambdarank over URIEL distances, MEXA/retrieval, token overlap and "
                                   "training size), evaluated leave-one-target-out against single features and "
                                   "always-English; --target ranks sources for a language without labelled data.")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="results store holding xling matrix runs")
    p.add_argument("--matrix", default=None, help="matrix id (default: the latest in the store)")
    p.add_argument("--metric", default="accuracy", help="matrix score to rank by (accuracy or macro_f1)")
    p.add_argument("--target", default=None, help="comma-separated languages to recommend sources for")
    p.add_argument("--features", default=None, help="comma-separated features (default: all available)")
    p.add_argument("--no-typology", action="store_true", help="no URIEL distances (no typology extra needed)")
    p.add_argument("--k", type=int, default=3, help="NDCG cut-off (default 3)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_rank)


def cmd_rank(args) -> int:
    from xling.recipes.rank.run import RankConfig, format_summary, rank_sources

    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    cfg = RankConfig(store=args.store, matrix=args.matrix, metric=args.metric, targets=split(args.target),
                     features=split(args.features), typology=not args.no_typology, k=args.k, n_boot=args.n_boot,
                     seed=args.seed, out=args.out, overwrite=args.overwrite)
    result = rank_sources(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/report.html, summary.csv, loto.csv, importances.csv, recommendations.csv")
    return 0


__all__ = ["add_matrix_parser", "add_rank_parser", "cmd_matrix", "cmd_rank"]
