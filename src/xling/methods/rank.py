"""Ranking source languages for a target: LangRank-style learning to rank (pure functions).

LangRank (Lin et al. 2019, "Choosing Transfer Languages for Cross-Lingual
Learning", ACL) treats the choice of a transfer (source) language as ranking:
for each target, the candidate sources are ranked from features of the
(source, target) pair, by a gradient-boosted LambdaRank model (Burges 2010,
"From RankNet to LambdaRank to LambdaMART"; LightGBM, Ke et al. 2017), and
judged by NDCG@3 against the true transfer scores. This module has:

* :func:`relevance`: LangRank's graded relevance from the true scores of a
  target's candidates: the best source gets ``top`` (10), the next ``top - 1``,
  ..., sources ranked below ``top`` get 0; tied scores share the better rank.
* :func:`ndcg_at_k` with exponential gain ``2**rel - 1`` and ``1/log2(i + 1)``
  discount (Järvelin & Kekäläinen 2002; the gain LightGBM's lambdarank optimises),
  and :func:`regret`: best candidate's score minus the score of the top-1 choice.
* :class:`LambdaRanker`: LightGBM ``lambdarank`` (seeded, deterministic, one
  thread), with gain feature importances and per-prediction contributions
  (``pred_contrib``: TreeSHAP, Lundberg et al. 2020) to say what drove a ranking.
* baselines: every single feature (distances ascending, similarities descending,
  missing values last), "always the reference source" (English first, the other
  sources by their mean score on the training targets), and "best on average"
  (sources by mean score over the training targets).
* :func:`evaluate_loto`: leave-one-target-out. A held-out target has no
  labelled data, so it is removed as a candidate source everywhere in its fold;
  the ranker is trained on the other targets' rankings only. NDCG@k and regret
  per target, means with percentile bootstrap CIs over targets, and the paired
  bootstrap difference of the ranker to every baseline (same target resamples;
  :func:`xling.methods.stats.nanmean_interval`).

Missing feature values (NaN; e.g. URIEL has no shared phonological features for a
pair) are not imputed: LightGBM sends them down the branch learned for missing
values and single-feature baselines rank them last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from xling.errors import XlingError
from xling.methods.stats import Resampler, nanmean_interval

#: Feature -> +1 when a higher value should mean a better source, -1 when lower is better (distances).
FEATURE_DIRECTION: dict[str, int] = {
    "uriel_syntactic": -1, "uriel_phonological": -1, "uriel_inventory": -1, "uriel_genetic": -1,
    "uriel_geographic": -1, "uriel_featural": -1,
    "mexa": 1, "retrieval_src2tgt": 1, "retrieval_tgt2src": 1, "token_overlap": 1,
    "source_train_tokens": 1, "source_train_examples": 1,
}

#: Features that need no text of the target (the typology-only fallback for a target without parallel text).
TYPOLOGY_FEATURES = ("uriel_syntactic", "uriel_phonological", "uriel_inventory", "uriel_genetic",
                     "uriel_geographic", "uriel_featural", "source_train_tokens", "source_train_examples")

DEFAULT_PARAMS = {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 3}
"""LightGBM settings: 100 rounds, 8 leaves, at least 3 rows a leaf (a few hundred rows per fold)."""


def relevance(scores: Mapping[str, float], top: int = 10) -> dict[str, int]:
    """LangRank's graded relevance: ``max(0, top + 1 - rank)``, rank 1 = best score, ties share the better rank."""
    if top < 1:
        raise XlingError(f"relevance: top must be at least 1, got {top}")
    vals = list(scores.values())
    return {s: max(0, top - sum(1 for w in vals if w > v)) for s, v in scores.items()}


def ndcg_at_k(ranked: Sequence[str], rel: Mapping[str, float], k: int = 3) -> float:
    """NDCG@k of the ranking ``ranked`` under graded relevance ``rel`` (gain 2**rel - 1); NaN if no gain exists."""
    if k < 1:
        raise XlingError(f"NDCG: k must be at least 1, got {k}")

    def dcg(gains):
        return sum((2.0 ** g - 1) / math.log2(i + 2) for i, g in enumerate(gains[:k]))

    ideal = dcg(sorted(rel.values(), reverse=True))
    if ideal <= 0:
        return float("nan")
    return dcg([rel[s] for s in ranked]) / ideal


