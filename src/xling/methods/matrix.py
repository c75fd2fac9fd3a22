"""Source x target transfer matrices and the pair features that may explain them (pure functions).

Which language should a model be trained on to do a task in another one? The
question is as old as cross-lingual transfer; the protocol here follows
XTREME's zero-shot transfer (Hu et al. 2020) with every language in turn as the
source, as Turc et al. (2021, "Revisiting the primacy of English in zero-shot
cross-lingual transfer") did to show that English is often not the best source.

* :func:`probe_matrix`: the cheap matrix. One multinomial logistic regression
  per source on frozen features (:func:`xling.methods.probe.fit_logreg`), its
  hidden state and ``l2`` chosen on **that source's own dev set** (never a
  target's, never test), applied to every target's test set.
* :func:`pair_alignment`: MEXA (Kargaran et al. 2024) and top-1 retrieval
  (XTREME Tatoeba; Artetxe & Schwenk 2019) between two languages' embeddings of
  the same parallel sentences, at every layer, with either language as pivot.
* :func:`token_overlap`: LangRank's overlap feature (Lin et al. 2019, "Choosing
  Transfer Languages for Cross-Lingual Learning"): ``|T1 & T2| / (|T1| + |T2|)``
  over the sets of (here: subword token) types of the two corpora.

The cells' bootstrap CIs (paired against a reference source): :func:`xling.methods.stats.cell_bootstrap`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from xling.errors import XlingError


@dataclass
class SourceProbe:
    """The probe chosen for one source: its hidden-state index, l2, dev accuracy and the grid searched."""

    source: str
    layer_index: int
    l2: float
    dev_accuracy: float | None
    grid: list[dict] = field(default_factory=list)
    clf: object = None


def probe_matrix(
    train: Mapping[str, torch.Tensor], train_labels: Mapping[str, torch.Tensor],
    dev: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None, test: Mapping[str, torch.Tensor],
    num_labels: int, layers: Sequence[int], l2_grid: Sequence[float],
) -> tuple[dict[str, SourceProbe], dict[str, dict[str, torch.Tensor]]]:
    """Fit a probe per source and predict every target.

    ``train[src]``: (L, n, d) features of the source's training set (all hidden
    states), ``train_labels[src]``: (n,); ``dev[src]``: (features (L, m, d), labels)
    or None when ``layers`` and ``l2_grid`` hold one value each (nothing to choose);
    ``test[tgt]``: (L, k, d). ``layers``: indices into the L axis to search.
    Returns the chosen probes and ``preds[src][tgt]``: (k,) predicted labels.
    Ties on dev accuracy keep the first (lowest layer, smallest l2) candidate.
    """
    from xling.methods.probe import select_probe

    if not layers or not l2_grid:
        raise XlingError("transfer matrix: no layer or l2 to fit")
    probes: dict[str, SourceProbe] = {}
    preds: dict[str, dict[str, torch.Tensor]] = {}
    for src, x in train.items():
        d = dev.get(src) if dev else None
        if d is None and (len(layers) > 1 or len(l2_grid) > 1):
            raise XlingError(f"transfer matrix: source {src} has no dev set to choose the layer and l2 on; "
                             f"pass one --layer and one --l2")
        choice = select_probe(x, train_labels[src], num_labels, layers, l2_grid, d)
        probes[src] = SourceProbe(src, choice.layer_index, choice.l2, choice.dev_accuracy, choice.grid, choice.clf)
        preds[src] = {tgt: choice.clf.predict(t[choice.layer_index]) for tgt, t in test.items()}
    return probes, preds


def pair_alignment(a: torch.Tensor, b: torch.Tensor) -> dict[str, list[float]]:
    """Per-layer alignment of two languages' embeddings (L, n, d) of the same n parallel sentences.

    ``a`` is the pivot: ``mexa`` (symmetric), ``retrieval_a2b`` (top-1 retrieval of
    b's translation for each of a's sentences, strict ties) and ``retrieval_b2a``.
    """
    from xling.methods.metrics import PairEmbeddings, compute_metrics

    if a.shape != b.shape:
        raise XlingError(f"pair alignment needs parallel sentences: shapes {tuple(a.shape)} and {tuple(b.shape)}")
    out = compute_metrics(PairEmbeddings(a, b), ["mexa", "retrieval"], {"retrieval": {"ks": (1,)}})
    return {"mexa": out["mexa"].tolist(), "retrieval_a2b": out["retrieval_p2l@1"].tolist(),
            "retrieval_b2a": out["retrieval_l2p@1"].tolist()}


def token_overlap(a: set, b: set) -> float:
    """LangRank's overlap (Lin et al. 2019): ``|a & b| / (|a| + |b|)``, 0 for two empty sets; at most 0.5."""
    if not a and not b:
        return 0.0
    return len(a & b) / (len(a) + len(b))


__all__ = ["SourceProbe", "probe_matrix", "pair_alignment", "token_overlap"]
