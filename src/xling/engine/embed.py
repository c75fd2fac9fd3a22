"""The engine: batched hidden states of every requested layer, pooled per sentence.

One forward pass per batch computes every requested layer; forward hooks on the
blocks pool each hidden state as soon as it exists (:class:`_LayerCapture`), so
one layer's token states of one batch are the only per-token tensors alive
(never layers x tokens, never tokens x languages), and a decoder never computes
logits (the base model has no LM head). The hooks are checked once per loaded
model against transformers' ``output_hidden_states``, which is the fallback. Batches
are length-sorted (least padding), results go back to the input order, and the
output is the same, to float tolerance, whatever the batch size and padding
side: left padding gets explicit position ids where the model does not derive
them from the input ids itself.

Pooled embeddings are cached on disk per language, keyed by the model's
fingerprint, the pooling, the layers, the truncation length, the prefix and the
sentences themselves (:class:`EmbeddingCache`, a :class:`xling.cache.ContentCache`),
so a second run (or an interrupted one) skips the model for every language already done.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from xling.cache import CHECKSUM_KEY, KEY_KEY, ContentCache, TensorCodec  # noqa: F401 - the entries' fields
from xling.engine.pooling import default_pooling, get_pooling
from xling.errors import XlingError
from xling.io import cache_dir, note
from xling.models.layers import parse_layers
from xling.models.loading import LoadedModel


@dataclass(frozen=True)
class EmbedConfig:
    """How sentences become vectors. ``layers`` are hidden-state indices (0 = embeddings)."""

    pooling: str = "auto"
    layers: tuple[int, ...] | None = None
    batch_size: int = 32
    max_length: int | None = None  # None: the model's own context (model_context), at most MAX_CONTEXT
    padding_side: str = "right"
    prefix: str = ""

    def __post_init__(self):
        if self.batch_size < 1:
            raise XlingError(f"batch size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 2:
            raise XlingError(f"max length must be >= 2, got {self.max_length}")
        if self.padding_side not in ("left", "right"):
            raise XlingError(f"padding side must be left or right, got {self.padding_side}")
        if self.pooling != "auto":
            get_pooling(self.pooling)

    def resolved(self, lm: LoadedModel) -> "EmbedConfig":
        """Fill ``auto`` pooling, default layers and the model's own length limit."""
        pooling = default_pooling(lm.is_decoder) if self.pooling == "auto" else self.pooling
        layers = tuple(parse_layers(list(self.layers) if self.layers is not None else None, lm.num_hidden_states))
        limit = model_context(lm)
        length = limit if self.max_length is None else min(self.max_length, limit)
        return EmbedConfig(pooling, layers, self.batch_size, length, self.padding_side, self.prefix)


#: The longest default context (tokens): a Gemma 3 context of 32k would let one long line allocate
#: attention over 32k positions for the whole batch; 8192 covers SmolLM2's full context and any sentence.
MAX_CONTEXT = 8192
#: The length used when neither the tokenizer nor the config names a context.
FALLBACK_CONTEXT = 512


