"""``xling lens``: what a decoder predicts at each layer (recipe: :func:`xling.recipes.lens.run.lens`)."""

from __future__ import annotations


def add_lens_parser(sub) -> None:
    from xling.cli.common import add_overwrite_flag
    from xling.recipes.lens.run import DEFAULT_LANGS, DEFAULT_OUT, TASKS

    p = sub.add_parser("lens", help="the logit lens: does a decoder pass through English on the way to another language?",
                       description="Few-shot word prompts (Wendler et al. 2024) read through the model's own final norm "
                                   "and unembedding at every hidden state: the probability of the target-language answer "
                                   "and of the English word, the entropy and the top token per layer. Writes lens.csv, "
                                   "prompts.jsonl, run.json and report.html.")
    p.add_argument("--model", default="gemma-3-270m",
                   help="a decoder: gemma-3-270m (default), smollm2-135m, a folder, a .gguf file or a hub id")
    p.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                   help=f"comma-separated target languages (default {','.join(DEFAULT_LANGS)})")
    p.add_argument("--task", default="translation", choices=TASKS,
                   help="translation (source word -> target word, default) or repetition (target word repeated)")
    p.add_argument("--source", default=None,
                   help="source language of the translation prompts (default French; German for a French target)")
    p.add_argument("--pairs", default="freedict",
                   help="word pairs: freedict (Debian's FreeDict eng-<lang>, fetched once) or a TSV file with a header "
                        "of language codes, English included, one concept a row")
    p.add_argument("--order", default=None, choices=["frequent", "file", "sample"],
                   help="which word pairs first: frequent English words (default with freedict; counts from the built-in "
                        "Bible), the file's order (default with a TSV), or a seeded sample")
    p.add_argument("--max-prompts", type=int, default=100, help="prompts per language (default 100)")
    p.add_argument("--shots", type=int, default=5, help="demonstrations per prompt (default 5)")
    p.add_argument("--seed", type=int, default=0, help="which word pairs are sampled (default 0)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    p.add_argument("--device", default="auto")
    from xling.cli.common import add_placement_flags
    add_placement_flags(p)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    from xling.harness.store import DEFAULT_STORE

    p.add_argument("--store", default=str(DEFAULT_STORE),
                   help="results store (SQLite) read for an align run of the model (MEXA per layer); 'none' to skip")
    add_overwrite_flag(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_lens)


def cmd_lens(args) -> int:
    from xling.cli.common import csv_list, store_or_none
    from xling.recipes.lens.run import LensConfig, format_summary, lens

    cfg = LensConfig(model=args.model, langs=csv_list(args.langs), task=args.task, source=args.source, pairs=args.pairs, order=args.order,
                     max_prompts=args.max_prompts, shots=args.shots, seed=args.seed, batch_size=args.batch_size,
                     dtype=args.dtype, device=args.device, out=args.out, overwrite=args.overwrite, progress=not args.quiet,
                     store=store_or_none(args.store))
    result = lens(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/lens.csv, prompts.jsonl, report.html")
    return 0
