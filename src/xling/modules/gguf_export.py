"""A loaded decoder and its tokenizer written as one GGUF file, for llama.cpp.

GGUF (the file format of ggml / llama.cpp, ``docs/gguf.md`` of the ggml repository)
is a header of typed key/value metadata followed by named tensors. This module is
the inverse of the reading direction in :mod:`xling.models.gguf` (transformers'
GGUF reader): it writes, from a transformers model and its fast tokenizer,

* the metadata llama.cpp reads for the architecture: ``general.architecture``,
  ``<arch>.context_length``, ``embedding_length``, ``block_count``,
  ``feed_forward_length``, ``attention.head_count`` / ``head_count_kv``,
  ``attention.layer_norm_rms_epsilon``, ``rope.freq_base``, ``rope.dimension_count``,
  and for Gemma 3 ``attention.key_length`` / ``value_length`` and
  ``attention.sliding_window``;
* the tokenizer as llama.cpp stores it: ``tokenizer.ggml.model`` ``gpt2``
  (byte-level BPE: tokens spelled in the byte alphabet, merges, the pre-tokenizer
  name in ``tokenizer.ggml.pre``) or ``llama`` (SentencePiece BPE with byte
  fallback: tokens, merges, and scores whose order is the merge order, because
  llama.cpp's SentencePiece tokenizer merges the highest-scoring pair first),
  token types (normal, unknown, control, user-defined, unused, byte), the
  bos/eos/unknown/padding ids and whether BOS/EOS are added;
* the tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q``, ...,
  ``output_norm``, ``output``; no ``output`` when the embeddings are tied), with the
  two layout conventions of llama.cpp: the rows of each head's query and key
  projections of the ``llama`` architecture interleaved (llama.cpp applies rotary
  embeddings to adjacent pairs, transformers to the two halves of a head), and
  Gemma's RMS-norm weights stored as ``1 + w`` (transformers stores the offset
  ``w``; transformers' GGUF reader subtracts the 1 again).

Matrices are written in F32 or F16 (``ftype``); vectors (norms, biases) always stay
F32, as llama.cpp expects. Supported: the Llama family (Llama, SmolLM2, Mistral as
``llama``; Qwen2 as ``qwen2``) and Gemma 3 text decoders (``gemma3``); a model whose
configuration uses something the GGUF architecture cannot express (rope scaling,
another activation, Gemma 3 with another sliding-window layer pattern, ...) is
refused in one line rather than written wrong.

The file is written beside the target and renamed onto it (:func:`xling.io.atomic_path`),
so a reader never sees half a file; an existing target is refused unless
``overwrite``. ``tests/test_gguf_export.py`` reads every exported file back with
transformers' GGUF reader and compares logits and token ids with the source.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from xling.deps import require
from xling.errors import XlingError

#: transformers ``model_type`` -> the GGUF (llama.cpp) architecture it is written as.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}
FTYPES = ("f32", "f16")
#: ``general.file_type`` (llama.cpp's ``llama_ftype``): all F32, or F16 matrices with F32 vectors.
_FILE_TYPE = {"f32": 0, "f16": 1}
#: llama.cpp's token types (``llama_token_type``).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
F16_MAX = 65504.0

#: Byte-level pre-tokenizer regexes (the Split of tokenizer.json) -> llama.cpp's ``tokenizer.ggml.pre`` name.
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_SPLIT_PRE = {_WORDS + r"\p{N}{1,3}" + _REST: "llama-bpe", _WORDS + r"\p{N}" + _REST: "qwen2"}

# transformers' parameter names inside a decoder layer -> llama.cpp's tensor names inside ``blk.N``.
_LAYER_COMMON = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
LAYER_NAMES = {
    "llama": {**_LAYER_COMMON, "post_attention_layernorm": "ffn_norm"},
    "qwen2": {**_LAYER_COMMON, "post_attention_layernorm": "ffn_norm"},
    "gemma3": {**_LAYER_COMMON, "post_attention_layernorm": "post_attention_norm",
               "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
               "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"},
}
TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


@dataclass
class TokenizerFields:
    """The ``tokenizer.*`` metadata of a GGUF file."""

    model: str  # tokenizer.ggml.model: gpt2 or llama
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    scores: list[float] | None = None
    pre: str | None = None
    special: dict[str, int] = field(default_factory=dict)  # bos, eos, unknown, padding -> id
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None


@dataclass
class ExportSummary:
    """What :func:`export_gguf` wrote."""

    path: Path
    architecture: str
    ftype: str
    tokenizer_model: str
    tokenizer_pre: str | None
    vocab_size: int
    tensors: int
    parameters: int
    bytes: int
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- architecture and metadata


def gguf_architecture(config) -> str:
    """The GGUF architecture ``config`` is written as; one line naming the supported ones otherwise."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        supported = ", ".join(f"{k} (as {v})" for k, v in ARCHITECTURES.items())
        raise XlingError(f"GGUF export does not support the architecture {model_type!r} "
                         f"({type(config).__name__}); supported: {supported}")
    return ARCHITECTURES[model_type]


