"""The ``predict`` recipe: per-language task scores predicted from alignment (MEXA-style).

Inputs: per-layer alignment per language (an ``align`` run from the results
store, by run id or the latest run of the model; or the run's
``alignment.csv``) and the task scores of some languages (an ``eval`` run from
the store, or a CSV). The fitting and its honest evaluation are in
:mod:`xling.methods.predict` (nested leave-one-language-out choice of the layer
aggregation, bootstrap confidence intervals; Kargaran et al. 2024, "MEXA").

Outputs, each written atomically, under ``out``: ``predictions.csv`` (per
language: alignment, true score, LOLO prediction, the aggregation chosen in
its fold; predicted score for languages without task data), ``report.html``
(table and scatter plot), ``run.json``; and rows in the results store
(``task_scores`` with split ``lolo`` for held-out predictions of known
languages and ``predicted`` for the others).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError
from xling.harness.store import run_folder_name
from xling.recipes.predict.config import DEFAULT_OUT, NOT_RECORDED, PredictConfig  # noqa: F401

#: Below this many languages with both task scores and alignment, correlations across languages mean little.
MIN_LANGUAGES = 8


@dataclass
class PredictResult:
    prediction: object
    run_id: str
    sources: dict
    metric: str
    align_metric: str
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs


def _read_csv(path: str | Path) -> list[dict]:
    from xling.data.readers import read_text
    from xling.textsafe import csv_uncell

    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    try:
        rows = [{k: csv_uncell(v) for k, v in r.items()} for r in reader]  # xling's own '-neutralised cells
    except csv.Error as exc:
        detail = "a line break inside an unquoted field" if "new-line" in str(exc) else str(exc)
        raise XlingError(f"{path}:{reader.line_num + 1}: malformed CSV ({detail})") from None
    if not rows:
        raise XlingError(f"{path}: no rows")
    return rows


def _float(v, where: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise XlingError(f"{where}: not a number: {v!r}") from None


def alignment_from_csv(path: str | Path, metric: str = "mexa") -> tuple[dict[str, dict[int, float]], dict]:
    """``{lang: {layer: value}}`` from an ``alignment.csv`` (columns lang, [layer], [metric], value)."""
    from xling.data.langcodes import normalize_lang

    rows = _read_csv(path)
    cols = set(rows[0])
    if not {"lang", "value"} <= cols:
        raise XlingError(f"{path}: expected columns lang, layer, metric, value (as in xling align's alignment.csv)")
    models = {r.get("model") for r in rows if r.get("model")}
    if len(models) > 1:
        raise XlingError(f"{path}: holds several models ({', '.join(sorted(models))}); keep one")
    out: dict[str, dict[int, float]] = {}
    for i, r in enumerate(rows, start=2):
        if "metric" in cols and r["metric"] != metric:
            continue
        layer = int(_float(r["layer"], f"{path}:{i}")) if "layer" in cols and r.get("layer") not in (None, "") else 0
        out.setdefault(normalize_lang(r["lang"]), {})[layer] = _float(r["value"], f"{path}:{i}")
    if not out:
        have = sorted({r["metric"] for r in rows}) if "metric" in cols else []
        raise XlingError(f"{path}: no {metric} rows (metrics: {', '.join(have)})")
    return out, {"csv": str(path), "model": next(iter(models), None), "metric": metric}


def scores_from_csv(path: str | Path, metric: str | None = None) -> tuple[dict[str, float], dict]:
    """``{lang: score}`` from a tidy (lang, metric, value) or wide (lang, <metric>...) CSV."""
    from xling.data.langcodes import normalize_lang

    rows = _read_csv(path)
    cols = set(rows[0])
    if "lang" not in cols:
        raise XlingError(f"{path}: no 'lang' column")
    out: dict[str, float] = {}
    if {"metric", "value"} <= cols:
        metric = metric or ("accuracy" if any(r["metric"] == "accuracy" for r in rows) else rows[0]["metric"])
        for i, r in enumerate(rows, start=2):
            if r["metric"] == metric:
                out[normalize_lang(r["lang"])] = _float(r["value"], f"{path}:{i}")
    else:
        metric = metric or next((m for m in ("accuracy", "entity_f1", "score") if m in cols), None)
        if metric is None or metric not in cols:
            raise XlingError(f"{path}: no column {metric!r} (columns: {', '.join(rows[0])})")
        for i, r in enumerate(rows, start=2):
            if r.get(metric) not in (None, ""):
                out[normalize_lang(r["lang"])] = _float(r[metric], f"{path}:{i}")
    if not out:
        raise XlingError(f"{path}: no {metric} scores")
    return out, {"csv": str(path), "metric": metric}


def _store(cfg: PredictConfig):
    from xling.harness.store import ResultsStore

    if cfg.store is None or not Path(cfg.store).is_file():
        raise XlingError(f"results store not found: {cfg.store} (run xling align and xling eval first, or pass CSVs)")
    return ResultsStore(cfg.store)


def scores_from_store(cfg: PredictConfig) -> tuple[dict[str, float], dict]:
    store = _store(cfg)
    runs = [r for r in store.runs("eval") if cfg.task is None or r["config"].get("task") == cfg.task]
    if cfg.model:
        from xling.models.builtin import same_model

        runs = [r for r in runs if same_model(r["config"].get("base_model") or r.get("model"), cfg.model)]
    if cfg.scores_run:
        runs = [r for r in store.runs() if r["run_id"] == cfg.scores_run]
        if not runs:
            raise XlingError(f"no run {cfg.scores_run} in {cfg.store}")
    if not runs:
        raise XlingError(f"no eval run{' for task ' + cfg.task if cfg.task else ''}{' of ' + cfg.model if cfg.model else ''} "
                         f"in {cfg.store} (run xling eval or xling probe first)")
    run = runs[-1]
    rows = store.task_scores(run["run_id"])
    metric = cfg.metric or run["config"].get("main_metric") or "accuracy"
    out = {r["lang"]: r["value"] for r in rows if r["metric"] == metric and r["split"] == cfg.split}
    if not out:
        have = sorted({r["metric"] for r in rows})
        raise XlingError(f"eval run {run['run_id']} has no {metric} scores on {cfg.split} (metrics: {', '.join(have)})")
    conf = run["config"]
    return out, {"run_id": run["run_id"], "model": run.get("model"), "base_model": conf.get("base_model"),
                 "task": conf.get("task"), "source": conf.get("source"), "metric": metric}


def alignment_from_store(cfg: PredictConfig, model: str | None, task: str | None) -> tuple[dict, dict]:
    store = _store(cfg)
    if cfg.align_run:
        runs = [r for r in store.runs() if r["run_id"] == cfg.align_run]
        if not runs:
            raise XlingError(f"no run {cfg.align_run} in {cfg.store}")
    else:
        runs = store.runs("align")
        if model:
            from xling.models.builtin import same_model

            runs = [r for r in runs if same_model(r.get("model"), model)]
        if not runs:
            raise XlingError(f"no align run{' of ' + model if model else ''} in {cfg.store} (run xling align first)")
        want = cfg.align_corpus or (f"task:{task}" if task else None)
        preferred = [r for r in runs if r.get("corpus") == want] if want else []
        if cfg.align_corpus and not preferred:
            raise XlingError(f"no align run on corpus {cfg.align_corpus} in {cfg.store}")
        runs = preferred or runs
    run = runs[-1]
    note = None
    if not cfg.align_run and not cfg.align_corpus and task and run.get("corpus") != f"task:{task}":
        note = (f"alignment from align run {run['run_id']} on {run.get('corpus')}, not on task {task}'s own text "
                f"(no align run on task:{task}; pass --align-corpus to choose)")
    out: dict[str, dict[int, float]] = {}
    for r in store.alignment(run["run_id"]):
        if r["metric"] == cfg.align_metric:
            out.setdefault(r["lang"], {})[int(r["layer"])] = float(r["value"])
    if not out:
        raise XlingError(f"align run {run['run_id']} has no {cfg.align_metric} scores")
    return out, {"run_id": run["run_id"], "model": run.get("model"), "corpus": run.get("corpus"),
                 "metric": cfg.align_metric, **({"note": note} if note else {})}


# ----------------------------------------------------------------------------- the recipe


def predict(config: PredictConfig | None = None, *, alignment=None, scores=None, **kwargs) -> PredictResult:
    """Fit and evaluate score ~ alignment across languages; predict languages without task data.

    ``alignment`` (``{lang: {layer: value}}``) and ``scores`` (``{lang: value}``)
    may be given directly; otherwise they come from CSVs or the results store.
    """
    from xling.data.langcodes import normalize_lang
    from xling.methods.predict import predict_scores

    cfg = config if config is not None else PredictConfig(**kwargs)
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="predict")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sources: dict = {}
    if scores is None:
        if cfg.scores_csv:
            scores, sources["scores"] = scores_from_csv(cfg.scores_csv, cfg.metric)
        else:
            scores, sources["scores"] = scores_from_store(cfg)
    else:
        sources["scores"] = {"given": True, "metric": cfg.metric}
    if alignment is None:
        if cfg.align_csv:
            alignment, sources["alignment"] = alignment_from_csv(cfg.align_csv, cfg.align_metric)
        else:
            s = sources.get("scores", {})
            model = cfg.align_model or s.get("base_model") or s.get("model")
            alignment, sources["alignment"] = alignment_from_store(cfg, model, cfg.task or s.get("task"))
    else:
        sources["alignment"] = {"given": True, "metric": cfg.align_metric}
    exclude = {normalize_lang(x) for x in (cfg.exclude or [])}
    src = sources["scores"].get("source")
    if src and cfg.exclude is None:
        exclude.add(src)  # the source language is trained on: not a transfer target
    scores = {k: v for k, v in scores.items() if k not in exclude}
    alignment = {k: v for k, v in alignment.items() if k not in exclude}
    metric = sources["scores"].get("metric") or cfg.metric or "score"
    pred = predict_scores(alignment, scores, cfg.predictor, cfg.aggregations, cfg.n_boot, cfg.seed, cfg.level)
    result = PredictResult(pred, uuid.uuid4().hex[:12], sources, metric, cfg.align_metric,
                           {"started": started, "excluded": sorted(exclude),
                            "only_scores": sorted(set(scores) - set(alignment))})
    if cfg.out is not None:
        from xling.io import output_folder

        # built aside and swapped in whole under the output lock: one run's files, never a mix
        with output_folder(cfg.out, command="predict", overwrite=cfg.overwrite) as tmp:
            write_outputs(result, tmp, cfg)
    if cfg.store is not None and cfg.write_store:
        save_to_store(result, Path(cfg.store), cfg)
    return result


def table_rows(result: PredictResult) -> list[dict]:
    from xling.data.langcodes import lang_name

    p = result.prediction
    rows = []
    for lang in p.known:
        rows.append({"lang": lang, "name": lang_name(lang), "status": "known", "alignment": p.x_chosen[lang],
                     "score": p.y[lang], "lolo_pred": p.lolo_pred[lang], "abs_err": abs(p.lolo_pred[lang] - p.y[lang]),
                     "fold_choice": p.fold_choice[lang], "predicted": None})
    for lang in p.unknown:
        rows.append({"lang": lang, "name": lang_name(lang), "status": "predicted", "alignment": p.x_chosen[lang],
                     "score": None, "lolo_pred": None, "abs_err": None, "fold_choice": p.chosen,
                     "predicted": p.predicted[lang]})
    return rows


def run_record(result: PredictResult, cfg: PredictConfig | None = None) -> dict:
    p = result.prediction
    return {
        "run_id": result.run_id, "command": "predict", "metric": result.metric, "align_metric": result.align_metric,
        "predictor": p.model, "chosen_aggregation": p.chosen, "fit": p.fit, "stats": p.stats,
        "candidate_lolo_mae": p.chosen_lolo_mae, "known": p.known, "unknown": p.unknown,
        "in_sample_is": in_sample_label(result), "warning": small_n_warning(result),
        "sources": result.sources, **result.meta,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                   if k not in NOT_RECORDED} if cfg else None,
    }


def write_outputs(result: PredictResult, out: Path, cfg: PredictConfig | None = None) -> dict[str, Path]:
    from xling.io import atomic_write_text
    from xling.harness.outputs import rows_to_csv

    out.mkdir(parents=True, exist_ok=True)
    paths = {"predictions": out / "predictions.csv", "run": out / "run.json", "report": out / "report.html"}
    cols = ["lang", "name", "status", "alignment", "alignment_is", "score", "lolo_pred", "abs_err", "fold_choice",
            "predicted"]
    rows = [{k: ("" if v is None else v) for k, v in r.items()} | {"alignment_is": in_sample_label(result)}
            for r in table_rows(result)]
    atomic_write_text(paths["predictions"], rows_to_csv(rows, cols))
    atomic_write_text(paths["run"], json.dumps(run_record(result, cfg), indent=2, default=str))
    atomic_write_text(paths["report"], render_predict_report(result))
    return paths


def save_to_store(result: PredictResult, path: Path, cfg: PredictConfig | None = None) -> None:
    from xling import __version__
    from xling.harness.store import ResultsStore

    p = result.prediction
    s = result.sources.get("scores", {})
    model = s.get("model") or result.sources.get("alignment", {}).get("model") or "unknown"
    task = s.get("task") or (cfg.task if cfg else None) or "unknown"
    rows = [{"model": model, "task": task, "lang": lang, "split": "lolo", "metric": result.metric, "value": p.lolo_pred[lang]}
            for lang in p.known]
    rows += [{"model": model, "task": task, "lang": lang, "split": "predicted", "metric": result.metric,
              "value": p.predicted[lang]} for lang in p.unknown]
    ResultsStore(path).add_run(
        {"run_id": result.run_id, "command": "predict", "model": model, "corpus": f"task:{task}",
         "config": run_record(result, cfg), "started": result.meta.get("started"),
         "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "xling_version": __version__},
        task_scores=rows,
    )


def in_sample_label(result: PredictResult) -> str:
    """What the in-sample numbers are: the aggregation chosen among all candidates on the same languages."""
    p = result.prediction
    k = len(p.chosen_lolo_mae)
    return (f"in-sample, optimistic: {p.chosen} chosen among {k} aggregation{'s' if k != 1 else ''} on these same "
            f"{len(p.known)} languages")


def small_n_warning(result: PredictResult) -> str | None:
    """One line when too few languages back the correlations (None otherwise)."""
    n = len(result.prediction.known)
    if n >= MIN_LANGUAGES:
        return None
    return (f"only {n} language{'s' if n != 1 else ''} with both task scores and alignment: correlations over so few "
            f"points are unreliable (at least {MIN_LANGUAGES} advised); read the held-out (LOLO) numbers, not the "
            f"in-sample ones")


def _fmt_ci(stats: dict, key: str) -> str:
    v = stats.get(key)
    lo, hi = stats.get(f"{key}_ci", (float("nan"), float("nan")))
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def correlation_notes(result: PredictResult) -> list[str]:
    """Why a correlation is NaN, in words: constant task scores, constant alignment, constant predictions."""
    p = result.prediction
    st = p.stats
    notes = []
    known = list(p.known)
    n = len(known)

    def undefined(block: str) -> bool:
        vals = [st.get(block, {}).get(k) for k in ("pearson", "spearman")]
        return any(v is not None and v != v for v in vals)

    def constant(values) -> bool:
        values = [float(v) for v in values]
        return len(values) > 0 and max(values) - min(values) == 0

    if not (undefined("lolo") or undefined("in_sample")):
        return notes
    if n < 3:
        return [f"Pearson and Spearman undefined: only {n} language{'s' if n != 1 else ''} with both task scores "
                f"and alignment (at least 3 needed)"]
    if constant(p.y[k] for k in known):
        notes.append(f"Pearson and Spearman undefined: all {n} task scores are equal ({float(p.y[known[0]]):.3f}), "
                     f"so there is nothing to predict")
    elif constant(p.x_chosen[k] for k in known):
        notes.append(f"Pearson and Spearman undefined: all {n} languages have the same alignment "
                     f"({float(p.x_chosen[known[0]]):.3f}, {p.chosen}); the alignment run cannot tell them apart")
    elif undefined("lolo") and constant(p.lolo_pred[k] for k in known):
        notes.append(f"LOLO Pearson and Spearman undefined: all {n} held-out predictions are equal "
                     f"({float(p.lolo_pred[known[0]]):.3f}); the fit is flat")
    else:
        notes.append("a correlation is undefined: one of the compared series is constant")
    return notes


def _ci_words(stats: dict, key: str) -> str:
    """``0.812 [0.601, 0.930]``; an undefined value or interval said in words."""
    from xling.harness.html import fmt

    v = stats.get(key)
    lo, hi = stats.get(f"{key}_ci", (float("nan"), float("nan")))
    if v is None or v != v:
        return "undefined (see the note below)"
    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{fmt(v)} (no CI: too few languages or resamples)"
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


def render_predict_report(result: PredictResult) -> str:
    from xling.harness.html import esc, fmt, fmt_signed, headline_html, page, scatter_svg, table_html
    from xling.methods.stats import fit_line_ci

    p = result.prediction
    st = p.stats
    lvl = int(round(100 * st["level"]["ci"]))
    r_lolo = st["lolo"].get("pearson")
    head = [f"Leave-one-language-out Pearson r between predicted and true {esc(result.metric)}: "
            f"<b>{esc(_ci_words(st['lolo'], 'pearson'))}</b> ({lvl}% CI over {len(p.known)} languages); "
            f"MAE <b>{esc(_ci_words(st['lolo'], 'mae'))}</b>."]
    if r_lolo is not None and r_lolo == r_lolo:
        strength = "strongly" if abs(r_lolo) >= 0.7 else "moderately" if abs(r_lolo) >= 0.4 else "weakly"
        head.append(f"{esc(result.align_metric)} ({esc(p.chosen)}) predicts the score of an unseen language "
                    f"{strength} ({'positive' if r_lolo > 0 else 'negative'} relation).")
    if small_n_warning(result):
        head.insert(0, f"<b>Warning</b>: {esc(small_n_warning(result))}.")
    body = [f"<h1>Predicting {esc(result.metric)} from {esc(result.align_metric)}</h1>", headline_html(head),
            f"<p>{len(p.known)} languages with task scores, {len(p.unknown)} predicted. Predictor <b>{esc(p.model)}</b>; "
            f"the layer aggregation is chosen by leave-one-language-out (LOLO) error, inside each LOLO fold "
            f"(nested, no leakage); final choice on all languages: <b>{esc(p.chosen)}</b>.</p>"]
    body.append("<h2>How well does alignment predict the score?</h2>")
    thead = ["", "Pearson", "Spearman", "MAE"]
    rows = [["LOLO predictions vs truth (honest)", _ci_words(st["lolo"], "pearson"), _ci_words(st["lolo"], "spearman"),
             _ci_words(st["lolo"], "mae")],
            [f"{p.chosen} vs truth ({in_sample_label(result)})", _ci_words(st["in_sample"], "pearson"),
             _ci_words(st["in_sample"], "spearman"), ""]]
    if st.get("mean_layers"):
        rows.append(["mean over layers vs truth (MEXA, no selection)", _ci_words(st["mean_layers"], "pearson"),
                     _ci_words(st["mean_layers"], "spearman"), ""])
    body.append(table_html(thead, rows))
    for note in correlation_notes(result):
        body.append(f"<p><b>Note</b>: {esc(note)}.</p>")
    body.append(f'<p class="muted">[{lvl}% percentile bootstrap CI over languages, {esc(st["level"]["n_boot"])} resamples, '
                f'seed {esc(st["level"]["seed"])}.]</p>')
    pts = [(lang, p.x_chosen[lang], p.y[lang]) for lang in p.known]
    pts += [(lang, p.x_chosen[lang], p.predicted[lang]) for lang in p.unknown]
    curve = list(zip(p.fit["x"], p.fit["y"])) if p.model == "isotonic" else None
    fit = fit_line_ci([p.x_chosen[k] for k in p.known], [p.y[k] for k in p.known], level=st["level"]["ci"])
    band = (fit["x"], fit["lo"], fit["hi"]) if fit["lo"] else None
    line = (fit["a"], fit["b"]) if fit["a"] is not None else None
    if p.model == "linear" and line is not None:
        body.append(f"<p>Least-squares line on the {len(p.known)} known languages: {esc(result.metric)} = "
                    f"{esc(fmt(fit['a']))} x alignment {esc(fmt_signed(fit['b']))}; shaded: its {lvl}% confidence "
                    "band (t distribution, fitted mean).</p>")
    elif line is not None:
        body.append(f"<p>Dashed: the isotonic fit. Solid: the least-squares line for comparison, shaded: its {lvl}% "
                    "confidence band.</p>")
    if fit["note"]:
        body.append(f'<p class="note">{esc(fit["note"])}.</p>')
    body.append(scatter_svg(f"{result.metric} vs {result.align_metric} ({p.chosen}); open circles: predicted", pts,
                            f"{result.align_metric} ({p.chosen})", result.metric, line=line, hollow=set(p.unknown),
                            curve=curve, band=band, band_label=f"{lvl}% confidence band of the least-squares line"))
    body.append("<h2>Per language</h2>")
    cols = ["lang", "name", "status", "alignment", "score", "lolo_pred", "abs_err", "fold_choice", "predicted"]
    body.append(table_html(cols, [[("" if r[c] is None else r[c]) for c in cols] for r in table_rows(result)],
                           left_cols=3, sortable=True))
    body.append("<h2>Aggregations (LOLO MAE on all known languages)</h2>")
    body.append(table_html(["aggregation", "LOLO MAE"], sorted(([k, v] for k, v in p.chosen_lolo_mae.items()),
                                                               key=lambda r: r[1]), sortable=True))
    body.append("<h2>Inputs</h2>")
    body.append(table_html(["", ""], [[k, json.dumps(v, default=str)] for k, v in result.sources.items()]
                           + [["excluded", ", ".join(result.meta.get("excluded", []))]], left_cols=2))
    body.append('<p class="muted">Method: MEXA (Kargaran et al. 2024) alignment as a predictor of per-language task '
                'scores; transfer protocol: XTREME (Hu et al. 2020). Generated by xling.</p>')
    return page(f"xling predict: {result.metric}", "".join(body), script=True)


def format_summary(result: PredictResult) -> str:
    p = result.prediction
    st = p.stats
    lines = [f"{'lang':10s} {'align':>7s} {'score':>7s} {'lolo':>7s}  fold choice"]
    for lang in sorted(p.known, key=lambda x: -p.y[x]):
        lines.append(f"{lang:10s} {p.x_chosen[lang]:7.3f} {p.y[lang]:7.3f} {p.lolo_pred[lang]:7.3f}  {p.fold_choice[lang]}")
    for lang in p.unknown:
        lines.append(f"{lang:10s} {p.x_chosen[lang]:7.3f} {'?':>7s} {p.predicted[lang]:7.3f}  predicted")
    lvl = int(round(100 * st["level"]["ci"]))
    lines.append("")
    lines.append(f"LOLO over {len(p.known)} languages ({p.model}, nested aggregation choice; {lvl}% bootstrap CI): "
                 f"Pearson {_fmt_ci(st['lolo'], 'pearson')}, Spearman {_fmt_ci(st['lolo'], 'spearman')}, "
                 f"MAE {_fmt_ci(st['lolo'], 'mae')}")
    lines.append(f"{in_sample_label(result)}: Pearson {_fmt_ci(st['in_sample'], 'pearson')}, "
                 f"Spearman {_fmt_ci(st['in_sample'], 'spearman')}")
    lines.extend(f"note: {note}" for note in correlation_notes(result))
    if result.sources.get("alignment", {}).get("note"):
        lines.append(f"note: {result.sources['alignment']['note']}")
    if small_n_warning(result):
        lines.append(f"warning: {small_n_warning(result)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- several models


@dataclass
class MultiPredictResult:
    """:func:`predict` per model, and each statistic averaged over the models."""

    per_model: dict[str, PredictResult]
    averaged: dict[str, dict[str, dict]]
    level: float
    n_boot: int


def predict_models(models: list[str], config: PredictConfig | None = None, **kwargs) -> MultiPredictResult:
    """Score ~ alignment for each model (its own eval and align runs), then averaged over models.

    MEXA's claim (Kargaran et al. 2024) is that alignment predicts task scores
    across languages, reported as correlations averaged over models. Per model
    this runs :func:`predict` with the eval run of that model (``--task``) and
    its align run (``--align-corpus``); the average uses
    :func:`xling.methods.stats.mean_over_models` for two predictors: MEXA's
    (alignment averaged over layers, no fitting: ``mean_layers``) and the honest
    held-out one (``lolo``: nested leave-one-language-out predictions).
    """
    import dataclasses

    from xling.methods.predict import STATS
    from xling.methods.stats import mean_over_models

    cfg = config if config is not None else PredictConfig(**kwargs)
    if len(models) < 2:
        raise XlingError("--models needs at least two models (use --model for one)")
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="predict")
    per: dict[str, PredictResult] = {}
    configs = {m: dataclasses.replace(cfg, model=m, align_model=m,
                                      out=Path(cfg.out) / run_folder_name(m) if cfg.out is not None else None)
               for m in models}
    for m in models:  # each model's folder is written below, inside the whole folder built aside
        per[m] = predict(dataclasses.replace(configs[m], out=None))
    averaged: dict[str, dict[str, dict]] = {}
    for block in ("mean_layers", "lolo"):
        pairs = {}
        for m, r in per.items():
            p = r.prediction
            x = [p.x_mean[lang] for lang in p.known] if block == "mean_layers" else [p.lolo_pred[lang] for lang in p.known]
            pairs[m] = (x, [p.y[lang] for lang in p.known])
        stats = ("pearson", "spearman") if block == "mean_layers" else ("pearson", "spearman", "mae")
        averaged[block] = {}
        for k in stats:
            point, ci = mean_over_models(pairs, STATS[k], cfg.n_boot, cfg.seed, cfg.level)
            averaged[block][k] = {"value": point, "ci": list(ci), "per_model": {
                m: r.prediction.stats[block].get(k) for m, r in per.items()}}
    result = MultiPredictResult(per, averaged, cfg.level, cfg.n_boot)
    if cfg.out is not None:
        from xling.io import atomic_write_text, mark_output, output_folder

        with output_folder(cfg.out, command="predict", overwrite=cfg.overwrite) as tmp:
            for m in models:
                write_outputs(per[m], tmp / run_folder_name(m), configs[m])
                mark_output(tmp / run_folder_name(m), "predict")
            atomic_write_text(tmp / "models.csv", _models_csv(result))
            atomic_write_text(tmp / "models.json", json.dumps(
                {"models": models, "averaged": averaged, "level": cfg.level, "n_boot": cfg.n_boot,
                 "runs": {m: r.run_id for m, r in per.items()}}, indent=2, default=str))
    return result


def _models_csv(result: MultiPredictResult) -> str:
    from xling.textsafe import csv_text

    rows = []
    for m, r in result.per_model.items():
        st = r.prediction.stats
        for block in ("mean_layers", "lolo"):
            for k in ("pearson", "spearman", "mae"):
                if k in st.get(block, {}):
                    lo, hi = st[block].get(f"{k}_ci", (float("nan"), float("nan")))
                    rows.append([m, block, k, st[block][k], lo, hi, len(r.prediction.known)])
    for block, stats in result.averaged.items():
        for k, v in stats.items():
            rows.append(["mean over models", block, k, v["value"], v["ci"][0], v["ci"][1], None])
    return csv_text(rows, ["model", "predictor", "statistic", "value", "ci_low", "ci_high", "n_languages"],
                    float_format=".4f")


def format_models_summary(result: MultiPredictResult) -> str:
    lvl = int(round(100 * result.level))

    def cell(v, ci):
        return f"{v:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if v == v else "undefined"

    lines = [f"{'model':28s} {'langs':>5s}  {'MEXA mean-over-layers: Pearson':34s} {'Spearman':24s} {'held-out (LOLO) Pearson':26s}"]
    for m, r in result.per_model.items():
        st = r.prediction.stats
        ml, lo = st["mean_layers"], st["lolo"]
        lines.append(f"{m:28s} {len(r.prediction.known):5d}  {cell(ml['pearson'], ml['pearson_ci']):34s} "
                     f"{cell(ml['spearman'], ml['spearman_ci']):24s} {cell(lo['pearson'], lo['pearson_ci']):26s}")
    a = result.averaged
    lines.append(f"{'mean over models':28s} {'':5s}  {cell(a['mean_layers']['pearson']['value'], a['mean_layers']['pearson']['ci']):34s} "
                 f"{cell(a['mean_layers']['spearman']['value'], a['mean_layers']['spearman']['ci']):24s} "
                 f"{cell(a['lolo']['pearson']['value'], a['lolo']['pearson']['ci']):26s}")
    lines.append(f"({lvl}% bootstrap CIs over languages; the average resamples each model's languages)")
    return "\n".join(lines)


__all__ = ["PredictConfig", "PredictResult", "predict", "predict_models", "MultiPredictResult", "format_models_summary", "alignment_from_csv", "scores_from_csv",
           "format_summary"]
