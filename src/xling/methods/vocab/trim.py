"""Vocabulary trimming (Ushio, Zhou and Camacho-Collados 2023, "An Efficient Multilingual
Language Model Compression through Vocabulary Trimming", vocabtrimmer, Findings of EMNLP 2023).

A multilingual model spends most of its parameters on an embedding matrix whose
rows serve languages a given user never types. Trimming counts how often each
token occurs when a target-language corpus is tokenised, keeps the tokens seen
at least ``min_freq`` times (default 2, as in the paper) plus every token that
must stay (special tokens, byte pieces, ids named by the config, and for BPE
the tokens each kept token is merged from), optionally caps the result at
``top`` tokens in all (the paper suggests 60k), and slices the input and output
embeddings and any output bias to those rows. Their reference result: mT5-large
trimmed to Korean goes from 1.23B to 0.87B parameters.

Kept old ids, sorted, become the new ids ``0..K-1`` (order-preserving), so
special ids near 0 usually keep their values. On text whose original
tokenisation uses only kept tokens the trimmed tokenizer gives the same tokens
(under the map) and the trimmed model the same hidden states; text that used a
removed token is tokenised differently, which is why the share of corpus
sentences with unchanged tokenisation is reported (:func:`tokenization_parity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from xling.errors import XlingError
from xling.methods.vocab.tokenizer import (
    TokenizerInfo,
    _merge_pairs,
    bpe_derivation,
    inspect_tokenizer,
    model_vocab,
    required_ids,
    trim_json,
)


@dataclass
class TrimPlan:
    """Which old ids stay, why, and the trimmed tokenizer JSON."""

    keep: np.ndarray  # sorted old ids; keep[new] = old
    old_size: int  # ids of the old tokenizer (model vocabulary + added tokens)
    reasons: dict[str, int]
    tokenizer_json: dict
    info: TokenizerInfo
    min_freq: float = 2
    top: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def new_size(self) -> int:
        return int(len(self.keep))

    def old_to_new(self, size: int | None = None) -> np.ndarray:
        """``m[old] = new`` or -1 for removed ids."""
        m = np.full(max(size or 0, self.old_size, int(self.keep[-1]) + 1), -1, dtype=np.int64)
        m[self.keep] = np.arange(len(self.keep))
        return m

    def ranges(self) -> list[list[int]]:
        """The kept old ids as half-open ranges ``[start, end)``: the exact map, compactly."""
        out: list[list[int]] = []
        for i in self.keep.tolist():
            if out and out[-1][1] == i:
                out[-1][1] = i + 1
            else:
                out.append([i, i + 1])
        return out


def select_ids(
    tj: dict,
    counts: np.ndarray,
    *,
    min_freq: float = 2,
    top: int | None = None,
    extra_required: Sequence[int] = (),
) -> TrimPlan:
    """Choose the ids to keep from corpus ``counts`` (see the module docstring).

    Required ids come first; then tokens by decreasing count (ties: lower id
    first) while ``count >= min_freq`` and, with ``top``, while the total stays
    within ``top``. For BPE a token is taken together with its derivation
    (:func:`~xling.methods.vocab.tokenizer.bpe_derivation`) or not at all.
    """
    if min_freq <= 0:
        raise XlingError(f"--min-freq must be positive, got {min_freq}")
    if top is not None and top < 1:
        raise XlingError(f"--top must be at least 1, got {top}")
    info = inspect_tokenizer(tj)
    size = info.size
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) < size:
        counts = np.concatenate([counts, np.zeros(size - len(counts))])
    counts = counts[:size]
    req = required_ids(tj, info)
    req["bytes"] -= req["special"]
    req["config"] = {int(i) for i in extra_required if 0 <= int(i) < size} - req["special"] - req["bytes"]
    keep: set[int] = set().union(*req.values())
    if top is not None and len(keep) > top:
        raise XlingError(f"--top {top} is smaller than the {len(keep)} special and byte tokens that must be kept")

    derive = None
    if info.model_type == "BPE":
        m = tj["model"]
        vocab = m["vocab"]
        inv = {i: t for t, i in vocab.items()}
        ranks = {p: r for r, p in enumerate(_merge_pairs(m))}
        prefix = m.get("continuing_subword_prefix") or ""
        suffix = m.get("end_of_word_suffix") or ""

        def derive(i: int) -> set[int]:
            tok = inv.get(i)
            if tok is None or len(tok) < 2:
                return set()
            return {vocab[t] for t in bpe_derivation(tok, ranks, prefix, suffix) or () if t in vocab}

    cand = np.nonzero(counts >= min_freq)[0]
    cand = cand[np.lexsort((cand, -counts[cand]))]
    by_freq = closure = 0
    for i in cand.tolist():
        if i in keep:
            continue
        extra = (derive(i) - keep - {i}) if derive is not None else set()
        if top is not None and len(keep) + 1 + len(extra) > top:
            continue
        keep.add(i)
        keep |= extra
        by_freq += 1
        closure += len(extra)
    kept = np.array(sorted(keep), dtype=np.int64)
    reasons = {"frequency": by_freq, "bpe_closure": closure, "special": len(req["special"]),
               "bytes": len(req["bytes"]), "config": len(req["config"])}
    return TrimPlan(kept, size, reasons, trim_json(tj, kept), info, min_freq, top)


def tokenization_parity(old_encodings: Sequence[Sequence[int]], new_encodings: Sequence[Sequence[int]],
                        old_to_new: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """Share of texts whose tokens are all kept (covered) and whose tokenisation is unchanged.

    ``unchanged``: the new tokenizer's ids equal the old ids under the map.
    ``unchanged_if_covered`` should be 1: a covered text keeps its tokenisation
    (Unigram/WordPiece score ties aside). With ``weights`` (occurrence counts)
    the same shares are also given weighted.
    """
    n = len(old_encodings)
    covered = np.zeros(n, dtype=bool)
    same = np.zeros(n, dtype=bool)
    for k, (old, new) in enumerate(zip(old_encodings, new_encodings)):
        mapped = old_to_new[np.asarray(old, dtype=np.int64)] if len(old) else np.zeros(0, dtype=np.int64)
        covered[k] = bool((mapped >= 0).all())
        same[k] = covered[k] and len(new) == len(old) and bool((mapped == np.asarray(new, dtype=np.int64)).all())
    out = {
        "texts": n,
        "covered": round(float(covered.mean()) if n else 0.0, 6),
        "unchanged": round(float(same.mean()) if n else 0.0, 6),
        "unchanged_if_covered": round(float(same[covered].mean()) if covered.any() else 0.0, 6),
        "changed_but_covered": int((covered & ~same).sum()),
    }
    if weights is not None and n:
        w = np.asarray(weights, dtype=np.float64)
        out["covered_weighted"] = round(float(w[covered].sum() / w.sum()), 6)
        out["unchanged_weighted"] = round(float(w[same].sum() / w.sum()), 6)
    return out


@torch.no_grad()
def forward_states(model, ids: Sequence[int], columns: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Hidden states (all layers) and, for LM heads, logits (``columns`` of them) of one sequence."""
    m = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder") else model
    dev = next(model.parameters()).device
    out = m(input_ids=torch.tensor([list(ids)], device=dev), output_hidden_states=True)
    hs = getattr(out, "hidden_states", None) or (out.last_hidden_state,)
    res = {"hidden": torch.stack([h[0].float().cpu() for h in hs])}
    logits = getattr(out, "logits", None)
    if logits is not None:
        lg = logits[0].float().cpu()
        res["logits"] = lg if columns is None else lg.index_select(-1, columns)
    return res


def compare_states(before: list[dict], after: list[dict]) -> dict:
    """Max absolute differences of hidden states and logits between two runs."""
    hid = max((float((a["hidden"] - b["hidden"]).abs().max()) for a, b in zip(before, after)), default=0.0)
    out = {"sentences": len(before), "max_abs_diff_hidden": hid}
    pairs = [(a, b) for a, b in zip(before, after) if "logits" in a and "logits" in b]
    if pairs:
        out["max_abs_diff_logits"] = max(float((a["logits"] - b["logits"]).abs().max()) for a, b in pairs)
    return out


def model_vocab_size(tj: dict) -> int:
    return len(model_vocab(tj))
