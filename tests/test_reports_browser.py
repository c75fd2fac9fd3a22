"""Every HTML report opened in headless Chromium at 1400 px: no script errors, plots drawn, language names
shown, nothing wider than the window. Slow (a browser start per report): ``pytest -m slow``."""

import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from test_reports import LANGS, align_result, eval_result

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Injected by the test only: collects script errors, exercises the report's own script (sort a table, click
#: and hover a legend entry), then writes what it found into the DOM for --dump-dom.
PROBE = """<script>window.__errs=[];window.onerror=function(m){window.__errs.push(String(m))};
window.addEventListener('load',function(){var W=window.innerWidth,over=[];
try{var th=document.querySelector('table.sortable th');if(th){th.click();th.click()}
var lg=document.querySelector('svg .lg');if(lg){lg.dispatchEvent(new MouseEvent('click',{bubbles:true}));
lg.dispatchEvent(new MouseEvent('mouseenter'));lg.dispatchEvent(new MouseEvent('mouseleave'));
lg.dispatchEvent(new MouseEvent('click',{bubbles:true}))}}catch(e){window.__errs.push('probe: '+e)}
if(document.documentElement.scrollWidth>W)over.push('page '+document.documentElement.scrollWidth);
document.querySelectorAll('.scroll').forEach(function(e){if(e.scrollWidth>e.clientWidth+1)over.push('table '+e.scrollWidth)});
document.querySelectorAll('svg,h1,p,table').forEach(function(e){var r=e.getBoundingClientRect();
if(r.right>W+1)over.push(e.tagName+' '+Math.round(r.right))});
var svgs=document.querySelectorAll('body > svg, body svg'),empty=0;
svgs.forEach(function(s){if(!s.querySelector('rect,polyline,circle,polygon,path'))empty++});
var d=document.createElement('pre');d.id='xling-probe';d.textContent=JSON.stringify({errors:window.__errs,
overflow:over,svgs:svgs.length,empty:empty,width:W});document.body.appendChild(d)});</script>"""


def open_in_chromium(html: str, tmp_path, name: str) -> tuple[dict, str]:
    page = tmp_path / f"{name}.html"
    page.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
         f"--user-data-dir={tmp_path / ('profile-' + name)}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    m = re.search(r'<pre id="xling-probe">(.*?)</pre>', dom, re.S)
    assert m, f"{name}: the page never finished loading\n{proc.stderr[-2000:]}"
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    return probe, dom


