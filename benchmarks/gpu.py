"""Benchmark: xling align on a GPU against the forward-pass floor and the MEXA reference procedure.

Builds random-initialised models of real shapes on the device, in the dtype a
GPU user runs them in (e5-small fp32; Gemma 3 270M, Llama 3.2 1B and Qwen2.5 7B
bf16), with the built-in e5-small tokenizer for every shape (the time depends on
the token counts and the model's shape, not on which vocabulary produced the
ids; a decoder whose real vocabulary is smaller than the tokenizer's 250,037
entries gets a larger embedding table, a lookup whose size does not change the
time). Nothing is downloaded: the tokenizer, 11 languages x 100 sentences of the
built-in Django corpus and the wheels of the pure-Python dependencies a bare GPU
machine lacks come from a bundle made here once::

    python benchmarks/gpu.py --make-bundle benchmarks/.gpu_bundle      # on any machine with xling set up
    python benchmarks/gpu.py --bundle benchmarks/.gpu_bundle --out OUT  # on the GPU machine

For each shape, side by side in one process:

(a) floor: the length-sorted batched forward passes alone (every hidden state
    returned, nothing pooled, no metric), synchronised once at the end;
(b) xling: ``align`` with every default metric (MEXA, retrieval, xSIM, bitext F1,
    CKA, ANC), cache off, engine and metrics on the model's device;
(c) the MEXA reference procedure (one sentence per forward pass, each layer
    pooled and copied to the host, SciPy cosine double loop, Python MEXA loop),
    timed on a subset and scaled: the forward passes of ``--ref-sentences``
    sentences per language scaled to all of them, the cosine loop of
    ``--ref-pairs`` (language, layer) pairs at the full n scaled to every pair.

Floor and xling alternate ``--repeats`` times after a warm-up, and each keeps
its best time. Then the metrics alone on n = 31,102 sentence pairs x 13 layers x
384 dimensions (random embeddings, the size of the largest built-in corpus):
the floor (a tiled product of normalised rows plus row and column top-k) and all
six default metrics. Results go to ``OUT/gpu.json`` and ``OUT/gpu.md``.
``--quick`` runs tiny shapes (and n = 2,048 x 2 layers) to check the script end
to end on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from metrics import metrics_floor  # noqa: E402  (benchmarks/metrics.py)

E5_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WHEELS = ("platformdirs", "langcodes", "language_data")

# Real shapes (the published configs); vocab_size is raised to the tokenizer's size where smaller.
SHAPES = {
    "e5-small": {"kind": "bert", "dtype": "fp32"},
    "gemma-3-270m": {"kind": "gemma3_text", "dtype": "bf16", "vocab_size": 262144, "hidden_size": 640,
                     "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
                     "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 32768,
                     "sliding_window": 512},
    "llama-3.2-1b": {"kind": "llama", "dtype": "bf16", "vocab_size": 128256, "hidden_size": 2048,
                     "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
                     "tie_word_embeddings": True, "rms_norm_eps": 1e-5},
    "qwen2.5-7b": {"kind": "qwen2", "dtype": "bf16", "vocab_size": 152064, "hidden_size": 3584,
                   "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
}
QUICK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------- bundle


def make_bundle(target: Path, langs: int = 10, sentences: int = 100) -> None:
    """Tokenizer files, 11 languages x 100 Django sentences, and the dependency wheels, into ``target``."""
    from xling.data.readers import load_corpus
    from xling.models.loading import model_folder

    target.mkdir(parents=True, exist_ok=True)
    folder = model_folder("e5-small", quiet=True)
    (target / "e5").mkdir(exist_ok=True)
    for name in E5_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, target / "e5" / name)
    corpus = load_corpus(None)
    pivot = corpus.resolve("eng_Latn")
    others = [x for x in corpus.langs if x != pivot][:langs]
    sub = corpus.select([pivot, *others], sentences)
    (target / "corpus.json").write_text(json.dumps({"name": sub.name, "pivot": pivot, "sentences": sub.sentences},
                                                   ensure_ascii=False))
    wheels = target / "wheels"
    wheels.mkdir(exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels)]
    from importlib.metadata import version

    subprocess.run(pip + [f"{w}=={version(w)}" for w in WHEELS], check=True)
    subprocess.run(pip + ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                          "--platform", "manylinux2014_x86_64", f"marisa-trie=={version('marisa-trie')}"], check=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"bundle {target}: {size / 2**20:.1f} MiB ({', '.join(sorted(p.name for p in target.iterdir()))})")


# ----------------------------------------------------------------------------- models


def build_model(shape: str, vocab: int, device: torch.device, bundle: Path, quick: bool):
    """A random-initialised model of ``shape`` built directly on ``device`` (never on the CPU first)."""
    from transformers import AutoConfig

    spec = dict(SHAPES[shape])
    kind, dtype = spec.pop("kind"), DTYPES[spec.pop("dtype")]
    if kind == "bert":
        config = AutoConfig.from_pretrained(bundle / "e5")
    else:
        config = AutoConfig.for_model(kind, **spec)
    config.vocab_size = max(int(config.vocab_size), vocab)
    if quick:
        for k, v in QUICK.items():
            if hasattr(config, k) and not (kind == "bert" and k in ("num_key_value_heads", "head_dim")):
                setattr(config, k, v)
        if kind == "gemma3_text":
            config.layer_types = config.layer_types[: config.num_hidden_layers]
    from transformers import AutoModel

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=dtype)
    return model.eval(), dtype, kind != "bert"


def loaded(model, tokenizer, name: str, is_decoder: bool, device, dtype):
    from xling.models.loading import LoadedModel

    # LoadedModel directly: from_objects would hash every tensor on the host (15 GB for 7B)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, path=None, is_decoder=is_decoder,
                       fingerprint=f"gpu-bench-{name}", device=device, dtype=dtype)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- the three procedures


def floor_forward(lm, sentences_by_lang: dict[str, list[str]], batch_size: int) -> None:
    """Only the batched, length-sorted forward passes (what any implementation must pay)."""
    from xling.engine.embed import EmbedConfig, _to_device, pad_id, tokenize

    cfg = EmbedConfig(batch_size=batch_size).resolved(lm)
    pad, dev = pad_id(lm.tokenizer), lm.device
    with torch.inference_mode():
        for sents in sentences_by_lang.values():
            ids, _ = tokenize(lm, sents, cfg)
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            for s in range(0, len(order), batch_size):
                rows = [ids[i] for i in order[s: s + batch_size]]
                T = len(rows[0])
                x = torch.full((len(rows), T), pad)
                m = torch.zeros((len(rows), T), dtype=torch.long)
                for b, r in enumerate(rows):
                    x[b, : len(r)] = torch.tensor(r)
                    m[b, : len(r)] = 1
                lm.model(input_ids=_to_device(x, dev), attention_mask=_to_device(m, dev), output_hidden_states=True)
    sync(dev)


def reference_embed(lm, sentences: list[str], pooling: str) -> list[list[np.ndarray]]:
    """MEXA's reference embedding: one sentence per forward pass, every layer pooled and copied to the host."""
    dev = lm.device
    out = []
    with torch.no_grad():
        for text in sentences:
            enc = lm.tokenizer(text, return_tensors="pt", truncation=True, max_length=510)
            enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            hs = lm.model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"][0].float()
            w = mask * torch.arange(1, mask.shape[0] + 1, device=dev) if pooling == "weighted-mean" else mask
            out.append([((h[0].float() * w[:, None]).sum(0) / w.sum()).cpu().numpy() for h in hs])
    return out


