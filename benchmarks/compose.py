"""Benchmark: composing LoRA modules and merging full models, xling against peft and mergekit.

Builds a random Llama-style causal LM (default hidden 1024, 8 layers, about 100M
parameters) and N random LoRA modules (rank r on q, k, v, o, gate, up, down),
then runs, side by side in one invocation, each phase in a fresh process so its
peak resident memory is its own:

LoRA -> LoRA (rank r):
  xling add        exact dW arithmetic, re-factorised by an SVD of the small
                   QR core (never forms dW)
  peft svd         ``add_weighted_adapter(combination_type="svd")``: dense dW, full SVD
  peft linear      ``add_weighted_adapter(combination_type="linear")``: A's and B's
                   combined separately (an approximation)
LoRA -> merged model folder:
  xling merged     base streamed tensor by tensor, exact dW added, shards written
  peft cat+merge   ``combination_type="cat"`` (exact), ``merge_and_unload``, ``save_pretrained``
Full models (N fine-tuned copies of the base):
  xling ties       ``merge_full(..., "ties", density=0.5)``, streaming
  mergekit ties    ``mergekit.merge.run_merge`` with the same TIES config (only if
                   mergekit is importable by ``--mergekit-python``)

Times exclude process start and imports (each phase times its own work, file
loading and writing included); each phase runs ``--repeat`` times and the fastest
run is reported, since a shared machine is noisy. It prints wall times, peak RSS, the ratios, the
relative error of every LoRA output against exact dW arithmetic (showing that
peft "linear" is an approximation), and the largest difference between xling's
and mergekit's TIES.

    python benchmarks/compose.py [--hidden 1024] [--layers 8] [--modules 4] [--rank 16]
                                 [--mergekit-python /tmp/mk/bin/python] [--threads N] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rss_mb() -> float:
    """Peak resident memory of this process (MB).

    Linux's ``ru_maxrss`` survives ``execve`` (a child would report its parent's
    peak), so read the process's own high-water mark ``VmHWM`` when available.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024



# --------------------------------------------------------------------------------------
# Setup (in the parent process)
# --------------------------------------------------------------------------------------


def build_fixtures(root: Path, args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=2048, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.6875),
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=args.hidden // 64, max_position_embeddings=256,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    base = root / "base"
    model.save_pretrained(base, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    mods = []
    for i in range(args.modules):
        pm = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                                                               target_modules=TARGETS))
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        pm.save_pretrained(str(root / f"lora{i}"))
        mods.append(str(root / f"lora{i}"))
        del pm
    full = []
    for i in range(args.full_models):
        g = torch.Generator().manual_seed(200 + i)
        m = LlamaForCausalLM(cfg)
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
        m.save_pretrained(root / f"ft{i}", safe_serialization=True)
        full.append(str(root / f"ft{i}"))
        del m
    return {"base": str(base), "loras": mods, "full": full, "params": n_params}


# --------------------------------------------------------------------------------------
# Phases (each in its own process)
# --------------------------------------------------------------------------------------


def weights_for(n: int) -> list[float]:
    return [1.0 if i % 2 == 0 else -0.5 for i in range(n)]


def phase_xling_lora(fx, args, out):
    from xling.modules import compose_to_lora

    t = time.perf_counter()
    compose_to_lora(fx["loras"], "add", weights_for(len(fx["loras"])), out=out, rank=args.rank)
    return time.perf_counter() - t


def _peft_loaded(fx):
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(fx["base"], dtype=torch.float32)
    pm = PeftModel.from_pretrained(model, fx["loras"][0], adapter_name="m0")
    for i, path in enumerate(fx["loras"][1:], 1):
        pm.load_adapter(path, adapter_name=f"m{i}")
    return pm


def _peft_weighted(fx, args, out, combination):
    t = time.perf_counter()
    pm = _peft_loaded(fx)
    names = [f"m{i}" for i in range(len(fx["loras"]))]
    kw = {"svd_rank": args.rank} if combination == "svd" else {}
    pm.add_weighted_adapter(names, weights_for(len(names)), "mix", combination_type=combination, **kw)
    pm.save_pretrained(out, selected_adapters=["mix"])
    return time.perf_counter() - t


def phase_peft_svd(fx, args, out):
    return _peft_weighted(fx, args, out, "svd")


def phase_peft_linear(fx, args, out):
    return _peft_weighted(fx, args, out, "linear")


def phase_xling_merged(fx, args, out):
    from xling.modules import compose_to_merged

    t = time.perf_counter()
    compose_to_merged(fx["loras"], "add", weights_for(len(fx["loras"])), base=fx["base"], out=out)
    return time.perf_counter() - t


