"""Cross-lingual consistency of one model's predictions on parallel items: pure functions, no I/O.

The same question asked in two languages should get the same answer, and knowing it in one language should
mean knowing it in the other. For two languages ``a`` and ``b`` and the items both were asked (``n``):

* ``agreement``: the share of items with the same prediction in ``a`` and ``b`` (right or wrong);
* ``kappa``: Cohen's kappa (Cohen 1960, "A coefficient of agreement for nominal scales"), agreement beyond
  chance, ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the agreement and ``p_e = sum_l p_a(l) p_b(l)`` the
  agreement expected from the two languages' marginal prediction distributions over the union of labels.
  When ``p_e`` is 1 (both languages predict one and the same label for every item) kappa is 0/0: it is
  **NaN** (undefined), never 0 or 1;
* ``both_correct``: the share of items right in both languages;
* ``kt_a_to_b``: knowledge transfer, ``P(correct in b | correct in a)`` = items right in both / items right
  in ``a``: of what the model knows when asked in ``a``, the share it also knows when asked in ``b`` (after
  Aggarwal et al. 2025, "Language Models' Factuality Depends on the Language of Inquiry", arXiv:2502.17955,
  whose transferability scores compare recall of the same facts across languages; agreement on aligned items
  as in MuBench's multilingual consistency, Han et al. 2025, arXiv:2506.19468). When no item is right in
  ``a`` it is **NaN** (undefined), never a crash.

:func:`consistency_rows` computes them for every ordered pair of languages of a table ``{lang: {item_id:
(prediction, correct)}}``, each pair on the items present in both languages only, with a percentile
bootstrap interval (:mod:`xling.methods.stats`) that resamples the pair's items: one draw of item indices
serves every statistic of the pair and both of its directions (a paired bootstrap). Resamples where a
statistic is undefined (kappa or KT, as above) are left out of its interval; an undefined point estimate has
an undefined (NaN) interval, as has a pair with fewer than :data:`MIN_ITEMS` items.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

import numpy as np

from xling.methods.stats import Resampler, defined_interval

#: Fewer shared items than this and a pair gets no bootstrap interval (NaN), as :func:`bootstrap_ci` does.
MIN_ITEMS = 3

#: The columns of :func:`consistency_rows`, in order.
COLUMNS = ("lang_a", "lang_b", "n", "agreement", "agreement_low", "agreement_high", "kappa", "kappa_low",
           "kappa_high", "both_correct", "both_correct_low", "both_correct_high", "kt_a_to_b", "kt_low", "kt_high")

NAN = float("nan")


def _flags(values: Sequence, name: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ValueError(f"{name}: correctness must be 0 or 1, got NaN")
        b = int(v)
        if b not in (0, 1) or b != v:
            raise ValueError(f"{name}: correctness must be 0 or 1, got {v!r}")
        out.append(b)
    return out


def pair_stats(pred_a: Sequence[Hashable], pred_b: Sequence[Hashable], correct_a: Sequence, correct_b: Sequence
               ) -> dict:
    """Agreement, Cohen's kappa, both-correct rate and KT(a -> b) of two aligned sequences over the same items.

    ``pred_a[i]`` and ``pred_b[i]`` are the predictions (labels, choices or texts: any hashable values compared
    with ``==``) for item ``i`` in languages ``a`` and ``b``; ``correct_*`` their 0/1 correctness. Returns
    ``{"n", "agreement", "kappa", "both_correct", "kt_a_to_b"}``; every rate is NaN for no items, kappa is NaN
    when the expected agreement is 1, KT when no item is right in ``a`` (see the module doc).
    """
    n = len(pred_a)
    if not (len(pred_b) == len(correct_a) == len(correct_b) == n):
        raise ValueError(f"pair_stats: sequences of different lengths ({n}, {len(pred_b)}, {len(correct_a)}, "
                         f"{len(correct_b)})")
    ca, cb = _flags(correct_a, "correct_a"), _flags(correct_b, "correct_b")
    if n == 0:
        return {"n": 0, "agreement": NAN, "kappa": NAN, "both_correct": NAN, "kt_a_to_b": NAN}
    agree = sum(1 for x, y in zip(pred_a, pred_b) if x == y)
    count_a: dict = {}
    count_b: dict = {}
    for x in pred_a:
        count_a[x] = count_a.get(x, 0) + 1
    for y in pred_b:
        count_b[y] = count_b.get(y, 0) + 1
    # exact integer arithmetic: p_o = agree / n, p_e = chance / n^2, kappa = (agree n - chance) / (n^2 - chance)
    chance = sum(c * count_b.get(label, 0) for label, c in count_a.items())
    kappa = (agree * n - chance) / (n * n - chance) if chance != n * n else NAN
    both = sum(x & y for x, y in zip(ca, cb))
    right_a = sum(ca)
    return {"n": n, "agreement": agree / n, "kappa": kappa, "both_correct": both / n,
            "kt_a_to_b": both / right_a if right_a else NAN}


def _codes(pred_a: Sequence, pred_b: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """The predictions of both languages as integer codes over the union of their labels."""
    index: dict = {}
    a = np.fromiter((index.setdefault(x, len(index)) for x in pred_a), dtype=np.int64, count=len(pred_a))
    b = np.fromiter((index.setdefault(y, len(index)) for y in pred_b), dtype=np.int64, count=len(pred_b))
    return a, b, len(index)


def _boot_stats(pred_a, pred_b, ca, cb, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every statistic of both directions on each resample (rows of ``idx``): arrays of ``len(idx)`` values,
    NaN where undefined; the same formulas as :func:`pair_stats`, vectorised."""
    a, b, k = _codes(pred_a, pred_b)
    ca, cb = np.asarray(ca, dtype=np.int64), np.asarray(cb, dtype=np.int64)
    reps, n = idx.shape
    ra, rb = a[idx], b[idx]
    agree = (ra == rb).sum(axis=1)
    offset = (np.arange(reps, dtype=np.int64) * k)[:, None]
    count_a = np.bincount((ra + offset).ravel(), minlength=reps * k).reshape(reps, k)
    count_b = np.bincount((rb + offset).ravel(), minlength=reps * k).reshape(reps, k)
    chance = (count_a * count_b).sum(axis=1)
    den = n * n - chance
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(den != 0, (agree * n - chance) / np.where(den != 0, den, 1), np.nan)
        xa, xb = ca[idx], cb[idx]
        both = (xa & xb).sum(axis=1)
        right_a, right_b = xa.sum(axis=1), xb.sum(axis=1)
        kt_ab = np.where(right_a > 0, both / np.maximum(right_a, 1), np.nan)
        kt_ba = np.where(right_b > 0, both / np.maximum(right_b, 1), np.nan)
    return {"agreement": agree / n, "kappa": kappa, "both_correct": both / n, "kt_ab": kt_ab, "kt_ba": kt_ba}


