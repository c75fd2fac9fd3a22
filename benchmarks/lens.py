"""Logit lens and neuron counting against the bare forward pass on the same inputs (issue targets:
lens <= 1.3x, counting <= 1.2x).

Builds a random-initialised decoder of a real shape (nothing downloaded; the speed does not depend
on the weights): SmolLM2-135M's (30 layers, d 576, vocabulary 49,152) by default, or Gemma 3 270M's
(18 layers, d 640, vocabulary 262,144) with ``--shape gemma-3-270m``. The same length-sorted batches
of random token ids run three ways, side by side in one process, each the best of ``--repeats``:

* floor: the base model's forward pass with ``output_hidden_states=True`` (what the lens must pay);
* lens: :func:`xling.engine.lens.logit_lens` (forward + final norm + unembedding of the last
  position at every layer + the statistics);
* counting: the same forward pass with :class:`xling.engine.neurons.ActivationCounter` hooks.

    python benchmarks/lens.py                      # SmolLM2 shape, 64 prompts x 48 tokens
    python benchmarks/lens.py --shape gemma-3-270m --prompts 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {
    "smollm2-135m": dict(kind="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "gemma-3-270m": dict(kind="gemma3", vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=256, tie_word_embeddings=True),
}


def build(shape: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    kw = dict(SHAPES[shape])
    kind = kw.pop("kind")
    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, **kw)).eval()
    n = kw["num_hidden_layers"]
    types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)]
    return Gemma3ForCausalLM(Gemma3TextConfig(max_position_embeddings=2048, layer_types=types, sliding_window=512,
                                              query_pre_attn_scalar=256, **kw)).eval()


def batches(prompts, batch_size):
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        T = max(len(prompts[i]) for i in idx)
        ids = torch.zeros(len(idx), T, dtype=torch.long)
        mask = torch.zeros(len(idx), T, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(prompts[i])] = torch.tensor(prompts[i])
            mask[r, : len(prompts[i])] = 1
        yield ids, mask


def best(fn, repeats):
    t_best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def main() -> int:
    from xling.engine.lens import logit_lens
    from xling.engine.neurons import ActivationCounter
    from xling.models.heads import find_lens_head

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=48, help="mean prompt length (lengths vary +-50%%)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args.shape)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(args.tokens // 2, args.tokens * 3 // 2 + 1, (args.prompts,), generator=g).tolist()
    prompts = [torch.randint(3, V, (n,), generator=g).tolist() for n in lengths]
    answers = {"target": [[i % V] for i in range(args.prompts)], "english": [[(i + 7) % V] for i in range(args.prompts)]}
    base = model.base_model
    head = find_lens_head(model)

    def floor():
        with torch.no_grad():
            for ids, mask in batches(prompts, args.batch_size):
                base(input_ids=ids, attention_mask=mask, output_hidden_states=True)

    def bare_forward():
        with torch.no_grad():
            for ids, mask in batches(prompts, args.batch_size):
                base(input_ids=ids, attention_mask=mask)

    def lens():
        logit_lens(model, prompts, answers, batch_size=args.batch_size, head=head, verify=False)

    def counting():
        counter = ActivationCounter(base)
        with counter.attach(base):
            for ids, mask in batches(prompts, args.batch_size):
                counter.run(base, ids, mask)

    floor()  # warm-up
    t_floor = best(floor, args.repeats)
    t_lens = best(lens, args.repeats)
    t_fwd = best(bare_forward, args.repeats)
    t_count = best(counting, args.repeats)
    print(f"shape {args.shape}: {args.prompts} prompts x ~{args.tokens} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"  forward with hidden states (floor)   {t_floor:7.2f} s")
    print(f"  logit lens                           {t_lens:7.2f} s   {t_lens / t_floor:.2f}x the floor (target 1.3x)")
    print(f"  forward (no hidden states)           {t_fwd:7.2f} s")
    print(f"  neuron counting                      {t_count:7.2f} s   {t_count / t_fwd:.2f}x the forward (target 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
