"""Reports that read at a glance (issue 18, item 5) and estimates before long work (item 6): fast checks that
parse the HTML/SVG, no browser (test_reports_browser.py opens the same reports in headless Chromium)."""

import itertools
import re
from types import SimpleNamespace

import pytest

from test_reports import LANGS, align_result, eval_result


def _cells(svg: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The heatmap cells' fills and their printed values with the text colour."""
    fills = re.findall(r'<rect class="cell"[^>]* fill="(#[0-9a-f]{6})"', svg)
    texts = re.findall(r'<text class="v"[^>]* fill="(#[0-9a-f]{3})"[^>]*>([^<]*)</text>', svg)
    return fills, texts


def _luminance(fill: str) -> float:
    rgb = [int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: float, b: float) -> float:
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def _svg_width(svg: str) -> float:
    return float(re.search(r'<svg [^>]*width="([\d.]+)"', svg).group(1))


def _title_width(svg: str, size: float) -> float:
    """The same generous estimate the reports use (0.62 em per character)."""
    title = re.search(r'font-weight="600">([^<]*)</text>', svg).group(1)
    return len(title.replace("&amp;", "&")) * size * 0.62


# ----------------------------------------------------------------------------- heatmaps


def test_layer_heatmap_prints_every_value_in_a_readable_colour():
    from xling.harness.html import heatmap_svg

    rows = [f"lang{i}" for i in range(4)]
    cols = list(range(13))
    values = {r: {c: (i * 13 + c) / 51 for c in cols} for i, r in enumerate(rows)}
    svg = heatmap_svg("mexa", rows, cols, values, lo=0.0, hi=1.0, best={r: 3 for r in rows})
    fills, texts = _cells(svg)
    assert len(fills) == len(texts) == len(rows) * len(cols)  # a number in every cell
    shown = sorted(float(t) for _, t in texts)
    assert shown == pytest.approx(sorted(round(v, 2) for d in values.values() for v in d.values()), abs=1e-9)
    for fill, (ink, _) in zip(fills, texts):  # the better of black and white on each colour
        cell, black, white = _luminance(fill), 0.0, 1.0
        chosen = black if ink == "#000" else white
        other = white if ink == "#000" else black
        assert _contrast(cell, chosen) >= _contrast(cell, other)
    assert {ink for ink, _ in texts} == {"#000", "#fff"}  # viridis runs from dark to bright
    # sized by its cells: each wide enough for its number; more layers, a wider heatmap
    widths = {float(w) for w in re.findall(r'<rect class="cell"[^>]* width="([\d.]+)"', svg)}
    assert min(widths) >= 3 * 9 * 0.62
    wider = heatmap_svg("mexa", rows, list(range(33)), {r: {c: 0.5 for c in range(33)} for r in rows})
    assert _svg_width(wider) >= _svg_width(svg) + 10 * min(widths)


def test_align_report_heatmaps_have_a_number_per_cell():
    from xling.harness.html import render_align_report

    html = render_align_report(align_result())
    fills, texts = _cells(html)
    assert len(fills) == len(texts) == 2 * len(LANGS) * 4 and all(t.strip() for _, t in texts)


def test_matrix_heatmap_has_numbers_and_is_never_narrower_than_its_text():
    from xling.harness.html import matrix_svg

    title = "transfer matrix (row: trained on, column: tested on)"
    for rows, cols in ((["eng_Latn"], ["deu_Latn"]), (["eng_Latn", "Some very long source name"], ["deu_Latn", "fra_Latn"])):
        values = {r: {c: 0.25 + 0.5 * (i + j) / 3 for j, c in enumerate(cols)} for i, r in enumerate(rows)}
        svg = matrix_svg(title, rows, cols, values)
        fills, texts = _cells(svg)
        assert len(fills) == len(texts) == len(rows) * len(cols)
        assert sorted(t for _, t in texts) == sorted(f"{v:.2f}" for d in values.values() for v in d.values())
        assert _svg_width(svg) >= _title_width(svg, 13)  # the title is not cut
        left = min(float(x) for x in re.findall(r'<rect class="cell" x="([\d.]+)"', svg))
        longest = max(len(r) for r in rows) * 11 * 0.62
        assert left >= longest  # row labels (right-aligned at the grid) do not run off the left edge


def test_rank_report_columns_follow_the_matrix():
    from xling.recipes.matrix.run import MatrixResult, render_matrix_report
    from xling.recipes.rank.run import RankResult, render_rank_report

    order = ["swh_Latn", "eng_Latn", "deu_Latn"]  # the matrix's own order, not sorted
    cell = {"accuracy": 0.5, "lo": 0.4, "hi": 0.6, "macro_f1": 0.5}
    mx = MatrixResult(matrix_id="x", model="m", task="t", method="probe", reference="eng_Latn", sources=order,
                      targets=order, cells={s: {t: dict(cell) for t in order} for s in order}, features={},
                      alignment={}, probes={s: {"layer": 1} for s in order}, layers=[0], n_test={},
                      timings={"total_s": 1}, meta={"layer_choice": "dev"})
    rk = RankResult(matrix_id="x", model="m", task="t", reference="eng_Latn", sources=order, targets=sorted(order),
                    scores={t: {s: 0.5 for s in order} for t in order}, features={}, feature_names=["mexa"],
                    loto=SimpleNamespace(k=3, methods=[], summary={}), importances={"mexa": 1.0},
                    matrix_targets=order)

    def columns(html):
        return re.findall(r'transform="rotate\(-60[^"]*"\s*>([^<]+)</text>', html)

    assert columns(render_matrix_report(mx)) == order
    assert columns(render_rank_report(rk)) == order
    assert "3 sources x 3 targets" in render_rank_report(rk)


# ----------------------------------------------------------------------------- text: names, counts, titles


def test_language_names_are_shortened_not_cut(capsys):
    from xling.data.langcodes import lang_name, short_lang_name
    from xling.recipes.align.run import format_summary as align_summary
    from xling.recipes.eval.run import format_summary as eval_summary
    from xling.harness.html import display_lang

    if lang_name("swh_Latn") == "swh_Latn":
        pytest.skip("no language name data")
    assert short_lang_name("swh_Latn") == "Swahili" and display_lang("swh_Latn") == "Swahili (swh_Latn)"
    assert short_lang_name("srp_Latn") == lang_name("srp_Latn")  # a script in parentheses stays
    ev = eval_summary(eval_result({"eng_Latn": 0.9, "swh_Latn": 0.3, "ory_Orya": 0.4}))
    al = align_summary(align_result())
    for text in (ev, al):
        assert "Swahili " in text and "(individua" not in text
    assert "Odia " in ev


def test_counts_are_plural_aware():
    from xling.recipes.eval.run import render_eval_report
    from xling.recipes.matrix.run import MatrixResult, render_matrix_report
    from xling.harness.html import plural, render_align_report

    assert plural(1, "language") == "1 language" and plural(0, "language") == "0 languages"
    res = align_result()
    res.langs = ["deu_Latn"]
    res.rows = [r for r in res.rows if r["lang"] == "deu_Latn"]
    html = render_align_report(res)
    assert "1 languages" not in html and "1 language against pivot" in html
    ev = render_eval_report(eval_result({"eng_Latn": 0.9, "deu_Latn": 0.7}))
    assert "1 target languages" not in ev and "mean over 1 target language " in ev
    cell = {"accuracy": 0.5, "lo": 0.4, "hi": 0.6, "macro_f1": 0.5}
    mx = MatrixResult(matrix_id="x", model="m", task="t", method="probe", reference=None, sources=["eng_Latn"],
                      targets=["deu_Latn"], cells={"eng_Latn": {"deu_Latn": cell}}, features={}, alignment={},
                      probes={"eng_Latn": {}}, layers=[0], n_test={}, timings={"total_s": 1}, meta={})
    assert "1 source x 1 target;" in render_matrix_report(mx)


def test_titles_and_long_labels_are_never_clipped():
    from xling.harness.html import bar_chart_svg, line_chart_svg, scatter_svg

    long_title = "a rather long title that says exactly what the plot shows and for which run it was made"
    for svg in (line_chart_svg(long_title, {"a": [(0, 0.1), (1, 0.2)]}, "x", "y", width=300, height=150),
                bar_chart_svg(long_title, [("a", 0.5)]),
                scatter_svg(long_title + " and a bit more for the wider scatter plot", [("a", 0, 0), ("b", 1, 1)], "x", "y")):
        assert _svg_width(svg) >= _title_width(svg, 14)
    name = "Some language with a name far too long for any legend column (xyz_Latn)"
    svg = line_chart_svg("t", {name: [(0, 0.1), (1, 0.2)]}, "x", "y")
    # cut with an ellipsis only with the full name as its tooltip
    assert f"<title>{name}</title>" in svg and "…" in svg
    svg = bar_chart_svg("t", [(name * 2, 0.5)])
    assert f"<title>{name * 2}</title>" in svg


def test_legend_never_covers_the_best_layer_label():
    from xling.harness.html import line_chart_svg

    series = {f"language {i}": [(layer, 0.1 * layer) for layer in range(13)] for i in range(5)}
    svg = line_chart_svg("mexa per layer", series, "layer", "mexa", vline=(12, "best 12"), integer_x=True)
    top = float(re.search(r'<line x1="[\d.]+" y1="([\d.]+)" x2="[\d.]+" y2="[\d.]+" stroke="#444"', svg).group(1))
    x, y, anchor = re.search(r'<text x="([\d.]+)" y="([\d.]+)"[^>]*text-anchor="(\w+)" class="vl">best 12<', svg).groups()
    legend_x = min(float(v) for v in re.findall(r'<g class="lg" data-s="\d+"><rect x="([\d.]+)"', svg))
    legend_top = min(float(v) for v in re.findall(r'<g class="lg" data-s="\d+"><rect x="[\d.]+" y="([\d.]+)"', svg))
    right = float(x) if anchor == "end" else float(x) + len("best 12") * 10 * 0.62
    assert float(y) <= top and (float(y) < legend_top or right < legend_x)
    assert right <= legend_x  # and never into the legend's column


def _lab(fill: str) -> tuple[float, float, float]:
    rgb = [int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = lambda t: t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116  # noqa: E731
    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def test_twenty_lines_have_twenty_distinguishable_colours_then_dashes():
    from xling.harness.html import line_chart_svg

    series = {f"s{i}": [(0, i / 30), (1, i / 30)] for i in range(45)}
    svg = line_chart_svg("t", series, "x", "y")
    styles = re.findall(r'<polyline points="[^"]*" fill="none" stroke="(#[0-9a-f]{6})" stroke-width="2"'
                        r'(?: stroke-dasharray="([^"]*)")?>', svg)
    assert len(styles) == 45 and len(set(styles)) == 45  # no two lines look alike
    first = [c for c, _ in styles[:20]]
    assert len(set(first)) == 20 and all(d == "" for _, d in styles[:20])
    worst = min(sum((p - q) ** 2 for p, q in zip(_lab(a), _lab(b))) ** 0.5 for a, b in itertools.combinations(first, 2))
    assert worst >= 20  # CIE76 Delta E: clearly different colours, not two shades of one blue
    assert all(_lab(c)[0] <= 80 for c in first)  # none too pale on the white page


# ----------------------------------------------------------------------------- eval and probe reports


def test_eval_warnings_are_said_once_with_their_languages():
    from xling.recipes.eval.run import group_warnings, render_eval_report

    res = eval_result({"eng_Latn": 0.9, "deu_Latn": 0.5, "fra_Latn": 0.5, "swh_Latn": 0.5})
    res.meta["warnings"] = {lang: f"the model predicts 'a' for all {n} examples (one class everywhere)"
                            for lang, n in (("deu_Latn", 10), ("fra_Latn", 12), ("swh_Latn", 9))}
    html = render_eval_report(res)
    assert html.count("<b>Warning</b>") == 1
    block = re.search(r'<p class="warning">(.*?)</p>', html).group(1)
    assert all(lang in block for lang in ("deu_Latn", "fra_Latn", "swh_Latn")) and "3 languages" in block
    assert "for all examples" in block
    assert group_warnings({"deu_Latn": "x for all 3 examples"}) == [("x for all 3 examples", ["deu_Latn"])]
    assert len(group_warnings({"a": "one", "b": "two", "c": "one"})) == 2


def test_probe_report_has_its_chance_line_and_settings(tiny_model_dirs, tmp_path, one_thread, capsys):
    from test_probe import _tiny_task

    from xling.recipes.probe.run import ProbeConfig, probe

    res = probe(ProbeConfig(model=str(tiny_model_dirs["bert"]), task=_tiny_task(), out=tmp_path / "out", store=None,
                            l2=(1.0,)))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "chance (1/2 labels) 0.500" in html and "No chance line" not in html
    settings = re.search(r"<td class=\"l\">settings</td><td class=\"l\">(.*?)</td>", html).group(1)
    assert settings != "null" and "max_length" in settings and "&quot;layer&quot;: " + str(res.meta["probe"]["layer"]) in settings
    err = capsys.readouterr().err
    assert "xling: estimate: probe: 3 languages x 56 texts x 4 layers on " in err and "k params, cpu" in err


# ----------------------------------------------------------------------------- estimates


def test_estimate_arithmetic():
    from xling.engine import estimate as est

    assert est.count_tokens(["abcdefgh", "", "x" * 4000], max_length=128) == (2 + 2) + (1 + 2) + 128
    t = est.estimate_seconds(1000, 10 ** 8, device="cpu", threads=2)
    assert t == pytest.approx(2 * 10 ** 8 * 1000 / (2 * est.CPU_FLOPS_PER_THREAD))
    # the per-layer metrics: layers x languages x products of n x n x dim
    t2 = est.estimate_seconds(1000, 10 ** 8, device="cpu", threads=2, layers=13, langs=27, n=200, dim=384)
    extra = est.PAIR_PRODUCTS * 2 * 200 * 200 * 384 * 13 * 27 / (2 * est.CPU_FLOPS_PER_THREAD)
    assert t2 - t == pytest.approx(extra)
    assert est.estimate_seconds(1000, 10 ** 8, device="cuda") == pytest.approx(2 * 10 ** 11 / est.GPU_FLOPS)
    # a shared CPU: load 10 on 2 cores leaves a 2-thread run 2 x 2 / 10 = 0.4 threads' worth
    assert est.cpu_share(2, load=10, cores=2) == pytest.approx(0.4) and est.cpu_share(2, load=0.3, cores=2) == 2
    assert est.cpu_share(1, load=1.5, cores=2) == 1 and est.cpu_share(4, load=2, cores=2) == 2
    loaded = est.estimate_seconds(1000, 10 ** 8, device="cpu", threads=2, load=10, cores=2)
    assert loaded == pytest.approx(t * 2 / 0.4)
    assert [est.human_seconds(s) for s in (0.2, 7.4, 31, 240, 725, 9000)] == \
        ["under 1 s", "about 7 s", "about 30 s", "about 4 min", "about 12 min", "about 2.5 h"]
    line = est.estimate_line("align", model="m", params=118_000_000, seconds=31, device="cpu", threads=2, langs=27,
                             texts=200, layers=13, cores=2)
    assert line.startswith("xling: estimate: align: 27 languages x 200 sentences x 13 layers on m (118M params, cpu, "
                           "2 threads): about 30 s")
    busy = est.estimate_line("align", model="m", params=10 ** 8, seconds=31, threads=2, langs=2, texts=2, layers=2,
                             load=10, cores=2)
    assert "2 threads; load 10.0 on 2 cores, counted as 0.4 threads): about 30 s" in busy
    assert "1 language x 1 sentence x 1 layer" in est.estimate_line("a", model="m", params=10 ** 9, seconds=1, langs=1,
                                                                    texts=1, layers=1, device="cuda")


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_parameter_count_from_the_config_is_close_to_the_model(kind):
    import transformers

    from xling.engine.estimate import forward_params, model_params

    if kind == "bert":
        cfg = transformers.BertConfig(vocab_size=5000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=1024)
        model = transformers.BertModel(cfg)
    else:
        cfg = transformers.LlamaConfig(vocab_size=5000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                       intermediate_size=688)
        model = transformers.LlamaModel(cfg)
    real = sum(p.numel() for p in model.parameters())
    assert model_params(cfg, model) == real
    assert model_params(cfg) == pytest.approx(real, rel=0.1)
    assert model_params(cfg.to_dict()) == model_params(cfg)
    compute = real - model.get_input_embeddings().weight.numel()  # a table lookup costs no arithmetic
    assert forward_params(cfg, model) == compute
    assert forward_params(cfg) == pytest.approx(compute, rel=0.15) and forward_params(cfg.to_dict()) == forward_params(cfg)


def test_eta_is_measured_after_the_first_batch():
    from xling.engine.estimate import Eta

    now = [0.0]
    eta = Eta(1000, clock=lambda: now[0])
    now[0] = 5.0  # the first batch (loading the weights) is not counted
    assert eta.update(10) is None
    now[0] = 5.01  # a cached language arrives at once: it restarts the clock
    assert eta.update(200) is None
    now[0] = 7.01  # 20 sentences in 2 s: 10/s, 770 left
    line = eta.update(20)
    assert line == "xling: measured: 10 sentences/s: about 80 s left"
    now[0] = 9.0
    assert eta.update(20) is None  # said once


def test_align_says_its_estimate_first_and_counts_cached_languages(tmp_path, monkeypatch, capsys):
    import tiny_models

    from xling.data.corpus import ParallelCorpus
    from xling.models.loading import from_objects
    from xling.recipes.align.run import align

    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    codes = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}
    corpus = ParallelCorpus("tiny", {codes[k]: v for k, v in tiny_models.PARALLEL.items()})
    model, tok = tiny_models.build("xlmr")
    lm = from_objects(model, tok, "tiny-xlmr")
    n = len(corpus)
    align(lm=lm, corpus=corpus, out=None, store=None, progress=True, metrics=["mexa"])
    first = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xling: estimate:")]
    assert len(first) == 1 and first[0].startswith(f"xling: estimate: align: 4 languages x {n} sentences x 4 layers on "
                                                   "tiny-xlmr (")
    assert "(a second run reads the embeddings from the cache)" in first[0]
    align(lm=lm, corpus=corpus, out=None, store=None, progress=True, metrics=["mexa"])
    again = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xling: estimate:")]
    assert len(again) == 1 and "(4 of 4 languages already embedded)" in again[0] and "under 1 s" in again[0]
