"""Per-item predictions of task runs and their cross-lingual consistency (shared by ``xling consistency`` and
``xling knowledge``).

* Making them: :func:`prediction_record` turns a language's examples and predictions into a record
  ``{"item_ids", "predictions", "labels", "correct", "id_source", "ids_hash"}``; eval, probe, matrix and
  transfer keep one per language (and condition). An item's id is the task's ``id`` field (rows with the same
  id in different languages are parallel; the built-in tasks have ids); an item without one is keyed by its
  position, ``#<index>``, and the record says so (``id_source``).
* Writing them: :func:`predictions_rows` and :func:`predictions_csv` (``predictions.csv``: ``item_id, lang,
  prediction, label, correct``, plus ``condition`` for transfer, and for matrix, where it is the source language
  trained on); :func:`store_rows` the results store's ``predictions`` rows (:func:`xling.harness.store.prediction_row`:
  compressed, checksummed).
* Reading them back: :func:`load_run_predictions` (one run of the store, one condition) and
  :func:`prediction_table` (``{lang: {item_id: (prediction, correct)}}``, the input of
  :func:`xling.methods.consistency.consistency_rows`). A run made before predictions were kept raises one line
  naming the command that re-runs it (:func:`rerun_command`).
* The link to alignment: :func:`pair_mexa` (MEXA of each language with the pivot of an ``xling align`` run of the
  same model, at the run's best layer) and :func:`mexa_correlations`.
* The report: :func:`consistency_csv`, :func:`heatmaps_html` (agreement, kappa, KT matrices),
  :func:`consistency_html` (a fragment another report can embed) and :func:`consistency_report_html` (the page).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from xling.errors import XlingError

#: The columns of ``predictions.csv`` (``condition`` first where a run has several).
PREDICTION_COLUMNS = ["item_id", "lang", "prediction", "label", "correct"]

#: Commands whose runs carry predictions (a probe run is an eval run).
PREDICTION_COMMANDS = ("eval", "matrix", "transfer", "knowledge")


# ----------------------------------------------------------------------------- making and writing predictions


def prediction_value(task_type: str, labels: Sequence[str], value) -> str:
    """A prediction or gold label as text: a classification label index becomes the label's name, a
    multiple-choice answer the choice's index; anything else (a generated text) its ``str``."""
    if task_type == "classification" and isinstance(value, int) and not isinstance(value, bool) \
            and 0 <= value < len(labels):
        return str(labels[value])
    return str(value)


def prediction_record(examples: Sequence, preds: Sequence, task_type: str, labels: Sequence[str]) -> dict | None:
    """The record of one language: each example's id, prediction, gold label and correctness (``int(pred ==
    gold)``, as the scores count it). None for token classification (one tag per word, no per-item answer)."""
    from xling.harness.store import items_hash

    if task_type == "token-classification":
        return None
    preds = [p.item() if hasattr(p, "item") else p for p in preds]
    if len(preds) != len(examples):
        raise ValueError(f"{len(preds)} predictions for {len(examples)} examples")
    ids = [None if getattr(e, "id", None) in (None, "") else str(e.id) for e in examples]
    given = sum(x is not None for x in ids)
    return {"item_ids": [x if x is not None else f"#{i}" for i, x in enumerate(ids)],
            "predictions": [prediction_value(task_type, labels, p) for p in preds],
            "labels": [prediction_value(task_type, labels, e.label) for e in examples],
            "correct": [int(p == e.label) for p, e in zip(preds, examples)],
            "id_source": "task" if given == len(ids) else ("position" if given == 0 else "mixed"),
            "ids_hash": items_hash(examples)}


def predictions_rows(records: Mapping[str, dict], condition: str | None = None) -> list[dict]:
    """``predictions.csv`` rows of ``{lang: record}`` (records as :func:`prediction_record` or the store give
    them); with ``condition``, each row carries it."""
    rows = []
    for lang, rec in records.items():
        if rec is None:
            continue
        for item_id, pred, gold, ok in zip(rec["item_ids"], rec["predictions"], rec["labels"], rec["correct"]):
            row = {"item_id": item_id, "lang": lang, "prediction": pred, "label": gold, "correct": int(ok)}
            rows.append(row if condition is None else {"condition": condition, **row})
    return rows


