"""Benchmark: label log-likelihood scoring per (example, choice) pair against each prompt shared across its choices.

What is compared, on the same model, prompts and labels, side by side in one process
(:func:`xling.tasks.zeroshot.label_loglik`, what ``xling eval --zero-shot``, ``xling eval --demos``,
``xling knowledge`` and ``xling edit`` run):

(a) per pair (``share_prefix=False``): one sequence per (example, label) = prompt + label, length-sorted and
    left-padded in batches of ``--batch-size`` sequences: every prompt runs once per label;
(b) shared prefix (``share_prefix=True``): the prompts of ``--batch-size // --labels`` examples run once, the KV
    cache is repeated to one row per (example, label), and all labels' tokens 2..n run after it.

Both run in alternating repeats and the best time of each is reported (background load hurts neither more); it
prints examples per second, the speed-up (a)/(b), the largest score difference and whether the predicted labels
agree. The model is a random-initialised decoder of a real shape (nothing downloaded; speed does not depend on the
weights): SmolLM2-135M's by default (``--layers`` keeps its width and vocabulary with fewer layers, for a quick run),
with prompts of random token ids shaped like k-shot prompts (``--prompt-tokens``, +-20%) and ``--labels`` labels of
1-3 tokens each. On a machine whose cores another process keeps busy, ``--threads 1``: with more torch threads than
free cores the small batches of (b) wait on descheduled threads and the ratio measures the contention, not the work
(measured beside a 2-core model run: 1.20x at 2 threads, 5.33x at 1 thread, 8 layers).

    python benchmarks/scoring.py                                   # SmolLM2 shape, 24 examples x 6 labels
    python benchmarks/scoring.py --layers 8 --threads 2            # quicker: same width, 8 layers
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import SHAPES, IdTokenizer, build


def main(argv=None) -> int:
    from xling.tasks.zeroshot import label_loglik

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES), help="random decoder of this shape")
    ap.add_argument("--layers", type=int, default=None, help="keep the shape's width, with this many layers")
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--labels", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per batch, as --batch-size of xling eval")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.layers:
        SHAPES[args.shape] = {**SHAPES[args.shape], "num_hidden_layers": args.layers}
    model = build(args.shape)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    lo, hi = args.prompt_tokens * 4 // 5, args.prompt_tokens * 6 // 5
    prompts = [" ".join(str(t) for t in torch.randint(3, vocab, (int(n),), generator=g).tolist())
               for n in torch.randint(lo, hi + 1, (args.examples,), generator=g)]
    labels = [" ".join(str(t) for t in torch.randint(3, vocab, (1 + k % 3,), generator=g).tolist())
              for k in range(args.labels)]
    conts = [labels] * args.examples
    tok = IdTokenizer()
    max_length = hi + 8

    def run(share: bool):
        return label_loglik(model, tok, prompts, conts, "mean", batch_size=args.batch_size, max_length=max_length,
                            share_prefix=share)

    times: dict[bool, list[float]] = {False: [], True: []}
    scores = {}
    for _ in range(args.repeats):
        for share in (False, True):
            t0 = time.perf_counter()
            scores[share] = run(share)
            times[share].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    n = args.examples
    diff = max(abs(a - b) for ra, rb in zip(scores[False], scores[True]) for a, b in zip(ra, rb))
    argmax = [[max(range(len(s)), key=lambda j, s=s: (s[j], -j)) for s in scores[k]] for k in (False, True)]
    agree = sum(a == b for a, b in zip(*argmax)) / n
    cfg = model.config
    print(f"model: random {args.shape} shape ({cfg.num_hidden_layers} layers, d {cfg.hidden_size}, vocabulary "
          f"{vocab}); {n} examples x {args.labels} labels of 1-3 tokens; prompts {lo}-{hi} tokens; batch "
          f"{args.batch_size}; torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"(a) per pair        : {best[False]:7.2f} s  {n / best[False]:6.2f} ex/s")
    print(f"(b) shared prefix   : {best[True]:7.2f} s  {n / best[True]:6.2f} ex/s")
    print(f"speed-up (a)/(b): {best[False] / best[True]:.2f}x  largest score difference {diff:.2e}  "
          f"predictions agree: {agree:.1%}")
    try:
        print("load average:", Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        pass
    return 0 if agree == 1.0 and diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
