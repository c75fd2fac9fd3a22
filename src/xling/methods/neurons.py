"""Language-specific neurons by LAPE (Tang et al. 2024, "Language-Specific Neurons: The Key to
Multilingual Capabilities in Large Language Models"), selected as the authors' released code does.

Inputs are the activation statistics the authors store per language: ``n[k]`` tokens of language k
and ``over_zero[l, i, k]`` tokens on which neuron i of layer l had a positive activation.

1. ``p[l, i, k] = over_zero / n`` (activation probability); ``p'`` = p normalised over languages
   (a neuron that never fires gets p' = 0); ``LAPE = -sum_k p' log p'`` (0 log 0 = 0).
2. ``filter_rate`` (0.95): the ``round(N * filter_rate)``-th smallest of all ``N = L * d_ff * K``
   probabilities is a bar; a neuron with no language strictly above it is dismissed.
3. ``top_rate`` (0.01, the paper's 1%): the ``round(L * d_ff * top_rate)`` neurons of lowest LAPE
   among the rest are kept (ties in entropy broken by position, layer first, then neuron: a stable
   sort; the authors' ``topk`` leaves the order of ties unspecified).
4. ``activation_bar_ratio`` (0.95): the ``round(N * ratio)``-th smallest probability is a second
   bar; a kept neuron belongs to every language whose p is strictly above it (so one neuron can
   belong to several languages, or to none).

One deliberate difference: a language with no selected neuron gets an empty list per layer. (The
released code splits the selection by ``bincount`` over languages, which drops a trailing
language with no neuron and shifts nothing else; here every language is present.)
"""

from __future__ import annotations

import dataclasses

import torch

from xling.errors import XlingError


@dataclasses.dataclass
class LapeSelection:
    """Selected neurons: ``neurons[k][l]`` the sorted neuron ids of language index k in layer l."""

    neurons: list[list[list[int]]]
    entropy: torch.Tensor  # (L, d_ff) LAPE, inf for dismissed neurons
    probs: torch.Tensor  # (L, d_ff, K) activation probabilities
    filter_bar: float
    activation_bar: float
    kept: int  # neurons kept by the entropy rule (before assignment to languages)

    def counts(self) -> torch.Tensor:
        """(K, L) number of selected neurons per language and layer."""
        return torch.tensor([[len(layer) for layer in lang] for lang in self.neurons], dtype=torch.long)


def _kth_smallest(values: torch.Tensor, rate: float) -> float:
    k = round(values.numel() * rate)
    k = min(max(k, 1), values.numel())
    return values.flatten().kthvalue(k).values.item()


def activation_probs(n: torch.Tensor, over_zero: torch.Tensor) -> torch.Tensor:
    """``over_zero (L, d_ff, K) / n (K,)`` in float64; a language with n = 0 is an error."""
    n = torch.as_tensor(n, dtype=torch.float64)
    over_zero = torch.as_tensor(over_zero)
    if over_zero.ndim != 3 or n.ndim != 1 or over_zero.shape[-1] != n.shape[0]:
        raise XlingError(f"LAPE: over_zero must be (layers, d_ff, languages) and n (languages,); "
                         f"got {tuple(over_zero.shape)} and {tuple(n.shape)}")
    if bool((n <= 0).any()):
        raise XlingError("LAPE: a language has no tokens (n = 0)")
    if bool((over_zero < 0).any()) or bool((over_zero.to(torch.float64) > n).any()):
        raise XlingError("LAPE: positive-activation counts must lie between 0 and the language's token count")
    return over_zero.to(torch.float64) / n


def lape_entropy(probs: torch.Tensor) -> torch.Tensor:
    """LAPE per neuron from activation probabilities ``(L, d_ff, K)``."""
    total = probs.sum(dim=-1, keepdim=True)
    normed = torch.where(total > 0, probs / torch.where(total > 0, total, 1.0), torch.zeros_like(probs))
    logp = torch.where(normed > 0, normed.log(), torch.zeros_like(normed))
    return -(normed * logp).sum(dim=-1)


def select_lape(n, over_zero, *, top_rate: float = 0.01, filter_rate: float = 0.95,
                activation_bar_ratio: float = 0.95) -> LapeSelection:
    """Select language-specific neurons (see the module doc for the exact procedure)."""
    for name, v in (("top_rate", top_rate), ("filter_rate", filter_rate), ("activation_bar_ratio", activation_bar_ratio)):
        if not 0 < float(v) <= 1:
            raise XlingError(f"LAPE: {name} must be in (0, 1], got {v}")
    probs = activation_probs(n, over_zero)
    L, F, K = probs.shape
    entropy = lape_entropy(probs)
    filter_bar = _kth_smallest(probs, filter_rate)
    dismissed = (probs > filter_bar).sum(dim=-1) == 0
    entropy = entropy.masked_fill(dismissed, float("inf"))
    n_keep = round(L * F * top_rate)
    flat = entropy.flatten()
    order = torch.sort(flat, stable=True).indices[:n_keep]
    rows, cols = order // F, order % F
    activation_bar = _kth_smallest(probs, activation_bar_ratio)
    selected = probs[rows, cols] > activation_bar  # (n_keep, K)
    neurons: list[list[list[int]]] = [[[] for _ in range(L)] for _ in range(K)]
    for j in range(order.numel()):
        r, c = int(rows[j]), int(cols[j])
        for k in torch.nonzero(selected[j]).flatten().tolist():
            neurons[k][r].append(c)
    for k in range(K):
        for layer in range(L):
            neurons[k][layer].sort()
    return LapeSelection(neurons, entropy, probs, filter_bar, activation_bar, int(order.numel()))


def jaccard_matrix(sets: list[set]) -> torch.Tensor:
    """Pairwise Jaccard overlap ``|A & B| / |A | B|`` (1 on the diagonal; 0/0 = NaN: both empty)."""
    K = len(sets)
    out = torch.empty(K, K, dtype=torch.float64)
    for a in range(K):
        for b in range(K):
            union = len(sets[a] | sets[b])
            out[a, b] = float("nan") if union == 0 else len(sets[a] & sets[b]) / union
    return out


__all__ = ["LapeSelection", "activation_probs", "jaccard_matrix", "lape_entropy", "select_lape"]
