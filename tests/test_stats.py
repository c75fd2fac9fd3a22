"""xling.methods.stats, the one home of intervals and bootstraps: against scipy and closed forms, and the
invariances a bootstrap must have."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from scipy import stats as sp

from xling.errors import XlingError
from xling.methods import stats as S


# ----------------------------------------------------------------------------- t quantile and the regression band


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 10, 30, 100, 1000])
@pytest.mark.parametrize("p", [0.55, 0.6, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_scipy(p, df):
    assert S.t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-6, abs=1e-9)


def test_t_quantile_is_exact_for_one_and_two_degrees_of_freedom_and_rejects_zero():
    assert S.t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-15)
    assert S.t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-15)
    assert S.t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    assert S.t_quantile(0.1, 7) == pytest.approx(-S.t_quantile(0.9, 7), rel=1e-12)
    with pytest.raises(ValueError, match="df"):
        S.t_quantile(0.975, 0)


@pytest.mark.parametrize("n, level", [(3, 0.95), (12, 0.95), (40, 0.9)])
def test_fit_line_band_is_the_closed_form_confidence_band_of_the_mean(n, level):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = 2 * x + rng.normal(size=n)
    out = S.fit_line_ci(x, y, level=level, points=7)
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    a = ((x - xm) * (y - ym)).sum() / sxx
    b = ym - a * xm
    assert out["a"] == pytest.approx(a) and out["b"] == pytest.approx(b) and out["n"] == n and out["note"] == ""
    fit = sp.linregress(x, y)
    assert out["a"] == pytest.approx(fit.slope) and out["b"] == pytest.approx(fit.intercept)
    s = math.sqrt(((y - (a * x + b)) ** 2).sum() / (n - 2))
    t = sp.t.ppf(0.5 + level / 2, n - 2)
    assert out["x"] == pytest.approx(np.linspace(x.min(), x.max(), 7).tolist())
    for g, lo, hi in zip(out["x"], out["lo"], out["hi"]):
        half = t * s * math.sqrt(1 / n + (g - xm) ** 2 / sxx)
        assert lo == pytest.approx(a * g + b - half, rel=1e-6, abs=1e-9)
        assert hi == pytest.approx(a * g + b + half, rel=1e-6, abs=1e-9)


def test_fit_line_without_a_band_says_why():
    two = S.fit_line_ci([0, 1], [0, 1])
    assert "2 points" in two["note"] and two["a"] == pytest.approx(1) and two["lo"] == []
    for xs, ys, why in [([1], [1], "only 1 point"), ([], [], "only 0 points"), ([1, 1, 1], [0, 1, 2], "x values")]:
        out = S.fit_line_ci(xs, ys)
        assert out["a"] is None and why in out["note"]
    # NaN and inf pairs are dropped before fitting
    assert S.fit_line_ci([0, 1, float("nan"), 2, float("inf")], [0, 1, 5, 2, 3])["n"] == 3


# ----------------------------------------------------------------------------- proportions and spread


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (57, 200), (999, 1000)])
def test_wilson_matches_the_closed_form(k, n):
    z = sp.norm.ppf(0.975)
    assert S.Z95 == pytest.approx(z, rel=1e-15)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = S.wilson_interval(k, n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert 0 <= lo <= p + 1e-12 and p - 1e-12 <= hi <= 1  # at p = 1 the upper end rounds to 1 - 1e-16


def test_wilson_with_no_trials_gives_the_callers_empty_value():
    assert S.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = S.wilson_interval(0, 0, empty=(math.nan, math.nan))
    assert math.isnan(lo) and math.isnan(hi)
    assert S.wilson_interval(12, 10) == S.wilson_interval(10, 10)  # a share above 1 is clamped


def test_at_chance():
    assert S.at_chance(0.52, 50, 2) and not S.at_chance(0.9, 50, 2)
    assert not S.at_chance(None, 50, 2) and not S.at_chance(float("nan"), 50, 2)
    assert not S.at_chance(0.5, 50, 1) and not S.at_chance(0.5, 0, 2)


def test_mean_sd_and_quartiles():
    vals = [0.3, 0.5, 0.4, 0.9]
    m, sd = S.mean_sd(vals)
    assert m == pytest.approx(statistics.mean(vals)) and sd == pytest.approx(statistics.stdev(vals))
    assert S.mean_sd([0.7]) == (0.7, None)
    with pytest.raises(ValueError):
        S.mean_sd([])
    for v in ([3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 4.0, 2.0, 8.0, 0.5]):
        assert S.quartiles(v) == pytest.approx(tuple(np.quantile(v, [0.25, 0.5, 0.75])))
    assert all(math.isnan(q) for q in S.quartiles([]))


# ----------------------------------------------------------------------------- correlations


def test_correlations_match_scipy_with_ties():
    x = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 7.0, 7.0, 7.0, 0.5]
    y = [2.0, 1.0, 4.0, 4.0, 6.0, 9.0, 8.0, 8.0, 1.0, 3.0]
    assert S.pearson(x, y) == pytest.approx(sp.pearsonr(x, y)[0], abs=1e-12)
    assert S.spearman(x, y) == pytest.approx(sp.spearmanr(x, y)[0], abs=1e-12)
    assert list(S.rankdata(x)) == list(sp.rankdata(x))
    assert S.pearson(x, y, sums="python") == pytest.approx(S.pearson(x, y), abs=1e-12)
    assert S.mae([1, 2], [2, 4]) == 1.5 and math.isnan(S.mae([], []))


def test_correlations_undefined_and_error_paths():
    assert math.isnan(S.pearson([1], [2])) and math.isnan(S.pearson([1, 1, 1], [1, 2, 3]))
    assert S.pearson([1, 2], [3, 5]) == pytest.approx(1.0)
    assert math.isnan(S.pearson([1, 2], [3, 5], min_points=3, sums="python"))
    assert math.isnan(S.pearson([1, 2, 3], [4, 4, 4], sums="python"))
    with pytest.raises(ValueError, match="sums"):
        S.pearson([1, 2, 3], [1, 2, 3], sums="fast")


# ----------------------------------------------------------------------------- resampling and percentile intervals


def test_resampler_is_the_seeded_generator_of_its_kind():
    a, b = S.Resampler(5), np.random.default_rng(5)
    assert np.array_equal(a.draw(7), b.integers(0, 7, 7)) and np.array_equal(a.draw(4, 3), b.integers(0, 4, (3, 4)))
    t, g = S.Resampler(5, "torch"), torch.Generator().manual_seed(5)
    assert torch.equal(t.draw(7), torch.randint(0, 7, (7,), generator=g))
    assert torch.equal(t.draw(4, 3), torch.randint(0, 4, (3, 4), generator=g))
    with pytest.raises(ValueError, match="generator"):
        S.Resampler(0, "jax")


def test_percentile_interval_tails_and_backends():
    v = np.arange(1001, dtype=float)
    assert S.percentile_interval(v, 0.9) == pytest.approx((50.0, 950.0))
    assert S.percentile_interval(v, tails=S.Q95) == (25.0, 975.0)
    rng = np.random.default_rng(0)
    w = rng.normal(size=333)
    assert S.percentile_interval(w, tails=S.Q95) == tuple(np.percentile(w, [2.5, 97.5]))
    assert S.percentile_interval(torch.tensor(w), tails=S.Q95) == pytest.approx(S.percentile_interval(w, tails=S.Q95))
    assert S.percentile_interval([4.0]) == (4.0, 4.0)


# ----------------------------------------------------------------------------- bootstraps


def _xy(n=20, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + rng.normal(scale=0.5, size=n)


def test_bootstrap_ci_is_seeded_and_contains_the_point():
    x, y = _xy()
    a = S.bootstrap_ci(x, y, S.pearson, n_boot=300, seed=1)
    assert a == S.bootstrap_ci(x, y, S.pearson, n_boot=300, seed=1) != S.bootstrap_ci(x, y, S.pearson, 300, seed=2)
    assert a[0] <= S.pearson(x, y) <= a[1]
    t = S.bootstrap_ci(list(x), list(y), S.pearson, 300, 1, generator="torch", min_share=0.5, tails=S.Q95)
    assert t == S.bootstrap_ci(x, y, S.pearson, 300, 1, generator="torch", min_share=0.5, tails=S.Q95) != a
    assert t[0] <= S.pearson(x, y) <= t[1]


def test_bootstrap_ci_undefined_cases():
    x, y = _xy()
    for args in ((x[:2], y[:2], S.pearson, 100), (x, y, S.pearson, 0), (x, np.ones_like(y), S.pearson, 50)):
        assert all(math.isnan(v) for v in S.bootstrap_ci(*args))
    # with 4 points some resamples are constant: fewer than min_share of them defined gives NaN
    xs, ys = [0.0, 0.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]
    assert not math.isnan(S.bootstrap_ci(xs, ys, S.pearson, 200, 0)[0])
    assert math.isnan(S.bootstrap_ci(xs, ys, S.pearson, 200, 0, min_share=0.9)[0])


def test_a_percentile_bootstrap_shifts_with_the_data_and_does_not_depend_on_the_order_in_distribution():
    rng = np.random.default_rng(7)
    d = rng.normal(size=12)
    point, lo, hi = S.bootstrap_mean_diff(list(d), reps=500, seed=0)
    p2, lo2, hi2 = S.bootstrap_mean_diff(list(d + 10.0), reps=500, seed=0)
    assert (p2, lo2, hi2) == pytest.approx((point + 10, lo + 10, hi + 10))
    # the same seed on permuted languages draws other values, but from the same distribution
    _, a_lo, a_hi = S.bootstrap_mean_diff(list(d), reps=20000, seed=0)
    _, b_lo, b_hi = S.bootstrap_mean_diff(list(d[::-1]), reps=20000, seed=0)
    assert abs(a_lo - b_lo) < 0.05 and abs(a_hi - b_hi) < 0.05
    assert lo <= point <= hi and point == pytest.approx(d.mean())


def test_bootstrap_mean_diff_edge_cases():
    p, lo, hi = S.bootstrap_mean_diff([])
    assert math.isnan(p) and lo is None and hi is None
    assert S.bootstrap_mean_diff([0.3], reps=10) == (0.3, None, None)
    assert S.bootstrap_mean_diff([0.3, 0.5], reps=0) == (pytest.approx(0.4), None, None)
    assert S.bootstrap_mean_diff([0.2, 0.2, 0.2], reps=100) == (pytest.approx(0.2), pytest.approx(0.2),
                                                                 pytest.approx(0.2))


def test_bootstrap_mean_works_on_torch_and_numpy_alike():
    d = np.array([0.1, 0.4, -0.2, 0.3, 0.0])
    lo, hi = S.bootstrap_mean(torch.tensor(d), 400, S.Resampler(0, "torch"))
    idx = torch.randint(0, 5, (400, 5), generator=torch.Generator().manual_seed(0)).numpy()
    assert (lo, hi) == pytest.approx(tuple(np.quantile(d[idx].mean(axis=1), S.Q95)))


def test_mean_over_models():
    x, y = _xy(10)
    pairs = {"m1": (x, y), "m2": (y, x[::-1])}
    point, (lo, hi) = S.mean_over_models(pairs, S.pearson, n_boot=200, seed=1)
    assert point == pytest.approx((S.pearson(x, y) + S.pearson(y, x[::-1])) / 2) and lo <= hi
    assert S.mean_over_models(pairs, S.pearson, n_boot=200, seed=1) == (point, (lo, hi))
    assert all(math.isnan(v) for v in S.mean_over_models({"m": (x[:2], y[:2])}, S.pearson, 50)[1])
    with pytest.raises(XlingError, match="no models"):
        S.mean_over_models({}, S.pearson)


def test_nanmean_interval_skips_nans():
    vals = np.array([0.2, np.nan, 0.6, 0.4])
    idx = S.Resampler(0).draw(4, 300)
    m, lo, hi = S.nanmean_interval(vals, idx)
    assert m == pytest.approx(0.4) and 0.2 <= lo <= m <= hi <= 0.6
    assert all(math.isnan(v) for v in S.nanmean_interval(np.array([np.nan, np.nan]), idx[:, :2]))


def test_paired_bootstrap_of_identical_series_has_zero_width():
    rows = [[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1]]
    study = S.bootstrap_study({"ref": rows, "same": [list(r) for r in rows]}, "ref", None, reps=200, seed=0)
    same = study["same"]
    assert same["delta"] == 0 and same["delta_lo"] == 0 and same["delta_hi"] == 0
    assert same["lang_lo"] == [0, 0, 0] and same["lang_hi"] == [0, 0, 0]
    assert study["ref"]["delta_lo"] is None  # the reference against itself: no interval
    assert S.paired_bootstrap(rows, rows, reps=50) == (0.0, 0.0, 0.0)


def test_bootstrap_study_gap_closed_and_no_resamples():
    ref = [[0, 0, 1, 0, 1, 0, 0, 1]] * 2
    mid = [[1, 0, 1, 0, 1, 1, 0, 1]] * 2
    top = [[1, 1, 1, 1, 1, 1, 0, 1]] * 2
    st = S.bootstrap_study({"ref": ref, "mid": mid, "top": top}, "ref", "top", reps=300, seed=0)
    assert st["mid"]["gap_closed"] == pytest.approx(0.5) and st["top"]["gap_closed"] == pytest.approx(1.0)
    none = S.bootstrap_study({"ref": ref, "mid": mid}, "ref", None, reps=0)
    assert none["mid"]["delta"] == pytest.approx(0.25) and none["mid"]["delta_lo"] is None


def test_cell_bootstrap_paired_difference_and_errors():
    c = {"a": {"t": np.array([1, 1, 0, 1, 0, 1], bool)}, "b": {"t": np.array([1, 1, 0, 1, 0, 1], bool)}}
    out = S.cell_bootstrap(c, "a", n_boot=100, seed=0)
    assert out["b"]["t"]["diff"] == 0 and out["b"]["t"]["diff_lo"] == 0 and out["b"]["t"]["diff_hi"] == 0
    assert out["a"]["t"]["lo"] <= out["a"]["t"]["accuracy"] <= out["a"]["t"]["hi"] and "diff" not in out["a"]["t"]
    with pytest.raises(XlingError, match="n_boot"):
        S.cell_bootstrap(c, "a", n_boot=0)
    with pytest.raises(XlingError, match="items"):
        S.cell_bootstrap({"a": {"t": np.ones(4)}, "b": {"t": np.ones(5)}}, "a", n_boot=10)


def test_delta_log_ppl_of_the_same_text_is_zero_and_shifts_with_the_loss():
    nll = torch.tensor([3.0, 5.0, 2.0, 7.0], dtype=torch.float64)
    cnt = torch.tensor([2.0, 3.0, 1.0, 4.0], dtype=torch.float64)
    assert S.delta_log_ppl((nll, cnt), (nll, cnt), reps=100, seed=0) == (0.0, 0.0, 0.0)
    point, lo, hi = S.delta_log_ppl((nll, cnt), (nll + cnt * 0.5, cnt), reps=100, seed=0)
    assert point == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
