"""``xling runs`` and ``xling compare``: what the results store holds, and runs side by side.

Recipes: :class:`xling.harness.store.ResultsStore`, :func:`xling.recipes.compare.run.compare_runs`.
"""

from __future__ import annotations

from xling.errors import XlingError


def add_runs_parser(sub) -> None:
    """``xling runs``: the flags are the fields of :class:`xling.recipes.compare.config.RunsConfig`."""
    from xling.harness.config import add_command
    from xling.recipes.compare.config import RunsConfig

    add_command(sub, "runs", RunsConfig, cmd_runs,
                help="list the runs in the results store (filter by command, model, corpus)",
                description="One line per run of the results store: id, command, model, corpus or task, when it "
                            "finished, and its headline (best layer, mean target score, ...).")


def add_compare_parser(sub) -> None:
    """``xling compare``: the flags are the fields of :class:`xling.recipes.compare.config.CompareConfig`."""
    from xling.harness.config import add_command
    from xling.recipes.compare.config import CompareConfig

    add_command(sub, "compare", CompareConfig, cmd_compare,
                help="runs of the results store side by side (align runs on one corpus, eval or transfer runs on "
                     "one task)",
                description="Per-language scores of two or more runs side by side, the difference to the first run "
                            "with a 95% interval (a paired bootstrap over items where both runs carry per-item "
                            "results for the same items, else a bootstrap over languages), as compare.html, "
                            "compare.csv and a terminal table. Run ids may be unambiguous prefixes.")


def cmd_runs(cfg) -> int:
    from pathlib import Path

    from xling.harness.store import ResultsStore, run_headline

    if not Path(cfg.store).is_file():
        raise XlingError(f"results store not found: {cfg.store} (run a command first, or pass --store)")
    store = ResultsStore(cfg.store)
    runs = store.runs(cfg.run_command)
    if cfg.model:
        from xling.models.builtin import same_model

        runs = [r for r in runs if same_model(r.get("model"), cfg.model)
                or same_model((r.get("config") or {}).get("base_model"), cfg.model)]
    if cfg.corpus:
        runs = [r for r in runs if (r.get("corpus") or "") in (cfg.corpus, f"task:{cfg.corpus}")]
    if cfg.last:
        runs = runs[-cfg.last:]
    if not runs:
        print("no runs match")
        return 0
    rows = [("run", "command", "model", "corpus", "finished", "headline")]
    for r in runs:
        rows.append((r["run_id"], r["command"], str(r.get("model") or "-"), str(r.get("corpus") or "-"),
                     str(r.get("finished") or "-"), run_headline(store, r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])
    return 0


def cmd_compare(cfg) -> int:
    from xling.io import check_output_target
    from xling.recipes.compare.run import compare_runs, format_compare, write_compare

    check_output_target(cfg.out, overwrite=cfg.overwrite, command="compare")  # before reading the store
    result = compare_runs(cfg.store, cfg.run_ids, metric=cfg.metric,
                          allow_different_data=cfg.allow_different_data)
    paths = write_compare(result, cfg.out, overwrite=cfg.overwrite)
    print(format_compare(result))
    print(f"\nwrote {paths['report']} and {paths['csv']}")
    return 0


__all__ = ["add_compare_parser", "add_runs_parser", "cmd_compare", "cmd_runs"]
