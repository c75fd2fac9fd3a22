"""Reports read at a glance, and ``xling compare``: fast checks without a browser (see test_reports_browser.py)."""

import csv
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest


LANGS = ["deu_Latn", "fra_Latn", "swh_Latn", "jpn_Jpan"]


def align_result(model="m1", scale=1.0, run_id="r1", corpus="toy", metrics=("mexa", "xsim_err_p2l")):
    from xling.recipes.align.run import AlignConfig, AlignResult

    rows = []
    for i, lang in enumerate(LANGS):
        for layer in range(4):
            for m in metrics:
                v = scale * (0.2 + 0.15 * layer - 0.05 * i) if m == "mexa" else 0.9 - 0.2 * layer + 0.05 * i
                rows.append({"model": model, "corpus": corpus, "lang": lang, "layer": layer, "pooling": "mean",
                             "metric": m, "value": float(min(1.0, max(0.0, v)))})
    return AlignResult(rows=rows, config=AlignConfig(metrics=["mexa", "xsim"], out=None, store=None), run_id=run_id, model=model,
                       corpus=corpus, pivot="eng_Latn", langs=list(LANGS), n_sentences=10, layers=[0, 1, 2, 3],
                       pooling="mean", timings={}, meta={})


def eval_result(scores, labels=("a", "b", "c", "d"), task_type="classification"):
    from xling.recipes.eval.run import EvalResult

    langs = list(scores)
    rows = [{"model": "m", "task": "t", "lang": lang, "split": "test", "metric": "accuracy", "value": v}
            for lang, v in scores.items()]
    return EvalResult(rows=rows, run_id="e1", model="m", base_model="b", task="t", task_type=task_type, split="test",
                      source=langs[0], langs=langs, n_examples={lang: 10 for lang in langs}, main_metric="accuracy",
                      timings={}, meta={"labels": list(labels)})


# ----------------------------------------------------------------------------- helpers


def test_fmt_rounds_consistently():
    from xling.harness.html import fmt, fmt_signed

    assert fmt(0.14583333333333334) == "0.146"
    assert fmt(np.float32(0.5)) == "0.500"
    assert fmt(-0.0001) == "0.000" and fmt(-0.25) == "-0.250"
    assert fmt(float("nan")) == "undefined" and fmt(None) == "–" and fmt(7) == "7" and fmt("x") == "x"
    assert fmt_signed(0.1) == "+0.100" and fmt_signed(-0.1) == "-0.100"


def test_tables_never_show_long_floats():
    from xling.harness.html import render_align_report

    html = render_align_report(align_result(scale=1 / 3))
    assert not re.search(r"\d\.\d{5,}", re.sub(r"<svg.*?</svg>", "", html, flags=re.S))


def test_escaping_in_new_reports():
    from xling.harness.html import scatter_svg
    from xling.methods.stats import fit_line_ci

    bad = "<b>x</b>"
    svg = scatter_svg(bad, [(bad, 0.1, 0.2), ("y", 0.3, 0.5), ("z", 0.5, 0.4)], bad, bad,
                      band=tuple(fit_line_ci([0.1, 0.3, 0.5], [0.2, 0.5, 0.4])[k] for k in ("x", "lo", "hi")))
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg


