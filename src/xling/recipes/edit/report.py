"""The HTML report of ``xling edit``: efficacy, propagation per language against the unedited base rate, and
locality, with intervals; everything escaped by the harness kit."""

from __future__ import annotations


def render_report(result) -> str:
    from xling.harness.html import bar_chart_svg, display_lang, esc, fmt, headline_html, matrix_svg, page, table_html
    from xling.recipes.edit.config import OTHER, SAME

    cfg = result.config
    edit_langs = result.meta["edit_langs"]
    body = [f"<h1>Knowledge edits: {esc(result.model_name)}</h1>"]
    sentences = [f"{len(result.meta['facts'])} facts of the CLDR fact probe edited to a distractor answer in "
                 f"{esc(', '.join(display_lang(e) for e in edit_langs))}; {esc(result.meta['method'])} "
                 f"(blocks {esc(result.layers[0])}-{esc(result.layers[-1])}). Each edit starts from the unedited "
                 f"model; every language is then asked the same fact, and {cfg.locality} unrelated facts."]
    get = {(r["edit_lang"], r["what"], r["lang"], r["group"]): r for r in result.summary}
    for e in edit_langs:
        eff = get.get((e, "efficacy", e, "edited"))
        same, other = get.get((e, "propagation", "all", SAME)), get.get((e, "propagation", "all", OTHER))
        loc = get.get((e, "locality", "all", "unrelated facts"))

        def say(r, what):
            if r is None or r["rate"] is None:
                return f"{what}: no items"
            ci = f" [{fmt(r['low'], 2)}, {fmt(r['high'], 2)}]" if r["low"] is not None else ""
            base = f" (unedited model: {fmt(r['base'], 2)})" if r.get("base") is not None else ""
            return f"{what} {fmt(r['rate'], 2)}{ci}{base}"

        sentences.append(f"Edited in {esc(display_lang(e))}: " + "; ".join(
            [say(eff, "efficacy"), say(same, "propagation to the same script"),
             say(other, "to other scripts"), say(loc, "locality")]) + ".")
        if same and other and same["low"] is not None and other["high"] is not None:
            if same["low"] > other["high"]:
                sentences.append("Edits reach languages of the edit language's script more often than others "
                                 "(the intervals do not overlap).")
            elif same["rate"] is not None and other["rate"] is not None:
                sentences.append("The same-script and other-script propagation rates are not distinguishable at "
                                 "this number of edits (overlapping intervals).")
    body.append(headline_html(sentences))
    # success rate per (edit language, language) as a matrix
    langs = result.langs
    values = {display_lang(e): {display_lang(r["lang"]): r["rate"] for r in result.summary
                                if r["edit_lang"] == e and r["what"] in ("efficacy", "propagation")
                                and r["lang"] != "all"} for e in edit_langs}
    body.append(matrix_svg("Share of edits whose new answer is given, per language", list(values),
                           [display_lang(x) for x in langs], values, lo=0.0, hi=1.0,
                           axes=("edit language", "asked in")))
    for e in edit_langs:
        items = [(display_lang(r["lang"]), r["rate"]) for r in result.summary
                 if r["edit_lang"] == e and r["what"] == "locality" and r["lang"] != "all"]
        if items:
            body.append(bar_chart_svg(f"Locality after edits in {display_lang(e)}: unrelated facts unchanged",
                                      items, lo=0.0, hi=1.0))
    head = ["edit language", "language", "group", "what", "n", "rate", "95% interval", "unedited base rate"]
    rows = [[display_lang(r["edit_lang"]), display_lang(r["lang"]) if r["lang"] != "all" else "all", r["group"],
             r["what"], r["n"], fmt(r["rate"], 3),
             f"[{fmt(r['low'], 2)}, {fmt(r['high'], 2)}]" if r["low"] is not None else "-",
             fmt(r["base"], 3) if r["base"] is not None else "-"] for r in result.summary]
    body.append("<h2>All rates</h2>" + table_html(head, rows, left_cols=4, sortable=True))
    body.append("<p>Per-language rates: Wilson intervals over edits; groups and locality: pooled, bootstrap over "
                "edits. Files: edits.csv (every edit in every language), locality.csv, summary.csv, run.json.</p>")
    return page(f"xling edit: {result.model_name}", "\n".join(body), script=True)