def regret(ranked: Sequence[str], scores: Mapping[str, float]) -> float:
    """Best candidate's score minus the score of the top-1 choice (0 when the choice is the best)."""
    if not ranked:
        raise XlingError("regret: no candidates")
    return float(max(scores[s] for s in ranked) - scores[ranked[0]])


def _order(cands: Sequence[str], key: Mapping[str, float], direction: int = 1) -> list[str]:
    """Candidates by ``key`` (``direction`` -1: ascending), NaN last, ties by name."""
    def k(s):
        v = key.get(s, float("nan"))
        return (v != v, -direction * (v if v == v else 0.0), s)

    return sorted(cands, key=k)


def rank_by_feature(cands: Sequence[str], feats: Mapping[str, Mapping[str, float]], name: str) -> list[str]:
    """Single-feature baseline: candidates by one feature in its :data:`FEATURE_DIRECTION`."""
    return _order(cands, {s: feats[s].get(name, float("nan")) for s in cands}, FEATURE_DIRECTION.get(name, 1))


def rank_reference_first(cands: Sequence[str], reference: str, mean_scores: Mapping[str, float]) -> list[str]:
    """"Always English": the reference source first, the others by their mean score on the training targets."""
    rest = _order([s for s in cands if s != reference], mean_scores)
    return ([reference] if reference in cands else []) + rest


