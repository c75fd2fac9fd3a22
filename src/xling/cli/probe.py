"""``xling probe``: a linear probe on frozen features (recipe: :func:`xling.recipes.probe.run.probe`)."""

from __future__ import annotations

from xling.errors import XlingError


def add_probe_parser(sub) -> None:
    from xling.models.loading import DEFAULT_MODEL
    from xling.recipes.probe.run import DEFAULT_L2, DEFAULT_OUT
    from xling.harness.store import DEFAULT_STORE

    p = sub.add_parser("probe", help="per-language task scores from a linear probe on frozen features",
                       description="Embed the task once (all hidden states, cached), fit a logistic-regression probe "
                                   "on the source language at the hidden state and l2 chosen on source dev, score "
                                   "every language's test set. Writes an eval run for xling predict.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="built-in e5-small (default), gemma-3-270m, smollm2-135m, "
                                                          "a folder, a .gguf file or a hub id")
    p.add_argument("--task", default="bible-genre", help="a classification task (default bible-genre)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="task builder option, e.g. test_size=200")
    p.add_argument("--langs", default=None, help="comma-separated test languages (default: all)")
    p.add_argument("--layer", default="auto", help="hidden state of the probe, or auto (chosen on source dev)")
    p.add_argument("--l2", default=",".join(f"{v:g}" for v in DEFAULT_L2), help="comma-separated l2 grid")
    p.add_argument("--pooling", default="auto", help="as for align (auto: mean for encoders, weighted-mean for decoders)")
    p.add_argument("--train-size", "--max-train", dest="max_train", type=int, default=None, metavar="N",
                   help="use at most N training examples (--max-train: the older name)")
    p.add_argument("--test-size", "--max-test", dest="max_test", type=int, default=None, metavar="N",
                   help="score at most N test examples per language (--max-test: the older name)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per text (default: the model's own context; longer texts are cut, with one note line)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    p.add_argument("--device", default="auto")
    from xling.cli.common import add_placement_flags
    add_placement_flags(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    p.add_argument("--no-cache", action="store_true", help="recompute the embeddings and write them over their cache entries")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="refit the probe once per seed on a seeded training sample (a random --max-train subset, or "
                        "a bootstrap resample of the training set), each run into OUT/seed-<s>; report each "
                        "language's accuracy per seed, its mean and sd across seeds (OUT/seeds.csv)")
    p.add_argument("--quiet", action="store_true")
    from xling.cli.common import add_overwrite_flag

    add_overwrite_flag(p)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from xling.options import option_value
    from xling.recipes.probe.run import ProbeConfig, format_summary, probe
    from xling.harness.seeds import parse_seeds

    seeds = parse_seeds(args.seeds)
    opts = {}
    for pair in args.task_option or []:
        if "=" not in pair:
            raise XlingError(f"--task-option expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        opts[k.strip()] = option_value(v)
    try:
        l2 = tuple(float(v) for v in args.l2.split(",") if v.strip())
    except ValueError:
        raise XlingError(f"--l2 expects comma-separated numbers, got {args.l2!r}") from None
    cfg = ProbeConfig(model=args.model, task=args.task, task_options=opts,
                      langs=[x.strip() for x in args.langs.split(",") if x.strip()] if args.langs else None,
                      layer=args.layer, l2=l2, pooling=args.pooling, max_train=args.max_train, max_test=args.max_test,
                      batch_size=args.batch_size, max_length=args.max_length, device=args.device, dtype=args.dtype,
                      threads=args.threads, out=args.out,
                      store=None if args.store.lower() == "none" else args.store, cache=not args.no_cache,
                      progress=not args.quiet, overwrite=args.overwrite)
    if seeds is not None:
        return _probe_seeds(cfg, seeds)
    result = probe(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/report.html, scores.csv, per_language.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (run {result.run_id})"))
    return 0


def _probe_seeds(cfg, seeds: list[int]) -> int:
    """``--seeds``: one probe per seed (:func:`xling.harness.seeds.run_seeds`), then the spread per language."""
    import dataclasses

    from xling.methods.chance import wilson_interval
    from xling.recipes.probe.run import probe
    from xling.harness.seeds import format_spread, run_seeds, spread, write_spread

    def one(seed, out):
        return probe(dataclasses.replace(cfg, seed=seed, out=out))

    if cfg.out is not None:  # one folder per seed inside OUT: refused if OUT is not xling's, then marked as xling's
        from xling.io import check_output_target, mark_output

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="probe")
        mark_output(cfg.out, "probe")
    done = run_seeds(seeds, one, cfg.out, progress=cfg.progress)
    per_seed = []
    for s, r in done:
        rows = []
        acc, f1 = r.scores(), r.scores("macro_f1")
        for lang in r.langs:
            n = r.n_examples[lang]
            lo, hi = wilson_interval(acc[lang] * n, n)
            rows.append({"lang": lang, "accuracy": acc[lang], "macro_f1": f1[lang], "acc_lo": lo, "acc_hi": hi})
        rows.append({"lang": "dev:" + r.source, "accuracy": r.meta["probe"]["dev_accuracy"]})
        per_seed.append((s, rows))
    table = spread(per_seed, ["lang"], ["accuracy", "macro_f1"], bounds={"accuracy": ("acc_lo", "acc_hi")})
    print(format_spread(table, ["lang"], "accuracy", seeds,
                        title=f"{cfg.model} linear probe on {done[0][1].task}: test accuracy over {len(seeds)} seeds "
                              "(CI: mean of each seed's 95% Wilson interval over the test examples)", ci="mean 95% Wilson CI"))
    if cfg.out is not None:
        print(f"wrote {write_spread(cfg.out, table, ['lang'], ['accuracy', 'macro_f1'], seeds)} and one folder "
              f"per seed" + ("" if cfg.store is None else f"; results store {cfg.store} (one run per seed)"))
    return 0


__all__ = ["add_probe_parser", "cmd_probe"]