def model_context(lm: LoadedModel) -> int:
    """The model's own context in tokens: the smaller of the tokenizer's ``model_max_length`` (when it is
    set; transformers uses a huge placeholder when not) and the config's ``max_position_embeddings`` (minus
    the 2 offset positions of RoBERTa-style learned positions), at most :data:`MAX_CONTEXT`;
    :data:`FALLBACK_CONTEXT` when neither is known. MEXA's code does not truncate; this is as close as the
    model allows."""
    config = getattr(lm, "config", None)
    limits = []
    pos = getattr(config, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        if getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
            pos -= 2  # positions start after the padding index
        limits.append(pos)
    tok = getattr(lm.tokenizer, "model_max_length", None)
    if isinstance(tok, int) and 2 <= tok < 1_000_000:
        limits.append(tok)
    return max(2, min(min(limits) if limits else FALLBACK_CONTEXT, MAX_CONTEXT))


def truncation_counts(lm: LoadedModel, texts_by_lang: dict[str, Sequence[str]], cfg: "EmbedConfig") -> dict[str, int]:
    """Per language, how many sentences have more tokens (special tokens and prefix included) than the
    resolved ``max_length``: those the engine cuts. Tokenizes without truncation (after the character cap)."""
    from xling.textsafe import cap_texts

    k = cfg.resolved(lm).max_length
    out = {}
    for lang, texts in texts_by_lang.items():
        texts = [cfg.prefix + s for s in texts] if cfg.prefix else list(texts)
        texts, _ = cap_texts(texts, k)
        ids = lm.tokenizer(texts, add_special_tokens=True, truncation=False, return_attention_mask=False)["input_ids"]
        out[lang] = sum(len(r) > k for r in ids)
    return out


def note_truncation(lm: LoadedModel, texts_by_lang: dict[str, Sequence[str]], cfg: "EmbedConfig") -> str | None:
    """One ``xling: note: truncated N of M sentences to K tokens: hin_Deva 3, amh_Ethi 7`` line when any
    sentence is longer than the resolved ``max_length`` (nothing otherwise); returns the message."""
    counts = truncation_counts(lm, texts_by_lang, cfg)
    cut = {lang: n for lang, n in counts.items() if n}
    if not cut:
        return None
    total = sum(len(t) for t in texts_by_lang.values())
    msg = (f"truncated {sum(cut.values())} of {total} sentences to {cfg.resolved(lm).max_length} tokens: "
           + ", ".join(f"{lang} {n}" for lang, n in cut.items()))
    note(msg)
    return msg


def pad_id(tokenizer) -> int:
    """The id to pad with: the pad token, else end-of-sequence, else unknown, else 0."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def _needs_position_ids(model: torch.nn.Module) -> bool:
    """Whether left padding needs explicit positions: the model takes ``position_ids``
    and does not derive them from the input ids (RoBERTa-style embeddings do, via
    their ``padding_idx``)."""
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return False
    emb = getattr(model, "embeddings", None)
    return getattr(emb, "padding_idx", None) is None


def tokenize(lm: LoadedModel, sentences: Sequence[str], cfg: EmbedConfig, need_special: bool = False):
    from xling.textsafe import cap_texts, note_capped

    texts = [cfg.prefix + s for s in sentences] if cfg.prefix else list(sentences)
    texts, n_capped = cap_texts(texts, cfg.max_length)  # bounded work on a giant line; same ids otherwise
    note_capped(n_capped, cfg.max_length)
    enc = lm.tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=cfg.max_length,
        return_special_tokens_mask=need_special,
        return_attention_mask=False,
    )
    ids = enc["input_ids"]
    for i, row in enumerate(ids):
        if len(row) == 0:
            raise XlingError(f"sentence {i + 1} tokenizes to nothing: {sentences[i][:80]!r}")
    special = enc.get("special_tokens_mask") if need_special else None
    return ids, special


def _pooled_hidden_states(model, kwargs, layers, pool_one) -> dict[int, torch.Tensor]:
    """Pool the requested entries of transformers' ``output_hidden_states`` (all layers of the batch at once)."""
    hs = model(**kwargs, output_hidden_states=True, return_dict=True).hidden_states
    return {layer: pool_one(hs[layer]) for layer in layers}


class _LayerCapture:
    """Pool each requested hidden state the moment its block computes it (forward hooks).

    ``output_hidden_states`` keeps every layer's token states of a batch alive
    until the forward pass ends ((L + 1) x batch x tokens x d floats: 1.2 GB for
    a 30-layer decoder at 32 x 512 tokens). Hooks on the blocks found by the
    structural accessor pool entry ``i`` from the output of block ``i - 1``
    (entry 0 from the first block's input) and let it go, so one layer's token
    states are alive at a time; the last entry is the model's
    ``last_hidden_state`` (decoders apply their final norm there, as
    transformers' ``hidden_states[-1]`` does). The first batch of every run is
    checked against ``output_hidden_states``; a model whose blocks do not map
    onto its hidden states that way falls back to it.
    """

    def __init__(self, blocks, n_hidden: int, layers: list[int]):
        self.blocks = blocks
        self.n_hidden = n_hidden
        self.layers = layers
        self.verified = False

    def run(self, model, kwargs, pool_one) -> dict[int, torch.Tensor]:
        got: dict[int, torch.Tensor] = {}
        handles = []
        last = self.n_hidden - 1

        def first_input(module, args, kw):
            h = args[0] if args else kw.get("hidden_states")
            if isinstance(h, torch.Tensor):
                got[0] = pool_one(h)

        def output_of(entry):
            def hook(module, args, output):
                h = output[0] if isinstance(output, (tuple, list)) else output
                if isinstance(h, torch.Tensor):
                    got[entry] = pool_one(h)
            return hook

        try:
            if 0 in self.layers and last != 0:
                handles.append(self.blocks[0].register_forward_pre_hook(first_input, with_kwargs=True))
            for entry in self.layers:
                if 0 < entry < last:
                    handles.append(self.blocks[entry - 1].register_forward_hook(output_of(entry)))
            res = model(**kwargs, output_hidden_states=False, return_dict=True)
        finally:
            for h in handles:
                h.remove()
        if last in self.layers:
            got[last] = pool_one(res.last_hidden_state)
        return got

    def agrees(self, pooled: dict, reference: dict) -> bool:
        for layer in self.layers:
            a, b = pooled.get(layer), reference[layer]
            if a is None or a.shape != b.shape:
                return False
            scale = float(b.abs().max()) or 1.0
            if float((a - b).abs().max()) > 1e-4 * scale:
                return False
        return True


def _capture_for(lm: LoadedModel, layers: list[int]) -> "_LayerCapture | None":
    if lm.meta.get("layer_capture") == "hidden_states":
        return None
    try:
        blocks = lm.blocks()
    except XlingError:
        blocks = None
    if blocks is None or len(blocks) != lm.num_hidden_states - 1:
        lm.meta["layer_capture"] = "hidden_states"  # decided once per model, not searched again every batch
        return None
    capture = _LayerCapture(blocks, lm.num_hidden_states, layers)
    capture.verified = lm.meta.get("layer_capture") == "hooks"
    return capture


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A batch's ids or mask onto the model's device without waiting for the device: from pinned
    memory, asynchronously, on CUDA (a plain copy from pageable memory synchronises every batch)."""
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


@torch.inference_mode()
def embed_sentences(
    lm: LoadedModel,
    sentences: Sequence[str],
    cfg: EmbedConfig = EmbedConfig(),
    progress: Callable[[int], None] | None = None,
    *,
    on_device: bool = False,
) -> torch.Tensor:
    """Pooled embeddings ``(len(layers), n, dim)`` in float32, in input order.

    Pooled states stay on the model's device (the first block's device for a model
    sharded with ``--device-map``): they are gathered there into one ``(layers, n, dim)``
    tensor without a synchronisation per layer or batch, and copied to the host once at
    the end (``on_device=True``: not at all; the result stays on that device). On CPU the
    result is bit-identical to pooling each batch on the host.
    """
    cfg = cfg.resolved(lm)
    if len(sentences) == 0:
        raise XlingError("no sentences to embed")
    pool = get_pooling(cfg.pooling)
    need_special = cfg.pooling == "mean-nospecial"
    ids, special = tokenize(lm, sentences, cfg, need_special)
    lengths = torch.tensor([len(r) for r in ids])
    order = torch.argsort(lengths, descending=True, stable=True)
    pad = pad_id(lm.tokenizer)
    left = cfg.padding_side == "left"
    pos_ids = left and _needs_position_ids(lm.model)
    layers = list(cfg.layers)
    out: torch.Tensor | None = None
    lm.model  # noqa: B018 - load now: a model placed by --device-map says where its inputs go
    dev = lm.device
    capture: _LayerCapture | None = None
    for start in range(0, len(ids), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        T = int(lengths[idx].max())
        B = len(idx)
        input_ids = torch.full((B, T), pad, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        smask = torch.zeros((B, T), dtype=torch.long) if need_special else None
        for b, i in enumerate(idx.tolist()):
            row = ids[i]
            sl = slice(T - len(row), T) if left else slice(0, len(row))
            input_ids[b, sl] = torch.tensor(row)
            mask[b, sl] = 1
            if smask is not None:
                smask[b, sl] = torch.tensor(special[i])
        mask_d = _to_device(mask, dev)
        kwargs = {"input_ids": _to_device(input_ids, dev), "attention_mask": mask_d}
        if pos_ids:
            kwargs["position_ids"] = (torch.cumsum(mask_d, 1) - 1).clamp_min(0)
        smask_d = _to_device(smask, dev) if smask is not None else None

        def pool_one(h):
            if h.device != mask_d.device:  # a sharded model: this block lives on another device
                return pool(h[None], mask_d.to(h.device), special_mask=None if smask_d is None
                            else smask_d.to(h.device))[0].float()
            return pool(h[None], mask_d, special_mask=smask_d)[0].float()

        if capture is None:
            capture = _capture_for(lm, layers)
        pooled = None
        if capture is not None:
            pooled = capture.run(lm.model, kwargs, pool_one)
            if not capture.verified:  # first batch: check the hooks against transformers' own hidden states
                reference = _pooled_hidden_states(lm.model, kwargs, layers, pool_one)
                if capture.agrees(pooled, reference):
                    capture.verified = True
                    lm.meta["layer_capture"] = "hooks"  # checked once per loaded model
                else:
                    capture, pooled = None, reference
                    lm.meta["layer_capture"] = "hidden_states"
        if pooled is None:
            pooled = _pooled_hidden_states(lm.model, kwargs, layers, pool_one)
        if out is None:
            out = torch.empty((len(layers), len(ids), pooled[layers[0]].shape[-1]), dtype=torch.float32, device=dev)
            idx_dev = order.to(dev)
        rows = idx_dev[start : start + B]
        for li, layer in enumerate(layers):  # device-side scatter: no copy to the host, no sync
            out[li].index_copy_(0, rows, pooled[layer].to(dev, non_blocking=True))
        if progress is not None:
            progress(B)
    return out if on_device else out.cpu()


# ----------------------------------------------------------------------------- cache


def _sentences_hash(sentences: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


class EmbeddingCache(ContentCache):
    """Pooled embeddings on disk, one safetensors file per (model, config, sentences), ``<key[:2]>/<key>.safetensors``
    under ``root`` (:class:`~xling.cache.TensorCodec`: its metadata holds the tensor's sha256 and the key)."""

    VERSION = 2  # 2: whole-file model fingerprints; entries name their key

    def __init__(self, root: str | Path | None = None):
        super().__init__(root if root is not None else cache_dir("embeddings"), TensorCodec("embeddings", "float32"),
                         self.VERSION, name="embedding")

    def key(self, lm: LoadedModel, cfg: EmbedConfig, sentences: Sequence[str]) -> str:
        cfg = cfg.resolved(lm)
        return super().key({
            "model": lm.fingerprint,
            "dtype": str(lm.dtype),
            "pooling": cfg.pooling,
            "layers": list(cfg.layers),
            "max_length": cfg.max_length,
            "prefix": cfg.prefix,
            "sentences": _sentences_hash(sentences),
        })

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The cached tensor, or None when absent or not to be trusted.

        An entry is used only if its safetensors metadata holds the sha256 of the
        tensor (dtype, shape and bytes) and the tensor matches it, is float32, has
        ``shape`` (``(layers, n, dim)``; ``None`` in it matches any size) and is
        finite, and its metadata names ``key`` (an entry copied or renamed onto
        another key's path is not trusted). Anything else (flipped bytes, a wrong
        shape, NaN, another key, a folder or an unreadable file in its place) is
        discarded with a one-line note and recomputed by the caller.
        """
        return super().get(key, shape=shape)

    def _first_legacy(self) -> bool:
        global _LEGACY_NOTED
        first, _LEGACY_NOTED = not _LEGACY_NOTED, True
        return first


_LEGACY_NOTED = False  # an entry of an older xling (no key) was noted in this run


def embed_cached(
    lm: LoadedModel,
    sentences: Sequence[str],
    cfg: EmbedConfig,
    cache: EmbeddingCache | None,
    progress: Callable[[int], None] | None = None,
    *,
    refresh: bool = False,
    on_device: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Embeddings of ``sentences``, from the cache when present. Returns (tensor, was_cached).

    ``refresh=True`` (``--no-cache``) never reads the cache but writes the fresh
    result over the entry. ``on_device=True`` returns the tensor on the model's device
    (computed there; a cache entry is written from one copy to the host).
    """
    if cache is None:
        return embed_sentences(lm, sentences, cfg, progress, on_device=on_device), False
    key = cache.key(lm, cfg, sentences)
    rcfg = cfg.resolved(lm)
    dim = getattr(lm.config, "hidden_size", None)
    hit = None if refresh else cache.get(key, (len(rcfg.layers), len(sentences), dim))
    if hit is not None:
        if progress is not None:
            progress(len(sentences))
        return (hit.to(lm.device) if on_device else hit), True
    emb = embed_sentences(lm, sentences, cfg, progress, on_device=on_device)
    meta = {"model": lm.name, **{k: v for k, v in asdict(rcfg).items()}}
    if emb.device.type != "cpu" and hasattr(cache, "put_background"):
        cache.put_background(key, emb.cpu(), meta)  # one host copy; hashing and writing overlap the GPU's next work
    else:
        cache.put(key, emb.cpu(), meta)
    return emb, False