def _interval(point: float, boot: np.ndarray | None, level: float) -> tuple[float, float]:
    if boot is None or point != point:
        return NAN, NAN
    return defined_interval(boot, level)


def consistency_rows(table: Mapping[str, Mapping[Hashable, tuple]], *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> list[dict]:
    """One row per ordered pair of languages ``(a, b)``, ``a != b``, in the table's language order.

    ``table[lang][item_id] = (prediction, correct)``. A pair uses the items present in both languages (sorted by
    id, so the result does not depend on the order of the table's items); a pair without shared items has
    ``n = 0`` and NaNs. Columns: :data:`COLUMNS` (``*_low``/``*_high``: the ``level`` percentile bootstrap
    interval; ``kt_low``/``kt_high`` that of ``kt_a_to_b``). The bootstrap draws ``n_boot`` resamples of the
    pair's items from a generator seeded with ``seed`` afresh for each pair, so a pair's interval does not
    depend on which other languages the table holds; ``(a, b)`` and ``(b, a)`` share the draw.
    """
    langs = list(table)
    rows: dict[tuple[str, str], dict] = {}
    for i, a in enumerate(langs):
        for b in langs[i + 1:]:
            ids = sorted(set(table[a]) & set(table[b]), key=lambda x: (str(type(x)), x))
            pa = [table[a][x][0] for x in ids]
            pb = [table[b][x][0] for x in ids]
            ca = _flags([table[a][x][1] for x in ids], f"{a}")
            cb = _flags([table[b][x][1] for x in ids], f"{b}")
            fwd, back = pair_stats(pa, pb, ca, cb), pair_stats(pb, pa, cb, ca)
            boot = None
            if len(ids) >= MIN_ITEMS and n_boot >= 1:
                boot = _boot_stats(pa, pb, ca, cb, np.asarray(Resampler(seed).draw(len(ids), n_boot)))
            for (x, y), st, kt in (((a, b), fwd, "kt_ab"), ((b, a), back, "kt_ba")):
                row = {"lang_a": x, "lang_b": y, "n": st["n"]}
                for name in ("agreement", "kappa", "both_correct"):
                    lo, hi = _interval(st[name], None if boot is None else boot[name], level)
                    row.update({name: st[name], f"{name}_low": lo, f"{name}_high": hi})
                lo, hi = _interval(st["kt_a_to_b"], None if boot is None else boot[kt], level)
                row.update({"kt_a_to_b": st["kt_a_to_b"], "kt_low": lo, "kt_high": hi})
                rows[(x, y)] = row
    return [rows[(a, b)] for a in langs for b in langs if a != b]


def kappa_at_chance(row: Mapping) -> bool:
    """True when the pair's kappa interval contains 0 (agreement no better than chance); False when it is
    undefined."""
    lo, hi = row.get("kappa_low", NAN), row.get("kappa_high", NAN)
    return lo == lo and hi == hi and lo <= 0.0 <= hi


__all__ = ["COLUMNS", "MIN_ITEMS", "consistency_rows", "kappa_at_chance", "pair_stats"]
