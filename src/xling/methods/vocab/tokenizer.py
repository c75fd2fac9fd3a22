"""Tokenizer surgery on the ``tokenizers`` JSON: family detection, trimming, extension.

Every fast tokenizer serialises to one JSON document (``tokenizer.json``): a
normaliser, a pre-tokeniser, a *model* (the vocabulary and its algorithm), a
post-processor (special-token templates) and a decoder. Only the model and the
places that name token ids change when a vocabulary is trimmed or extended, so
the work is done on that JSON and the rest of the pipeline is kept verbatim.

Families (``model.type`` plus the pipeline around it):

* ``unigram`` -- SentencePiece Unigram (XLM-R, mT5, the built-in E5): a list of
  ``[piece, log-prob score]`` indexed by id. Trimming keeps pieces and scores,
  so on text whose best segmentation uses only kept pieces the Viterbi path is
  unchanged (the best path over a superset is still available and still best);
  text that used a removed piece may be segmented differently.
* ``byte-level-bpe`` -- GPT-2, Llama 3, Qwen: a BPE over the 256 byte symbols of
  ``ByteLevel``. The 256 byte symbols are always kept, so any text stays
  encodable. A merge is kept only if both its parts and its result are kept,
  and every kept token also keeps the tokens it is built from (its own merge
  derivation), so the merges stay consistent and the BPE run on covered text
  is step for step the original one (see :func:`bpe_derivation`).
* ``sentencepiece-bpe`` -- BPE with ``byte_fallback`` (Llama 2, Mistral): like the
  above, and the ``<0x00>`` .. ``<0xFF>`` byte pieces are always kept.
* ``bpe`` -- other BPE (character level, optional ``continuing_subword_prefix``).
* ``wordpiece`` -- BERT: a ``token -> id`` map, greedy longest match first.
  As for Unigram, removing a piece can change the segmentation of words that
  used it; words whose pieces are all kept are segmented as before.
* ``wordlevel`` -- a plain word list.

Ids are remapped order-preserving: the kept old ids, sorted, become ``0..K-1``.

The rest of the pipeline is kept verbatim, including rules derived from the
old vocabulary: the built-in E5 tokenizer's pre-tokenizer isolates characters
that occur in no piece, so that each unknown character is its own ``<unk>``;
after trimming, characters whose pieces were all removed are not in that rule,
and a run of them becomes one ``<unk>`` (text the trimmed vocabulary does not
cover tokenises differently anyway).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from xling.errors import XlingError

FAMILIES = ("unigram", "byte-level-bpe", "sentencepiece-bpe", "bpe", "wordpiece", "wordlevel")
#: A new Unigram piece scores its current segmentation's total plus this (see :func:`extend_json`).
UNIGRAM_MARGIN = 1.0
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))


def byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins ``ByteLevel`` uses for the bytes 0..255."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _walk(node) -> Iterable[dict]:
    """Every JSON object in a pipeline component, nested ``Sequence``s included."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _has_type(node, type_name: str) -> bool:
    return any(d.get("type") == type_name for d in _walk(node))


@dataclass
class TokenizerInfo:
    """What a tokenizer is, read from its JSON."""

    family: str
    model_type: str
    model_vocab_size: int  # entries of the model's own vocabulary
    size: int  # max id + 1 over model vocabulary and added tokens
    byte_fallback: bool
    byte_level: bool
    unk_id: int | None
    added_ids: list[int] = field(default_factory=list)
    special_ids: list[int] = field(default_factory=list)
    word_prefix: str | None = None  # "▁" for Metaspace, "Ġ" for ByteLevel, None for WordPiece


def load_json(backend) -> dict:
    """The JSON of a ``tokenizers.Tokenizer`` or of a transformers fast tokenizer."""
    bt = getattr(backend, "backend_tokenizer", None) or getattr(backend, "_tokenizer", None) or backend
    if not hasattr(bt, "to_str"):
        raise XlingError(
            f"unsupported tokenizer {type(backend).__name__}: vocabulary surgery needs a fast "
            "(tokenizers-backed) tokenizer with a tokenizer.json"
        )
    return json.loads(bt.to_str())


def model_vocab(tj: dict) -> dict[str, int]:
    """``token -> id`` of the model part (not the added tokens)."""
    m = tj["model"]
    if m.get("type") == "Unigram":
        return {p[0]: i for i, p in enumerate(m["vocab"])}
    return dict(m.get("vocab") or {})


def _post_processor_ids(node) -> set[int]:
    ids: set[int] = set()
    for d in _walk(node):
        t = d.get("type")
        if t == "TemplateProcessing":
            for spec in (d.get("special_tokens") or {}).values():
                ids.update(int(i) for i in spec.get("ids", []))
        elif t in ("RobertaProcessing", "BertProcessing"):
            for key in ("sep", "cls"):
                if d.get(key):
                    ids.add(int(d[key][1]))
    return ids


