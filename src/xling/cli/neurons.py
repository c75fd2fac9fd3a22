"""``xling neurons``: language-specific neurons by LAPE (recipe: :func:`xling.recipes.neurons.run.neurons`)."""

from __future__ import annotations


def add_neurons_parser(sub) -> None:
    from xling.cli.common import add_overwrite_flag
    from xling.recipes.neurons.run import DEFAULT_LANGS, DEFAULT_OUT

    p = sub.add_parser("neurons", help="language-specific feed-forward neurons (LAPE) and what switching them off does",
                       description="Count positive feed-forward activations per neuron and language (Tang et al. 2024), "
                                   "select language-specific neurons by LAPE as the authors' code does, and with "
                                   "--ablate measure the perplexity change of every language when one language's "
                                   "neurons are switched off, against random neurons of the same number per layer.")
    p.add_argument("--model", default="gemma-3-270m", help="a decoder: gemma-3-270m (default), smollm2-135m, a folder, a .gguf file or a hub id")
    p.add_argument("--langs", default=",".join(DEFAULT_LANGS), help=f"comma-separated languages (default {','.join(DEFAULT_LANGS)})")
    p.add_argument("--data", default="bible", help="any xling corpus (default bible): held-out sentences first, counting on the rest")
    p.add_argument("--max-tokens", type=int, default=20000, help="tokens counted per language (default 20,000)")
    p.add_argument("--held-out", type=int, default=50, help="held-out sentences per language for perplexity (default 50)")
    p.add_argument("--ablate", action="store_true", help="measure the perplexity matrix with and without each language's neurons")
    p.add_argument("--top-rate", type=float, default=0.01, help="share of neurons kept by lowest LAPE (default 0.01, the paper's 1%%)")
    p.add_argument("--filter-rate", type=float, default=0.95, help="percentile of activation probabilities a neuron must exceed in some language (default 0.95)")
    p.add_argument("--activation-bar-ratio", type=float, default=0.95, help="percentile a language's probability must exceed for the neuron to be its (default 0.95)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the random control sets and the bootstrap")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    from xling.harness.store import DEFAULT_STORE

    p.add_argument("--store", default=str(DEFAULT_STORE),
                   help="results store (SQLite) read for an align run of the model (MEXA correlation); 'none' to skip")
    add_overwrite_flag(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_neurons)


def cmd_neurons(args) -> int:
    from xling.cli.common import csv_list, store_or_none
    from xling.recipes.neurons.run import NeuronsConfig, format_summary, neurons

    cfg = NeuronsConfig(model=args.model, langs=csv_list(args.langs), data=args.data, max_tokens=args.max_tokens,
                        held_out=args.held_out, ablate=args.ablate, top_rate=args.top_rate, filter_rate=args.filter_rate,
                        activation_bar_ratio=args.activation_bar_ratio, batch_size=args.batch_size,
                        max_length=args.max_length, seed=args.seed, dtype=args.dtype, device=args.device, out=args.out, overwrite=args.overwrite,
                        progress=not args.quiet, store=store_or_none(args.store))
    result = neurons(cfg)
    print(format_summary(result))
    print(f"wrote {args.out}/activations.safetensors, neurons.json, correlations.csv, report.html")
    return 0
