"""Benchmark: memory and time of the alignment metrics as the number of sentences grows.

On the Bible corpus (English + one language, ``--lang``, default German), every
hidden state of the built-in e5-small (13 layers x 384 dims), at n = 1k, 5k, 10k
and 31,102 verses (``--sizes``):

1. the parent embeds the verses once, in chunks cached by the engine's embedding
   cache (so a size reuses the smaller sizes' work and a second run embeds nothing),
   and writes the first n rows of both languages to one safetensors file;
2. for each n a fresh subprocess reads exactly those rows, runs every default metric
   (MEXA, retrieval, xSIM, bitext F1, CKA, ANC) with ``compute_metrics`` under the
   memory budget (``--budget``, default 1GB: blocked above it), and reports its wall
   time and peak RSS (``VmHWM`` of ``/proc/self/status``), plus the memory before the
   metrics (Python and torch resident, plus the size of the two embedding tensors);
3. at the smallest n it also runs the dense path (no budget) and a forced blocked one,
   and checks that the three give identical numbers.

It prints one table: per n and path, wall time, peak RSS, the metrics' own memory
(peak minus the RSS with the inputs loaded), and the ratios to the previous size
(time, memory, n, n^2), so "grows like n*d, not n^2" can be read off directly.

    XLING_WHEELHOUSE=/tmp/whl python benchmarks/scale.py [--sizes 1000,5000,10000,31102] [--lang deu]
        [--threads 2] [--budget 1GB] [--work /tmp/xling-scale]

``--executor ray`` measures the fan-out instead (``xling align --executor ray``), side by
side in one run, on a local Ray started once (its start time is printed apart):

1. ``align`` of the built-in e5-small on the built-in corpus (``--ray-langs``, default 8
   languages + English, ``--ray-sentences`` each, every layer, embeddings recomputed: no
   cache) in this process on 1 torch thread, then on Ray with 1 worker and with
   ``--workers`` (default 2), 1 torch thread each: wall times, the speed-up of N workers
   against 1 and against local, and a check that the rows are the same (max |difference|);
2. the overhead per unit: ``--units`` trivially small units (``executor.map``) on 1 Ray
   worker against the same in this process: (Ray time - local time) / units, after the
   actor's start (one unit) is timed and subtracted;
3. units of fixed CPU work (0.5 s each) on 1 and N workers: the speed-up the machine
   allows at that moment (on a shared machine, other jobs' load caps it).

    python benchmarks/scale.py --executor ray [--workers 2] [--ray-langs deu,fra,spa,rus,swe,hun,ell,jpn]
        [--ray-sentences 200] [--units 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

METRICS = ["mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc"]


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, MB. Not getrusage's
    ru_maxrss: after fork + exec it keeps the parent's high-water mark."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """Read the first n rows of both sides, run the metrics, print one JSON line."""
    import torch
    from safetensors import safe_open

    from xling.methods.metrics import PairEmbeddings, compute_metrics, parse_memory, plan_blocks

    torch.set_num_threads(args.threads)
    with safe_open(args.child, framework="pt") as f:
        X = f.get_slice("pivot")[:, : args.n, :]
        Y = f.get_slice("other")[:, : args.n, :]
    base = rss_mb("VmRSS")  # Python + torch; the inputs are mapped pages, resident once the metrics touch them
    inputs_mb = (X.nelement() + Y.nelement()) * X.element_size() / 2**20
    pair = PairEmbeddings(X, Y)
    if args.layers_run:  # memory check: every layer's inputs held, the metrics run on the first layers only
        pair = pair.select_layers(0, args.layers_run)
    kw = {"memory_budget": None} if args.mode == "dense" else {"memory_budget": parse_memory(args.budget)}
    if args.block:
        kw["block_size"] = args.block
    block = plan_blocks(pair.n, pair.L, pair.dtype, memory_budget=kw["memory_budget"], block_size=kw.get("block_size"))
    t0 = time.perf_counter()
    out = compute_metrics(pair, METRICS, **kw)
    wall = time.perf_counter() - t0
    print(json.dumps({
        "n": args.n, "mode": args.mode, "block": block, "wall_s": wall, "peak_rss_mb": rss_mb(), "base_rss_mb": base + inputs_mb,
        "L": X.shape[0], "d": pair.d, "layers_run": pair.L, "values": {k: v.tolist() for k, v in out.items()},
    }))


def run_child(path: Path, n: int, mode: str, threads: int, budget: str, block: int | None = None,
              layers_run: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--n", str(n), "--mode", mode,
           "--threads", str(threads), "--budget", budget] + (["--block", str(block)] if block else []) \
        + (["--layers-run", str(layers_run)] if layers_run else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"child failed (n={n}, {mode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synthetic(args) -> None:
    """Peak RSS at n sentences on random embeddings (the metrics' memory does not depend on the values)."""
    import torch
    from safetensors.torch import save_file

    n, layers = args.synthetic, args.layers_run or 13
    g = torch.Generator().manual_seed(0)
    base = torch.randn(13, n, 384, generator=g) + 2.0  # a shared offset: positive cosines like real embeddings
    other = base + torch.randn(13, n, 384, generator=g)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "synthetic.safetensors"
    save_file({"pivot": base, "other": other}, str(path))
    del base, other
    r = run_child(path, n, "blocked", args.threads, args.budget, None, layers)
    print(f"synthetic n={n}: 13 layers held, metrics on {r['layers_run']}: block {r['block']}, "
          f"{r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb'] / 1024:.2f} GB "
          f"(inputs loaded {r['base_rss_mb'] / 1024:.2f} GB, metrics {(r['peak_rss_mb'] - r['base_rss_mb']) / 1024:.2f} GB)")
    path.unlink()


def _trivial(x):
    return x + 1


def _busy(x):
    """A unit of fixed CPU work (0.5 s of this process's CPU time, whatever the machine's load)."""
    t = time.process_time()
    while time.process_time() - t < 0.5:
        pass
    return x


def ray_bench(args) -> None:
    """Local vs Ray (1 and N workers) on one align run, and Ray's overhead per unit."""
    import logging

    import ray
    import torch

    from xling.recipes.align.run import align
    from xling.harness.executor import LocalExecutor, RayExecutor

    torch.set_num_threads(1)
    langs = [x for x in args.ray_langs.split(",") if x]
    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING)
    t_init = time.perf_counter() - t
    print(f"ray {ray.__version__}: local Ray with {args.workers} CPUs started in {t_init:.1f} s", flush=True)
    kw = dict(model=args.model, langs=langs, max_sentences=args.ray_sentences, batch_size=16, cache=False,
              out=None, store=None, progress=False)
    runs = []
    for label, ex in (("local, 1 thread", LocalExecutor()), ("ray, 1 worker", RayExecutor(workers=1)),
                      (f"ray, {args.workers} workers", RayExecutor(workers=args.workers))):
        t = time.perf_counter()
        res = align(executor=ex, **kw)
        wall = time.perf_counter() - t
        runs.append((label, wall, res))
        print(f"  {label:<16} {wall:7.1f} s", flush=True)
    ref = runs[0][2].rows
    diff = max(max(abs(a["value"] - b["value"]) for a, b in zip(r.rows, ref)) for _, _, r in runs[1:])
    same_keys = all([{k: v for k, v in a.items() if k != "value"} for a in r.rows] ==
                    [{k: v for k, v in b.items() if k != "value"} for b in ref] for _, _, r in runs[1:])

    units = list(range(args.units))
    t = time.perf_counter()
    LocalExecutor().map(_trivial, units)
    t_local = time.perf_counter() - t
    one = RayExecutor(workers=1)
    t = time.perf_counter()
    one.map(_trivial, [0])
    t_start = time.perf_counter() - t
    t = time.perf_counter()
    got = one.map(_trivial, units)
    t_ray = time.perf_counter() - t
    assert got == [u + 1 for u in units]
    per_unit = (t_ray - t_start) / len(units) - t_local / len(units)
    busy = list(range(4 * args.workers))  # fixed CPU work: what N workers can gain on this machine now
    t_busy = {}
    for w in (1, args.workers):
        t = time.perf_counter()
        RayExecutor(workers=w).map(_busy, busy)
        t_busy[w] = time.perf_counter() - t
    ray.shutdown()

    n_units = len(langs) + 1
    (_, t_l, res), (_, t1, _), (_, tn, _) = runs
    print()
    print(f"{res.model} on {res.corpus}: {n_units} units (English + {len(langs)} languages) x {res.n_sentences} "
          f"sentences x {len(res.layers)} layers, no cache")
    head = f"{'executor':<18} {'wall s':>7} {'s/unit':>7} {'vs 1 worker':>12} {'vs local':>9}"
    print(head)
    print("-" * len(head))
    for label, wall, _ in runs:
        print(f"{label:<18} {wall:>7.1f} {wall / n_units:>7.2f} {t1 / wall:>11.2f}x {t_l / wall:>8.2f}x")
    print(f"\nspeed-up of {args.workers} workers against 1: {t1 / tn:.2f}x; against local: {t_l / tn:.2f}x; "
          f"rows identical: {'yes' if same_keys else 'NO'} (max |difference| {diff:.1e})")
    print(f"overhead: Ray start {t_init:.1f} s (once); an actor's start (process, imports, one unit) {t_start:.2f} s; "
          f"per unit {per_unit * 1e3:.2f} ms ({len(units)} trivial units: Ray {t_ray:.2f} s - actor start, "
          f"local {t_local * 1e3:.2f} ms)")
    print(f"fixed-CPU units ({len(busy)} x 0.5 s of CPU): 1 worker {t_busy[1]:.1f} s, {args.workers} workers "
          f"{t_busy[args.workers]:.1f} s: {t_busy[1] / t_busy[args.workers]:.2f}x (the parallelism the machine "
          f"allows now; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    if not same_keys or diff > 1e-6:
        sys.exit("Ray and local results differ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000,31102")
    ap.add_argument("--lang", default="deu")
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default="1GB")
    ap.add_argument("--work", default="/tmp/xling-scale")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="instead: a memory check at N sentences on random embeddings of e5-small's shape "
                         "(13 x N x 384 per side, all held), metrics on the first --layers-run layers")
    ap.add_argument("--layers-run", type=int, default=0)
    ap.add_argument("--executor", default="local", choices=["local", "ray"],
                    help="ray: instead, local vs Ray workers on one align run, and Ray's overhead per unit")
    ap.add_argument("--workers", type=int, default=2, help="--executor ray: Ray workers to compare with 1")
    ap.add_argument("--ray-langs", default="deu,fra,spa,rus,swe,hun,ell,jpn")
    ap.add_argument("--ray-sentences", type=int, default=200)
    ap.add_argument("--units", type=int, default=300, help="--executor ray: trivial units for the overhead")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="blocked", help=argparse.SUPPRESS)
    ap.add_argument("--block", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.executor == "ray":
        return ray_bench(args)

    import torch
    from safetensors.torch import save_file

    from xling.data.readers import load_corpus
    from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached
    from xling.models.loading import load_model

    torch.set_num_threads(args.threads)
    if args.synthetic:
        return synthetic(args)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    corpus = load_corpus("bible", langs=["eng", args.lang])
    pivot = corpus.resolve("eng")
    other = [x for x in corpus.langs if x != pivot][0]
    sizes = [min(s, len(corpus)) for s in sizes]
    lm = load_model(args.model, quiet=True, lazy=True)
    ecfg = EmbedConfig(pooling="auto", batch_size=args.batch_size).resolved(lm)
    cache = EmbeddingCache()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "embeddings.safetensors"
    print(f"{lm.name} on bible {pivot}+{other}: sizes {sizes}, {args.threads} threads, budget {args.budget}", flush=True)

    parts = {pivot: [], other: []}
    done = 0
    results = []
    for n in sizes:
        t0 = time.perf_counter()
        if n > done:  # embed the new chunk of verses [done, n) of both languages (cached)
            for lang in (pivot, other):
                emb, hit = embed_cached(lm, corpus.sentences[lang][done:n], ecfg, cache)
                parts[lang].append(emb)
            done = n
        X = torch.cat(parts[pivot], dim=1).contiguous()
        Y = torch.cat(parts[other], dim=1).contiguous()
        save_file({"pivot": X, "other": Y}, str(path))
        del X, Y
        print(f"n={n}: embeddings ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        runs = [("blocked", None)]
        if n == sizes[0]:
            runs = [("dense", None), ("blocked", None), ("blocked", 256)]
        for mode, block in runs:
            r = run_child(path, n, mode, args.threads, args.budget, block)
            r["label"] = "dense" if mode == "dense" else ("budget" if block is None else f"blocked/{block}")
            results.append(r)
            print(f"  {r['label']:<12} block {r['block']}  {r['wall_s']:8.1f} s  peak RSS {r['peak_rss_mb'] / 1024:6.2f} GB"
                  f"  (inputs loaded {r['base_rss_mb'] / 1024:.2f} GB)", flush=True)
        if n == sizes[0]:
            vals = [r["values"] for r in results]
            same = all(v == vals[0] for v in vals)
            print(f"  dense and blocked results identical: {'yes' if same else 'NO'}", flush=True)
            if not same:
                sys.exit("dense and blocked paths differ")

    print()
    head = f"{'n':>6} {'path':<12} {'block':>6} {'wall s':>8} {'peak GB':>8} {'metrics GB':>10}" \
           f" {'x n':>6} {'x n^2':>7} {'x time':>7} {'x peak':>7} {'x metr':>7}"
    print(head)
    print("-" * len(head))
    prev = None
    for r in results:
        metr = (r["peak_rss_mb"] - r["base_rss_mb"]) / 1024
        line = (f"{r['n']:>6} {r['label']:<12} {str(r['block'] or '-'):>6} {r['wall_s']:>8.1f}"
                f" {r['peak_rss_mb'] / 1024:>8.2f} {metr:>10.2f}")
        if prev is not None and r["label"] == "budget" and prev["n"] != r["n"]:
            pm = (prev["peak_rss_mb"] - prev["base_rss_mb"]) / 1024
            f = r["n"] / prev["n"]
            line += (f" {f:>6.1f} {f * f:>7.1f} {r['wall_s'] / prev['wall_s']:>7.1f}"
                     f" {r['peak_rss_mb'] / prev['peak_rss_mb']:>7.2f} {metr / pm if pm > 0 else float('nan'):>7.2f}")
        print(line)
        if r["label"] == "budget":
            prev = r
    first = results[0]
    print(f"\n{first['L']} layers x {first['d']} dims; 'metrics GB' = peak RSS minus RSS with the inputs loaded;"
          f" 'budget': the path --budget picks (dense while it fits, else blocked); ratios to the previous size")


if __name__ == "__main__":
    main()
