"""Statistics for every recipe and report: intervals, bootstraps, correlations, a line with its band.

The one home of the interval code: methods, recipes and reports call these and implement none of their own.
Every bootstrap is seeded and percentile-based (linear interpolation). Two choices are part of a caller's
published numbers, so they are parameters, kept per caller (a seed gives the same interval as before):

* the generator (:class:`Resampler`): numpy's ``default_rng`` or torch's ``Generator``;
* the tails (:func:`percentile_interval`): derived from ``level`` in floating point (``(1 - 0.95) / 2`` is
  0.025000000000000022) or written out as :data:`Q95`; the two differ in the last bits.

Contents:

* proportions: :func:`wilson_interval` (Wilson 1927; Brown, Cai & DasGupta 2001), :func:`at_chance`;
* spread: :func:`mean_sd` (across seeds), :func:`quartiles`;
* correlations: :func:`pearson`, :func:`spearman` (average ranks, :func:`rankdata`), :func:`mae`;
* bootstraps: :func:`bootstrap_ci` (a statistic of paired values, the pairs resampled),
  :func:`mean_over_models` (a statistic averaged over models, each model's pairs resampled),
  :func:`bootstrap_mean` and :func:`bootstrap_mean_diff` (a mean, the values resampled),
  :func:`nanmean_interval` (a NaN-skipping mean over given resamples), :func:`bootstrap_study` and
  :func:`paired_bootstrap` (items resampled within each language, the same draw for every condition),
  :func:`cell_bootstrap` (a transfer matrix's cells, paired against a reference source),
  :func:`delta_log_ppl` (a difference of two ratios of sums, sentences resampled); :func:`defined_interval` (the
  percentile interval of the resamples where a statistic is defined);
* regression: :func:`t_quantile` (Student t without scipy) and :func:`fit_line_ci` (least squares with the
  confidence band of the mean response).

Pure functions: numbers in, numbers out; no I/O.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from xling.errors import XlingError

Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a two-sided 95% interval."""

Q95 = (0.025, 0.975)
"""The tails of a central 95% interval, written out."""


# ----------------------------------------------------------------------------- proportions and spread