def predictions_csv(rows: list[dict], with_condition: bool = False) -> str:
    """The text of ``predictions.csv`` (:func:`xling.harness.outputs.rows_to_csv`: cells made safe)."""
    from xling.harness.outputs import rows_to_csv

    return rows_to_csv(rows, (["condition"] if with_condition else []) + PREDICTION_COLUMNS)


def store_rows(model: str, task: str, split: str, records: Mapping[str, dict]) -> list[dict]:
    """The results store's ``predictions`` rows of ``{lang: record}`` (``model``: the run's model, or
    ``transfer:<condition>`` as in ``item_scores``)."""
    from xling.harness.store import prediction_row

    return [prediction_row(model, task, lang, split, rec.get("ids_hash") or "", rec)
            for lang, rec in records.items() if rec is not None]


# ----------------------------------------------------------------------------- reading a run back


@dataclass
class RunPredictions:
    """One run's predictions for one condition: ``records[lang]`` as :meth:`ResultsStore.predictions` decodes them."""

    run: dict
    condition: str | None
    conditions: list[str]
    task: str
    model: str                      # the base model (for the link to alignment)
    records: dict[str, dict]
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    def table(self) -> dict[str, dict[str, tuple[str, int]]]:
        return prediction_table(self.records, where=f"run {self.run_id}")


def prediction_table(records: Mapping[str, dict], where: str = "predictions") -> dict[str, dict[str, tuple]]:
    """``{lang: {item_id: (prediction, correct)}}``; an id twice in one language is one line (ids must be unique
    within a language to say which items are parallel)."""
    table: dict[str, dict[str, tuple]] = {}
    for lang, rec in records.items():
        per: dict[str, tuple] = {}
        for item_id, pred, ok in zip(rec["item_ids"], rec["predictions"], rec["correct"]):
            if item_id in per:
                raise XlingError(f"{where}: item id {item_id!r} appears twice in {lang}; parallel item ids must be "
                                 f"unique within a language (fix the task file's id field)")
            per[item_id] = (pred, int(ok))
        table[lang] = per
    return table


def _config(run: dict) -> dict:
    return run.get("config") or {}


def run_task(run: dict) -> str:
    conf = _config(run)
    if run.get("command") == "transfer":
        return str(conf.get("task") or run.get("corpus") or "?")
    corpus = str(run.get("corpus") or conf.get("task") or "?")
    return corpus[5:] if corpus.startswith("task:") else corpus


def run_base_model(run: dict) -> str:
    """The model whose alignment a run's consistency is compared with: the base model of a trained folder."""
    return str(_config(run).get("base_model") or run.get("model") or "?")


def rerun_command(run: dict) -> str:
    """The command line that makes ``run`` again (its model and task; a probe as a probe, zero-shot as zero-shot)."""
    conf = _config(run)
    inner = conf.get("config") if isinstance(conf.get("config"), dict) else {}
    cmd = run.get("command")
    if cmd == "eval" and conf.get("method") == "probe":
        cmd = "probe"
    model = run.get("model") or inner.get("model") or conf.get("model") or "MODEL"
    if cmd == "knowledge":
        return f"xling knowledge --model {model}"
    line = f"xling {cmd} --model {model} --task {inner.get('task') or run_task(run)}"
    if cmd == "eval" and (inner.get("zero_shot") or (conf.get("settings") or {}).get("mode") == "zero-shot"):
        line += " --zero-shot"
    return line


