"""A short causal-LM adaptation after a vocabulary change: train the embeddings (or every weight) on target text.

After a transplant or a vocabulary replacement the transformer body is the old one and only the vocabulary rows
are new; FOCUS (Dobler and de Melo 2023) and tokensurgeon follow the initialisation with language-adaptive
training, and a few hundred steps of the embeddings alone already recover much of the loss. :func:`adapt_causal_lm`
does that: next-token cross-entropy on the given token sequences, AdamW (no weight decay), a linear warm-up over the
first tenth of the steps and a linear decay to zero, gradients clipped to norm 1, batches drawn by a seeded
generator (epoch after epoch of a seeded permutation), dropout seeded too. ``scope="embeddings"`` trains only the
vocabulary tensors (the input embedding, the LM head and output biases; a tied head is one tensor), ``"all"``
every weight. The model is left in eval mode with its ``requires_grad`` flags restored.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch

SCOPES = ("embeddings", "all")


def trainable_parameters(model: torch.nn.Module, scope: str = "embeddings") -> list[torch.nn.Parameter]:
    """The parameters ``scope`` trains (each once)."""
    from xling.methods.vocab.model import vocab_tensors

    if scope == "all":
        params = list(model.parameters())
    elif scope == "embeddings":
        params = [vt.tensor for vt in vocab_tensors(model) if any(is_param for _, _, is_param in vt.refs)]
    else:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def batches(sequences: Sequence[Sequence[int]], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Indices of the sequences in each of ``steps`` batches: successive seeded permutations, cut in batches."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    out = []
    n = len(sequences)
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(n, generator=gen).tolist()
        out.append(order[:batch_size])
        order = order[batch_size:]
    return out


def chunk_sequences(sequences: Sequence[Sequence[int]], max_length: int) -> list[list[int]]:
    """Sequences longer than ``max_length`` cut into pieces (each at least 2 tokens, so it has a target)."""
    out = []
    for s in sequences:
        s = list(s)
        for a in range(0, len(s), max_length):
            piece = s[a : a + max_length]
            if len(piece) >= 2:
                out.append(piece)
    return out


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first ``max(1, steps // 10)`` steps, then linear decay to zero at ``steps``."""
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * max(0.0, (steps - step) / max(1, steps - warm))


def adapt_causal_lm(model: torch.nn.Module, sequences: Sequence[Sequence[int]], *, steps: int, lr: float = 5e-4,
                    batch_size: int = 8, seed: int = 0, scope: str = "embeddings", max_length: int = 128,
                    pad_id: int = 0, progress: Callable[[int, float], None] | None = None) -> dict:
    """Train ``model`` in place for ``steps`` steps of next-token prediction on ``sequences`` (token ids, each with
    its leading BOS if the model uses one); returns the losses and what was trained (see the module docstring)."""
    seqs = chunk_sequences(sequences, max_length)
    if steps < 1 or not seqs:
        return {"steps": 0, "losses": [], "scope": scope, "sequences": len(seqs)}
    params = trainable_parameters(model, scope)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    losses, tokens = [], 0
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model.train()
            for step, idx in enumerate(batches(seqs, batch_size, steps, seed)):
                batch = [seqs[i] for i in idx]
                width = max(map(len, batch))
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, s in enumerate(batch):
                    ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[r, : len(s)] = 1
                labels = ids.masked_fill(mask == 0, -100)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, steps, lr)
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
                loss = out.loss
                value = float(loss.detach().item())
                if not math.isfinite(value):
                    raise FloatingPointError(f"the adaptation loss is {value} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(round(value, 6))
                tokens += int(mask.sum()) - len(batch)
                if progress is not None:
                    progress(step, value)
    finally:
        model.eval()
        opt.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
    n_params = sum(p.numel() for p in params)
    return {"steps": steps, "scope": scope, "lr": lr, "batch_size": batch_size, "seed": seed,
            "max_length": max_length, "sequences": len(seqs), "trained_parameters": int(n_params),
            "predicted_tokens": tokens, "losses": losses, "first_loss": losses[0], "last_loss": losses[-1],
            "mean_loss_last_10": round(sum(losses[-10:]) / len(losses[-10:]), 6),
            "seconds": round(time.perf_counter() - t0, 2)}


__all__ = ["SCOPES", "adapt_causal_lm", "batches", "chunk_sequences", "lr_at", "trainable_parameters"]
