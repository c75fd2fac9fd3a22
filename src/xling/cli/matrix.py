"""``xling matrix`` (source x target transfer matrix) and ``xling rank`` (which source to transfer from).

Recipes: :func:`xling.recipes.matrix.run.transfer_matrix`, :func:`xling.recipes.rank.run.rank_sources`. The flags
are the fields of :class:`~xling.recipes.matrix.config.MatrixConfig` and :class:`~xling.recipes.rank.config.RankConfig`;
this module only prints.
"""

from __future__ import annotations

from xling.cli.common import load_task_cli


def add_matrix_parser(sub) -> None:
    from xling.harness.config import add_command
    from xling.recipes.matrix.config import MatrixConfig

    add_command(sub, "matrix", MatrixConfig, cmd_matrix,
                help="source x target transfer matrix (train on each language, test on every one)",
                description="Train on every source language in turn (default: a linear probe on frozen features, "
                            "layer and l2 chosen on each source's own dev set) and score every target's test set; "
                            "bootstrap CIs per cell and against the English source; pair features (MEXA, retrieval, "
                            "token overlap, training size) for xling rank.")


def cmd_matrix(cfg) -> int:
    from xling.models.builtin import check_model_name
    from xling.recipes.matrix.run import format_summary, transfer_matrix

    check_model_name(cfg.model)  # a typo is reported before the task is built
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before the task is built
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="matrix")
    if cfg.store is not None:  # an unusable store fails before the task is built
        from xling.harness.store import ResultsStore

        ResultsStore(cfg.store).check()
    cfg.task, cfg.task_options = load_task_cli(cfg), {}  # a bad --task-option is one line naming the task
    if cfg.seeds is not None:
        return _matrix_seeds(cfg, cfg.seeds)
    result = transfer_matrix(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/report.html, matrix.csv, features.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (matrix {result.matrix_id})"))
    return 0


def _matrix_seeds(cfg, seeds: list[int]) -> int:
    """``--seeds``: the matrix once per training seed (:func:`xling.harness.seeds.run_seeds`), then the spread per
    cell."""
    import dataclasses

    from xling.harness.seeds import format_spread, run_seeds, spread, write_spread
    from xling.recipes.matrix.run import cell_rows, transfer_matrix

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
    from xling.harness.config import add_command
    from xling.recipes.rank.config import RankConfig

    add_command(sub, "rank", RankConfig, cmd_rank,
                help="rank source languages for a target (LangRank-style, from xling matrix results)",
                description="Learn to rank source languages from a transfer matrix in the results store (LightGBM "
                            "lambdarank over URIEL distances, MEXA/retrieval, token overlap and training size), "
                            "evaluated leave-one-target-out against single features and always-English; --target "
                            "ranks sources for a language without labelled data.")


def cmd_rank(cfg) -> int:
    from xling.recipes.rank.run import format_summary, rank_sources

    result = rank_sources(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/report.html, summary.csv, loto.csv, importances.csv, recommendations.csv")
    return 0


__all__ = ["add_matrix_parser", "add_rank_parser", "cmd_matrix", "cmd_rank"]