def inspect_tokenizer(tj: dict) -> TokenizerInfo:
    """Classify a tokenizer JSON into one of :data:`FAMILIES`; XlingError if unsupported."""
    m = tj.get("model") or {}
    mtype = m.get("type")
    if mtype is None:  # older files omit the type; infer it from the fields
        if isinstance(m.get("vocab"), list):
            mtype = "Unigram"
        elif "merges" in m:
            mtype = "BPE"
        elif "continuing_subword_prefix" in m and "max_input_chars_per_word" in m:
            mtype = "WordPiece"
        elif isinstance(m.get("vocab"), dict):
            mtype = "WordLevel"
    byte_level = _has_type(tj.get("pre_tokenizer"), "ByteLevel") or _has_type(tj.get("decoder"), "ByteLevel")
    byte_fallback = bool(m.get("byte_fallback"))
    if mtype == "Unigram":
        family = "unigram"
    elif mtype == "BPE":
        family = "byte-level-bpe" if byte_level else ("sentencepiece-bpe" if byte_fallback else "bpe")
    elif mtype == "WordPiece":
        family = "wordpiece"
    elif mtype == "WordLevel":
        family = "wordlevel"
    else:
        raise XlingError(
            f"unsupported tokenizer type {mtype!r} (supported: Unigram, BPE, WordPiece, WordLevel)"
        )
    vocab = model_vocab(tj)
    added = [int(a["id"]) for a in tj.get("added_tokens") or []]
    size = max([max(vocab.values(), default=-1), max(added, default=-1)]) + 1
    unk_id = None
    if mtype == "Unigram":
        unk_id = m.get("unk_id")
    elif m.get("unk_token") is not None:
        unk_id = vocab.get(m["unk_token"])
    special = {int(a["id"]) for a in tj.get("added_tokens") or [] if a.get("special")}
    special |= _post_processor_ids(tj.get("post_processor"))
    if unk_id is not None:
        special.add(int(unk_id))
    prefix = None
    if byte_level:
        prefix = "\u0120"  # "Ġ", the ByteLevel stand-in for a space
    else:
        for d in list(_walk(tj.get("pre_tokenizer"))) + list(_walk(tj.get("normalizer"))):
            if d.get("type") == "Metaspace":
                prefix = d.get("replacement", "\u2581")
                break
            if d.get("type") == "Prepend":
                prefix = d.get("prepend")
                break
    return TokenizerInfo(
        family=family, model_type=mtype, model_vocab_size=len(vocab), size=size,
        byte_fallback=byte_fallback, byte_level=byte_level, unk_id=None if unk_id is None else int(unk_id),
        added_ids=sorted(set(added)), special_ids=sorted(special), word_prefix=prefix,
    )


def required_ids(tj: dict, info: TokenizerInfo | None = None) -> dict[str, set[int]]:
    """Ids that trimming must keep whatever the corpus says, by reason.

    ``special``: added tokens, the unknown token and post-processor tokens;
    ``bytes``: the byte pieces (``<0x..>`` with byte fallback, the 256
    ``ByteLevel`` symbols for byte-level BPE), so any text stays encodable.
    """
    info = info or inspect_tokenizer(tj)
    vocab = model_vocab(tj)
    out = {"special": set(info.special_ids) | set(info.added_ids), "bytes": set()}
    if info.byte_fallback:
        out["bytes"] |= {vocab[p] for p in BYTE_PIECES if p in vocab}
    if info.byte_level:
        out["bytes"] |= {vocab[c] for c in byte_level_alphabet() if c in vocab}
    return out


# ----------------------------------------------------------------------------- BPE
def _merge_pairs(m: dict) -> list[tuple[str, str]]:
    pairs = []
    for mg in m.get("merges") or []:
        if isinstance(mg, str):
            a, _, b = mg.partition(" ")
        else:
            a, b = mg
        pairs.append((a, b))
    return pairs


def _merge_result(a: str, b: str, prefix: str) -> str:
    return a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)


def _initial_symbols(token: str, prefix: str, suffix: str) -> list[str]:
    body = token
    starts_inside = bool(prefix) and body.startswith(prefix)
    if starts_inside:
        body = body[len(prefix):]
    ends_word = bool(suffix) and body.endswith(suffix) and len(body) > len(suffix)
    if ends_word:
        body = body[: -len(suffix)]
    if not body:
        return [token]
    syms = [(prefix + ch if (i > 0 or starts_inside) and prefix else ch) for i, ch in enumerate(body)]
    if ends_word:
        syms[-1] += suffix
    return syms


