"""The HTML report of ``xling transfer`` (a :class:`~xling.recipes.transfer.run.TransferResult`).

Same signature and information as ``xling.recipes.transfer.run.render_report``, read at a
glance: a headline (the best condition against the task module, its difference with
the paired bootstrap CI, the share of the gap to the ceiling it closes when the
summary has it; no best condition when every condition is within noise of chance,
and the run's warnings, e.g. a ceiling not above the reference), a bar chart of the
mean target score per condition with the task module's score and the ``translate-train`` ceiling as reference lines, and the
per-language x condition table.
"""

from __future__ import annotations


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _ci(s: dict) -> str:
    from xling.harness.html import fmt_signed

    d, lo, hi = _num(s.get("delta")), _num(s.get("delta_lo")), _num(s.get("delta_hi"))
    if d is None:
        return "–"
    if lo is None or hi is None:
        return f"{fmt_signed(d)} (no CI: the reference itself, or no bootstrap)"
    return f"{fmt_signed(d)} [{fmt_signed(lo)}, {fmt_signed(hi)}]"


def _lambdas(cfg: dict) -> str:
    if cfg.get("add_lambda") is not None:
        return f"= {cfg['add_lambda']}"
    lams = cfg.get("lambdas")
    return f"from {', '.join(str(x) for x in lams)}" if lams else "= 1.0"


def _swap(cfg: dict) -> str:
    swap = cfg.get("swap")
    if swap == "auto":
        return "from the depth-scaled grid (--swap auto)"
    if isinstance(swap, (list, tuple)):
        return "= " + "/".join(str(x) for x in swap)
    return "–"


def _selected(cfg: dict) -> str:
    return f"; choices made on {cfg['select_on']}" if cfg.get("select_on") else ""


def _gap(s: dict) -> str:
    from xling.harness.html import fmt

    g = _num(s.get("gap_closed"))
    if g is None:
        return "–"
    lo, hi = _num(s.get("gap_closed_lo")), _num(s.get("gap_closed_hi"))
    return f"{fmt(g)}" + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "")


def _translation_section(tr: dict) -> str:
    """translate-test: the translator, its prompts, and per language the off-target rate and chrF."""
    from xling.harness.html import display_lang, esc, fmt, table_html

    def pct(v):
        return "–" if v is None else fmt(100 * v, 1)

    rows = []
    for lang, q in tr["quality"].items():
        off = pct(q.get("off_target"))
        if q.get("off_target_lo") is not None:
            off += f" [{pct(q['off_target_lo'])}, {pct(q['off_target_hi'])}]"
        chrf = "–" if q.get("chrf") is None else fmt(q["chrf"], 1) + (
            f" [{fmt(q['chrf_lo'], 1)}, {fmt(q['chrf_hi'], 1)}]" if q.get("chrf_lo") is not None else "")
        rows.append([display_lang(lang), q.get("n"), off, chrf, (tr.get("demos") or {}).get(lang, "–")])
    return ("<h2>translate-test: the translations</h2>"
            f"<p>Each target test item translated into {esc(display_lang(tr.get('target_lang')))} by "
            f"<b>{esc(tr.get('translator'))}</b> (greedy, {esc(tr.get('shots'))}-shot prompt with fixed "
            f"demonstrations that are never test items, at most {esc(tr.get('max_new_tokens'))} new tokens), then "
            "scored by the task module exactly as the source test set (Conneau et al. 2018; Artetxe et al. 2020). "
            "Off target: share of translations lingua does not identify as the source language (95% Wilson "
            "interval); chrF: against the source-language test item of the same id, where the task is parallel "
            "(95% bootstrap interval). The texts are in translations.jsonl.</p>"
            + table_html(["language", "texts", "off-target % [95% CI]", "chrF [95% CI]", "demonstrations"], rows,
                         left_cols=1, sortable=True))