def reference_cosines(P: list[np.ndarray], Q: list[np.ndarray]) -> float:
    """MEXA's reference scoring of one (language, layer): SciPy cosine double loop, Python strict test."""
    from scipy.spatial.distance import cosine

    n = len(P)
    S = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            S[i, j] = 1 - cosine(P[i].astype(np.float64), Q[j].astype(np.float64))
    count = 0
    for i in range(n):
        if S[i, i] > max(np.delete(S[i], i)) and S[i, i] > max(np.delete(S[:, i], i)):
            count += 1
    return count / n


def time_reference(lm, sentences: dict[str, list[str]], pooling: str, n_layers: int, ref_sentences: int,
                   ref_pairs: int) -> dict:
    """The reference procedure on a subset, scaled to the whole run (see the module docstring)."""
    n = len(next(iter(sentences.values())))
    m = min(ref_sentences, n)
    t = time.perf_counter()
    for sents in sentences.values():
        reference_embed(lm, sents[:m], pooling)
    t_embed = (time.perf_counter() - t) * n / m
    rng = np.random.default_rng(0)
    d = int(lm.config.hidden_size)
    P = list(rng.standard_normal((n, d)).astype(np.float32))
    Q = list(rng.standard_normal((n, d)).astype(np.float32))
    pairs = (len(sentences) - 1) * n_layers
    k = min(ref_pairs, pairs)
    t = time.perf_counter()
    for _ in range(k):
        reference_cosines(P, Q)
    t_cos = (time.perf_counter() - t) * pairs / k
    return {"seconds": t_embed + t_cos, "embed_s": t_embed, "cosine_s": t_cos,
            "scaled_from": f"forward passes of {m} of {n} sentences per language (x{n / m:g}); "
                           f"cosine loops of {k} of {pairs} (language, layer) pairs (x{pairs / k:g})"}