def load_run_predictions(store_path: str | Path, run_id: str, condition: str | None = None) -> RunPredictions:
    """The predictions of run ``run_id`` (or an unambiguous prefix) of the results store at ``store_path``.

    A transfer run holds one set per condition: ``condition`` picks it (needed when there are several). One line
    (:class:`XlingError`) when the store or run is missing, the run is of a command without predictions, the
    condition is unknown, or the run was made before predictions were kept (naming the command that re-runs it).
    """
    from xling.harness.store import ResultsStore

    store_path = Path(store_path)
    if not store_path.is_file():
        raise XlingError(f"results store not found: {store_path} (run a command first, or pass --store)")
    store = ResultsStore(store_path)
    run = store.resolve(run_id)
    rid, cmd, conf = run["run_id"], run.get("command"), _config(run)
    if cmd not in PREDICTION_COMMANDS:
        raise XlingError(f"run {rid} is a {cmd} run; per-item predictions are kept for eval, probe, matrix, "
                         f"transfer and knowledge runs (xling runs --store {store_path} lists them)")
    rows = store.predictions(rid)
    if cmd == "eval":
        split = conf.get("split") or "test"
        rows = [r for r in rows if r["split"] == split]
    if not rows:
        if conf.get("task_type") == "token-classification":
            raise XlingError(f"run {rid} is on a token-classification task ({run_task(run)}): it has no per-item "
                             f"answers to compare across languages")
        raise XlingError(f"run {rid} ({cmd}, finished {run.get('finished') or '?'}) has no stored predictions: it "
                         f"was made before xling kept them; re-run it to add them: {rerun_command(run)}")
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    conditions = [m.split(":", 1)[1] if m.startswith("transfer:") else m for m in by_model]
    chosen = None
    if cmd == "transfer":
        if condition is None:
            if len(conditions) > 1:
                raise XlingError(f"transfer run {rid} has {len(conditions)} conditions ({', '.join(conditions)}); "
                                 f"pass --condition with one of them")
            chosen = conditions[0]
        elif condition not in conditions:
            raise XlingError(f"transfer run {rid} has no condition {condition!r}; it has: {', '.join(conditions)}")
        else:
            chosen = condition
        picked = by_model[f"transfer:{chosen}"]
    else:
        if condition is not None:
            raise XlingError(f"--condition picks a condition of a transfer run; run {rid} is a {cmd} run"
                             + (" (each source language of a matrix is its own run: xling runs lists them)"
                                if cmd == "matrix" else ""))
        picked = [r for rs in by_model.values() for r in rs]
    records: dict[str, dict] = {}
    for r in picked:
        if r["lang"] in records:
            raise XlingError(f"run {rid}: two prediction sets for {r['lang']} in the results store")
        records[r["lang"]] = r
    notes = []
    positional = [lang for lang, r in records.items() if r.get("id_source") != "task"]
    if positional:
        notes.append(f"items without an id field in {', '.join(positional)} are paired by their position in the "
                     f"test set (#index); give the task file an id column when its rows are not in parallel order")
    return RunPredictions(run=run, condition=chosen, conditions=conditions, task=run_task(run),
                          model=run_base_model(run), records=records, notes=notes)


def accuracy_rows(records: Mapping[str, dict]) -> list[dict]:
    """Per language: items and accuracy with its 95% Wilson interval (the base rate KT is read against)."""
    from xling.methods.stats import wilson_interval

    out = []
    for lang, rec in records.items():
        n, k = len(rec["correct"]), sum(int(c) for c in rec["correct"])
        lo, hi = wilson_interval(k, n, empty=(math.nan, math.nan))
        out.append({"lang": lang, "n": n, "accuracy": k / n if n else math.nan, "accuracy_low": lo,
                    "accuracy_high": hi})
    return out


# ----------------------------------------------------------------------------- the link to alignment


