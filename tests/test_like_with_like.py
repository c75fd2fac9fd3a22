"""Numbers that say when they mean nothing, and one results store (issue 18, items 3 and 4).

compare lines align runs up like with like (common languages, common relative-depth layers, the same
sentences); predict and align warn on small samples and label in-sample numbers; rank keeps missing
URIEL distances missing and shows ties; the default results store lives in the user data folder; eval
never joins alignment from another corpus without saying so.
"""

import csv
import os
from pathlib import Path

import pytest

import tiny_models
from xling.cli import main
from xling.errors import XlingError
from xling.harness.store import ResultsStore

LANGS6 = ["deu_Latn", "fra_Latn", "rus_Cyrl", "spa_Latn", "ita_Latn", "jpn_Jpan"]


def _add_align(store, run_id, model, layers, langs, f, *, fingerprint=None, hidden=None, digest="ids:same",
               n_sentences=200, corpus="toy"):
    """An align run written straight to the store: value of (lang index, layer) from ``f``."""
    rows = [{"model": model, "corpus": corpus, "lang": lang, "layer": k, "pooling": "mean", "metric": "mexa",
             "value": f(i, k)} for i, lang in enumerate(langs) for k in layers]
    config = {"pivot": "eng_Latn", "langs": langs, "n_sentences": n_sentences, "layers": list(layers)}
    if hidden is not None:
        config["num_hidden_states"] = hidden
    if digest is not None:
        config["sentences_digest"] = digest
    ResultsStore(store).add_run({"run_id": run_id, "command": "align", "model": model, "model_fingerprint": fingerprint,
                                 "corpus": corpus, "config": config, "started": f"2026-01-01T00:00:{len(run_id):02d}"},
                                alignment=rows)


# ----------------------------------------------------------------------------- compare


def test_compare_same_model_uses_common_layers_and_languages(tmp_path):
    """13 vs 9 hidden states and 6 vs 3 languages of one model, identical where both scored: difference 0."""
    from xling.recipes.compare.run import compare_runs, format_compare

    store = tmp_path / "r.sqlite"
    f = lambda i, k: 0.3 + 0.05 * k - 0.02 * i  # noqa: E731 - later layers align better
    _add_align(store, "full00000000", "m", range(13), LANGS6, f, fingerprint="fp", hidden=13)
    _add_align(store, "part00000000", "m", range(9), LANGS6[:3], f, fingerprint="fp", hidden=13)
    res = compare_runs(store, ["full0", "part0"], bootstrap=200)
    assert res.langs == sorted(LANGS6[:3])
    for d in res.diffs:  # the old code reported a positive "mean over layers" difference here
        assert d["mean"] == pytest.approx(0.0, abs=1e-12), d
    assert all(s.values["deu_Latn"] == pytest.approx(sum(f(0, k) for k in range(9)) / 9) for s in res.series)
    out = format_compare(res)
    assert "compared on the 9 hidden states every run has (0..8); left out" in out and "9, 10, 11, 12" in out
    assert "3 languages not in every run left out" in out


def test_compare_different_depths_at_common_relative_depth(tmp_path):
    """Two models, 13 and 5 hidden states, the same curve over relative depth: difference 0, said in a note."""
    from xling.recipes.compare.run import compare_runs

    store = tmp_path / "r.sqlite"
    _add_align(store, "deep00000000", "deep", range(13), LANGS6[:3], lambda i, k: (k / 12) ** 2, hidden=13)
    _add_align(store, "flat00000000", "flat", range(5), LANGS6[:3], lambda i, k: (k / 4) ** 2, hidden=5)
    res = compare_runs(store, ["deep0", "flat0"], bootstrap=100)
    assert all(d["mean"] == pytest.approx(0.0, abs=1e-12) for d in res.diffs)
    note = next(n for n in res.notes if n.startswith("different depths"))
    assert "13 vs 5 hidden states" in note and "5 relative depths of flat" in note
    assert res.series[0].layers == 13  # the report still says how deep each run was


