"""``xling consistency``: a run's answers across languages (recipe: :func:`xling.recipes.consistency.run.consistency`).

The flags are the fields of :class:`xling.recipes.consistency.config.ConsistencyConfig`; this module only prints.
"""

from __future__ import annotations


def add_consistency_parser(sub) -> None:
    from xling.harness.config import add_command
    from xling.recipes.consistency.config import ConsistencyConfig

    add_command(sub, "consistency", ConsistencyConfig, cmd_consistency,
                help="do a run's answers agree across languages? agreement, Cohen's kappa, both-correct and "
                     "knowledge transfer per language pair",
                description="Reads the per-item predictions an eval, probe, matrix or transfer run kept in the "
                            "results store and reports, per pair of languages on their parallel items: agreement, "
                            "Cohen's kappa, the both-correct rate and KT(a -> b) = P(correct in b | correct in a), "
                            "each with a paired bootstrap interval over items, and their correlation with MEXA "
                            "when the store holds an align run of the same model. Writes consistency.csv and "
                            "report.html.")


def cmd_consistency(cfg) -> int:
    from xling.recipes.consistency.run import consistency, format_summary

    result = consistency(cfg)
    print(format_summary(result))
    if cfg.out is not None:
        extra = ", mexa_correlation.csv" if result.correlations else ""
        print(f"wrote {cfg.out}/consistency.csv{extra}, report.html")
    return 0


__all__ = ["add_consistency_parser", "cmd_consistency"]
