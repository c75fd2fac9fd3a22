"""Benchmark: the six default alignment metrics against their floor, on CPU (or any device).

The floor of every metric on the cosine matrix is one matrix product of
L2-normalised rows plus the row and column maxima and top-k (what MEXA,
retrieval, xSIM and bitext F1 read); CKA and ANC are O(n d^2) on the side.
On random embeddings of shape (layers, n, d), side by side in one process:

(a) floor: per layer, row blocks of the product of normalised rows, with row
    top-k and a running column top-k (k = 5);
(b) each default metric alone, and all six together (``compute_metrics``, the
    recipe's 1 GiB memory budget);
(c) with ``--old REV``: the same six metrics with ``src/xling/methods/metrics.py``
    as it was at git revision REV (loaded from ``git show``), on the same inputs,
    checked for identical outputs.

    python benchmarks/metrics.py [--n 4096] [--layers 13] [--d 384] [--threads 2] [--old 48e5a72] [--cpu-time]

(48e5a72: the metrics before the one-scan lists; the README's numbers compare with it.)
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def metrics_floor(pair, k: int = 5, block: int = 2048) -> None:
    """The floor: normalised rows, the tiled product, row and column top-k (maxima included)."""
    for layer in range(pair.L):
        xn = torch.nn.functional.normalize(pair.X[layer], dim=-1)
        ynT = torch.nn.functional.normalize(pair.Y[layer], dim=-1).T.contiguous()
        col = None
        for b0 in range(0, pair.n, block):
            S = xn[b0:b0 + block] @ ynT
            S.topk(k, dim=-1)
            top = S.topk(min(k, S.shape[0]), dim=0).values
            col = top if col is None else torch.cat([col, top]).topk(k, dim=0).values


def old_metrics_module(rev: str):
    """``xling.methods.metrics`` as it was at git revision ``rev`` (imported under another name)."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:src/xling/methods/metrics.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="xling-old-metrics-")) / "old_metrics.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_metrics"] = mod
    spec.loader.exec_module(mod)
    return mod


CLOCK = time.perf_counter


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best of ``repeats`` by :data:`CLOCK` (wall time; ``--cpu-time``: this process's CPU time, which a
    loaded shared machine disturbs less)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = CLOCK()
        out = fn()
        best = min(best, CLOCK() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--old", default=None, metavar="REV", help="also time metrics.py of this git revision")
    ap.add_argument("--each", action="store_true", help="also time each metric alone")
    ap.add_argument("--cpu-time", action="store_true", help="time by process CPU time instead of wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    from xling.methods import metrics as mm
    from xling.recipes.align.run import DEFAULT_METRICS

    g = torch.Generator().manual_seed(0)
    X = torch.randn(args.layers, args.n, args.d, generator=g)
    Y = (X + 1.5 * torch.randn(args.layers, args.n, args.d, generator=g)).to(args.device)
    X = X.to(args.device)
    names = list(DEFAULT_METRICS)
    print(f"n = {args.n}, {args.layers} layers, d = {args.d}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, {'CPU' if args.cpu_time else 'wall'} time", flush=True)
    t_floor, _ = timed(lambda: metrics_floor(mm.PairEmbeddings(X, Y)), args.repeats)
    print(f"floor (product + row/column top-k)  : {t_floor:8.2f} s", flush=True)
    if args.each:
        for name in names:
            t, _ = timed(lambda: mm.compute_metrics(mm.PairEmbeddings(X, Y), [name]), args.repeats)
            print(f"  {name:10s} alone                 : {t:8.2f} s   {t / t_floor:6.2f}x floor", flush=True)
    t_new, new = timed(lambda: mm.compute_metrics(mm.PairEmbeddings(X, Y), names), args.repeats)
    print(f"all six default metrics (this tree) : {t_new:8.2f} s   {t_new / t_floor:6.2f}x floor", flush=True)
    if args.old:
        old = old_metrics_module(args.old)
        t_old, ref = timed(lambda: old.compute_metrics(old.PairEmbeddings(X, Y), names), args.repeats)
        same = set(ref) == set(new) and all(torch.equal(ref[k], new[k]) for k in ref)
        print(f"all six default metrics ({args.old:>8s})  : {t_old:8.2f} s   {t_old / t_floor:6.2f}x floor", flush=True)
        print(f"speed-up this tree / {args.old}            : {t_old / t_new:8.2f}x   identical outputs: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
