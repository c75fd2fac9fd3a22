"""A causal LM before and after a vocabulary change: held-out perplexity and tokens per second.

Trimming (:mod:`xling.methods.vocab.trim`) keeps the rows of the kept tokens in
the input embedding and in the LM head, so on a text the kept vocabulary covers
the trimmed model computes the original logits of the kept tokens exactly. Its
softmax, though, normalises over the kept tokens only: for a target token ``y``

    log p_trimmed(y) = log p_original(y) - log P_original(kept),

where ``P_original(kept)`` is the probability the original model put on all
kept tokens at that position. So held-out perplexity after trimming equals the
original's perplexity *renormalised over the kept vocabulary* (an identity that
:func:`sequence_nll` checks with ``columns``), and it differs from the
original's full-vocabulary perplexity by exactly the mean of ``-log P(kept)``:
near zero when the removed tokens are ones the model would not predict in
these languages, which is the point of trimming to them. On held-out text the
kept vocabulary does not cover, tokenisation changes, so per-token perplexities
are not comparable; bits per character are.

Speed: teacher-forced forward passes over the held-out sentences (tokens per
second, every position's logits computed: what scoring and prefill cost) and
greedy decoding with the key-value cache (new tokens per second, one LM-head
product per token: where a smaller head saves most).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sequence_nll(model, ids: Sequence[int], columns: torch.Tensor | None = None) -> dict:
    """Next-token negative log-likelihood (nats) of one sequence, summed over its predicted positions.

    ``n`` positions are predicted (every token after the first). With ``columns``
    (sorted old ids kept by a trim; every id of ``ids`` among them) also
    ``nll_kept``: the NLL under the softmax restricted to those columns (the
    trimmed model's, see the module docstring), and ``neg_log_kept_mass``: the
    summed ``-log P(kept)``.
    """
    n = len(ids) - 1
    out = {"nll": 0.0, "n": max(n, 0)}
    if columns is not None:
        out |= {"nll_kept": 0.0, "neg_log_kept_mass": 0.0}
    if n < 1:
        return out
    dev = _device(model)
    x = torch.tensor([list(ids)], device=dev)
    logits = model(input_ids=x).logits[0, :-1].float()
    target = x[0, 1:]
    full = torch.log_softmax(logits, dim=-1)
    out["nll"] = float(-full.gather(-1, target[:, None]).sum())
    if columns is not None:
        cols = columns.to(dev)
        pos = torch.searchsorted(cols, target)
        if bool((pos >= len(cols)).any()) or bool((cols[pos.clamp(max=len(cols) - 1)] != target).any()):
            raise ValueError("sequence_nll: a target id is not among the kept columns")
        kept = logits.index_select(-1, cols)
        out["nll_kept"] = float(-torch.log_softmax(kept, dim=-1).gather(-1, pos[:, None]).sum())
        out["neg_log_kept_mass"] = float(-(torch.logsumexp(kept, -1) - torch.logsumexp(logits, -1)).sum())
    return out


def perplexity(nll: float, n: int) -> float | None:
    """``exp(nll / n)``; None for no predicted positions."""
    return math.exp(nll / n) if n else None


@torch.no_grad()
def forward_speed(model, seqs: Sequence[Sequence[int]], repeats: int = 2, max_seconds: float = 20.0) -> dict:
    """Tokens per second of teacher-forced forward passes (one sequence a pass): the best of ``repeats`` passes over
    ``seqs`` (each stopped after ``max_seconds``)."""
    seqs = [list(s) for s in seqs if len(s)]
    if not seqs:
        return {"sequences": 0, "tokens": 0, "seconds": 0.0, "tokens_per_second": None}
    dev = _device(model)
    best = None
    for _ in range(max(1, repeats)):  # the first pass also warms up (kernels, allocator): the best pass counts
        tokens, t0, done = 0, time.perf_counter(), 0
        for s in seqs:
            model(input_ids=torch.tensor([s], device=dev))
            tokens += len(s)
            done += 1
            if time.perf_counter() - t0 > max_seconds:
                break
        _sync(dev)
        dt = max(time.perf_counter() - t0, 1e-9)
        if best is None or tokens / dt > best[0] / best[2]:
            best = (tokens, done, dt)
    tokens, done, dt = best
    return {"sequences": done, "tokens": tokens, "seconds": round(dt, 4), "tokens_per_second": round(tokens / dt, 1)}


@torch.no_grad()
def generate_speed(model, prompts: Sequence[Sequence[int]], new_tokens: int = 32) -> dict:
    """New tokens per second of greedy decoding with the key-value cache (``new_tokens`` per prompt, no early
    stop), after one warm-up step; the prompt's own forward pass is not timed."""
    prompts = [list(p) for p in prompts if len(p)]
    if not prompts or new_tokens < 1:
        return {"prompts": 0, "new_tokens": 0, "seconds": 0.0, "tokens_per_second": None}
    dev = _device(model)
    key = _cache_key(model)
    total, elapsed = 0, 0.0
    for k, p in enumerate(prompts):
        out = model(input_ids=torch.tensor([p], device=dev), use_cache=True)
        past, nxt = getattr(out, key), out.logits[:, -1].argmax(-1, keepdim=True)
        steps = new_tokens if k else new_tokens + 1  # the first prompt's first step warms up, untimed
        for step in range(steps):
            t0 = time.perf_counter()
            out = model(input_ids=nxt, use_cache=True, **{key: past})
            past, nxt = getattr(out, key), out.logits[:, -1].argmax(-1, keepdim=True)
            _sync(dev)
            if k or step:
                elapsed += time.perf_counter() - t0
                total += 1
    elapsed = max(elapsed, 1e-9)
    return {"prompts": len(prompts), "new_tokens": total, "seconds": round(elapsed, 4),
            "tokens_per_second": round(total / elapsed, 1)}


def _cache_key(model) -> str:
    """The name of the key-value cache argument and output: ``cache`` (transformers 5.2x), else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


__all__ = ["forward_speed", "generate_speed", "perplexity", "sequence_nll"]