def reports(tmp_path) -> dict[str, tuple[str, list[str]]]:
    """name -> (html, language names that must be visible)."""
    from xling.recipes.compare.run import compare_runs, render_compare_report
    from xling.recipes.eval.run import render_eval_report
    from xling.recipes.matrix.run import MatrixResult, render_matrix_report
    from xling.recipes.predict.run import PredictConfig, predict, render_predict_report
    from xling.harness.html import render_align_report, render_models_report
    from xling.recipes.transfer.run import TransferResult
    from xling.recipes.transfer.report import render_transfer_report

    names = ["German", "Swahili", "Japanese"]
    out = {"align": (render_align_report(align_result()), names),
           "align-models": (render_models_report({"m1": align_result(), "m2": align_result("m2", 0.6, "r2")}), names)}
    ev = eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7, "fra_Latn": 0.6, "swh_Latn": 0.3, "jpn_Jpan": 0.45})
    out["eval"] = (render_eval_report(ev, {"run_id": "a", "corpus": "toy", "metric": "mexa", "values": {
        "deu_Latn": 0.7, "fra_Latn": 0.65, "swh_Latn": 0.2, "jpn_Jpan": 0.4}}), names)
    langs = ["deu_Latn", "fra_Latn", "swh_Latn", "jpn_Jpan", "tur_Latn", "hin_Deva"]
    alignment = {lang: {0: 0.1 * i, 1: 0.2 * i + 0.01 * (i % 2)} for i, lang in enumerate(langs)}
    scores = {lang: 0.3 + 0.08 * i + 0.01 * (i % 3) for i, lang in enumerate(langs[:5])}
    pred = predict(PredictConfig(out=None, store=None, n_boot=50), alignment=alignment, scores=scores)
    out["predict"] = (render_predict_report(pred), ["German", "Swahili"])
    conds = ["task", "stack", "add", "translate-train"]
    targets = ["deu_Latn", "swh_Latn", "jpn_Jpan"]
    rows = [{"lang": lang, "role": "target", "condition": c, "accuracy": 0.35 + 0.1 * i + 0.02 * j, "macro_f1": 0.3,
             "n": 20} for i, c in enumerate(conds) for j, lang in enumerate(["eng_Latn", *targets])]
    summary = [{"condition": c, "description": f"condition {c}", "method": "add", "mean_target_accuracy": 0.37 + 0.1 * i,
                "source_accuracy": 0.35 + 0.1 * i, "reference": "task", "delta": 0.1 * i,
                "delta_lo": None if i == 0 else 0.1 * i - 0.05, "delta_hi": None if i == 0 else 0.1 * i + 0.05,
                "gap_closed": None if i == 0 else i / 3, "ceiling": "translate-train"} for i, c in enumerate(conds)]
    tr = TransferResult(rows=rows, summary=summary, source="eng_Latn", targets=targets, conditions=conds,
                        modules={"lang:deu_Latn": {"path": "m/deu", "reused": True, "dw_norm": 1.5}},
                        metric="accuracy", run_id="t1",
                        timings={"modules_s": 1, "modules_trained": 0, "eval_s": 2, "predicted": 0, "examples": 80,
                                 "total_s": 3},
                        config={"model": "m", "r": 8, "alpha": 16, "add_lambda": 1.0, "swap": [3, 1, 0],
                                "bootstrap": 100})
    out["transfer"] = (render_transfer_report(tr, SimpleNamespace(name="topic")), names)
    cell = {"accuracy": 0.5, "lo": 0.4, "hi": 0.6, "macro_f1": 0.5}
    mx = MatrixResult(matrix_id="x", model="m", task="t", method="probe", reference="eng_Latn",
                      sources=["eng_Latn", "deu_Latn"], targets=["deu_Latn", "swh_Latn"],
                      cells={s: {t: dict(cell) for t in ["deu_Latn", "swh_Latn"]} for s in ["eng_Latn", "deu_Latn"]},
                      features={}, alignment={}, probes={"eng_Latn": {"layer": 1}, "deu_Latn": {"layer": 2}},
                      layers=[0], n_test={}, timings={"total_s": 1}, meta={"layer_choice": "dev"})
    out["matrix"] = (render_matrix_report(mx), [])
    from xling.recipes.align.run import save_to_store

    store = tmp_path / "r.sqlite"
    save_to_store(align_result("base", 1.0, "aaaa11112222"), store)
    save_to_store(align_result("trimmed", 0.8, "bbbb33334444"), store)
    out["compare"] = (render_compare_report(compare_runs(store, ["aaaa", "bbbb"])), names)
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_every_report_in_a_real_browser(tmp_path):
    from xling.data.langcodes import lang_name

    assert lang_name("deu_Latn") == "German"
    problems = []
    for name, (html, names) in reports(tmp_path).items():
        probe, dom = open_in_chromium(html, tmp_path, name)
        text = re.sub(r"<[^>]+>", " ", dom)
        if probe["errors"]:
            problems.append(f"{name}: script errors {probe['errors']}")
        if probe["overflow"]:
            problems.append(f"{name}: wider than {probe['width']} px: {probe['overflow']}")
        if probe["svgs"] == 0 or probe["empty"]:
            problems.append(f"{name}: {probe['svgs']} plots, {probe['empty']} of them empty")
        missing = [n for n in names if n not in text]
        if missing:
            problems.append(f"{name}: language names not shown: {missing}")
    assert not problems, "\n".join(problems)
    assert LANGS  # the synthetic results cover these languages


