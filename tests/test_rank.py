"""xling rank: NDCG and regret by hand, the LambdaRank ranker, leave-one-target-out, URIEL features, the recipe."""

import csv
import math

import numpy as np
import pytest

from xling.errors import XlingError
from xling.methods.rank import (evaluate_loto, ndcg_at_k, rank_by_feature, rank_reference_first, regret,
                                relevance)


def test_relevance_is_langranks_graded_rank():
    assert relevance({"a": 0.9, "b": 0.7, "c": 0.8}, top=10) == {"a": 10, "b": 8, "c": 9}
    assert relevance({"a": 0.9, "b": 0.9, "c": 0.1}, top=2) == {"a": 2, "b": 2, "c": 0}  # ties share the better rank
    with pytest.raises(XlingError):
        relevance({"a": 1.0}, top=0)


def test_ndcg_and_regret_against_hand_computation():
    scores = {"a": 0.50, "b": 0.80, "c": 0.60, "d": 0.70}
    rel = relevance(scores, top=3)  # b 3, d 2, c 1, a 0
    assert rel == {"b": 3, "d": 2, "c": 1, "a": 0}
    ranked = ["c", "b", "a", "d"]
    dcg = (2 ** 1 - 1) / math.log2(2) + (2 ** 3 - 1) / math.log2(3) + 0
    ideal = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rel, k=3) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["b", "d", "c", "a"], rel, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(ranked, rel, k=1) == pytest.approx(1 / 7)
    assert regret(ranked, scores) == pytest.approx(0.80 - 0.60)
    assert regret(["b", "a"], scores) == 0.0
    assert math.isnan(ndcg_at_k(["a"], {"a": 0}, k=3))


def test_baselines_order():
    feats = {"a": {"uriel_genetic": 0.2, "mexa": 0.1}, "b": {"uriel_genetic": float("nan"), "mexa": 0.9},
             "c": {"uriel_genetic": 0.1, "mexa": 0.5}}
    assert rank_by_feature(["a", "b", "c"], feats, "uriel_genetic") == ["c", "a", "b"]  # distance: ascending, NaN last
    assert rank_by_feature(["a", "b", "c"], feats, "mexa") == ["b", "c", "a"]
    assert rank_reference_first(["a", "b", "c"], "c", {"a": 0.1, "b": 0.5, "c": 0.0}) == ["c", "b", "a"]


def _synthetic(n=8, seed=0):
    """Scores driven by a 'mexa' feature (plus noise); token_overlap is noise."""
    rng = np.random.default_rng(seed)
    langs = [f"l{i}" for i in range(n)]
    scores, feats = {}, {}
    for t in langs:
        scores[t], feats[t] = {}, {}
        for s in langs:
            m = rng.random()
            feats[t][s] = {"mexa": m, "token_overlap": rng.random() * 0.5}
            scores[t][s] = 0.3 + 0.5 * m + 0.01 * rng.random()
    return langs, scores, feats


def test_loto_ranker_learns_the_informative_feature():
    pytest.importorskip("lightgbm", reason="the rank extra (lightgbm) is not installed")
    langs, scores, feats = _synthetic()
    res = evaluate_loto(scores, feats, ["mexa", "token_overlap"], "l0", n_boot=200)
    s = res.summary
    assert set(res.methods) == {"ranker", "feature:mexa", "feature:token_overlap", "always:l0", "best-on-average"}
    assert s["feature:mexa"]["ndcg"] > 0.9 and s["feature:token_overlap"]["ndcg"] < s["feature:mexa"]["ndcg"]
    assert s["ranker"]["ndcg"] > s["feature:token_overlap"]["ndcg"]
    assert s["ranker"]["ndcg_lo"] <= s["ranker"]["ndcg"] <= s["ranker"]["ndcg_hi"]
    # per-target values are NDCG/regret of the stored ranking, and the target is never its own candidate
    for t in langs:
        r = res.per_target["feature:mexa"][t]
        assert t not in r["ranking"] and len(r["ranking"]) == len(langs) - 1
        cands = {x: scores[t][x] for x in r["ranking"]}
        assert r["ndcg"] == pytest.approx(ndcg_at_k(r["ranking"], relevance(cands), 3))
        assert r["regret"] == pytest.approx(regret(r["ranking"], cands))
    d = s["feature:token_overlap"]
    assert d["ranker_minus_ndcg"] == pytest.approx(s["ranker"]["ndcg"] - d["ndcg"])
    with pytest.raises(XlingError, match="at least 3 targets"):
        evaluate_loto({t: scores[t] for t in langs[:2]}, feats, ["mexa"], "l0")