def render_transfer_report(result, task) -> str:
    """HTML for a transfer result; ``task`` needs a ``name``."""
    from xling.harness.html import (bar_chart_svg, display_lang, esc, fmt, headline_html, page, plural, table_html)

    m = result.metric
    cfg = result.config or {}
    summary = {s["condition"]: s for s in result.summary}
    ref = next((s.get("reference") for s in result.summary if s.get("reference")), None)
    means = {}
    for n in result.conditions:
        try:
            means[n] = result.mean(n)
        except (KeyError, ZeroDivisionError):
            means[n] = float("nan")
    ceiling = next((s.get("ceiling") for s in result.summary if s.get("ceiling")), None)
    if ceiling is None and "translate-train" in means:
        ceiling = "translate-train"
    has_gap = any(_num(s.get("gap_closed")) is not None for s in result.summary)

    # headline: the best condition that is neither the reference nor the ceiling
    cands = {n: v for n, v in means.items() if n not in (ref, ceiling) and v == v}
    head = []
    warnings = list(getattr(result, "warnings", None) or [])
    no_best = any(w.startswith("every condition is within noise of chance") for w in warnings)
    if no_best:
        head.append(f"<b>{esc(next(w for w in warnings if w.startswith('every condition')))}</b>.")
    elif cands:
        best = max(cands, key=lambda n: cands[n])
        s = summary.get(best, {})
        head.append(f"Best condition: <b>{esc(best)}</b>, mean target {esc(m)} <b>{esc(fmt(cands[best]))}</b> over "
                    f"{plural(len(result.targets), 'target language')}"
                    + (f"; vs <b>{esc(ref)}</b> ({esc(fmt(means.get(ref)))}): <b>{esc(_ci(s))}</b> (95% paired "
                       f"bootstrap)" if ref in means else "") + ".")
        if _num(s.get("gap_closed")) is not None:
            head.append(f"It closes <b>{esc(_gap(s))}</b> of the gap between {esc(ref)} and the ceiling "
                        f"{esc(ceiling or 'ceiling')} ({esc(fmt(means.get(ceiling)))}).")
        elif ceiling in means:
            head.append(f"Ceiling {esc(ceiling)}: {esc(fmt(means[ceiling]))}.")
    elif ref in means:
        head.append(f"Only the reference condition {esc(ref)} ran: mean target {esc(m)} {esc(fmt(means[ref]))}.")
    for w in warnings:
        if not w.startswith("every condition"):
            head.append(f"Warning: {esc(w)}.")
    src_ref = _num(summary.get(ref, {}).get(f"source_{m}")) if ref else None
    if src_ref is not None:
        head.append(f"Source {esc(display_lang(result.source))} with {esc(ref)}: {esc(fmt(src_ref))}.")

    n_ex = result.rows[0]["n"] if result.rows else 0
    body = ["<h1>Modular cross-lingual transfer</h1>", headline_html(head),
            f"<p>Task <b>{esc(task.name)}</b>, model <b>{esc(cfg.get('model'))}</b>, source "
            f"{esc(display_lang(result.source))}; {plural(len(result.targets), 'target language')}. Metric: {esc(m)} on the test "
            f"split ({esc(n_ex)} examples per language). Compositions are exact dW arithmetic on LoRA modules (rank "
            f"{esc(cfg.get('r'))}, alpha {esc(cfg.get('alpha'))}); λ "
            f"{esc(_lambdas(cfg))}, layer swap bottom/top/transition {esc(_swap(cfg))}"
            f"{esc(_selected(cfg))}.</p>"]

    refs = []
    if ref in means and means[ref] == means[ref]:
        refs.append((means[ref], f"{ref} (reference)"))
    if ceiling in means and means[ceiling] == means[ceiling]:
        refs.append((means[ceiling], f"{ceiling} (ceiling)"))
    body.append("<h2>Mean over target languages</h2>")
    body.append(bar_chart_svg(f"mean target {m} by condition", [(n, means[n]) for n in result.conditions],
                              lo=0.0, hi=1.0, highlight={n for n in (ref, ceiling) if n}, refs=refs))

    body.append("<h2>Scores per language</h2>")
    thead = ["language", *result.conditions, "best"]
    rows, marks = [], set()
    for i, lang in enumerate([result.source, *result.targets]):
        row = [f"{display_lang(lang)}{' — source' if lang == result.source else ''}"]
        scores = {}
        for n in result.conditions:
            try:
                scores[n] = result.score(n, lang)
                row.append(scores[n])
            except KeyError:
                row.append("")
        good = {n: v for n, v in scores.items() if _num(v) is not None}
        top = max(good.values()) if good else None
        if lang != result.source and top is not None:
            for j, n in enumerate(result.conditions):
                if good.get(n) == top:
                    marks.add((i, j + 1))
        row.append(", ".join(n for n, v in good.items() if v == top) if lang != result.source else "")
        rows.append(row)
    good_means = {n: v for n, v in means.items() if v == v}
    top = max(good_means.values()) if good_means else None
    rows.append(["mean over targets", *(means[n] for n in result.conditions),
                 ", ".join(n for n, v in good_means.items() if v == top)])
    body.append(table_html(thead, rows, left_cols=1, marks=marks))
    body.append('<p class="muted">Shaded: the best condition for each target language.</p>')

    body.append("<h2>Conditions</h2>")
    body.append(f"<p>Δ: mean over targets of the per-language difference to <b>{esc(ref)}</b>, 95% paired bootstrap "
                f"interval ({esc(cfg.get('bootstrap'))} resamples of the test examples within each language)"
                + (f"; gap closed: Δ as a share of the distance from {esc(ref)} to the ceiling {esc(ceiling)}"
                   if has_gap else "") + ".</p>")
    shead = ["condition", "what", "method", "mean target", "source", "Δ [95% CI]"] + (["gap closed"] if has_gap else [])
    srows = []
    for s in result.summary:
        srows.append([s["condition"], s.get("description", ""), s.get("method", ""),
                      _num(s.get(f"mean_target_{m}")), _num(s.get(f"source_{m}")), _ci(s)]
                     + ([_gap(s)] if has_gap else []))
    body.append(table_html(shead, srows, left_cols=3, sortable=True))
    lang_rows = []
    for r in result.rows:
        if r.get("role") == "target" and r.get("delta_lo") is not None:
            lang_rows.append([r["condition"], display_lang(r["lang"]), fmt(r.get(m)), _ci(r)])
    if lang_rows:
        body.append("<h2>Per language: difference to the reference</h2>"
                    + table_html(["condition", "language", m, "Δ [95% CI]"], lang_rows, left_cols=2, sortable=True))
    choices = getattr(result, "choices", None) or []
    if choices:
        body.append("<h2>Choices made on dev (never on test)</h2>")
        body.append(table_html(
            ["condition", "language", "chosen", "chosen on", "dev accuracy per candidate"],
            [[c["condition"], display_lang(c["lang"]), str(c["chosen"]), c["split"],
              "; ".join(f"{x['value']}: {fmt(x['dev'])}" for x in c["candidates"]) or "fixed"] for c in choices],
            left_cols=4))
    for n in getattr(result, "notes", None) or []:
        body.append(f"<p>Note: {esc(n)}</p>")

    tr = getattr(result, "translation", None) or {}
    if tr.get("quality"):
        body.append(_translation_section(tr))

    body.append("<h2>Modules</h2>")
    mod_rows = []
    for role, info in (result.modules or {}).items():
        detail = (f"MLM/CLM loss {info.get('loss_before')} → {info.get('loss_after')}, {info.get('sentences')} sentences"
                  if role.startswith("lang:") else f"best dev {info.get('best_dev')}, {info.get('steps')} steps")
        dw = _num(info.get("dw_norm"))
        mod_rows.append([role, str(info.get("path")), detail, "–" if dw is None else fmt(dw, 2),
                         "reused" if info.get("reused") else f"{info.get('seconds')} s"])
    body.append(table_html(["role", "folder", "training", "‖dW‖_F", "time"], mod_rows, left_cols=3))
    t = result.timings or {}
    if t:
        body.append("<p>" + esc(f"Timings: modules {t.get('modules_s')} s ({t.get('modules_trained')} trained, the "
                                f"others reused), evaluation {t.get('eval_s')} s ({t.get('predicted')} of "
                                f"{t.get('examples')} predictions computed, the others from the cache), total "
                                f"{t.get('total_s')} s.") + "</p>")
    return page("xling transfer: modular cross-lingual transfer", "".join(body), script=True)


__all__ = ["render_transfer_report"]