def pair_mexa(store_path: str | Path | None, model: str, task: str, langs: Sequence[str]) -> dict:
    """MEXA of each language with the pivot of the latest ``xling align`` run of ``model`` on the task's text
    collection (:func:`xling.harness.links.corpus_family`), at that run's best layer (the highest mean MEXA over its
    languages): ``{"run_id", "corpus", "pivot", "layer", "values": {lang: mexa}}`` with the languages of
    ``langs`` (matched with :func:`xling.data.langcodes.match_lang`), or ``{"note": one line}`` saying why there is
    none and which command adds it."""
    from xling.data.langcodes import match_lang, normalize_lang
    from xling.harness.links import align_runs, corpus_family, mean_by_layer, mexa_table

    keyed = [lang for lang in langs if ":" in str(lang)]
    if keyed:  # a translation run: items keyed by language and direction (de:en-x), never by the pivot itself
        return {"note": f"no correlation with MEXA: the run's items are keyed by language and direction "
                        f"({keyed[0]}), translations into or out of English, so no pair of keys is a language with "
                        f"the align run's pivot; MEXA pairs each language with the pivot"}
    hint = f"xling align --model {model} --data task:{task}"
    runs = align_runs(store_path, model)
    same = [r for r in runs if corpus_family(r.get("corpus")) == corpus_family(task)]
    if not same:
        where = (f" (only on other corpora: {', '.join(dict.fromkeys(str(r.get('corpus')) for r in runs))})"
                 if runs else "")
        return {"note": f"no correlation with MEXA: the results store has no align run of {model} on the text of "
                        f"{task}{where}; `{hint}` adds one"}
    run = same[-1]
    table = mexa_table(store_path, run)
    by_layer = mean_by_layer(table)
    if not by_layer:
        return {"note": f"no correlation with MEXA: align run {run['run_id']} has no MEXA scores; `{hint}` adds them"}
    best = max(by_layer, key=by_layer.get)
    pivot_code = (_config(run).get("pivot") or "eng_Latn")
    try:
        pivot = match_lang(normalize_lang(pivot_code), langs)
    except XlingError:
        pivot = None
    if pivot is None:
        return {"note": f"no correlation with MEXA: the pivot of align run {run['run_id']} ({pivot_code}) is not "
                        f"among the run's languages, so no language pair has a MEXA value"}
    values = {}
    for lang in langs:
        if lang == pivot:
            continue
        try:
            hit = match_lang(lang, list(table))
        except XlingError:
            hit = None
        if hit is not None and best in table[hit]:
            values[lang] = table[hit][best]
    return {"run_id": run["run_id"], "corpus": run.get("corpus"), "pivot": pivot, "layer": best, "values": values}


#: The pair statistics correlated with MEXA: (column, label); ``kt_a_to_b`` both ways from the pivot.
MEXA_STATS = (("agreement", "agreement"), ("kappa", "kappa"), ("both_correct", "both correct"),
              ("kt_from_pivot", "KT(pivot -> lang)"), ("kt_to_pivot", "KT(lang -> pivot)"))


def mexa_correlations(rows: Sequence[dict], mexa: dict, reps: int = 1000, seed: int = 0) -> list[dict]:
    """Pearson and Spearman, over the languages paired with the align run's pivot, of each pair statistic with
    the pair's MEXA (:func:`xling.harness.links.correlation`: a 95% percentile bootstrap interval over the
    pairs). Empty without MEXA values."""
    from xling.harness.links import correlation

    if "values" not in mexa:
        return []
    pivot, values = mexa["pivot"], mexa["values"]
    get = {(r["lang_a"], r["lang_b"]): r for r in rows}
    langs = [lang for lang in values if (pivot, lang) in get]
    stats = {"kt_from_pivot": [get[(pivot, x)]["kt_a_to_b"] for x in langs],
             "kt_to_pivot": [get[(x, pivot)]["kt_a_to_b"] for x in langs]}
    for name in ("agreement", "kappa", "both_correct"):
        stats[name] = [get[(pivot, x)][name] for x in langs]
    x = [values[lang] for lang in langs]
    return [correlation(f"{label} ~ MEXA with {pivot}", x, stats[name], reps, seed)
            | {"stat": name, "layer": mexa["layer"], "align_run": mexa["run_id"]}
            for name, label in MEXA_STATS]


# ----------------------------------------------------------------------------- outputs


#: The columns of ``consistency.csv``.
def consistency_columns() -> list[str]:
    from xling.methods.consistency import COLUMNS

    return list(COLUMNS)


def consistency_csv(rows: list[dict]) -> str:
    """The text of ``consistency.csv``: one row per ordered pair; an undefined value (NaN: kappa when both
    languages always give one and the same answer, KT when nothing is right in ``lang_a``, anything for a pair
    without shared items or an interval below 3 items) is an empty cell."""
    from xling.harness.outputs import rows_to_csv

    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    return rows_to_csv(clean, consistency_columns())