def test_ci_band_matches_an_independent_computation():
    from scipy import stats

    from xling.methods.stats import fit_line_ci, t_quantile

    rng = np.random.default_rng(3)
    for n in (3, 4, 7, 25):
        x = rng.uniform(0, 1, n)
        y = 0.4 * x + 0.1 + rng.normal(0, 0.05, n)
        fit = fit_line_ci(x, y, points=9)
        res = stats.linregress(x, y)
        assert fit["a"] == pytest.approx(res.slope) and fit["b"] == pytest.approx(res.intercept)
        g = np.asarray(fit["x"])
        # textbook band of the mean response: t_{n-2} * s * sqrt(1/n + (x - mean)^2 / Sxx)
        s = np.sqrt(np.sum((y - (res.slope * x + res.intercept)) ** 2) / (n - 2))
        half = stats.t.ppf(0.975, n - 2) * s * np.sqrt(1 / n + (g - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
        center = res.slope * g + res.intercept
        np.testing.assert_allclose(fit["lo"], center - half, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(fit["hi"], center + half, rtol=1e-3, atol=1e-6)
    for df in (1, 2, 3, 5, 10, 30):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-3)


def test_degenerate_fits_are_said_in_words():
    from xling.harness.html import correlation_note
    from xling.methods.stats import fit_line_ci

    assert "only 2 points" in fit_line_ci([0, 1], [0, 1])["note"]
    assert "all x values are equal" in fit_line_ci([1, 1, 1], [0, 1, 2])["note"]
    assert correlation_note([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]) == "Pearson r undefined: all scores are equal (0.500)"


def test_scatter_labels_do_not_overlap():
    from xling.harness.html import scatter_svg

    pts = [(f"lang{i}", 0.5 + 0.001 * i, 0.5 + 0.001 * i) for i in range(20)] + [("far", 0.9, 0.1)]
    svg = scatter_svg("t", pts, "x", "y")
    labels = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" font-size="10" text-anchor="(\w+)">(lang\d+|far)</text>', svg)
    assert 1 <= len(labels) < 21 and any(t[3] == "far" for t in labels)
    assert svg.count("<circle") == 21  # every point drawn, with its tooltip


# ----------------------------------------------------------------------------- reports


def test_align_report_at_a_glance():
    from xling.harness.html import render_align_report

    html = render_align_report(align_result())
    assert 'class="headline"' in html and "Best layer by mean mexa" in html
    assert "German (deu_Latn)" in html and "Swahili (swh_Latn)" in html
    assert "xsim_err_p2l (lower is better)" in html and "lower is better</text>" in html
    assert "best layer of the language" in html and 'class="sortable"' in html
    assert html.count('class="lg"') >= 2 * len(LANGS)  # a legend entry per language in each line plot


def test_models_report_is_sortable_and_named():
    from xling.harness.html import render_models_report

    html = render_models_report({"m1": align_result(), "m2": align_result("m2", 0.5, "r2")})
    assert "Best model by mean mexa: <b>m1</b>" in html and "French (fra_Latn)" in html and 'class="sortable"' in html


def test_eval_chance_line_and_headline():
    from xling.recipes.eval.run import render_eval_report

    html = render_eval_report(eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7, "fra_Latn": 0.6, "swh_Latn": 0.3}))
    assert "chance (1/4 labels) 0.250" in html
    assert "mean transfer gap <b>0.367</b>" in html
    no_chance = render_eval_report(eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7}, task_type="multiple-choice"))
    assert "No chance line" in no_chance


def test_eval_scatter_explains_constant_scores():
    from xling.recipes.eval.run import render_eval_report

    res = eval_result({"eng_Latn": 0.9, "deu_Latn": 0.5, "fra_Latn": 0.5, "swh_Latn": 0.5})
    html = render_eval_report(res, {"run_id": "a", "corpus": "c", "metric": "mexa",
                                    "values": {"deu_Latn": 0.2, "fra_Latn": 0.4, "swh_Latn": 0.6}})
    assert "Pearson r undefined: all accuracy scores are equal" in html and ">nan<" not in html


def test_transfer_report_with_and_without_gap_closed():
    from test_hostile import assert_inert, h

    from xling.recipes.transfer.run import TransferResult
    from xling.recipes.transfer.report import render_transfer_report

    conds = ["task", "stack", "translate-train"]
    rows = [{"lang": lang, "role": "target", "condition": c, "accuracy": 0.4 + 0.1 * i + 0.01 * j, "macro_f1": 0.3,
             "n": 10} for i, c in enumerate(conds) for j, lang in enumerate(["eng_Latn", "deu_Latn", "swh_Latn"])]
    summary = [{"condition": c, "description": "d", "method": "add", "mean_target_accuracy": 0.4 + 0.1 * i,
                "source_accuracy": 0.5, "reference": "task", "delta": 0.1 * i, "delta_lo": None if i == 0 else 0.05,
                "delta_hi": None if i == 0 else 0.15} for i, c in enumerate(conds)]
    res = TransferResult(rows=rows, summary=summary, source="eng_Latn", targets=["deu_Latn", "swh_Latn"],
                         conditions=conds, modules={}, metric="accuracy", run_id="t1",
                         config={"model": "m", "r": 8, "alpha": 16, "add_lambda": 1.0, "swap": [3, 1, 0],
                                 "bootstrap": 10})
    html = render_transfer_report(res, SimpleNamespace(name="topic"))
    assert "Best condition: <b>stack</b>" in html and "+0.100 [+0.050, +0.150]" in html
    assert "translate-train (ceiling)" in html and "task (reference)" in html and "German (deu_Latn)" in html
    for s in summary:
        s.update(gap_closed=0.5, gap_closed_lo=0.2, gap_closed_hi=0.8, ceiling="translate-train")
    html = render_transfer_report(res, SimpleNamespace(name="topic"))
    assert "It closes <b>0.500 [0.200, 0.800]</b>" in html and "gap closed" in html
    # hostile strings stay text
    m = h("metric")
    rows = [{"lang": h("src"), "condition": h("c"), m: 0.5, "n": 3}, {"lang": h("tgt"), "condition": h("c"), m: 0.4, "n": 3}]
    summary = [{"condition": h("c"), "description": h("what"), "method": h("method"), "reference": h("c"),
                "delta": 0.0, "delta_lo": None, "delta_hi": None, f"source_{m}": 0.5, f"mean_target_{m}": 0.4}]
    res = TransferResult(rows=rows, summary=summary, source=h("src"), targets=[h("tgt")], conditions=[h("c")],
                         modules={h("role"): {"path": h("path"), "reused": True}}, metric=m, run_id="x",
                         config={"model": h("model")})
    assert_inert(render_transfer_report(res, SimpleNamespace(name=h("task"))),
                 ["metric", "src", "tgt", "c", "what", "method", "role", "path", "model", "task"])


