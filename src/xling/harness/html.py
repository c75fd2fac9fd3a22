"""Self-contained HTML reports: inline CSS and SVG, one small optional script, no network.

A report opens offline in any browser and can be mailed as one file. Alignment
reports hold, per metric, a language x layer heatmap, the best layer of each
language, and the run's configuration.
"""

from __future__ import annotations

import html
from typing import Iterable

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1320px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}.scroll{overflow-x:auto;max-width:100%}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}td.l{white-space:nowrap}.muted{color:#777;font-size:.85rem}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e4e8f0}
td.best{font-weight:700;background:#eef6e8}
.headline{background:#f3f6fb;border-left:4px solid #3b528b;padding:.6rem 1rem;margin:1rem 0;font-size:1.02rem}
.headline p{margin:.2rem 0}.note{color:#8a5300}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}.card{flex:0 0 auto;max-width:100%;overflow-x:auto}
svg{max-width:100%;height:auto}svg text{font-family:system-ui,sans-serif}
svg text.v{pointer-events:none}svg .lg{cursor:pointer}svg .lg.off{opacity:.3}svg .s.off{display:none}
svg.hl .s{opacity:.12}svg.hl .s.on{opacity:1}svg.hl .s.on polyline{stroke-width:3.5}
"""

#: The reports' only script: sortable tables and clickable/hoverable legends. Hand-written, no data
#: in it, and optional: every value is already in the HTML and SVG when scripts are off.
JS = """(function(){
function num(t){var v=parseFloat(t);return isNaN(v)?null:v}
function key(r,i){var c=r.children[i];return c?(c.getAttribute('data-v')||c.textContent).trim():''}
document.querySelectorAll('table.sortable').forEach(function(t){
var hr=t.querySelector('tr');if(!hr)return;
Array.prototype.forEach.call(hr.children,function(th,i){th.title='click to sort';
th.addEventListener('click',function(){var asc=th.getAttribute('data-asc')!=='1';
Array.prototype.forEach.call(hr.children,function(h){h.removeAttribute('data-asc')});th.setAttribute('data-asc',asc?'1':'0');
var rows=Array.prototype.slice.call(t.querySelectorAll('tr')).filter(function(r){return r!==hr&&!r.hasAttribute('data-fixed')});
rows.sort(function(a,b){var x=key(a,i),y=key(b,i),nx=num(x),ny=num(y);
var d=(nx!==null&&ny!==null)?nx-ny:(nx!==null?-1:(ny!==null?1:x.localeCompare(y)));return asc?d:-d});
var fixed=Array.prototype.slice.call(t.querySelectorAll('tr[data-fixed]'));
rows.concat(fixed).forEach(function(r){r.parentNode.appendChild(r)})})})});
document.querySelectorAll('svg .lg').forEach(function(el){var svg=el.ownerSVGElement,k=el.getAttribute('data-s');
function mine(){return svg.querySelectorAll('.s[data-s="'+k+'"]')}
el.addEventListener('click',function(){var off=!el.classList.contains('off');el.classList.toggle('off',off);
mine().forEach(function(s){s.classList.toggle('off',off)})});
el.addEventListener('mouseenter',function(){svg.classList.add('hl');mine().forEach(function(s){s.classList.add('on')})});
el.addEventListener('mouseleave',function(){svg.classList.remove('hl');mine().forEach(function(s){s.classList.remove('on')})})});
})();"""

SCRIPT_TAG = f"<script>{JS}</script>"

# Viridis, sampled at 9 points; values are interpolated linearly between them.
_VIRIDIS = [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
            (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)]


def esc(value) -> str:
    """Any value as HTML text or a quoted attribute value: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """One way to show a number in every report: floats with ``digits`` decimals (no ``-0.000``),
    integers as they are, ``None`` as a dash, NaN as ``undefined`` (say why next to it)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "undefined"
        if value in (float("inf"), float("-inf")):
            return "∞" if value > 0 else "-∞"
        s = f"{value:.{digits}f}"
        return s[1:] if s.startswith("-") and not s.strip("-0.") else s
    return str(value)


def fmt_signed(value, digits: int = 3) -> str:
    """``fmt`` with a sign: ``+0.012``, ``-0.004``."""
    s = fmt(value, digits)
    return s if s.startswith("-") or not s[:1].isdigit() else "+" + s


def display_lang(code: str) -> str:
    """``German (deu_Latn)``; the code alone when no name is known (or it is not a language code)."""
    from xling.data.langcodes import short_lang_name

    name = short_lang_name(code)
    return code if name == code else f"{name} ({code})"


def plural(n, word: str, words: str | None = None) -> str:
    """``1 language``, ``2 languages`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def text_color(fill: str) -> str:
    """Black or white, whichever reads better on ``fill`` (``#rrggbb``): WCAG relative luminance,
    the one with the larger contrast ratio."""
    rgb = [int(fill.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lum = sum(w * (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
              for w, c in zip((0.2126, 0.7152, 0.0722), rgb))
    return "#000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#fff"


def svg_label(text, max_px: float, size: float, **attrs) -> str:
    """An SVG ``<text>``: the whole ``text`` when it fits in ``max_px``, else cut with an ellipsis and the
    full text as its ``<title>`` tooltip (nothing is ever clipped silently)."""
    full = str(text)
    shown = full
    if _text_width(full, size) > max_px:
        keep = max(1, int((max_px - 4) / (size * 0.62)) - 1)
        shown = full[:keep].rstrip() + "…"
    a = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    tip = f"<title>{esc(full)}</title>" if shown != full else ""
    return f'<text font-size="{size}"{a}>{tip}{esc(shown)}</text>'


def color(t: float) -> str:
    t = 0.0 if t != t else min(1.0, max(0.0, t))  # NaN -> 0
    x = t * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    f = x - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return "#%02x%02x%02x" % tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))


def _text_width(text: str, size: float) -> float:
    """A generous estimate of a text's width in px (system-ui, mostly Latin)."""
    return len(str(text)) * size * 0.62 + 4


def colorbar_svg(x: float, y: float, height: float, lo: float, hi: float, label: str, lower_is_better: bool) -> str:
    """A vertical colour bar: high values on top, five labelled ticks, and which way is better."""
    out = [f'<text x="{x}" y="{y - 8}" font-size="11" font-weight="600">{esc(label)}</text>']
    steps = 24
    for k in range(steps):
        t = 1 - (k + 0.5) / steps
        out.append(f'<rect x="{x}" y="{y + k * height / steps:.1f}" width="14" height="{height / steps + 0.6:.1f}" '
                   f'fill="{color(t)}"/>')
    out.append(f'<rect x="{x}" y="{y}" width="14" height="{height}" fill="none" stroke="#888"/>')
    for k in range(5):
        v = hi - (hi - lo) * k / 4
        ty = y + height * k / 4
        out.append(f'<line x1="{x + 14}" y1="{ty:.1f}" x2="{x + 18}" y2="{ty:.1f}" stroke="#444"/>')
        out.append(f'<text x="{x + 21}" y="{ty + 4:.1f}" font-size="11">{esc(fmt(v, 2))}</text>')
    better = "lower is better" if lower_is_better else "higher is better"
    out.append(f'<text x="{x}" y="{y + height + 16}" font-size="11" font-weight="{600 if lower_is_better else 400}">'
               f'{better}</text>')
    return "".join(out)


def heatmap_svg(title: str, rows: list[str], cols: list[int], values: dict[str, dict[int, float]],
                lo: float | None = None, hi: float | None = None, reverse: bool = False,
                labels: dict[str, str] | None = None, best: dict[str, int] | None = None) -> str:
    """A rows x cols heatmap with a labelled colour bar.

    Colours always follow the value (bright = high); ``reverse`` (lower is better, errors) is said in
    the title and under the colour bar instead of flipping the scale. ``labels`` maps a row to its
    display name; ``best`` maps a row to its best column, outlined in red. Every cell shows its value
    (black or white text, whichever contrasts more with the cell's colour) and is wide enough for it, so
    the heatmap is sized by its cell count; the title and labels are never clipped.
    """
    flat = [values[r][c] for r in rows for c in cols if c in values.get(r, {}) and values[r][c] == values[r][c]]
    lo = (min(flat) if flat else 0.0) if lo is None else lo
    hi = (max(flat) if flat else 1.0) if hi is None else hi
    span = (hi - lo) or 1.0
    labels = labels or {}
    shown = [labels.get(r, r) for r in rows]
    digits = 2 if _bounded_range(lo, hi) else 3
    cell_text = {(r, c): fmt(values[r][c], digits).replace("0.", ".", 1) if digits == 2 else fmt(values[r][c], digits)
                 for r in rows for c in cols if values.get(r, {}).get(c) is not None}
    # every cell is wide enough for its number (9 px text): the heatmap grows with its cell count
    cw = int(max(24, max((_text_width(t, 9) for t in cell_text.values()), default=0) + 3))
    ch = 19
    left = int(max(60, max((_text_width(x, 12) for x in shown), default=40) + 10))
    top = 44
    grid_h = ch * len(rows)
    bar_h = max(110, min(grid_h, 260))
    name = f"{title} (lower is better)" if reverse else title
    caption = "layer (0 = embeddings)" + ("; red outline: best layer of the language" if best else "")
    width = int(max(left + cw * len(cols) + 110, _text_width(name, 14) + 4, left + _text_width(caption, 11)))
    height = top + max(grid_h, bar_h + 24) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(name)}">',
           f'<text x="0" y="15" font-size="14" font-weight="600">{esc(name)}</text>']
    for j, c in enumerate(cols):
        out.append(f'<text x="{left + j * cw + cw / 2}" y="{top - 5}" font-size="10" text-anchor="middle">'
                   f'{esc(c)}</text>')
    for i, r in enumerate(rows):
        y = top + i * ch
        out.append(f'<text x="{left - 5}" y="{y + ch - 5}" font-size="12" text-anchor="end">{esc(shown[i])}</text>')
        for j, c in enumerate(cols):
            v = values.get(r, {}).get(c)
            if v is None:
                continue
            fill = color((v - lo) / span)
            out.append(
                f'<rect class="cell" x="{left + j * cw}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{fill}">'
                f'<title>{esc(shown[i])}, layer {esc(c)}: {esc(fmt(v))}</title></rect>'
                f'<text class="v" x="{left + j * cw + (cw - 1) / 2:.1f}" y="{y + ch - 6}" font-size="9" '
                f'text-anchor="middle" fill="{text_color(fill)}">{esc(cell_text[(r, c)])}</text>'
            )
        if best and r in best and best[r] in cols:
            j = cols.index(best[r])
            out.append(f'<rect x="{left + j * cw + 0.5}" y="{y + 0.5}" width="{cw - 2}" height="{ch - 2}" fill="none" '
                       f'stroke="#e8112d" stroke-width="2"><title>{esc(shown[i])}: best layer '
                       f'{esc(best[r])}</title></rect>')
    out.append(f'<text x="{left}" y="{height - 8}" font-size="11">{esc(caption)}</text>')  # below the colour bar
    out.append(colorbar_svg(left + cw * len(cols) + 16, top + 8, bar_h, lo, hi, "value", reverse))
    out.append("</svg>")
    return "".join(out)


def table_html(head: list[str], rows: Iterable[list], left_cols: int = 1, sortable: bool = False,
               marks: set[tuple[int, int]] | None = None) -> str:
    """A table; floats through :func:`fmt`. ``sortable``: headers sort on click (when scripts run);
    ``marks``: ``(row, column)`` cells drawn as best (bold, shaded)."""
    cls = lambda i: ' class="l"' if i < left_cols else ""  # noqa: E731
    klass = ' class="sortable"' if sortable else ""
    parts = [f'<div class="scroll"><table{klass}><tr>'
             + "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    for ri, r in enumerate(rows):
        cells = []
        for i, v in enumerate(r):
            s = fmt(v)
            c = cls(i)
            if marks and (ri, i) in marks:
                c = ' class="best"' if not c else ' class="l best"'
            cells.append(f"<td{c}>{esc(s)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    return "".join(parts)


def headline_html(sentences: list[str]) -> str:
    """The finding in the first screen; each sentence is already-escaped HTML."""
    return '<div class="headline">' + "".join(f"<p>{s}</p>" for s in sentences if s) + "</div>"


def page(title: str, body: str, script: bool = False) -> str:
    """The whole document; ``script`` adds :data:`JS` (sortable tables, legends), the only script ever."""
    tail = SCRIPT_TAG if script else ""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}{tail}</body></html>\n")


_BOUNDED = ("mexa", "retrieval", "xsim_err", "bitext", "cka", "anc")
#: Metrics plotted per layer and language in the align report, when the run has them.
_KEY_METRICS = ("mexa", "retrieval_p2l@1", "xsim_err_p2l", "bitext_f1", "cka", "anc")


def _bounded_range(lo: float, hi: float) -> bool:
    """Values on a 0..1 scale: printed with two decimals and no leading zero (``.85``) in heatmap cells."""
    return lo is not None and hi is not None and -1e-9 <= lo and hi <= 1 + 1e-9


def _bounded(metric: str) -> bool:
    return metric.startswith(_BOUNDED) and metric != "anc_signed"


def metric_range(metric: str, values: Iterable[float]) -> tuple[float, float]:
    """0..1 for bounded metrics, else the data's own min..max."""
    if _bounded(metric):
        return 0.0, 1.0
    vals = [v for v in values if v == v]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def render_align_report(result) -> str:
    """HTML for an :class:`~xling.harness.alignment.AlignResult`."""
    from xling.data.langcodes import short_lang_name
    from xling.methods.metrics import lower_is_better as _lower_is_better

    metrics = result.metrics()
    summ = {(s["lang"], s["metric"]): s for s in result.summary()}
    main = "mexa" if "mexa" in metrics else metrics[0]
    lower = _lower_is_better(main)
    langs = sorted(result.langs, key=lambda lang: (1 if lower else -1) * summ[(lang, main)]["mean"])
    names = {lang: display_lang(lang) for lang in result.langs}
    best_l, best_v = result.best_layer(main)
    main_vals = [r["value"] for r in result.rows if r["metric"] == main]
    mean_all = sum(main_vals) / len(main_vals) if main_vals else float("nan")
    first, last = langs[0], langs[-1]
    better = "lowest" if lower else "highest"
    head = [f"Best layer by mean {esc(main)}{' (lower is better)' if lower else ''}: <b>{esc(best_l)}</b> of "
            f"{esc(result.layers[0])}..{esc(result.layers[-1])}, mean over {plural(len(result.langs), 'language')} "
            f"<b>{esc(fmt(best_v))}</b> (mean over all layers {esc(fmt(mean_all))}).",
            f"{better.capitalize()} mean {esc(main)}: <b>{esc(names[first])}</b> {esc(fmt(summ[(first, main)]['mean']))}"
            + (f"; {'highest' if lower else 'lowest'}: <b>{esc(names[last])}</b> "
               f"{esc(fmt(summ[(last, main)]['mean']))}." if last != first else ".")]
    from xling.methods.chance import small_sample_note

    if small_sample_note(result.n_sentences):
        head.insert(0, f"<b>Warning</b>: {esc(small_sample_note(result.n_sentences))}.")
    body = [f"<h1>Cross-lingual alignment: {esc(result.model)}</h1>", headline_html(head),
            f"<p>{plural(len(result.langs), 'language')} against pivot <b>{esc(display_lang(result.pivot))}</b> on "
            f"<b>{esc(result.corpus)}</b>, {esc(result.n_sentences)} parallel sentences each; "
            f"pooling <b>{esc(result.pooling)}</b>; hidden states {esc(result.layers[0])}..{esc(result.layers[-1])} "
            f"(0 = embeddings).</p>"]

    body.append("<h2>Per language</h2>")
    key = ("mexa", "retrieval_p2l@1", "retrieval_l2p@1", "xsim_err_p2l", "xsim_err_l2p", "bitext_f1", "cka", "anc", "svcca")
    extra = [m for m in metrics if m != main and m in key] or [m for m in metrics if m != main]
    best_word = "min" if lower else "max"
    thead = ["lang", "name", f"{main} mean", f"{main} {best_word}", "best layer"] + [f"{m} @best" for m in extra]
    rows, marks = [], set()
    top_mean = min if lower else max
    top = top_mean(summ[(lang, main)]["mean"] for lang in langs)
    for i, lang in enumerate(langs):
        s = summ[(lang, main)]
        row = [lang, short_lang_name(lang), s["mean"], s["best"], s["best_layer"]]
        row += [result.values(m)[lang].get(s["best_layer"], float("nan")) for m in extra]
        if s["mean"] == top:
            marks.add((i, 2))
        rows.append(row)
    body.append(table_html(thead, rows, left_cols=2, sortable=True, marks=marks))
    body.append(f'<p class="muted">Best layer: each language\'s own best layer by {esc(main)}; the other metrics are '
                f'at that layer. Click a header to sort. Every metric at every layer is in alignment.csv.</p>')

    plotted = [m for m in _KEY_METRICS if m in metrics] or metrics[:3]
    body.append("<h2>Per layer and language</h2>")
    body.append('<p class="muted">One line per language; hover a name in the legend to highlight its line, click it '
                'to hide it. The dashed line is the best layer by mean.</p><div class="grid">')
    for m in plotted:
        vals = result.values(m)
        series = {names[lang]: [(layer, vals.get(lang, {}).get(layer, float("nan"))) for layer in result.layers]
                  for lang in langs}
        lo, hi = metric_range(m, [v for d in vals.values() for v in d.values()])
        mb, _ = result.best_layer(m)
        title = f"{m} per layer" + (" (lower is better)" if _lower_is_better(m) else "")
        body.append('<div class="card">' + line_chart_svg(title, series, "layer (0 = embeddings)", m, lo=lo, hi=hi,
                                                          vline=(mb, f"best {mb}"), integer_x=True, width=380,
                                                          height=300) + "</div>")
    body.append("</div>")

    body.append("<h2>Layer x language heatmaps</h2>")
    body.append('<p class="muted">Colours follow the value (bright = high) with each metric\'s own scale: 0..1 for '
                'bounded metrics, the data\'s min..max otherwise. For errors (xSIM) lower is better, as each title '
                'says; the red outline marks each language\'s best layer; every cell shows its value.</p><div class="grid">')
    for m in metrics:
        vals = result.values(m)
        lo, hi = metric_range(m, [v for d in vals.values() for v in d.values()])
        bests = {lang: summ[(lang, m)]["best_layer"] for lang in langs if (lang, m) in summ}
        body.append('<div class="card">' + heatmap_svg(m, langs, result.layers, vals, lo=lo, hi=hi,
                                                       reverse=_lower_is_better(m), labels=names, best=bests) + "</div>")
    body.append("</div>")

    body.append("<h2>Mean over languages, per layer</h2>")
    per_layer, marks = [], set()
    means_by_metric: dict[str, dict[int, float]] = {}
    for m in metrics:
        per = {}
        for layer in result.layers:
            v = [r["value"] for r in result.rows if r["metric"] == m and r["layer"] == layer]
            per[layer] = sum(v) / len(v) if v else float("nan")
        means_by_metric[m] = per
    for i, layer in enumerate(result.layers):
        per_layer.append([layer, *(means_by_metric[m][layer] for m in metrics)])
    for j, m in enumerate(metrics):
        per = {k: v for k, v in means_by_metric[m].items() if v == v}
        if per:
            pick = min if _lower_is_better(m) else max
            b = pick(per, key=lambda k: per[k])
            marks.add((result.layers.index(b), j + 1))
    body.append(table_html(["layer", *metrics], per_layer, sortable=True, marks=marks))
    body.append('<p class="muted">Shaded: the best layer of each metric.</p>')

    body.append("<h2>Run</h2>")
    info = [["run id", result.run_id], ["model", result.model], ["corpus", result.corpus],
            ["metrics", ", ".join(result.config.metrics)], ["timings (s)", ", ".join(f"{k}={v}" for k, v in result.timings.items())]]
    info += [[k, str(v)] for k, v in result.meta.items() if k not in ("corpus_meta",)]
    body.append(table_html(["", ""], info, left_cols=2))
    body.append('<p class="muted">Definitions: MEXA (Kargaran et al. 2024), strict both directions; retrieval '
                'accuracy (XTREME); xSIM error with ratio margin, k=4 (Artetxe &amp; Schwenk 2019); bitext-mining F1 '
                '(MTEB); linear CKA (Kornblith et al. 2019); ANC (Del &amp; Fishel). Generated by xling.</p>')
    return page(f"xling align: {result.model}", "".join(body), script=True)


# ----------------------------------------------------------------------------- bar charts and scatter plots


def matrix_svg(title: str, rows: list[str], cols: list[str], values: dict[str, dict[str, float]],
               lo: float | None = None, hi: float | None = None, note: dict | None = None,
               axes: tuple[str, str] = ("source", "target")) -> str:
    """A rows x cols heatmap with a value legend; every label and value escaped. ``axes``: what the rows and the
    columns are (the caption and each cell's tooltip say so).

    Sized by its cell count: each cell is wide enough for its value, printed in it in black or white
    (whichever contrasts more with the cell's colour); labels, title and legend are measured so that
    nothing is clipped, however few the columns.
    """
    flat = [values[r][c] for r in rows for c in cols if values.get(r, {}).get(c) is not None]
    lo = (min(flat) if flat else 0.0) if lo is None else lo
    hi = (max(flat) if flat else 1.0) if hi is None else hi
    span = (hi - lo) or 1.0
    shown = {(r, c): fmt(float(values[r][c]), 2) for r in rows for c in cols if values.get(r, {}).get(c) is not None}
    cw = int(max(30, max((_text_width(t, 10) for t in shown.values()), default=0) + 4))
    ch = 20
    left = int(max(60, max((_text_width(r, 11) for r in rows), default=0) + 8))
    col_h = max((_text_width(c, 10) for c in cols), default=0) * 0.87  # labels at -60 degrees
    top = int(max(40, 24 + col_h + 8))
    grid_w = cw * len(cols)
    caption = f"{axes[1]} (columns); {axes[0]} (rows)"
    legend_x = left + grid_w + 12
    width = int(max(legend_x + 16 + _text_width(f"{hi:.2f}", 10) + 4, _text_width(title, 13) + 4,
                    left + _text_width(caption, 10), left + grid_w + max((_text_width(c, 10) for c in cols[-1:]),
                                                                         default=0) * 0.5 + 4))
    height = int(top + max(ch * len(rows), 120) + 30)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(title)}">', f'<text x="0" y="14" font-size="13" font-weight="600">{esc(title)}</text>']
    for j, c in enumerate(cols):
        x = left + j * cw + cw / 2
        out.append(f'<text x="{x}" y="{top - 6}" font-size="10" transform="rotate(-60 {x} {top - 6})">{esc(c)}</text>')
    for i, r in enumerate(rows):
        y = top + i * ch
        out.append(f'<text x="{left - 4}" y="{y + ch - 6}" font-size="11" text-anchor="end">{esc(r)}</text>')
        for j, c in enumerate(cols):
            v = values.get(r, {}).get(c)
            if v is None:
                continue
            fill = color((v - lo) / span)
            tip = f"{axes[0]} {r}, {axes[1]} {c}: {v:.3f}" + (f" {note[r][c]}" if note and note.get(r, {}).get(c)
                                                               else "")
            out.append(f'<rect class="cell" x="{left + j * cw}" y="{y}" width="{cw - 1}" height="{ch - 1}" '
                       f'fill="{fill}"><title>{esc(tip)}</title></rect>'
                       f'<text class="v" x="{left + j * cw + (cw - 1) / 2:.1f}" y="{y + ch - 6}" font-size="10" '
                       f'text-anchor="middle" fill="{text_color(fill)}">'
                       f'{esc(shown[(r, c)])}</text>')
    for k in range(10):
        out.append(f'<rect x="{legend_x}" y="{top + k * 12}" width="12" height="12" fill="{color(1 - k / 9)}"/>')
    out.append(f'<text x="{legend_x + 16}" y="{top + 10}" font-size="10">{esc(f"{hi:.2f}")}</text>')
    out.append(f'<text x="{legend_x + 16}" y="{top + 118}" font-size="10">{esc(f"{lo:.2f}")}</text>')
    out.append(f'<text x="{left}" y="{height - 8}" font-size="10">{esc(caption)}</text></svg>')
    return "".join(out)


def bar_chart_svg(title: str, items: list[tuple[str, float]], lo: float = 0.0, hi: float | None = None,
                  highlight: set[str] | None = None, ref: float | None = None, ref_label: str = "",
                  refs: list[tuple[float, str]] | None = None) -> str:
    """Horizontal bars, one per ``(label, value)``; ``highlight`` labels drawn darker; ``ref`` (or several
    ``refs``: ``(value, label)``) dashed reference lines, each labelled with its name and value."""
    lines = ([(ref, ref_label)] if ref is not None else []) + list(refs or [])
    lines = [(v, lab) for v, lab in lines if v is not None and v == v]
    vals = [v for _, v in items if v == v]
    hi = max([*vals, *(v for v, _ in lines), lo + 1e-9]) if hi is None else hi
    span = (hi - lo) or 1.0
    left = int(min(300, max(90, max((_text_width(lab, 11) for lab, _ in items), default=40) + 12)))
    top, bh, width = 34 + 14 * len(lines), 18, 460
    height = top + bh * len(items) + 36
    total = int(max(left + width + 60, _text_width(title, 14) + 4))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" role="img" '
           f'aria-label="{esc(title)}">',
           f'<text x="0" y="15" font-size="14" font-weight="600">{esc(title)}</text>']
    for i, (label, v) in enumerate(items):
        y = top + i * bh
        out.append(svg_label(label, left - 6, 11, x=left - 4, y=y + bh - 5, text_anchor="end"))
        if v != v:
            out.append(f'<text x="{left + 3}" y="{y + bh - 5}" font-size="10" fill="#777">undefined</text>')
            continue
        w = max(0.0, min(1.0, (v - lo) / span)) * width
        fill = "#3b528b" if highlight and label in highlight else "#5ec962"
        out.append(f'<rect x="{left}" y="{y + 1}" width="{w:.1f}" height="{bh - 3}" fill="{fill}">'
                   f'<title>{esc(label)}: {esc(fmt(v))}</title></rect>')
        out.append(f'<text x="{left + w + 3:.1f}" y="{y + bh - 5}" font-size="10">{esc(fmt(v))}</text>')
    palette = ("#c0392b", "#7f8c8d", "#8e44ad", "#d35400")
    for k, (v, lab) in enumerate(lines):
        c = palette[k % len(palette)]
        x = left + max(0.0, min(1.0, (v - lo) / span)) * width
        ly = 30 + 14 * k
        out.append(f'<line x1="{x:.1f}" y1="{ly + 2}" x2="{x:.1f}" y2="{top + bh * len(items)}" stroke="{c}" '
                   f'stroke-width="1.5" stroke-dasharray="5 3"/>')
        anchor = "end" if x > left + width * 0.6 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<text x="{x + dx:.1f}" y="{ly}" font-size="11" fill="{c}" text-anchor="{anchor}">'
                   f'{esc(lab)} {esc(fmt(v))}</text>')
    axis_y = top + bh * len(items) + 14
    for k in range(5):
        t = lo + span * k / 4
        x = left + width * k / 4
        out.append(f'<text x="{x:.1f}" y="{axis_y}" font-size="10" text-anchor="middle">{esc(fmt(t, 2))}</text>')
    out.append("</svg>")
    return "".join(out)


#: Twenty distinguishable colours: Tableau 10, then ten more picked greedily (farthest first in CIELAB) from
#: named colours dark enough for a white page. Any two differ by CIE76 Delta E >= 26 (the old list had two
#: blues 4.6 apart). Beyond twenty, lines cycle the colours again with a dash pattern per round.
_SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf", "#000000", "#000075", "#f032e6", "#556b2f", "#ff1493", "#8b008b",
                  "#b8860b", "#005f5f", "#800000", "#4363d8")
_SERIES_DASHES = ("", "6 3", "2 2", "8 3 2 3")


def series_style(i: int) -> tuple[str, str]:
    """Colour and dash pattern ("": solid) of the ``i``-th line: no two of the first 80 lines look alike."""
    n = len(_SERIES_COLORS)
    return _SERIES_COLORS[i % n], _SERIES_DASHES[(i // n) % len(_SERIES_DASHES)]


def line_chart_svg(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
                   lo: float | None = 0.0, hi: float | None = 1.0, width: int = 520, height: int = 260,
                   vline: tuple[float, str] | None = None, integer_x: bool = False) -> str:
    """One line per series (``name -> [(x, y), ...]``) with a legend; x spans the data, y ``lo..hi``
    (``None``: the data's range). Legend entries highlight their line on hover and hide it on click
    when scripts run; ``vline`` = ``(x, label)`` a dashed marker (e.g. the best layer)."""
    ys = [y for pts in series.values() for _, y in pts if y == y]
    if lo is None or hi is None:
        dlo, dhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (dhi - dlo) * 0.05 or 0.5
        lo = dlo - pad if lo is None else lo
        hi = dhi + pad if hi is None else hi
    legend_w = int(min(280, max(60, max((_text_width(n, 11) for n in series), default=40) + 34)))
    left, top, right, bottom = 50, 40 if vline is not None else 30, legend_w, 42
    right = int(max(right, _text_width(title, 14) + 4 - left - width))  # the title is never clipped
    height = max(height, 16 * len(series) + 10)
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
           f'<text x="0" y="16" font-size="14" font-weight="600">{esc(title)}</text>']
    for k in range(5):
        t = lo + yspan * k / 4
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{esc(fmt(t, 2))}</text>')
    if integer_x and xs:
        n = int(x1 - x0) + 1
        step = max(1, -(-n // 12))
        ticks = [float(v) for v in range(int(x0), int(x1) + 1, step)]
    else:
        ticks = [x0 + xspan * k / 4 for k in range(5)]
    for t in ticks:
        label = str(int(t)) if integer_x else fmt(t, 2)
        out.append(f'<text x="{px(t):.1f}" y="{top + height + 14}" font-size="10" text-anchor="middle">{esc(label)}</text>')
    out.append(f'<text x="{left + width / 2}" y="{top + height + 32}" font-size="11" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="10" y="{top + height / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 10 {top + height / 2})">{esc(ylabel)}</text>')
    if vline is not None and x0 <= vline[0] <= x1:
        vx = px(vline[0])
        out.append(f'<line x1="{vx:.1f}" y1="{top}" x2="{vx:.1f}" y2="{top + height}" stroke="#444" '
                   f'stroke-dasharray="4 3"/>')
        # above the plot area, so neither a line nor the legend (right of the plot) covers it
        anchor = "end" if vx + _text_width(vline[1], 10) > left + width else "start"
        out.append(f'<text x="{vx + (-3 if anchor == "end" else 3):.1f}" y="{top - 4}" font-size="10" fill="#444" '
                   f'text-anchor="{anchor}" class="vl">{esc(vline[1])}</text>')
    for i, (name, pts) in enumerate(series.items()):
        c, pattern = series_style(i)
        dash = f' stroke-dasharray="{pattern}"' if pattern else ""
        good = [(x, y) for x, y in pts if y == y]
        out.append(f'<g class="s" data-s="{i}">')
        if good:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
            out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"{dash}>'
                       f'<title>{esc(name)}</title></polyline>')
            for x, y in good:
                xl = str(int(x)) if integer_x else fmt(x, 2)
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{c}"><title>{esc(name)}, '
                           f'{esc(xl)}: {esc(fmt(y))}</title></circle>')
        out.append("</g>")
        ly = top + 10 + 16 * i
        out.append(f'<g class="lg" data-s="{i}"><rect x="{left + width + 12}" y="{ly - 9}" width="16" height="12" '
                   f'fill="#fff"/><line x1="{left + width + 12}" y1="{ly - 3}" x2="{left + width + 28}" '
                   f'y2="{ly - 3}" stroke="{c}" stroke-width="3"{dash}/>'
                   + svg_label(name, right - 28, 11, x=left + width + 32, y=ly + 1) + '</g>')
    out.append("</svg>")
    return "".join(out)


def render_models_report(results: dict, metric: str = "mexa") -> str:
    """Several models' align runs on one corpus, side by side: per-layer curves and per-language bests.

    Layers are drawn at their relative depth (layer / number of layers), so a
    12-layer encoder and a 30-layer decoder share one axis.
    """
    from xling.methods.metrics import lower_is_better as _lower_is_better

    first = next(iter(results.values()))
    lower = _lower_is_better(metric)
    pick = min if lower else max
    series, bests = {}, {}
    for m, r in results.items():
        vals = r.values(metric)
        n = max(r.layers) or 1
        pts = []
        for layer in r.layers:
            v = [vals[lang][layer] for lang in vals if layer in vals[lang]]
            pts.append((layer / n, sum(v) / len(v) if v else float("nan")))
        series[m] = pts
        good = {layer: y for layer, (_, y) in zip(r.layers, pts) if y == y}
        if good:
            b = pick(good, key=lambda k: good[k])
            bests[m] = (b, good[b], len(r.layers))
    lo, hi = metric_range(metric, [y for pts in series.values() for _, y in pts])
    winner = pick(bests, key=lambda k: bests[k][1]) if bests else None
    head = [f"Best model by mean {esc(metric)}{' (lower is better)' if lower else ''}: <b>{esc(winner)}</b>, "
            f"{esc(fmt(bests[winner][1]))} at layer {esc(bests[winner][0])} of {esc(bests[winner][2] - 1)}."
            if winner else "",
            "; ".join(f"{esc(m)}: {esc(fmt(b[1]))} at layer {esc(b[0])}" for m, b in bests.items() if m != winner)]
    body = [f"<h1>Alignment of {len(results)} models on {esc(first.corpus)}</h1>", headline_html(head),
            f"<p>{esc(metric)} against {esc(display_lang(first.pivot))}, "
            f"{esc(first.n_sentences)} sentences per language; each model's own pooling "
            f"({', '.join(esc(m) + ': ' + esc(r.pooling) for m, r in results.items())}). "
            "Layers at relative depth, 0 = embeddings, 1 = last layer.</p>"]
    body.append('<div class="card">' + line_chart_svg(f"mean {metric} over languages, per layer", series,
                                                        "relative depth", f"mean {metric}", lo=lo, hi=hi) + "</div>")
    langs = sorted({lang for r in results.values() for lang in r.values(metric)})
    body.append('<h2>Per language</h2><p class="muted">Hover or click a model in a legend to highlight or hide '
                'it.</p><div class="grid">')
    for lang in langs:
        per = {}
        for m, r in results.items():
            vals = r.values(metric).get(lang, {})
            n = max(r.layers) or 1
            per[m] = [(layer / n, vals[layer]) for layer in r.layers if layer in vals]
        body.append('<div class="card">' + line_chart_svg(display_lang(lang), per, "relative depth",
                                                            metric, lo=lo, hi=hi, width=300, height=150) + "</div>")
    body.append("</div>")
    thead = ["language"] + [f"{m}: {metric} {'min' if lower else 'max'} (layer)" for m in results] \
        + [f"{m}: mean over layers" for m in results]
    rows, marks = [], set()
    for i, lang in enumerate(langs):
        row = [display_lang(lang)]
        means = []
        for m, r in results.items():
            vals = r.values(metric).get(lang, {})
            if vals:
                layer = pick(vals, key=lambda k: vals[k])
                row.append(f"{fmt(vals[layer])} ({layer})")
                means.append(sum(vals.values()) / len(vals))
            else:
                row.append("-")
                means.append(None)
        good = [v for v in means if v is not None]
        if good:
            marks.add((i, 1 + len(results) + means.index(pick(good))))
        rows.append(row + means)
    body.append(table_html(thead, rows, sortable=True, marks=marks))
    body.append('<p class="muted">Shaded: the best model for the language (mean over layers). Click a header to '
                'sort.</p>')
    runs = "".join(f"<li>{esc(m)}: run {esc(r.run_id)}, {esc(len(r.layers))} hidden states</li>" for m, r in results.items())
    body.append(f"<h2>Runs</h2><ul>{runs}</ul>")
    return page(f"xling align: {len(results)} models", "".join(body), script=True)


def correlation_note(xs, ys, what_x: str = "alignment values", what_y: str = "scores") -> str:
    """Why Pearson r is undefined, in words, or "" when it is defined."""
    vals = [(a, b) for a, b in zip(xs, ys) if a == a and b == b]
    if len(vals) < 2:
        return f"Pearson r undefined: only {len(vals)} language{'s' if len(vals) != 1 else ''}"
    if len({b for _, b in vals}) == 1:
        return f"Pearson r undefined: all {what_y} are equal ({fmt(vals[0][1])})"
    if len({a for a, _ in vals}) == 1:
        return f"Pearson r undefined: all {what_x} are equal ({fmt(vals[0][0])})"
    return ""


def _place_labels(items, bounds, size: float = 10.0):
    """Greedy label placement: each ``(label, px, py)`` gets the first of eight spots around its point that
    overlaps no placed label, no point and stays inside ``bounds``; labels that fit nowhere are dropped
    (their point keeps its tooltip). Returns ``[(label, x, y, anchor)]``."""
    x0, y0, x1, y1 = bounds
    h = size + 1
    boxes = [(px - 4, py - 4, px + 4, py + 4) for _, px, py in items]
    placed = []
    spots = ((6, -5, "start"), (6, 11, "start"), (-6, -5, "end"), (-6, 11, "end"), (0, -8, "middle"),
             (0, 17, "middle"), (9, 3, "start"), (-9, 3, "end"))
    for label, px, py in items:
        w = _text_width(label, size)
        for dx, dy, anchor in spots:
            tx, ty = px + dx, py + dy
            bx0 = tx if anchor == "start" else tx - w if anchor == "end" else tx - w / 2
            box = (bx0, ty - h + 2, bx0 + w, ty + 2)
            if box[0] < x0 or box[2] > x1 or box[1] < y0 or box[3] > y1:
                continue
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                continue
            boxes.append(box)
            placed.append((label, tx, ty, anchor))
            break
    return placed


def scatter_svg(title: str, points: list[tuple[str, float, float]], xlabel: str, ylabel: str,
                line: tuple[float, float] | None = None, hollow: set[str] | None = None,
                curve: list[tuple[float, float]] | None = None,
                band: tuple[list[float], list[float], list[float]] | None = None, band_label: str = "") -> str:
    """A labelled scatter plot; ``line`` = (slope, intercept) drawn over the x range, ``curve`` a polyline,
    ``band`` = ``(x, lo, hi)`` a shaded confidence band, ``hollow`` labels drawn as open circles (e.g.
    predicted, not measured). Labels never overlap: one that finds no free spot is left to the point's
    tooltip."""
    pts = [(lab, x, y) for lab, x, y in points if x == x and y == y]
    W, H, L, B, T, R = int(max(620, _text_width(title, 14) + 4)), 420, 62, 46, 30, 20
    if not pts:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="40" role="img" aria-label="{esc(title)}">'
                f'<text x="0" y="20">{esc(title)}: no data</text></svg>')
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if line is not None:
        y0, y1 = min(y0, line[0] * x0 + line[1], line[0] * x1 + line[1]), max(y1, line[0] * x0 + line[1], line[0] * x1 + line[1])
    if band and band[0]:
        y0, y1 = min(y0, *band[1]), max(y1, *band[2])
    padx, pady = (x1 - x0) * 0.06 or 0.05, (y1 - y0) * 0.08 or 0.05
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady
    sx = lambda v: L + (v - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    sy = lambda v: H - B - (v - y0) / (y1 - y0) * (H - B - T)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{esc(title)}">',
           f'<text x="0" y="15" font-size="14" font-weight="600">{esc(title)}</text>',
           f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - B - T}" fill="none" stroke="#ccc"/>']
    for k in range(5):
        xv, yv = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{H - B + 15}" font-size="10" text-anchor="middle">{esc(fmt(xv, 2))}</text>')
        out.append(f'<text x="{L - 4}" y="{sy(yv) + 3:.1f}" font-size="10" text-anchor="end">{esc(fmt(yv, 2))}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" font-size="12" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="12" y="{(T + H - B) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 12 {(T + H - B) / 2})">{esc(ylabel)}</text>')
    if band and band[0]:
        upper = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in zip(band[0], band[2]))
        lower = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in reversed(list(zip(band[0], band[1]))))
        out.append(f'<polygon points="{upper} {lower}" fill="#c0392b" fill-opacity="0.13" stroke="none">'
                   f'<title>{esc(band_label or "95% confidence band of the fitted line")}</title></polygon>')
    if line is not None:
        a, b = line
        lx0, lx1 = min(xs), max(xs)
        out.append(f'<line x1="{sx(lx0):.1f}" y1="{sy(a * lx0 + b):.1f}" x2="{sx(lx1):.1f}" y2="{sy(a * lx1 + b):.1f}" '
                   f'stroke="#c0392b" stroke-width="1.5"/>')
    if curve:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in curve)
        out.append(f'<polyline points="{path}" fill="none" stroke="#c0392b" stroke-dasharray="5 3"/>')
    for lab, x, y in pts:
        open_ = hollow and lab in hollow
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{"white" if open_ else "#3b528b"}" '
                   f'stroke="#3b528b"><title>{esc(lab)}: x={esc(fmt(x))}, y={esc(fmt(y))}</title></circle>')
    order = sorted(pts, key=lambda p: (p[2], p[1]), reverse=True)
    for lab, tx, ty, anchor in _place_labels([(lab, sx(x), sy(y)) for lab, x, y in order], (L, T, W - R, H - B)):
        out.append(f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="10" text-anchor="{anchor}">{esc(lab)}</text>')
    out.append("</svg>")
    return "".join(out)