def _ci(row: dict, low: str, high: str) -> str:
    from xling.harness.html import fmt

    lo, hi = row.get(low), row.get(high)
    if lo is None or hi is None or lo != lo or hi != hi:
        return ""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _matrix(rows: Sequence[dict], col: str, low: str, high: str, langs: Sequence[str]):
    values: dict[str, dict[str, float]] = {a: {} for a in langs}
    note: dict[str, dict[str, str]] = {a: {} for a in langs}
    for r in rows:
        v = r.get(col)
        if v is None or v != v:
            continue
        values[r["lang_a"]][r["lang_b"]] = float(v)
        note[r["lang_a"]][r["lang_b"]] = f"{_ci(r, low, high)} n={r['n']}"
    return values, note


def heatmaps_html(rows: Sequence[dict], langs: Sequence[str] | None = None) -> str:
    """Three heatmaps over the language pairs: agreement, Cohen's kappa and KT(row -> column), each cell's
    interval and item count in its tooltip; undefined cells (NaN) are left blank."""
    from xling.harness.html import matrix_svg

    if langs is None:
        langs = list(dict.fromkeys([r["lang_a"] for r in rows] + [r["lang_b"] for r in rows]))
    parts = []
    for col, low, high, title, axes, lo in (
            ("agreement", "agreement_low", "agreement_high", "agreement (share of items with the same prediction)",
             ("language a", "language b"), 0.0),
            ("kappa", "kappa_low", "kappa_high", "Cohen's kappa (agreement beyond chance; 0 = chance)",
             ("language a", "language b"), None),
            ("kt_a_to_b", "kt_low", "kt_high", "KT(row -> column) = P(correct in column | correct in row)",
             ("known in", "asked in"), 0.0)):
        values, note = _matrix(rows, col, low, high, langs)
        flat = [v for d in values.values() for v in d.values()]
        lo_v = lo if lo is not None else min([0.0, *flat])
        parts.append('<div class="card">' + matrix_svg(title, list(langs), list(langs), values, lo=lo_v, hi=1.0,
                                                       note=note, axes=axes) + "</div>")
    return '<div class="grid">' + "".join(parts) + "</div>"


def consistency_html(rows: Sequence[dict], *, langs: Sequence[str] | None = None, accuracy: Sequence[dict] = (),
                     correlations: Sequence[dict] = (), notes: Sequence[str] = (), level: float = 0.95) -> str:
    """The consistency section (an HTML fragment, every value escaped): what the numbers mean, the heatmaps, the
    pair table with intervals and the pairs whose agreement is at chance, the per-language accuracy, the
    correlations with MEXA and ``notes``."""
    from xling.harness.html import esc, fmt, table_html
    from xling.harness.links import describe
    from xling.methods.consistency import kappa_at_chance

    body = ["<h2>Consistency across languages</h2>",
            '<p class="muted">Per pair of languages, on the parallel items both were asked: <b>agreement</b> (same '
            "prediction, right or wrong), <b>Cohen's kappa</b> (agreement beyond what the two languages' answer "
            "distributions give by chance; 0 = chance, undefined when both always give one and the same answer), "
            "<b>both correct</b>, and <b>KT(a &rarr; b)</b> = P(correct in b | correct in a) (undefined when no "
            f"item is right in a). Intervals: {level:.0%} paired percentile bootstrap over the pair's items.</p>",
            heatmaps_html(rows, langs)]
    chance = [r for r in rows if r["lang_a"] < r["lang_b"] and kappa_at_chance(r)]
    if chance:
        pairs = ", ".join(f"{r['lang_a']}/{r['lang_b']}" for r in chance)
        body.append(f"<p>Agreement no better than chance (the kappa interval contains 0): {esc(pairs)}.</p>")
    table = [[r["lang_a"], r["lang_b"], r["n"], r["agreement"], _ci(r, "agreement_low", "agreement_high"),
              r["kappa"], _ci(r, "kappa_low", "kappa_high") + (" at chance" if kappa_at_chance(r) else ""),
              r["both_correct"], _ci(r, "both_correct_low", "both_correct_high"), r["kt_a_to_b"],
              _ci(r, "kt_low", "kt_high")] for r in rows]
    ci = f"{level:.0%} CI"
    body.append(table_html(["language a", "language b", "items", "agreement", ci, "kappa", ci, "both correct", ci,
                            "KT(a → b)", ci], table, left_cols=2, sortable=True))
    if accuracy:
        body.append("<h3>Accuracy per language</h3>")
        body.append('<p class="muted">The base rate of KT: KT(a &rarr; b) near the accuracy of b means knowing an '
                    "item in a says nothing about b. 95% Wilson intervals.</p>")
        body.append(table_html(["language", "items", "accuracy", "95% CI"],
                               [[r["lang"], r["n"], r["accuracy"], _ci(r, "accuracy_low", "accuracy_high")]
                                for r in accuracy]))
    if correlations:
        first = correlations[0]
        body.append("<h3>Consistency and alignment</h3>")
        body.append(f'<p class="muted">MEXA of each language with the pivot at hidden state {esc(fmt(first["layer"]))}'
                    f" (the best layer of align run {esc(first['align_run'])}) against the pair's consistency, over "
                    "the languages paired with the pivot. The pairs share the pivot, so the interval is optimistic."
                    "</p>")
        body.append("<ul>" + "".join(f"<li>{esc(describe(c, 'pairs'))}</li>" for c in correlations) + "</ul>")
    if notes:
        body.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(body)