def bpe_derivation(token: str, ranks: dict[tuple[str, str], int], prefix: str = "", suffix: str = "") -> list[str] | None:
    """The tokens a BPE run builds on its way from ``token``'s characters to ``token``.

    BPE applies, at each step, the highest-priority merge among adjacent pairs.
    Inside the span of a final token only merges within that span ever fire, in
    the same order as when the token's characters are run alone (a merge across
    the span's border would have destroyed the token). So replaying BPE on the
    token's own characters recovers the exact derivation the tokenizer uses;
    keeping every token of it keeps every merge the original run needs, and the
    trimmed run, taking the best of a subset that contains the original's choice,
    repeats the original step for step. Returns None when the merges do not
    produce ``token`` (special or unreachable tokens).
    """
    syms = _initial_symbols(token, prefix, suffix)
    built = list(syms)
    while len(syms) > 1:
        best, at = None, -1
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        merged = _merge_result(syms[at], syms[at + 1], prefix)
        syms[at : at + 2] = [merged]
        built.append(merged)
    return built if syms == [token] else None


# ----------------------------------------------------------------------------- id remapping
def _remap_post_processor(node, new_id) -> None:
    for d in _walk(node):
        t = d.get("type")
        if t == "TemplateProcessing":
            for spec in (d.get("special_tokens") or {}).values():
                spec["ids"] = [new_id(i) for i in spec.get("ids", [])]
        elif t in ("RobertaProcessing", "BertProcessing"):
            for key in ("sep", "cls"):
                if d.get(key):
                    d[key] = [d[key][0], new_id(d[key][1])]


def trim_json(tj: dict, keep: Sequence[int]) -> dict:
    """A copy of the tokenizer JSON keeping exactly the (sorted, unique) old ids ``keep``.

    Old id ``keep[k]`` becomes new id ``k``. For BPE, merges whose parts or
    result are not kept are dropped. Raises XlingError if a special token would
    be lost or the Unigram list could not stay dense.
    """
    info = inspect_tokenizer(tj)
    keep = sorted(set(int(i) for i in keep))
    pos = {old: new for new, old in enumerate(keep)}
    missing = [i for i in info.special_ids if i not in pos]
    if missing:
        raise XlingError(f"internal: special token ids {missing[:5]} are not kept")

    def new_id(old) -> int:
        return pos[int(old)]

    out = copy.copy(tj)
    out["model"] = m = copy.copy(tj["model"])
    if info.model_type == "Unigram":
        vocab = tj["model"]["vocab"]
        kept = [i for i in keep if i < len(vocab)]
        if kept and pos[kept[-1]] != len(kept) - 1:
            raise XlingError("cannot trim: an added token's id lies inside the Unigram vocabulary")
        m["vocab"] = [list(vocab[i]) for i in kept]
        if m.get("unk_id") is not None:
            m["unk_id"] = new_id(m["unk_id"])
    else:
        vocab = tj["model"]["vocab"]
        m["vocab"] = {tok: pos[i] for tok, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in pos}
        if info.model_type == "BPE":
            kept_tokens = m["vocab"]
            prefix = m.get("continuing_subword_prefix") or ""
            merges = []
            for mg, (a, b) in zip(tj["model"].get("merges") or [], _merge_pairs(tj["model"])):
                if a in kept_tokens and b in kept_tokens and _merge_result(a, b, prefix) in kept_tokens:
                    merges.append(mg)
            m["merges"] = merges
    out["added_tokens"] = [dict(a, id=new_id(a["id"])) for a in tj.get("added_tokens") or []]
    if tj.get("post_processor") is not None:
        out["post_processor"] = copy.deepcopy(tj["post_processor"])
        _remap_post_processor(out["post_processor"], new_id)
    if tj.get("padding"):
        out["padding"] = dict(tj["padding"])
        if out["padding"].get("pad_id") is not None and int(out["padding"]["pad_id"]) in pos:
            out["padding"]["pad_id"] = new_id(out["padding"]["pad_id"])
    return out


def bpe_closure(tj: dict, kept_ids: set[int]) -> set[int]:
    """Ids to add so every kept BPE token keeps its derivation (see :func:`bpe_derivation`)."""
    m = tj["model"]
    if m.get("type") != "BPE":
        return set()
    vocab = m["vocab"]
    inv = {i: t for t, i in vocab.items()}
    ranks = {p: r for r, p in enumerate(_merge_pairs(m))}
    prefix = m.get("continuing_subword_prefix") or ""
    suffix = m.get("end_of_word_suffix") or ""
    extra: set[int] = set()
    for i in sorted(kept_ids):
        tok = inv.get(i)
        if tok is None or len(tok) < 2:
            continue
        for t in bpe_derivation(tok, ranks, prefix, suffix) or ():
            j = vocab.get(t)
            if j is not None and j not in kept_ids:
                extra.add(j)
    return extra


