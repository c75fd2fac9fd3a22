"""Composition of weight deltas: arithmetic, GenKnowSub, TIES, DARE, layer swapping, stacking.

Every composer is a pure tensor function over *task vectors* (weight deltas of one
tensor, all of one shape): ``dW_m = W_m - W0`` for fully fine-tuned models, or
``dW_m = scaling_m * B_m @ A_m`` for LoRA modules. It returns the merged delta; the
caller adds it to ``W0``. Streaming, files and LoRA factors live in
:mod:`xling.modules`; this module only does arithmetic on tensors, so every
composer is testable against a dense computation written plainly.

Public API::

    COMPOSERS["ties"].defaults                     # {'density': 1.0, 'lambda': 1.0, ...}
    compose("ties", [d1, d2], [1.0, 1.0], density=0.5)
    compose("layer_swap", [d_task, d_lang], ctx=TensorContext("layers.0.q", layer=0, num_layers=12),
            bottom=1, top=1, transition=1)
    coefficients("add", [1.0, -1.0])                # linear composers only: out = sum c_m d_m
    refactorize(dW, r)                             # -> Refactorized(A, B, rel_error), dW ~ B @ A
    refactorize(dW, r, svd="lowrank")              # seeded randomised SVD, error still exact
    refactorize_factored([(B1, A1), (B2, A2)], [c1, c2], r)   # exact SVD of sum c B A, no dense dW
    lora_factorwise(As, Bs, weights, scalings)     # peft/adapters "linear": an APPROXIMATION

Conventions
-----------
* Inputs are computed in float32 (float64 if any input is float64); the result is
  returned in that dtype. Inputs must be finite and of one shape.
* ``weights`` are the per-input lambdas (default 1 each); negative weights subtract.
* Option ``lambda`` (a global scale applied after normalisation) follows mergekit.
* Composers marked *linear* are ``out = sum_m c_m * d_m`` with coefficients that do
  not depend on the tensor values; :func:`coefficients` returns them, which lets
  LoRA code compose and re-factorise without ever forming a dense dW.
* Randomness (DARE) uses a :class:`torch.Generator` seeded from ``seed``, the
  tensor's name and the input's index, so a result does not depend on the order in
  which tensors are processed.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from xling.errors import XlingError
from xling.registry import Registry

__all__ = [
    "COMPOSERS",
    "Composer",
    "Refactorized",
    "TensorContext",
    "all_finite",
    "block_index",
    "coefficients",
    "compose",
    "layer_swap_alpha",
    "layer_swap_state_dict",
    "lora_factorwise",
    "refactorize",
    "refactorize_factored",
    "register_composer",
    "SVD_METHODS",
    "resolve_options",
    "tensor_seed",
    "validate",
]


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorContext:
    """What a composer may know about the tensor besides its values.

    ``name``: the tensor's (or LoRA target's) name, used to derive per-tensor seeds.
    ``layer``: index of the transformer block holding it (None outside the blocks).
    ``num_layers``: number of blocks of the model.
    """

    name: str = ""
    layer: int | None = None
    num_layers: int | None = None


@dataclass(frozen=True)
class Composer:
    """A registered composition method.

    ``fn(deltas, weights, ctx, **options) -> Tensor``. ``coefficients_fn`` is set for
    linear composers (``out = sum c_m d_m``). ``uses_weights`` is False for composers
    whose inputs have fixed roles (layer swapping), where passing weights is an error.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    citation: str
    defaults: dict[str, Any] = field(default_factory=dict)
    min_inputs: int = 1
    max_inputs: int | None = None
    coefficients_fn: Callable[..., list[float]] | None = None
    uses_weights: bool = True
    needs_layer: bool = False

    @property
    def linear(self) -> bool:
        return self.coefficients_fn is not None


COMPOSERS = Registry(kind="composition method",
                     unknown="unknown composition method {name!r}{hint} (available: {known})")

# Public option names that are not valid Python identifiers map to keyword names.
_ALIASES = {"lambda": "lam"}
_PUBLIC = {v: k for k, v in _ALIASES.items()}


