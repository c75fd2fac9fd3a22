"""Predicting per-language task scores from cross-lingual alignment (pure functions).

MEXA (Kargaran et al. 2024) showed that how well a language's sentence
embeddings align with English predicts how well a model does on that language
(mean Pearson r = 0.90 over 9 models between MEXA and Belebele / m-MMLU / m-ARC).
This module fits ``score_L ~ f(alignment_L)`` across languages and measures
how well it predicts a language it has not seen:

* candidates: ways to reduce per-layer alignment to one number per language:
  the mean over layers, the max over layers (the two MEXA aggregations), and
  each single layer;
* predictors: ``linear`` (least squares, score = a * alignment + b) and
  ``isotonic`` (monotone non-decreasing, pool-adjacent-violators, linear
  interpolation between fitted points, constant beyond them);
* honest evaluation: leave-one-language-out (LOLO). For each held-out
  language the candidate is chosen by an inner LOLO over the *other*
  languages only (nested selection: the held-out language never influences
  which layer is used), the predictor is fitted on the others, and the held-out
  score is predicted;
* Pearson, Spearman and MAE between LOLO predictions and the true scores, with
  seeded percentile bootstrap confidence intervals over languages (resampling
  languages with replacement; resamples where a correlation is undefined are
  skipped);
* the final predictor (candidate chosen by LOLO on all known languages, fitted
  on all of them) predicts languages that have alignment but no task data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from xling.errors import XlingError
from xling.methods.stats import bootstrap_ci, mae, pearson, spearman
from xling.registry import Registry, registry_of

#: The predictors of ``score ~ f(alignment)`` by name: classes with ``fit(x, y)`` and ``predict(x)``.
MODELS = Registry(kind="predictor", ordered=True, unknown="unknown predictor {name!r}{hint} (use {known})")
MODELS.register("linear", "xling.methods.predict:LinearPredictor")
MODELS.register("isotonic", "xling.methods.predict:IsotonicPredictor")


# ----------------------------------------------------------------------------- statistics


#: Agreement of predicted and measured scores by name: ``f(predicted, measured) -> float``.
STATS = registry_of("statistic", {"pearson": pearson, "spearman": spearman, "mae": lambda a, b: mae(b, a)})


# ----------------------------------------------------------------------------- predictors


class LinearPredictor:
    """Least squares ``y = a x + b`` (a constant when x does not vary)."""

    def fit(self, x, y) -> "LinearPredictor":
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        vx = ((x - x.mean()) ** 2).sum()
        self.a = float(((x - x.mean()) * (y - y.mean())).sum() / vx) if vx > 0 else 0.0
        self.b = float(y.mean() - self.a * x.mean())
        return self

    def predict(self, x) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) + self.b


class IsotonicPredictor:
    """Monotone non-decreasing fit by pool-adjacent-violators; linear interpolation, clamped ends."""

    def fit(self, x, y) -> "IsotonicPredictor":
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        order = np.lexsort((y, x))
        xs, ys = x[order], y[order]
        # merge equal x first (their mean), then pool violators
        ux, inv = np.unique(xs, return_inverse=True)
        sums = np.bincount(inv, weights=ys)
        counts = np.bincount(inv).astype(float)
        blocks: list[list[float]] = []  # [sum, count, first index, last index]
        for i in range(len(ux)):
            blocks.append([sums[i], counts[i], i, i])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                s, c, _, last = blocks.pop()
                blocks[-1][0] += s
                blocks[-1][1] += c
                blocks[-1][3] = last
        fitted = np.empty(len(ux))
        for s, c, a, b in blocks:
            fitted[int(a) : int(b) + 1] = s / c
        self.x_, self.y_ = ux, fitted
        return self

    def predict(self, x) -> np.ndarray:
        return np.interp(np.asarray(x, dtype=float), self.x_, self.y_)


def make_predictor(name: str):
    return MODELS.get(name)()


# ----------------------------------------------------------------------------- candidates


def candidates(per_layer: Mapping[str, Mapping[int, float]], which: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """``{candidate: {lang: value}}`` from ``{lang: {layer: value}}``.

    Candidates: ``mean`` and ``max`` over the layers every language has, and
    ``layer:<k>`` for each such layer. ``which`` keeps some (e.g. ``["mean"]``,
    ``["layer:6"]``); default all.
    """
    if not per_layer:
        raise XlingError("no alignment scores")
    layers = sorted(set.intersection(*(set(v) for v in per_layer.values())))
    if not layers:
        raise XlingError("the languages share no layer of alignment scores")
    out: dict[str, dict[str, float]] = {
        "mean": {lang: float(np.mean([v[k] for k in layers])) for lang, v in per_layer.items()},
        "max": {lang: float(np.max([v[k] for k in layers])) for lang, v in per_layer.items()},
    }
    for k in layers:
        out[f"layer:{k}"] = {lang: float(v[k]) for lang, v in per_layer.items()}
    if which is not None:
        unknown = [w for w in which if w not in out]
        if unknown:
            raise XlingError(f"unknown alignment aggregation {unknown[0]!r} "
                             f"(available: mean, max, layer:{layers[0]}..layer:{layers[-1]})")
        out = {w: out[w] for w in which}
    return out


def lolo_mae(x: np.ndarray, y: np.ndarray, model: str = "linear") -> float:
    """Mean absolute leave-one-out error of ``model`` fitted on the others."""
    n = len(x)
    if n < 3:
        return float("nan")
    errs = []
    for i in range(n):
        m = np.ones(n, dtype=bool)
        m[i] = False
        p = make_predictor(model).fit(x[m], y[m]).predict(x[i : i + 1])[0]
        errs.append(abs(p - y[i]))
    return float(np.mean(errs))


def select_candidate(X: Mapping[str, np.ndarray], y: np.ndarray, model: str = "linear") -> tuple[str, dict[str, float]]:
    """The candidate with the lowest LOLO MAE on (X, y); ties go to the first in order. Also all MAEs."""
    errs = {c: lolo_mae(np.asarray(x, dtype=float), y, model) for c, x in X.items()}
    best = min(errs, key=lambda c: (errs[c] if errs[c] == errs[c] else float("inf")))
    return best, errs


def nested_lolo(X: Mapping[str, np.ndarray], y: np.ndarray, model: str = "linear") -> tuple[np.ndarray, list[str]]:
    """Honest LOLO predictions: for each held-out language, the candidate is chosen on the others only."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 4:
        raise XlingError(f"need at least 4 languages with both alignment and task scores, got {n}")
    preds = np.empty(n)
    chosen = []
    for i in range(n):
        m = np.ones(n, dtype=bool)
        m[i] = False
        best, _ = select_candidate({c: np.asarray(x, dtype=float)[m] for c, x in X.items()}, y[m], model)
        xb = np.asarray(X[best], dtype=float)
        preds[i] = make_predictor(model).fit(xb[m], y[m]).predict(xb[i : i + 1])[0]
        chosen.append(best)
    return preds, chosen