# ----------------------------------------------------------------------------- runs


def bench_shape(shape: str, args, corpus, tokenizer, device) -> dict:
    from xling.recipes.align.run import align

    model, dtype, is_decoder = build_model(shape, len(tokenizer), device, args.bundle, args.quick)
    lm = loaded(model, tokenizer, shape, is_decoder, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    sents = corpus.sentences
    pivot = corpus.meta["pivot"]
    kw = dict(lm=lm, corpus=corpus, pivot=pivot, max_sentences=None, batch_size=args.batch_size, out=None,
              store=None, cache=False, progress=False)
    # warm-up: kernel selection, allocator pools, cuBLAS handles
    floor_forward(lm, sents, args.batch_size)
    res = align(**kw)
    sync(device)
    t_floor = t_xling = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        floor_forward(lm, sents, args.batch_size)
        t_floor = min(t_floor, time.perf_counter() - t)
        t = time.perf_counter()
        res = align(**kw)
        sync(device)
        t_xling = min(t_xling, time.perf_counter() - t)
    if getattr(args, "profile", False) and args.out is not None:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        align(**kw)
        sync(device)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"profile-{shape}.txt").write_text(buf.getvalue())
    ref = time_reference(lm, sents, res.pooling, len(res.layers), args.ref_sentences, args.ref_pairs)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    row = {"shape": shape, "dtype": str(dtype).replace("torch.", ""), "params_m": round(params / 1e6, 1),
           "layers": len(res.layers), "pooling": res.pooling, "floor_s": t_floor, "xling_s": t_xling,
           "xling_over_floor": t_xling / t_floor, "reference_s": ref["seconds"],
           "reference_over_xling": ref["seconds"] / t_xling, "reference_scaled_from": ref["scaled_from"],
           "outputs": len(res.metrics()), "peak_gpu_gib": mem}
    print(f"{shape:14s} {row['dtype']:8s} floor {t_floor:7.2f} s  xling {t_xling:7.2f} s  "
          f"xling/floor {row['xling_over_floor']:5.2f}  reference {ref['seconds']:8.1f} s  "
          f"reference/xling {row['reference_over_xling']:6.1f}", flush=True)
    del lm, model, res
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return row


def bench_metrics(n: int, layers: int, d: int, device, repeats: int) -> dict:
    """All six default metrics against their floor on random (L, n, d) embeddings."""
    from xling.methods.metrics import PairEmbeddings, compute_metrics
    from xling.recipes.align.run import DEFAULT_METRICS

    g = torch.Generator(device="cpu").manual_seed(0)
    X = torch.randn(layers, n, d, generator=g)
    Y = (X + 1.5 * torch.randn(layers, n, d, generator=g)).to(device)
    X = X.to(device)
    pair = PairEmbeddings(X, Y)
    metrics_floor(pair, 5)  # warm-up
    sync(device)
    t_floor = t_all = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        metrics_floor(PairEmbeddings(X, Y), 5)
        sync(device)
        t_floor = min(t_floor, time.perf_counter() - t)
        t = time.perf_counter()
        out = compute_metrics(PairEmbeddings(X, Y), list(DEFAULT_METRICS))
        sync(device)
        t_all = min(t_all, time.perf_counter() - t)
    row = {"n": n, "layers": layers, "d": d, "floor_s": t_floor, "metrics_s": t_all, "metrics_over_floor": t_all / t_floor,
           "outputs": len(out)}
    print(f"metrics n={n} x {layers} layers x d={d}: floor {t_floor:.2f} s, all six {t_all:.2f} s, "
          f"ratio {t_all / t_floor:.2f}", flush=True)
    return row


