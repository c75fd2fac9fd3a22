"""The ``consistency`` recipe: how consistently one run answers the same items in different languages.

``xling consistency RUN_ID`` reads a run's per-item predictions from the results store (every ``eval``,
``probe``, ``matrix`` and ``transfer`` run keeps them, keyed by the items' parallel ids; ``--condition`` picks
one condition of a transfer run) and reports, for every ordered pair of languages on the items both were
asked (:func:`xling.methods.consistency.consistency_rows`): agreement of the predictions, Cohen's kappa
(agreement beyond chance), the both-correct rate and knowledge transfer KT(a -> b) = P(correct in b | correct
in a) (Aggarwal et al. 2025; MuBench, Han et al. 2025), each with a paired percentile bootstrap interval over
the pair's items. When the results store holds an ``xling align`` run of the same (base) model on the task's
text, the languages' consistency with the align run's pivot is correlated with their MEXA at its best layer
(Kargaran et al. 2024); otherwise one line names the command that adds it.

Outputs in ``out``: ``consistency.csv`` (one row per ordered pair, :data:`xling.methods.consistency.COLUMNS`),
``mexa_correlation.csv`` (when there is an align run) and ``report.html`` (heatmaps of agreement, kappa and KT,
the pair table, per-language accuracy, the MEXA correlations). A run made before xling kept predictions is one
line naming the command that re-runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xling.recipes.consistency.config import DEFAULT_OUT, ConsistencyConfig  # noqa: F401 - the options live there

CORRELATION_COLUMNS = ["stat", "what", "n", "pearson", "ci_low", "ci_high", "spearman", "missing", "layer",
                       "align_run"]


@dataclass
class ConsistencyResult:
    config: ConsistencyConfig
    run: dict
    condition: str | None
    task: str
    model: str
    langs: list[str]
    rows: list[dict]                                       # consistency_rows
    accuracy: list[dict]                                   # per language: n, accuracy and its Wilson interval
    mexa: dict                                             # pair_mexa: values at the best layer, or {"note"}
    correlations: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.run["run_id"]


def consistency(config: ConsistencyConfig | None = None, **kwargs) -> ConsistencyResult:
    """Run the recipe (see the module doc); returns a :class:`ConsistencyResult` and writes ``config.out``."""
    from xling.harness.consistency import (accuracy_rows, load_run_predictions, mexa_correlations, pair_mexa)
    from xling.methods.consistency import consistency_rows

    cfg = config if config is not None else ConsistencyConfig(**kwargs)
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before reading the store
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="consistency")
    got = load_run_predictions(cfg.store, cfg.run_id, cfg.condition)
    langs = list(got.records)
    notes = list(got.notes)
    if len(langs) < 2:
        from xling.errors import XlingError

        raise XlingError(f"run {got.run_id} has predictions in {len(langs)} language ({', '.join(langs)}); "
                         f"consistency needs at least 2")
    rows = consistency_rows(got.table(), n_boot=cfg.n_boot, seed=cfg.seed, level=cfg.level)
    empty = [f"{r['lang_a']}/{r['lang_b']}" for r in rows if r["lang_a"] < r["lang_b"] and r["n"] == 0]
    if empty:
        notes.append(f"no shared item ids (no parallel items) for {', '.join(empty)}: those pairs are undefined")
    sizes = {lang: len(rec["item_ids"]) for lang, rec in got.records.items()}
    if len(set(sizes.values())) > 1:
        notes.append("languages have different numbers of items (" + ", ".join(f"{k} {v}" for k, v in sizes.items())
                     + "): each pair uses only the items present in both")
    mexa = pair_mexa(cfg.store, got.model, got.task, langs)
    correlations = mexa_correlations(rows, mexa, reps=cfg.n_boot, seed=cfg.seed)
    if "note" in mexa:
        notes.append(mexa["note"])
    elif not mexa["values"]:
        notes.append(f"no correlation with MEXA: align run {mexa['run_id']} scored none of the run's languages "
                     f"other than the pivot {mexa['pivot']}")
    result = ConsistencyResult(config=cfg, run=got.run, condition=got.condition, task=got.task, model=got.model,
                               langs=langs, rows=rows, accuracy=accuracy_rows(got.records), mexa=mexa,
                               correlations=correlations, notes=notes)
    if cfg.out is not None:
        write_outputs(result, Path(cfg.out))
    return result


def _subtitle(result: ConsistencyResult) -> str:
    run = result.run
    cond = f", condition {result.condition}" if result.condition else ""
    return (f"{run.get('command')} run {result.run_id} of {run.get('model')} on {result.task}{cond}; "
            f"{len(result.langs)} languages; bootstrap {result.config.n_boot} resamples, seed {result.config.seed}")


def write_outputs(result: ConsistencyResult, out: Path) -> dict[str, Path]:
    """``consistency.csv``, ``mexa_correlation.csv`` (with an align run) and ``report.html``, the folder built
    aside and swapped in whole (:func:`xling.io.output_folder`)."""
    from xling.harness.consistency import consistency_csv, consistency_report_html
    from xling.harness.outputs import rows_to_csv
    from xling.io import atomic_write_text, output_folder

    files = {"consistency.csv": consistency_csv(result.rows),
             "report.html": consistency_report_html(
                 result.rows, title=f"xling consistency: {result.task}", subtitle=_subtitle(result),
                 langs=result.langs, accuracy=result.accuracy, correlations=result.correlations, notes=result.notes,
                 level=result.config.level)}
    if result.correlations:
        files["mexa_correlation.csv"] = rows_to_csv(result.correlations, CORRELATION_COLUMNS)
    with output_folder(out, command="consistency", overwrite=result.config.overwrite) as tmp:
        tmp.mkdir()
        for name, text in files.items():
            atomic_write_text(tmp / name, text)
    return {name: out / name for name in files}


def format_summary(result: ConsistencyResult) -> str:
    """The terminal table: one line per unordered pair (KT both ways), then the MEXA lines and the notes."""
    from xling.harness.html import fmt
    from xling.harness.links import describe
    from xling.methods.consistency import kappa_at_chance

    get = {(r["lang_a"], r["lang_b"]): r for r in result.rows}
    pct = f"{result.config.level:.0%}"
    lines = [f"{'pair':<22} {'n':>5} {'agree':>6} {'kappa':>6} {pct + ' CI':>15} {'both':>6} {'KT a->b':>8} "
             f"{'KT b->a':>8}"]
    for i, a in enumerate(result.langs):
        for b in result.langs[i + 1:]:
            r, back = get[(a, b)], get[(b, a)]
            ci = f"[{fmt(r['kappa_low'], 2)}, {fmt(r['kappa_high'], 2)}]" if r["kappa_low"] == r["kappa_low"] else "-"
            tail = "  kappa at chance" if kappa_at_chance(r) else ""
            lines.append(f"{a + '/' + b:<22} {r['n']:>5} {fmt(r['agreement']):>6} {fmt(r['kappa']):>6} {ci:>15} "
                         f"{fmt(r['both_correct']):>6} {fmt(r['kt_a_to_b']):>8} {fmt(back['kt_a_to_b']):>8}{tail}")
    lines.append("")
    lines.append(_subtitle(result))
    for c in result.correlations:
        lines.append(describe(c, "pairs"))
    for n in result.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


__all__ = ["ConsistencyConfig", "ConsistencyResult", "consistency", "format_summary", "write_outputs"]
