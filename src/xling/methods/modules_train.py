"""Module-training maths: the language-modelling objective, its batches, and LT-SFT's top-k selection.

A language module is a LoRA (or a sparse diff) trained on the bare base model
(``AutoModel``: module names such as ``encoder.layer.0.attention.self.query``)
with a language-modelling objective on monolingual text:

- encoders: masked LM, BERT-style 80/10/10 masking (:func:`mask_tokens`; 15% of
  the tokens; special tokens and padding never masked; seeded; re-masked every
  epoch). The output head is the model's own MLM head when the checkpoint has
  it; otherwise (a bare ``BertModel`` folder such as the built-in e5-small) a
  head tied to the input embeddings, ``logits = h @ E^T``, is built rather than
  a randomly initialised transform (:func:`build_lm`). Logits are computed only
  at the masked positions (hidden states gathered first, then projected): with
  a 250k vocabulary the full ``(batch, length, vocab)`` logits would dominate
  time and memory.
- decoders: causal LM, labels = input ids shifted, padding ignored; the
  checkpoint's ``lm_head`` when present, else tied to the input embeddings.
  Logits likewise only at the positions that have a target.

The head and the base are frozen; only the module trains (:class:`LMObjective`
in :func:`xling.methods.train.fit`). :func:`streaming_topk` and
:func:`per_tensor_topk` pick the entries an LT-SFT sparse diff keeps. The
trainers that read the text and write module folders are in
:mod:`xling.harness.training`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch

from xling.errors import XlingError

OBJECTIVES = ("mlm", "clm")
_EVAL_SENTENCES = 64


# ----------------------------------------------------------------------------- text


def text_hash(sentences: Sequence[str]) -> str:
    """A short hash of the training sentences (recorded as a module's ``data_hash``)."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- masking


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, mask_id: int, random_ids: torch.Tensor,
                generator: torch.Generator, probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``probability`` of the eligible tokens; 80% -> mask, 10% -> random, 10% kept.

    ``special_mask`` (same shape, bool) marks special and padding tokens, never
    picked. ``random_ids``: the token ids random replacements are drawn from.
    Every row with an eligible token gets at least one pick. Returns
    ``(masked_ids, labels)`` with labels ``-100`` where nothing was picked.
    """
    eligible = ~special_mask.bool()
    probs = torch.rand(input_ids.shape, generator=generator)
    picked = (probs < probability) & eligible
    # rows where nothing was picked: pick their eligible token with the lowest draw
    empty = ~picked.any(dim=1) & eligible.any(dim=1)
    if empty.any():
        lowest = probs.masked_fill(~eligible, 2.0).argmin(dim=1)
        rows = empty.nonzero(as_tuple=True)[0]
        picked[rows, lowest[rows]] = True
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    out = input_ids.clone()
    out[picked & (action < 0.8)] = mask_id
    rand_pos = picked & (action >= 0.8) & (action < 0.9)
    n = int(rand_pos.sum())
    if n:
        out[rand_pos] = random_ids[torch.randint(len(random_ids), (n,), generator=generator)]
    return out, labels


# ----------------------------------------------------------------------------- the LM objective


class _TiedHead(torch.nn.Module):
    """``logits = T(h) @ E^T (+ bias)`` with ``E`` the (frozen) input embeddings.

    ``transform=True`` adds ``T``, a linear map initialised to the identity and
    trained with the module (like the dense layer of BERT's MLM head; Devlin et
    al. 2019): a model trained without an LM head (an embedding model such as
    e5) does not put its last hidden states in the embedding space, and without
    ``T`` the LoRA itself has to learn that map in the top layers, an update that
    is not about the language and that breaks any task module composed with it.
    ``T`` is saved beside the module (``lm_head.safetensors``) but is not part
    of it: composition uses the LoRA alone, as MAD-X drops its MLM head.
    """

    def __init__(self, embedding: torch.nn.Embedding, bias: torch.Tensor | None = None, transform: bool = False):
        super().__init__()
        self.embedding = [embedding]  # not a submodule: its weight belongs to the base
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.transform = None
        if transform:
            d = embedding.weight.shape[1]
            self.transform = torch.nn.Linear(d, d, dtype=embedding.weight.dtype, device=embedding.weight.device)
            with torch.no_grad():
                self.transform.weight.copy_(torch.eye(d))
                self.transform.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            h = self.transform(h)
        logits = h @ self.embedding[0].weight.T
        return logits if self.bias is None else logits + self.bias


class LMObjective(torch.nn.Module):
    """A base model (with LoRA) + a frozen LM head; ``forward(**batch).loss`` for :func:`fit`.

    ``objective="mlm"``: ``labels`` are -100 except at masked positions.
    ``objective="clm"``: ``labels`` are the input ids (-100 at padding); position
    ``t`` predicts ``labels[t + 1]``. Either way only the positions with a target
    are projected to the vocabulary.
    """

    def __init__(self, base: torch.nn.Module, head: torch.nn.Module, objective: str):
        super().__init__()
        if objective not in OBJECTIVES:
            raise XlingError(f"unknown objective {objective!r} (use mlm or clm)")
        self.base = base
        self.head = head
        self.objective = objective
        for p in head.parameters():
            p.requires_grad_(False)
        if getattr(head, "transform", None) is not None:  # a training-only head transform learns with the LoRA
            for p in head.transform.parameters():
                p.requires_grad_(True)

    def hidden(self, **batch) -> torch.Tensor:
        out = self.base(**batch)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    def forward(self, input_ids, attention_mask=None, labels=None, **kw):
        h = self.hidden(input_ids=input_ids, attention_mask=attention_mask, **kw)
        if labels is None:
            return SimpleNamespace(loss=None, hidden_states=h)
        if self.objective == "clm":
            h, labels = h[:, :-1], labels[:, 1:]
        sel = labels != -100
        if not sel.any():
            return SimpleNamespace(loss=h.sum() * 0.0)
        logits = self.head(h[sel])  # (n_targets, vocab): never the full (batch, length, vocab)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[sel])
        return SimpleNamespace(loss=loss)


def _head_from(full: torch.nn.Module, base: torch.nn.Module) -> torch.nn.Module:
    """The position-wise head of a ``*ForMaskedLM`` / ``*ForCausalLM`` model: its children besides the base."""
    prefix = full.base_model_prefix
    heads = [m for n, m in full.named_children() if n != prefix and any(True for _ in m.parameters())]
    if len(heads) != 1:
        raise XlingError(f"{type(full).__name__}: cannot find its LM head")
    return heads[0]


def build_lm(folder: Path, is_decoder: bool, dtype: torch.dtype = torch.float32, head_transform: bool = False):
    """``(base, head, objective, head_kind)`` for the model in ``folder``.

    The head is the checkpoint's own when all its weights are there; otherwise
    a head tied to the input embeddings, with (``head_transform``, encoders) a
    trainable identity-initialised transform in front (``tied+transform``).
    """
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    auto = transformers.AutoModelForCausalLM if is_decoder else transformers.AutoModelForMaskedLM
    objective = "clm" if is_decoder else "mlm"
    from xling.models.checkpoint import load_checked

    def lm_head(m):  # the LM head may be absent (then tied below); the base network's tensors may not
        return {n for n, _ in m.named_children() if n != m.base_model_prefix}

    try:
        full, info = load_checked(str(folder), auto, folder, new_parts=lm_head, with_info=True, dtype=dtype)
    except ValueError:
        full, info = None, None
    if full is not None:
        base = getattr(full, full.base_model_prefix)
        head = _head_from(full, base)
        prefix = full.base_model_prefix + "."
        missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix)]
        missing += [item[0] for item in info.get("mismatched_keys") or () if isinstance(item, (tuple, list))]
        emb = base.get_input_embeddings()
        out_emb = full.get_output_embeddings()
        tied = out_emb is not None and out_emb.weight is emb.weight
        missing = [k for k in missing if not (tied and k.endswith("decoder.weight") or tied and k == "lm_head.weight")]
        if not missing:
            return base, head, objective, "checkpoint"
        bias_only = all(k.endswith("bias") for k in missing)
        if is_decoder and all(k.endswith("lm_head.weight") or k.endswith("bias") for k in missing):
            return base, _TiedHead(emb), objective, "tied"
        if bias_only:
            with torch.no_grad():
                for name, p in full.named_parameters():
                    if name in missing:
                        p.zero_()
            return base, head, objective, "checkpoint"
        return base, _TiedHead(emb, transform=head_transform), objective, _tied_kind(head_transform)
    base = load_checked(str(folder), transformers.AutoModel, folder, dtype=dtype)
    return base, _TiedHead(base.get_input_embeddings(), transform=head_transform), objective, _tied_kind(head_transform)


def _tied_kind(transform: bool) -> str:
    return "tied+transform" if transform else "tied"


# ----------------------------------------------------------------------------- batches


class _Encoder:
    """Tokenised sentences -> batches with labels for the objective (seeded, re-masked per epoch)."""

    def __init__(self, tokenizer, sentences, objective, max_length, batch_size, mlm_probability, seed, vocab_rows):
        self.objective = objective
        self.batch_size = batch_size
        self.prob = mlm_probability
        self.seed = seed
        self.pad = tokenizer.pad_token_id
        from xling.textsafe import cap_texts, note_capped

        sentences, n_capped = cap_texts(list(sentences), max_length)  # bounded tokenizer work, same ids
        note_capped(n_capped, max_length)
        enc = tokenizer(sentences, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                        add_special_tokens=True)
        self.ids = enc["input_ids"]
        self.special = enc["special_tokens_mask"]
        self.token_types = "token_type_ids" in enc
        keep = [i for i, ids in enumerate(self.ids) if len(ids) >= (2 if objective == "clm" else 1)]
        self.ids = [self.ids[i] for i in keep]
        self.special = [self.special[i] for i in keep]
        if not self.ids:
            raise XlingError("no sentence has enough tokens to train on")
        specials = set(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
        if objective == "mlm" and self.mask_id is None:
            raise XlingError("the tokenizer has neither a mask nor an unknown token for masked LM")
        n = min(len(tokenizer), vocab_rows)
        self.random_ids = torch.tensor([i for i in range(n) if i not in specials] or [self.mask_id])

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, idx: Sequence[int], generator: torch.Generator) -> dict:
        width = max(len(self.ids[i]) for i in idx)
        ids = torch.full((len(idx), width), self.pad, dtype=torch.long)
        special = torch.ones((len(idx), width), dtype=torch.bool)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(self.ids[i])
            ids[r, :n] = torch.tensor(self.ids[i])
            special[r, :n] = torch.tensor(self.special[i], dtype=torch.bool)
            att[r, :n] = 1
        if self.objective == "mlm":
            inputs, labels = mask_tokens(ids, special, self.mask_id, self.random_ids, generator, self.prob)
        else:
            inputs, labels = ids, ids.masked_fill(att == 0, -100)
        batch = {"input_ids": inputs, "attention_mask": att, "labels": labels}
        if self.token_types:
            batch["token_type_ids"] = torch.zeros_like(ids)
        return batch

    def batches(self, epoch: int, steps: int | None = None):
        """One epoch (or ``steps`` batches, cycling through reshuffled passes), seeded by ``seed`` and ``epoch``.

        Batches are length-bucketed (:func:`xling.tasks.encode.bucketed`: shuffle,
        sort within buckets of 50 batches, shuffle the batches), so little of a batch
        is padding: on LibreOffice help text about half the tokens of random
        batches were padding.
        """
        from xling.tasks.encode import bucketed

        gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        lengths = [len(x) for x in self.ids]
        n_batches = steps if steps is not None else math.ceil(len(self.ids) / self.batch_size)
        out: list[dict] = []
        passes = 0
        while len(out) < n_batches:
            for idx in bucketed(lengths, self.batch_size, seed=(self.seed * 1000 + epoch) * 1000 + passes):
                if len(out) >= n_batches:
                    break
                out.append(self.collate(idx, gen))
            passes += 1
        return out

    def fixed(self, n: int) -> list[dict]:
        """A fixed evaluation set (first ``n`` sentences, fixed masks)."""
        gen = torch.Generator().manual_seed(12345)
        idx = list(range(min(n, len(self.ids))))
        return [self.collate(idx[i:i + self.batch_size], gen) for i in range(0, len(idx), self.batch_size)]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: Sequence[dict]) -> float:
    """Target-weighted mean loss over ``batches`` in eval mode."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for b in batches:
        labels = b["labels"][:, 1:] if getattr(model, "objective", "mlm") == "clm" else b["labels"]
        n = int((labels != -100).sum())
        if not n:
            continue
        total += float(model(**{k: v.to(device) for k, v in b.items()}).loss) * n
        count += n
    model.train(was)
    return total / max(1, count)


# ----------------------------------------------------------------------------- LT-SFT (sparse modules)


def streaming_topk(tensors, k: int) -> dict[str, torch.Tensor]:
    """Global top-``k`` of ``|t|`` over named tensors, streamed: ``{name: flat indices}``.

    ``tensors`` yields ``(name, tensor)``; each is reduced to its own top-k with
    :func:`torch.topk` and merged into a running top-k (at most ``2k`` values
    held), so nothing proportional to the total parameter count is kept.
    """
    if k < 1:
        raise XlingError(f"k must be at least 1, got {k}")
    names: list[str] = []
    run_v = torch.empty(0)
    run_t = torch.empty(0, dtype=torch.long)  # tensor number
    run_i = torch.empty(0, dtype=torch.long)  # flat index in it
    for name, t in tensors:
        flat = t.detach().reshape(-1).abs().float().cpu()
        v, i = torch.topk(flat, min(k, flat.numel()))
        names.append(name)
        cand_v = torch.cat([run_v, v])
        cand_t = torch.cat([run_t, torch.full_like(i, len(names) - 1)])
        cand_i = torch.cat([run_i, i])
        keep = torch.topk(cand_v, min(k, cand_v.numel())).indices
        run_v, run_t, run_i = cand_v[keep], cand_t[keep], cand_i[keep]
    out = {}
    for n, name in enumerate(names):
        sel = run_i[run_t == n]
        if sel.numel():
            out[name] = torch.sort(sel).values
    return out


def per_tensor_budget(sizes: dict[str, int], k: int) -> dict[str, int]:
    """Split ``k`` entries over tensors in proportion to their sizes (largest remainders; sums to ``k``)."""
    total = sum(sizes.values())
    if k < 1:
        raise XlingError(f"k must be at least 1, got {k}")
    k = min(k, total)
    exact = {n: k * v / total for n, v in sizes.items()}
    out = {n: int(x) for n, x in exact.items()}
    left = k - sum(out.values())
    for n in sorted(exact, key=lambda n: (-(exact[n] - out[n]), n))[:left]:
        out[n] += 1
    return out


def per_tensor_topk(tensors, budget: dict[str, int]) -> dict[str, torch.Tensor]:
    """Top-``budget[name]`` of ``|t|`` within each tensor: ``{name: sorted flat indices}``."""
    out = {}
    for name, t in tensors:
        n = budget.get(name, 0)
        if n > 0:
            idx = torch.topk(t.detach().reshape(-1).abs().float().cpu(), n).indices
            out[name] = torch.sort(idx).values
    return out


def _sft_params(base: torch.nn.Module, embeddings: bool) -> dict[str, torch.nn.Parameter]:
    from xling.models.layers import find_blocks, num_layers

    blocks = find_blocks(base, num_layers(base.config))
    emb = {id(p) for p in base.get_input_embeddings().parameters()}
    return {n: p for n, p in base.named_parameters()
            if n.startswith(blocks.path + ".") or (embeddings and id(p) in emb)}


__all__ = ["OBJECTIVES", "mask_tokens", "LMObjective", "build_lm", "mean_loss", "text_hash", "streaming_topk",
           "per_tensor_topk", "per_tensor_budget"]
