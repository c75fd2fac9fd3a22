"""The ``rank`` recipe: which source language to transfer from, learned from transfer matrices.

``xling rank`` reads a transfer matrix written by ``xling matrix`` from the
results store (the latest one, or ``--matrix ID``), joins its pair features
(MEXA and retrieval both ways, token overlap, the source's training size) with
the six URIEL distances of each pair (:mod:`xling.data.typology`, the
``typology`` extra), and evaluates a LightGBM LambdaRank ranker (the ``rank``
extra; LangRank, Lin et al. 2019) leave-one-target-out against every
single-feature baseline, "always English" and "best on average", by NDCG@3 and
the regret of the top-1 choice, with bootstrap CIs over targets
(:func:`xling.methods.rank.evaluate_loto`).

``--target LANG`` asks for a ranked list of sources for a language with no
labelled data: a language of the matrix is treated as unlabelled (it is dropped as
a source and from the ranker's training targets) and ranked with every feature;
a language outside the matrix has no parallel text there, so the ranker is
trained on typology features only (URIEL distances and the source's training
size) and ranks the matrix's sources for it. Each recommendation lists the
features that drove it (TreeSHAP contributions).

Outputs in ``--out``: ``report.html`` (matrix heatmap, ranking quality, feature
importances, recommendations), ``loto.csv``, ``summary.csv``,
``importances.csv``, ``recommendations.csv``, ``run.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError
from xling.recipes.rank.config import DEFAULT_OUT, RankConfig  # noqa: F401 - the options live there


@dataclass
class RankResult:
    matrix_id: str
    model: str
    task: str
    reference: str
    sources: list[str]
    targets: list[str]
    scores: dict[str, dict[str, float]]
    features: dict[str, dict[str, dict[str, float]]]
    feature_names: list[str]
    loto: object
    importances: dict[str, float]
    recommendations: dict[str, dict] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    matrix_targets: list[str] = field(default_factory=list)  # the matrix's column order, for the report


def load_matrix(store_path, matrix_id: str | None = None, metric: str = "accuracy") -> dict:
    """The matrix ``matrix_id`` (default: the latest) from the store: scores[tgt][src], features[tgt][src], meta."""
    from xling.harness.store import ResultsStore

    store = ResultsStore(store_path)
    if not Path(store_path).is_file():
        raise XlingError(f"results store {store_path} does not exist; run xling matrix first (or pass --store)")
    runs = store.runs("matrix")
    if not runs:
        raise XlingError(f"results store {store_path} holds no transfer matrix; run xling matrix first")
    ids = list(dict.fromkeys(r["config"].get("matrix_id") for r in runs))
    if matrix_id is None:
        matrix_id = ids[-1]
    elif matrix_id not in ids:
        raise XlingError(f"no matrix {matrix_id!r} in {store_path}; it holds: {', '.join(str(i) for i in ids)}")
    mine = [r for r in runs if r["config"].get("matrix_id") == matrix_id]
    scores: dict[str, dict[str, float]] = {}
    features: dict[str, dict[str, dict[str, float]]] = {}
    sources = []
    for r in mine:
        src = r["config"]["source"]
        sources.append(src)
        for row in store.task_scores(r["run_id"]):
            if row["metric"] == metric:
                scores.setdefault(row["lang"], {})[src] = float(row["value"])
        for tgt, f in (r["config"].get("features") or {}).items():
            features.setdefault(tgt, {})[src] = {k: float(v) for k, v in f.items() if isinstance(v, (int, float))}
    if not scores:
        raise XlingError(f"matrix {matrix_id} in {store_path} has no {metric!r} scores")
    cfg = mine[0]["config"]
    return {"matrix_id": matrix_id, "scores": scores, "features": features, "sources": sources,
            "targets": sorted(scores), "matrix_targets": list(cfg.get("targets") or []),
            "model": mine[0].get("model"), "task": cfg.get("task"),
            "reference": cfg.get("reference")}


def _add_typology(features, sources, targets) -> dict[str, int]:
    from xling.data.typology import KINDS, distances

    pairs = [(s, t) for t in targets for s in sources if s != t]
    d = distances(pairs)
    missing = {f"uriel_{k}": 0 for k in KINDS}
    for (s, t), row in d.items():
        f = features.setdefault(t, {}).setdefault(s, {})
        for k in KINDS:
            v = row.get(k)
            f[f"uriel_{k}"] = float("nan") if v is None else float(v)
            missing[f"uriel_{k}"] += v is None
    return missing


def _source_only(features, sources) -> dict[str, dict[str, float]]:
    """Features of the source alone (its training size), taken from any target's row."""
    out = {}
    for s in sources:
        for t in features:
            if s in features[t]:
                out[s] = {k: v for k, v in features[t][s].items() if k.startswith("source_")}
                break
        else:
            out[s] = {}
    return out