def test_compare_refuses_different_sentences_unless_allowed(tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    f = lambda i, k: 0.5 + 0.01 * k  # noqa: E731
    _add_align(store, "aaaa00000000", "m1", range(4), LANGS6[:2], f, digest="ids:one")
    _add_align(store, "bbbb00000000", "m2", range(4), LANGS6[:2], f, digest="ids:two")
    assert main(["compare", "aaaa", "bbbb", "--store", str(store), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xling: error: ") and "scored different sentences" in err and "\n" not in err
    assert "--allow-different-data" in err and not (tmp_path / "c").exists()
    assert main(["compare", "aaaa", "bbbb", "--store", str(store), "--out", str(tmp_path / "c"),
                 "--allow-different-data"]) == 0
    assert "compared anyway (--allow-different-data)" in capsys.readouterr().out


def test_compare_old_runs_without_sentence_record(tmp_path):
    """Runs recorded before the digest: different counts refuse, equal counts compare with a one-line note."""
    from xling.recipes.compare.run import compare_runs

    store = tmp_path / "r.sqlite"
    f = lambda i, k: 0.5  # noqa: E731
    _add_align(store, "old100000000", "m1", range(3), LANGS6[:2], f, digest=None, n_sentences=100)
    _add_align(store, "old200000000", "m2", range(3), LANGS6[:2], f, digest=None, n_sentences=100)
    _add_align(store, "old300000000", "m3", range(3), LANGS6[:2], f, digest=None, n_sentences=50)
    res = compare_runs(store, ["old1", "old2"], bootstrap=50)
    assert sum("recorded no sentence ids" in n for n in res.notes) == 1
    with pytest.raises(XlingError, match="scored different sentences"):
        compare_runs(store, ["old1", "old3"])


def test_align_records_depth_and_sentences_and_compare_refuses_a_shorter_run(tmp_path, one_thread):
    """Real align runs: the record has the depth and a sentence digest; 4 vs 8 sentences are refused."""
    from xling.data.corpus import ParallelCorpus
    from xling.models.loading import from_objects
    from xling.recipes.align.run import align, format_summary
    from xling.recipes.compare.run import compare_runs

    codes = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn"}
    corpus = ParallelCorpus("tiny", {codes[k]: v for k, v in tiny_models.PARALLEL.items() if k in codes})
    lm = from_objects(*tiny_models.build("xlmr"), "tiny-xlmr")
    store = tmp_path / "r.sqlite"
    a = align(lm=lm, corpus=corpus, out=tmp_path / "a", store=store, progress=False, metrics=["mexa"])
    b = align(lm=lm, corpus=corpus, out=None, store=store, progress=False, metrics=["mexa"], max_sentences=4)
    conf = {r["run_id"]: r["config"] for r in ResultsStore(store).runs("align")}
    assert conf[a.run_id]["num_hidden_states"] == lm.num_hidden_states == len(a.layers)
    assert conf[a.run_id]["sentences_digest"] != conf[b.run_id]["sentences_digest"]
    with pytest.raises(XlingError, match="scored different sentences"):
        compare_runs(store, [a.run_id, b.run_id])
    # 8 sentences: MEXA's chance level is 1/8; the best layer is flagged as not meaningful
    text = format_summary(a)
    assert "warning: only 8 sentences" in text and "best layer is not meaningful" in text
    assert "Warning</b>: only 8 sentences" in (tmp_path / "a" / "report.html").read_text()


# ----------------------------------------------------------------------------- predict


def _lines(n, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    langs = [f"l{i:02d}" for i in range(n)]
    align = {lang: {k: float(v) for k, v in enumerate(rng.uniform(0, 1, 4))} for lang in langs}
    scores = {lang: 0.2 + 0.6 * align[lang][2] + float(rng.normal(0, 0.05)) for lang in langs}
    return align, scores


def test_predict_warns_on_few_languages_and_labels_in_sample(tmp_path):
    from xling.recipes.predict.run import format_summary, predict

    align, scores = _lines(4)
    res = predict(alignment=align, scores=scores, out=tmp_path / "p", store=None, n_boot=20, metric="accuracy")
    text = format_summary(res)
    assert "warning: only 4 languages with both task scores and alignment" in text
    k = len(res.prediction.chosen_lolo_mae)
    assert f"in-sample, optimistic: {res.prediction.chosen} chosen among {k} aggregations on these same 4 languages" \
        in text
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert all(r["alignment_is"].startswith("in-sample") for r in rows)
    html = (tmp_path / "p" / "report.html").read_text()
    assert "Warning</b>: only 4 languages" in html and "in-sample, optimistic" in html
    align, scores = _lines(10, seed=1)
    many = predict(alignment=align, scores=scores, out=None, store=None, n_boot=20)
    assert "warning:" not in format_summary(many)


# ----------------------------------------------------------------------------- rank


def test_uriel_distance_from_too_few_features_is_missing_not_zero():
    """Kazakh shares two phonological features with English, both equal: URIEL+ says 0; xling says missing."""
    pytest.importorskip("urielplus.urielplus", reason="the typology extra (urielplus) is not installed")
    from xling.data.typology import MIN_SHARED_FEATURES, distances, shared_features

    assert shared_features("phonological", "kaz", "eng") < MIN_SHARED_FEATURES
    d = distances([("kaz_Cyrl", "eng_Latn"), ("kaz_Cyrl", "deu_Latn"), ("eng_Latn", "deu_Latn")])
    assert d[("kaz_Cyrl", "eng_Latn")]["phonological"] is None and d[("kaz_Cyrl", "deu_Latn")]["phonological"] is None
    assert d[("eng_Latn", "deu_Latn")]["phonological"] > 0  # enough shared features: a distance


def test_rank_shows_ties_as_ties():
    from xling.recipes.rank.run import rank_label, recommend, tied_ranks

    assert tied_ranks(["a", "b", "c", "d"], {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}) == {
        "a": (1, False), "b": (2, True), "c": (2, True), "d": (4, False)}
    pytest.importorskip("lightgbm", reason="the rank extra (lightgbm) is not installed")
    # every candidate scores the same everywhere: the ranker has nothing to tell them apart
    langs = ["eng_Latn", "deu_Latn", "fra_Latn", "kaz_Cyrl"]
    scores = {t: {s: 0.5 for s in langs if s != t} for t in langs}
    feats = {t: {s: {"mexa": float("nan")} for s in langs if s != t} for t in langs}
    rec = recommend(scores, feats, langs, ["mexa"], "kaz_Cyrl")
    assert [rank_label(r) for r in rec["ranking"]] == ["1=", "1=", "1="]
    assert all("mexa=missing" in r["drivers"] for r in rec["ranking"])


# ----------------------------------------------------------------------------- the results store


def test_default_store_is_in_the_user_data_folder_and_xling_store_overrides(tmp_path, monkeypatch, capsys):
    import platformdirs

    from xling.recipes.align.run import AlignConfig
    from xling.harness.store import DEFAULT_STORE, default_store_path

    monkeypatch.delenv("XLING_STORE", raising=False)
    assert default_store_path() == Path(platformdirs.user_data_dir("xling")) / "results.sqlite"
    assert "xling-out" not in os.fspath(DEFAULT_STORE)
    mine = tmp_path / "elsewhere" / "mine.sqlite"
    monkeypatch.setenv("XLING_STORE", str(mine))
    assert Path(AlignConfig(out=None).store) == mine  # looked up when used, not when xling was imported
    _add_align(mine, "cafe00000000", "m", range(2), ["deu_Latn"], lambda i, k: 0.5)
    monkeypatch.chdir(tmp_path)  # any folder: the same store
    assert main(["runs"]) == 0
    assert "cafe00000000" in capsys.readouterr().out
    assert main(["runs", "--store", str(tmp_path / "nope.sqlite")]) == 2  # --store still wins


def test_tests_never_use_the_real_user_store():
    import platformdirs

    from xling.harness.store import default_store_path

    assert not str(default_store_path()).startswith(platformdirs.user_data_dir("xling"))


# ----------------------------------------------------------------------------- eval joins alignment


def test_eval_report_never_joins_alignment_from_another_corpus(tmp_path):
    from xling.harness.scores import EvalResult, alignment_for as _alignment_for
    from xling.harness.scores_report import render_eval_report

    scores = {"eng_Latn": 0.9, "deu_Latn": 0.7, "fra_Latn": 0.6, "rus_Cyrl": 0.5}
    rows = [{"model": "ft", "task": "bible-genre", "lang": lang, "split": "test", "metric": "accuracy", "value": v}
            for lang, v in scores.items()]
    res = EvalResult(rows=rows, run_id="e1", model="ft", base_model="base", task="bible-genre",
                     task_type="classification", split="test", source="eng_Latn", langs=list(scores),
                     n_examples={lang: 10 for lang in scores}, main_metric="accuracy", timings={},
                     meta={"labels": ["a", "b"]})
    store = tmp_path / "r.sqlite"
    _add_align(store, "dj0000000000", "base", range(3), list(scores)[1:], lambda i, k: 0.1 * i, corpus="django")
    got = _alignment_for(res, store)
    assert "values" not in got and "only on other corpora (django)" in got["note"]
    html = render_eval_report(res, got)
    assert "alignment from another corpus is not joined" in html and "Pearson" not in html
    _add_align(store, "bb0000000000", "base", range(3), list(scores)[1:], lambda i, k: 0.1 * i, corpus="bible:mexa")
    got = _alignment_for(res, store)
    assert got["run_id"] == "bb0000000000" and got["corpus"] == "bible:mexa" and got["values"]
