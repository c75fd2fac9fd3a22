"""Training a new tokenizer on target-language text with the ``tokenizers`` library (for ``xling vocab replace``).

Two kinds (``--tokenizer-type``):

* ``bpe`` -- byte-level BPE (Radford et al. 2019, GPT-2; SmolLM2 and Llama 3 use it): text is split by the GPT-2
  pattern, every byte is a symbol, so any text is encodable and there is no unknown token;
* ``unigram`` -- a SentencePiece-style Unigram language model (Kudo 2018) with ``▁`` for spaces (Metaspace,
  prepended to the first word) and byte fallback: characters outside the vocabulary become ``<0xNN>`` byte pieces.

``vocab_size`` counts everything, as the ``tokenizers`` trainers do: the special tokens carried over from the old
tokenizer (first, ids ``0..S-1``, in the order given), the 256 byte symbols or byte pieces, and the learned entries.
The old tokenizer's template post-processor (``<bos> $A``) is carried over with the ids of the same tokens in the
new vocabulary, so the new tokenizer adds the same special tokens around a text.
"""

from __future__ import annotations

import copy
import json
from typing import Sequence

from xling.errors import XlingError
from xling.methods.vocab.tokenizer import BYTE_PIECES

KINDS = ("bpe", "unigram")


def minimum_size(kind: str, specials: Sequence[str]) -> int:
    """The smallest sensible ``vocab_size``: the specials, the 256 byte symbols, and a few learned entries."""
    return len(set(specials)) + 256 + 16


def _template(post_processor: dict | None, ids: dict[str, int]) -> dict | None:
    """A copy of a ``TemplateProcessing`` (top level or inside a ``Sequence``) with its special tokens' ids looked
    up by content in ``ids``; None if there is none or a token is missing."""
    if not post_processor:
        return None
    nodes = post_processor.get("processors", [post_processor]) if post_processor.get("type") == "Sequence" \
        else [post_processor]
    for node in nodes:
        if node.get("type") != "TemplateProcessing":
            continue
        out = copy.deepcopy(node)
        for content, spec in (out.get("special_tokens") or {}).items():
            toks = spec.get("tokens") or [content]
            if any(t not in ids for t in toks):
                return None
            spec["ids"] = [ids[t] for t in toks]
        return out
    return None


def train_tokenizer(texts: Sequence[str], kind: str, vocab_size: int, specials: Sequence[str], *,
                    unk: str | None = None, post_processor: dict | None = None) -> dict:
    """A new tokenizer JSON trained on ``texts`` (see the module docstring). ``specials``: special token contents
    (ids ``0..``); ``unk``: the unknown token of a Unigram tokenizer (added to the specials; default ``<unk>``);
    ``post_processor``: the old tokenizer's, whose template is carried over."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind not in KINDS:
        raise XlingError(f"--tokenizer-type must be one of {', '.join(KINDS)}, got {kind!r}")
    specials = list(dict.fromkeys(specials))
    if kind == "unigram":
        unk = unk or "<unk>"
        if unk not in specials:
            specials.append(unk)
    low = minimum_size(kind, specials)
    if vocab_size < low:
        raise XlingError(f"--vocab-size {vocab_size} is too small for a {kind} tokenizer with {len(specials)} special "
                         f"tokens and 256 byte symbols: use at least {low}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise XlingError("no text to train the tokenizer on")
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        tj = json.loads(tok.to_str())
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials + list(BYTE_PIECES),
                                          unk_token=unk, show_progress=False)
        tok.train_from_iterator(texts, trainer)
        tj = json.loads(tok.to_str())
        tj["added_tokens"] = [a for a in tj["added_tokens"] if a["content"] in set(specials)]
        m = tj["model"]
        m["byte_fallback"] = True
        floor = min((float(s) for p, s in m["vocab"] if p not in BYTE_PIECES and p not in specials), default=-20.0)
        m["vocab"] = [[p, floor if p in BYTE_PIECES else s] for p, s in m["vocab"]]
    ids = {a["content"]: int(a["id"]) for a in tj.get("added_tokens") or []}
    if [ids.get(s) for s in specials] != list(range(len(specials))):
        raise XlingError("internal: the trained tokenizer did not put the special tokens first")
    tj["post_processor"] = _template(post_processor, ids)
    return tj


__all__ = ["KINDS", "minimum_size", "train_tokenizer"]