def _rope(config, layer_type: str | None = None) -> dict:
    """The rope parameters (transformers 5 ``rope_parameters``, older ``rope_theta``/``rope_scaling``)."""
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and layer_type is not None and isinstance(rp.get(layer_type), dict):
        rp = rp[layer_type]
    if isinstance(rp, dict) and "rope_theta" in rp:
        return dict(rp)
    scaling = getattr(config, "rope_scaling", None) or {}
    theta = getattr(config, "rope_theta", None)
    if layer_type == "sliding_attention" and getattr(config, "rope_local_base_freq", None) is not None:
        theta = config.rope_local_base_freq
    return {"rope_type": scaling.get("rope_type", scaling.get("type", "default")), "rope_theta": theta}


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def check_representable(config, arch: str) -> list[str]:
    """Refuse (one line) what the GGUF architecture cannot express; return notes on what it drops harmlessly.

    llama.cpp hard-codes parts of each architecture that transformers reads from the config: the
    activation (SiLU for llama/qwen2, tanh-approximated GELU for Gemma 3), unscaled rotary embeddings,
    and for Gemma 3 one full-attention layer in every six, local rotary base 10000, attention scaled by
    ``1/sqrt(head_dim)``, no logit soft-capping.
    """
    name = getattr(config, "model_type", arch)
    problems, notes = [], []
    act = getattr(config, "hidden_act", None) if arch != "gemma3" else getattr(config, "hidden_activation", None)
    want_act = ("gelu_pytorch_tanh",) if arch == "gemma3" else ("silu",)
    if act not in want_act:
        problems.append(f"activation {act!r} (llama.cpp's {arch} uses {want_act[0]})")
    layer_types = list(getattr(config, "layer_types", None) or [])
    for lt in sorted(set(layer_types) or {None}, key=str):
        rp = _rope(config, lt)
        if rp.get("rope_type", "default") not in ("default", None):
            problems.append(f"rope scaling {rp.get('rope_type')!r}")
            break
    if arch == "llama":
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            problems.append("attention or MLP biases (the GGUF reader of transformers drops them)")
        window = getattr(config, "sliding_window", None)
        if name == "mistral" and window is not None and window < config.max_position_embeddings:
            notes.append(f"sliding window {window} not written: llama.cpp's llama architecture attends to the "
                         f"whole context (identical up to {window} tokens)")
    if arch == "qwen2" and getattr(config, "use_sliding_window", False):
        problems.append("sliding-window attention (use_sliding_window)")
    if arch == "gemma3":
        pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                   for i in range(config.num_hidden_layers)]
        if layer_types and layer_types != pattern:
            problems.append("a layer pattern other than one full-attention layer in six")
        local = _rope(config, "sliding_attention").get("rope_theta")
        if local is not None and float(local) != 10000.0:
            problems.append(f"local rope base {local} (llama.cpp's gemma3 uses 10000)")
        scalar = getattr(config, "query_pre_attn_scalar", None)
        if scalar is not None and int(scalar) != head_dim(config):
            problems.append(f"query_pre_attn_scalar {scalar} != head_dim {head_dim(config)} (llama.cpp scales "
                            "attention by 1/sqrt(head_dim))")
        for key in ("final_logit_softcapping", "attn_logit_softcapping"):
            if getattr(config, key, None) is not None:
                problems.append(f"{key} {getattr(config, key)}")
        if getattr(config, "use_bidirectional_attention", False):
            problems.append("bidirectional attention")
        if getattr(config, "attention_bias", False):
            problems.append("attention biases")
    if problems:
        raise XlingError(f"GGUF export: this {name} model cannot be written as llama.cpp's {arch}: "
                         + "; ".join(problems))
    return notes