def phase_peft_merged(fx, args, out):
    t = time.perf_counter()
    pm = _peft_loaded(fx)
    names = [f"m{i}" for i in range(len(fx["loras"]))]
    pm.add_weighted_adapter(names, weights_for(len(names)), "mix", combination_type="cat")
    pm.set_adapter("mix")
    for n in names:
        pm.delete_adapter(n)
    merged = pm.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    return time.perf_counter() - t


def phase_xling_ties(fx, args, out):
    from xling.modules import merge_full

    t = time.perf_counter()
    merge_full(fx["full"], "ties", [1.0] * len(fx["full"]), {"density": 0.5}, base=fx["base"], out=out)
    return time.perf_counter() - t


def phase_mergekit_ties(fx, args, out):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = MergeConfiguration.model_validate({
        "merge_method": "ties",
        "base_model": fx["base"],
        "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.5}} for m in fx["full"]],
        "parameters": {"normalize": True},
        "dtype": "float32",
    })
    t = time.perf_counter()
    run_merge(config, out, MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False,
                                        lazy_unpickle=True))
    return time.perf_counter() - t


PHASES = {
    "xling_lora": phase_xling_lora, "peft_svd": phase_peft_svd, "peft_linear": phase_peft_linear,
    "xling_merged": phase_xling_merged, "peft_merged": phase_peft_merged,
    "xling_ties": phase_xling_ties, "mergekit_ties": phase_mergekit_ties,
}