def _match(code: str, langs: list[str]) -> str | None:
    from xling.data.langcodes import match_lang

    return match_lang(code, langs)


def _value(v) -> str:
    """A feature value for the drivers column; a missing one (NaN: no URIEL distance) says so."""
    return "missing" if v is None or v != v else f"{v:.3g}"


def tied_ranks(ranked: list[str], score: dict[str, float]) -> dict[str, tuple[int, bool]]:
    """Competition ranks of ``ranked`` (best first) by ``score``: equal scores share the better rank
    (``1, 2, 2, 4``), and each is marked tied when another candidate has the same score."""
    out = {}
    for i, s in enumerate(ranked):
        first = next(j for j, x in enumerate(ranked) if score[x] == score[s])
        out[s] = (first + 1, sum(score[x] == score[s] for x in ranked) > 1)
    return out


def rank_label(row: dict) -> str:
    """``2`` or, for a tie, ``2=``."""
    return f"{row['rank']}=" if row.get("tied") else str(row["rank"])


def recommend(scores, features, sources, feature_names, target: str, *, seed=0, top=10, params=None) -> dict:
    """Rank ``sources`` for ``target`` with a ranker trained on every other target of the matrix."""
    from xling.methods.rank import LambdaRanker, _order

    others = [u for u in scores if u != target]
    train = [(features[u], {s: v for s, v in scores[u].items() if s not in (u, target)}) for u in others
             if u in features]
    r = LambdaRanker(feature_names, seed=seed, top=top, **(params or {}))
    r.fit(train)
    cands = sorted(s for s in sources if s != target)
    feats = features[target]
    pred = r.predict(feats, cands)
    contrib = r.contributions(feats, cands)
    ranked = _order(cands, pred)
    ranks = tied_ranks(ranked, pred)
    rows = []
    for s in ranked:
        drivers = sorted(contrib[s].items(), key=lambda kv: -abs(kv[1]))[:3]
        rows.append({"rank": ranks[s][0], "tied": ranks[s][1], "source": s, "score": pred[s],
                     "drivers": "; ".join(f"{k}={_value(feats[s].get(k))} ({v:+.3f})" for k, v in drivers),
                     **({"true": scores[target][s]} if target in scores and s in scores[target] else {})})
    return {"features": list(feature_names), "ranking": rows, "importances": r.importances()}


def rank_sources(config: RankConfig | None = None, **kwargs) -> RankResult:
    """Run the rank recipe (see the module docstring)."""
    from xling.methods.rank import FEATURE_DIRECTION, TYPOLOGY_FEATURES, LambdaRanker, evaluate_loto
    from xling.deps import require

    cfg = config if config is not None else RankConfig(**kwargs)
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="rank")
    require("lightgbm", "the source-language ranker (LightGBM lambdarank)")
    t0 = time.perf_counter()
    m = load_matrix(cfg.store, cfg.matrix, cfg.metric)
    scores, features, sources, targets = m["scores"], m["features"], m["sources"], m["targets"]
    new_targets, known_targets = [], []
    for code in cfg.targets or []:
        hit = _match(code, targets)
        if hit is not None:
            known_targets.append(hit)
        else:
            from xling.data.langcodes import normalize_lang

            new_targets.append(normalize_lang(code))
    missing = {}
    if cfg.typology:
        missing = _add_typology(features, sources, targets + new_targets)
    names = [f for f in (cfg.features or FEATURE_DIRECTION) if any(f in features.get(t, {}).get(s, {})
                                                                     for t in targets for s in sources)]
    if cfg.features and len(names) < len(cfg.features):
        raise XlingError(f"matrix {m['matrix_id']} has no values of feature(s) "
                         f"{', '.join(f for f in cfg.features if f not in names)}")
    if not names:
        raise XlingError("no features to rank by")
    reference = m["reference"] or ("eng_Latn" if "eng_Latn" in sources else sources[0])
    loto = evaluate_loto(scores, features, names, reference, k=cfg.k, top=cfg.top, n_boot=cfg.n_boot, seed=cfg.seed)
    final = LambdaRanker(names, seed=cfg.seed, top=cfg.top)
    final.fit([(features[t], {s: v for s, v in scores[t].items() if s != t}) for t in targets if t in features])
    recs = {}
    for t in known_targets:
        recs[t] = {"mode": "all features (the target's own labels unused)",
                   **recommend(scores, features, sources, names, t, seed=cfg.seed, top=cfg.top)}
    src_only = _source_only(features, sources)
    for t in new_targets:
        typo = [f for f in names if f in TYPOLOGY_FEATURES]
        if not typo:
            raise XlingError(f"{t} is not in the matrix and no typology feature is selected: nothing to rank it by")
        for s in sources:
            features.setdefault(t, {}).setdefault(s, {}).update(src_only[s])
        recs[t] = {"mode": "typology only (no parallel text for this language in the matrix)",
                   **recommend(scores, features, sources, typo, t, seed=cfg.seed, top=cfg.top)}
    result = RankResult(matrix_id=m["matrix_id"], model=m["model"], task=m["task"], reference=reference,
                        sources=sources, targets=targets, scores=scores,
                        features={t: features[t] for t in targets}, feature_names=names, loto=loto,
                        importances=final.importances(), recommendations=recs, missing=missing,
                        timings={"total_s": round(time.perf_counter() - t0, 2)},
                        matrix_targets=m.get("matrix_targets", []))
    if cfg.out is not None:
        from xling.io import output_folder

        with output_folder(cfg.out, command="rank", overwrite=cfg.overwrite) as tmp:  # built aside, swapped in
            write_outputs(result, tmp, cfg)
    return result


