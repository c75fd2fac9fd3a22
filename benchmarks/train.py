"""Training throughput and peak memory, with and without the middle-layer alignment loss.

    python benchmarks/train.py                          # e5-small, LoRA, 24 steps of 16 examples
    python benchmarks/train.py --model gemma-3-270m --steps 12
    python benchmarks/train.py --method full --layer 6

Each condition trains in its own subprocess (so peak RSS is its own), on the same
``bible-genre`` English examples, with the same seed:

* ``plain``: the task loss only;
* ``align-alternate``: plus one alignment step (``--align-batch`` parallel pairs
  English-German, InfoNCE at hidden state ``--layer``) after every task step
  (Liu & Niehues 2025's schedule);
* ``align-sum``: the two losses summed per step.

Printed: task examples per second, the ratio to ``plain`` (measured side by side
in this run), and peak RSS. The dev split is removed, so only training is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONDITIONS = ("plain", "align-alternate", "align-sum")


def child(args) -> None:
    import resource

    import torch

    from xling.harness.sources import read_align_pairs
    from xling.harness.training import train_task
    from xling.tasks.registry import load_task

    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.steps * args.batch_size
    task = load_task("bible-genre", train_size=max(n, 60), dev_size=6, test_size=6)
    task.data.pop("dev", None)
    kw = {}
    if args.condition != "plain":
        pairs, _ = read_align_pairs("bible-genre:align", "eng", ["deu"], max_pairs=2000, seed=0)
        kw = {"align_pairs": pairs, "align_layer": args.layer, "align_batch_size": args.align_batch,
              "align_mode": args.condition.split("-")[1]}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = train_task(args.model, task, method=args.method, out=os.path.join(tmp, "m"), epochs=1,
                         batch_size=args.batch_size, max_train=n, patience=0, progress=False,
                         max_length=args.max_length, **kw)
        wall = time.perf_counter() - t0
        info = json.loads(open(os.path.join(out, "xling_train.json"), encoding="utf-8").read())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"condition": args.condition, "examples": n, "train_seconds": info["train_seconds"],
                      "wall_seconds": round(wall, 2), "peak_rss": rss,
                      "align_steps": (info.get("alignment") or {}).get("steps", 0)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--method", default="lora", choices=["lora", "full"])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--align-batch", type=int, default=16)
    ap.add_argument("--layer", type=int, default=None, help="hidden state to align (default: L/2)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--condition", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.layer is None:
        from transformers import AutoConfig

        from xling.models.layers import num_layers
        from xling.models.loading import load_model

        args.layer = max(1, num_layers(AutoConfig.from_pretrained(load_model(args.model, quiet=True, lazy=True).path)) // 2)
    if args.condition:
        child(args)
        return
    results = []
    for cond in CONDITIONS:
        cmd = [sys.executable, __file__, "--condition", cond, "--model", args.model, "--method", args.method,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--align-batch",
               str(args.align_batch), "--layer", str(args.layer), "--max-length", str(args.max_length)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print(f"[bench] {cond} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{cond} failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = results[0]["examples"] / results[0]["train_seconds"]
    print(f"model {args.model}, {args.method}, {args.steps} steps x {args.batch_size} examples, "
          f"alignment at hidden state {args.layer} with {args.align_batch} pairs per step")
    print(f"{'condition':<16}{'task ex/s':>10}{'vs plain':>10}{'train s':>9}{'align steps':>12}{'peak RSS':>10}")
    for r in results:
        eps = r["examples"] / r["train_seconds"]
        print(f"{r['condition']:<16}{eps:>10.2f}{eps / base:>10.2f}{r['train_seconds']:>9.1f}"
              f"{r['align_steps']:>12}{r['peak_rss'] / 2**30:>9.2f}G")


if __name__ == "__main__":
    main()
