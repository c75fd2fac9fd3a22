"""``xling vocab fertility``: a tokenizer fairness report (Petrov et al. 2023) for one or more models.

For every model's tokenizer (read alone: :func:`xling.modules.vocab_folder.load_tokenizer`, no weights) and every
language of a parallel corpus (default: the built-in Bible, 22 languages): tokens per word, tokens per character,
tokenization parity against English on the same rows with a bootstrap interval, the byte fallback rate and the
unknown-token rate (definitions: :mod:`xling.methods.vocab.fertility`). Writes ``fertility.csv`` and
``report.html`` (a parity chart per model and the table).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from xling.recipes.vocab.config import FertilityConfig

CSV_NAME = "fertility.csv"
REPORT_NAME = "report.html"
#: The columns of ``fertility.csv``: the six of the interface first, then the interval and the raw counts.
COLUMNS = ["model", "lang", "tokens_per_word", "tokens_per_char", "parity_vs_english", "byte_fallback_rate",
           "parity_low", "parity_high", "unk_rate", "tokenizer_family", "sentences", "words", "chars", "tokens"]
ENGLISH = "eng_Latn"


@dataclass
class FertilityResult:
    config: FertilityConfig
    rows: list[dict]
    corpus: str
    english: str | None
    no_space_langs: list[str]
    families: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _load_corpus(cfg: FertilityConfig):
    """The corpus restricted to ``cfg.langs`` plus English (when it has English)."""
    from xling.data.langcodes import normalize_lang
    from xling.harness.sources import load_text_source

    corpus = load_text_source(cfg.data, langs=None, max_sentences=cfg.max_sentences)
    english = corpus.resolve(ENGLISH)
    if cfg.langs:
        wanted = [normalize_lang(c) for c in cfg.langs]
        if english is not None:
            wanted = [english] + [w for w in wanted if corpus.resolve(w) != english]
        corpus = corpus.select(wanted)
    return corpus, english


def _plain_backend(tok):
    """A copy of the fast tokenizer's pipeline without truncation or padding (they would change the counts)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def fertility(config: FertilityConfig | None = None, **kwargs) -> FertilityResult:
    """Measure every model's tokenizer on the corpus; write ``cfg.out`` (see the module docstring)."""
    from xling.harness.outputs import preflight
    from xling.methods.vocab.corpus import encode
    from xling.methods.vocab.fertility import byte_token_ids, count_language, fertility_row, writes_spaces
    from xling.methods.vocab.tokenizer import inspect_tokenizer, load_json
    from xling.modules.vocab_folder import load_tokenizer

    cfg = config if config is not None else FertilityConfig(**kwargs)
    t0 = time.perf_counter()
    if cfg.out is not None:
        preflight(cfg, "vocab fertility")  # before any work
    corpus, english = _load_corpus(cfg)
    langs = ([english] if english else []) + [lang for lang in corpus.langs if lang != english]
    rows, families = [], {}
    for name in cfg.models:
        _, tok = load_tokenizer(name, quiet=not cfg.progress)
        tj = load_json(tok)
        info = inspect_tokenizer(tj)
        families[name] = info.family
        backend = _plain_backend(tok)
        byte_ids = byte_token_ids(tj, info)
        counts = {}
        for lang in langs:
            texts = corpus.sentences[lang]
            counts[lang] = count_language(texts, encode(backend, texts), byte_ids, info.unk_id)
        for lang in langs:
            row = fertility_row(counts[lang], counts.get(english) if english else None, spaces=writes_spaces(lang),
                                n_boot=cfg.bootstrap)
            rows.append({"model": name, "lang": lang, "tokenizer_family": info.family, **row})
        if cfg.progress:
            print(f"[vocab fertility] {name}: {info.family} tokenizer, {len(langs)} languages x {len(corpus)} rows",
                  file=sys.stderr, flush=True)
    result = FertilityResult(cfg, rows, corpus.name, english, [lang for lang in langs if not writes_spaces(lang)],
                             families, round(time.perf_counter() - t0, 2))
    if cfg.out is not None:
        from xling.harness.outputs import rows_to_csv
        from xling.io import output_folder

        with output_folder(cfg.out, command="vocab fertility", overwrite=cfg.overwrite) as tmp:
            tmp.mkdir()
            (tmp / CSV_NAME).write_text(rows_to_csv(rows, COLUMNS), encoding="utf-8")
            (tmp / REPORT_NAME).write_text(render_report(result), encoding="utf-8")
    return result


# ----------------------------------------------------------------------------- report
def _interval_note(r: dict, english: str | None) -> str:
    lo, hi = r.get("parity_low"), r.get("parity_high")
    if lo is None or hi is None or r["lang"] == english:
        return ""
    return "same as English (interval holds 1)" if lo <= 1.0 <= hi else ""


