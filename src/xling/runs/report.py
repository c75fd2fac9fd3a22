"""Self-contained HTML reports: inline CSS and SVG, no scripts, no network.

A report opens offline in any browser and can be mailed as one file. Alignment
reports hold, per metric, a language x layer heatmap, the best layer of each
language, and the run's configuration.
"""

from __future__ import annotations

import html
from typing import Iterable

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}.scroll{overflow-x:auto}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.muted{color:#777;font-size:.85rem}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}.card{flex:0 0 auto}
svg text{font-family:system-ui,sans-serif}
"""

# Viridis, sampled at 9 points; values are interpolated linearly between them.
_VIRIDIS = [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
            (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)]


def esc(value) -> str:
    """Any value as HTML text or a quoted attribute value: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def color(t: float) -> str:
    t = 0.0 if t != t else min(1.0, max(0.0, t))  # NaN -> 0
    x = t * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    f = x - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return "#%02x%02x%02x" % tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))


def heatmap_svg(title: str, rows: list[str], cols: list[int], values: dict[str, dict[int, float]],
                lo: float | None = None, hi: float | None = None, reverse: bool = False) -> str:
    """A rows x cols heatmap; ``reverse`` when lower is better (errors)."""
    flat = [values[r][c] for r in rows for c in cols if c in values.get(r, {})]
    lo = min(flat) if lo is None else lo
    hi = max(flat) if hi is None else hi
    span = (hi - lo) or 1.0
    cw, ch, left, top = max(18, min(34, 700 // max(1, len(cols)))), 16, 120, 34
    width, height = left + cw * len(cols) + 70, top + ch * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="0" y="14" font-size="13" font-weight="600">{html.escape(title)}</text>']
    for j, c in enumerate(cols):
        out.append(f'<text x="{left + j * cw + cw / 2}" y="{top - 4}" font-size="9" text-anchor="middle">{esc(c)}</text>')
    for i, r in enumerate(rows):
        y = top + i * ch
        out.append(f'<text x="{left - 4}" y="{y + ch - 4}" font-size="10" text-anchor="end">{html.escape(r)}</text>')
        for j, c in enumerate(cols):
            v = values.get(r, {}).get(c)
            if v is None:
                continue
            t = (v - lo) / span
            out.append(
                f'<rect x="{left + j * cw}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{color(1 - t if reverse else t)}">'
                f'<title>{html.escape(r)} layer {esc(c)}: {v:.4f}</title></rect>'
            )
    # legend
    lx = left + cw * len(cols) + 12
    for k in range(10):
        t = 1 - k / 9
        out.append(f'<rect x="{lx}" y="{top + k * 12}" width="12" height="12" fill="{color(1 - t if reverse else t)}"/>')
    out.append(f'<text x="{lx + 16}" y="{top + 10}" font-size="9">{hi:.2f}</text>')
    out.append(f'<text x="{lx + 16}" y="{top + 118}" font-size="9">{lo:.2f}</text>')
    out.append(f'<text x="{left + cw * len(cols) / 2}" y="{height - 6}" font-size="10" text-anchor="middle">layer</text>')
    out.append("</svg>")
    return "".join(out)


def table_html(head: list[str], rows: Iterable[list], left_cols: int = 1) -> str:
    cls = lambda i: ' class="l"' if i < left_cols else ""  # noqa: E731
    parts = ['<div class="scroll"><table><tr>' + "".join(f"<th{cls(i)}>{html.escape(str(h))}</th>" for i, h in enumerate(head)) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            s = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f"<td{cls(i)}>{html.escape(s)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    return "".join(parts)


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


_BOUNDED = ("mexa", "retrieval", "xsim_err", "bitext", "cka", "anc")


def render_align_report(result) -> str:
    """HTML for an :class:`~xling.runs.align.AlignResult`."""
    from xling.data.langcodes import lang_name
    from xling.runs.align import _lower_is_better

    metrics = result.metrics()
    summ = {(s["lang"], s["metric"]): s for s in result.summary()}
    main = "mexa" if "mexa" in metrics else metrics[0]
    langs = sorted(result.langs, key=lambda lang: -summ[(lang, main)]["mean"])
    best_l, best_v = result.best_layer(main)
    body = [f"<h1>Cross-lingual alignment: {html.escape(result.model)}</h1>",
            f"<p>{len(result.langs)} languages against pivot <b>{html.escape(result.pivot)}</b> on "
            f"<b>{html.escape(result.corpus)}</b>, {esc(result.n_sentences)} parallel sentences each; "
            f"pooling <b>{html.escape(result.pooling)}</b>; hidden states {esc(result.layers[0])}..{esc(result.layers[-1])} "
            f"(0 = embeddings). Best layer by mean {esc(main)}: <b>{esc(best_l)}</b> ({best_v:.3f}).</p>"]

    body.append("<h2>Per language</h2>")
    key = ("mexa", "retrieval_p2l@1", "retrieval_l2p@1", "xsim_err_p2l", "xsim_err_l2p", "bitext_f1", "cka", "anc", "svcca")
    extra = [m for m in metrics if m != main and m in key] or [m for m in metrics if m != main]
    head = ["lang", "name", f"{main} mean", f"{main} max", "best layer"] + [f"{m} @best" for m in extra]
    rows = []
    for lang in langs:
        s = summ[(lang, main)]
        row = [lang, lang_name(lang), s["mean"], s["best"], s["best_layer"]]
        row += [result.values(m)[lang].get(s["best_layer"], float("nan")) for m in extra]
        rows.append(row)
    body.append(table_html(head, rows, left_cols=2))
    body.append('<p class="muted">Values of the other metrics are at each language\'s best layer by '
                f'{esc(main)}. Every metric at every layer is in alignment.csv.</p>')

    body.append("<h2>Layer x language heatmaps</h2><div class=\"grid\">")
    for m in metrics:
        vals = result.values(m)
        bounded = m.startswith(_BOUNDED)
        body.append('<div class="card">' + heatmap_svg(
            m, langs, result.layers, vals, lo=0.0 if bounded and m != "anc_signed" else None,
            hi=1.0 if bounded and m != "anc_signed" else None, reverse=_lower_is_better(m)) + "</div>")
    body.append("</div>")

    body.append("<h2>Mean over languages, per layer</h2>")
    per_layer = []
    for layer in result.layers:
        row = [layer]
        for m in metrics:
            v = [r["value"] for r in result.rows if r["metric"] == m and r["layer"] == layer]
            row.append(sum(v) / len(v))
        per_layer.append(row)
    body.append(table_html(["layer", *metrics], per_layer))

    body.append("<h2>Run</h2>")
    info = [["run id", result.run_id], ["model", result.model], ["corpus", result.corpus],
            ["metrics", ", ".join(result.config.metrics)], ["timings (s)", ", ".join(f"{k}={v}" for k, v in result.timings.items())]]
    info += [[k, str(v)] for k, v in result.meta.items() if k not in ("corpus_meta",)]
    body.append(table_html(["", ""], info, left_cols=2))
    body.append('<p class="muted">Definitions: MEXA (Kargaran et al. 2024), strict both directions; retrieval '
                'accuracy (XTREME); xSIM error with ratio margin, k=4 (Artetxe &amp; Schwenk 2019); bitext-mining F1 '
                '(MTEB); linear CKA (Kornblith et al. 2019); ANC (Del &amp; Fishel). Generated by xling.</p>')
    return page(f"xling align: {result.model}", "".join(body))


# ----------------------------------------------------------------------------- bar charts and scatter plots


def bar_chart_svg(title: str, items: list[tuple[str, float]], lo: float = 0.0, hi: float | None = None,
                  highlight: set[str] | None = None, ref: float | None = None, ref_label: str = "") -> str:
    """Horizontal bars, one per ``(label, value)``; ``highlight`` labels drawn darker, ``ref`` a dashed line."""
    vals = [v for _, v in items if v == v]
    hi = max([*vals, lo + 1e-9]) if hi is None else hi
    span = (hi - lo) or 1.0
    left, top, bh, width = 130, 30, 16, 460
    height = top + bh * len(items) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="0" y="14" font-size="13" font-weight="600">{html.escape(title)}</text>']
    for i, (label, v) in enumerate(items):
        y = top + i * bh
        out.append(f'<text x="{left - 4}" y="{y + bh - 4}" font-size="10" text-anchor="end">{html.escape(label)}</text>')
        if v != v:
            continue
        w = max(0.0, min(1.0, (v - lo) / span)) * width
        fill = "#3b528b" if highlight and label in highlight else "#5ec962"
        out.append(f'<rect x="{left}" y="{y + 1}" width="{w:.1f}" height="{bh - 3}" fill="{fill}">'
                   f'<title>{html.escape(label)}: {v:.4f}</title></rect>')
        out.append(f'<text x="{left + w + 3:.1f}" y="{y + bh - 4}" font-size="9">{v:.3f}</text>')
    if ref is not None and ref == ref:
        x = left + max(0.0, min(1.0, (ref - lo) / span)) * width
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + bh * len(items)}" stroke="#c0392b" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 6}" font-size="9" fill="#c0392b" text-anchor="middle">'
                   f'{html.escape(ref_label)}</text>')
    axis_y = top + bh * len(items) + 12
    for k in range(5):
        t = lo + span * k / 4
        x = left + width * k / 4
        out.append(f'<text x="{x:.1f}" y="{axis_y}" font-size="9" text-anchor="middle">{t:.2f}</text>')
    out.append("</svg>")
    return "".join(out)


_SERIES_COLORS = ("#3b528b", "#e67e22", "#21918c", "#c0392b", "#8e44ad", "#5ec962", "#7f8c8d", "#d4ac0d")


def line_chart_svg(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
                   lo: float = 0.0, hi: float = 1.0, width: int = 520, height: int = 260) -> str:
    """One line per series (``name -> [(x, y), ...]``) with a legend; x spans the data, y ``lo..hi``."""
    left, top, right, bottom = 46, 28, 150, 40
    xs = [x for pts in series.values() for x, _ in pts]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    xspan = (x1 - x0) or 1.0
    yspan = (hi - lo) or 1.0

    def px(x):
        return left + (x - x0) / xspan * width

    def py(y):
        return top + (1 - (min(max(y, lo), hi) - lo) / yspan) * height

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + right}" height="{top + height + bottom}" '
           f'role="img" aria-label="{esc(title)}">',
           f'<text x="0" y="16" font-size="13" font-weight="600">{esc(title)}</text>']
    for k in range(5):
        t = lo + yspan * k / 4
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{t:.2f}</text>')
    for k in range(5):
        t = x0 + xspan * k / 4
        out.append(f'<text x="{px(t):.1f}" y="{top + height + 14}" font-size="9" text-anchor="middle">{t:.2f}</text>')
    out.append(f'<text x="{left + width / 2}" y="{top + height + 32}" font-size="10" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="10" y="{top + height / 2}" font-size="10" text-anchor="middle" '
               f'transform="rotate(-90 10 {top + height / 2})">{esc(ylabel)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = _SERIES_COLORS[i % len(_SERIES_COLORS)]
        good = [(x, y) for x, y in pts if y == y]
        if good:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
            out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"><title>{esc(name)}</title></polyline>')
            for x, y in good:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{c}"><title>{esc(name)}: {y:.3f}</title></circle>')
        ly = top + 12 + 16 * i
        out.append(f'<rect x="{left + width + 12}" y="{ly - 8}" width="12" height="3" fill="{c}"/>')
        out.append(f'<text x="{left + width + 28}" y="{ly - 4}" font-size="10">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def render_models_report(results: dict, metric: str = "mexa") -> str:
    """Several models' align runs on one corpus, side by side: per-layer curves and per-language bests.

    Layers are drawn at their relative depth (layer / number of layers), so a
    12-layer encoder and a 30-layer decoder share one axis.
    """
    from xling.data.langcodes import lang_name

    first = next(iter(results.values()))
    body = [f"<h1>Alignment of {len(results)} models on {esc(first.corpus)}</h1>",
            f"<p>{esc(metric)} against {esc(lang_name(first.pivot))} ({esc(first.pivot)}), "
            f"{esc(first.n_sentences)} sentences per language; each model's own pooling "
            f"({', '.join(esc(m) + ': ' + esc(r.pooling) for m, r in results.items())}). "
            "Layers at relative depth, 0 = embeddings, 1 = last layer.</p>"]
    series = {}
    for m, r in results.items():
        vals = r.values(metric)
        n = max(r.layers) or 1
        pts = []
        for layer in r.layers:
            v = [vals[lang][layer] for lang in vals if layer in vals[lang]]
            pts.append((layer / n, sum(v) / len(v) if v else float("nan")))
        series[m] = pts
    body.append('<div class="card">' + line_chart_svg(f"mean {metric} over languages, per layer", series,
                                                        "relative depth", f"mean {metric}") + "</div>")
    langs = sorted({lang for r in results.values() for lang in r.values(metric)})
    body.append('<div class="grid">')
    for lang in langs:
        per = {}
        for m, r in results.items():
            vals = r.values(metric).get(lang, {})
            n = max(r.layers) or 1
            per[m] = [(layer / n, vals[layer]) for layer in r.layers if layer in vals]
        body.append('<div class="card">' + line_chart_svg(f"{lang_name(lang)} ({lang})", per, "relative depth",
                                                            metric, width=300, height=150) + "</div>")
    body.append("</div>")
    head = ["language"] + [f"{m}: {metric} max (layer)" for m in results] + [f"{m}: mean over layers" for m in results]
    rows = []
    for lang in langs:
        row = [f"{lang_name(lang)} ({lang})"]
        means = []
        for m, r in results.items():
            vals = r.values(metric).get(lang, {})
            if vals:
                layer = max(vals, key=lambda k: vals[k])
                row.append(f"{vals[layer]:.3f} ({layer})")
                means.append(f"{sum(vals.values()) / len(vals):.3f}")
            else:
                row.append("-")
                means.append("-")
        rows.append(row + means)
    body.append("<h2>Per language</h2>" + table_html(head, rows))
    runs = "".join(f"<li>{esc(m)}: run {esc(r.run_id)}, {esc(len(r.layers))} hidden states</li>" for m, r in results.items())
    body.append(f"<h2>Runs</h2><ul>{runs}</ul>")
    return page(f"xling align: {len(results)} models", "".join(body))


def scatter_svg(title: str, points: list[tuple[str, float, float]], xlabel: str, ylabel: str,
                line: tuple[float, float] | None = None, hollow: set[str] | None = None,
                curve: list[tuple[float, float]] | None = None) -> str:
    """A labelled scatter plot; ``line`` = (slope, intercept) drawn over the x range, ``curve`` a polyline,
    ``hollow`` labels drawn as open circles (e.g. predicted, not measured)."""
    pts = [(lab, x, y) for lab, x, y in points if x == x and y == y]
    W, H, L, B, T, R = 560, 400, 60, 44, 28, 20
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="40"><text x="0" y="20">{html.escape(title)}: no data</text></svg>'
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if line is not None:
        y0, y1 = min(y0, line[0] * x0 + line[1], line[0] * x1 + line[1]), max(y1, line[0] * x0 + line[1], line[0] * x1 + line[1])
    padx, pady = (x1 - x0) * 0.06 or 0.05, (y1 - y0) * 0.08 or 0.05
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady
    sx = lambda v: L + (v - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    sy = lambda v: H - B - (v - y0) / (y1 - y0) * (H - B - T)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">',
           f'<text x="0" y="14" font-size="13" font-weight="600">{html.escape(title)}</text>',
           f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - B - T}" fill="none" stroke="#ccc"/>']
    for k in range(5):
        xv, yv = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{H - B + 14}" font-size="9" text-anchor="middle">{xv:.2f}</text>')
        out.append(f'<text x="{L - 4}" y="{sy(yv) + 3:.1f}" font-size="9" text-anchor="end">{yv:.2f}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="12" y="{(T + H - B) / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {(T + H - B) / 2})">{html.escape(ylabel)}</text>')
    if line is not None:
        a, b = line
        out.append(f'<line x1="{sx(x0):.1f}" y1="{sy(a * x0 + b):.1f}" x2="{sx(x1):.1f}" y2="{sy(a * x1 + b):.1f}" '
                   f'stroke="#c0392b" stroke-dasharray="5 3"/>')
    if curve:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in curve)
        out.append(f'<polyline points="{path}" fill="none" stroke="#c0392b" stroke-dasharray="5 3"/>')
    for lab, x, y in pts:
        open_ = hollow and lab in hollow
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{"white" if open_ else "#3b528b"}" '
                   f'stroke="#3b528b"><title>{html.escape(lab)}: x={x:.4f}, y={y:.4f}</title></circle>')
        out.append(f'<text x="{sx(x) + 5:.1f}" y="{sy(y) - 4:.1f}" font-size="9">{html.escape(lab)}</text>')
    out.append("</svg>")
    return "".join(out)