class LambdaRanker:
    """LightGBM LambdaRank over pair features (needs the ``rank`` extra)."""

    def __init__(self, features: Sequence[str], seed: int = 0, top: int = 10, **params):
        from xling.deps import require

        self.lgb = require("lightgbm", "the source-language ranker (LightGBM lambdarank)")
        self.features = list(features)
        self.seed = seed
        self.top = top
        self.params = {**DEFAULT_PARAMS, **params}
        self.model = None
        self.constant = False

    def _x(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        return np.array([[float(r.get(f, float("nan"))) for f in self.features] for r in rows], dtype=float)

    def fit(self, groups: Sequence[tuple[Mapping[str, Mapping[str, float]], Mapping[str, float]]]) -> "LambdaRanker":
        """``groups``: one (features[src], scores[src]) pair per training target."""
        X, y, sizes = [], [], []
        for feats, scores in groups:
            cands = sorted(scores)
            if len(cands) < 2:
                continue
            rel = relevance({s: scores[s] for s in cands}, self.top)
            X.append(self._x([feats[s] for s in cands]))
            y.extend(rel[s] for s in cands)
            sizes.append(len(cands))
        if not sizes:
            raise XlingError("ranker: no training target with two or more candidate sources")
        X = np.vstack(X)
        if np.all(np.isnan(X)) or len(set(y)) < 2:
            self.constant = True  # nothing to learn from: every candidate scores the same
            return self
        p = dict(self.params)
        params = {"objective": "lambdarank", "learning_rate": p.pop("learning_rate"), "num_leaves": p.pop("num_leaves"),
                  "min_data_in_leaf": p.pop("min_child_samples"), "seed": self.seed, "deterministic": True,
                  "force_row_wise": True, "num_threads": 1, "verbose": -1,
                  "label_gain": [2.0 ** i - 1 for i in range(self.top + 1)], **p}
        rounds = params.pop("n_estimators")
        data = self.lgb.Dataset(X, label=np.array(y, dtype=float), group=sizes, feature_name=self.features,
                                params={"verbose": -1})
        self.model = self.lgb.train(params, data, num_boost_round=rounds)
        return self

    def predict(self, feats: Mapping[str, Mapping[str, float]], cands: Sequence[str]) -> dict[str, float]:
        if self.constant:
            return {s: 0.0 for s in cands}
        return dict(zip(cands, self.model.predict(self._x([feats[s] for s in cands])).tolist()))

    def contributions(self, feats: Mapping[str, Mapping[str, float]], cands: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per candidate, each feature's additive contribution to its score (TreeSHAP)."""
        if self.constant:
            return {s: {f: 0.0 for f in self.features} for s in cands}
        c = self.model.predict(self._x([feats[s] for s in cands]), pred_contrib=True)
        return {s: dict(zip(self.features, row[:-1].tolist())) for s, row in zip(cands, c)}

    def rank(self, feats, cands) -> list[str]:
        return _order(cands, self.predict(feats, cands))

    def importances(self) -> dict[str, float]:
        """Total split gain of each feature, as a share of all gain (0 for an unused feature)."""
        if self.constant:
            return {f: 0.0 for f in self.features}
        gain = self.model.feature_importance(importance_type="gain")
        total = float(gain.sum())
        return {f: (float(g) / total if total > 0 else 0.0) for f, g in zip(self.features, gain)}


@dataclass
class LotoResult:
    """Leave-one-target-out results: ``per_target[method][target] = {ndcg, regret, choice, best, ranking}``."""

    per_target: dict[str, dict[str, dict]]
    summary: dict[str, dict[str, float]]
    k: int
    methods: list[str] = field(default_factory=list)


def evaluate_loto(
    scores: Mapping[str, Mapping[str, float]], features: Mapping[str, Mapping[str, Mapping[str, float]]],
    feature_names: Sequence[str], reference: str, *, k: int = 3, top: int = 10, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95, ranker: bool = True, params: Mapping | None = None,
) -> LotoResult:
    """Leave-one-target-out evaluation of the ranker and every baseline.

    ``scores[tgt][src]``: the transfer matrix (higher is better); ``features[tgt][src]``:
    the pair features. A target's candidates are the sources with a score for it, the
    target itself excluded. Methods: ``ranker`` (unless ``ranker=False``),
    ``feature:NAME`` for each name, ``always:REFERENCE``, ``best-on-average``.
    """
    targets = sorted(t for t in scores if len([s for s in scores[t] if s != t]) >= 2)
    if len(targets) < 3:
        raise XlingError(f"leave-one-target-out ranking needs at least 3 targets with 2+ candidate sources, "
                         f"got {len(targets)}")
    methods = (["ranker"] if ranker else []) + [f"feature:{f}" for f in feature_names] + \
        [f"always:{reference}", "best-on-average"]
    per: dict[str, dict[str, dict]] = {m: {} for m in methods}
    for t in targets:
        cands = sorted(s for s in scores[t] if s != t)
        others = [u for u in scores if u != t]
        train_scores = {u: {s: v for s, v in scores[u].items() if s not in (u, t)} for u in others}
        mean_scores = {s: float(np.mean([train_scores[u][s] for u in others if s in train_scores[u]]))
                       for s in cands if any(s in train_scores[u] for u in others)}
        rankings = {}
        if ranker:
            r = LambdaRanker(feature_names, seed=seed, top=top, **(params or {}))
            r.fit([(features[u], train_scores[u]) for u in others if u in features])
            rankings["ranker"] = r.rank(features[t], cands)
        for f in feature_names:
            rankings[f"feature:{f}"] = rank_by_feature(cands, features[t], f)
        rankings[f"always:{reference}"] = rank_reference_first(cands, reference, mean_scores)
        rankings["best-on-average"] = _order(cands, mean_scores)
        sc = {s: scores[t][s] for s in cands}
        rel = relevance(sc, top)
        best = max(cands, key=lambda s: (sc[s], s))
        for m, ranked in rankings.items():
            per[m][t] = {"ndcg": ndcg_at_k(ranked, rel, k), "regret": regret(ranked, sc), "choice": ranked[0],
                         "best": best, "ranking": ranked}
    idx = Resampler(seed).draw(len(targets), n_boot)
    summary: dict[str, dict[str, float]] = {}
    for m in methods:
        row = {}
        for stat in ("ndcg", "regret"):
            vals = np.array([per[m][t][stat] for t in targets], dtype=float)
            row[stat], row[f"{stat}_lo"], row[f"{stat}_hi"] = nanmean_interval(vals, idx, level)
            if ranker and m != "ranker":
                diff = np.array([per["ranker"][t][stat] for t in targets], dtype=float) - vals
                row[f"ranker_minus_{stat}"], row[f"ranker_minus_{stat}_lo"], row[f"ranker_minus_{stat}_hi"] = \
                    nanmean_interval(diff, idx, level)
        row["top1_hits"] = sum(per[m][t]["choice"] == per[m][t]["best"] for t in targets)
        summary[m] = row
    return LotoResult(per, summary, k, methods)


__all__ = ["FEATURE_DIRECTION", "TYPOLOGY_FEATURES", "relevance", "ndcg_at_k", "regret", "rank_by_feature",
           "rank_reference_first", "LambdaRanker", "LotoResult", "evaluate_loto"]