def test_ranker_is_deterministic_and_explains_itself():
    pytest.importorskip("lightgbm", reason="the rank extra (lightgbm) is not installed")
    from xling.methods.rank import LambdaRanker

    langs, scores, feats = _synthetic(seed=2)
    groups = [(feats[t], {s: v for s, v in scores[t].items() if s != t}) for t in langs[1:]]
    a = LambdaRanker(["mexa", "token_overlap"]).fit(groups)
    b = LambdaRanker(["mexa", "token_overlap"]).fit(groups)
    cands = langs[1:]
    assert a.predict(feats["l0"], cands) == b.predict(feats["l0"], cands)
    imp = a.importances()
    assert imp["mexa"] > imp["token_overlap"] and sum(imp.values()) == pytest.approx(1.0)
    contrib = a.contributions(feats["l0"], cands)
    pred = a.predict(feats["l0"], cands)
    base = pred[cands[0]] - sum(contrib[cands[0]].values())  # TreeSHAP: contributions + expected value = score
    for s in cands:
        assert sum(contrib[s].values()) + base == pytest.approx(pred[s], abs=1e-6)


def test_uriel_features_equal_the_librarys_values():
    up = pytest.importorskip("urielplus.urielplus", reason="the typology extra (urielplus) is not installed")
    from xling.data.typology import KINDS, distances

    d = distances([("eng_Latn", "deu_Latn"), ("jpn", "kor"), ("fr", "fr")])
    u = up.URIELPlus()
    for (a, b), (ca, cb) in {("eng_Latn", "deu_Latn"): ("deu", "eng"), ("jpn", "kor"): ("jpn", "kor")}.items():
        for kind in KINDS:
            assert d[(a, b)][kind] == pytest.approx(float(u.new_distance(kind, ca, cb)))
    assert d[("fr", "fr")] == {k: 0.0 for k in KINDS}
    # Italian has no phonological feature shared with English in URIEL: missing, not imputed
    assert distances([("eng", "ita")])[("eng", "ita")]["phonological"] is None
    # cached: a second call reads the file
    from xling.io import cache_dir

    assert any(cache_dir("uriel").glob("*.json"))
    with pytest.raises(XlingError, match="not in URIEL"):
        distances([("eng", "qaa")])


def _store_with_matrix(tiny_model_dirs, tmp_path):
    from test_matrix import _parallel_task
    from xling.recipes.matrix.run import MatrixConfig, transfer_matrix

    store = tmp_path / "r.sqlite"
    res = transfer_matrix(MatrixConfig(model=str(tiny_model_dirs["bert"]), task=_parallel_task(), out=None, store=store,
                                       progress=False, l2=(1.0,), layer=-1, n_boot=50))
    return store, res


def test_rank_recipe_on_a_stored_matrix(tiny_model_dirs, tmp_path, one_thread):
    pytest.importorskip("lightgbm", reason="the rank extra (lightgbm) is not installed")
    pytest.importorskip("urielplus", reason="the typology extra (urielplus) is not installed")
    from xling.recipes.rank.run import RankConfig, format_summary, rank_sources

    store, mres = _store_with_matrix(tiny_model_dirs, tmp_path)
    res = rank_sources(RankConfig(store=store, targets=["fr", "hi"], out=tmp_path / "rank", n_boot=100))
    assert res.matrix_id == mres.matrix_id and res.reference == "eng_Latn"
    assert res.scores["fra_Latn"]["deu_Latn"] == pytest.approx(mres.score("deu_Latn", "fra_Latn"))
    assert {"uriel_genetic", "mexa", "token_overlap"} <= set(res.feature_names)
    fr = res.recommendations["fra_Latn"]
    assert [r["source"] for r in fr["ranking"]] and "fra_Latn" not in [r["source"] for r in fr["ranking"]]
    hi = res.recommendations["hin_Deva"]
    assert hi["mode"].startswith("typology only") and all(f.startswith(("uriel_", "source_")) for f in hi["features"])
    assert len(hi["ranking"]) == 4 and "=" in hi["ranking"][0]["drivers"]
    text = format_summary(res)
    assert "ranker - always eng_Latn" in text and "sources for hin_Deva" in text
    rows = list(csv.DictReader(open(tmp_path / "rank" / "summary.csv")))
    assert {r["method"] for r in rows} >= {"ranker", "always:eng_Latn", "feature:mexa"}
    html = (tmp_path / "rank" / "report.html").read_text()
    assert "Feature importances" in html and "<svg" in html


def test_rank_errors(tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main
    from xling.recipes.rank.run import RankConfig, rank_sources

    with pytest.raises(XlingError, match="does not exist"):
        rank_sources(RankConfig(store=tmp_path / "none.sqlite", out=None))
    with pytest.raises(XlingError, match="unknown feature"):
        RankConfig(features=["shoe_size"])
    store, _ = _store_with_matrix(tiny_model_dirs, tmp_path)
    with pytest.raises(XlingError, match="no matrix 'abc'"):
        rank_sources(RankConfig(store=store, matrix="abc", out=None))
    rc = main(["rank", "--store", str(store), "--target", "qaa", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "xling: error:" in err and "qaa" in err
