"""The logit lens, batched: what a decoder would predict from every layer, at the cost of one forward pass.

For each prompt (the exact model input as token ids) and each hidden state ``l = 0..L``
(0 = the embedding output, ``l`` = the output of block ``l - 1``), the residual stream at the
last position is read through the model's own final norm and unembedding
(:class:`xling.models.heads.LensHead`; the last hidden state is already normed, so its lens is
the model's own next-token distribution). From each layer's distribution the lens keeps the
summed probability of each answer's token ids (Wendler et al. 2024: the ids that begin the
answer word), the entropy (nats), and the top token with its probability.

Prompts run length-sorted in batches with right padding; the last real position of each row is
gathered, so the results do not depend on the batch size or on which prompts share a batch
beyond floating-point rounding. The forward pass runs on the base model (no logits over every
position); only ``L + 1`` rows per prompt are unembedded.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from xling.errors import XlingError
from xling.models.heads import LensHead, find_lens_head


@dataclasses.dataclass
class LensResult:
    """Per prompt and hidden state (shape ``(P, L + 1)``; ``answers`` maps a name to ``(P, L + 1)``)."""

    answers: dict[str, torch.Tensor]
    entropy: torch.Tensor
    top_id: torch.Tensor
    top_prob: torch.Tensor


def _base(model: torch.nn.Module) -> torch.nn.Module:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, torch.nn.Module) and base is not model else model


def _distribution_stats(z: torch.Tensor):
    """From logits ``z`` (``(..., V)``, float32, overwritten): the probabilities, the entropy (nats), the top
    probability and its id, in few passes over ``V`` (the post-processing is a visible part of the lens's cost
    next to the unembedding): ``z - max`` in place, one ``exp``, one sum, one dot product."""
    zmax, ti = z.max(dim=-1, keepdim=True)
    z.sub_(zmax)  # z <= 0, the top token's entry is 0
    e = z.exp()
    s = e.sum(dim=-1, keepdim=True)
    # H = log s - sum(e * z) / s, the dot product batched without a (.., V) temporary
    flat_e, flat_z = e.reshape(-1, 1, e.shape[-1]), z.reshape(-1, e.shape[-1], 1)
    ez = torch.bmm(flat_e, flat_z).reshape(s.shape)
    if not torch.isfinite(ez).all():  # a logit of -inf: 0 * -inf terms count as 0
        ez = (e * z).nan_to_num(0.0).sum(dim=-1, keepdim=True)
    ent = (s.log() - ez / s).squeeze(-1)
    p = e.div_(s)
    return p, ent, (1.0 / s).squeeze(-1), ti.squeeze(-1)


@torch.no_grad()
def logit_lens(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    answers: dict[str, Sequence[Sequence[int]]],
    *,
    batch_size: int = 8,
    pad_id: int = 0,
    head: LensHead | None = None,
    verify: bool = True,
    progress=None,
) -> LensResult:
    """Run the logit lens over ``prompts`` (lists of token ids, the exact model input).

    ``answers[name][i]`` are the token ids whose probabilities are summed for prompt ``i`` (e.g.
    ``{"target": ..., "english": ...}``); ids are checked against the vocabulary. ``verify``
    checks the read-out on the first batch (:meth:`LensHead.verify`)."""
    if not prompts:
        raise XlingError("logit lens: no prompts")
    head = head or find_lens_head(model)
    V = head.unembed.weight.shape[0]
    for name, ids in answers.items():
        if len(ids) != len(prompts):
            raise XlingError(f"logit lens: {len(ids)} answer sets for '{name}' but {len(prompts)} prompts")
        for i, row in enumerate(ids):
            if not row:
                raise XlingError(f"logit lens: prompt {i} has no token ids for answer '{name}'")
            if min(row) < 0 or max(row) >= V:
                raise XlingError(f"logit lens: prompt {i}: answer '{name}' has token ids outside the vocabulary (0..{V - 1})")
    for i, p in enumerate(prompts):
        if not p:
            raise XlingError(f"logit lens: prompt {i} is empty")
    device = next(model.parameters()).device
    base = _base(model)
    P, H = len(prompts), head.num_hidden_states
    out_ans = {name: torch.empty(P, H, dtype=torch.float32) for name in answers}
    entropy = torch.empty(P, H, dtype=torch.float32)
    top_id = torch.empty(P, H, dtype=torch.long)
    top_prob = torch.empty(P, H, dtype=torch.float32)
    order = sorted(range(P), key=lambda i: (len(prompts[i]), i))
    checked = not verify
    for s in range(0, P, batch_size):
        idx = order[s:s + batch_size]
        T = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        mask = torch.zeros(len(idx), T, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(prompts[i])] = torch.tensor(prompts[i], dtype=torch.long)
            mask[r, : len(prompts[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        if not checked:
            head.verify(model, ids[:1, : int(mask[0].sum())])
            checked = True
        hs = base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        if len(hs) != H:
            raise XlingError(f"logit lens: the model returned {len(hs)} hidden states, expected {H}")
        last = mask.sum(dim=1) - 1
        rows = torch.arange(len(idx), device=device)
        # every layer's last position at once: (H, B, d) -> one norm, one unembedding, one softmax
        h = torch.stack([hs[layer][rows, last] for layer in range(H)])
        z = head.stack_logits(h).float()
        p, ent, tp, ti = _distribution_stats(z)
        entropy[idx] = ent.T.cpu()
        top_id[idx] = ti.T.cpu()
        top_prob[idx] = tp.T.cpu()
        for name, sets in answers.items():
            width = max(len(set(sets[i])) for i in idx)
            gather = torch.zeros(len(idx), width, dtype=torch.long)
            valid = torch.zeros(len(idx), width, dtype=torch.bool)
            for r, i in enumerate(idx):
                u = sorted(set(sets[i]))
                gather[r, : len(u)] = torch.tensor(u)
                valid[r, : len(u)] = True
            gather, valid = gather.to(device), valid.to(device)
            picked = p.gather(-1, gather.unsqueeze(0).expand(H, -1, -1))  # (H, B, width)
            out_ans[name][idx] = (picked * valid).sum(dim=-1).T.cpu()
        if progress is not None:
            progress(len(idx))
    return LensResult(out_ans, entropy, top_id, top_prob)


__all__ = ["LensResult", "logit_lens"]
