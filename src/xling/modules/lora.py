"""LoRA modules as PEFT folders: read them lazily into per-target (A, B, scaling), write them back.

A PEFT LoRA folder holds ``adapter_config.json`` and ``adapter_model.safetensors``
with tensors ``base_model.model.<module>.lora_A.weight`` (r, in) and
``...lora_B.weight`` (out, r), or ``<module>.lora_embedding_A`` (r, num_embeddings)
and ``...lora_embedding_B`` (dim, r) for embeddings. For every target
``dW = scaling * B @ A`` with ``scaling = alpha / r`` (``alpha / sqrt(r)`` with
rsLoRA; per-target ``alpha_pattern``/``rank_pattern`` honoured). The base weight
is ``dW`` itself, or ``dW.T`` when it is stored (in, out): GPT-2's ``Conv1D``
(``fan_in_fan_out``) and embeddings. Here every dW is kept in LoRA orientation
``(out, in) = B @ A``; :attr:`LoraTarget.transposed` says how it meets the base.

Only plain LoRA is read: DoRA, LoRA biases, ``modules_to_save`` tensors and
parameter targets are refused with a clear error rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from xling.errors import XlingError
from xling.methods.compose import all_finite
from xling.modules.meta import ModuleMeta, check_weights, load_json_file, read_meta

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."

_LINEAR = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_EMBED = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<ab>[AB])$")


@dataclass(frozen=True)
class LoraTarget:
    """One adapted matrix. ``out_features, in_features``: the shape of ``B @ A``."""

    module: str
    a_key: str
    b_key: str
    rank: int
    alpha: float
    scaling: float
    out_features: int
    in_features: int
    transposed: bool
    embedding: bool

    @property
    def weight_shape(self) -> tuple[int, int]:
        """Shape of the base weight this target adapts."""
        return (self.in_features, self.out_features) if self.transposed else (self.out_features, self.in_features)

    def signature(self) -> tuple:
        return (self.out_features, self.in_features, self.transposed, self.embedding)


def _pattern_value(patterns: Mapping[str, float], module: str, default: float) -> float:
    """PEFT's rule: the first pattern key ``k`` with ``re.match(rf"(.*\\.)?({k})$", module)``."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _refuse(cfg: dict, folder: Path) -> None:
    checks = [
        (cfg.get("use_dora"), "DoRA (use_dora)"),
        (cfg.get("bias", "none") not in (None, "none"), f"bias={cfg.get('bias')}"),
        (cfg.get("lora_bias"), "lora_bias"),
        (cfg.get("target_parameters"), "target_parameters"),
        (cfg.get("layer_replication"), "layer_replication"),
        (cfg.get("use_qalora"), "QA-LoRA"),
    ]
    for bad, what in checks:
        if bad:
            raise XlingError(f"LoRA module {folder}: {what} is not supported (plain LoRA only)")