# ----------------------------------------------------------------------------- outputs

METHOD_LABEL = {"ranker": "LambdaRank (all features)", "best-on-average": "best source on average"}


def _label(m: str) -> str:
    if m.startswith("always:"):
        return f"always {m.split(':', 1)[1]}"
    if m.startswith("feature:"):
        return f"single feature {m.split(':', 1)[1]}"
    return METHOD_LABEL.get(m, m)


def summary_rows(result: RankResult) -> list[dict]:
    return [{"method": m, **result.loto.summary[m]} for m in result.loto.methods]


def write_outputs(result: RankResult, out: Path, cfg: RankConfig) -> None:
    from xling.io import atomic_write_text
    from xling.harness.outputs import rows_to_csv

    out.mkdir(parents=True, exist_ok=True)
    loto = [{"method": m, "target": t, **{k: v for k, v in r.items() if k != "ranking"},
             "ranking": " ".join(r["ranking"])} for m in result.loto.methods for t, r in result.loto.per_target[m].items()]
    srows = summary_rows(result)
    scols = ["method", *sorted({k for r in srows for k in r if k != "method"})]
    rec = [{"target": t, "mode": r["mode"], **row} for t, r in result.recommendations.items() for row in r["ranking"]]
    files = {
        "loto.csv": rows_to_csv(loto, ["method", "target", "ndcg", "regret", "choice", "best", "ranking"]),
        "summary.csv": rows_to_csv(srows, scols),
        "importances.csv": rows_to_csv([{"feature": f, "gain_share": v} for f, v in result.importances.items()],
                                       ["feature", "gain_share"]),
        "recommendations.csv": rows_to_csv(rec, ["target", "mode", "rank", "tied", "source", "score", "true",
                                                  "drivers"]),
        "run.json": json.dumps({"matrix_id": result.matrix_id, "model": result.model, "task": result.task,
                                "reference": result.reference, "features": result.feature_names,
                                "summary": {r["method"]: r for r in srows}, "importances": result.importances,
                                "missing_uriel_pairs": result.missing, "recommendations": result.recommendations,
                                "timings": result.timings, "created": datetime.now(timezone.utc).isoformat(
                                    timespec="seconds"),
                                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}},
                               indent=1, default=str),
        "report.html": render_rank_report(result),
    }
    for name, text in files.items():
        atomic_write_text(out / name, text)


def _ci(r: dict, key: str) -> str:
    return f"{r[key]:.3f} [{r[key + '_lo']:.3f}, {r[key + '_hi']:.3f}]" if key in r and r[key] == r[key] else ""


