"""The report of an ``xling eval`` run: ``report.html``, the per-language table and the terminal summary.

:func:`render_eval_report` draws the scores per language (with the source, the chance
line and the transfer gap) and, when the results store has an alignment run of the
same base model on the task's own text (never another corpus: a note says so), score
against alignment; :func:`format_summary` is what the command
prints. The recipe itself is :func:`xling.recipes.eval.run.evaluate`.
"""

from __future__ import annotations

import json
from xling.errors import XlingError

# ``result`` below is an :class:`xling.harness.scores.EvalResult` (not imported: that module
# imports this one to write its report)


def group_warnings(warned: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Per-language warnings grouped: ``[(warning, [languages])]``, one entry per kind of warning, in first-seen
    order. Warnings that differ only in their example count ("for all 10 examples" / "for all 12 examples")
    are one kind; its text then drops the count ("for all examples")."""
    import re

    groups: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for lang, w in (warned or {}).items():
        key = re.sub(r"\bfor all \d+ ", "for all ", str(w))
        groups.setdefault(key, []).append(lang)
        texts.setdefault(key, str(w))
    return [(texts[k] if len(langs) == 1 else k, langs) for k, langs in groups.items()]


def settings_of(result) -> dict | None:
    """The run's settings for the report: ``settings`` (xling eval), else the recipe's ``config`` (xling probe)
    with the probe's own choices (layer, l2, ...) beside it."""
    meta = result.meta or {}
    if meta.get("settings") is not None:
        return meta["settings"]
    if meta.get("config") is not None:
        out = dict(meta["config"])
        if isinstance(meta.get("probe"), dict):
            out["chosen"] = {k: v for k, v in meta["probe"].items() if k != "grid"}
        return out
    return None


def wide_rows(result) -> list[dict]:
    from xling.data.langcodes import short_lang_name as lang_name

    metrics = list(dict.fromkeys(r["metric"] for r in result.rows))
    out = []
    for lang in result.langs:
        row = {"lang": lang, "name": lang_name(lang), "n": result.n_examples[lang],
               "role": "source" if lang == result.source else "target"}
        for m in metrics:
            row[m] = result.score(lang, m)
        out.append(row)
    return out


def chance_level(result) -> tuple[float, str] | None:
    """The score of guessing, and how it was found: 1 / number of labels for accuracy on a classification
    task, the majority-class rate when the run recorded label counts; None where no chance level applies."""
    counts = result.meta.get("label_counts")
    if result.main_metric != "accuracy":
        return None
    if isinstance(counts, dict) and counts and all(isinstance(v, (int, float)) for v in counts.values()):
        total = sum(counts.values())
        if total > 0:
            return max(counts.values()) / total, "majority class"
    labels = result.meta.get("labels") or []
    if result.task_type == "classification" and len(labels) >= 2:
        return 1.0 / len(labels), f"chance (1/{len(labels)} labels)"
    return None


def render_eval_report(result, alignment: dict | None = None) -> str:
    from xling.harness.html import (bar_chart_svg, correlation_note, display_lang, esc, fmt, fmt_signed,
                                   headline_html, page, plural, scatter_svg, table_html)
    from xling.methods.stats import fit_line_ci, pearson, spearman

    m = result.main_metric
    scores = result.scores()
    body = [f"<h1>Cross-lingual transfer: {esc(result.task)}</h1>"]
    chance = chance_level(result)
    try:
        g = result.gap()
    except XlingError:
        g = None
    if g is not None:
        if g["n_targets"]:
            head = [f"Source <b>{esc(display_lang(result.source))}</b> {esc(m)} <b>{esc(fmt(g['source']))}</b>; "
                    f"mean over {esc(plural(g['n_targets'], 'target language'))} <b>{esc(fmt(g['mean_target']))}</b>; "
                    f"mean transfer gap <b>{esc(fmt(g['gap']))}</b> (source minus mean target, XTREME)."]
        else:
            head = [f"Source <b>{esc(display_lang(result.source))}</b> {esc(m)} <b>{esc(fmt(g['source']))}</b>; "
                    "no target languages were evaluated, so there is no transfer gap."]
    else:
        tg = [v for k, v in scores.items() if k != result.source]
        head = [f"The source language {esc(result.source)} was not evaluated, so there is no transfer gap"
                + (f"; mean {esc(m)} over {plural(len(tg), 'language')} <b>{esc(fmt(sum(tg) / len(tg)))}</b>." if tg else ".")]
    if chance is not None:
        head.append(f"{esc(chance[1]).capitalize()}: {esc(fmt(chance[0]))}.")
    body.append(headline_html(head))
    body.append(f"<p>Model <b>{esc(result.model)}</b>"
                + (f" (base {esc(result.base_model)})" if result.base_model else "")
                + f", {esc(result.task_type)}, {esc(result.split)} split.</p>")
    wide = wide_rows(result)
    metrics = [k for k in wide[0] if k not in ("lang", "name", "n", "role")]
    src = scores.get(result.source)
    order = sorted(wide, key=lambda r: -r[m] if r[m] == r[m] else 1.0)
    for warning, langs in group_warnings(result.meta.get("warnings") or {}):  # one block per kind of warning
        count = f" ({plural(len(langs), 'language')})" if len(langs) > 1 else ""
        body.append(f'<p class="warning"><b>Warning</b>, {esc(", ".join(langs))}{esc(count)}: {esc(warning)}</p>')
    body.append("<h2>Per language</h2>")
    thead = ["lang", "name", "role", "n", *metrics] + ([f"{m} - source"] if src is not None else [])
    rows = [[r["lang"], r["name"], r["role"], r["n"], *[r[k] for k in metrics]]
            + ([fmt_signed(r[m] - src)] if src is not None else []) for r in order]
    body.append(table_html(thead, rows, left_cols=3, sortable=True))
    body.append("<h2>Chart</h2>")
    refs = []
    if g is not None and g["n_targets"]:
        refs.append((g["mean_target"], "mean target"))
    if chance is not None:
        refs.append((chance[0], chance[1]))
    body.append(bar_chart_svg(f"{m} per language (dark: source)", [(display_lang(r["lang"]), r[m]) for r in order],
                              lo=0.0, hi=1.0, highlight={display_lang(result.source)}, refs=refs))
    if chance is None:
        body.append(f'<p class="muted">No chance line: {esc(m)} on a {esc(result.task_type)} task has no simple '
                    'guessing level.</p>')
    if alignment and alignment.get("note") and not alignment.get("values"):
        body.append(f"<h2>Alignment vs {esc(m)}</h2><p class=\"note\">{esc(alignment['note'])}.</p>")
    elif alignment:
        vals = alignment["values"]
        common = [lang for lang in result.langs if lang in vals and lang != result.source]
        body.append(f"<h2>Alignment vs {esc(m)}</h2>")
        if len(common) >= 3:
            xs = [vals[lang] for lang in common]
            ys = [scores[lang] for lang in common]
            r, rho = pearson(xs, ys), spearman(xs, ys)
            why = correlation_note(xs, ys, f"{alignment['metric']} values", f"{m} scores")
            corr = (f"Pearson <b>{esc(fmt(r))}</b>, Spearman <b>{esc(fmt(rho))}</b>" if not why
                    else f"<span class=\"note\">{esc(why)}</span>")
            fit = fit_line_ci(xs, ys)
            body.append(f"<p>{esc(alignment['metric'])} (mean over layers) from align run {esc(alignment['run_id'])} "
                        f"on {esc(alignment['corpus'])}, {plural(len(common), 'target language')}: {corr}. "
                        + (f"Least-squares line {esc(m)} = {esc(fmt(fit['a']))} x {esc(alignment['metric'])} "
                           f"{esc(fmt_signed(fit['b']))}, shaded: its 95% confidence band. " if fit["a"] is not None else "")
                        + (f"<span class=\"note\">{esc(fit['note'])}.</span> " if fit["note"] else "")
                        + "For leave-one-language-out prediction with confidence intervals, run "
                        "<code>xling predict</code>.</p>")
            band = (fit["x"], fit["lo"], fit["hi"]) if fit["lo"] else None
            body.append(scatter_svg(f"{m} vs {alignment['metric']}", [(lang, vals[lang], scores[lang]) for lang in common],
                                    f"{alignment['metric']} (mean over layers)", m,
                                    line=(fit["a"], fit["b"]) if fit["a"] is not None else None, band=band))
        else:
            body.append(f"<p>Only {plural(len(common), 'target language')} {'has' if len(common) == 1 else 'have'} both alignment "
                        "and task scores: no correlation (at least 3 needed).</p>")
    curve = result.meta.get("dev_curve")
    if curve:
        body.append("<h2>Training (source-language dev)</h2>")
        keys = list(dict.fromkeys(k for p in curve for k in p))
        body.append(table_html(keys, [[p.get(k, "") for k in keys] for p in curve]))
    body.append("<h2>Run</h2>")
    info = [["run id", result.run_id], ["model", result.model], ["task", result.task],
            ["timings", ", ".join(f"{k}={v}" for k, v in result.timings.items())],
            ["model fingerprint", result.meta.get("model_fingerprint")],
            ["task fingerprint", result.meta.get("task_fingerprint")],
            ["settings", json.dumps(settings_of(result), default=str)]]
    tinfo = result.meta.get("train_info") or {}
    for k in ("method", "language", "train_examples", "best_dev", "best_epoch", "train_seconds", "hparams"):
        if k in tinfo:
            info.append([f"train {k}", json.dumps(tinfo[k]) if isinstance(tinfo[k], dict) else tinfo[k]])
    body.append(table_html(["", ""], [[a, str(b)] for a, b in info], left_cols=2))
    body.append('<p class="muted">Protocol and transfer gap: XTREME (Hu et al. 2020). Macro-F1 is the unweighted mean '
                'of per-class F1; entity F1 counts exact spans (CoNLL). Generated by xling.</p>')
    return page(f"xling eval: {result.task}", "".join(body), script=True)


def format_summary(result) -> str:
    from xling.data.langcodes import short_lang_name as lang_name

    wide = wide_rows(result)
    metrics = [k for k in wide[0] if k not in ("lang", "name", "n", "role")][:3]
    head = ["lang", "name", "n", *metrics]
    lines = [[r["lang"] + (" *" if r["role"] == "source" else ""), lang_name(r["lang"]), str(r["n"]),
              *[f"{r[k]:.3f}" for k in metrics]] for r in sorted(wide, key=lambda r: -r[result.main_metric])]
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    text = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines]
    try:
        g = result.gap()
        text.append("")
        text.append(f"{result.task}: source {result.source} {result.main_metric} {g['source']:.3f}; mean over "
                    f"{g['n_targets']} targets {g['mean_target']:.3f}; transfer gap {g['gap']:.3f}  (* = source)")
    except XlingError:
        pass
    return "\n".join(text)


__all__ = ["chance_level", "format_summary", "group_warnings", "render_eval_report", "settings_of", "wide_rows"]