def build_tokenizer(tj: dict):
    """A ``tokenizers.Tokenizer`` from a JSON dict; XlingError if tokenizers rejects it."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(json.dumps(tj, ensure_ascii=False))
    except Exception as exc:  # the Rust side reports malformed vocabularies as plain exceptions
        raise XlingError(f"the rebuilt tokenizer is invalid ({str(exc).splitlines()[0]})") from None


# ----------------------------------------------------------------------------- extension
def word_piece(backend, tj: dict, word: str, info: TokenizerInfo | None = None) -> str | None:
    """The vocabulary entry a word gets in running text (``▁casa``, ``Ġcasa``, ``casa``).

    The word is normalised and pre-tokenised by the tokenizer's own pipeline
    (after a space for byte-level BPE, where a word in running text follows
    one); None unless that yields exactly one pre-token.
    """
    info = info or inspect_tokenizer(tj)
    text = (" " + word) if info.byte_level else word
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is not None:
        parts = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(text) if p]
    else:
        parts = [text] if text else []
    if len(parts) != 1:
        return None
    piece = parts[0]
    if info.family == "wordpiece" and backend.normalizer is None and not piece:
        return None
    return piece


def extend_json(tj: dict, pieces: Sequence[str], backend,
                scores: Sequence[float] | None = None) -> tuple[dict, dict[str, int], list[str]]:
    """A copy of ``tj`` whose model vocabulary also holds ``pieces``.

    New entries get ids after every existing id, in order. Unigram pieces get
    ``scores`` (default below); BPE gets, per
    piece, the chain of merges that builds it from its current segmentation
    (appended, lowest priority), whose intermediate tokens are new entries too;
    WordPiece and WordLevel just add the entry. Returns the JSON, ``piece ->
    new id`` for every new entry (intermediates included) and the pieces skipped
    (already in the vocabulary, or, for BPE, not buildable by merges because
    some character is only reachable through byte fallback).

    Unigram default score: a score is a log-probability and Viterbi maximises
    their sum, so a piece scoring :data:`UNIGRAM_MARGIN` above the total of the
    pieces it is currently split into wins on that span: the word becomes one
    token.
    """
    info = inspect_tokenizer(tj)
    out = copy.copy(tj)
    out["model"] = m = copy.deepcopy(tj["model"])
    vocab = model_vocab(tj)
    next_id = info.size
    added: dict[str, int] = {}
    skipped: list[str] = []
    unbuildable: list[str] = []
    if info.model_type == "Unigram":
        score_of = {p[0]: float(p[1]) for p in m["vocab"]}
        floor = min(score_of.values(), default=0.0)
        if info.size != len(m["vocab"]):
            raise XlingError(
                "cannot extend this Unigram tokenizer: added tokens follow its vocabulary, "
                "so new pieces would not get the next ids"
            )
        for k, piece in enumerate(pieces):
            if piece in vocab or piece in added:
                skipped.append(piece)
                continue
            if scores is not None:
                s = scores[k]
            else:
                s = sum(score_of.get(t.value, floor) for t in backend.model.tokenize(piece)) + UNIGRAM_MARGIN
            m["vocab"].append([piece, float(s)])
            added[piece] = next_id
            next_id += 1
    elif info.model_type == "BPE":
        prefix = m.get("continuing_subword_prefix") or ""
        merges = m.setdefault("merges", [])
        as_strings = bool(merges) and isinstance(merges[0], str)
        for piece in pieces:
            if piece in vocab or piece in added:
                skipped.append(piece)
                continue
            parts = [t.value for t in backend.model.tokenize(piece)]
            chain, cur = [], parts[0] if parts else ""
            for nxt in parts[1:]:
                chain.append((cur, nxt))
                cur = _merge_result(cur, nxt, prefix)
            if cur != piece:  # e.g. characters only reachable through byte fallback: no merge can build it
                unbuildable.append(piece)
                continue
            for a, b in chain:
                res = _merge_result(a, b, prefix)
                merges.append(f"{a} {b}" if as_strings else [a, b])
                if res not in vocab and res not in added:
                    m["vocab"][res] = next_id
                    added[res] = next_id
                    next_id += 1
    else:
        for piece in pieces:
            if piece in vocab or piece in added:
                skipped.append(piece)
                continue
            m["vocab"][piece] = next_id
            added[piece] = next_id
            next_id += 1
    return out, added, skipped + unbuildable


