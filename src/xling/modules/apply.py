"""Compose LoRA modules (into a merged model folder or a re-factorised LoRA) and merge full models.

LoRA composition works one target matrix at a time: for each target it reads the
factors of every module, forms that target's dW (for linear methods with a
single ``B_cat @ A_cat`` product), composes, and either adds it to the matching
base weight (read tensor by tensor from the base's safetensors and written shard
by shard) or re-factorises it by truncated SVD. At no time is more than one
target's dense dW (per input module) in memory.

Full-model merges (task arithmetic, TIES, DARE, layer swapping on fully
fine-tuned checkpoints) stream every tensor of the base and of each model from
safetensors and write shard by shard.

Every output is written through :func:`xling.io.atomic_path`: a failure leaves
nothing behind, and an existing output is replaced only once the new one is whole.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from xling.errors import XlingError
from xling.io import atomic_path
from xling.methods.compose import (
    COMPOSERS,
    SVD_METHODS,
    TensorContext,
    block_index,
    coefficients,
    compose,
    lora_factorwise,
    refactorize,
    refactorize_factored,
    validate,
)
from xling.modules.lora import LoraModule, LoraTarget, write_lora
from xling.modules.meta import ModuleMeta, base_fingerprint, write_meta
from xling.modules.sparse import SparseModule, is_sparse_module, param_key
from xling.modules.weights import (
    ModelWeights,
    ShardWriter,
    block_path_of,
    copy_model_files,
    infer_block_path,
    resolve_model_folder,
)

FACTORWISE = "lora_factorwise"
MERGE_FILE = "xling_merge.json"
DEFAULT_SHARD = 2 << 30


def methods() -> list[str]:
    """Every composition method name, the factor-wise approximation included."""
    return sorted(COMPOSERS) + [FACTORWISE]


@dataclass
class ComposeOutcome:
    """What a composition wrote. ``rel_errors``: per-target relative Frobenius error of a re-factorised LoRA."""

    out: Path
    output: str
    method: str
    inputs: list[str]
    targets: int
    tensors_changed: int = 0
    rel_errors: dict[str, float] = field(default_factory=dict)
    overall_error: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Checks shared by the LoRA paths
# --------------------------------------------------------------------------------------


def _open_module(m) -> LoraModule | SparseModule:
    if isinstance(m, (LoraModule, SparseModule)):
        return m
    p = Path(m)
    if is_sparse_module(p) and not (p / "adapter_config.json").is_file():
        return SparseModule(p)
    return LoraModule(p)


def _load(modules: Sequence[LoraModule | SparseModule | str | Path], *, sparse_ok: bool = False) -> list:
    out = [_open_module(m) for m in modules]
    if not out:
        raise XlingError("no modules to compose")
    sparse = [m for m in out if isinstance(m, SparseModule)]
    if sparse and not sparse_ok:
        raise XlingError(f"{sparse[0].name} is a sparse (LT-SFT) module: sparse modules compose into a merged "
                         "model (--as merged --base MODEL), not into a LoRA")
    _align_names([m for m in out if isinstance(m, LoraModule)])
    return out


def _match_targets(targets: dict[str, LoraTarget], keys: set[str], shape_of, where: str) -> dict[str, str]:
    """``weight key -> LoRA target`` for every target, checked: present, one target per weight, same shape."""
    key_of: dict[str, str] = {}
    for name, t in targets.items():
        k = _base_key(name, keys)
        if k is None:
            raise XlingError(f"LoRA target {name} has no weight in {where} (is it the right base?)")
        if k in key_of:
            raise XlingError(f"LoRA targets {key_of[k]} and {name} adapt the same weight {k}")
        if shape_of(k) != t.weight_shape:
            raise XlingError(f"LoRA target {name} expects a {t.weight_shape} weight but {k} in {where} is "
                             f"{shape_of(k)} (different base or wrong fan_in_fan_out)")
        key_of[k] = name
    return key_of


def _sparse_plan(mods: list, method: str, keys: set[str], shapes) -> dict[str, list[tuple[int, str]]]:
    """``weight key -> [(module index, parameter name)]`` for the sparse modules among ``mods``."""
    sparse = [(i, m) for i, m in enumerate(mods) if isinstance(m, SparseModule)]
    if not sparse:
        return {}
    spec = COMPOSERS.get(method, None)
    if spec is None or not spec.linear:
        raise XlingError(f"sparse (LT-SFT) modules compose by addition: use a linear method "
                         f"({', '.join(sorted(n for n, c in COMPOSERS.items() if c.linear))}), not {method}")
    plan: dict[str, list[tuple[int, str]]] = {}
    for i, m in sparse:
        for name, count in m.tensors.items():
            k = param_key(name, keys)
            if k is None:
                raise XlingError(f"sparse module {m.name}: parameter {name} is not in the base (another base?)")
            numel = math.prod(shapes(k))
            if count > numel:
                raise XlingError(f"sparse module {m.name}: {count} entries for {name}, which has {numel}")
            plan.setdefault(k, []).append((i, name))
    return plan


def _add_sparse(w: torch.Tensor, key: str, plan, mods, tc: "_TargetComposer") -> torch.Tensor:
    """``w + sum_i c_i diff_i`` over the sparse modules touching ``key`` (float32, cast back)."""
    entries = plan.get(key)
    if not entries:
        return w
    coefs = tc._coefs(key)
    flat = w.float().reshape(-1).clone()
    for i, name in entries:
        if coefs[i] == 0.0:
            continue
        idx, val = mods[i].entries(name, flat.numel())
        flat.index_add_(0, idx, (val * coefs[i]).float())
    return flat.view(w.shape).to(w.dtype)


def _align_names(mods: list[LoraModule]) -> None:
    """Name targets alike across modules trained on a bare base and on a task model around it.

    A language module trained on ``BertModel`` adapts ``encoder.layer.0...``; a task
    module trained on ``BertForSequenceClassification`` adapts
    ``bert.encoder.layer.0...``. When modules disagree that way, a module whose
    targets all start with one extra component (``bert.``) that the others lack is
    re-keyed without it (the tensors and their keys in the file are unchanged).
    """
    if len(mods) < 2:
        return
    firsts = [{n.split(".", 1)[0] for n in m.targets} for m in mods]
    for m, f in zip(mods, firsts):
        if len(f) != 1:
            continue
        (p,) = f
        others = [o for o in mods if o is not m]
        if any(n.startswith(p + ".") for o in others for n in o.targets):
            continue  # the others share the prefix: nothing to align
        stripped = {n.split(".", 1)[1]: t for n, t in m.targets.items() if "." in n}
        if len(stripped) != len(m.targets):
            continue
        if any(set(stripped) & set(o.targets) for o in others):
            m.targets = dict(sorted(stripped.items()))


def _check_same_base(mods: list[LoraModule], base_folder: Path | None = None) -> tuple[str | None, str | None]:
    """All modules that declare a base fingerprint declare the same one; returns (fingerprint, base name).

    With ``base_folder`` (the base they are applied to), modules that disagree are each checked against
    it instead (:func:`_check_base_matches`): a module written by an older xling records the legacy
    fingerprint of the same base that a newer one records in full."""
    fp, who, name = None, None, None
    for m in mods:
        if m.base_fingerprint is None:
            continue
        if fp is None:
            fp, who, name = m.base_fingerprint, m.name, m.base_model
        elif m.base_fingerprint != fp:
            if base_folder is not None:
                return _check_base_matches(mods, base_folder, str(name or base_folder)), name
            raise XlingError(f"modules {who} and {m.name} were trained on different bases "
                             f"({name or '?'} {fp} vs {m.base_model or '?'} {m.base_fingerprint}); if one was "
                             f"written by an older xling (a legacy fingerprint), pass --base to check each against it")
    if name is None:
        name = next((m.base_model for m in mods if m.base_model), None)
    return fp, name


def _check_base_matches(mods: list[LoraModule], folder: Path, base_name: str) -> str:
    from xling.models.fingerprint import recorded_base_matches

    fp = base_fingerprint(folder)
    for m in mods:
        if not recorded_base_matches(m.base_fingerprint, folder, fp, f"module {m.name}"):
            raise XlingError(f"module {m.name} was trained on {m.base_model or 'another base'} "
                             f"(fingerprint {m.base_fingerprint}), not on {base_name} (fingerprint {fp}); "
                             "refusing to apply it to another base")
    return fp


def _target_union(mods: list[LoraModule], allow_missing: bool) -> dict[str, LoraTarget]:
    union: dict[str, LoraTarget] = {}
    owner: dict[str, str] = {}
    for m in mods:
        for name, t in m.targets.items():
            ref = union.setdefault(name, t)
            owner.setdefault(name, m.name)
            if ref.signature() != t.signature():
                raise XlingError(f"modules disagree on target {name}: {owner[name]} has dW "
                                 f"{ref.out_features}x{ref.in_features}, {m.name} has "
                                 f"{t.out_features}x{t.in_features} (are they for the same base?)")
    if not allow_missing:
        for m in mods:
            if isinstance(m, SparseModule):
                continue
            missing = sorted(set(union) - set(m.targets))
            if missing:
                raise XlingError(f"module {m.name} has no LoRA on {missing[0]} (and {len(missing) - 1} more) "
                                 "that other modules adapt; pass allow_missing_targets to treat it as dW = 0")
    return dict(sorted(union.items()))


@dataclass
class _Layers:
    path: str | None
    num_layers: int | None

    def ctx(self, name: str) -> TensorContext:
        layer = block_index(name, self.path) if self.path else None
        return TensorContext(name=name, layer=layer, num_layers=self.num_layers)


def _layers_for(method: str, base_folder: Path | None, names: list[str], num_layers: int | None) -> _Layers:
    spec = COMPOSERS.get(method, None)
    if spec is None or not spec.needs_layer:
        return _Layers(None, None)
    if base_folder is not None:
        path, n = block_path_of(base_folder)
        return _Layers(path, n)
    if num_layers is None:
        raise XlingError(f"{method} on LoRA modules needs the base model (--base) or num_layers to know "
                         "which layers are the bottom and top ones")
    path = infer_block_path(names)
    if path is None:
        raise XlingError(f"{method}: cannot tell the transformer layers from the target names")
    return _Layers(path, int(num_layers))


def _validate_method(method: str, options: Mapping[str, Any] | None, weights, n: int) -> dict[str, Any]:
    if method == FACTORWISE:
        if options:
            raise XlingError(f"{FACTORWISE} takes no options")
        if weights is not None and len(weights) != n:
            raise XlingError(f"{FACTORWISE}: {len(weights)} weights for {n} modules")
        if weights is not None and not all(math.isfinite(float(w)) for w in weights):
            raise XlingError(f"{FACTORWISE}: weights must be finite, got {list(weights)}")
        return {}
    return validate(method, n, weights, options)


# --------------------------------------------------------------------------------------
# One target's composition
# --------------------------------------------------------------------------------------


class _TargetComposer:
    """Composes one target at a time; yields dense dW or (for LoRA output) factors."""

    def __init__(self, mods: list[LoraModule], method: str, weights, opts: dict, layers: _Layers,
                 svd: str = "exact"):
        self.mods, self.method, self.weights, self.opts, self.layers = mods, method, weights, opts, layers
        self.spec = COMPOSERS.get(method, None)
        self.svd = svd

    def _present(self, name: str):
        return [(i, m) for i, m in enumerate(self.mods) if name in m.targets]

    def _coefs(self, name: str) -> list[float]:
        w = None if self.weights is None else list(self.weights)
        return coefficients(self.method, w, len(self.mods), self.layers.ctx(name), **self.opts)

    def dense(self, name: str, t: LoraTarget) -> torch.Tensor:
        """dW of target ``name`` in LoRA orientation (out, in)."""
        if self.method == FACTORWISE:
            A, B = self._factorwise(name)
            return B @ A
        present = self._present(name)
        if self.spec.linear:
            coefs = self._coefs(name)
            Bs, As = [], []
            for i, m in present:
                if coefs[i] == 0.0:
                    continue
                A, B = m.factors(name)
                Bs.append(B * (coefs[i] * m.targets[name].scaling))
                As.append(A)
            if not Bs:
                return torch.zeros(t.out_features, t.in_features)
            return torch.cat(Bs, 1) @ torch.cat(As, 0)
        deltas = []
        got = dict(present)
        for i, m in enumerate(self.mods):
            deltas.append(m.delta(name) if i in got else torch.zeros(t.out_features, t.in_features))
        w = None if self.weights is None else list(self.weights)
        return compose(self.method, deltas, w, self.layers.ctx(name), **self.opts)

    def _factorwise(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        present = self._present(name)
        w = [1.0] * len(self.mods) if self.weights is None else [float(x) for x in self.weights]
        As, Bs, ws, ss = [], [], [], []
        for i, m in present:
            A, B = m.factors(name)
            As.append(A), Bs.append(B), ws.append(w[i]), ss.append(m.targets[name].scaling)
        return lora_factorwise(As, Bs, ws, ss)

    def factors(self, name: str, t: LoraTarget, rank: int | None) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """(A, B, rel_error, ||dW||_F) of the composed target at ``rank`` (scaling 1)."""
        if self.method == FACTORWISE and rank is None:
            A, B = self._factorwise(name)
            return A, B, 0.0, math.sqrt(_frob2(B, A))
        if rank is None:
            raise ValueError("rank needed")
        if self.method != FACTORWISE and self.spec.linear:
            coefs = self._coefs(name)
            pairs, cs = [], []
            for i, m in self._present(name):
                A, B = m.factors(name)
                pairs.append((B, A))
                cs.append(coefs[i] * m.targets[name].scaling)
            if not pairs:
                return (torch.zeros(rank, t.in_features), torch.zeros(t.out_features, rank), 0.0, 0.0)
            r = refactorize_factored(pairs, cs, rank, name=name)
        else:
            r = refactorize(self.dense(name, t), rank, name=name, svd=self.svd)
        return r.A, r.B, r.rel_error, r.norm


# --------------------------------------------------------------------------------------
# LoRA -> LoRA
# --------------------------------------------------------------------------------------


def _recipe(method, mods, weights, opts, **extra) -> dict[str, Any]:
    return {
        "method": method,
        "inputs": [{"name": m.name, "path": str(m.path),
                    "kind": m.meta.kind if m.meta else None,
                    "language": m.meta.language if m.meta else None,
                    "task": m.meta.task if m.meta else None} for m in mods],
        "weights": None if weights is None else [float(w) for w in weights],
        "options": opts,
        **extra,
    }


def compose_to_lora(
    modules: Sequence[LoraModule | str | Path],
    method: str = "add",
    weights: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    out: str | Path,
    rank: int | None = None,
    base: str | Path | None = None,
    num_layers: int | None = None,
    allow_missing_targets: bool = False,
    meta: ModuleMeta | None = None,
    svd: str = "exact",
) -> ComposeOutcome:
    """Compose LoRA modules into a new LoRA module folder (PEFT format + ``xling_module.json``).

    Every target's composed dW is re-factorised by truncated SVD to ``rank``; the
    relative Frobenius error is reported per target and overall
    (``sqrt(sum residual^2 / sum ||dW||^2)``). Default rank: for linear methods
    (add, genknowsub, stack, layer_swap) the sum of the input ranks, which holds
    the composed dW exactly (error 0); for the others (ties, dare, ...) the largest
    input rank. When exactly one input is a task module with a head (written by
    ``train-module --kind task``), its head, tokenizer and training record are
    carried over, so ``xling eval --model OUT`` evaluates the composition; the
    language modules the task module was trained on are *not* applied unless they
    are inputs (the composition says which modules are active). Linear methods
    (add, genknowsub, stack, layer_swap) never form the dense dW. With
    ``method="lora_factorwise"`` and no rank the factors are combined directly (an
    approximation, see :func:`xling.methods.compose.lora_factorwise`).
    ``base`` is optional: when given, every module's fingerprint must match it.
    ``svd="lowrank"`` uses a seeded randomised SVD for the methods that need a dense
    dW (ties, dare, ...): much faster on large matrices, error still reported exactly.
    """
    t0 = time.perf_counter()
    mods = _load(modules)
    opts = _validate_method(method, options, weights, len(mods))
    base_folder = resolve_model_folder(base) if base is not None else None
    fp, base_name = _check_same_base(mods, base_folder)
    if base is not None:
        fp = _check_base_matches(mods, base_folder, str(base))
        base_name = str(base)
    targets = _target_union(mods, allow_missing_targets)
    if method == FACTORWISE:
        ranks = {t.rank for m in mods for t in m.targets.values()}
        if len(ranks) != 1:
            raise XlingError(f"{FACTORWISE} needs modules of one rank, got ranks {sorted(ranks)}")
    if rank is None and method != FACTORWISE:
        if COMPOSERS[method].linear:
            rank = sum(max(t.rank for t in m.targets.values()) for m in mods)
            rank = min([rank] + [min(t.out_features, t.in_features) for t in targets.values()])
        else:
            rank = max(t.rank for m in mods for t in m.targets.values())
    if rank is not None:
        for name, t in targets.items():
            if not 1 <= rank <= min(t.out_features, t.in_features):
                raise XlingError(f"rank {rank} does not fit target {name} ({t.out_features}x{t.in_features})")
    layers = _layers_for(method, base_folder, list(targets), num_layers)
    if svd not in SVD_METHODS:
        raise XlingError(f"svd must be one of {', '.join(SVD_METHODS)}, got {svd!r}")
    tc = _TargetComposer(mods, method, weights, opts, layers, svd)
    out = Path(out)
    _refuse_overwriting_inputs(out, [m.path for m in mods])
    errors: dict[str, float] = {}
    sq_resid = sq_total = 0.0
    written = []
    for name, t in targets.items():
        A, B, err, norm = tc.factors(name, t, rank)
        written.append((name, A, B, t.embedding))
        errors[name] = float(err)
        sq_total += norm * norm
        sq_resid += (err * norm) ** 2
    overall = math.sqrt(sq_resid / sq_total) if sq_total > 0 else 0.0
    final_rank = rank if rank is not None else next(iter(targets.values())).rank
    notes = []
    if method == FACTORWISE:
        notes.append("lora_factorwise combines A and B separately: an approximation, not dW arithmetic")
    recipe = _recipe(method, mods, weights, opts, rank=final_rank, svd=svd, overall_rel_error=overall,
                     rel_errors=errors)
    meta = meta or ModuleMeta(kind="composed")
    meta.composition = {**(meta.composition or {}), **recipe}
    meta.base_model = meta.base_model or base_name
    meta.base_fingerprint = meta.base_fingerprint or fp
    if meta.name is None:
        meta.name = out.name
    template = dict(mods[0].config)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_lora(tmp, written, template_config=template, rank=final_rank,
                   base_model_name_or_path=base_name if base_name else template.get("base_model_name_or_path"))
        notes += _carry_task_head(mods, tmp, recipe)
        write_meta(tmp, meta)  # last: it records the checksums of the weights
    for m in mods:
        m.close()
    return ComposeOutcome(out=out, output="lora", method=method, inputs=[m.name for m in mods],
                          targets=len(targets), rel_errors=errors, overall_error=overall,
                          seconds=time.perf_counter() - t0, notes=notes)


def _carry_task_head(mods: list[LoraModule], folder: Path, recipe: dict, merged: bool = False) -> list[str]:
    """Copy the head of the one task module among ``mods`` into ``folder``; returns notes.

    ``merged``: ``folder`` is a merged model folder (base + dW); its training record
    says ``method: merged`` and :func:`xling.modules.trained.load_trained` builds the
    task model on the folder itself.
    """
    import shutil

    from xling.modules.trained import HEAD_FILE, TRAIN_FILE

    heads = [m for m in mods if isinstance(m, LoraModule) and (m.path / HEAD_FILE).is_file()
             and (m.path / TRAIN_FILE).is_file()]
    if not heads:
        return []
    if len(heads) > 1:
        return [f"{len(heads)} inputs carry a task head ({', '.join(m.name for m in heads)}): the output has none "
                "(which head would it be?); evaluate it by merging into a model instead"]
    src = heads[0]
    info = json.loads((src.path / TRAIN_FILE).read_text(encoding="utf-8"))
    notes = []
    stacked = info.get("adapters_merged") or []
    if stacked:
        inputs = {str(m.path.resolve()) for m in mods}
        dropped = [a for a in stacked if str(Path(a).resolve()) not in inputs]
        if dropped:
            notes.append(f"task module {src.name} was trained on top of {', '.join(dropped)}; only the listed "
                         "inputs are applied (add it as an input to keep it)")
    info["adapters_merged"] = []
    if merged:
        info["method"] = "merged"
        info.pop("base_path", None)
    info["composed"] = {"method": recipe["method"], "inputs": recipe["inputs"], "weights": recipe["weights"],
                        "options": recipe["options"], "head_from": src.name}
    shutil.copy2(src.path / HEAD_FILE, folder / HEAD_FILE)
    if not merged:  # a merged folder has the base's tokenizer already
        for f in src.path.iterdir():
            if f.is_file() and f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "sentencepiece")):
                shutil.copy2(f, folder / f.name)
    (folder / TRAIN_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return notes + [f"carries the task head of {src.name} ({info.get('task')}): evaluate it with "
                    "xling eval --model OUT"]


def compose_into(
    model: torch.nn.Module,
    modules: Sequence[LoraModule | str | Path],
    method: str = "add",
    weights: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    allow_missing_targets: bool = False,
    num_layers: int | None = None,
) -> int:
    """Add the composed dW of LoRA modules to an in-memory model's weights, exactly; returns tensors changed.

    The same composition as :func:`compose_to_merged` (one target's dense dW at a
    time, float32 arithmetic, cast back to the weight's dtype), for a model already
    in memory: a bare base (``BertModel``) or a task model around it
    (``bert.encoder...``). ``num_layers`` defaults to the model config's (for
    ``layer_swap``). Every target is checked before any weight changes.
    """
    from xling.models.layers import num_layers as config_layers

    mods = _load(modules, sparse_ok=True)
    opts = _validate_method(method, options, weights, len(mods))
    loaded_from = Path(str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")).expanduser()
    _check_same_base(mods, loaded_from if (loaded_from / "config.json").is_file() else None)
    targets = _target_union(mods, allow_missing_targets)
    params = dict(model.named_parameters())
    keys = set(params)
    seen = _match_targets(targets, keys, lambda k: tuple(params[k].shape), "this model")
    plan = [(name, params[k]) for k, name in seen.items()]
    if num_layers is None and COMPOSERS.get(method, None) is not None and COMPOSERS[method].needs_layer:
        num_layers = config_layers(model.config)
    sparse_plan = _sparse_plan(mods, method, keys, lambda k: tuple(params[k].shape))
    if sparse_plan and not targets:
        layers = _layers_for(method, None, list(sparse_plan), num_layers)
    else:
        layers = _layers_for(method, None, list(targets), num_layers)
    tc = _TargetComposer(mods, method, weights, opts, layers)
    with torch.no_grad():
        for name, p in plan:
            dW = tc.dense(name, targets[name])
            if targets[name].transposed:
                dW = dW.T
            p.copy_((p.float() + dW.to(p.device)).to(p.dtype))
        for k in sparse_plan:
            p = params[k]
            p.copy_(_add_sparse(p.detach().cpu(), k, sparse_plan, mods, tc).to(p.device))
    for m in mods:
        m.close()
    return len(set(seen) | set(sparse_plan))


def _frob2(B: torch.Tensor, A: torch.Tensor) -> float:
    """||B A||_F^2 without forming B A: trace((B^T B)(A A^T))."""
    return float(((B.double().T @ B.double()) * (A.double() @ A.double().T)).sum())


def _refuse_overwriting_inputs(out: Path, inputs: Sequence[Path]) -> None:
    o = out.resolve()
    for p in inputs:
        if Path(p).resolve() == o:
            raise XlingError(f"output {out} is one of the inputs; choose another folder")


# --------------------------------------------------------------------------------------
# LoRA -> merged model folder
# --------------------------------------------------------------------------------------


def _base_key(module: str, keys: set[str]) -> str | None:
    """The base weight adapted by LoRA target ``module`` (peft names vs checkpoint names)."""
    key = module + ".weight"
    if key in keys:
        return key
    suffix = [k for k in keys if k.endswith("." + key)]  # base saved with a prefix (bert., model.)
    if len(suffix) == 1:
        return suffix[0]
    if len(suffix) > 1:
        raise XlingError(f"LoRA target {module} matches several base weights ({', '.join(sorted(suffix)[:3])})")
    parts = module.split(".")
    for i in range(1, len(parts)):  # LoRA made on a task model (bert.encoder...), base saved bare
        k = ".".join(parts[i:]) + ".weight"
        if k in keys:
            return k
    return None


def compose_to_merged(
    modules: Sequence[LoraModule | str | Path],
    method: str = "add",
    weights: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    base: str | Path,
    out: str | Path,
    allow_missing_targets: bool = False,
    num_layers: int | None = None,
    max_shard_bytes: int = DEFAULT_SHARD,
) -> ComposeOutcome:
    """Add the composed dW of LoRA modules to a base model; write a transformers folder.

    Base tensors are streamed one by one from the base's safetensors; each adapted
    weight gets its target's dW (transposed for ``fan_in_fan_out``/embeddings),
    computed in float32 and cast back to the base dtype. Config, tokenizer and
    other non-weight files are copied. Modules whose fingerprint differs from the
    base's are refused.
    """
    t0 = time.perf_counter()
    mods = _load(modules, sparse_ok=True)
    opts = _validate_method(method, options, weights, len(mods))
    base_folder = resolve_model_folder(base)
    _check_same_base(mods, base_folder)
    fp = _check_base_matches(mods, base_folder, str(base))
    targets = _target_union(mods, allow_missing_targets)
    if method == FACTORWISE:
        for name in targets:
            ranks = {m.targets[name].rank for m in mods if name in m.targets}
            if len(ranks) != 1:
                raise XlingError(f"{FACTORWISE} needs modules of one rank, got ranks {sorted(ranks)} on {name}")
    out = Path(out)
    _refuse_overwriting_inputs(out, [m.path for m in mods] + [base_folder])
    layers = _layers_for(method, base_folder, list(targets), num_layers)
    tc = _TargetComposer(mods, method, weights, opts, layers)
    with ModelWeights(base_folder) as bw:
        keys = set(bw.keys())
        key_of = _match_targets(targets, keys, lambda k: tuple(bw.shape(k)), f"base {base}")
        sparse_plan = _sparse_plan(mods, method, keys, bw.shape)
        with atomic_path(out) as tmp:
            with ShardWriter(tmp, bw.plan(), max_shard_bytes) as writer:
                for k in bw.keys():
                    w = bw.get(k)
                    name = key_of.get(k)
                    if name is not None:
                        dW = tc.dense(name, targets[name])
                        if targets[name].transposed:
                            dW = dW.T
                        w = (w.float() + dW).to(w.dtype)
                        del dW
                    w = _add_sparse(w, k, sparse_plan, mods, tc)
                    writer.add(k, w)
                writer.finish()
            copy_model_files(base_folder, tmp)
            recipe = _recipe(method, mods, weights, opts, base=str(base), base_fingerprint=fp, output="merged")
            (tmp / MERGE_FILE).write_text(json.dumps(recipe, indent=2, default=str) + "\n", encoding="utf-8")
            head_notes = _carry_task_head(mods, tmp, recipe, merged=True)
    notes = list(head_notes)
    if method == FACTORWISE:
        notes.append("lora_factorwise combines A and B separately: an approximation, not dW arithmetic")
    for m in mods:
        m.close()
    return ComposeOutcome(out=out, output="merged", method=method, inputs=[m.name for m in mods],
                          targets=len(targets), tensors_changed=len(set(key_of) | set(sparse_plan)),
                          seconds=time.perf_counter() - t0, notes=notes)


# --------------------------------------------------------------------------------------
# Full models
# --------------------------------------------------------------------------------------


def merge_full(
    models: Sequence[str | Path],
    method: str = "ties",
    weights: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    base: str | Path | None,
    out: str | Path,
    max_shard_bytes: int = DEFAULT_SHARD,
) -> ComposeOutcome:
    """Merge fully fine-tuned checkpoints of one base: ``W = W0 + compose(W_m - W0)``, tensor by tensor.

    ``base`` may be None only for ``layer_swap`` (inputs: task expert, language
    expert), which then interpolates the two experts directly. Tensors that are
    not floating point (e.g. position ids) are copied from the base.
    """
    if method == FACTORWISE:
        raise XlingError(f"{FACTORWISE} applies to LoRA modules, not to full models")
    t0 = time.perf_counter()
    if not models:
        raise XlingError("no models to merge")
    opts = _validate_method(method, options, weights, len(models))
    folders = [resolve_model_folder(m) for m in models]
    if base is None:
        if method != "layer_swap":
            raise XlingError(f"{method} on full models needs the base model (--base) to form task vectors")
        base_folder = folders[0]
    else:
        base_folder = resolve_model_folder(base)
    out = Path(out)
    _refuse_overwriting_inputs(out, folders + [base_folder])
    spec = COMPOSERS[method]
    layers = _Layers(*block_path_of(base_folder)) if spec.needs_layer else _Layers(None, None)
    w = None if weights is None else [float(x) for x in weights]
    changed = 0
    with ExitStack() as stack:
        bw = stack.enter_context(ModelWeights(base_folder))
        mws = [stack.enter_context(ModelWeights(f)) for f in folders]
        keys = bw.keys()
        for f, mw in zip(folders, mws):
            extra = sorted(set(mw.keys()) - set(keys))
            missing = [k for k in keys if k not in mw]
            if missing or extra:
                what = f"has no tensor {missing[0]}" if missing else f"has an extra tensor {extra[0]}"
                raise XlingError(f"model {f} {what} that the base lacks or holds; not the same architecture")
            for k in keys:
                if mw.shape(k) != bw.shape(k):
                    raise XlingError(f"model {f}: tensor {k} has shape {mw.shape(k)}, the base has {bw.shape(k)}")
        with atomic_path(out) as tmp:
            with ShardWriter(tmp, bw.plan(), max_shard_bytes) as writer:
                for k in keys:
                    b = bw.get(k, check_finite=True)
                    if not b.is_floating_point():
                        writer.add(k, b)
                        continue
                    b32 = b.float()
                    deltas = [mw.get(k, check_finite=True).float() - b32 for mw in mws]
                    merged = compose(method, deltas, w, layers.ctx(k), check_finite=False, **opts)
                    del deltas
                    if bool(merged.any()):
                        changed += 1
                    writer.add(k, (b32 + merged).to(b.dtype))
                    del merged
                writer.finish()
            copy_model_files(base_folder, tmp)
            recipe = {"method": method, "inputs": [str(f) for f in folders], "weights": w, "options": opts,
                      "base": None if base is None else str(base), "output": "merged"}
            (tmp / MERGE_FILE).write_text(json.dumps(recipe, indent=2, default=str) + "\n", encoding="utf-8")
    return ComposeOutcome(out=out, output="merged", method=method, inputs=[str(f) for f in folders],
                          targets=len(keys), tensors_changed=changed, seconds=time.perf_counter() - t0)


def apply_sparse_diff(model: torch.nn.Module, folder: str | Path, scale: float = 1.0) -> int:
    """Add a sparse diff (an LT-SFT module, :func:`xling.harness.training.train_sparse_language_module`) to
    ``model``'s weights in place.

    Parameter names are those of the bare base model; a task model around it
    (``bert.encoder...``) is matched by suffix. Returns the entries added. Sparse
    diffs compose by addition (theta0 + diff_lang + diff_task); this is
    ``compose_into(model, [folder], "add", [scale])``.
    """
    m = SparseModule(folder)
    compose_into(model, [m], "add", [float(scale)])
    return m.num_entries
