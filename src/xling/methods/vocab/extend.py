"""Vocabulary extension: add words as tokens and initialise their embeddings.

New tokens are words, given as a list or mined from a target-language corpus:
the words (letters only, at least ``min_len`` characters, seen at least
``min_count`` times) that the current tokenizer splits into two or more
pieces, ranked by the tokens they would save, ``count x (pieces - 1)``.

A word enters the tokenizer's own vocabulary in the form it has in running
text (``▁casa`` for SentencePiece, ``Ġcasa`` for byte-level BPE, ``casa``
for WordPiece; see :func:`~xling.methods.vocab.tokenizer.word_piece`), not
as an "added token" (added tokens are matched before the model runs, so they
would also fire inside longer words). How each family takes it is described
in :func:`~xling.methods.vocab.tokenizer.extend_json`. New ids follow every
existing id; the embedding matrix grows accordingly (unused padding rows past
the tokenizer's end are reused first), and the embeddings of new tokens come
from :mod:`xling.methods.vocab.init` (mean, random, FOCUS -- Dobler and de
Melo 2023 -- or WECHSEL -- Minixhofer et al. 2022).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from xling.errors import XlingError
from xling.methods.vocab.tokenizer import TokenizerInfo, extend_json, inspect_tokenizer, model_vocab, word_piece

WORD_RE = re.compile(r"[^\W\d_]+")


@dataclass
class Candidate:
    word: str
    piece: str
    count: float
    pieces: int  # how many pieces the current tokenizer makes of it


@dataclass
class ExtensionPlan:
    tokenizer_json: dict
    info: TokenizerInfo
    added: dict[str, int]  # every new vocabulary entry (BPE intermediates included) -> id
    words: list[tuple[str, str]]  # (word, piece) requested and added
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def first_new(self) -> int:
        return self.info.size

    @property
    def new_ids(self) -> list[int]:
        return sorted(self.added.values())


def read_tokens(path: str | Path) -> list[str]:
    """One word per line (blank lines ignored, duplicates dropped); XlingError if none."""
    from xling.data.readers import read_lines

    words = list(dict.fromkeys(w.strip() for w in read_lines(Path(path)) if w.strip()))
    if not words:
        raise XlingError(f"{path}: no tokens in the file")
    return words


def word_counts(texts: Sequence[str], weights: np.ndarray | None = None, min_len: int = 3) -> Counter:
    counts: Counter = Counter()
    for k, t in enumerate(texts):
        w = 1.0 if weights is None else float(weights[k])
        for m in WORD_RE.findall(t):
            if len(m) >= min_len:
                counts[m] += w
    return counts


def mine_words(backend, tj: dict, texts: Sequence[str], weights: np.ndarray | None = None, num_tokens: int = 1000,
               min_count: float = 2, min_len: int = 3) -> list[Candidate]:
    """The ``num_tokens`` corpus words the tokenizer over-segments most (see the module docstring)."""
    if num_tokens < 1:
        raise XlingError(f"--num-tokens must be at least 1, got {num_tokens}")
    info = inspect_tokenizer(tj)
    vocab = model_vocab(tj)
    best: dict[str, Candidate] = {}
    for word, count in word_counts(texts, weights, min_len).items():
        if count < min_count:
            continue
        piece = word_piece(backend, tj, word, info)
        if piece is None or piece in vocab:
            continue
        n = len(backend.model.tokenize(piece))
        if n < 2:
            continue
        c = best.get(piece)
        if c is None:
            best[piece] = Candidate(word, piece, count, n)
        else:  # forms that normalise to one piece (case-folding tokenizers) pool their counts
            c.count += count
    ranked = sorted(best.values(), key=lambda c: (-c.count * (c.pieces - 1), c.piece))
    return ranked[:num_tokens]


def plan_extension(backend, tj: dict, words: Sequence[str]) -> ExtensionPlan:
    """Add ``words`` to the tokenizer JSON; words that are not one pre-token or already exist are skipped."""
    info = inspect_tokenizer(tj)
    vocab = model_vocab(tj)
    skipped: dict[str, list[str]] = {"not_one_word": [], "already_in_vocabulary": []}
    pairs: list[tuple[str, str]] = []
    seen = set()
    for w in words:
        piece = word_piece(backend, tj, w, info)
        if piece is None:
            skipped["not_one_word"].append(w)
        elif piece in vocab or piece in seen:
            skipped["already_in_vocabulary"].append(w)
        else:
            seen.add(piece)
            pairs.append((w, piece))
    new_tj, added, not_added = extend_json(tj, [p for _, p in pairs], backend)
    skipped["not_buildable"] = [w for w, p in pairs if p in set(not_added)]
    pairs = [(w, p) for w, p in pairs if p in added]
    return ExtensionPlan(new_tj, info, added, pairs, skipped)
