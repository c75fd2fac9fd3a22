"""Benchmark: time and peak memory of vocabulary trimming against the embedding matrix size.

For each vocabulary size (default 10k, 50k, 250k) a random one-layer BERT with
a fixed hidden size (default 384, as the built-in E5) and a word-level
tokenizer of that many tokens is built in a fresh subprocess; synthetic
Zipf-distributed corpus counts select about ``--keep`` of the tokens; then
three phases are timed:

* select: choosing the ids and rebuilding the tokenizer JSON
  (:func:`xling.methods.vocab.trim.select_ids`);
* slice: gathering the kept rows of every vocabulary tensor in place
  (:func:`xling.methods.vocab.model.trim_model_`);
* save: writing the safetensors folder and tokenizer.json
  (:func:`xling.modules.vocab_folder.save_folder`).

Peak resident memory is sampled every 2 ms during the phases and reported as
the increase over the process after the model was built, next to the size of
one embedding matrix: trimming gathers the kept rows once and frees the old
matrix, so the increase should stay well under one matrix (the kept fraction of
it, plus the tokenizer). ``--untied`` adds an untied output matrix (a Llama-style
LM head), which doubles what is gathered.

    python benchmarks/vocab.py [--sizes 10000,50000,250000] [--hidden 384] [--keep 0.2] [--untied]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a background thread."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, rss_bytes(), threading.Event()

    def __enter__(self):
        self.peak = rss_bytes()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def one(vocab: int, hidden: int, keep: float, untied: bool, seed: int = 0) -> dict:
    import gc

    import numpy as np
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from xling.methods.vocab.model import count_parameters, trim_model_
    from xling.modules.vocab_folder import save_folder
    from xling.methods.vocab.tokenizer import load_json
    from xling.methods.vocab.trim import select_ids

    torch.manual_seed(seed)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + [f"w{i}" for i in range(vocab - 4)])},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=max(1, hidden // 64),
                     intermediate_size=hidden * 4, tie_word_embeddings=not untied)
    model = (BertForMaskedLM(cfg) if untied else BertModel(cfg, add_pooling_layer=False)).eval()
    tj = load_json(tok)
    # Zipf counts: the most frequent `keep` share of tokens is seen at least twice
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(vocab) + 1
    counts = np.floor(2 * (keep * vocab / ranks) ** 1.0)
    emb_bytes = model.get_input_embeddings().weight.numel() * 4
    params_before = count_parameters(model)["total"]
    gc.collect()
    base = rss_bytes()
    out = {"vocab": vocab, "hidden": hidden, "untied": untied, "embedding_mb": emb_bytes / 2**20}
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as peak:
        t0 = time.perf_counter()
        plan = select_ids(tj, counts, min_freq=2)
        t1 = time.perf_counter()
        trim_model_(model, torch.as_tensor(plan.keep))
        t2 = time.perf_counter()
        src = Path(tmp, "src")
        src.mkdir()
        save_folder(model, plan.tokenizer_json, src, Path(tmp, "out"))
        t3 = time.perf_counter()
    out |= {
        "kept": plan.new_size, "params_before": params_before, "params_after": count_parameters(model)["total"],
        "select_s": t1 - t0, "slice_s": t2 - t1, "save_s": t3 - t2, "total_s": t3 - t0,
        "peak_extra_mb": (peak.peak - base) / 2**20,
    }
    out["peak_extra_in_matrices"] = out["peak_extra_mb"] / out["embedding_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,250000")
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--keep", type=float, default=0.2, help="share of tokens the synthetic corpus keeps")
    ap.add_argument("--untied", action="store_true", help="add an untied output matrix (LM head)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:  # child process: one size, JSON on stdout
        print(json.dumps(one(args.one, args.hidden, args.keep, args.untied)))
        return
    rows = []
    for v in [int(x) for x in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(v), "--hidden", str(args.hidden), "--keep", str(args.keep)]
        if args.untied:
            cmd.append("--untied")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(res.stderr)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    head = (f"{'vocab':>8} {'kept':>7} {'emb MB':>8} {'select s':>9} {'slice s':>8} {'save s':>7} {'total s':>8} "
            f"{'peak+ MB':>9} {'x matrix':>9}")
    print(f"hidden {args.hidden}, {'untied output matrix' if args.untied else 'input matrix only'}, keep ~{args.keep:.0%}")
    print(head)
    for r in rows:
        print(f"{r['vocab']:>8,} {r['kept']:>7,} {r['embedding_mb']:>8.1f} {r['select_s']:>9.3f} {r['slice_s']:>8.3f} "
              f"{r['save_s']:>7.3f} {r['total_s']:>8.3f} {r['peak_extra_mb']:>9.1f} {r['peak_extra_in_matrices']:>9.2f}")


if __name__ == "__main__":
    main()
