"""The ``report.html`` of ``xling knowledge``: accuracy per language and relation, leaks, known in English and known
elsewhere, and the consistency/KT matrices (:func:`xling.harness.consistency.consistency_html`). Every value is
escaped (:mod:`xling.harness.html`)."""

from __future__ import annotations


def _ci(lo, hi) -> str:
    from xling.harness.html import fmt

    return f"[{fmt(lo)}, {fmt(hi)}]" if lo == lo and hi == hi and lo is not None and hi is not None else ""


def _pick(rows, **kw):
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)


def render_report(result) -> str:
    from xling.data.facts import PIVOT
    from xling.harness.consistency import accuracy_rows as base_rates
    from xling.harness.consistency import consistency_html
    from xling.harness.html import bar_chart_svg, esc, fmt, headline_html, matrix_svg, page, table_html
    from xling.recipes.knowledge.config import OTHER_SCRIPT, SAME_SCRIPT

    cfg, acc, langs = result.config, result.accuracy, result.langs
    relations = list(result.probe.meta["relations"])
    chance = 1.0 / cfg.choices
    title = f"xling knowledge: {result.model_name}"
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="muted">{esc(len(langs))} languages, {esc(len(result.probe.facts))} facts '
            f"({esc(', '.join(relations))}), {esc(cfg.choices)} choices each (chance {esc(fmt(chance))}), "
            f"{esc(cfg.shots)} demonstration lines per prompt. {esc(result.meta.get('scoring', ''))}. Facts: "
            f"{esc(result.probe.meta.get('source', ''))}.</p>"]
    head = []
    en = _pick(acc, lang=PIVOT, relation="all", items="all")
    if en and en["n"]:
        head.append(f"English: accuracy {esc(fmt(en['accuracy']))} {esc(_ci(en['accuracy_low'], en['accuracy_high']))}"
                    f" over {esc(en['n'])} items" + (" (at chance)" if en["at_chance"] == 1 else "") + ".")
    for group in (SAME_SCRIPT, OTHER_SCRIPT):
        r = _pick(result.known, items="no_leak", group=group)
        if r and r["p_known"] == r["p_known"]:
            head.append(f"Facts known in English and asked in the {esc(group)} ({esc(r['langs'].replace(',', ', '))}),"
                        f" leaked items left out: known {esc(fmt(r['p_known']))} "
                        f"{esc(_ci(r['p_known_low'], r['p_known_high']))} of the time, against their accuracy of "
                        f"{esc(fmt(r['accuracy']))} {esc(_ci(r['accuracy_low'], r['accuracy_high']))} "
                        "on the same items.")
    body.append(headline_html(head))

    body.append("<h2>Accuracy per language</h2>")
    body.append('<p class="muted">95% Wilson intervals. <b>leak</b>: items answerable by string matching (rule: '
                f"{esc(result.probe.meta.get('leak_rule', ''))}); they are counted "
                "in <b>all</b> and shown on their own.</p>")
    bars = [(lang, (_pick(acc, lang=lang, relation="all", items="no_leak") or {}).get("accuracy", float("nan")))
            for lang in langs]
    body.append('<div class="card">' + bar_chart_svg("accuracy without leaked items", bars, lo=0.0, hi=1.0,
                                                     highlight={PIVOT}, ref=chance, ref_label="chance") + "</div>")
    values = {lang: {} for lang in langs}
    for lang in langs:
        for rel in relations:
            r = _pick(acc, lang=lang, relation=rel, items="no_leak")
            if r and r["n"]:
                values[lang][rel] = r["accuracy"]
    body.append('<div class="card">' + matrix_svg("accuracy without leaked items, per relation", langs, relations,
                                                  values, lo=0.0, hi=1.0, axes=("language", "relation")) + "</div>")
    table = []
    for lang in langs:
        for rel in ["all", *relations]:
            a, b, c = (_pick(acc, lang=lang, relation=rel, items=s) for s in ("all", "no_leak", "leak"))
            table.append([lang, rel, a["n"], a["accuracy"], _ci(a["accuracy_low"], a["accuracy_high"])
                          + (" at chance" if a["at_chance"] == 1 else ""), b["n"], b["accuracy"],
                          _ci(b["accuracy_low"], b["accuracy_high"]), c["n"], c["accuracy"],
                          _ci(c["accuracy_low"], c["accuracy_high"]), a["dropped"]])
    body.append(table_html(["language", "relation", "items", "accuracy", "95% CI", "no-leak items", "accuracy",
                            "95% CI", "leaked items", "accuracy", "95% CI", "dropped"], table, left_cols=2,
                           sortable=True))

    body.append("<h2>Known in English, known elsewhere</h2>")
    body.append('<p class="muted">P(correct in the language | correct in English) over the facts asked in both, '
                "pooled over a group's languages, next to the same languages' accuracy on those items (the base "
                "rate: equal values mean knowing a fact in English says nothing about the language). Script groups: "
                "written in English's script (Latin) or not. 95% percentile bootstrap intervals over facts.</p>")
    known = [[r["items"], r["group"], r["n_pairs"], r["known_in_pivot"], r["p_known"],
              _ci(r["p_known_low"], r["p_known_high"]), r["accuracy"], _ci(r["accuracy_low"], r["accuracy_high"])]
             for r in result.known]
    body.append(table_html(["items", "group", "item pairs", "known in English", "P(known | known in English)",
                            "95% CI", "accuracy", "95% CI"], known, left_cols=2, sortable=True))

    notes = list(result.meta.get("notes", []))
    body.append(consistency_html(result.consistency, langs=[x for x in langs if result.records[x]["item_ids"]],
                                 accuracy=base_rates({k: v for k, v in result.records.items() if v["item_ids"]}),
                                 notes=notes))

    body.append("<h2>The probe</h2>")
    body.append('<p class="muted">Prompts are built from CLDR\'s localised names only: demonstration lines '
                "<code>&lt;subject&gt;: &lt;answer&gt;</code>, then <code>&lt;subject&gt;:</code>; each choice is "
                "scored as its continuation. An item lacking a name in a language is dropped there (counted "
                "below).</p>")
    examples = []
    for rel in relations:
        it = next((x for x in result.probe.items.get(PIVOT, []) if x.relation == rel), None)
        if it is not None:
            examples.append([rel, it.id, it.prompt.replace("\n", " / "), " | ".join(it.choices), it.answer_text,
                             "yes" if it.leak else ""])
    if examples:
        body.append(table_html(["relation", "item", "prompt (English; / = new line)", "choices", "answer", "leak"],
                               examples, left_cols=6))
    if result.probe.dropped:
        body.append(table_html(["language", "relation", "reason", "items dropped"],
                               [[d["lang"], d["relation"], d["reason"], d["n"]] for d in result.probe.dropped],
                               left_cols=3))
    else:
        body.append("<p>No item was dropped: every name exists in every language.</p>")
    return page(title, "".join(body), script=True)


__all__ = ["render_report"]