def register_composer(
    name: str,
    *,
    description: str,
    citation: str,
    defaults: Mapping[str, Any] | None = None,
    min_inputs: int = 1,
    max_inputs: int | None = None,
    linear: Callable[..., list[float]] | None = None,
    uses_weights: bool = True,
    needs_layer: bool = False,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register ``fn(deltas, weights, ctx, **options)`` under ``name``.

    ``defaults`` uses the public option names (``lambda``, not ``lam``). Pass
    ``linear=coef_fn`` for composers that are a fixed linear combination.
    """

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        spec = Composer(
            name=name, fn=fn, description=description, citation=citation, defaults=dict(defaults or {}),
            min_inputs=min_inputs, max_inputs=max_inputs, coefficients_fn=linear,
            uses_weights=uses_weights, needs_layer=needs_layer,
        )
        COMPOSERS.register(name, spec, options=spec.defaults)
        return fn

    return deco


def _get(name: str) -> Composer:
    if name == "lora_factorwise" and name not in COMPOSERS:
        raise XlingError(f"{COMPOSERS.unknown(name)} (lora_factorwise is an approximation on LoRA factors, "
                         "see lora_factorwise())")
    return COMPOSERS.get(name)


def resolve_options(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``name`` updated with ``options``; unknown options are an error.

    Returns the public names (``lambda``); values (command-line strings too) are converted to the
    defaults' types by :meth:`xling.registry.Registry.coerce`.
    """
    spec = _get(name)
    return {**spec.defaults, **COMPOSERS.coerce(name, {_PUBLIC.get(k, k): v for k, v in (options or {}).items()})}


def _kw(options: Mapping[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(k, k): v for k, v in options.items()}


def _check_weights(spec: Composer, n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    if not spec.uses_weights:
        raise XlingError(f"{spec.name} takes no weights (its inputs have fixed roles)")
    w = [float(x) for x in weights]
    if len(w) != n:
        raise XlingError(f"{spec.name}: {len(w)} weights for {n} inputs")
    if not all(math.isfinite(x) for x in w):
        raise XlingError(f"{spec.name}: weights must be finite, got {w}")
    return w


def _check_count(spec: Composer, n: int) -> None:
    if n < spec.min_inputs or (spec.max_inputs is not None and n > spec.max_inputs):
        want = str(spec.min_inputs) if spec.max_inputs == spec.min_inputs else (
            f"at least {spec.min_inputs}" if spec.max_inputs is None else f"{spec.min_inputs} to {spec.max_inputs}")
        raise XlingError(f"{spec.name} needs {want} inputs, got {n}")


def validate(
    name: str, n: int, weights: Sequence[float] | None = None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check a composition's input count, weights and options up front; returns the resolved options."""
    spec = _get(name)
    _check_count(spec, n)
    _check_weights(spec, n, weights)
    return resolve_options(name, options)


def coefficients(
    name: str,
    weights: Sequence[float] | None,
    n: int | None = None,
    ctx: TensorContext | None = None,
    **options: Any,
) -> list[float]:
    """Coefficients ``c`` of a linear composer: its output is ``sum_m c_m * d_m``.

    ``n`` (number of inputs) is needed when ``weights`` is None.
    """
    spec = _get(name)
    if spec.coefficients_fn is None:
        raise XlingError(f"{name} is not a linear composition")
    if n is None:
        if weights is None:
            raise ValueError("coefficients() needs weights or n")
        n = len(weights)
    _check_count(spec, n)
    w = _check_weights(spec, n, weights)
    ctx = ctx or TensorContext()
    if spec.needs_layer and ctx.num_layers is None:
        raise XlingError(f"{name} needs the number of layers of the model")
    return [float(c) for c in spec.coefficients_fn(w, ctx, **_kw(resolve_options(name, options)))]


def compose(
    name: str,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    ctx: TensorContext | None = None,
    *,
    check_finite: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Compose task vectors ``deltas`` (same shape) with method ``name``; returns the merged delta.

    ``check_finite=False`` skips the NaN/inf test when the caller has already made it.
    """
    spec = _get(name)
    deltas = list(deltas)
    _check_count(spec, len(deltas))
    w = _check_weights(spec, len(deltas), weights)
    opts = resolve_options(name, options)
    ctx = ctx or TensorContext()
    if spec.needs_layer and ctx.num_layers is None:
        raise XlingError(f"{name} needs the number of layers of the model")
    shape = deltas[0].shape
    for i, d in enumerate(deltas):
        if d.shape != shape:
            raise XlingError(f"{name}: input {i} of {ctx.name or 'tensor'} has shape {tuple(d.shape)}, "
                             f"input 0 has {tuple(shape)}")
    dtype = torch.float64 if any(d.dtype == torch.float64 for d in deltas) else torch.float32
    deltas = [d.to(dtype) for d in deltas]
    for i, d in enumerate(deltas if check_finite else ()):
        if not all_finite(d):
            raise XlingError(f"{name}: input {i} of {ctx.name or 'tensor'} has NaN or inf values")
    return spec.fn(deltas, w, ctx, **_kw(opts))


def _linear_combination(deltas: Sequence[torch.Tensor], coefs: Sequence[float]) -> torch.Tensor:
    out = torch.zeros_like(deltas[0])
    for c, d in zip(coefs, deltas):
        if c != 0.0:
            out.add_(d, alpha=c)
    return out


def _linear(coef_fn: Callable[..., list[float]]) -> Callable[..., torch.Tensor]:
    def fn(deltas, weights, ctx, **kw):
        return _linear_combination(deltas, coef_fn(weights, ctx, **kw))

    fn.__doc__ = coef_fn.__doc__
    return fn


def all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` has no NaN or inf. A sum is much cheaper than ``isfinite(t).all()``;
    only when the sum is not finite (NaN/inf inside, or an overflowing sum) is the exact test run."""
    if t.numel() == 0 or not t.is_floating_point():
        return True
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def tensor_seed(seed: int, name: str, index: int) -> int:
    """A 63-bit seed derived from (seed, tensor name, input index): order-independent."""
    h = hashlib.blake2b(f"{int(seed)}\x00{name}\x00{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------
# Linear composers: arithmetic, GenKnowSub, stacking, layer swapping
# --------------------------------------------------------------------------------------


def _add_coefs(weights: Sequence[float], ctx: TensorContext, *, normalize: bool, lam: float) -> list[float]:
    """Task arithmetic: ``W = W0 + lambda * sum_m w_m dW_m`` (divided by ``sum w`` if normalize)."""
    if normalize:
        total = math.fsum(weights)
        if abs(total) < 1e-8:
            raise XlingError(f"add with normalize: the weights {list(weights)} sum to zero, so their "
                             "weighted average is undefined")
        return [lam * w / total for w in weights]
    return [lam * w for w in weights]


register_composer(
    "add",
    description="weighted arithmetic on dW: W = W0 + lambda * sum_m w_m dW_m (negative weights subtract)",
    citation="Ilharco et al. 2023, Editing models with task arithmetic; Chronopoulou et al. 2023, "
             "Language and task arithmetic with parameter-efficient layers; Zhang et al. 2023, "
             "Composing parameter-efficient modules with arithmetic operations",
    defaults={"normalize": False, "lambda": 1.0},
    linear=_add_coefs,
)(_linear(_add_coefs))


def _genknowsub_coefs(weights: Sequence[float], ctx: TensorContext, *, lam: float) -> list[float]:
    """GenKnowSub: ``w_0 dW_task - mean_k(w_k dW_general_k)`` (inputs: task first, then general modules).

    Exact on dW. The reference code subtracts the A and B factors separately, which
    is not the same thing (see :func:`lora_factorwise`).
    """
    k = len(weights) - 1
    return [lam * weights[0]] + [-lam * w / k for w in weights[1:]]


register_composer(
    "genknowsub",
    description="task module minus the mean of general-knowledge (language-model) modules, on dW; "
                "inputs: task, then one or more general modules",
    citation="GenKnowSub (2025): Improving modularity and reusability of LLMs through general knowledge "
             "subtraction",
    defaults={"lambda": 1.0},
    min_inputs=2,
    linear=_genknowsub_coefs,
)(_linear(_genknowsub_coefs))


def _stack_coefs(weights: Sequence[float], ctx: TensorContext) -> list[float]:
    """MAD-X stacking for LoRA: active modules add their dW (task + target-language module)."""
    return list(weights)


register_composer(
    "stack",
    description="MAD-X stacking for LoRA: two (or more) active modules add their dW; put the task module "
                "with the target-language module in place of the source-language one",
    citation="Pfeiffer et al. 2020, MAD-X: An adapter-based framework for multi-task cross-lingual transfer",
    defaults={},
    min_inputs=2,
    linear=_stack_coefs,
)(_linear(_stack_coefs))


def block_index(name: str, block_path: str) -> int | None:
    """Index of the transformer block holding ``name``, given the block list's dotted path.

    ``block_index("bert.encoder.layer.3.attention.self.query.weight", "encoder.layer") == 3``;
    ``None`` for names outside the block list (embeddings, final norm, heads).
    """
    m = re.search(r"(?:^|\.)" + re.escape(block_path) + r"\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def layer_swap_alpha(layer: int | None, num_layers: int, bottom: int, top: int, transition: int = 0,
                     non_block: str = "task") -> float:
    """Share of the language expert in block ``layer`` (0 = task expert, 1 = language expert).

    Blocks ``0 .. bottom-1`` and ``L-top .. L-1`` come from the language expert. With
    ``transition = w > 0``, the ``w`` blocks after the bottom group and before the top
    group interpolate linearly: the j-th block away from a swapped group (j = 1..w)
    gets ``1 - j / (w + 1)``; where the two zones overlap, the larger share wins.
    Tensors outside the blocks (``layer is None``) come from ``non_block``.
    """
    if bottom < 0 or top < 0 or transition < 0:
        raise XlingError(f"layer_swap: bottom, top and transition must be >= 0 (got {bottom}, {top}, {transition})")
    if bottom + top > num_layers:
        raise XlingError(f"layer_swap: bottom {bottom} + top {top} exceeds the model's {num_layers} layers")
    if non_block not in ("task", "language"):
        raise XlingError(f"layer_swap: non_block must be task or language, got {non_block!r}")
    if layer is None:
        return 1.0 if non_block == "language" else 0.0
    if not 0 <= layer < num_layers:
        raise XlingError(f"layer_swap: layer {layer} out of range for {num_layers} layers")
    if layer < bottom or layer >= num_layers - top:
        return 1.0
    alpha = 0.0
    if transition:
        if bottom > 0:
            j = layer - bottom + 1
            if j <= transition:
                alpha = max(alpha, 1.0 - j / (transition + 1))
        if top > 0:
            j = (num_layers - top) - layer
            if j <= transition:
                alpha = max(alpha, 1.0 - j / (transition + 1))
    return alpha


def _layer_swap_coefs(weights: Sequence[float], ctx: TensorContext, *, bottom: int, top: int, transition: int,
                      non_block: str) -> list[float]:
    """Layer swapping: ``(1 - a) dW_task + a dW_lang`` with ``a = layer_swap_alpha(layer)``."""
    a = layer_swap_alpha(ctx.layer, int(ctx.num_layers), bottom, top, transition, non_block)
    return [1.0 - a, a]


register_composer(
    "layer_swap",
    description="from a task expert, take the bottom b and top t transformer layers from a language expert "
                "of the same base, with an optional linear transition zone of width w; inputs: task, language",
    citation="Bandarkar et al. 2025, Layer swapping for zero-shot cross-lingual transfer in large language models",
    defaults={"bottom": 1, "top": 1, "transition": 0, "non_block": "task"},
    min_inputs=2,
    max_inputs=2,
    linear=_layer_swap_coefs,
    uses_weights=False,
    needs_layer=True,
)(_linear(_layer_swap_coefs))


def _madx2_coefs(weights: Sequence[float], ctx: TensorContext, *, drop_last: int) -> list[float]:
    """MAD-X 2.0: stacking, with the language modules (inputs 2..) left out of the last ``drop_last`` blocks."""
    L = int(ctx.num_layers)
    if not 0 <= drop_last <= L:
        raise XlingError(f"madx2: drop_last must be in 0..{L}, got {drop_last}")
    out = list(weights)
    if ctx.layer is not None and ctx.layer >= L - drop_last:
        out[1:] = [0.0] * (len(out) - 1)
    return out


register_composer(
    "madx2",
    description="MAD-X 2.0: stacking (task module first, then language modules) with the language modules "
                "dropped from the last drop_last transformer layers (default 1) at inference",
    citation="Pfeiffer et al. 2021, UNKs everywhere: adapting multilingual language models to new scripts",
    defaults={"drop_last": 1},
    min_inputs=2,
    linear=_madx2_coefs,
    needs_layer=True,
)(_linear(_madx2_coefs))


def layer_swap_state_dict(
    task: Mapping[str, torch.Tensor],
    language: Mapping[str, torch.Tensor],
    *,
    block_path: str,
    num_layers: int,
    bottom: int,
    top: int,
    transition: int = 0,
    non_block: str = "task",
) -> dict[str, torch.Tensor]:
    """Layer swapping on two full state dicts (or two per-target dW dicts) of the same base.

    Interpolating weights and interpolating deltas from a shared base give the same
    result, since the two shares sum to 1.
    """
    if set(task) != set(language):
        diff = sorted(set(task) ^ set(language))
        raise XlingError(f"layer_swap: the experts hold different tensors (e.g. {diff[0]})")
    out: dict[str, torch.Tensor] = {}
    for name, t in task.items():
        lang = language[name]
        if lang.shape != t.shape:
            raise XlingError(f"layer_swap: {name} has shape {tuple(t.shape)} in the task expert and "
                             f"{tuple(lang.shape)} in the language expert")
        a = layer_swap_alpha(block_index(name, block_path), num_layers, bottom, top, transition, non_block)
        if not t.is_floating_point():
            out[name] = (lang if a >= 0.5 else t).clone()
        elif a == 0.0:
            out[name] = t.clone()
        elif a == 1.0:
            out[name] = lang.clone()
        else:
            out[name] = ((1.0 - a) * t.float() + a * lang.float()).to(t.dtype)
    return out


# --------------------------------------------------------------------------------------
# TIES and DARE (value-dependent, not linear)
# --------------------------------------------------------------------------------------


def _trim(d: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``k = max(1, int(density * numel))`` entries of largest magnitude (TIES "trim").

    The k-th largest magnitude is found by selection (``kthvalue``, no full sort);
    entries tied at that threshold are kept lowest flat index first, so exactly k
    entries survive and the result is deterministic.
    """
    n = d.numel()
    if density >= 1.0 or n == 0:
        return d
    k = max(1, int(density * n))
    flat = d.reshape(-1)
    mag = flat.abs()
    threshold = torch.kthvalue(mag, n - k + 1).values
    keep = mag > threshold
    short = k - int(keep.sum())
    if short > 0:
        keep[(mag == threshold).nonzero().squeeze(1)[:short]] = True
    return torch.where(keep, flat, torch.zeros((), dtype=flat.dtype)).reshape(d.shape)


def _disjoint_merge(weighted: torch.Tensor, weights: torch.Tensor, consensus: str, normalize: bool) -> torch.Tensor:
    """TIES elect + disjoint merge on stacked weighted deltas ``(M, *shape)``.

    Elected sign: sign of the sum of the (weighted, trimmed) values (``consensus="sum"``,
    the paper) or of the count of signs (``"count"``); zero sums elect +. Entries
    whose sign agrees are summed; with ``normalize`` divided by the sum of the
    weights of the agreeing entries (the disjoint mean; 1 where nothing agrees).
    """
    sign = weighted.sign()
    if consensus == "sum":
        elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).to(weighted.dtype)
    else:
        elected = torch.where(sign.sum(0) >= 0, 1.0, -1.0).to(weighted.dtype)
    agree = (sign == elected).to(weighted.dtype)
    mixed = (weighted * agree).sum(0)
    if normalize:
        w = weights.reshape((-1,) + (1,) * (weighted.dim() - 1))
        divisor = (w * agree).sum(0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
        mixed = mixed / divisor
    return mixed


def _check_normalize(name: str, weights: Sequence[float], normalize: bool) -> None:
    if normalize and abs(math.fsum(weights)) < 1e-8:
        raise XlingError(f"{name} with normalize: the weights {list(weights)} sum to zero, so the "
                         "normalised average is undefined")


def _check_consensus(name: str, consensus: str) -> None:
    if consensus not in ("sum", "count"):
        raise XlingError(f"{name}: consensus must be sum or count, got {consensus!r}")


@register_composer(
    "ties",
    description="TIES: per tensor, trim each dW to its top-density entries by magnitude, elect the sign per "
                "entry by the sign of the summed values, average (normalize) or sum the agreeing entries",
    citation="Yadav et al. 2023, TIES-Merging: Resolving interference when merging models",
    defaults={"density": 1.0, "lambda": 1.0, "normalize": True, "consensus": "sum"},
)
def ties(deltas: Sequence[torch.Tensor], weights: Sequence[float], ctx: TensorContext, *, density: float,
         lam: float, normalize: bool, consensus: str) -> torch.Tensor:
    """TIES-merging, with mergekit's semantics (``ties`` method).

    1. trim: each ``dW_m`` keeps its ``max(1, int(density * numel))`` largest-magnitude entries;
    2. weight: ``t_m = w_m * trim(dW_m)``;
    3. elect: ``s = sign(sum_m t_m)`` per entry (``consensus="count"``: sign of the count);
    4. disjoint merge: ``sum_m t_m [sign t_m = s]``, divided with ``normalize`` by
       ``sum_m w_m [sign t_m = s]`` (1 where nothing agrees);
    5. scale by ``lambda``.
    Defaults as mergekit: density 1.0, lambda 1.0, normalize true. Entries whose
    magnitudes tie exactly at the trim threshold are kept lowest index first;
    mergekit's (unstable) ``argsort`` may keep a different one of them: the only
    difference the benchmark finds, a handful of entries in 10^8.
    """
    if not 0.0 < density <= 1.0:
        raise XlingError(f"ties: density must be in (0, 1], got {density}")
    _check_consensus("ties", consensus)
    _check_normalize("ties", weights, normalize)
    w = torch.tensor(weights, dtype=deltas[0].dtype, device=deltas[0].device)
    stacked = torch.stack([_trim(d, density) for d in deltas]) * w.reshape((-1,) + (1,) * deltas[0].dim())
    return lam * _disjoint_merge(stacked, w, consensus, normalize)


def _dare_drop(d: torch.Tensor, p: float, rescale: bool, seed: int) -> torch.Tensor:
    """Drop each entry with probability ``p``; rescale survivors by ``1 / (1 - p)``."""
    if p == 0.0:
        return d
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    keep = torch.rand(d.shape, generator=gen, dtype=torch.float32) >= p
    out = d * keep.to(device=d.device, dtype=d.dtype)
    return out / (1.0 - p) if rescale else out


def _dare_common(deltas, weights, ctx, *, p, rescale, seed, name):
    if not 0.0 <= p < 1.0:
        raise XlingError(f"{name}: drop probability p must be in [0, 1), got {p}")
    return [_dare_drop(d, p, rescale, tensor_seed(seed, ctx.name, i)) for i, d in enumerate(deltas)]


@register_composer(
    "dare",
    description="DARE: drop each dW entry with probability p, rescale survivors by 1/(1-p), then weighted sum "
                "(seeded: reproducible)",
    citation="Yu et al. 2024, Language models are Super Mario: Absorbing abilities from homologous models "
             "as a free lunch",
    defaults={"p": 0.9, "rescale": True, "normalize": False, "lambda": 1.0, "seed": 0},
)
def dare(deltas: Sequence[torch.Tensor], weights: Sequence[float], ctx: TensorContext, *, p: float,
         rescale: bool, normalize: bool, lam: float, seed: int) -> torch.Tensor:
    """DARE then task arithmetic (mergekit's ``dare_linear``).

    The keep-mask of input ``m`` is drawn from a generator seeded with
    ``tensor_seed(seed, ctx.name, m)``. Rescaling is the paper's ``1 / (1 - p)``;
    mergekit >= 0.1 instead rescales each tensor to its pre-drop L1 norm, which
    agrees only in expectation.
    """
    dropped = _dare_common(deltas, weights, ctx, p=p, rescale=rescale, seed=seed, name="dare")
    return _linear_combination(dropped, _add_coefs(weights, ctx, normalize=normalize, lam=lam))


@register_composer(
    "dare_ties",
    description="DARE drop-and-rescale, then TIES sign election and disjoint merge",
    citation="Yu et al. 2024 (DARE) with Yadav et al. 2023 (TIES sign election)",
    defaults={"p": 0.9, "rescale": True, "normalize": False, "lambda": 1.0, "seed": 0, "consensus": "sum"},
)
def dare_ties(deltas: Sequence[torch.Tensor], weights: Sequence[float], ctx: TensorContext, *, p: float,
              rescale: bool, normalize: bool, lam: float, seed: int, consensus: str) -> torch.Tensor:
    """DARE on each input, then TIES election and disjoint merge (mergekit's ``dare_ties``: normalize off)."""
    _check_consensus("dare_ties", consensus)
    _check_normalize("dare_ties", weights, normalize)
    dropped = _dare_common(deltas, weights, ctx, p=p, rescale=rescale, seed=seed, name="dare_ties")
    w = torch.tensor(weights, dtype=deltas[0].dtype, device=deltas[0].device)
    stacked = torch.stack(dropped) * w.reshape((-1,) + (1,) * deltas[0].dim())
    return lam * _disjoint_merge(stacked, w, consensus, normalize)


# --------------------------------------------------------------------------------------
# Re-factorisation into a LoRA
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refactorized:
    """``dW ~ B @ A`` with ``A`` (r, in), ``B`` (out, r); ``rel_error = ||dW - BA||_F / ||dW||_F``.

    Unpacks as ``A, B, rel_error = refactorize(dW, r)``; ``norm`` is ``||dW||_F``.
    """

    A: torch.Tensor
    B: torch.Tensor
    rel_error: float
    norm: float = 0.0

    def __iter__(self):
        return iter((self.A, self.B, self.rel_error))


def _tail_error(S: torch.Tensor, r: int) -> tuple[float, float]:
    """(relative error of the rank-r truncation, Frobenius norm) from the singular values."""
    s2 = S.double() ** 2
    total = float(s2.sum())
    if total == 0.0:
        return 0.0, 0.0
    return math.sqrt(max(float(s2[r:].sum()), 0.0) / total), math.sqrt(total)


def _check_rank(r: int, shape: tuple[int, int], name: str) -> None:
    if int(r) != r or r < 1:
        raise XlingError(f"rank must be a positive integer, got {r}")
    if r > min(shape):
        raise XlingError(f"rank {r} exceeds the size of {name or 'the matrix'} {tuple(shape)}")


def _split(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    root = S[:r].sqrt()
    return (root[:, None] * Vh[:r]).contiguous(), (U[:, :r] * root[None, :]).contiguous()


SVD_METHODS = ("exact", "lowrank")


def refactorize(dW: torch.Tensor, r: int, *, name: str = "", svd: str = "exact", niter: int = 6,
                seed: int = 0) -> Refactorized:
    """Truncated SVD of ``dW`` (out, in) to rank ``r``: ``B = U_r S_r^1/2``, ``A = S_r^1/2 V_r^T``.

    ``rel_error = sqrt(sum_{i>r} s_i^2 / sum_i s_i^2)`` (Eckart-Young: the smallest
    possible at rank r); 0 for a zero matrix.

    ``svd="lowrank"`` computes only the top singular triplets by seeded randomised
    subspace iteration (``torch.svd_lowrank``, ``niter`` power iterations), much
    faster for large matrices. ``B @ A`` is then the projection of ``dW`` onto the
    computed subspace, so the reported error ``sqrt(||dW||^2 - sum_{i<=r} s_i^2) / ||dW||``
    is still exactly ``||dW - BA||_F / ||dW||_F`` (never below the optimum).
    """
    if dW.dim() != 2:
        raise XlingError(f"refactorize expects a matrix, {name or 'input'} has shape {tuple(dW.shape)}")
    if svd not in SVD_METHODS:
        raise XlingError(f"svd must be one of {', '.join(SVD_METHODS)}, got {svd!r}")
    _check_rank(r, tuple(dW.shape), name)
    if not all_finite(dW):
        raise XlingError(f"refactorize: {name or 'input'} has NaN or inf values")
    work = dW if dW.dtype == torch.float64 else dW.float()
    if svd == "exact" or r + 10 >= min(work.shape):
        U, S, Vh = torch.linalg.svd(work, full_matrices=False)
        A, B = _split(U, S, Vh, r)
        return Refactorized(A, B, *_tail_error(S, r))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        U, S, V = torch.svd_lowrank(work, q=r + 10, niter=niter)
    finally:
        torch.random.set_rng_state(state)
    A, B = _split(U, S, V.T, r)
    total = float(work.double().pow(2).sum())
    if total == 0.0:
        return Refactorized(A, B, 0.0, 0.0)
    kept = float(S[:r].double().pow(2).sum())
    return Refactorized(A, B, math.sqrt(max(total - kept, 0.0) / total), math.sqrt(total))


def _orth_basis(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``P = U diag(s) V^T`` (thin, numerically nonzero part) from the eigendecomposition of ``P^T P``.

    Works in float64; singular values below ``1e-7 * s_max`` (relative contribution
    below 1e-14 of ``||P||^2``) are dropped. On a few CPU cores this is several times
    faster than LAPACK's QR/SVD of a tall matrix.
    """
    lam, V = torch.linalg.eigh(P.T @ P)
    keep = lam > lam.max().clamp_min(0) * 1e-14
    if not bool(keep.any()):
        return P.new_zeros(P.shape[0], 0), P.new_zeros(0), P.new_zeros(P.shape[1], 0)
    lam, V = lam[keep], V[:, keep]
    s = lam.sqrt()
    return (P @ V) / s, s, V


def refactorize_factored(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]],
    coefs: Sequence[float],
    r: int,
    *,
    name: str = "",
) -> Refactorized:
    """Exact truncated SVD of ``dW = sum_m c_m B_m @ A_m`` without forming ``dW``.

    With ``P = [c_1 B_1 | ...]`` (out, R) and ``Q = [A_1; ...]^T`` (in, R), ``R = sum r_m``:
    thin SVDs ``P = U_p S_p V_p^T``, ``Q = U_q S_q V_q^T`` (from the R x R Gram
    matrices, in float64), then the SVD of the small core ``S_p V_p^T V_q S_q``.
    Costs ``O((out + in) R^2)`` instead of ``O(out * in * min(out, in))``; the same
    singular values as the dense SVD. Falls back to the dense SVD when ``R``
    exceeds ``min(out, in)``.
    """
    if len(factors) != len(coefs):
        raise ValueError("one coefficient per (B, A) pair")
    if not factors:
        raise XlingError("refactorize: nothing to factorise")
    pairs = [(B, A, float(c)) for (B, A), c in zip(factors, coefs) if c != 0.0]
    B0, A0 = factors[0]
    out_f, in_f = B0.shape[0], A0.shape[1]
    _check_rank(r, (out_f, in_f), name)
    dtype = torch.float64 if any(B.dtype == torch.float64 or A.dtype == torch.float64 for B, A in factors) \
        else torch.float32
    if not pairs:
        return Refactorized(torch.zeros(r, in_f, dtype=dtype), torch.zeros(out_f, r, dtype=dtype), 0.0, 0.0)
    P = torch.cat([c * B.double() for B, A, c in pairs], dim=1)
    Q = torch.cat([A.double() for B, A, c in pairs], dim=0).T
    if P.shape[1] > min(out_f, in_f):
        res = refactorize((P @ Q.T).to(dtype), r, name=name)
        return res
    Up, sp, Vp = _orth_basis(P)
    Uq, sq, Vq = _orth_basis(Q)
    if sp.numel() == 0 or sq.numel() == 0:
        return Refactorized(torch.zeros(r, in_f, dtype=dtype), torch.zeros(out_f, r, dtype=dtype), 0.0, 0.0)
    U, S, Vh = torch.linalg.svd((sp[:, None] * (Vp.T @ Vq)) * sq[None, :], full_matrices=False)
    # Singular values at rounding level of ||P|| ||Q|| are cancellation noise (e.g. m - m): zero them.
    S = torch.where(S > 1e-12 * float(sp.max() * sq.max()), S, torch.zeros_like(S))
    k = min(r, S.numel())
    A, B = _split(Up @ U, S, Vh @ Uq.T, k)
    if k < r:  # pad with zero rank-1 terms so every target has rank r
        A = torch.cat([A, A.new_zeros(r - k, in_f)], 0)
        B = torch.cat([B, B.new_zeros(out_f, r - k)], 1)
    return Refactorized(A.to(dtype), B.to(dtype), *_tail_error(S, k))


# --------------------------------------------------------------------------------------
# The factor-wise shortcut (an approximation)
# --------------------------------------------------------------------------------------


def lora_factorwise(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    weights: Sequence[float],
    scalings: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """APPROXIMATION: combine LoRA factors separately, as peft's ``"linear"`` and adapters' ``"linear"`` do.

    With ``k_m = w_m * s_m``: ``A = sum_m sign(k_m) sqrt(|k_m|) A_m``,
    ``B = sum_m sqrt(|k_m|) B_m``, new scaling 1. Then ``B @ A`` equals
    ``sum_m k_m B_m A_m`` (exact arithmetic) **plus the cross terms**
    ``sum_{m != n} ... B_m A_n``, so it is NOT dW arithmetic except for one module.
    Offered only to reproduce those tools; every rank must be equal.
    """
    if not (len(As) == len(Bs) == len(weights) == len(scalings)) or not As:
        raise XlingError("lora_factorwise: one A, B, weight and scaling per module")
    ranks = {A.shape[0] for A in As} | {B.shape[1] for B in Bs}
    if len(ranks) != 1:
        raise XlingError(f"lora_factorwise needs modules of one rank, got ranks {sorted(ranks)}")
    A_out = torch.zeros_like(As[0], dtype=torch.float32)
    B_out = torch.zeros_like(Bs[0], dtype=torch.float32)
    for A, B, w, s in zip(As, Bs, weights, scalings):
        k = float(w) * float(s)
        root = math.sqrt(abs(k))
        A_out.add_(A.float(), alpha=root if k >= 0 else -root)
        B_out.add_(B.float(), alpha=root)
    return A_out, B_out
