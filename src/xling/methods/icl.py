"""Cross-lingual in-context learning: which k demonstrations a prompt gets, the prompt, and paired differences.

Pure functions (texts, ids and tensors in; indices, prompts and numbers out). The recipe that runs a decoder on
the prompts is :mod:`xling.recipes.eval.icl` (``xling eval --demos source,target,retrieved``).

Three sources of the k demonstrations for a test item in language L (all from the task's *train* split, never a
test item; Winata et al. 2021, "Language Models are Few-shot Multilingual Learners", compare source- and
target-language demonstrations; Lin et al. 2022, XGLM, "Few-shot Learning with Multilingual Generative Language
Models", Section 4.4, cross-lingual demonstrations):

* ``source``: k fixed demonstrations in the demonstration source language S (English by default), picked in a
  seeded hash order of the train items' ids (:func:`fixed_demos`; for classification label-balanced, one item of
  each label in turn), the same for every item and every L;
* ``target``: the same k items in L (their parallel versions, where the task is parallel), so ``target`` and
  ``source`` differ only in the language of the demonstrations;
* ``retrieved``: per test item, the k train items of S most similar to it by the cosine similarity of a sentence
  encoder's embeddings (:func:`top_k_similar`; Liu et al. 2022, "What Makes Good In-Context Examples for
  GPT-3?"; cross-lingually, Tanwar et al. 2023, "Multilingual LLMs are Better Cross-lingual In-context Learners
  with Alignment"), the most similar placed last, next to the query.

Differences between two sources are paired over items: one seeded draw of item indices serves both sources
(:func:`xling.methods.stats.paired_bootstrap` for a mean over items such as accuracy,
:func:`paired_corpus_difference` for a corpus metric such as chrF, recomputed from resampled sums of per-item
statistics as in Koehn 2004).
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import numpy as np
import torch

from xling.errors import XlingError

#: The demonstration sources, in report order.
DEMO_SOURCES = ("source", "target", "retrieved")
#: The paired differences reported per language: (a, b) means a - b.
DIFFERENCES = (("target", "source"), ("retrieved", "source"), ("retrieved", "target"), ("retrieved", "vote"))
#: The reference next to ``retrieved`` for classification: the retrieved demonstrations' own majority label, with no
#: language model (a k-nearest-neighbour classifier on the demonstration encoder).
VOTE = "vote"


def label_vote(labels: Sequence) -> object:
    """The majority label of k demonstrations ordered least to most similar (the prompt's order); a tie goes to the
    tied label of the most similar demonstration. The k-nearest-neighbour classifier that ``retrieved``
    demonstrations carry on their own: ``retrieved - vote`` is what the language model adds to its retriever."""
    if not len(labels):
        raise XlingError("a vote needs at least one demonstration")
    counts: dict = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    top = max(counts.values())
    return next(lab for lab in reversed(list(labels)) if counts[lab] == top)


def demo_order(ids: Sequence[str], seed: int = 0) -> list[int]:
    """Positions of ``ids`` in a seeded hash order of the ids themselves (ties by position): the same ids give the
    same order whatever their language or their order in the pool."""
    def h(i):
        return hashlib.sha256(f"xling-icl\0{seed}\0{ids[i]}".encode("utf-8")).hexdigest()

    return sorted(range(len(ids)), key=lambda i: (h(i), i))


def fixed_demos(ids: Sequence[str], k: int, seed: int = 0, labels: Sequence | None = None) -> list[int]:
    """The positions of the ``k`` fixed demonstrations of a pool with these ids: the first ``k`` of
    :func:`demo_order`, or with ``labels`` (one per id) label-balanced: the labels taken in the order in which they
    first appear in :func:`demo_order`, one item of each in turn (each label's items in that order), until ``k``.
    Balanced demonstrations show as many labels as ``k`` allows, so a model that copies a demonstration's label
    (the majority and recency biases of Zhao et al. 2021, "Calibrate Before Use") cannot score by the luck of
    which labels the seed drew. One line when the pool has fewer than ``k``."""
    if k > len(ids):
        raise XlingError(f"{k} demonstrations asked for, but the pool has only {len(ids)}")
    order = demo_order(ids, seed)
    if labels is None:
        return order[:k]
    if len(labels) != len(ids):
        raise XlingError(f"fixed_demos: {len(labels)} labels for {len(ids)} ids")
    queues: dict = {}
    for i in order:
        queues.setdefault(str(labels[i]), []).append(i)
    out: list[int] = []
    while len(out) < k:
        for q in queues.values():
            if q and len(out) < k:
                out.append(q.pop(0))
    return out


def top_k_similar(queries: torch.Tensor, pool: torch.Tensor, k: int) -> torch.Tensor:
    """``(n, k)`` indices into ``pool`` of the ``k`` rows most cosine-similar to each row of ``queries``, most
    similar first (ties, similarities equal to 12 decimals: the lower pool index first)."""
    if queries.dim() != 2 or pool.dim() != 2 or queries.shape[1] != pool.shape[1]:
        raise XlingError(f"retrieval: query embeddings {tuple(queries.shape)} and pool {tuple(pool.shape)} differ")
    if k > pool.shape[0]:
        raise XlingError(f"{k} demonstrations asked for, but the pool has only {pool.shape[0]}")
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    p = torch.nn.functional.normalize(pool.double(), dim=1)
    sims = torch.round(q @ p.T, decimals=12)  # equal to 12 decimals: a tie, whatever the BLAS summation order
    order = torch.sort(-sims, dim=1, stable=True).indices
    return order[:, :k]


def check_disjoint(demo_ids: Sequence[str], test_ids: Sequence[str], where: str = "demonstrations") -> None:
    """One line when a demonstration id is also a test item's id (a demonstration must never be a test item)."""
    leak = sorted(set(map(str, demo_ids)) & set(map(str, test_ids)))
    if leak:
        raise XlingError(f"{where}: {len(leak)} demonstration(s) are test items ({', '.join(leak[:3])}); "
                         f"demonstrations come from the train split only")


def default_template(task_type: str, has_pair: bool) -> str:
    """The zero-shot prompt template a task type gets (:data:`xling.tasks.zeroshot.DEFAULT_TEMPLATES`)."""
    from xling.tasks.zeroshot import DEFAULT_TEMPLATES

    if task_type == "multiple-choice":
        return DEFAULT_TEMPLATES["multiple-choice"]
    return DEFAULT_TEMPLATES["pair" if has_pair else "classification"]


def block(template: str, text: str | None, text_pair: str | None = None, answer: str | None = None) -> str:
    """One block of a prompt: the template filled with the text (and pair); a demonstration adds a space and its
    answer (the verbalised label, as :func:`xling.tasks.zeroshot.label_loglik` scores it after the query)."""
    filled = template.format(text=text or "", text_pair=text_pair or "")
    return filled if answer is None else f"{filled} {str(answer).strip()}"


def icl_prompt(demo_blocks: Sequence[str], query_block: str) -> str:
    """Demonstration blocks, then the query block, separated by blank lines."""
    return "\n\n".join([*demo_blocks, query_block])


def paired_accuracy_difference(a: Sequence[int], b: Sequence[int], n_boot: int = 1000, seed: int = 0) -> dict:
    """``mean(a) - mean(b)`` over the same items (0/1 correctness in item order) with its 95% paired percentile
    bootstrap interval (:func:`xling.methods.stats.paired_bootstrap`: the same items drawn for both);
    ``{"value", "low", "high", "n"}`` (``low``/``high`` None without resamples)."""
    from xling.methods.stats import paired_bootstrap

    if len(a) != len(b):
        raise XlingError(f"paired difference: {len(a)} items against {len(b)}")
    if not len(a):
        return {"value": float("nan"), "low": None, "high": None, "n": 0}
    d, lo, hi = paired_bootstrap([list(a)], [list(b)], n_boot, seed)
    return {"value": float(d), "low": lo, "high": hi, "n": len(a)}


def paired_corpus_difference(stats_a: np.ndarray, stats_b: np.ndarray, score: Callable[[np.ndarray], float],
                             n_boot: int = 1000, seed: int = 0) -> dict:
    """``score(sum of stats_a) - score(sum of stats_b)`` (a corpus metric from per-item sufficient statistics, rows
    in the same item order) with its 95% paired bootstrap interval: each resample draws one set of item indices
    (:class:`xling.methods.stats.Resampler`) and recomputes both corpus scores from it."""
    from xling.methods.stats import Resampler, defined_interval

    a, b = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise XlingError(f"paired difference: {a.shape[0]} items against {b.shape[0]}")
    n = a.shape[0]
    if not n:
        return {"value": float("nan"), "low": None, "high": None, "n": 0}
    value = float(score(a.sum(axis=0)) - score(b.sum(axis=0)))
    if n_boot < 1:
        return {"value": value, "low": None, "high": None, "n": n}
    idx = Resampler(seed).draw(n, n_boot)
    boot = [score(a[i].sum(axis=0)) - score(b[i].sum(axis=0)) for i in idx]
    lo, hi = defined_interval(boot)
    return {"value": value, "low": lo, "high": hi, "n": n}


def contains_zero(low, high) -> bool | None:
    """Whether an interval contains 0 (None when it is not known)."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    return bool(low <= 0.0 <= high)


__all__ = ["DEMO_SOURCES", "DIFFERENCES", "VOTE", "block", "check_disjoint", "contains_zero", "default_template",
           "demo_order", "fixed_demos", "icl_prompt", "label_vote", "paired_accuracy_difference", "paired_corpus_difference",
           "top_k_similar"]
