"""``xling probe``: a linear probe on frozen features (recipe: :func:`xling.recipes.probe.run.probe`)."""

from __future__ import annotations


def add_probe_parser(sub) -> None:
    """``xling probe``: the flags are the fields of :class:`xling.recipes.probe.config.ProbeConfig`."""
    from xling.cli.common import add_placement_flags
    from xling.harness.config import add_command
    from xling.recipes.probe.config import ProbeConfig

    add_command(sub, "probe", ProbeConfig, cmd_probe, extra=add_placement_flags,
                help="per-language task scores from a linear probe on frozen features",
                description="Embed the task once (all hidden states, cached), fit a logistic-regression probe on the "
                            "source language at the hidden state and l2 chosen on source dev, score every "
                            "language's test set. Writes an eval run for xling predict.")


def cmd_probe(cfg) -> int:
    from xling.recipes.probe.run import format_summary, probe

    if cfg.seeds is not None:
        return _probe_seeds(cfg, cfg.seeds)
    result = probe(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/report.html, scores.csv, per_language.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (run {result.run_id})"))
    return 0


def _probe_seeds(cfg, seeds: list[int]) -> int:
    """``--seeds``: one probe per seed (:func:`xling.harness.seeds.run_seeds`), then the spread per language."""
    import dataclasses

    from xling.methods.stats import wilson_interval
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