def wilson_interval(successes: float, n: int, z: float = Z95,
                    empty: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` (95% for the default ``z``); ``empty`` when ``n`` is 0 or less
    (``xling langid`` passes NaNs)."""
    if n <= 0:
        return empty
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def at_chance(accuracy: float | None, n: int, num_labels: int) -> bool:
    """True when the 95% Wilson interval of ``accuracy`` over ``n`` examples contains ``1 / num_labels``.

    ``None`` (no score) or fewer than 2 labels: False (nothing to say).
    """
    if accuracy is None or num_labels < 2 or n <= 0 or accuracy != accuracy:
        return False
    lo, hi = wilson_interval(accuracy * n, n)
    chance = 1.0 / num_labels
    return lo <= chance <= hi


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``; None for fewer than 2 values)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_sd of no values")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th) percentiles, linear interpolation (numpy's default rule, in plain Python); NaNs for
    no values."""
    v = sorted(values)
    if not v:
        return (math.nan,) * 3

    def q(p):
        pos = (len(v) - 1) * p
        lo, hi = math.floor(pos), math.ceil(pos)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return q(0.25), q(0.5), q(0.75)


# ----------------------------------------------------------------------------- correlations


def pearson(x: Sequence[float], y: Sequence[float], min_points: int = 2, sums: str = "numpy") -> float:
    """Pearson r of paired values; NaN below ``min_points`` pairs or when either side is constant.

    ``sums="python"`` adds plain Python floats left to right (``xling langid``'s r, NaN below 3 points); numpy's
    pairwise sums (the default) can differ from that in the last bits from 8 points on.
    """
    if sums == "python":
        xs, ys = [float(v) for v in x], [float(v) for v in y]
        n = len(xs)
        if n < min_points:
            return math.nan
        mx, my = sum(xs) / n, sum(ys) / n
        sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
        sxx = sum((a - mx) ** 2 for a in xs)
        syy = sum((b - my) ** 2 for b in ys)
        return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan
    if sums != "numpy":
        raise ValueError(f"sums must be 'numpy' or 'python', got {sums!r}")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < min_points:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def rankdata(a: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson r of the average ranks."""
    return pearson(rankdata(x), rankdata(y))


def mae(y: Sequence[float], pred: Sequence[float]) -> float:
    """Mean absolute error of ``pred`` against ``y``; NaN for no values."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    return float(np.abs(y - pred).mean()) if len(y) else float("nan")


# ----------------------------------------------------------------------------- resampling and percentile intervals


class Resampler:
    """Seeded indices drawn with replacement; successive draws continue one stream.

    ``generator="numpy"``: numpy's ``default_rng(seed)``, draws are numpy arrays; ``"torch"``: a CPU
    ``torch.Generator`` seeded with ``seed``, draws are torch tensors.
    """

    def __init__(self, seed: int, generator: str = "numpy"):
        if generator == "numpy":
            self._rng = np.random.default_rng(seed)
        elif generator == "torch":
            self._rng = torch.Generator().manual_seed(seed)
        else:
            raise ValueError(f"generator must be 'numpy' or 'torch', got {generator!r}")
        self.generator = generator

    def draw(self, n: int, reps: int | None = None):
        """``n`` indices in ``[0, n)``; with ``reps``, ``reps`` such resamples as a ``(reps, n)`` array."""
        shape = (n,) if reps is None else (reps, n)
        if self.generator == "numpy":
            return self._rng.integers(0, n, shape)
        return torch.randint(0, n, shape, generator=self._rng)


def percentile_interval(vals, level: float = 0.95, tails: tuple[float, float] | None = None) -> tuple[float, float]:
    """The central percentile interval of bootstrap values (linear interpolation).

    ``tails``: the two quantiles (e.g. :data:`Q95`); by default ``(1 - level) / 2`` and ``1 - (1 - level) / 2``
    as computed in floating point. A torch tensor goes through ``torch.quantile`` (in its dtype), anything
    else through ``np.quantile``.
    """
    if tails is None:
        a = (1 - level) / 2
        tails = (a, 1 - a)
    if isinstance(vals, torch.Tensor):
        lo, hi = torch.quantile(vals, torch.tensor(tails, dtype=vals.dtype)).tolist()
        return lo, hi
    return float(np.quantile(vals, tails[0])), float(np.quantile(vals, tails[1]))


def defined_interval(vals, level: float = 0.95) -> tuple[float, float]:
    """:func:`percentile_interval` of the defined (non-NaN) bootstrap values; NaNs when none is defined (a
    statistic undefined on every resample, e.g. a ratio whose denominator is always 0)."""
    vals = np.asarray(vals, dtype=float)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    return percentile_interval(vals, level)


# ----------------------------------------------------------------------------- bootstraps


def bootstrap_ci(
    x: Sequence[float], y: Sequence[float], stat: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000, seed: int = 0, level: float = 0.95, *, generator: str = "numpy", min_share: float = 0.0,
    tails: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(x, y)``, resampling the pairs (languages) with replacement.

    One draw of ``len(x)`` indices per resample (:class:`Resampler` of ``generator``; with ``"torch"`` the
    quantiles are taken by torch too). Resamples where ``stat`` is NaN (e.g. a constant resample) are skipped.
    NaNs when there are fewer than 3 pairs or no resamples, or fewer defined resamples than
    ``max(1, int(n_boot * min_share))``. ``xling langid`` uses ``generator="torch"``, ``min_share=0.5``,
    ``tails=Q95``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3 or n_boot < 1:
        return float("nan"), float("nan")
    rs = Resampler(seed, generator)
    vals = []
    for _ in range(n_boot):
        idx = rs.draw(n)
        if generator == "torch":
            idx = idx.numpy()
        v = stat(x[idx], y[idx])
        if v == v:  # skip NaN (constant resample)
            vals.append(v)
    if len(vals) < max(1, int(n_boot * min_share)):
        return float("nan"), float("nan")
    if generator == "torch":
        vals = torch.tensor(vals, dtype=torch.float64)
    return percentile_interval(vals, level, tails)


def mean_over_models(
    pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    stat: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000, seed: int = 0, level: float = 0.95,
) -> tuple[float, tuple[float, float]]:
    """``stat`` averaged over models, with a percentile bootstrap CI.

    ``pairs``: ``{model: (x, y)}`` over that model's languages. MEXA (Kargaran
    et al. 2024) reports correlations averaged over models; each bootstrap
    replicate resamples every model's languages independently (with replacement)
    and averages the models' statistics, so the interval reflects the language
    sample of each model. Replicates where a model's statistic is undefined are
    skipped.
    """
    arrays = {m: (np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for m, (x, y) in pairs.items()}
    if not arrays:
        raise XlingError("no models to average over")
    point = float(np.mean([stat(x, y) for x, y in arrays.values()]))
    rs = Resampler(seed)
    vals = []
    for _ in range(n_boot):
        per = []
        for x, y in arrays.values():
            idx = rs.draw(len(x))
            per.append(stat(x[idx], y[idx]))
        v = float(np.mean(per))
        if v == v:
            vals.append(v)
    if not vals or any(len(x) < 3 for x, _ in arrays.values()):
        return point, (float("nan"), float("nan"))
    return point, percentile_interval(vals, level)


def bootstrap_mean(values, reps: int, resampler: Resampler,
                   tails: tuple[float, float] | None = Q95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (a 1-D numpy array or torch tensor, matching the
    resampler's generator) over ``reps`` resamples of the values, drawn at once as a ``(reps, n)`` array."""
    idx = resampler.draw(len(values), reps)
    return percentile_interval(values[idx].mean(axis=1), tails=tails)


def bootstrap_mean_diff(diffs: list[float], reps: int = 2000,
                        seed: int = 0) -> tuple[float, float | None, float | None]:
    """Mean of per-language differences and its 95% percentile bootstrap interval (languages resampled)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return float("nan"), None, None
    point = float(d.mean())
    if len(d) < 2 or reps <= 0:
        return point, None, None
    lo, hi = bootstrap_mean(d, reps, Resampler(seed))
    return point, lo, hi


def nanmean_interval(vals: np.ndarray, idx, level: float = 0.95) -> tuple[float, float, float]:
    """NaN-skipping mean of ``vals`` and the percentile interval of that mean over the resamples ``idx`` (rows of
    indices); resamples without a defined value are skipped. NaNs when every value is NaN."""
    ok = ~np.isnan(vals)
    if not ok.any():
        return float("nan"), float("nan"), float("nan")
    boots = np.array([np.nanmean(vals[i]) if (~np.isnan(vals[i])).any() else np.nan for i in idx])
    boots = boots[~np.isnan(boots)]
    lo, hi = percentile_interval(boots, level)
    return float(np.nanmean(vals)), lo, hi


def paired_bootstrap(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], reps: int, seed: int = 0):
    """Mean over languages of ``mean(a) - mean(b)`` (per-example correctness, paired) and a 95% CI.

    Examples are resampled within each language, the same draw for ``a`` and ``b``.
    """
    out = bootstrap_study({"a": a, "b": b}, "b", None, reps, seed)["a"]
    return out["delta"], out["delta_lo"], out["delta_hi"]


def bootstrap_study(correct: dict[str, Sequence[Sequence[int]]], ref: str, ceiling: str | None, reps: int,
                    seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap of every condition against ``ref`` (and the gap closed towards ``ceiling``).

    ``correct[cond][j]``: per-example correctness (0/1) of ``cond`` on target ``j``;
    the examples of target ``j`` are the same for every condition. One resample
    draws, per language, the same example indices for every condition, so each
    difference is paired. Returns per condition: ``delta`` (mean over targets of
    ``acc - acc_ref``) with its 95% interval, the per-target ``lang_delta`` /
    ``lang_lo`` / ``lang_hi``, and, with a ceiling, ``gap_closed`` =
    ``mean(acc - acc_ref) / mean(acc_ceiling - acc_ref)`` with its interval (None
    when the ceiling does not beat the reference).
    """
    names = list(correct)
    n_lang = len(correct[ref])
    arrays = {c: [np.asarray(x, dtype=float) for x in correct[c]] for c in names}
    point = {c: np.array([x.mean() for x in arrays[c]]) for c in names}
    rs = Resampler(seed)
    boot = {c: np.zeros((reps, n_lang)) for c in names} if reps else None
    if reps:
        for j in range(n_lang):
            idx = rs.draw(len(arrays[ref][j]), reps)
            for c in names:
                boot[c][:, j] = arrays[c][j][idx].mean(axis=1)

    def ci(v):
        return percentile_interval(v, tails=Q95)

    out = {}
    for c in names:
        d = point[c] - point[ref]
        r = {"delta": float(d.mean()), "delta_lo": None, "delta_hi": None,
             "lang_delta": [float(x) for x in d], "lang_lo": [None] * n_lang, "lang_hi": [None] * n_lang,
             "gap_closed": None, "gap_closed_lo": None, "gap_closed_hi": None}
        if reps and c != ref:
            bd = boot[c] - boot[ref]
            r["delta_lo"], r["delta_hi"] = ci(bd.mean(axis=1))
            for j in range(n_lang):
                r["lang_lo"][j], r["lang_hi"][j] = ci(bd[:, j])
        if ceiling is not None and c != ref:
            gap = float((point[ceiling] - point[ref]).mean())
            if gap > 0:
                r["gap_closed"] = r["delta"] / gap
                if reps:
                    g = (boot[ceiling] - boot[ref]).mean(axis=1)
                    ok = g > 0
                    if ok.mean() > 0.95:
                        r["gap_closed_lo"], r["gap_closed_hi"] = ci(bd.mean(axis=1)[ok] / g[ok])
        out[c] = r
    return out


def cell_bootstrap(
    correct: Mapping[str, Mapping[str, np.ndarray]], reference: str | None, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95, shared: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy, its CI, and the paired difference to the ``reference`` source, per cell.

    ``correct[src][tgt]``: boolean array over the target's test items (1 = right).
    Items are resampled with replacement, ``n_boot`` times, seeded; the same
    resample of a target's items scores every source, so ``diff = acc(src, tgt) -
    acc(reference, tgt)`` is a paired bootstrap. ``shared=True`` (parallel test
    sets of equal size) uses one resample for every target. Returns
    ``out[src][tgt] = {accuracy, lo, hi, diff, diff_lo, diff_hi}`` (diff keys are
    absent without a reference or for the reference itself).
    """
    if n_boot < 1:
        raise XlingError(f"bootstrap: n_boot must be at least 1, got {n_boot}")
    sources = list(correct)
    targets = list(dict.fromkeys(t for s in sources for t in correct[s]))
    rs = Resampler(seed)
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in sources}
    common = None
    for tgt in targets:
        n = len(next(correct[s][tgt] for s in sources if tgt in correct[s]))
        if shared:
            if common is None or common.shape[1] != n:
                common = rs.draw(n, n_boot)
            idx = common
        else:
            idx = rs.draw(n, n_boot)
        boot = {}
        for s in sources:
            if tgt not in correct[s]:
                continue
            c = np.asarray(correct[s][tgt], dtype=float)
            if len(c) != n:
                raise XlingError(f"bootstrap: target {tgt} has {len(c)} items for source {s}, {n} for another")
            boot[s] = c[idx].mean(axis=1)
            lo, hi = percentile_interval(boot[s], level)
            out[s][tgt] = {"accuracy": float(c.mean()), "lo": lo, "hi": hi}
        if reference is not None and reference in boot:
            ref_c = np.asarray(correct[reference][tgt], dtype=float)
            for s in boot:
                if s == reference:
                    continue
                d = boot[s] - boot[reference]
                lo, hi = percentile_interval(d, level)
                out[s][tgt].update(diff=float(np.asarray(correct[s][tgt], dtype=float).mean() - ref_c.mean()),
                                   diff_lo=lo, diff_hi=hi)
    return out


def delta_log_ppl(base: tuple, abl: tuple, reps: int, seed: int) -> tuple[float, float, float]:
    """``log PPL_abl - log PPL_base`` on the same sentences, with a 95% paired bootstrap interval over sentences.

    ``base`` and ``abl`` are ``(nll, count)`` per sentence (torch tensors): the log perplexity is the ratio of
    the sums, so sentences are resampled (torch generator, ``seed``) and both ratios recomputed on one draw.
    """
    (nb, cb), (na, ca) = base, abl
    point = (na.sum() / ca.sum() - nb.sum() / cb.sum()).item()
    idx = Resampler(seed, "torch").draw(nb.shape[0], reps)
    boot = na[idx].sum(1) / ca[idx].sum(1) - nb[idx].sum(1) / cb[idx].sum(1)
    lo, hi = percentile_interval(boot, tails=Q95)
    return point, lo, hi


# ----------------------------------------------------------------------------- least squares with a confidence band


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile without scipy: exact for 1 and 2 degrees of freedom; otherwise the Cornish-Fisher
    expansion around the normal quantile, refined by Newton steps on the CDF (Simpson integral of the density)."""
    from statistics import NormalDist

    if df < 1:
        raise ValueError("df must be >= 1")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    n = float(df)
    t = (z + (z ** 3 + z) / (4 * n) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * n ** 2)
         + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * n ** 3))
    c = math.exp(math.lgamma((n + 1) / 2) - math.lgamma(n / 2)) / math.sqrt(n * math.pi)

    def pdf(x):
        return c * (1 + x * x / n) ** (-(n + 1) / 2)

    def cdf(x, steps=400):
        h = x / steps
        total = pdf(0) + pdf(x) + sum((4 if k % 2 else 2) * pdf(k * h) for k in range(1, steps))
        return 0.5 + total * h / 3

    for _ in range(4):
        t -= (cdf(t) - p) / pdf(t)
    return t


def fit_line_ci(xs, ys, level: float = 0.95, points: int = 40) -> dict:
    """Least-squares line ``y = a x + b`` and the ``level`` confidence band of the fitted mean.

    Returns ``{"a", "b", "n", "x", "lo", "hi", "note"}``: ``x`` a grid over the data's range and
    ``lo``/``hi`` the band there (``t_{n-2}`` times the standard error of the mean response). With two
    points the line has no band, with fewer or with one x value no line; ``note`` says so in words.
    """
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    out = {"a": None, "b": None, "n": n, "x": [], "lo": [], "hi": [], "note": ""}
    if n < 2:
        out["note"] = f"no fitted line: only {n} point{'s' if n != 1 else ''}"
        return out
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx == 0:
        out["note"] = "no fitted line: all x values are equal"
        return out
    a = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    b = float(y.mean() - a * x.mean())
    out.update(a=a, b=b)
    grid = np.linspace(x.min(), x.max(), points)
    out["x"] = grid.tolist()
    if n < 3:
        out["note"] = "only 2 points: a line through them, no confidence band"
        return out
    resid = y - (a * x + b)
    s = float(np.sqrt((resid ** 2).sum() / (n - 2)))
    t = t_quantile(0.5 + level / 2, n - 2)
    se = s * np.sqrt(1 / n + (grid - x.mean()) ** 2 / sxx)
    fit = a * grid + b
    out["lo"] = (fit - t * se).tolist()
    out["hi"] = (fit + t * se).tolist()
    return out


__all__ = ["Z95", "Q95", "wilson_interval", "at_chance", "mean_sd", "quartiles", "pearson", "rankdata", "spearman",
           "mae", "Resampler", "percentile_interval", "defined_interval", "bootstrap_ci", "mean_over_models",
           "bootstrap_mean", "bootstrap_mean_diff", "nanmean_interval", "paired_bootstrap", "bootstrap_study",
           "cell_bootstrap", "delta_log_ppl", "t_quantile", "fit_line_ci"]