def headline(rows: Sequence[dict]) -> list[str]:
    """The finding in sentences: mean agreement and kappa over the pairs, how many pairs agree at chance, the
    most and least consistent pair by kappa."""
    from xling.harness.html import fmt
    from xling.methods.consistency import kappa_at_chance

    pairs = [r for r in rows if r["lang_a"] < r["lang_b"]]
    ok = [r for r in pairs if r["kappa"] == r["kappa"]]
    if not ok:
        return [f"No language pair has a defined kappa ({len(pairs)} pairs): no shared items, or one answer "
                "everywhere."]
    mean = lambda k: sum(r[k] for r in ok) / len(ok)  # noqa: E731
    chance = sum(kappa_at_chance(r) for r in ok)
    out = [f"Over {len(ok)} language pairs: mean agreement {fmt(mean('agreement'))}, mean Cohen's kappa "
           f"{fmt(mean('kappa'))}; {chance} of {len(ok)} pairs agree no better than chance (kappa interval "
           f"contains 0)."]
    if len(ok) > 1:
        hi, lo = max(ok, key=lambda r: r["kappa"]), min(ok, key=lambda r: r["kappa"])
        out.append(f"Most consistent: {hi['lang_a']}/{hi['lang_b']} (kappa {fmt(hi['kappa'])}); least: "
                   f"{lo['lang_a']}/{lo['lang_b']} (kappa {fmt(lo['kappa'])}).")
    return out


def consistency_report_html(rows: Sequence[dict], *, title: str, subtitle: str = "",
                            langs: Sequence[str] | None = None, accuracy: Sequence[dict] = (),
                            correlations: Sequence[dict] = (), notes: Sequence[str] = (), level: float = 0.95) -> str:
    """The whole page: ``title``, ``subtitle`` (a line on the run), the finding (:func:`headline`) and
    :func:`consistency_html`."""
    from xling.harness.html import esc, headline_html, page

    head = f"<h1>{esc(title)}</h1>" + (f'<p class="muted">{esc(subtitle)}</p>' if subtitle else "")
    head += headline_html([esc(x) for x in headline(rows)])
    return page(title, head + consistency_html(rows, langs=langs, accuracy=accuracy, correlations=correlations,
                                               notes=notes, level=level), script=True)


__all__ = ["MEXA_STATS", "PREDICTION_COLUMNS", "PREDICTION_COMMANDS", "RunPredictions", "accuracy_rows",
           "consistency_columns", "consistency_csv", "consistency_html", "consistency_report_html", "headline", "heatmaps_html",
           "load_run_predictions", "mexa_correlations", "pair_mexa", "prediction_record", "prediction_table",
           "prediction_value", "predictions_csv", "predictions_rows", "rerun_command", "run_base_model", "run_task",
           "store_rows"]