def render_report(result: FertilityResult) -> str:
    """The HTML report: headline, one parity chart per model, the table and the definitions (all escaped)."""
    from xling.harness.html import bar_chart_svg, display_lang, esc, fmt, headline_html, page, table_html

    cfg, rows = result.config, result.rows
    head = [f"{esc(len(cfg.models))} tokenizer(s) on {esc(result.corpus)} "
            f"({esc(rows[0]['sentences'] if rows else 0)} parallel rows per language)."]
    for name in cfg.models:
        mine = [r for r in rows if r["model"] == name and r["parity_vs_english"] is not None]
        if mine:
            worst = max(mine, key=lambda r: r["parity_vs_english"])
            head.append(f"<b>{esc(name)}</b>: the costliest language is {esc(display_lang(worst['lang']))}, "
                        f"{esc(fmt(worst['parity_vs_english'], 2))}x the tokens of English for the same text.")
    if result.english is None:
        head.append("The corpus has no English: parity is not defined (left empty).")
    body = [f"<h1>Tokenizer fertility and parity: {esc(', '.join(cfg.models))}</h1>", headline_html(head)]
    for name in cfg.models:
        mine = [r for r in rows if r["model"] == name]
        items = [(display_lang(r["lang"]), r["parity_vs_english"]) for r in mine if r["parity_vs_english"] is not None]
        if items:
            items.sort(key=lambda kv: kv[1])
            body.append(bar_chart_svg(f"{name}: tokens relative to English on the same rows", items, lo=0.0,
                                      ref=1.0, ref_label="English"))
    table_rows = [[r["model"], display_lang(r["lang"]), r["tokens_per_word"], r["tokens_per_char"],
                   r["parity_vs_english"],
                   (f"{fmt(r['parity_low'])}..{fmt(r['parity_high'])}" if r["parity_low"] is not None else None),
                   r["byte_fallback_rate"], r["unk_rate"], r["tokens"], _interval_note(r, result.english)]
                  for r in rows]
    body.append("<h2>All measures</h2>")
    body.append(table_html(["model", "language", "tokens/word", "tokens/char", "parity vs English", "95% CI",
                            "byte fallback rate", "unknown rate", "tokens", "note"], table_rows, left_cols=2,
                           sortable=True))
    nospace = ", ".join(display_lang(lang) for lang in result.no_space_langs) or "none here"
    families = "; ".join(f"{name}: {fam}" for name, fam in result.families.items())
    body.append(
        "<h2>Definitions</h2><ul>"
        "<li><b>tokens/word</b>: tokens over whitespace-separated words. Left empty for languages written without "
        f"spaces between words ({esc(nospace)}), where a whitespace 'word' is a whole clause.</li>"
        "<li><b>tokens/char</b>: tokens over Unicode characters, whitespace not counted.</li>"
        "<li><b>parity vs English</b>: tokens for a language over tokens for English on the same rows of the "
        "parallel corpus (Petrov et al. 2023, \"Language Model Tokenizers Introduce Unfairness Between Languages\"); "
        "1 is parity, 2 means twice the cost, latency and context use. The interval is a 95% percentile bootstrap "
        f"over rows ({esc(cfg.bootstrap)} resamples).</li>"
        "<li><b>byte fallback rate</b>: the share of tokens that stand for bytes, not characters: SentencePiece "
        "byte-fallback pieces (&lt;0xNN&gt;), or for byte-level BPE the tokens whose bytes are not a whole UTF-8 "
        "character sequence. Tokenizers with neither have no byte tokens (0); their unrepresentable characters "
        "show in the unknown rate.</li>"
        f"<li>Tokenizer families: {esc(families)}. Texts are encoded without special tokens; only the tokenizers "
        "were read, no model weights.</li></ul>")
    return page(f"xling vocab fertility: {', '.join(cfg.models)}", "".join(body), script=True)


def format_fertility(result: FertilityResult) -> str:
    """The terminal table (names made safe by :func:`xling.textsafe.term`)."""
    from xling.textsafe import term

    def num(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    lines = [f"{'model':24s} {'language':10s} {'tok/word':>8s} {'tok/char':>8s} {'parity':>7s} {'95% CI':>13s} "
             f"{'bytes':>7s}"]
    for r in result.rows:
        ci = f"{num(r['parity_low'], '.2f')}..{num(r['parity_high'], '.2f')}" if r["parity_low"] is not None else "-"
        lines.append(f"{term(r['model'])[:24]:24s} {term(r['lang']):10s} {num(r['tokens_per_word']):>8s} "
                     f"{num(r['tokens_per_char']):>8s} {num(r['parity_vs_english'], '.2f'):>7s} {ci:>13s} "
                     f"{num(r['byte_fallback_rate'], '.4f'):>7s}")
    if result.no_space_langs:
        lines.append(f"tokens/word is left empty for {', '.join(map(term, result.no_space_langs))}: written without "
                     "spaces between words")
    if result.english is None:
        lines.append("the corpus has no English: parity is not defined")
    if result.config.out is not None:
        lines.append(f"wrote {term(str(Path(result.config.out)))} ({CSV_NAME}, {REPORT_NAME})")
    return "\n".join(lines)


__all__ = ["COLUMNS", "FertilityResult", "fertility", "format_fertility", "render_report"]