def render_rank_report(result: RankResult) -> str:
    from xling.harness.html import matrix_svg
    from xling.harness.html import bar_chart_svg, esc, page, plural, table_html

    k = result.loto.k
    # columns in the matrix's own order (xling matrix's report), not sorted: the same picture in both reports
    order = [t for t in (result.matrix_targets or []) if t in result.targets]
    cols = order + [t for t in result.targets if t not in order]
    acc = {s: {t: result.scores[t].get(s) for t in cols} for s in result.sources}
    body = [f"<h1>Which source language: {esc(result.task)}</h1>",
            f'<p class="muted">model {esc(result.model)}; matrix {esc(result.matrix_id)}; '
            f'{plural(len(result.sources), "source")} x {plural(len(result.targets), "target")}; '
            f'features: {esc(", ".join(result.feature_names))}</p>',
            matrix_svg("transfer matrix (row: trained on, column: tested on)", result.sources, cols, acc),
            "<h2>Ranking quality, leave one target out</h2>",
            f'<p class="muted">NDCG@{k} (LangRank relevance, gain 2^rel - 1) and regret (best source\'s score minus the '
            f'top-1 choice\'s), means over {len(result.targets)} targets with 95% bootstrap intervals over targets; '
            f'"ranker - method" is the paired difference (positive NDCG, negative regret: the ranker is better).</p>']
    rows = []
    for r in summary_rows(result):
        rows.append([_label(r["method"]), _ci(r, "ndcg"), _ci(r, "ranker_minus_ndcg"), _ci(r, "regret"),
                     _ci(r, "ranker_minus_regret"), r["top1_hits"]])
    body.append(table_html(["method", f"NDCG@{k}", f"ranker - method (NDCG@{k})", "regret", "ranker - method (regret)",
                            "top-1 = best"], rows))
    body.append("<h2>Feature importances</h2>")
    body.append(bar_chart_svg("share of split gain (ranker trained on every target)",
                              sorted(result.importances.items(), key=lambda kv: -kv[1])))
    if result.missing:
        from xling.data.typology import MIN_SHARED_FEATURES

        body.append(f'<p class="muted">URIEL pairs without a distance (fewer than {MIN_SHARED_FEATURES} shared '
                    f'features; left missing, not imputed): {esc(json.dumps(result.missing))}</p>')
    for t, rec in result.recommendations.items():
        body.append(f"<h2>Sources for {esc(t)}</h2><p class=\"muted\">{esc(rec['mode'])}; features "
                    f"{esc(', '.join(rec['features']))}</p>")
        body.append(table_html(["rank", "source", "ranker score", "true score", "what drove it (value, contribution)"],
                               [[rank_label(r), r["source"], r["score"], r.get("true", ""), r["drivers"]]
                                for r in rec["ranking"]], left_cols=2))
    return page(f"xling rank: {result.task}", "".join(body))


def format_summary(result: RankResult) -> str:
    k = result.loto.k
    lines = [f"{'method':42s} {'NDCG@' + str(k):>22s} {'regret':>22s}  top-1=best"]
    for r in summary_rows(result):
        lines.append(f"{_label(r['method'])[:42]:42s} {_ci(r, 'ndcg'):>22s} {_ci(r, 'regret'):>22s}  "
                     f"{r['top1_hits']}/{len(result.targets)}")
    singles = [r for r in summary_rows(result) if r["method"].startswith("feature:") and r["ndcg"] == r["ndcg"]]
    if singles and "ranker" in result.loto.summary:
        best = max(singles, key=lambda r: r["ndcg"])
        ref = result.loto.summary[f"always:{result.reference}"]
        lines.append("")
        lines.append(f"ranker - best single feature ({best['method'].split(':', 1)[1]}): NDCG@{k} "
                     f"{_ci(best, 'ranker_minus_ndcg')}, regret {_ci(best, 'ranker_minus_regret')}")
        lines.append(f"ranker - always {result.reference}: NDCG@{k} {_ci(ref, 'ranker_minus_ndcg')}, "
                     f"regret {_ci(ref, 'ranker_minus_regret')}")
    top = sorted(result.importances.items(), key=lambda kv: -kv[1])[:5]
    lines.append("feature importances (gain share): " + ", ".join(f"{f} {v:.2f}" for f, v in top))
    for t, rec in result.recommendations.items():
        lines.append("")
        lines.append(f"sources for {t} ({rec['mode']}):")
        for r in rec["ranking"][:5]:
            true = f" (true {r['true']:.3f})" if "true" in r else ""
            lines.append(f"  {rank_label(r)}. {r['source']}{true}: {r['drivers']}")
    return "\n".join(lines)


__all__ = ["RankConfig", "RankResult", "load_matrix", "rank_sources", "recommend", "format_summary"]
