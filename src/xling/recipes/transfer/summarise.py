"""Stage 4 of ``xling transfer``, the summary: the result, the paired bootstrap against the reference, the
warnings on what the numbers cannot support, the table, the report and the written outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from xling.recipes.transfer.config import TransferConfig

#: transfer.csv's columns on the translate-test rows (the translations' quality), when the condition ran.
TRANSLATION_COLUMNS = ["translation_off_target", "translation_off_target_lo", "translation_off_target_hi",
                       "translation_off_target_n", "translation_chrf", "translation_chrf_lo", "translation_chrf_hi"]


@dataclass
class TransferResult:
    rows: list[dict]                 # lang, condition, accuracy, macro_f1, n
    summary: list[dict]              # condition, mean target score, delta to task [CI]
    source: str
    targets: list[str]
    conditions: list[str]
    modules: dict[str, dict]
    metric: str
    run_id: str
    timings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    choices: list[dict] = field(default_factory=list)   # condition, lang, chosen, split, candidates (dev scores)
    notes: list[str] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)     # condition, lang, ids_hash, correct (0/1 per test example)
    warnings: list[str] = field(default_factory=list)   # numbers not to be trusted (chance, ceiling), see honesty_warnings
    # condition, lang, record: each test item's prediction, gold label and correctness, keyed by its parallel id
    # (xling.harness.consistency.prediction_record): predictions.csv and the store's predictions
    predictions: list[dict] = field(default_factory=list)
    # translate-test (--translate-test): the translator's settings, demonstrations' origin and per-language quality
    # (off-target rate, chrF where parallel), and one record per translated text (translations.jsonl)
    translation: dict = field(default_factory=dict)
    translations: list[dict] = field(default_factory=list)

    def score(self, condition: str, lang: str, metric: str | None = None) -> float:
        m = metric or self.metric
        for r in self.rows:
            if r["condition"] == condition and r["lang"] == lang:
                return r[m]
        raise KeyError((condition, lang))

    def mean(self, condition: str, metric: str | None = None) -> float:
        vals = [self.score(condition, t, metric) for t in self.targets]
        return sum(vals) / len(vals)


def honesty_warnings(summary: list[dict], correct: dict[str, Sequence[Sequence[int]]], num_labels: int,
                     metric: str = "accuracy") -> list[str]:
    """Warnings on what the numbers cannot support; sets ``at_chance`` / ``chance_lo`` / ``chance_hi`` in ``summary``.

    * A condition is *within noise of chance* when the 95% Wilson interval
      (:func:`xling.methods.stats.wilson_interval`) of its accuracy pooled over every
      target's test examples contains ``1/k``; when every condition is, no condition
      is best (the report's headline says so instead of naming one).
    * The ceiling is *not above the reference beyond noise* when the lower end of the
      paired-bootstrap interval of its difference to the reference is at most 0 (the
      point difference without a bootstrap): the gap-closed shares are then not
      interpretable.
    """
    from xling.methods.stats import at_chance, wilson_interval

    out = []
    chance = 1.0 / num_labels if num_labels >= 2 else None
    flags = []
    for s in summary:
        rows = correct.get(s["condition"])
        if not rows or chance is None or metric != "accuracy":
            continue
        k, n = sum(sum(r) for r in rows), sum(len(r) for r in rows)
        lo, hi = wilson_interval(k, n)
        s["chance_lo"], s["chance_hi"] = round(lo, 6), round(hi, 6)
        s["at_chance"] = at_chance(k / n if n else None, n, num_labels)
        flags.append(s["at_chance"])
    if flags and all(flags):
        n = sum(len(r) for r in next(iter(correct.values())))
        out.append(f"every condition is within noise of chance (1/{num_labels} = {chance:.3f}; 95% Wilson interval "
                   f"of each condition's accuracy over {n} target test examples); no best condition")
    ref = next((s.get("reference") for s in summary if s.get("reference")), None)
    ceil = next((s for s in summary if s.get("ceiling") and s["condition"] == s["ceiling"]), None)
    if ceil is not None and ref is not None and ceil["condition"] != ref:
        d, lo, hi = ceil.get("delta"), ceil.get("delta_lo"), ceil.get("delta_hi")
        if d is not None and ((lo if lo is not None else d) <= 0):
            mean = f"mean_target_{metric}"
            rs = next((s for s in summary if s["condition"] == ref), {})
            out.append(f"the ceiling {ceil['condition']} ({ceil.get(mean, float('nan')):.3f}) is not above the "
                       f"reference {ref} ({rs.get(mean, float('nan')):.3f}) beyond noise (difference {d:+.3f}"
                       + (f", 95% CI [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "")
                       + "); the shares of the gap closed are not interpretable")
    return out


# ----------------------------------------------------------------------------- outputs


def format_table(result: TransferResult, metric: str | None = None) -> str:
    """Plain-text table: one row per language, one column per condition, plus the mean over targets."""
    m = metric or result.metric
    names = result.conditions
    width = max(8, *(len(n) for n in names))
    head = f"{'language':<10}" + "".join(f"{n:>{width + 1}}" for n in names)
    lines = [head, "-" * len(head)]
    for lang in [result.source, *result.targets]:
        cells = []
        for n in names:
            try:
                cells.append(f"{result.score(n, lang, m):>{width + 1}.3f}")
            except KeyError:
                cells.append(f"{'-':>{width + 1}}")
        tag = " (src)" if lang == result.source else ""
        lines.append(f"{(lang[:3] + tag):<10}" + "".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'mean tgt':<10}" + "".join(f"{result.mean(n, m):>{width + 1}.3f}" for n in names))
    ref = result.summary[0]["reference"] if result.summary else None
    deltas = []
    for s in result.summary:
        if s["delta_lo"] is None:
            deltas.append(f"{'-':>{width + 1}}")
        else:
            deltas.append(f"{s['delta']:>+{width + 1}.3f}")
    lines.append(f"{'vs ' + str(ref):<10}" + "".join(deltas))
    if any(s.get("gap_closed") is not None for s in result.summary):
        cells = [f"{'-':>{width + 1}}" if s.get("gap_closed") is None else f"{s['gap_closed']:>+{width + 1}.2f}"
                 for s in result.summary]
        lines.append(f"{'gap closed':<10}" + "".join(cells))
    tr = getattr(result, "translation", None) or {}
    if tr.get("quality"):
        lines.append(translation_line(tr))
    for n in result.notes:
        lines.append(f"note: {n}")
    for w in getattr(result, "warnings", None) or []:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def translation_line(tr: dict) -> str:
    """One line on the translate-test translations: translator, shots, and per language the off-target rate (95%
    Wilson interval) and chrF against the source-language test items where the task is parallel."""
    from xling.textsafe import term

    parts = []
    for lang, q in tr["quality"].items():
        part = f"{lang[:3]} off-target {_pct(q.get('off_target'))}"
        if q.get("off_target_lo") is not None:
            part += f" [{_pct(q['off_target_lo'])}, {_pct(q['off_target_hi'])}]"
        if q.get("chrf") is not None:
            part += f", chrF {q['chrf']:.1f}"
        parts.append(part)
    return (f"translate-test: {term(str(tr.get('translator')))} into {tr.get('target_lang')}, "
            f"{tr.get('shots')}-shot, greedy: " + "; ".join(parts))


def render_report(result: TransferResult, task) -> str:
    """The HTML report (:func:`xling.recipes.transfer.report.render_transfer_report`)."""
    from xling.recipes.transfer.report import render_transfer_report

    return render_transfer_report(result, task)


def _write(result: TransferResult, cfg: TransferConfig, task) -> None:
    from xling.io import atomic_write_text
    from xling.harness.outputs import rows_to_csv

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    m = result.metric
    tr = bool(result.translations)  # translate-test ran: its translations' quality gets columns
    atomic_write_text(out / "transfer.csv", rows_to_csv(result.rows, ["lang", "role", "condition", "n", "accuracy",
                                                               "macro_f1", "delta", "delta_lo", "delta_hi"]
                                                        + (TRANSLATION_COLUMNS if tr else [])))
    atomic_write_text(out / "summary.csv", rows_to_csv(result.summary, ["condition", "method", f"mean_target_{m}",
                                                                  f"source_{m}", "reference", "delta", "delta_lo",
                                                                  "delta_hi", "ceiling", "gap_closed",
                                                                  "gap_closed_lo", "gap_closed_hi", "description"]
                                                       + (["translation_off_target", "translation_off_target_lo",
                                                           "translation_off_target_hi"] if tr else [])))
    if tr:
        from xling.harness.translate import translations_jsonl

        atomic_write_text(out / "translations.jsonl", translations_jsonl(result.translations))
    atomic_write_text(out / "report.html", render_report(result, task))
    if result.predictions:
        from xling.harness.consistency import predictions_csv, predictions_rows

        rows = [r for x in result.predictions for r in predictions_rows({x["lang"]: x["record"]}, x["condition"])]
        atomic_write_text(out / "predictions.csv", predictions_csv(rows, with_condition=True))
    run = {"run_id": result.run_id, "command": "transfer", "source": result.source, "targets": result.targets,
           "conditions": result.conditions, "summary": result.summary, "modules": result.modules,
           "timings": result.timings, "config": result.config, "choices": result.choices, "notes": result.notes,
           "warnings": result.warnings, "rows": result.rows, "table": format_table(result),
           **({"translation": result.translation} if result.translation else {})}
    atomic_write_text(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    if cfg.store is not None:
        from xling import __version__
        from xling.harness.consistency import store_rows
        from xling.harness.store import ResultsStore, item_row

        Path(cfg.store).parent.mkdir(parents=True, exist_ok=True)
        scores = [{"model": f"transfer:{r['condition']}", "task": task.name, "lang": r["lang"], "split": "test",
                   "metric": k, "value": r[k]} for r in result.rows for k in ("accuracy", "macro_f1") if k in r]
        ResultsStore(cfg.store).add_run(
            {"run_id": result.run_id, "command": "transfer", "model": cfg.model, "corpus": task.name,
             "config": result.config, "started": result.config.get("started"),
             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "xling_version": __version__},
            task_scores=scores,
            items=[item_row(f"transfer:{x['condition']}", task.name, x["lang"], "test", x["ids_hash"], x["correct"])
                   for x in result.items],
            predictions=[r for x in result.predictions for r in
                         store_rows(f"transfer:{x['condition']}", task.name, "test", {x["lang"]: x["record"]})])