def architecture_metadata(config, arch: str, vocab_size: int) -> list[tuple[str, str, object]]:
    """``(key, kind, value)`` for the architecture keys; kind is u32, f32 or str."""
    hd = head_dim(config)
    rows = [
        ("context_length", "u32", int(config.max_position_embeddings)),
        ("embedding_length", "u32", int(config.hidden_size)),
        ("block_count", "u32", int(config.num_hidden_layers)),
        ("feed_forward_length", "u32", int(config.intermediate_size)),
        ("attention.head_count", "u32", int(config.num_attention_heads)),
        ("attention.head_count_kv", "u32", int(getattr(config, "num_key_value_heads", None)
                                               or config.num_attention_heads)),
        ("attention.layer_norm_rms_epsilon", "f32", float(config.rms_norm_eps)),
        ("rope.dimension_count", "u32", hd),
        ("vocab_size", "u32", int(vocab_size)),
    ]
    full = "full_attention" if getattr(config, "layer_types", None) else None
    theta = _rope(config, full).get("rope_theta")
    if theta is not None:
        rows.append(("rope.freq_base", "f32", float(theta)))
    if arch == "gemma3" or hd * config.num_attention_heads != config.hidden_size:
        rows += [("attention.key_length", "u32", hd), ("attention.value_length", "u32", hd)]
    if arch == "gemma3" and getattr(config, "sliding_window", None):
        rows.append(("attention.sliding_window", "u32", int(config.sliding_window)))
    return [(f"{arch}.{k}", kind, v) for k, kind, v in rows]


# ----------------------------------------------------------------------------- tensors


def permute_rows(w, n_head: int):
    """llama.cpp's row order of one rotary projection: in each head, row ``2i`` and ``2i+1`` are transformers'
    rows ``i`` and ``i + head_dim/2`` (rotary pairs adjacent instead of half a head apart). ``w``: (rows, ...)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensor_name(hf_name: str, arch: str) -> str | None:
    """llama.cpp's name of one transformers parameter (``model.layers.3.mlp.up_proj.weight`` ->
    ``blk.3.ffn_up.weight``), or None if the architecture has no such tensor."""
    base, _, suffix = hf_name.rpartition(".")
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) > 3 and parts[0] == "model" and parts[1] == "layers" and parts[2].isdigit():
        inner = LAYER_NAMES[arch].get(".".join(parts[3:]))
        if inner is not None:
            return f"blk.{parts[2]}.{inner}.{suffix}"
    return None


def gguf_tensors(model, arch: str, ftype: str = "f16"):
    """``[(gguf name, numpy array)]`` of every weight, in llama.cpp's names, layouts and types."""
    import numpy as np
    import torch

    cfg = model.config
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    emb = model.get_input_embeddings().weight
    out_layer = model.get_output_embeddings()
    tied = out_layer is None or out_layer.weight is emb or out_layer.weight.data_ptr() == emb.data_ptr()
    out, unknown = [], []
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        name = gguf_tensor_name(hf_name, arch)
        if name is None:
            unknown.append(hf_name)
            continue
        a = t.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            a = permute_rows(a, n_head if ".attn_q." in name else n_kv)
        if arch == "gemma3" and name.endswith("norm.weight"):
            a = a + np.float32(1.0)  # llama.cpp multiplies by the stored weight; Gemma normalises by (1 + w)
        if ftype == "f16" and a.ndim >= 2:
            big = float(np.abs(a).max()) if a.size else 0.0
            if not math.isfinite(big) or big > F16_MAX:
                raise XlingError(f"GGUF export: tensor {hf_name} has values up to {big:.4g}, beyond float16 "
                                 f"(max {F16_MAX:g}); use --type f32")
            a = a.astype(np.float16)
        out.append((name, np.ascontiguousarray(a)))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise XlingError(f"GGUF export: {type(model).__name__} has weights llama.cpp's {arch} has no place for: "
                         f"{', '.join(unknown[:3])}{more}")
    names = {n for n, _ in out}
    if "token_embd.weight" not in names:
        raise XlingError(f"GGUF export: {type(model).__name__} has no input embedding model.embed_tokens")
    return out


