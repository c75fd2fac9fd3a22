"""The HTML report of ``xling eval --demos`` (:mod:`xling.recipes.eval.icl`), on the harness html kit; every
value escaped."""

from __future__ import annotations


def _ci(low, high, scale: float) -> str:
    from xling.harness.html import fmt

    if low is None or high is None or low != low or high != high:
        return "–"
    return f"[{fmt(low * scale, 1)}, {fmt(high * scale, 1)}]"


def icl_section(result) -> str:
    """The in-context-learning section: scores per source, the paired differences, the settings."""
    from xling.harness.html import display_lang, esc, fmt, fmt_signed, table_html

    gen = result.task_type == "generation"
    metric = "chrf" if gen else "accuracy"
    scale = 1.0 if gen else 100.0
    keys = list(dict.fromkeys((r["lang"], r["direction"]) for r in result.rows))

    def name(lang, direction):
        return display_lang(lang) + (f" {direction}" if direction else "")

    columns = list(dict.fromkeys([*result.demos, *(r["demos"] for r in result.rows)]))
    head = ["language"]
    for s in columns:
        head += [f"{s} ({'chrF' if gen else 'accuracy %'})", "95% interval"]
    if not gen:
        head.append("at chance (Wilson interval contains 1/labels)")
    rows = []
    for lang, direction in keys:
        row = [name(lang, direction)]
        chance = []
        for s in columns:
            r = next((x for x in result.rows if (x["lang"], x["direction"], x["demos"], x["metric"])
                      == (lang, direction, s, metric)), None)
            row += ["–", "–"] if r is None else [fmt(r["value"] * scale, 1), _ci(r["low"], r["high"], scale)]
            if r is not None and r.get("at_chance"):
                chance.append(s)
        if not gen:
            row.append(", ".join(chance) or "no")
        rows.append(row)
    diff_rows = []
    for d in result.differences:
        if d["metric"] != metric:
            continue
        zero = d.get("contains_zero")
        diff_rows.append([name(d["lang"], d["direction"]), f"{d['a']} - {d['b']}", fmt_signed(d["value"] * scale, 1),
                          _ci(d["low"], d["high"], scale), d["n"],
                          "yes: no difference shown" if zero else ("no" if zero is False else "–")])
    parts = [
        f"<h2>In-context learning: demonstration sources (k = {esc(result.shots)})</h2>",
        "<p>" + esc(
            f"Demonstrations from the train split only: source = {result.shots} fixed items in "
            f"{result.demo_source_lang} (the same for every test item and language); target = the same items in the "
            f"test language; retrieved = per test item, the {result.shots} nearest {result.demo_source_lang} train "
            f"items" + (f" by {result.encoder} (cosine similarity)" if result.encoder else "")
            + ("; vote = the majority label of those retrieved items, with no language model"
               if any(r["demos"] == "vote" for r in result.rows) else "")
            + ". Intervals: " + ("95% percentile bootstrap over items." if gen else "95% Wilson interval.")) + "</p>",
        table_html(head, rows),
        f"<h3>Paired differences ({esc('chrF points' if gen else 'accuracy points')})</h3>",
        "<p>" + esc("95% paired bootstrap interval over items: each resample draws the same items for both sources"
                    + (" and recomputes corpus chrF from them." if gen else ".")) + "</p>",
        table_html(["language", "difference", "value", "95% interval", "items", "interval contains 0"], diff_rows),
    ]
    if result.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("<h3>Runs in the results store</h3>" + table_html(
        ["demonstrations", "run id"], [[s, rid] for s, rid in result.run_ids.items()]))
    return "".join(parts)


def render_icl_report(result) -> str:
    from xling.harness.html import esc, page

    title = f"xling eval --demos: {result.model} on {result.task}"
    return page(title, f"<h1>{esc(title)}</h1>" + icl_section(result))


__all__ = ["icl_section", "render_icl_report"]