# ----------------------------------------------------------------------------- the whole procedure


@dataclass
class Prediction:
    """What :func:`predict_scores` found. ``known``/``unknown``: languages with / without task scores."""

    model: str
    known: list[str]
    unknown: list[str]
    y: dict[str, float]
    lolo_pred: dict[str, float]
    fold_choice: dict[str, str]
    chosen: str
    chosen_lolo_mae: dict[str, float]
    x_chosen: dict[str, float]
    predicted: dict[str, float]
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    #: MEXA's own predictor: the alignment averaged over layers, per known language
    x_mean: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        s = self.stats
        parts = []
        for k in ("pearson", "spearman", "mae"):
            v = s["lolo"][k]
            lo, hi = s["lolo"][f"{k}_ci"]
            parts.append(f"{k} {v:.3f} [{lo:.3f}, {hi:.3f}]")
        return (f"LOLO ({self.model}, nested choice of aggregation) over {len(self.known)} languages: "
                + ", ".join(parts) + f"; final aggregation {self.chosen}")


def predict_scores(
    alignment: Mapping[str, Mapping[int, float]],
    scores: Mapping[str, float],
    model: str = "linear",
    which: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Prediction:
    """Fit, evaluate (nested LOLO + bootstrap CIs) and apply ``score ~ f(alignment)``.

    ``alignment``: ``{lang: {layer: value}}`` (e.g. MEXA per layer);
    ``scores``: ``{lang: task score}``. Languages in both are used for fitting
    and evaluation; languages with alignment only are predicted.
    """
    if model not in MODELS:
        raise MODELS.unknown(model)
    cands = candidates(alignment, which)
    known = sorted(lang for lang in scores if lang in alignment and scores[lang] == scores[lang])
    unknown = sorted(lang for lang in alignment if lang not in scores)
    if len(known) < 4:
        raise XlingError(f"need at least 4 languages with both alignment and task scores, got {len(known)} "
                         f"({', '.join(known) or 'none'})")
    y = np.array([scores[lang] for lang in known], dtype=float)
    X = {c: np.array([v[lang] for lang in known]) for c, v in cands.items()}
    preds, chosen_per_fold = nested_lolo(X, y, model)
    best, errs = select_candidate(X, y, model)
    final = make_predictor(model).fit(X[best], y)
    predicted = {lang: float(final.predict([cands[best][lang]])[0]) for lang in unknown}

    def block(a: np.ndarray, b: np.ndarray, salt: int) -> dict[str, float]:
        out = {}
        for k, fn in STATS.items():
            out[k] = fn(a, b)
            out[f"{k}_ci"] = bootstrap_ci(a, b, fn, n_boot, seed + salt, level)
        return out

    stats = {
        # honest: LOLO predictions (nested selection) against the truth
        "lolo": block(preds, y, 0),
        # descriptive: the chosen aggregation against the truth, all languages (selection not held out)
        "in_sample": {k: v for k, v in block(X[best], y, 1).items() if not k.startswith("mae")},
        # MEXA's reporting: mean over layers against the truth, no selection at all
        "mean_layers": {k: v for k, v in block(X["mean"], y, 2).items() if not k.startswith("mae")} if "mean" in X else {},
    }
    stats["n_languages"] = {"known": len(known), "unknown": len(unknown)}
    stats["level"] = {"ci": level, "n_boot": n_boot, "seed": seed}
    fit = {"a": getattr(final, "a", None), "b": getattr(final, "b", None)} if model == "linear" else {
        "x": final.x_.tolist(), "y": final.y_.tolist()}
    return Prediction(
        model=model, known=known, unknown=unknown, y=dict(zip(known, y.tolist())),
        lolo_pred=dict(zip(known, preds.tolist())), fold_choice=dict(zip(known, chosen_per_fold)),
        chosen=best, chosen_lolo_mae=errs, x_chosen={lang: cands[best][lang] for lang in [*known, *unknown]},
        predicted=predicted, stats=stats, fit=fit,
        x_mean={lang: cands["mean"][lang] for lang in known} if "mean" in cands else {},
    )


__all__ = ["LinearPredictor", "IsotonicPredictor", "make_predictor", "candidates", "lolo_mae", "select_candidate",
           "nested_lolo", "predict_scores", "Prediction", "MODELS"]
