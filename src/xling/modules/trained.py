"""Trained task-model folders: what training writes and how it is read back.

A folder written by :func:`xling.harness.training.train_task` is a standard
transformers folder (full fine-tuning) or a PEFT adapter folder plus the task
head (``head.safetensors``, LoRA), each with ``xling_train.json`` (base model
and fingerprint, task, language, hyperparameters, dev curve, training-data
hash). A LoRA folder is a task module too: :func:`write_task_meta` gives it an
``xling_module.json`` (:mod:`xling.modules.meta`) with the checksums of its
weights, so ``xling modules`` and ``xling compose`` read it and an edited
weights file is refused.

* :func:`save_trained` writes a folder; :func:`read_train_info` reads its
  ``xling_train.json``;
* :func:`load_trained` loads it for inference (LoRA merged into the base; any
  transformers folder with a task head loads too);
* :func:`merge_adapters` merges LoRA folders into a model (exact stacking),
  used before training on top of a language module and when loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from xling.data.files import parse_json, read_text
from xling.errors import XlingError
from xling.methods.train import auto_class, build_task_model, head_modules, resolve_base
from xling.modules.meta import META_FILE, ModuleMeta, write_meta

TRAIN_FILE = "xling_train.json"
HEAD_FILE = "head.safetensors"
LM_HEAD_FILE = "lm_head.safetensors"  # a language module's training-only head transform (not part of the LoRA)


# ----------------------------------------------------------------------------- writing


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
        write_task_meta(folder, info)
    else:
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / TRAIN_FILE).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")


def write_task_meta(folder: Path, info: dict) -> None:
    """``xling_module.json`` (kind task) with the checksums of the adapter and head: ``xling modules`` and the
    loaders know the folder as a module and refuse its weights once edited. A failure to write it propagates:
    a task module never lacks its checksums."""
    meta = ModuleMeta(kind="task", base_model=info["base_model"], base_fingerprint=info["base_fingerprint"],
                      language=info["language"], task=info["task"], data_hash=info["train_data_hash"],
                      metrics={"best_dev": info["best_dev"]},
                      extra={"head": HEAD_FILE, "labels": info["labels"], "task_type": info["task_type"]})
    write_meta(folder, meta)  # records the checksums of the adapter and head written before it


# ----------------------------------------------------------------------------- reading


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
    """A trained folder's ``xling_train.json`` (None when it has none); a damaged one is one line naming it."""
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

    p = folder / META_FILE
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
    """Load a folder written by :func:`xling.harness.training.train_task` (or any transformers folder with a
    task head)."""
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
            lm = resolve_base(info["base_model"], device, dtype)
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
            model = load_checked(str(folder), auto_class(task_type), folder, tokenizer, config=config, dtype=torch_dtype)
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


# ----------------------------------------------------------------------------- stacking LoRA folders


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


__all__ = ["TRAIN_FILE", "HEAD_FILE", "LM_HEAD_FILE", "save_trained", "write_task_meta", "read_train_info",
           "TrainedModel", "load_trained", "merge_adapters"]