# ----------------------------------------------------------------------------- tokenizer


def pre_tokenizer_name(tj: dict) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level BPE tokenizer.json, from its pre-tokenizer."""
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    steps = [s for s in steps or [] if s]
    kinds = [s.get("type") for s in steps]

    def byte_level(s, regex: bool) -> bool:
        return (s.get("type") == "ByteLevel" and not s.get("add_prefix_space", False)
                and bool(s.get("use_regex", True)) == regex)

    if len(steps) == 1 and byte_level(steps[0], True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level(steps[1], True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and byte_level(steps[1], False):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in _SPLIT_PRE and steps[0].get("behavior") in ("Isolated", "isolated"):
            return _SPLIT_PRE[pattern]
    raise XlingError(f"GGUF export: byte-level BPE pre-tokenizer {'+'.join(map(str, kinds)) or 'none'} has no "
                     "llama.cpp equivalent here (recognised: ByteLevel (gpt-2), Digits+ByteLevel (smollm), the "
                     "Llama 3 and Qwen2 splits (llama-bpe, qwen2))")


def _nodes(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def check_normalizer(tj: dict, kind: str) -> None:
    """Refuse a normalizer llama.cpp does not apply: it normalises nothing for ``gpt2`` (NFC passes: text in NFC,
    the usual case, is unchanged by it) and only turns spaces into ``▁`` (with an optional prefix) for ``llama``."""
    bad = []
    for node in _nodes(tj.get("normalizer")):
        t = node.get("type")
        if t is None or t == "Sequence" or (t == "NFC" and kind == "gpt2"):
            continue
        if kind == "llama" and t == "Prepend" and node.get("prepend") == "\u2581":
            continue
        if kind == "llama" and t == "Replace" and (node.get("pattern") or {}).get("String") == " " \
                and node.get("content") == "\u2581":
            continue
        bad.append(t)
    if bad:
        raise XlingError(f"GGUF export: the tokenizer's normalizer ({', '.join(bad)}) has no equivalent in llama.cpp's "
                         f"{kind} tokenizer")


def _spm_prefix(backend) -> bool:
    """Whether a SentencePiece-style tokenizer marks the start of the text with ``▁`` (add_space_prefix);
    refuses one that does not turn spaces into ``▁``."""
    text = "a b"
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is not None:
        text = "".join(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    if text not in ("a\u2581b", "\u2581a\u2581b"):
        raise XlingError(f"GGUF export: this SentencePiece BPE tokenizer turns 'a b' into {text!r}, not "
                         "'a▁b' or '▁a▁b' (llama.cpp's SentencePiece tokenizer)")
    return text.startswith("\u2581")


def _merge_pairs(tj: dict) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            for m in (tj.get("model") or {}).get("merges") or []]


def tokenizer_fields(tokenizer, n_vocab: int, config=None) -> TokenizerFields:
    """The GGUF tokenizer metadata of a fast (``tokenizer.json``) tokenizer, for an embedding of ``n_vocab`` rows.

    Ids the tokenizer does not use (an embedding padded past the vocabulary) become ``[PAD<id>]`` tokens of
    type unused, as llama.cpp expects one token per embedding row.
    """
    from xling.methods.vocab.tokenizer import inspect_tokenizer, load_json, model_vocab

    tj = load_json(tokenizer)
    info = inspect_tokenizer(tj)
    if info.family == "byte-level-bpe":
        kind, pre = "gpt2", pre_tokenizer_name(tj)
    elif info.family == "sentencepiece-bpe":
        kind, pre = "llama", None
    else:
        raise XlingError(f"GGUF export: {info.family} tokenizers are not supported (supported: byte-level BPE, "
                         "written as tokenizer.ggml.model gpt2, and SentencePiece BPE with byte fallback, as llama)")
    check_normalizer(tj, kind)
    if info.size > n_vocab:
        raise XlingError(f"GGUF export: the tokenizer has {info.size} ids but the embedding only {n_vocab} rows")
    tokens: list[str | None] = [None] * n_vocab
    types = [NORMAL] * n_vocab
    for tok, i in model_vocab(tj).items():
        tokens[int(i)] = tok
        if kind == "llama" and info.byte_fallback and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            types[int(i)] = BYTE
    for a in tj.get("added_tokens") or []:
        i = int(a["id"])
        if tokens[i] is not None and tokens[i] != a["content"]:
            raise XlingError(f"GGUF export: id {i} is both {tokens[i]!r} and the added token {a['content']!r}")
        tokens[i] = a["content"]
        types[i] = CONTROL if a.get("special") else USER_DEFINED
    special: dict[str, int] = {}
    for key, attr in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
        tid = getattr(tokenizer, attr, None)
        if tid is None and config is not None:
            tid = getattr(config, attr, None)
            tid = tid[0] if isinstance(tid, (list, tuple)) and tid else tid
        if isinstance(tid, int) and 0 <= tid < n_vocab and tokens[tid] is not None:
            special[key] = tid
            if types[tid] == NORMAL:
                types[tid] = CONTROL
    if info.unk_id is not None:  # the model's own unknown token (byte-level BPE has none, whatever the config says)
        special["unknown"] = int(info.unk_id)
        types[special["unknown"]] = UNKNOWN
    for i, tok in enumerate(tokens):
        if tok is None:
            tokens[i], types[i] = f"[PAD{i}]", UNUSED
    pairs = _merge_pairs(tj)
    spaced = next(((a, b) for a, b in pairs if " " in a or " " in b), None)
    if spaced is not None and kind == "gpt2":
        raise XlingError(f"GGUF export: the merge {spaced[0]!r} + {spaced[1]!r} has a space in a token, which "
                         "GGUF's 'a b' merge strings cannot hold")
    # llama.cpp's SentencePiece tokenizer reads no merges (the scores below carry their order); GGUF's "a b"
    # strings cannot hold a token with a space, so such a vocabulary goes without them
    merges = [f"{a} {b}" for a, b in pairs] if spaced is None else []
    scores = None
    if kind == "llama":
        # llama.cpp merges the adjacent pair whose joined token scores highest: score = -(rank of its first merge)
        lowest = -float(len(pairs) + 1)
        rank: dict[str, int] = {}
        for r, (a, b) in enumerate(pairs):
            rank.setdefault(a + b, r)
        # a normal token no merge makes ranks below every merged one; specials, bytes and unused rows are never
        # a merge result in llama.cpp (it matches specials whole and uses bytes only for unknown characters)
        scores = [(-float(rank[t]) if t in rank else lowest) if ty == NORMAL else 0.0
                  for t, ty in zip(tokens, types)]
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    add_bos = "bos" in special and len(with_specials) > len(plain) and with_specials[0] == special["bos"]
    add_eos = "eos" in special and len(with_specials) > len(plain) and with_specials[-1] == special["eos"]
    prefix = _spm_prefix(tokenizer.backend_tokenizer) if kind == "llama" else None
    template = getattr(tokenizer, "chat_template", None)
    return TokenizerFields(model=kind, tokens=tokens, token_types=types, merges=merges, scores=scores, pre=pre,
                           special=special, add_bos=bool(add_bos), add_eos=bool(add_eos), add_space_prefix=prefix,
                           chat_template=template if isinstance(template, str) else None)


# ----------------------------------------------------------------------------- the file


def check_target(out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse (one line) an output path that is not a new ``.gguf`` file, or an existing one without ``overwrite``."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise XlingError(f"--out {out}: a GGUF export is one file; give a path ending in .gguf")
    if out.is_dir():
        raise XlingError(f"--out {out} is a folder; give a .gguf file path")
    if os.path.lexists(out) and not overwrite:
        raise XlingError(f"--out {out} exists; pass --overwrite to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise XlingError(f"--out {out} cannot be created: {parent} is a file, not a folder")
    import tempfile

    try:  # a read-only or full folder is said now, before the model loads, naming the path the user gave
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".xling-probe-"):
            pass
    except OSError as exc:
        raise XlingError(f"--out {out} cannot be written: {parent}: {exc.strerror or exc}") from None
    return out


def _add(writer, key: str, kind: str, value) -> None:
    {"u32": writer.add_uint32, "f32": writer.add_float32, "str": writer.add_string,
     "bool": writer.add_bool}[kind](key, value)


def export_gguf(model, tokenizer, out: str | os.PathLike, *, ftype: str = "f16", overwrite: bool = False,
                name: str | None = None) -> ExportSummary:
    """Write ``model`` (a transformers causal LM) and ``tokenizer`` (a fast tokenizer) to the GGUF file ``out``."""
    if ftype not in FTYPES:
        raise XlingError(f"GGUF export: --type {ftype!r} is not one of {', '.join(FTYPES)}")
    gguf = require("gguf", "GGUF export")
    from xling.io import atomic_path, output_lock

    out = check_target(out, overwrite=overwrite)
    config = model.config
    arch = gguf_architecture(config)
    notes = check_representable(config, arch)
    n_vocab = int(model.get_input_embeddings().weight.shape[0])
    tok = tokenizer_fields(tokenizer, n_vocab, config)
    if tok.model == "llama" and tok.add_space_prefix is False and arch != "gemma3":
        notes.append("the tokenizer adds no '▁' before the first word (tokenizer.ggml.add_space_prefix = false, "
                     "which llama.cpp follows); transformers' GGUF reader ignores that key for this architecture "
                     "and prefixes '▁', so a model read back with it tokenizes the first word differently: load the "
                     "tokenizer from the model folder instead")
    tensors = gguf_tensors(model, arch, ftype)
    with output_lock(out):
        check_target(out, overwrite=overwrite)
        with atomic_path(out) as tmp:
            w = gguf.GGUFWriter(str(tmp), arch)
            w.add_string("general.name", name or out.stem)
            w.add_uint32("general.file_type", _FILE_TYPE[ftype])
            for key, kind, value in architecture_metadata(config, arch, n_vocab):
                _add(w, key, kind, value)
            w.add_string("tokenizer.ggml.model", tok.model)
            if tok.pre is not None:
                w.add_string("tokenizer.ggml.pre", tok.pre)
            w.add_array("tokenizer.ggml.tokens", tok.tokens)
            if tok.scores is not None:
                w.add_array("tokenizer.ggml.scores", tok.scores)
            w.add_array("tokenizer.ggml.token_type", tok.token_types)
            if tok.merges:
                w.add_array("tokenizer.ggml.merges", tok.merges)
            for key in ("bos", "eos", "unknown", "padding"):
                if key in tok.special:
                    w.add_uint32(f"tokenizer.ggml.{key}_token_id", tok.special[key])
            w.add_bool("tokenizer.ggml.add_bos_token", tok.add_bos)
            w.add_bool("tokenizer.ggml.add_eos_token", tok.add_eos)
            if tok.add_space_prefix is not None:
                w.add_bool("tokenizer.ggml.add_space_prefix", tok.add_space_prefix)
            if tok.chat_template:
                w.add_string("tokenizer.chat_template", tok.chat_template)
            for tname, array in tensors:
                w.add_tensor(tname, array)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            size = tmp.stat().st_size
    return ExportSummary(path=out, architecture=arch, ftype=ftype, tokenizer_model=tok.model,
                         tokenizer_pre=tok.pre, vocab_size=n_vocab, tensors=len(tensors),
                         parameters=int(sum(a.size for _, a in tensors)), bytes=size, notes=notes)


__all__ = ["ARCHITECTURES", "FTYPES", "LAYER_NAMES", "TOP_NAMES", "ExportSummary", "TokenizerFields",
           "architecture_metadata", "check_normalizer", "check_representable", "check_target", "export_gguf",
           "gguf_architecture", "gguf_tensor_name", "gguf_tensors", "head_dim", "permute_rows", "pre_tokenizer_name",
           "tokenizer_fields"]
