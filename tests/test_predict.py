"""Predicting task scores from alignment: statistics, nested LOLO, bootstrap CIs, inputs, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from xling.cli import main
from xling.errors import XlingError
from xling.methods import predict as P
from xling.recipes.predict.run import PredictConfig, predict
from xling.harness.store import ResultsStore

LANGS = [f"{c}_Latn" for c in ("deu", "fra", "spa", "ita", "nld", "pol", "ces", "slv", "dan", "swe", "fin", "est",
                               "hun", "tur", "ind", "vie", "cat", "glg", "eus", "por", "ron", "hrv", "slk", "lit",
                               "lav", "mlt", "gle", "cym", "isl", "afr")]


def synthetic(n=30, layers=6, informative=3, noise=1.0, seed=0):
    """y = 2 x + noise; layer ``informative`` is x, the other layers are unrelated noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2 * x + rng.normal(scale=noise, size=n)
    align = {}
    for i, lang in enumerate(LANGS[:n]):
        align[lang] = {k: float(rng.normal()) for k in range(layers)}
        align[lang][informative] = float(x[i])
    return align, {lang: float(v) for lang, v in zip(LANGS[:n], y)}, x, y


def test_statistics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.normal(size=12)
        y = x + rng.normal(size=12)
        y[3] = y[5]  # a tie
        assert P.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
        assert P.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert P.mae([1, 2], [2, 4]) == 1.5
    assert np.isnan(P.pearson([1, 1, 1], [1, 2, 3]))


def test_isotonic_matches_sklearn():
    iso = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    ours = P.IsotonicPredictor().fit(x, y)
    ref = iso.IsotonicRegression(out_of_bounds="clip").fit(x, y)
    grid = np.linspace(x.min() - 1, x.max() + 1, 50)
    assert np.allclose(ours.predict(grid), ref.predict(grid), atol=1e-9)
    assert np.allclose(ours.predict(x), ref.predict(x))


def test_known_correlation_is_recovered_and_covered():
    align, scores, x, y = synthetic(n=30, noise=1.0, seed=0)
    true_r = 2 / np.sqrt(4 + 1)  # corr(x, 2x + e), var(x) = var(e) = 1
    res = P.predict_scores(align, scores, n_boot=1000, seed=0)
    r = res.stats["in_sample"]["pearson"]
    lo, hi = res.stats["in_sample"]["pearson_ci"]
    assert abs(r - true_r) < 0.1 and lo < true_r < hi
    assert res.chosen == "layer:3"
    assert res.fit["a"] == pytest.approx(2.0, abs=0.4)
    lolo = res.stats["lolo"]
    assert lolo["pearson"] > 0.75 and lolo["pearson_ci"][0] < lolo["pearson"] < lolo["pearson_ci"][1]
    assert lolo["mae"] < 1.2  # noise sd 1: MAE of the ideal predictor ~0.8
    # seeded: same numbers again
    again = P.predict_scores(align, scores, n_boot=1000, seed=0)
    assert again.stats == res.stats


def test_ci_coverage_over_repetitions():
    true_r = 2 / np.sqrt(5)
    hits = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        x = rng.normal(size=30)
        y = 2 * x + rng.normal(size=30)
        lo, hi = P.bootstrap_ci(x, y, P.pearson, n_boot=400, seed=seed)
        hits += lo <= true_r <= hi
    assert hits >= 16  # nominal 95%; percentile bootstrap at n=30 is a little optimistic


def test_lolo_picks_the_informative_layer_among_noise():
    align, scores, _, _ = synthetic(n=24, layers=10, informative=7, noise=0.5, seed=3)
    res = P.predict_scores(align, scores, n_boot=50)
    assert res.chosen == "layer:7"
    assert sum(c == "layer:7" for c in res.fold_choice.values()) >= 22


def test_nested_selection_does_not_leak(monkeypatch):
    # pure noise: the in-sample best of 40 noise layers looks correlated, honest LOLO must not
    rng = np.random.default_rng(5)
    align = {lang: {k: float(rng.normal()) for k in range(40)} for lang in LANGS[:20]}
    scores = {lang: float(rng.normal()) for lang in LANGS[:20]}
    res = P.predict_scores(align, scores, n_boot=50, which=[f"layer:{k}" for k in range(40)])
    assert abs(res.stats["in_sample"]["pearson"]) > res.stats["lolo"]["pearson"]
    assert res.stats["lolo"]["pearson"] < 0.4
    # the held-out language never reaches the selection of its own fold
    seen = []
    real = P.select_candidate

    def spy(X, y, model="linear"):
        seen.append(set(np.round(y, 12)))
        return real(X, y, model)

    monkeypatch.setattr(P, "select_candidate", spy)
    y = np.array([scores[lang] for lang in sorted(scores)])
    X = {c: np.array([align[lang][int(c.split(':')[1])] for lang in sorted(scores)]) for c in ("layer:0", "layer:1")}
    P.nested_lolo(X, y)
    for i, s in enumerate(seen):
        assert round(y[i], 12) not in s and len(s) == len(y) - 1


