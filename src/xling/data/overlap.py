"""Text overlap between corpora and a task's evaluation items.

One normalisation (:func:`normalize_text`: NFKC, case-folded, punctuation and
spacing collapsed) serves every check that training text never contains a dev or
test item: the alignment pairs of ``xling train --align-data`` and the built-in
``bible-genre:align`` corpus.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case-, space- and punctuation-insensitive form used to detect overlap."""
    return _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def protected_keys(texts: Iterable[str]) -> set[str]:
    keys = {normalize_text(t) for t in texts if t}
    keys.discard("")
    return keys


def overlapping(pairs: Sequence[tuple[str, str]], protected: Iterable[str]) -> list[int]:
    """Indices of pairs with either side equal (after :func:`normalize_text`) to a protected text."""
    keys = protected_keys(protected)
    return [i for i, (a, b) in enumerate(pairs) if normalize_text(a) in keys or normalize_text(b) in keys]


__all__ = ["normalize_text", "protected_keys", "overlapping"]