#: Injected by the test only: text clipped by its SVG or box, heatmap cells without their number, and the
#: best-layer label under a legend; written into the DOM for --dump-dom.
GLANCE = """<script>window.addEventListener('load',function(){var bad=[],cells=0;
function box(e){return e.getBoundingClientRect()}
function name(e){return (e.textContent||'').trim().slice(0,60)}
document.querySelectorAll('svg').forEach(function(s){var r=box(s);
s.querySelectorAll('text').forEach(function(t){var b=box(t);if(!name(t))return;
if(b.left<r.left-1||b.right>r.right+1||b.top<r.top-1||b.bottom>r.bottom+1)bad.push('clipped: '+name(t))});
s.querySelectorAll('rect.cell').forEach(function(c){cells++;var t=c.nextElementSibling;
if(!t||!t.classList.contains('v')||!/\\d/.test(t.textContent)){bad.push('cell without number: '+name(c));return}
var a=box(c),b=box(t);if(b.left<a.left-1||b.right>a.right+1)bad.push('number wider than its cell: '+name(t))});
s.querySelectorAll('text.vl').forEach(function(v){var b=box(v);s.querySelectorAll('.lg').forEach(function(l){var a=box(l);
if(b.left<a.right&&a.left<b.right&&b.top<a.bottom&&a.top<b.bottom)bad.push('legend covers '+name(v))})})});
document.querySelectorAll('h1,h2,p,th,td').forEach(function(e){if(e.scrollWidth>e.clientWidth+1&&getComputedStyle(e).overflow!=='visible')
bad.push('clipped box: '+name(e))});
var d=document.createElement('pre');d.id='xling-glance';d.textContent=JSON.stringify({bad:bad,cells:cells});
document.body.appendChild(d)});</script>"""


def glance_reports(tmp_path) -> dict[str, str]:
    """Every report kind, the probe and rank reports included, with many lines and long names."""
    from test_reports_glance import _cells  # noqa: F401 - the same cell markup the fast tests parse

    from xling.recipes.eval.run import render_eval_report
    from xling.recipes.rank.run import RankResult, render_rank_report

    out = {name: html for name, (html, _) in reports(tmp_path).items()}
    probe = eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7, "swh_Latn": 0.3}, labels=("no", "yes"))
    probe.meta.update(config={"model": "m", "max_length": 128}, probe={"layer": 2, "l2": 1.0})
    probe.meta["warnings"] = {"deu_Latn": "the model predicts 'no' for all 10 examples",
                              "swh_Latn": "the model predicts 'no' for all 12 examples"}
    out["probe"] = render_eval_report(probe)
    order = ["swh_Latn", "eng_Latn", "deu_Latn", "jpn_Jpan"]
    out["rank"] = render_rank_report(RankResult(
        matrix_id="x", model="m", task="t", reference="eng_Latn", sources=order, targets=sorted(order),
        scores={t: {s: 0.3 + 0.1 * i for i, s in enumerate(order)} for t in order}, features={},
        feature_names=["mexa"], loto=SimpleNamespace(k=3, methods=[], summary={}), importances={"mexa": 1.0},
        matrix_targets=order))
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_reports_read_at_a_glance_in_a_real_browser(tmp_path):
    problems, cells = [], 0
    for name, html in glance_reports(tmp_path).items():
        page = tmp_path / f"glance-{name}.html"
        page.write_text(html.replace("</body>", GLANCE + "</body>", 1))
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1400,1000", f"--user-data-dir={tmp_path / ('glance-profile-' + name)}",
             "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120)
        m = re.search(r'<pre id="xling-glance">(.*?)</pre>', proc.stdout, re.S)
        assert m, f"{name}: the page never finished loading\n{proc.stderr[-2000:]}"
        found = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                           .replace("&gt;", ">"))
        problems += [f"{name}: {b}" for b in found["bad"]]
        cells += found["cells"]
    assert not problems, "\n".join(problems)
    assert cells >= 2 * 4 * 4 + 4 + 16  # align heatmaps, the matrix and the rank matrix: every cell checked
