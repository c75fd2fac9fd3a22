"""Is a fact known in the pivot language (English) also known in other languages? Pure functions, no I/O.

For a group of languages ``G`` (one language, or all languages written in the pivot's script, ...) and parallel
items, the pooled conditional

    P(correct in G | correct in pivot) = sum_{L in G} #{i: right in pivot and in L} / sum_{L in G} #{i: right in pivot}

over the items asked in both the pivot and ``L`` (the knowledge transfer of Aggarwal et al. 2025, "Language Models'
Factuality Depends on the Language of Inquiry", arXiv:2502.17955, pooled over a group; for one language it is
:func:`xling.methods.consistency.pair_stats`'s ``kt_a_to_b`` with ``a`` the pivot). Next to it the group's plain
accuracy on the same items (the base rate: a conditional near it means knowing a fact in the pivot says nothing
about the group).

Intervals: percentile bootstrap (:mod:`xling.methods.stats`) over the pivot's items, each resample taking an item
in every language of the group at once (a fact is one cluster: its answers in different languages are not
independent). Resamples without any item right in the pivot are left out; an undefined point has a NaN interval.
"""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

import numpy as np

from xling.methods.stats import Resampler, defined_interval

NAN = float("nan")

#: The columns of :func:`known_elsewhere`.
COLUMNS = ("group", "langs", "n_pairs", "known_in_pivot", "p_known", "p_known_low", "p_known_high", "accuracy",
           "accuracy_low", "accuracy_high")


def _arrays(correct: Mapping[str, Mapping[str, int]], pivot: str, langs: Sequence[str],
            skip: Mapping[str, Collection[str]] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pivot item (sorted ids): right in both, right in the pivot, right in L, asked in both; summed over
    ``langs``."""
    ids = sorted(correct[pivot])
    skip = skip or {}
    pivot_skip = set(skip.get(pivot, ()))
    both = np.zeros(len(ids))
    known = np.zeros(len(ids))
    right = np.zeros(len(ids))
    asked = np.zeros(len(ids))
    for lang in langs:
        have, lang_skip = correct.get(lang, {}), set(skip.get(lang, ()))
        for k, i in enumerate(ids):
            if i not in have or i in pivot_skip or i in lang_skip:
                continue
            cp, cl = int(correct[pivot][i]), int(have[i])
            if cp not in (0, 1) or cl not in (0, 1):
                raise ValueError(f"correctness must be 0 or 1 (item {i!r}: {cp}, {cl})")
            asked[k] += 1
            known[k] += cp
            right[k] += cl
            both[k] += cp & cl
    return both, known, right, asked


def known_elsewhere(correct: Mapping[str, Mapping[str, int]], pivot: str, groups: Mapping[str, Sequence[str]], *,
                    skip: Mapping[str, Collection[str]] | None = None, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> list[dict]:
    """One row per group (:data:`COLUMNS`): ``p_known`` = P(correct in the group | correct in ``pivot``) pooled over
    the group's languages, and the group's ``accuracy`` on the same item pairs, each with its ``level`` bootstrap
    interval (see the module doc).

    ``correct[lang][item_id]``: 0/1; ``groups``: ``{name: [languages]}`` (the pivot itself is left out of a group);
    ``skip``: ``{lang: item ids}`` left out of every pair with that language (leaked items). ``n_pairs``: the
    (item, language) pairs asked in both; ``known_in_pivot``: those right in the pivot. One generator seeded with
    ``seed`` afresh for each group, so a group's interval does not depend on the other groups.
    """
    if pivot not in correct:
        raise ValueError(f"no items for the pivot language {pivot}")
    rows = []
    for name, langs in groups.items():
        langs = [x for x in dict.fromkeys(langs) if x != pivot]
        both, known, right, asked = _arrays(correct, pivot, langs, skip)
        n_known, n_asked = known.sum(), asked.sum()
        p = float(both.sum() / n_known) if n_known else NAN
        acc = float(right.sum() / n_asked) if n_asked else NAN
        p_lo = p_hi = a_lo = a_hi = NAN
        if len(both) >= 2 and n_boot >= 1 and n_asked:
            idx = np.asarray(Resampler(seed).draw(len(both), n_boot))
            with np.errstate(invalid="ignore", divide="ignore"):
                kb, ab = known[idx].sum(axis=1), asked[idx].sum(axis=1)
                p_boot = np.where(kb > 0, both[idx].sum(axis=1) / np.maximum(kb, 1), np.nan)
                a_boot = np.where(ab > 0, right[idx].sum(axis=1) / np.maximum(ab, 1), np.nan)
            if p == p:
                p_lo, p_hi = defined_interval(p_boot, level)
            a_lo, a_hi = defined_interval(a_boot, level)
        rows.append({"group": name, "langs": ",".join(langs), "n_pairs": int(n_asked), "known_in_pivot": int(n_known),
                     "p_known": p, "p_known_low": p_lo, "p_known_high": p_hi, "accuracy": acc, "accuracy_low": a_lo,
                     "accuracy_high": a_hi})
    return rows


def choice_margin(scores: Sequence[float], answer: int) -> float:
    """The right choice's score minus the best other choice's score (> 0: right with room; NaN for one choice)."""
    others = [s for j, s in enumerate(scores) if j != answer]
    return float(scores[answer] - max(others)) if others else NAN


def best_choice(scores: Sequence[float]) -> int:
    """The highest-scoring choice; a tie goes to the lowest index (as
    :func:`xling.tasks.zeroshot.zero_shot_predict`)."""
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


__all__ = ["COLUMNS", "best_choice", "choice_margin", "known_elsewhere"]