def markdown(result: dict) -> str:
    lines = [f"Device: {result['device']}; torch {result['torch']}; transformers {result['transformers']}; "
             f"{result['languages']} languages x {result['sentences']} sentences; batch {result['batch_size']}; "
             f"best of {result['repeats']} after a warm-up.", "",
             "| model shape | dtype | params (M) | layers | floor (s) | xling align (s) | xling / floor | "
             "MEXA procedure (s, scaled) | procedure / xling |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["shapes"]:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['params_m']} | {r['layers']} | {r['floor_s']:.2f} | "
                     f"{r['xling_s']:.2f} | {r['xling_over_floor']:.2f}x | {r['reference_s']:.1f} | "
                     f"{r['reference_over_xling']:.1f}x |")
    m = result.get("metrics")
    if m:
        lines += ["", f"Metrics alone, n = {m['n']:,} x {m['layers']} layers x d = {m['d']} (random embeddings): "
                      f"floor {m['floor_s']:.2f} s, all six default metrics {m['metrics_s']:.2f} s "
                      f"({m['metrics_over_floor']:.2f}x the floor)."]
    if result["shapes"]:
        lines += ["", "MEXA procedure: " + result["shapes"][0]["reference_scaled_from"] + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-bundle", type=Path, default=None, metavar="DIR", help="write the offline bundle and exit")
    ap.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent / ".gpu_bundle")
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu.json and gpu.md")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of " + ", ".join(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-sentences", type=int, default=10, help="reference forward passes: sentences per language")
    ap.add_argument("--ref-pairs", type=int, default=3, help="reference cosine loops: (language, layer) pairs timed")
    ap.add_argument("--metrics-n", type=int, default=31102)
    ap.add_argument("--metrics-layers", type=int, default=13)
    ap.add_argument("--skip-metrics", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and metrics, to check the script on a CPU")
    ap.add_argument("--profile", action="store_true",
                    help="also write profile-<shape>.txt: cProfile of one align call (synchronised), top 45 by cumulative time")
    args = ap.parse_args()
    if args.make_bundle is not None:
        make_bundle(args.make_bundle)
        return 0
    if args.quick:
        args.repeats, args.ref_sentences, args.ref_pairs = 1, 3, 1
        args.metrics_n, args.metrics_layers = 2048, 2

    from transformers import AutoTokenizer

    import transformers
    from xling.data.corpus import ParallelCorpus

    device = torch.device(args.device)
    data = json.loads((args.bundle / "corpus.json").read_text())
    corpus = ParallelCorpus(data["name"], data["sentences"], {"pivot": data["pivot"]})
    tokenizer = AutoTokenizer.from_pretrained(args.bundle / "e5")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'}, " \
                                                                              f"{torch.get_num_threads()} threads)"
    result = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
              "languages": len(corpus.langs), "sentences": len(corpus), "batch_size": args.batch_size,
              "repeats": args.repeats, "quick": args.quick, "shapes": []}
    print(f"{name}; {len(corpus.langs)} languages x {len(corpus)} sentences", flush=True)
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        if shape not in SHAPES:
            ap.error(f"unknown shape {shape} (choose from {', '.join(SHAPES)})")
        result["shapes"].append(bench_shape(shape, args, corpus, tokenizer, device))
        if args.out is not None:  # a partial result survives a later failure or time limit
            write(result, args.out)
    if not args.skip_metrics:
        result["metrics"] = bench_metrics(args.metrics_n, args.metrics_layers, 384, device, max(1, args.repeats - 1))
    if args.out is not None:
        write(result, args.out)
    print(markdown(result))
    return 0


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1))
    (out / "gpu.md").write_text(markdown(result))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