def test_unknown_languages_are_predicted_and_isotonic():
    align, scores, _, _ = synthetic(n=12, seed=2)
    hidden = {k: v for k, v in scores.items() if k not in ("deu_Latn", "fra_Latn")}
    res = P.predict_scores(align, hidden, n_boot=20)
    assert res.unknown == ["deu_Latn", "fra_Latn"]
    x = res.x_chosen["deu_Latn"]
    assert res.predicted["deu_Latn"] == pytest.approx(res.fit["a"] * x + res.fit["b"])
    iso = P.predict_scores(align, hidden, model="isotonic", n_boot=20)
    assert iso.model == "isotonic" and set(iso.predicted) == {"deu_Latn", "fra_Latn"}


def test_errors():
    align, scores, _, _ = synthetic(n=3)
    with pytest.raises(XlingError, match="at least 4 languages"):
        P.predict_scores(align, scores)
    align, scores, _, _ = synthetic(n=8)
    with pytest.raises(XlingError, match="unknown alignment aggregation 'layer:99'"):
        P.predict_scores(align, scores, which=["layer:99"])
    with pytest.raises(XlingError, match="unknown predictor"):
        PredictConfig(predictor="forest")
    with pytest.raises(XlingError, match="results store not found"):
        predict(store="/nonexistent/r.sqlite", out=None)


def _write_inputs(tmp_path, n=10):
    align, scores, _, _ = synthetic(n=n, seed=4)
    with open(tmp_path / "alignment.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "corpus", "lang", "layer", "pooling", "metric", "value"])
        for lang, layers in align.items():
            for k, v in layers.items():
                w.writerow(["m", "c", lang, k, "mean", "mexa", v])
                w.writerow(["m", "c", lang, k, "mean", "cka", 0.5])
        w.writerow(["m", "c", "kor_Hang", 3, "mean", "mexa", 0.1])  # alignment only: predicted
        for k in (0, 1, 2, 4, 5):
            w.writerow(["m", "c", "kor_Hang", k, "mean", "mexa", 0.0])
    with open(tmp_path / "per_language.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lang", "name", "n", "role", "accuracy", "macro_f1"])
        for lang, v in scores.items():
            w.writerow([lang.split("_")[0], "", 10, "target", v, v])
    return align, scores


def test_cli_from_csv(tmp_path, capsys):
    _write_inputs(tmp_path)
    rc = main(["predict", "--align-csv", str(tmp_path / "alignment.csv"), "--scores-csv",
               str(tmp_path / "per_language.csv"), "--out", str(tmp_path / "pred"), "--store",
               str(tmp_path / "r.sqlite"), "--n-boot", "100"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "LOLO over 10 languages" in out and "kor_Hang" in out
    with open(tmp_path / "pred" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["status"] for r in rows} == {"known", "predicted"} and len(rows) == 11
    html = (tmp_path / "pred" / "report.html").read_text()
    assert "<svg" in html and "Spearman" in html
    run = json.loads((tmp_path / "pred" / "run.json").read_text())
    assert run["stats"]["lolo"]["pearson_ci"][0] <= run["stats"]["lolo"]["pearson"]
    store = ResultsStore(tmp_path / "r.sqlite")
    (prun,) = store.runs("predict")
    splits = {r["split"] for r in store.task_scores(prun["run_id"])}
    assert splits == {"lolo", "predicted"}


def test_from_store_picks_the_matching_runs(tmp_path):
    align, scores = synthetic(n=9, seed=6)[:2]
    store = ResultsStore(tmp_path / "r.sqlite")
    for run_id, model, corpus, scale in (("a1", "base", "task:t", 1.0), ("a2", "other", "task:t", -1.0)):
        rows = [{"model": model, "corpus": corpus, "lang": lang, "layer": k, "pooling": "mean", "metric": "mexa",
                 "value": scale * v} for lang, layers in align.items() for k, v in layers.items()]
        store.add_run({"run_id": run_id, "command": "align", "model": model, "corpus": corpus,
                       "started": "2026-01-01T00:00:0" + run_id[1]}, alignment=rows)
    trows = [{"model": "ft", "task": "t", "lang": lang, "split": "test", "metric": "accuracy", "value": v}
             for lang, v in scores.items()]
    trows.append({"model": "ft", "task": "t", "lang": "eng_Latn", "split": "test", "metric": "accuracy", "value": 0.99})
    store.add_run({"run_id": "e1", "command": "eval", "model": "ft", "corpus": "task:t", "started": "2026-01-01T00:00:09",
                   "config": {"task": "t", "base_model": "base", "source": "eng_Latn", "main_metric": "accuracy"}},
                  task_scores=trows)
    res = predict(store=tmp_path / "r.sqlite", out=None, n_boot=50)
    assert res.sources["alignment"]["run_id"] == "a1"  # the base model's run, not the latest
    assert "eng_Latn" not in res.prediction.known  # the source language is excluded
    assert res.prediction.stats["in_sample"]["pearson"] > 0.7
