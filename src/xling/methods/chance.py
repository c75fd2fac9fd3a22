"""Is a score distinguishable from chance, and how much do seeds move it?

* :func:`wilson_interval`: the Wilson score interval of a binomial proportion
  (Wilson 1927, "Probable inference, the law of succession, and statistical
  inference", JASA 22), which keeps its coverage at small ``n`` and near 0 or 1
  where the normal (Wald) interval does not (Brown, Cai & DasGupta 2001).
* :func:`at_chance`: an accuracy over ``n`` examples of a ``k``-class task is
  "within noise of chance" when its 95% Wilson interval contains ``1/k``.
* :func:`mean_sd`: the mean and the sample standard deviation (``ddof=1``) of the
  values one number takes across seeds.
"""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` (95% for the default ``z``); ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def at_chance(accuracy: float | None, n: int, num_labels: int) -> bool:
    """True when the 95% Wilson interval of ``accuracy`` over ``n`` examples contains ``1 / num_labels``.

    ``None`` (no score) or fewer than 2 labels: False (nothing to say).
    """
    if accuracy is None or num_labels < 2 or n <= 0 or accuracy != accuracy:
        return False
    lo, hi = wilson_interval(accuracy * n, n)
    chance = 1.0 / num_labels
    return lo <= chance <= hi


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``; None for fewer than 2 values)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_sd of no values")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


__all__ = ["MIN_MEANINGFUL_SENTENCES", "small_sample_note", "wilson_interval", "at_chance", "mean_sd", "Z95"]

MIN_MEANINGFUL_SENTENCES = 10
"""Fewer parallel sentences than this: MEXA's chance level (about 1/n) is too high for a best layer to mean anything."""


def small_sample_note(n: int) -> str | None:
    """One line when ``n`` sentences are too few for a best layer to mean anything (None otherwise)."""
    if n >= MIN_MEANINGFUL_SENTENCES:
        return None
    return (f"only {n} sentences: MEXA's chance level is about 1/{n} = {1 / max(n, 1):.2f}, so the best layer is not "
            f"meaningful (use at least {MIN_MEANINGFUL_SENTENCES} sentences)")