class LoraModule:
    """A PEFT LoRA folder read lazily: headers at once, tensors on demand (context manager)."""

    def __init__(self, folder: str | Path, name: str | None = None):
        self.path = Path(folder)
        if not self.path.is_dir():
            raise XlingError(f"LoRA module not found: {self.path}")
        cfg_path = self.path / CONFIG_FILE
        if not cfg_path.is_file():
            raise XlingError(f"LoRA module {self.path} has no {CONFIG_FILE}")
        wpath = self.path / WEIGHTS_FILE
        if not wpath.is_file():
            extra = " (only adapter_model.bin: xling never loads pickled weights)" \
                if (self.path / "adapter_model.bin").exists() else ""
            raise XlingError(f"LoRA module {self.path} has no {WEIGHTS_FILE}{extra}")
        self.config: dict = load_json_file(cfg_path)
        if not isinstance(self.config, dict):
            raise XlingError(f"{cfg_path}: expected a JSON object")
        if str(self.config.get("peft_type", "")).upper() != "LORA":
            raise XlingError(f"module {self.path} is a {self.config.get('peft_type')} adapter, not LoRA")
        _refuse(self.config, self.path)
        self.meta: ModuleMeta | None = read_meta(self.path)
        check_weights(self.path, self.meta)
        self.name = name or (self.meta.name if self.meta and self.meta.name else self.path.name)
        self._handle = None
        self.targets: dict[str, LoraTarget] = self._scan(wpath)

    # -- reading ----------------------------------------------------------------------

    def _open(self):
        if self._handle is None:
            from safetensors import safe_open

            try:
                self._handle = safe_open(str(self.path / WEIGHTS_FILE), framework="pt")
            except Exception as exc:
                raise XlingError(f"LoRA module {self.path}: cannot read {WEIGHTS_FILE} "
                                 f"({type(exc).__name__}: {exc})") from None
        return self._handle

    def close(self) -> None:
        self._handle = None

    def __enter__(self) -> "LoraModule":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _scan(self, wpath: Path) -> dict[str, LoraTarget]:
        h = self._open()
        parts: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
        kinds: dict[str, bool] = {}
        for key in h.keys():
            rel = key[len(PREFIX):] if key.startswith(PREFIX) else key
            m = _LINEAR.match(rel) or _EMBED.match(rel)
            if not m:
                raise XlingError(f"LoRA module {self.path}: unsupported tensor {key} "
                                 "(modules_to_save, DoRA and bias tensors are not supported)")
            module, ab = m.group("module"), m.group("ab")
            emb = m.re is _EMBED
            if kinds.setdefault(module, emb) != emb:
                raise XlingError(f"LoRA module {self.path}: {module} mixes linear and embedding factors")
            parts.setdefault(module, {})[ab] = (key, tuple(h.get_slice(key).get_shape()))
        if not parts:
            raise XlingError(f"LoRA module {self.path} holds no LoRA tensors")
        r_default = self.config.get("r")
        alpha_default = self.config.get("lora_alpha", r_default)
        rslora = bool(self.config.get("use_rslora"))
        fifo = bool(self.config.get("fan_in_fan_out"))
        targets = {}
        for module in sorted(parts):
            p = parts[module]
            if set(p) != {"A", "B"}:
                missing = "B" if "A" in p else "A"
                raise XlingError(f"LoRA module {self.path}: {module} has no lora_{missing}")
            (a_key, a_shape), (b_key, b_shape) = p["A"], p["B"]
            if len(a_shape) != 2 or len(b_shape) != 2:
                raise XlingError(f"LoRA module {self.path}: {module} factors are not matrices "
                                 f"(A {a_shape}, B {b_shape}); convolution LoRA is not supported")
            rank = a_shape[0]
            if b_shape[1] != rank:
                raise XlingError(f"LoRA module {self.path}: {module} has A of rank {rank} but B of rank {b_shape[1]}")
            want = _pattern_value(self.config.get("rank_pattern") or {}, module, r_default)
            if want is not None and int(want) != rank:
                raise XlingError(f"LoRA module {self.path}: {module} has rank {rank} but its config says r={want}")
            alpha = float(_pattern_value(self.config.get("alpha_pattern") or {}, module, alpha_default))
            scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
            emb = kinds[module]
            targets[module] = LoraTarget(
                module=module, a_key=a_key, b_key=b_key, rank=rank, alpha=alpha, scaling=scaling,
                out_features=b_shape[0], in_features=a_shape[1], transposed=emb or fifo, embedding=emb,
            )
        return targets

    def factors(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of ``module`` as float32 (float64 kept), checked finite."""
        t = self.targets[module]
        h = self._open()
        A, B = h.get_tensor(t.a_key), h.get_tensor(t.b_key)
        for name, x in (("lora_A", A), ("lora_B", B)):
            if not all_finite(x):
                raise XlingError(f"LoRA module {self.path}: {module} {name} has NaN or inf values")
        if A.dtype != torch.float64:
            A, B = A.float(), B.float()
        return A, B

    def delta(self, module: str) -> torch.Tensor:
        """Dense ``dW = scaling * B @ A`` of one target, in LoRA orientation (out, in)."""
        A, B = self.factors(module)
        return (B @ A) * self.targets[module].scaling

    def delta_norm(self) -> float:
        """``||dW||_F`` over all targets (sqrt of the summed squares), without forming any dW."""
        total = 0.0
        for name, t in self.targets.items():
            A, B = self.factors(name)
            total += float(((B.double().T @ B.double()) * (A.double() @ A.double().T)).sum()) * t.scaling ** 2
        return math.sqrt(max(total, 0.0))

    # -- facts --------------------------------------------------------------------------

    @property
    def ranks(self) -> list[int]:
        return sorted({t.rank for t in self.targets.values()})

    @property
    def num_params(self) -> int:
        return sum(t.rank * (t.in_features + t.out_features) for t in self.targets.values())

    @property
    def base_fingerprint(self) -> str | None:
        return self.meta.base_fingerprint if self.meta else None

    @property
    def base_model(self) -> str | None:
        if self.meta and self.meta.base_model:
            return self.meta.base_model
        return self.config.get("base_model_name_or_path")

    def __repr__(self) -> str:
        return f"LoraModule({self.name!r}, targets={len(self.targets)}, ranks={self.ranks})"


def read_lora(folder: str | Path, name: str | None = None) -> LoraModule:
    """Open a PEFT LoRA folder (tensors are read later, one target at a time)."""
    return LoraModule(folder, name)


def write_lora(
    folder: str | Path,
    factors: Iterable[tuple[str, torch.Tensor, torch.Tensor, bool]],
    *,
    template_config: Mapping,
    rank: int,
    base_model_name_or_path: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write a PEFT LoRA folder with scaling 1 (``lora_alpha = r``) into an existing ``folder``.

    ``factors`` yields ``(module, A, B, embedding)`` with ``A`` (rank, in) and ``B``
    (out, rank) in LoRA orientation, so that ``dW = B @ A``. The config keeps the
    template's ``fan_in_fan_out``, task type and base, and targets exactly the
    modules written (full module paths).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    modules = []
    for module, A, B, emb in factors:
        if A.shape[0] != rank or B.shape[1] != rank:
            raise XlingError(f"write_lora: {module} has rank {A.shape[0]}, expected {rank}")
        if emb:
            tensors[f"{PREFIX}{module}.lora_embedding_A"] = A.to(dtype).contiguous()
            tensors[f"{PREFIX}{module}.lora_embedding_B"] = B.to(dtype).contiguous()
        else:
            tensors[f"{PREFIX}{module}.lora_A.weight"] = A.to(dtype).contiguous()
            tensors[f"{PREFIX}{module}.lora_B.weight"] = B.to(dtype).contiguous()
        modules.append(module)
    if not modules:
        raise XlingError("write_lora: no targets to write")
    cfg = dict(template_config)
    cfg.update({
        "peft_type": "LORA", "r": int(rank), "lora_alpha": int(rank), "rank_pattern": {}, "alpha_pattern": {},
        "use_rslora": False, "use_dora": False, "target_modules": sorted(modules), "layers_to_transform": None,
        "layers_pattern": None, "modules_to_save": None, "exclude_modules": None, "inference_mode": True,
        "bias": "none", "lora_dropout": 0.0,
    })
    if base_model_name_or_path is not None:
        cfg["base_model_name_or_path"] = base_model_name_or_path
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_module(peft_model, folder: str | Path, meta: ModuleMeta, *, adapter_name: str = "default",
                extra_tensors: dict[str, dict] | None = None) -> Path:
    """Save a trained ``PeftModel`` adapter as a module folder, atomically, with ``xling_module.json``.

    ``extra_tensors``: ``{file name: {tensor name: tensor}}`` written beside it as
    safetensors (e.g. the training-only LM head transform, ``lm_head.safetensors``).
    """
    from xling.io import atomic_path
    from xling.modules.meta import write_meta

    folder = Path(folder)
    with atomic_path(folder) as tmp:
        peft_model.save_pretrained(str(tmp), selected_adapters=[adapter_name], safe_serialization=True)
        src = tmp / adapter_name if adapter_name != "default" and (tmp / adapter_name).is_dir() else tmp
        if src != tmp:
            for p in src.iterdir():
                p.rename(tmp / p.name)
            src.rmdir()
        for fname, tensors in (extra_tensors or {}).items():
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / fname))
        write_meta(tmp, meta)  # last: it records the checksums of the weights
        LoraModule(tmp)  # validate what was written
    return folder
