"""Pooling of token states into sentence vectors, per layer, over the attention mask.

Each function takes ``hidden`` of shape ``(layers, batch, tokens, dim)`` and a 0/1
``mask`` of shape ``(batch, tokens)`` and returns ``(layers, batch, dim)`` in
float32. Padded positions never enter a result, even when the model wrote NaN
there (fully masked rows under SDPA can): they are selected out, not multiplied
by zero. Every function is correct for left and right padding.

Definitions follow ``shared/reference/methods.md``:

- ``mean``: average over real tokens, special tokens included (XTREME,
  sentence-transformers).
- ``mean-nospecial``: the same without special tokens (needs ``special_mask``).
- ``weighted-mean``: MEXA (Kargaran et al. 2024) position-weighted mean for
  decoders, ``w_t = t`` with ``t`` the 1-based position among real tokens.
- ``last``: the state of the last real token (for left padding that is the last
  column; for right padding the column ``length - 1``).
- ``cls``: the first real token.
"""

from __future__ import annotations

from typing import Callable

import torch

from xling.errors import XlingError
from xling.registry import Registry

PoolFn = Callable[..., torch.Tensor]
POOLINGS = Registry(kind="pooling", unknown="unknown pooling {name!r}{hint} (available: {known}, auto)")


def register_pooling(name: str):
    """Decorator: make ``fn(hidden, mask, **_)`` the pooling called ``name``."""
    return POOLINGS.register(name)


def _weighted(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t h_t / sum_t w_t with padded positions excluded (weights 0 there)."""
    w = weights.to(torch.float32)
    h = torch.where(w[None, :, :, None] > 0, hidden.float(), hidden.new_zeros(()).float())
    total = w.sum(dim=1).clamp_min(1e-12)  # (B,)
    return torch.einsum("lbtd,bt->lbd", h, w) / total[None, :, None]


@register_pooling("mean")
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    return _weighted(hidden, mask)


@register_pooling("mean-nospecial")
def mean_nospecial_pool(hidden: torch.Tensor, mask: torch.Tensor, special_mask: torch.Tensor | None = None, **_) -> torch.Tensor:
    if special_mask is None:
        raise XlingError("pooling mean-nospecial needs the tokenizer's special-token mask")
    keep = mask * (1 - special_mask)
    # A sentence made only of special tokens falls back to all its real tokens.
    empty = keep.sum(dim=1) == 0
    keep = torch.where(empty[:, None], mask, keep)
    return _weighted(hidden, keep)


@register_pooling("weighted-mean")
def weighted_mean_pool(hidden: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    positions = torch.cumsum(mask, dim=1) * mask  # 1-based among real tokens, 0 on padding
    return _weighted(hidden, positions)


def _gather_token(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    L, B, T, D = hidden.shape
    idx = index.view(1, B, 1, 1).expand(L, B, 1, D)
    return hidden.gather(2, idx).squeeze(2).float()


@register_pooling("last")
def last_pool(hidden: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    T = mask.shape[1]
    cols = torch.arange(T, device=mask.device)
    last = torch.where(mask.bool(), cols, torch.full_like(cols, -1)).amax(dim=1)
    return _gather_token(hidden, last.clamp_min(0))


@register_pooling("cls")
def cls_pool(hidden: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    T = mask.shape[1]
    cols = torch.arange(T, device=mask.device)
    first = torch.where(mask.bool(), cols, torch.full_like(cols, T)).amin(dim=1)
    return _gather_token(hidden, first.clamp_max(T - 1))


def get_pooling(name: str) -> PoolFn:
    return POOLINGS.get(name)


def default_pooling(is_decoder: bool) -> str:
    """MEXA's choice: weighted mean for decoder-only models, plain mean for encoders."""
    return "weighted-mean" if is_decoder else "mean"