def run_phase(name: str, fx_path: str, out: str, args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import peft  # noqa: F401  (imports before the baseline)
    import transformers  # noqa: F401

    import xling.modules  # noqa: F401

    fx = json.loads(Path(fx_path).read_text())
    base_rss = rss_mb()
    seconds = PHASES[name](fx, args, out)
    print(json.dumps({"seconds": seconds, "peak_mb": rss_mb(), "baseline_mb": base_rss}))


def spawn(name: str, fx_path: Path, out: Path, args, python: str = sys.executable) -> dict | None:
    """Run a phase ``args.repeat`` times, each in a fresh process: the fastest time, the largest peak."""
    best = None
    for _ in range(max(1, args.repeat)):
        shutil.rmtree(out, ignore_errors=True)
        cmd = [python, __file__, "--phase", name, "--fixtures", str(fx_path), "--out", str(out),
               "--rank", str(args.rank), "--threads", str(args.threads or 0)]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if res.returncode != 0:
            print(f"  [{name} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}]")
            return None
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if best is None:
            best = r
        else:
            best = {"seconds": min(best["seconds"], r["seconds"]), "peak_mb": max(best["peak_mb"], r["peak_mb"]),
                    "baseline_mb": min(best["baseline_mb"], r["baseline_mb"])}
    return best


# --------------------------------------------------------------------------------------
# Accuracy checks (parent process)
# --------------------------------------------------------------------------------------


def lora_errors(fx, outs: dict[str, Path]) -> dict[str, float]:
    """Overall relative Frobenius error of each LoRA output against exact dW arithmetic."""
    from xling.modules import read_lora

    inputs = [read_lora(p) for p in fx["loras"]]
    w = weights_for(len(inputs))
    outputs = {k: read_lora(p) for k, p in outs.items() if p.exists()}
    num = {k: 0.0 for k in outputs}
    den = 0.0
    for name in inputs[0].targets:
        exact = sum(wi * m.delta(name).double() for wi, m in zip(w, inputs))
        den += float(exact.pow(2).sum())
        for k, m in outputs.items():
            num[k] += float((m.delta(name).double() - exact).pow(2).sum())
    return {k: (num[k] / den) ** 0.5 for k in outputs}


def max_diff(a: Path, b: Path) -> tuple[float, float, int, int]:
    """(largest |a - b|, largest |b| for scale, entries that differ, entries compared) over all tensors."""
    from safetensors.torch import load_file

    def read(folder):
        out = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    ta, tb = read(a), read(b)
    common = sorted(set(ta) & set(tb))
    diff = max(float((ta[k].double() - tb[k].double()).abs().max()) for k in common)
    scale = max(float(tb[k].double().abs().max()) for k in common)
    n_diff = sum(int((ta[k] != tb[k]).sum()) for k in common)
    n_all = sum(ta[k].numel() for k in common)
    return diff, scale, n_diff, n_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--modules", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--full-models", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every phase (default: torch's)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per phase; the fastest is reported (default 2)")
    ap.add_argument("--mergekit-python", default="/tmp/mk/bin/python",
                    help="a Python that can import mergekit (skipped if it cannot)")
    ap.add_argument("--keep", default=None, help="keep the fixtures and outputs in this folder")
    ap.add_argument("--only", default=None, help="comma-separated groups to run: lora, merged, full (default all)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fixtures", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        run_phase(args.phase, args.fixtures, args.out, args)
        return

    root = Path(args.keep or tempfile.mkdtemp(prefix="xling-bench-compose-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        fx = build_fixtures(root, args)
        fx_path = root / "fixtures.json"
        fx_path.write_text(json.dumps(fx))
        print(f"base: Llama {args.layers} layers x hidden {args.hidden} ({fx['params'] / 1e6:.0f}M params); "
              f"{args.modules} LoRA modules of rank {args.rank} on {len(TARGETS)} matrices/layer; "
              f"{args.full_models} full fine-tuned copies  [setup {time.perf_counter() - t:.1f}s]")
        outs = {n: root / f"out-{n}" for n in PHASES}
        groups = {"lora": ("xling_lora", "peft_svd", "peft_linear"), "merged": ("xling_merged", "peft_merged"),
                  "full": ("xling_ties", "mergekit_ties")}
        wanted = [g.strip() for g in args.only.split(",")] if args.only else list(groups)
        unknown = [g for g in wanted if g not in groups]
        if unknown:
            raise SystemExit(f"--only: unknown group {unknown[0]} (lora, merged, full)")
        res = {}
        for name in [p for g in wanted for p in groups[g]]:
            if name == "mergekit_ties":
                ok = subprocess.run([args.mergekit_python, "-c", "import mergekit"], capture_output=True).returncode == 0 \
                    if Path(args.mergekit_python).exists() else False
                if not ok:
                    print("  mergekit not importable: skipping the mergekit comparison")
                    continue
                res[name] = spawn(name, fx_path, outs[name], args, python=args.mergekit_python)
            else:
                res[name] = spawn(name, fx_path, outs[name], args)

        def row(label, name, ref=None):
            r = res.get(name)
            if not r:
                return
            ratio = ""
            if ref and res.get(ref):
                ratio = f"   time x{r['seconds'] / res[ref]['seconds']:.2f}, peak RSS x{r['peak_mb'] / res[ref]['peak_mb']:.2f}" \
                        " vs xling"
            print(f"  {label:34s} {r['seconds']:8.2f}s   peak RSS {r['peak_mb']:8.0f} MB "
                  f"(after imports {r['baseline_mb']:.0f} MB){ratio}")

        if "lora" in wanted:
            report_lora(fx, args, outs, res, row)
        if "merged" in wanted:
            report_merged(outs, res, row)
        if "full" in wanted:
            report_full(args, outs, res, row)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def report_lora(fx, args, outs, res, row) -> None:
    # peft saves a non-default adapter into a subfolder named after it
    errs = lora_errors(fx, {"xling_lora": outs["xling_lora"], "peft_svd": outs["peft_svd"] / "mix",
                            "peft_linear": outs["peft_linear"] / "mix"})
    print(f"\nLoRA -> LoRA (rank {args.rank}), weights {weights_for(args.modules)}:")
    row("xling add (exact dW, Gram+SVD core)", "xling_lora")
    row("peft add_weighted_adapter svd", "peft_svd", "xling_lora")
    row("peft add_weighted_adapter linear", "peft_linear", "xling_lora")
    print("  relative Frobenius error of the output vs exact dW arithmetic:")
    for k, label in (("xling_lora", "xling add"), ("peft_svd", "peft svd"), ("peft_linear", "peft linear")):
        if k in errs:
            print(f"    {label:12s} {errs[k]:.3e}")
    print("    (xling and peft svd both keep the best rank-r approximation of the exact dW; "
          "peft linear adds cross terms B_m A_n and is not dW arithmetic)")


def report_merged(outs, res, row) -> None:
    print("\nLoRA -> merged model folder (exact):")
    row("xling compose --as merged", "xling_merged")
    row("peft cat + merge_and_unload + save", "peft_merged", "xling_merged")
    if res.get("xling_merged") and res.get("peft_merged"):
        d, s, nd, na = max_diff(outs["xling_merged"], outs["peft_merged"])
        print(f"  max |xling - peft| over all weights: {d:.2e} (weights up to {s:.2f}); {nd} of {na} entries differ")


def report_full(args, outs, res, row) -> None:
    print(f"\nFull-model TIES (density 0.5, {args.full_models} models):")
    row("xling merge_full ties", "xling_ties")
    row("mergekit ties", "mergekit_ties", "xling_ties")
    if res.get("xling_ties") and res.get("mergekit_ties"):
        d, s, nd, na = max_diff(outs["xling_ties"], outs["mergekit_ties"])
        print(f"  max |xling - mergekit| over all weights: {d:.2e} (weights up to {s:.2f}); {nd} of {na} entries "
              "differ (entries tied in magnitude at the trim threshold: both keep exactly k, each breaks the tie "
              "its own way)")


if __name__ == "__main__":
    main()
