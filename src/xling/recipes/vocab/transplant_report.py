"""``report.html`` of ``xling vocab transplant`` and ``xling vocab replace`` (everything escaped: harness.html)."""

from __future__ import annotations


def _verdict(d: dict) -> str:
    if "delta_bits_per_char_ci" not in d:
        return ""
    if d.get("better_than_base"):
        return "better (interval below 0)"
    if d.get("worse_than_base"):
        return "worse (interval above 0)"
    return "no clear difference (interval holds 0)"


def _ci(pair) -> str | None:
    from xling.harness.html import fmt

    return None if not pair else f"{fmt(pair[0], 4)}..{fmt(pair[1], 4)}"


def render_report(report: dict) -> str:
    from xling.harness.html import bar_chart_svg, display_lang, esc, fmt, headline_html, page, table_html

    ini = report["init"]
    if report["operation"] == "transplant":
        title = f"Vocabulary transplant: {report['model']} with the tokenizer of {report['tokenizer_from']}"
    else:
        tk = report["tokenizer"]
        title = (f"Vocabulary replacement: {report['model']} with a {tk['type']} tokenizer of {tk['vocab_size']} "
                 f"tokens trained on the target text")
    head = [f"{esc(ini['shared'])} of {esc(ini['new_size'])} new token ids stand for an old token and keep its "
            f"exact vector ({esc(', '.join(f'{k}: {v}' for k, v in ini['shared_by'].items()))}); the other "
            f"{esc(ini['initialised'])} were initialised by <b>{esc(ini['method'])}</b>"
            + (f" in the {esc(ini['aux'])} space" if ini.get("aux") else "")
            + (f" with k = {esc(ini['k'])} anchors" if ini.get("k") else "") + "."]
    bpc = report.get("bits_per_char")
    body = [f"<h1>{esc(title)}</h1>"]
    if bpc:
        head.append(esc(bpc["note"]))
        for lang, res in bpc["langs"].items():
            arms = {a: d for a, d in res["arms"].items() if d.get("bits_per_char") is not None}
            if arms:
                best = min(arms, key=lambda a: arms[a]["bits_per_char"])
                head.append(f"{esc(display_lang(lang))}: the lowest bits per character is <b>{esc(best)}</b> "
                            f"({esc(fmt(arms[best]['bits_per_char'], 4))}; original "
                            f"{esc(fmt(arms.get(bpc['base'], {}).get('bits_per_char'), 4))}) on "
                            f"{esc(res['sentences'])} held-out sentences.")
    else:
        head.append("No held-out text was given (--data), so nothing was measured; the folder holds the "
                    "initialised model.")
    body.append(headline_html(head))
    if bpc:
        body.append("<h2>Bits per character, per language</h2>")
        for lang, res in list(bpc["langs"].items()) + [("all", bpc["all"])]:
            items = [(a, d["bits_per_char"]) for a, d in res["arms"].items() if d.get("bits_per_char") is not None]
            base = res["arms"].get(bpc["base"], {}).get("bits_per_char")
            if items:
                label = "all languages" if lang == "all" else display_lang(lang)
                body.append(bar_chart_svg(f"{label}: bits per character (lower is better)", items, lo=0.0,
                                          ref=base, ref_label="original"))
        rows = []
        for lang, res in list(bpc["langs"].items()) + [("all", bpc["all"])]:
            for arm, d in res["arms"].items():
                fert = (report.get("fertility") or {}).get(lang, {}).get(arm.split(" + ")[0]) or {}
                rows.append([("all languages" if lang == "all" else display_lang(lang)), arm, d.get("bits_per_char"),
                             _ci(d.get("bits_per_char_ci")), d.get("bits_per_word"), d.get("delta_bits_per_char"),
                             _ci(d.get("delta_bits_per_char_ci")), _verdict(d), fert.get("tokens_per_char"),
                             fert.get("tokens_per_word")])
        body.append(table_html(["language", "model", "bits/char", "95% CI", "bits/word", "change vs original",
                                "95% CI", "verdict", "tokens/char", "tokens/word"], rows, left_cols=2,
                               sortable=True))
        left = sum(r["left_out_too_long"] for r in bpc["langs"].values())
        if left:
            body.append(f"<p>{esc(left)} held-out sentence(s) longer than the scored length under some tokenizer "
                        "were left out of every model's figures.</p>")
    fert = report.get("fertility")
    if fert:
        body.append("<h2>Fertility on the held-out sentences</h2>")
        rows = []
        for lang, per in fert.items():
            for name, r in per.items():
                par = r.get("parity_vs_english")
                rows.append([display_lang(lang), name, r.get("tokens_per_word"), r.get("tokens_per_char"), par,
                             (f"{fmt(r['parity_low'])}..{fmt(r['parity_high'])}" if r.get("parity_low") is not None
                              else None), r.get("byte_fallback_rate"), r.get("unk_rate"), r.get("tokens")])
        body.append(table_html(["language", "tokenizer", "tokens/word", "tokens/char", "parity vs English", "95% CI",
                                "byte fallback rate", "unknown rate", "tokens"], rows, left_cols=2, sortable=True))
    body.append("<h2>Initialisation</h2>")
    body.append(table_html(["matrix", "how the non-shared ids were initialised"],
                           [[role, ", ".join(f"{k}: {v}" for k, v in counts.items())]
                            for role, counts in ini["by_role"].items()]))
    ext = report.get("extension")
    if ext:
        body.append(f"<p>Extension baseline: {esc(ext['words_added'])} words mined from the training text were "
                    f"added to the original tokenizer ({esc(ext['entries_added'])} vocabulary entries), initialised "
                    f"by {esc(ext['init'])}.</p>")
    runs = (report.get("adaptation") or {}).get("runs") or {}
    if runs:
        body.append("<h2>Adaptation</h2>")
        body.append(table_html(["model", "steps", "trained", "parameters trained", "first loss", "last 10 steps",
                                "seconds"],
                               [[name, r.get("steps"), r.get("scope"), r.get("trained_parameters"),
                                 r.get("first_loss"), r.get("mean_loss_last_10"), r.get("seconds")]
                                for name, r in runs.items()]))
    r = report.get("reload") or {}
    if r:
        body.append(f"<p>The written folder reloads: the tokenizer gives the same ids "
                    f"({esc(r['tokenizer_ids_equal'])}) and the logits differ by at most "
                    f"{esc(fmt(r['max_abs_diff_logits'], 6))} from the model in memory.</p>")
    body.append(
        "<h2>Definitions</h2><ul>"
        "<li><b>shared</b>: a new token that stands for the same text as an old token (the same string, or the same "
        "bytes across tokenizer families: <code>Ġthe</code> and <code>▁the</code>), or a special token with the "
        "same content or role; it keeps the old vector exactly.</li>"
        "<li><b>omp</b>: orthogonal matching pursuit over shared-token anchors in the auxiliary space, the "
        "coefficients applied to the anchors' old vectors (mergekit tokensurgeon's idea). <b>focus</b>: sparsemax "
        "of the cosine similarities to the anchors (Dobler and de Melo 2023). <b>mean</b>: the mean of the old "
        "pieces of the token's text. <b>random</b>: drawn from the old rows' mean and spread.</li>"
        "<li><b>bits/char</b>: summed negative log-likelihood of the held-out sentence in bits over its characters; "
        "the interval is a 95% percentile bootstrap over sentences, and the change against the original a paired "
        "bootstrap on the same sentences.</li>"
        "<li><b>tokens/word</b>, <b>tokens/char</b>, <b>parity</b>: as in <code>xling vocab fertility</code> "
        "(Petrov et al. 2023).</li></ul>")
    return page(title, "".join(body), script=True)


__all__ = ["render_report"]
