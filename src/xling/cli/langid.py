"""``xling langid``: language identity per layer beside MEXA (recipe: :func:`xling.recipes.langid.run.langid`)."""

from __future__ import annotations


def add_langid_parser(sub) -> None:
    from xling.cli.common import add_overwrite_flag
    from xling.models.loading import DEFAULT_MODEL
    from xling.recipes.langid.run import DEFAULT_OUT

    p = sub.add_parser("langid", help="where language identity lives: a linear language-ID probe per layer, beside MEXA",
                       description="Embed the corpus as xling align does (same cache), fit a multinomial logistic "
                                   "regression predicting each sentence's language from every hidden state on half of "
                                   "the sentence ids, report held-out accuracy with a 95%% Wilson interval against "
                                   "chance, and MEXA against the pivot from the same embeddings.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="built-in e5-small (default), gemma-3-270m, smollm2-135m, a folder, a .gguf file or a hub id")
    p.add_argument("--data", default="django", help="any xling corpus (default django)")
    p.add_argument("--langs", default=None, help="comma-separated languages besides the pivot (default: the corpus's)")
    p.add_argument("--pivot", default="eng", help="MEXA's pivot language (default eng)")
    p.add_argument("--max-sentences", type=int, default=200, help="sentences per language (default 200)")
    p.add_argument("--train-fraction", type=float, default=0.5, help="share of sentence ids to train on (default 0.5)")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 penalty of the probe (default 0.01)")
    p.add_argument("--layers", default=None, help="hidden states, e.g. 0,6,12 or 4-8 (default all)")
    p.add_argument("--pooling", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="tokens per sentence (default: the model's own context)")
    p.add_argument("--seed", type=int, default=0, help="which sentence ids are held out")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--no-cache", action="store_true", help="recompute the embeddings and write them over their cache entries")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    add_overwrite_flag(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_langid)


def cmd_langid(args) -> int:
    from xling.cli.common import csv_list
    from xling.recipes.langid.run import LangIdConfig, format_summary, langid

    cfg = LangIdConfig(model=args.model, data=args.data, langs=csv_list(args.langs), pivot=args.pivot,
                       max_sentences=args.max_sentences, train_fraction=args.train_fraction, l2=args.l2,
                       pooling=args.pooling, layers=args.layers, batch_size=args.batch_size, max_length=args.max_length,
                       seed=args.seed, dtype=args.dtype, device=args.device, cache=not args.no_cache, out=args.out, overwrite=args.overwrite,
                       progress=not args.quiet)
    result = langid(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/langid.csv, run.json, report.html")
    return 0
