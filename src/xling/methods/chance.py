"""Is a best layer meaningful with so few sentences? (:func:`small_sample_note`)

The Wilson interval, :func:`~xling.methods.stats.at_chance` and the across-seed mean and sd live in
:mod:`xling.methods.stats`.
"""

from __future__ import annotations

__all__ = ["MIN_MEANINGFUL_SENTENCES", "small_sample_note"]

MIN_MEANINGFUL_SENTENCES = 10
"""Fewer parallel sentences than this: MEXA's chance level (about 1/n) is too high for a best layer to mean anything."""


def small_sample_note(n: int) -> str | None:
    """One line when ``n`` sentences are too few for a best layer to mean anything (None otherwise)."""
    if n >= MIN_MEANINGFUL_SENTENCES:
        return None
    return (f"only {n} sentences: MEXA's chance level is about 1/{n} = {1 / max(n, 1):.2f}, so the best layer is not "
            f"meaningful (use at least {MIN_MEANINGFUL_SENTENCES} sentences)")