# ----------------------------------------------------------------------------- xling compare


@pytest.fixture
def store(tmp_path):
    from xling.recipes.align.run import save_to_store
    from xling.recipes.eval.run import save_to_store as save_eval

    path = tmp_path / "r.sqlite"
    save_to_store(align_result("base", 1.0, "aaaa11112222"), path)
    save_to_store(align_result("trimmed", 0.8, "aaab33334444"), path)
    save_to_store(align_result("other", 0.8, "cccc55556666", corpus="elsewhere"), path)
    save_eval(eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7, "fra_Latn": 0.6}), path)
    return path


def test_compare_two_align_runs(store, tmp_path, capsys):
    from xling.cli import main

    assert main(["compare", "aaaa1", "aaab", "--store", str(store), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "trimmed - base (mean over layers, 4 languages)" in out and "bootstrap over languages" in out
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Comparing 2 alignment runs on toy" in html and "German (deu_Latn)" in html and "<svg" in html
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))
    assert len(rows) == 2 * len(LANGS) and {r["series"] for r in rows} == {"base", "trimmed"}
    trimmed = [float(r["diff_vs_first"]) for r in rows if r["series"] == "trimmed"]
    assert all(d <= 0 for d in trimmed) and any(d < 0 for d in trimmed)


def test_compare_ci_is_a_language_bootstrap(store):
    from xling.recipes.compare.run import compare_runs

    res = compare_runs(store, ["aaaa11112222", "aaab33334444"], bootstrap=500)
    d = next(x for x in res.diffs if x["quantity"] == "mean over layers")
    diffs = [res.series[1].values[lang] - res.series[0].values[lang] for lang in res.langs]
    assert d["mean"] == pytest.approx(np.mean(diffs)) and d["lo"] <= d["mean"] <= d["hi"]
    assert d["lo"] >= min(diffs) - 1e-12 and d["hi"] <= max(diffs) + 1e-12


@pytest.mark.parametrize("ids, expect", [
    (["aaaa11112222"], "at least 2 run ids"),
    (["aaaa11112222", "aaaa1"], "at least 2 different runs"),
    (["aaaa11112222", "nope"], "unknown run id 'nope'"),
    (["aaa", "cccc"], "is ambiguous"),
    (["aaaa11112222", "cccc55556666"], "nothing in common: align runs on different corpora"),
    (["aaaa11112222", "e1"], "have nothing in common"),
])
def test_compare_refuses_in_one_line(store, tmp_path, capsys, ids, expect):
    from xling.cli import main

    if ids[-1] == "e1":  # the eval run's id is random: take it from the store
        from xling.harness.store import ResultsStore

        ids = [ids[0], ResultsStore(store).runs("eval")[0]["run_id"]]
    assert main(["compare", *ids, "--store", str(store), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xling: error: ") and expect in err and "\n" not in err
    assert not (tmp_path / "c" / "compare.html").exists()


def test_compare_missing_store(tmp_path, capsys):
    from xling.cli import main

    assert main(["compare", "a", "b", "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "results store not found" in capsys.readouterr().err


def test_compare_task_runs(tmp_path):
    from xling.recipes.compare.run import compare_runs, render_compare_report
    from xling.recipes.eval.run import save_to_store

    path = tmp_path / "r.sqlite"
    a = eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7, "fra_Latn": 0.6, "swh_Latn": 0.3})
    b = eval_result({"eng_Latn": 0.8, "deu_Latn": 0.75, "fra_Latn": 0.65, "swh_Latn": 0.5})
    b.run_id, b.model = "e2", "m2"
    save_to_store(a, path)
    save_to_store(b, path)
    res = compare_runs(path, ["e1", "e2"])
    assert res.kind == "task" and res.source == "eng_Latn" and res.targets() == ["deu_Latn", "fra_Latn", "swh_Latn"]
    (d,) = res.diffs
    assert d["mean"] == pytest.approx(0.1) and d["wins"] == 3 and math.isfinite(d["lo"])
    assert "mean target accuracy" in render_compare_report(res)
