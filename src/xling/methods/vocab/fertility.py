"""Tokenizer fairness: fertility, parity against English and the byte fallback rate.

Petrov, La Malfa, Torr and Bibi (2023), "Language Model Tokenizers Introduce
Unfairness Between Languages" (NeurIPS 2023), measure how many more tokens a
tokenizer needs for the same content in one language than in English: the
*tokenization parity* ``tokens(lang) / tokens(English)`` on parallel text (they
use FLORES-200; here any parallel corpus, by default the built-in Bible, whose
verses are translations of each other). A parity of 3 means a user of that
language pays three times as much per request, waits three times as long and
fits a third as much text in the context window.

Definitions (per language, summed over the same rows of a parallel corpus; the
texts are encoded without special tokens):

* ``tokens_per_word``: tokens / whitespace-separated words (``str.split``). Left
  empty for languages written without spaces between words (:data:`NO_SPACE_SCRIPTS`:
  Chinese, Japanese, Thai, Lao, Khmer, Burmese, Tibetan), where a "word" by
  whitespace is a whole clause and the ratio would mean nothing; in the built-in
  Bible these are ``zho_Hans`` and ``jpn_Jpan``.
* ``tokens_per_char``: tokens / Unicode code points, whitespace not counted (so
  that scripts written with and without spaces are counted alike).
* ``parity_vs_english``: ``sum tokens(lang) / sum tokens(English)`` over the same
  rows, with a 95% percentile bootstrap interval over rows
  (:func:`xling.methods.stats.bootstrap_ci`); English itself is 1.
* ``byte_fallback_rate``: the share of tokens that stand for bytes rather than
  characters -- for a tokenizer with SentencePiece byte fallback (Llama 2, Gemma)
  the ``<0xNN>`` byte pieces it falls back to for characters outside its
  vocabulary; for byte-level BPE (GPT-2, Llama 3, SmolLM2) the tokens whose bytes
  are not a whole UTF-8 character sequence (a token that splits a character:
  a lead byte without all its continuation bytes, or continuation bytes alone).
  Tokenizers with neither (WordPiece, Unigram without byte fallback) have no byte
  tokens: their rate is 0, and characters they cannot represent show up in
  ``unk_rate`` (the share of unknown tokens) instead.

Everything here is arithmetic on token ids and strings; the recipe
(:mod:`xling.recipes.vocab.fertility`) reads the corpora and tokenizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from xling.methods.vocab.tokenizer import BYTE_PIECES, TokenizerInfo, inspect_tokenizer, model_vocab

#: ISO 15924 scripts written without spaces between words.
NO_SPACE_SCRIPTS = frozenset({"Hans", "Hant", "Hani", "Jpan", "Thai", "Laoo", "Khmr", "Mymr", "Tibt"})


def writes_spaces(lang: str) -> bool:
    """Whether a language code (``zho_Hans``, ``jpn_Jpan``, ``eng_Latn``) names a script with spaces between words."""
    script = lang.split("_", 1)[1] if "_" in lang else ""
    return script not in NO_SPACE_SCRIPTS


def byte_level_decoder() -> dict[str, int]:
    """The ``ByteLevel`` stand-in character of each byte, inverted: ``char -> byte``.

    ByteLevel (Radford et al. 2019, GPT-2) shows the 188 printable bytes ``!``..``~``,
    ``¡``..``¬`` and ``®``..``ÿ`` as themselves and the 68 others, in byte order,
    as the code points 256, 257, ...
    """
    shown = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in shown:
            out[chr(b)] = b
        else:
            out[chr(256 + extra)] = b
            extra += 1
    return out


def byte_token_ids(tj: dict, info: TokenizerInfo | None = None) -> set[int]:
    """Ids that count as byte fallback (see the module docstring) in a tokenizer JSON."""
    info = info or inspect_tokenizer(tj)
    vocab = model_vocab(tj)
    added = set(info.added_ids)
    if info.byte_fallback:
        return {vocab[p] for p in BYTE_PIECES if p in vocab}
    if not info.byte_level:
        return set()
    dec = byte_level_decoder()
    out = set()
    for tok, i in vocab.items():
        if i in added or not tok or any(c not in dec for c in tok):
            continue
        try:
            bytes(dec[c] for c in tok).decode("utf-8")
        except UnicodeDecodeError:
            out.add(i)
    return out


def count_chars(text: str) -> int:
    """Unicode code points that are not whitespace."""
    return sum(1 for c in text if not c.isspace())


def count_words(text: str) -> int:
    """Whitespace-separated words."""
    return len(text.split())


@dataclass
class LangCounts:
    """Per-row counts of one language (rows aligned across languages)."""

    tokens: np.ndarray
    words: np.ndarray
    chars: np.ndarray
    byte_tokens: np.ndarray
    unk_tokens: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.tokens)


def count_language(texts: Sequence[str], encodings: Sequence[Sequence[int]], byte_ids: set[int] | np.ndarray,
                   unk_id: int | None = None) -> LangCounts:
    """Tokens, words, characters, byte tokens and unknown tokens of each text."""
    byte_set = {int(i) for i in byte_ids}
    tokens = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    nbytes = np.fromiter((sum(1 for i in e if i in byte_set) for e in encodings), dtype=np.int64,
                         count=len(encodings))
    unk = np.fromiter((sum(1 for i in e if i == unk_id) if unk_id is not None else 0 for e in encodings),
                      dtype=np.int64, count=len(encodings))
    words = np.fromiter((count_words(t) for t in texts), dtype=np.int64, count=len(texts))
    chars = np.fromiter((count_chars(t) for t in texts), dtype=np.int64, count=len(texts))
    return LangCounts(tokens, words, chars, nbytes, unk)


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def fertility_row(counts: LangCounts, english: LangCounts | None, *, spaces: bool = True, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """The fertility measures of one language (see the module docstring); ``english``: the same rows in English.

    ``parity_low``/``parity_high``: 95% percentile bootstrap interval of the parity, rows resampled
    (None with fewer than 3 rows or without English).
    """
    from xling.methods.stats import bootstrap_ci

    tokens = int(counts.tokens.sum())
    row = {
        "tokens_per_word": _ratio(tokens, counts.words.sum()) if spaces else None,
        "tokens_per_char": _ratio(tokens, counts.chars.sum()),
        "parity_vs_english": None, "parity_low": None, "parity_high": None,
        "byte_fallback_rate": _ratio(counts.byte_tokens.sum(), tokens) if tokens else 0.0,
        "unk_rate": _ratio(counts.unk_tokens.sum(), tokens) if tokens else 0.0,
        "sentences": counts.rows, "words": int(counts.words.sum()), "chars": int(counts.chars.sum()),
        "tokens": tokens,
    }
    if english is not None and english.tokens.sum() > 0:
        if english.rows != counts.rows:
            raise ValueError(f"parity needs the same rows: {counts.rows} here, {english.rows} in English")
        row["parity_vs_english"] = tokens / float(english.tokens.sum())
        lo, hi = bootstrap_ci(counts.tokens, english.tokens,
                              lambda x, y: float(x.sum() / y.sum()) if y.sum() else float("nan"),
                              n_boot=n_boot, seed=seed)
        if not (math.isnan(lo) or math.isnan(hi)):
            row["parity_low"], row["parity_high"] = lo, hi
    return row


__all__ = ["LangCounts", "NO_SPACE_SCRIPTS", "byte_level_decoder", "byte_token_ids", "count_chars", "count_language",
           "count_words", "fertility_row", "writes_spaces"]
