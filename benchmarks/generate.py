"""Benchmark: xling's batched greedy generation against a one-prompt-at-a-time ``model.generate`` loop.

What is compared, on the same model, the same prompt token ids and the same decoding (greedy, the same
``max_new_tokens``, the same end-of-sequence ids and stop strings), side by side in one process:

(a) the loop users often write: for each prompt, ``model.generate(input_ids, attention_mask, do_sample=False,
    max_new_tokens=N[, stop_strings, tokenizer])`` (transformers' own greedy loop, with its KV cache), then the
    text cut at the first stop string;
(b) xling: :func:`xling.engine.generate.greedy_generate`, what ``xling eval --task bible-mt`` runs: prompts
    sorted by length, left-padded batches of ``--batch-size`` with position ids, the tokens every prompt of a
    batch shares (the demonstrations) computed once, one prefill per batch, then one token per row per step on
    the KV cache, finished rows dropped from the batch. ``--no-share`` turns the shared prefix off.

Both run in alternating repeats and the best time of each is reported (background load hurts neither more);
it prints items per second, the speed-up (b)/(a) (target >= 3x on CPU at batch 16) and checks that both give
the same outputs.

By default the model is a random-initialised decoder of a real shape (nothing downloaded; speed does not depend
on the weights): SmolLM2-135M's, or Gemma 3 270M's with ``--shape gemma-3-270m``, with prompts of random token
ids shaped like 5-shot translation prompts: the same ``--shared`` tokens (the fixed demonstrations) followed by
each item's own ``--tokens`` (+-50%). A random model never emits its
end-of-sequence token, so every item runs the full ``--max-new-tokens``: the case where dropping finished rows
gains nothing. With ``--model`` (a built-in name, folder or hub id) the prompts are ``bible-mt``'s real k-shot
prompts (English -> ``--langs``; the Bible corpus is fetched on first use) and generation stops at the newline.

    python benchmarks/generate.py                                  # SmolLM2 shape, 32 prompts, batch 16
    python benchmarks/generate.py --shape gemma-3-270m --prompts 32 --threads 2
    python benchmarks/generate.py --model gemma-3-270m --langs de,sw --prompts 32   # a real model (downloads)
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
    "gemma-3-270m": dict(kind="gemma3", vocab_size=262144, hidden_size=640, intermediate_size=2048,
                         num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256, tie_word_embeddings=True),
}


class IdTokenizer:
    """Prompts written as space-separated token ids (``"1 17 2345"``); ids 0-2 are pad, BOS and EOS."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(x) for x in text.split()]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids if not (skip_special_tokens and int(i) < 3))


def build(shape: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    kw = dict(SHAPES[shape])
    kind = kw.pop("kind")
    torch.manual_seed(0)
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, **ids, **kw)).eval()
    n = kw["num_hidden_layers"]
    types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)]
    return Gemma3ForCausalLM(Gemma3TextConfig(max_position_embeddings=2048, layer_types=types, sliding_window=512,
                                              query_pre_attn_scalar=256, **ids, **kw)).eval()


def random_prompts(n: int, shared: int, tokens: int, vocab: int) -> list[str]:
    """``n`` prompts: the same ``shared`` tokens (a k-shot prompt's fixed demonstrations), then each item's own
    ``tokens`` (+-50%), all random ids."""
    g = torch.Generator().manual_seed(1)
    demos = torch.randint(3, vocab, (shared,), generator=g).tolist()
    lengths = torch.randint(max(1, tokens // 2), tokens * 3 // 2 + 1, (n,), generator=g).tolist()
    return [" ".join(str(t) for t in demos + torch.randint(3, vocab, (k,), generator=g).tolist()) for k in lengths]


def bible_prompts(n: int, langs: list[str], shots: int) -> list[str]:
    from xling.tasks.generation import generation_units
    from xling.tasks.registry import load_task

    task = load_task("bible-mt", test_size=max(1, n // len(langs) + 1), langs=langs)
    units = generation_units(task, [task.resolve_lang(x) for x in langs], shots=shots)
    items = [it for _, d, its in units if d == "en-x" for it in its]
    return [it.prompt for it in items][:n]


def main(argv=None) -> int:
    from xling.engine.generate import encode_prompts, first_stop, greedy_generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES), help="random decoder of this shape")
    ap.add_argument("--model", default=None, help="a real decoder instead (bible-mt prompts)")
    ap.add_argument("--langs", default="de,sw", help="--model: target languages of the English -> X prompts")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--shared", type=int, default=160, help="random prompts: tokens every prompt starts with")
    ap.add_argument("--tokens", type=int, default=40, help="random prompts: mean tokens of each item's own part")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-share", action="store_true", help="xling without the shared-prefix computation")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from xling.models.loading import load_model
        from xling.tasks.zeroshot import load_causal_lm

        lm = load_model(args.model, lazy=True, quiet=True, device="cpu")
        model, tok, name = load_causal_lm(lm.path, torch.float32, torch.device("cpu")), lm.tokenizer, args.model
        prompts, stop = bible_prompts(args.prompts, args.langs.split(","), args.shots), ["\n"]
        extra = {"stop_strings": stop, "tokenizer": tok}
    else:
        model, tok = build(args.shape), IdTokenizer()
        name = f"random {args.shape}"
        prompts, stop, extra = random_prompts(args.prompts, args.shared, args.tokens, model.config.vocab_size), [], {}
    encoded = encode_prompts(tok, prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}

    def one_at_a_time():
        out = []
        with torch.inference_mode():
            for ids in encoded:
                x = torch.tensor([ids])
                g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                                   do_sample=False, pad_token_id=pad, **extra)[0, len(ids):].tolist()
                g = g[:next((i for i, t in enumerate(g) if t in eos), len(g))]
                text = tok.decode(g, skip_special_tokens=True)
                cut = first_stop(text, stop)
                out.append(text if cut is None else text[:cut])
        return out

    def batched():
        return [g.text for g in greedy_generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, stop=stop,
                                                batch_size=args.batch_size, max_prompt_tokens=None,
                                                share_prefix=not args.no_share)]

    greedy_generate(model, tok, prompts[:2], max_new_tokens=2, stop=stop, batch_size=2)  # warm-up
    times: dict[str, list[float]] = {"loop": [], "xling": []}
    outs = {}
    for _ in range(args.repeats):
        for key, fn in (("loop", one_at_a_time), ("xling", batched)):
            t0 = time.perf_counter()
            outs[key] = fn()
            times[key].append(time.perf_counter() - t0)
    n = len(prompts)
    best = {k: min(v) for k, v in times.items()}
    same = sum(a == b for a, b in zip(outs["loop"], outs["xling"])) / n
    mean_len = sum(len(e) for e in encoded) / n
    print(f"model {name}; {n} prompts, mean {mean_len:.0f} tokens; max_new_tokens {args.max_new_tokens}; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"(a) model.generate, one prompt at a time : {best['loop']:7.2f} s  {n / best['loop']:6.2f} items/s")
    print(f"(b) xling, length-sorted batches of {args.batch_size:<3d} : {best['xling']:7.2f} s  "
          f"{n / best['xling']:6.2f} items/s")
    print(f"speed-up (b)/(a): {best['loop'] / best['xling']:.2f}x (target >= 3)  same outputs: {same:.1%}")
    return 0 if same >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
