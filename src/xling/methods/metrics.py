"""Cross-lingual alignment metrics over pooled sentence embeddings, per layer.

Every metric takes a :class:`PairEmbeddings` (pivot ``X`` and other language ``Y``,
both ``(L, n, d)``: L layers, n parallel sentences, d dimensions; row i of X and row i
of Y are translations of each other) and returns ``{output_name: tensor of shape (L,)}``,
one number per layer. The formulas are those of ``shared/reference/methods.md``; each
metric's docstring cites its paper and says where xling departs from it.

Public API::

    pair = PairEmbeddings(X, Y)                      # validates, casts to float32 (or float64)
    pair.sim                                         # (L, n, n) cosine matrix, computed once
    compute_metrics(pair, ["mexa", "retrieval"], {"retrieval": {"ks": (1, 10)}})
    METRICS["mexa"].defaults, METRICS["xsim"].description
    higher_is_better("xsim_err_p2l")                 # False

Shared conventions
------------------
* **One similarity matrix.** ``S = pair.sim`` with ``S[l, i, j] = cos(x_i, y_j)`` is
  computed once by a batched matmul of L2-normalised rows; pivot->other metrics read its
  rows, other->pivot metrics read its transpose, so both directions see bit-identical
  numbers and ties are the same ties. A zero row is normalised to the zero vector, i.e.
  cosine 0 with everything.
* **Ties are misses (strict, pessimistic).** Sentence i counts as retrieved at top-k iff
  fewer than k competitors j != i are *not strictly below* it:
  ``#{j != i : not (S_ii > S_ij)} < k``. A competitor tied with the gold is ranked above
  it. This is exactly MEXA's strict inequality for k = 1, it is independent of the order
  of the sentences, and it never rewards a collapsed space (all-equal embeddings score 0,
  where "argmax takes the first index" would score sentence 0 as correct). Retrieval,
  xSIM and bitext mining accept ``ties="first"`` for the argmax convention of
  torch/numpy/faiss-style code instead: a tie with an earlier index ranks above the
  gold, a tie with a later one below.
* **Numerics.** Inputs in float16/bfloat16/float32 are computed in float32, float64
  inputs in float64 (or pass ``dtype=``). Reductions that decide CKA (sums of squared
  Gram entries) are accumulated in float64. Every output is a float64 tensor of shape
  ``(L,)`` on the inputs' device.
* **Memory: dense or blocked, same numbers.** The dense path materialises ``(L, n, n)``
  tensors (``pair.sim`` and a few boolean masks). :func:`compute_metrics` takes a
  ``memory_budget`` (bytes, default :data:`DEFAULT_MEMORY_BUDGET`, 1 GiB): when the
  dense tensors would not fit it, every metric on the cosine matrix runs *blocked*,
  one layer at a time, on row blocks of S with streaming reductions (row and column
  maxima and argmaxes, row and column top-k values, per-column counts of competitors
  above the gold). Memory is then ``O(n * k + block * n)`` per layer, never ``n^2``.
  ``block_size=`` forces the blocked path.
* **One scan for the four metrics on S.** On both paths one scan per layer keeps each
  row's and each column's top-(k+1) entries with their indices (:class:`_Lists`); MEXA,
  retrieval@k, bitext F1 (first index of a maximum) and xSIM with kNN candidates (the
  margin of every candidate, which is always in those lists) are computed from them,
  exactly. Only exact ties that run past the end of a list, and xSIM with
  ``candidates="all"``, leave something undecided; those take the full path (a second
  scan, with the same numbers).
  CKA, ANC and SVCCA are ``O(n * d + d^2)`` for n > d.
* **The cosine matrix is computed in fixed tiles.** S is the product of L2-normalised
  rows taken :data:`SIM_TILE` pivot rows at a time (each tile a fresh contiguous copy),
  in the dense and the blocked path alike: BLAS libraries round a dot product
  differently depending on the shape of the product, so computing S in one piece and
  in blocks would differ in the last bit and could flip an exact tie. With fixed tiles
  every path and every block size sees bit-identical similarities, and the blocked
  results equal the dense ones exactly, ties included. Identical embeddings give
  identical similarities by construction: each distinct row pair is multiplied once and
  duplicates are gathered from that product (a tie is a tie on every CPU and BLAS kernel).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping

import torch

from xling.errors import XlingError
from xling.registry import Registry, signature_options

__all__ = [
    "METRICS",
    "Metric",
    "PairEmbeddings",
    "compute_metrics",
    "higher_is_better",
    "lower_is_better",
    "register_metric",
    "resolve_options",
    "validate_options",
    "validate_sizes",
]

TIE_RULES = ("strict", "first")

SIM_TILE = 128
"""Pivot rows per product when computing the cosine matrix (see "fixed tiles" above)."""

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Working memory the metrics on the cosine matrix may use (bytes), 1 GiB."""

# Bytes of working memory per entry of an n x n (or block x n) similarity slab: the
# float slab itself, a margin slab, and the boolean masks of the tie-aware tests.
# (48 B for float32: measured 41 B per entry at n = 5000 on e5-small, plus margin).
_BYTES_PER_ENTRY = {torch.float32: 48, torch.float64: 80}


# --------------------------------------------------------------------------------------
# Shared input: the two sides' pooled embeddings and the quantities derived from them
# --------------------------------------------------------------------------------------


class PairEmbeddings:
    """Pooled embeddings of n parallel sentences at L layers: pivot X (L, n, d), other Y (L, n, d).

    ``X[l, i]`` and ``Y[l, i]`` are the layer-l embeddings of sentence i in the pivot and
    in the other language. 2-D inputs ``(n, d)`` are taken as a single layer.

    Args:
        X, Y: tensors (or anything ``torch.as_tensor`` accepts) of identical shape
            ``(L, n, d)`` with n >= 2, finite values.
        dtype: computation dtype, ``torch.float32`` or ``torch.float64``. Default: float64
            when either input is float64, else float32 (float16/bfloat16 are upcast).

    Derived quantities are computed lazily, once, and shared by all metrics:
    ``sim`` (cosine matrix), ``Xn``/``Yn`` (L2-normalised rows), ``Xc``/``Yc``
    (column-centred), ``sim_diag``. Raises :class:`XlingError` on shape mismatch,
    too few sentences or non-finite values.
    """

    def __init__(self, X: Any, Y: Any, *, dtype: torch.dtype | None = None):
        X = torch.as_tensor(X)
        Y = torch.as_tensor(Y)
        if X.ndim == 2:
            X = X.unsqueeze(0)
        if Y.ndim == 2:
            Y = Y.unsqueeze(0)
        if X.ndim != 3 or Y.ndim != 3:
            raise XlingError(
                f"embeddings must have shape (layers, sentences, dim); "
                f"got pivot {tuple(X.shape)} and other {tuple(Y.shape)}"
            )
        if X.shape != Y.shape:
            raise XlingError(
                f"pivot and other embeddings differ in shape: {tuple(X.shape)} vs {tuple(Y.shape)} "
                f"(need the same layers, the same number of parallel sentences and the same dim)"
            )
        if X.device != Y.device:
            raise XlingError(f"pivot and other embeddings are on different devices: {X.device} vs {Y.device}")
        if X.shape[1] < 2:
            raise XlingError(f"need at least 2 parallel sentences, got {X.shape[1]}")
        if X.shape[2] < 1 or X.shape[0] < 1:
            raise XlingError(f"empty embeddings of shape {tuple(X.shape)}")
        for T in (X, Y):
            if T.is_complex() or T.dtype == torch.bool:
                raise XlingError(f"embeddings must be real numbers, got dtype {T.dtype}")
        if dtype is None:
            dtype = torch.float64 if torch.float64 in (X.dtype, Y.dtype) else torch.float32
        if dtype not in (torch.float32, torch.float64):
            raise XlingError(f"metrics compute in float32 or float64, not {dtype}")
        self.dtype = dtype
        self.block_rows: int | None = None  # set by compute_metrics: None = dense (L, n, n) path
        self.topk_hint = 1  # largest top-k the selected metrics need (shared streaming pass)
        self.ties_hint: set[str] = set()  # tie rules they count with
        self.needs_hint: set[str] = set()  # optional parts of the pass they read
        self.X = X.to(dtype)
        self.Y = Y.to(dtype)
        for side, T in (("pivot", self.X), ("other", self.Y)):
            if not bool(torch.isfinite(T).all()):
                raise XlingError(f"{side} embeddings contain NaN or infinite values")

    # shape -------------------------------------------------------------------------
    @property
    def L(self) -> int:
        return self.X.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]

    @property
    def device(self) -> torch.device:
        return self.X.device

    def __repr__(self) -> str:
        return f"PairEmbeddings(L={self.L}, n={self.n}, d={self.d}, dtype={self.dtype})"

    def select_layers(self, start: int, stop: int) -> "PairEmbeddings":
        """A view on layers ``start:stop``; already computed derived tensors are sliced, not recomputed."""
        sub = object.__new__(PairEmbeddings)
        sub.dtype = self.dtype
        sub.X = self.X[start:stop]
        sub.Y = self.Y[start:stop]
        sub.block_rows = self.block_rows
        sub.topk_hint = self.topk_hint
        sub.ties_hint = self.ties_hint
        sub.needs_hint = self.needs_hint
        for name in ("Xn", "Yn", "Xc", "Yc", "sim", "sim_diag"):
            if name in self.__dict__:
                sub.__dict__[name] = self.__dict__[name][start:stop]
        return sub

    @property
    def blocked(self) -> bool:
        """True when the metrics on the cosine matrix stream it in row blocks (``block_rows``)."""
        return self.block_rows is not None

    # derived quantities --------------------------------------------------------------
    @functools.cached_property
    def Xn(self) -> torch.Tensor:
        """Pivot rows scaled to unit L2 norm (zero rows stay zero)."""
        return torch.nn.functional.normalize(self.X, p=2.0, dim=-1)

    @functools.cached_property
    def Yn(self) -> torch.Tensor:
        """Other-language rows scaled to unit L2 norm (zero rows stay zero)."""
        return torch.nn.functional.normalize(self.Y, p=2.0, dim=-1)

    @functools.cached_property
    def sim(self) -> torch.Tensor:
        """(L, n, n) cosine matrix, ``sim[l, i, j] = cos(x_i, y_j)``; rows: pivot, columns: other.

        Built from :data:`SIM_TILE`-row tiles, bit-identical to the blocks the blocked path reads."""
        out = torch.empty(self.L, self.n, self.n, dtype=self.dtype, device=self.device)
        for layer in range(self.L):
            out[layer] = _SimLayer(self.Xn[layer], self.Yn[layer]).rows(0, self.n)
        return out

    @functools.cached_property
    def sim_diag(self) -> torch.Tensor:
        """(L, n) gold similarities ``sim[l, i, i]``."""
        return torch.diagonal(self.sim, dim1=-2, dim2=-1)

    @functools.cached_property
    def Xc(self) -> torch.Tensor:
        """Pivot embeddings with every column (neuron) centred over the n sentences."""
        return self.X - self.X.mean(dim=1, keepdim=True)

    @functools.cached_property
    def Yc(self) -> torch.Tensor:
        """Other-language embeddings with every column centred over the n sentences."""
        return self.Y - self.Y.mean(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric.

    ``higher_is_better`` maps each output name to its direction; an output family
    parametrised by k (``retrieval_p2l@1``, ``retrieval_p2l@5``...) is keyed ``"...@k"``.
    """

    name: str
    fn: Callable[..., dict[str, torch.Tensor]]
    defaults: Mapping[str, Any]
    description: str
    higher_is_better: Mapping[str, bool]

    def is_higher_better(self, output: str) -> bool:
        if output in self.higher_is_better:
            return self.higher_is_better[output]
        if "@" in output:
            key = output.split("@", 1)[0] + "@k"
            if key in self.higher_is_better:
                return self.higher_is_better[key]
        raise KeyError(f"metric {self.name!r} has no output {output!r}")

    def __call__(self, pair: PairEmbeddings, **opts: Any) -> dict[str, torch.Tensor]:
        return self.fn(pair, **resolve_options(self.name, opts))


METRICS = Registry(kind="metric", unknown="unknown metric {name!r}{hint}; available: {known}",
                   no_option="metric {name!r}: unknown option {option!r}{hint} (known options: {known})")


def register_metric(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., dict[str, torch.Tensor]]], Callable[..., dict[str, torch.Tensor]]]:
    """Decorator: register ``fn(pair, **opts) -> {output: (L,) tensor}`` under ``name``.

    The options the metric accepts are the keyword parameters of ``fn`` with a default
    (or ``defaults``, when given); anything else is rejected with an :class:`XlingError`.
    ``higher_is_better`` maps output names (or ``"prefix@k"``) to their direction
    (default: a single output ``name``, higher is better); ``description`` defaults to
    the first line of the docstring. A second metric of the same name is a ``ValueError``.
    """

    def deco(fn):
        desc = description
        if desc is None:
            desc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        metric = Metric(
            name=name,
            fn=fn,
            defaults=dict(defaults) if defaults is not None else signature_options(fn),
            description=desc,
            higher_is_better=dict(higher_is_better or {name: True}),
        )
        METRICS.register(name, metric, options=metric.defaults)
        return fn

    return deco


def resolve_options(name: str, opts: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metric's defaults overridden by ``opts``; unknown metric or option -> XlingError."""
    defaults = METRICS.options(name)
    opts = dict(opts or {})
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise METRICS.no_option(name, unknown[0], sorted(defaults))
    return {**defaults, **opts}


def validate_options(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Check metric names, option names and option *values* before any real work.

    Option values are checked by the metric functions themselves, so each metric
    named in ``names`` or ``options`` runs once on a tiny fixed pair (1 layer, 4
    sentences, 3 dimensions): a bad value (``xsim.candidates=nearest``) raises
    :class:`XlingError` now instead of after the embeddings are computed.
    """
    names = [names] if isinstance(names, str) else list(names)
    options = dict(options or {})
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    Y = X + 0.1 * torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    compute_metrics(PairEmbeddings(X, Y), list(dict.fromkeys([*names, *options])), options)


def higher_is_better(output: str) -> bool:
    """Direction of an output name produced by any registered metric (e.g. ``xsim_err_p2l`` -> False)."""
    for metric in METRICS.values():
        try:
            return metric.is_higher_better(output)
        except KeyError:
            continue
    raise KeyError(f"no registered metric produces {output!r}")


def lower_is_better(output: str) -> bool:
    """Whether smaller values of an output are better (xSIM errors); an unknown output (rows of an old store) falls
    back to its name: ``xsim_err*`` is an error rate."""
    try:
        return not higher_is_better(output)
    except KeyError:
        return output.startswith("xsim_err")


def compute_metrics(
    pair: PairEmbeddings,
    names: Iterable[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    layer_chunk: int | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    block_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Run the metrics ``names`` on ``pair``; return a flat ``{output_name: (L,) float64 tensor}``.

    ``options`` maps a metric name to its option overrides. Metric and option names are
    validated before anything is computed (option values when the metric runs). ``layer_chunk`` processes that many layers at a
    time (bounds the ``(L, n, n)`` intermediates for large n); results are identical.
    ``memory_budget`` (bytes; ``None``: no limit, always dense) picks the dense path when
    its ``(layers, n, n)`` tensors fit, else the blocked one with the largest row block
    that fits (one layer at a time); ``block_size`` (rows, rounded down to a multiple of
    :data:`SIM_TILE`, at least one tile) forces the blocked path. Results are identical
    on every path (see "Memory" in the module docstring).
    """
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))
    options = dict(options or {})
    for name in list(names) + list(options):
        METRICS.get(name)  # an unknown metric is one line naming the available ones
    for name, opts in options.items():  # options of unselected metrics are validated, then unused
        resolve_options(name, opts)
    resolved = {name: resolve_options(name, options.get(name)) for name in names}

    if layer_chunk is not None and (not isinstance(layer_chunk, int) or layer_chunk < 1):
        raise XlingError(f"layer_chunk must be a positive integer, got {layer_chunk!r}")
    block = plan_blocks(pair.n, pair.L if layer_chunk is None else min(layer_chunk, pair.L), pair.dtype,
                        memory_budget=memory_budget, block_size=block_size)
    if block is not None and layer_chunk is None:
        layer_chunk = 1  # blocked: one layer's derived tensors (normalised, centred) at a time
    topk_hint = _topk_hint(names, resolved, pair.n)
    ties_hint = {opts.get("ties") for name, opts in resolved.items() if name in ("retrieval", "bitext_f1")}
    if layer_chunk is None or layer_chunk >= pair.L:
        ranges = [(0, pair.L)]
    else:
        ranges = [(s, min(s + layer_chunk, pair.L)) for s in range(0, pair.L, layer_chunk)]

    pieces: dict[str, list[torch.Tensor]] = {}
    for start, stop in ranges:
        # a fresh view per chunk (made here, dropped after): its derived tensors never outlive it
        chunk = pair if (start, stop) == (0, pair.L) and block is None else pair.select_layers(start, stop)
        chunk.topk_hint = topk_hint  # the one scan keeps the largest top-k any selected metric reads
        if block is not None:
            chunk.block_rows = block
            chunk.ties_hint = {t for t in ties_hint if t in TIE_RULES}
            chunk.needs_hint = _needs_hint(names, resolved)
        produced: set[str] = set()
        for name in names:
            out = METRICS[name].fn(chunk, **resolved[name])
            for key, value in out.items():
                if key in produced:
                    raise ValueError(f"two metrics produce the output {key!r}")
                produced.add(key)
                pieces.setdefault(key, []).append(value)
        del chunk
    return {key: (vals[0] if len(vals) == 1 else torch.cat(vals)) for key, vals in pieces.items()}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _check_choice(metric: str, option: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise XlingError(f"metric {metric!r}: option {option!r} must be one of {', '.join(choices)}, got {value!r}")


#: The most distinct values ``retrieval.ks`` takes (each is one output per layer and language).
MAX_KS = 64


def validate_sizes(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None, n: int) -> None:
    """Check the size options the user gave against the ``n`` sentences of the data, before any embedding.

    ``retrieval.ks`` and ``xsim.k`` count sentences: a k above ``n`` is an error that
    names n (``retrieval@999`` on 20 sentences would be 1 for every sentence, and xSIM's
    neighbourhood would silently be all n). Only values given in ``options`` are
    checked; the defaults (``ks=(1, 5)``, ``k=4``) apply on a smaller corpus as before
    (``retrieval@5`` is then 1 and xSIM's k is capped at n).
    """
    names = [names] if isinstance(names, str) else list(names)
    options = options or {}
    given = []
    if "retrieval" in names and "ks" in options.get("retrieval", {}):
        ks = options["retrieval"]["ks"]
        given += [("retrieval", "ks", k) for k in ((ks,) if isinstance(ks, int) else ks)]
    if "xsim" in names and "k" in options.get("xsim", {}):
        given.append(("xsim", "k", options["xsim"]["k"]))
    for metric, option, k in given:
        if isinstance(k, int) and not isinstance(k, bool) and k > n:
            raise XlingError(f"metric {metric!r}: option {option!r} has k={k}, more than the {n} sentences of the "
                             f"corpus (k counts sentences: at most {n})")


def _check_pos_int(metric: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise XlingError(f"metric {metric!r}: option {option!r} must be a positive integer, got {value!r}")
    return value


def _mean(mask_or_values: torch.Tensor) -> torch.Tensor:
    """Mean over the last (sentence) axis as float64."""
    return mask_or_values.to(torch.float64).mean(dim=-1)


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


def _n_above_gold(M: torch.Tensor, ties: str = "strict", candidates: torch.Tensor | None = None) -> torch.Tensor:
    """For score matrices ``M`` (L, q, q) whose gold is the diagonal, the number of
    competitors j != i ranked above the gold of query i (rows are queries).

    ``strict``: every j with ``not (M_ii > M_ij)`` (ties and NaN rank above the gold).
    ``first``: as argmax with first-index tie-breaking; a tie with j < i ranks above the
    gold, a tie with j > i below. ``candidates`` (bool, same shape) restricts the
    competitors to a candidate set.
    """
    n = M.shape[-1]
    gold = torch.diagonal(M, dim1=-2, dim2=-1).unsqueeze(-1)
    above = ~(gold > M)
    if ties == "first":
        later = torch.ones(n, n, dtype=torch.bool, device=M.device).triu(1)  # j > i
        above &= ~((M == gold) & later)
    above &= ~_eye(n, M.device)
    if candidates is not None:
        above &= candidates
    return above.sum(dim=-1)


# --------------------------------------------------------------------------------------
# Blocked (streaming) computation on the cosine matrix
# --------------------------------------------------------------------------------------


def parse_memory(value: Any) -> int:
    """``"2GB"``, ``"512MB"``, ``"1.5G"``, ``"800k"`` or a number of bytes -> bytes (binary units)."""
    import re

    if isinstance(value, bool):
        raise XlingError(f"memory budget must be a size such as 2GB or 512MB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(value))
        if m is None:
            raise XlingError(f"memory budget must be a size such as 2GB or 512MB, got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
    size = int(number * 1024 ** {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit])
    if size < 1 << 20:
        raise XlingError(f"memory budget must be at least 1MB, got {value!r}")
    return size


def plan_blocks(n: int, layers: int, dtype: torch.dtype, *, memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
                block_size: int | None = None) -> int | None:
    """Row block for the blocked path, or ``None`` for the dense one (see :func:`compute_metrics`)."""
    bpe = _BYTES_PER_ENTRY.get(dtype, 56)
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise XlingError(f"block_size must be a positive integer, got {block_size!r}")
        rows = block_size
    elif memory_budget is None:
        return None
    else:
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1:
            raise XlingError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        if layers * n * n * bpe <= memory_budget:
            return None
        rows = memory_budget // (n * bpe)
    return max(SIM_TILE, rows // SIM_TILE * SIM_TILE)


def _topk_hint(names: list[str], resolved: Mapping[str, Mapping[str, Any]], n: int) -> int:
    """The largest top-k the selected metrics read from the shared streaming pass (capped at n)."""
    want = 1
    opts = resolved.get("xsim")
    if "xsim" in names and isinstance(opts.get("k"), int):
        want = max(want, opts["k"])
    opts = resolved.get("retrieval")
    if "retrieval" in names:
        ks = opts.get("ks")
        ks = (ks,) if isinstance(ks, int) else ks
        try:
            want = max([want, *(k for k in ks if isinstance(k, int))])
        except TypeError:
            pass
    return max(1, min(int(want), n))


def _needs_hint(names: list[str], resolved: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Which optional parts of the shared streaming pass (:func:`_pass1`) the selected metrics read."""
    needs = set()
    if "xsim" in names:
        needs |= {"row_top", "col_top"}
    if "retrieval" in names and resolved["retrieval"].get("ties") == "strict":
        needs.add("col_top")
    if "bitext_f1" in names and resolved["bitext_f1"].get("ties") == "first":
        needs.add("row_arg")
    return needs


def _row_hashes(A: torch.Tensor) -> torch.Tensor:
    """An exact integer hash of each row's bits (int64 arithmetic wraps, so it is deterministic):
    identical rows have identical hashes wherever they sit; different hashes mean different rows."""
    A = (A + 0.0).contiguous()  # -0.0 + 0.0 = +0.0: rows equal as numbers hash alike
    bits = A.view(torch.int64 if A.dtype == torch.float64 else torch.int32).to(torch.int64)
    g = torch.Generator().manual_seed(0x5EED)
    coef = torch.randint(1, 2**62, (A.shape[-1],), generator=g, dtype=torch.int64).to(A.device) | 1
    return (bits * coef).sum(dim=-1)


def _distinct_rows(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The distinct rows of ``A`` (m, d) in order of first occurrence, and each row's index among
    them (``None`` when every row is distinct: then the first result is ``A`` itself).

    Fast path: rows whose exact bit hashes are all different are all different (one 1-D sort of m
    integers and one synchronisation); only when two hashes agree are the rows compared whole."""
    h = _row_hashes(A)
    hu, inv = torch.unique(h, return_inverse=True)
    if hu.shape[0] == A.shape[0]:
        return A, None
    # group by hash; the grouping is exact when every row equals its group's first row (no collision)
    first_of = torch.full((hu.shape[0],), A.shape[0], dtype=torch.long, device=A.device)
    first_of.scatter_reduce_(0, inv, torch.arange(A.shape[0], device=A.device), reduce="amin")
    if bool((A == A[first_of[inv]]).all()):
        uniq = hu  # only its length is used below
    else:  # a true hash collision: compare whole rows
        uniq, inv = torch.unique(A, dim=0, return_inverse=True)
    if uniq.shape[0] == A.shape[0]:
        return A, None
    first = torch.full((uniq.shape[0],), A.shape[0], dtype=torch.long, device=A.device)
    first.scatter_reduce_(0, inv, torch.arange(A.shape[0], device=A.device), reduce="amin")
    order = torch.argsort(first)  # distinct rows by first occurrence
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0], device=A.device)
    return A[first[order]], rank[inv]


class _SimLayer:
    """One layer's cosine matrix, computed so that identical embeddings give identical similarities
    *by construction*: every distinct pivot row is multiplied by every distinct other row exactly
    once, in fixed :data:`SIM_TILE`-row tiles of the distinct pivot rows (each a fresh contiguous
    copy), and duplicates are gathered from that one product. A BLAS kernel rounds a dot product
    differently depending on where it falls in the product (edge panels, vector lanes), so two
    copies of a sentence multiplied separately can differ in the last bit and turn an exact tie
    into a strict win. Without duplicates this is the plain tiled product, bit for bit."""

    def __init__(self, xn: torch.Tensor, yn: torch.Tensor):
        self.xu, self.xinv = _distinct_rows(xn)
        yu, self.yinv = _distinct_rows(yn)
        self.yuT = yu.clone().T
        self._tile: tuple[int, torch.Tensor] | None = None

    def _tile_rows(self, t: int) -> torch.Tensor:
        if self._tile is None or self._tile[0] != t:
            self._tile = (t, self.xu[t * SIM_TILE:(t + 1) * SIM_TILE].clone() @ self.yuT)
        return self._tile[1]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of S (pivot rows x other rows)."""
        if self.xinv is None:  # each tile's product written in place (no concatenation copy)
            S = torch.empty(stop - start, self.yuT.shape[1], dtype=self.xu.dtype, device=self.xu.device)
            for t in range(start, stop, SIM_TILE):
                u = min(t + SIM_TILE, stop)
                torch.mm(self.xu[t:u].clone(), self.yuT, out=S[t - start:u - start])
        else:
            u = self.xinv[start:stop]
            S = torch.empty(stop - start, self.yuT.shape[1], dtype=self.xu.dtype, device=self.xu.device)
            tiles = u // SIM_TILE
            for t in torch.unique(tiles).tolist():
                sel = (tiles == t).nonzero().squeeze(-1)
                S[sel] = self._tile_rows(t)[u[sel] - t * SIM_TILE]
        if self.yinv is not None:
            S = S[:, self.yinv]
        return S


def _blocks(pair: PairEmbeddings, layer: int):
    """``(b0, b1, S[layer, b0:b1, :])`` for consecutive row blocks of ``pair.block_rows`` rows."""
    sl = _SimLayer(pair.Xn[layer], pair.Yn[layer])
    for b0 in range(0, pair.n, pair.block_rows):
        b1 = min(b0 + pair.block_rows, pair.n)
        yield b0, b1, sl.rows(b0, b1)


def _n_above_rows(Mb: torch.Tensor, gold: torch.Tensor, b0: int, ties: str,
                  candidates: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_n_above_gold` for rows ``b0:b0+b`` of a score matrix (queries are rows; gold (b,))."""
    b, n = Mb.shape
    r = torch.arange(b, device=Mb.device)
    above = torch.gt(gold.unsqueeze(-1), Mb)
    above.logical_not_()  # not strictly below the gold: ties and NaN rank above it
    if ties == "first":
        cols = torch.arange(n, device=Mb.device).unsqueeze(0)
        above &= ~((Mb == gold.unsqueeze(-1)) & (cols > (r + b0).unsqueeze(-1)))
    if candidates is not None:
        above &= candidates
    return above.sum(dim=-1) - above[r, r + b0].long()  # the gold itself is no competitor


def _n_above_cols(Mb: torch.Tensor, gold: torch.Tensor, b0: int, ties: str,
                  candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Per column j (queries are columns; gold (n,)), the rows ``b0:b0+b`` ranked above ``gold[j]``:
    the transposed form of :func:`_n_above_gold`, summed over the block; ``first``: a tie with row i < j ranks above."""
    b, n = Mb.shape
    r = torch.arange(b, device=Mb.device)
    above = torch.gt(gold.unsqueeze(0), Mb)
    above.logical_not_()
    if ties == "first":
        cols = torch.arange(n, device=Mb.device).unsqueeze(0)
        above &= ~((Mb == gold.unsqueeze(0)) & ((r + b0).unsqueeze(-1) > cols))
    if candidates is not None:
        above &= candidates
    counts = above.sum(dim=0)
    counts[r + b0] -= above[r, r + b0].long()  # the gold itself is no competitor
    return counts


@dataclasses.dataclass
class _Pass1:
    """What one streaming pass over S gives, per layer: the gold diagonal, row and column
    off-diagonal maxima, row argmaxes, row and column top-K values (sorted, with and
    without the gold), and per-row counts of competitors above the gold per tie rule.
    Parts not in ``needs`` are ``None``."""

    K: int
    ties: frozenset
    needs: frozenset
    diag: torch.Tensor  # (L, n)
    row_offmax: torch.Tensor  # (L, n)
    col_offmax: torch.Tensor  # (L, n)
    row_offarg: torch.Tensor  # (L, n) argmax of the row without the gold (first index)
    row_above: dict  # ties -> (L, n) counts
    row_arg: torch.Tensor | None  # (L, n) argmax of the row (first index); needs "row_arg"
    row_top: torch.Tensor | None  # (L, n, K) top-K of each row, the gold included; needs "row_top"
    col_top: torch.Tensor | None  # (L, K, n) top-K of each column, the gold included; needs "col_top"
    col_top_off: torch.Tensor | None  # (L, K, n) top-K of each column without the gold; needs "col_top"


def _drop_gold(top: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Top-(K+1) values of each column (K+1, n), sorted, gold included -> top-K without one copy of the gold.

    Exact multiset arithmetic: if the gold's value is among the K+1, one copy of it goes; else the last one."""
    K1, n = top.shape
    hit = top == gold.unsqueeze(0)
    first = torch.where(hit.any(dim=0), hit.to(torch.int8).argmax(dim=0), torch.full_like(gold, K1 - 1, dtype=torch.long))
    keep = torch.arange(K1, device=top.device).unsqueeze(-1) != first.unsqueeze(0)
    return top.T[keep.T].view(n, K1 - 1).T.contiguous()


def _pass1_full(pair: PairEmbeddings, K: int, ties: Iterable[str] = (), needs: Iterable[str] = ()) -> _Pass1:
    """The full streaming pass, for what the lists of :func:`_pass1` cannot decide (the ``first`` tie rule
    under ties at a list's end, ``candidates="all"``): cached on the pair; redone only if more is asked."""
    K = max(1, min(K, pair.n))
    ties = frozenset(ties) | frozenset(pair.ties_hint)
    needs = frozenset(needs) | frozenset(pair.needs_hint)
    cached = pair.__dict__.get("_pass1")
    if cached is not None and cached.K >= K and ties <= cached.ties and needs <= cached.needs:
        return cached
    if cached is not None:
        ties |= cached.ties
        needs |= cached.needs
        K = max(K, cached.K)
    K = max(K, min(pair.topk_hint, pair.n))
    K1 = min(K + 1, pair.n)  # columns keep one more, to drop the gold exactly
    L, n, dev, dt = pair.L, pair.n, pair.device, pair.dtype
    neg = float("-inf")
    diag = torch.empty(L, n, dtype=dt, device=dev)
    row_offmax = torch.empty(L, n, dtype=dt, device=dev)
    col_offmax = torch.full((L, n), neg, dtype=dt, device=dev)
    row_offarg = torch.empty(L, n, dtype=torch.long, device=dev)
    row_above = {t: torch.empty(L, n, dtype=torch.long, device=dev) for t in ties}
    row_arg = torch.empty(L, n, dtype=torch.long, device=dev) if "row_arg" in needs else None
    row_top = torch.empty(L, n, K, dtype=dt, device=dev) if "row_top" in needs else None
    col_top = torch.empty(L, K, n, dtype=dt, device=dev) if "col_top" in needs else None
    col_top_off = torch.empty(L, K, n, dtype=dt, device=dev) if "col_top" in needs else None
    for layer in range(L):
        ct = None
        for b0, b1, Sb in _blocks(pair, layer):
            r = torch.arange(b1 - b0, device=dev)
            c = r + b0
            D = Sb[r, c]
            diag[layer, b0:b1] = D
            for t in ties:
                row_above[t][layer, b0:b1] = _n_above_rows(Sb, D, b0, t)
            if row_arg is not None:
                row_arg[layer, b0:b1] = Sb.max(dim=-1).indices  # the first maximal value
            if row_top is not None:
                row_top[layer, b0:b1] = Sb.topk(K, dim=-1).values
            if col_top is not None:
                top = Sb.topk(min(K1, b1 - b0), dim=0).values
                ct = top if ct is None else torch.cat([ct, top]).topk(min(K1, ct.shape[0] + top.shape[0]), dim=0).values
            Sb[r, c] = neg  # from here on: the off-diagonal entries
            best = Sb.max(dim=-1)
            row_offmax[layer, b0:b1] = best.values
            row_offarg[layer, b0:b1] = best.indices
            torch.maximum(col_offmax[layer], Sb.amax(dim=0), out=col_offmax[layer])
            del Sb
        if col_top is not None:
            col_top[layer] = ct[:K]
            off = _drop_gold(ct, diag[layer])  # min(K, n - 1) rows
            col_top_off[layer, : off.shape[0]] = off[:K]
            col_top_off[layer, off.shape[0]:] = neg  # K = n: the n-th competitor does not exist
    out = _Pass1(K, ties, needs, diag, row_offmax, col_offmax, row_offarg, row_above, row_arg, row_top, col_top,
                 col_top_off)
    pair.__dict__["_pass1"] = out
    return out


@dataclasses.dataclass
class _Lists:
    """One scan of S per layer: the gold diagonal and, for every row and every column, its ``K1``
    largest entries (sorted, the gold included where it ranks) with their indices.

    MEXA, retrieval, bitext F1 and xSIM with kNN candidates are functions of these lists: the k-th
    largest competitor, the margin of every candidate (a candidate is in the top k), the first index
    of a maximum. Only exact ties that reach the end of a list leave a quantity undecided; then
    :func:`_decide` says so and the metric takes its full path (see the module docstring)."""

    K: int
    K1: int
    diag: torch.Tensor  # (L, n)
    row_val: torch.Tensor  # (L, n, K1) sorted descending
    row_idx: torch.Tensor  # (L, n, K1) column of each entry
    col_val: torch.Tensor  # (L, K1, n) sorted descending down each column
    col_idx: torch.Tensor  # (L, K1, n) row of each entry


def _scan(pair: PairEmbeddings, K: int, slabs: Callable[[int], Iterable]) -> _Lists:
    """Row and column top-(K+1) lists with indices, and the diagonal, from row slabs of S (one pass)."""
    L, n, dev, dt = pair.L, pair.n, pair.device, pair.dtype
    K1 = min(K + 1, n)
    diag = torch.empty(L, n, dtype=dt, device=dev)
    row_val = torch.empty(L, n, K1, dtype=dt, device=dev)
    row_idx = torch.empty(L, n, K1, dtype=torch.long, device=dev)
    col_val = torch.empty(L, K1, n, dtype=dt, device=dev)
    col_idx = torch.empty(L, K1, n, dtype=torch.long, device=dev)
    for layer in range(L):
        cv = ci = None
        for b0, b1, Sb in slabs(layer):
            r = torch.arange(b1 - b0, device=dev)
            diag[layer, b0:b1] = Sb[r, r + b0]
            torch.topk(Sb, K1, dim=-1, out=(row_val[layer, b0:b1], row_idx[layer, b0:b1]))
            if cv is not None and cv.shape[0] == K1 and Sb.device.type == "cpu":
                v, i = _column_candidates(Sb, cv[-1], b0)  # only entries that can enter a list
            else:
                v, i = Sb.topk(min(K1, b1 - b0), dim=0)
                i += b0
            if cv is not None and v.shape[0]:  # merge with the columns' lists so far
                v, i = torch.cat([cv, v]), torch.cat([ci, i])
                v, pos = v.topk(min(K1, v.shape[0]), dim=0)
                i = i.gather(0, pos)
            if cv is None or v.shape[0]:
                cv, ci = v, i
            del Sb
        col_val[layer], col_idx[layer] = cv, ci
    return _Lists(K, K1, diag, row_val, row_idx, col_val, col_idx)


def _column_candidates(Sb: torch.Tensor, floor: torch.Tensor, b0: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries of a row slab not below their column's current K1-th value (the only ones that can
    enter its list; ties included), as a (P, n) table padded with -inf, with their row indices: on a
    CPU, a comparison and a few sparse entries cost far less than a top-k down every column."""
    hit = (Sb >= floor).nonzero()
    n = Sb.shape[1]
    if hit.shape[0] == 0:
        return Sb.new_empty(0, n), torch.empty(0, n, dtype=torch.long)
    r, c = hit[:, 0], hit[:, 1]
    cnt = torch.bincount(c, minlength=n)
    order = torch.argsort(c, stable=True)
    c = c[order]
    r = r[order]
    pos = torch.arange(c.shape[0]) - (torch.cumsum(cnt, 0) - cnt)[c]  # rank within its column
    P = int(cnt.max())
    v = Sb.new_full((P, n), float("-inf"))
    i = torch.zeros(P, n, dtype=torch.long)
    v[pos, c] = Sb[r, c]
    i[pos, c] = r + b0
    return v, i


def _pass1(pair: PairEmbeddings, K: int) -> _Lists:
    """The shared streaming pass of the blocked path: every metric on S reads its lists (:func:`_lists`)."""
    return _scan(pair, K, lambda layer: _blocks(pair, layer))


def _lists(pair: PairEmbeddings, K: int) -> _Lists:
    """The lists for top-``K`` (at least the selected metrics' largest k), cached on the pair: from the
    streaming pass on the blocked path, from the materialised ``pair.sim`` on the dense one."""
    K = max(1, min(max(K, pair.topk_hint), pair.n))
    cached = pair.__dict__.get("_lists")
    if cached is not None and cached.K >= K:
        return cached
    if pair.blocked:
        out = _pass1(pair, K)
    else:
        sim = pair.sim
        out = _scan(pair, K, lambda layer: [(0, pair.n, sim[layer])])
    pair.__dict__["_lists"] = out
    return out


class _Side:
    """One direction of the lists: queries are rows (``p2l``) or columns (``l2p``) of S; each query q
    has its gold ``D[q]``, its sorted top entries ``val (L, n, K1)`` with competitor indices ``idx``, and
    the same without the gold (``off_val``, ``off_idx``: K1 - 1 entries; exact multiset arithmetic:
    the gold's entry goes if it is there, else the last one)."""

    def __init__(self, lists: _Lists, cols: bool):
        self.n, self.K1 = lists.diag.shape[-1], lists.K1
        self.complete = self.K1 == self.n  # every entry of every query is in its list
        self.D = lists.diag
        self.val = lists.col_val.transpose(-1, -2) if cols else lists.row_val
        self.idx = lists.col_idx.transpose(-1, -2) if cols else lists.row_idx
        self.q = torch.arange(self.n, device=self.D.device).view(1, -1, 1)
        gold = self.idx == self.q
        drop = torch.where(gold.any(dim=-1), gold.to(torch.int8).argmax(dim=-1), self.K1 - 1)
        keep = torch.arange(self.K1, device=self.D.device) != drop.unsqueeze(-1)
        shape = (*self.val.shape[:-1], self.K1 - 1)
        self.off_val = self.val[keep].view(shape)
        self.off_idx = self.idx[keep].view(shape)

    def above(self, k: int, ties: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L, n) bool: fewer than k competitors rank above the gold (``_n_above_gold < k``), and the
        queries this cannot decide (None: all decided). Strict: the k-th largest competitor is below the gold."""
        if k >= self.n:  # at most n - 1 competitors
            return torch.ones_like(self.D, dtype=torch.bool), None
        D = self.D.unsqueeze(-1)
        if ties == "strict":
            return self.off_val[..., k - 1] < self.D, None
        count = ((self.off_val > D) | ((self.off_val == D) & (self.off_idx < self.q))).sum(dim=-1)
        undecided = None if self.complete else (self.off_val[..., -1] == self.D)
        return count < k, undecided

    def first_best(self, off: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L, n) first index of the largest entry (``off``: among the competitors), and the undecided."""
        val, idx = (self.off_val, self.off_idx) if off else (self.val, self.idx)
        top = val[..., :1]
        best = torch.where(val == top, idx, self.n).amin(dim=-1)
        return best, None if self.complete else (val[..., -1] == top[..., 0])

    def knn_correct(self, kk: int, ties: str, margin: str, r_p: torch.Tensor, r_o: torch.Tensor,
                    cols: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """xSIM with kNN candidates for these queries: the gold is among the kk nearest and no candidate's
        margin ranks above the gold's (dense :func:`xsim`, entry by entry), and the undecided queries."""
        gold_in, und = self.above(kk, ties)
        kth = self.val[..., kk - 1 : kk]
        cand = (self.val >= kth) & (self.idx != self.q)
        if not self.complete:
            tail = self.val[..., -1] >= kth[..., 0]  # the tie group of the k-th may go on past the list
            und = tail if und is None else und | tail
        if margin == "absolute":
            M, gold_m = self.val, self.D
        else:
            rows = self.q.expand_as(self.idx) if not cols else self.idx
            other = self.idx if not cols else self.q.expand_as(self.idx)
            denom = (r_p.unsqueeze(-1).expand(-1, -1, self.K1).gather(1, rows)
                     + r_o.unsqueeze(-1).expand(-1, -1, self.K1).gather(1, other)) / 2
            M = self.val / denom if margin == "ratio" else self.val - denom
            g = (r_p + r_o) / 2
            gold_m = self.D / g if margin == "ratio" else self.D - g
        gm = gold_m.unsqueeze(-1)
        above = ~(gm > M)
        if ties == "first":
            above &= ~((M == gm) & (self.idx > self.q))
        return gold_in & ~(above & cand).any(dim=-1), und


def _side(lists: _Lists, cols: bool) -> _Side:
    key = "_cols" if cols else "_rows"
    if key not in lists.__dict__:
        lists.__dict__[key] = _Side(lists, cols)
    return lists.__dict__[key]


def _decided(*undecided: torch.Tensor | None) -> bool:
    """Whether no query is left undecided by the lists (one synchronisation)."""
    masks = [u for u in undecided if u is not None]
    return not masks or not bool(torch.stack([m.any() for m in masks]).any())


# --------------------------------------------------------------------------------------
# Metrics on the cosine matrix
# --------------------------------------------------------------------------------------


@register_metric(
    "mexa",
    higher_is_better={"mexa": True, "mexa_p2l": True, "mexa_l2p": True},
    description="MEXA alignment: share of sentences whose translation is the strict nearest neighbour both ways",
)
def mexa(pair: PairEmbeddings, *, directional: bool = False) -> dict[str, torch.Tensor]:
    """MEXA alignment score (Kargaran et al. 2024, "MEXA: Multilingual Evaluation of
    English-Centric LLMs via Cross-Lingual Alignment").

    Per layer: ``(1/n) sum_i 1[S_ii > max_{j!=i} S_ij and S_ii > max_{j!=i} S_ji]`` with
    strict inequalities, so ties are misses. Chance level is about 1/n. Outputs ``mexa``;
    with ``directional=True`` also ``mexa_p2l`` (row condition only) and ``mexa_l2p``
    (column condition only), which equal strict ``retrieval_*@1``. Layer aggregation
    (mean for ARC-style tasks, max for Belebele-style) is left to the caller.
    """
    lists = _lists(pair, 1)
    p2l = lists.diag > _side(lists, False).off_val[..., 0]  # gold beats every other candidate in its row
    l2p = lists.diag > _side(lists, True).off_val[..., 0]  # ... and every other candidate in its column
    out = {"mexa": _mean(p2l & l2p)}
    if directional:
        out["mexa_p2l"] = _mean(p2l)
        out["mexa_l2p"] = _mean(l2p)
    return out


@register_metric(
    "retrieval",
    higher_is_better={"retrieval_p2l@k": True, "retrieval_l2p@k": True},
    description="Top-k retrieval accuracy by cosine, pivot->other and other->pivot (XTREME Tatoeba)",
)
def retrieval(pair: PairEmbeddings, *, ks: Iterable[int] = (1, 5), ties: str = "strict") -> dict[str, torch.Tensor]:
    """Top-k parallel sentence retrieval accuracy (XTREME, Hu et al. 2020, Tatoeba task;
    Artetxe & Schwenk 2019).

    ``acc(P->L)@k = (1/n) sum_i 1[gold i is among the k best candidates of row i of S]``
    and the same on S^T for L->P. Outputs ``retrieval_p2l@k`` and ``retrieval_l2p@k`` for
    each k in ``ks`` (default 1 and 5). Ties (``ties="strict"``, default): gold is in the
    top k iff ``#{j != i : not (S_ii > S_ij)} < k``, i.e. tied competitors rank above
    the gold, consistent with MEXA; ``ties="first"`` ranks as a stable argsort would.
    XTREME used argmax (first index on ties) at a single middle layer; here every layer
    is scored and the caller picks.
    """
    _check_choice("retrieval", "ties", ties, TIE_RULES)
    if isinstance(ks, int):
        ks = (ks,)
    try:
        ks = list(dict.fromkeys(ks))
    except TypeError:
        raise XlingError(f"metric 'retrieval': option 'ks' must be a list of positive integers, got {ks!r}") from None
    if not ks:
        raise XlingError("metric 'retrieval': option 'ks' must not be empty")
    if len(ks) > MAX_KS:  # each k is one output per layer and language: a bound, not a loop over user data
        raise XlingError(f"metric 'retrieval': option 'ks' has {len(ks)} distinct values; at most {MAX_KS}")
    for k in ks:
        _check_pos_int("retrieval", "ks", k)
    out: dict[str, torch.Tensor] = {}
    lists = _lists(pair, min(max(ks), pair.n))
    undecided = []
    for k in ks:
        for key, cols in ((f"retrieval_p2l@{k}", False), (f"retrieval_l2p@{k}", True)):
            ok, und = _side(lists, cols).above(k, ties)
            out[key] = _mean(ok)
            undecided.append(und)
    if _decided(*undecided):
        return out
    out = {}  # exact ties at the end of a list (ties="first"): the full path
    if pair.blocked:
        st = _pass1_full(pair, max(ks), (ties,), ("col_top",) if ties == "strict" else ())
        above_p2l = st.row_above[ties]
        above_l2p = _column_counts(pair, st, ties) if ties == "first" else None
        for k in ks:
            out[f"retrieval_p2l@{k}"] = _mean(above_p2l < k)
            if above_l2p is not None:
                out[f"retrieval_l2p@{k}"] = _mean(above_l2p < k)
            elif k >= pair.n:  # at most n - 1 competitors
                out[f"retrieval_l2p@{k}"] = _mean(torch.ones_like(st.diag, dtype=torch.bool))
            else:  # strict: fewer than k competitors >= gold <=> the k-th largest competitor < gold
                out[f"retrieval_l2p@{k}"] = _mean(st.col_top_off[:, k - 1, :] < st.diag)
        return {key: out[key] for k in ks for key in (f"retrieval_p2l@{k}", f"retrieval_l2p@{k}")}
    S = pair.sim
    above_p2l = _n_above_gold(S, ties)
    above_l2p = _n_above_gold(S.transpose(-1, -2), ties)
    for k in ks:
        out[f"retrieval_p2l@{k}"] = _mean(above_p2l < k)
        out[f"retrieval_l2p@{k}"] = _mean(above_l2p < k)
    return out


def _column_counts(pair: PairEmbeddings, st: _Pass1, ties: str) -> torch.Tensor:
    """(L, n): per column j of S, the competitors i != j ranked above the gold S_jj (a second pass)."""
    counts = torch.zeros(pair.L, pair.n, dtype=torch.long, device=pair.device)
    for layer in range(pair.L):
        for b0, _b1, Sb in _blocks(pair, layer):
            counts[layer] += _n_above_cols(Sb, st.diag[layer], b0, ties)
    return counts


@register_metric(
    "xsim",
    higher_is_better={"xsim_err_p2l": False, "xsim_err_l2p": False},
    description="xSIM error rate with margin scoring (LASER; Artetxe & Schwenk 2019), both directions",
)
def xsim(
    pair: PairEmbeddings,
    *,
    margin: str = "ratio",
    k: int = 4,
    candidates: str = "knn",
    ties: str = "strict",
) -> dict[str, torch.Tensor]:
    """xSIM error rate with margin-based scoring (Artetxe & Schwenk 2019, "Margin-based
    Parallel Corpus Mining with Multilingual Sentence Embeddings"; LASER ``source/xsim.py``).

    ``margin(x, y) = cos(x, y) / ( sum_{z in NN_k(x)} cos(x, z)/(2k) + sum_{z in NN_k(y)} cos(y, z)/(2k) )``
    with k = 4 and each neighbourhood taken in the other language, including the
    candidate itself (plain top-k of the row / column of S; k is capped at n).
    ``err = (1/n) sum_i 1[argmax_{y in NN_k(x_i)} margin(x_i, y) != i]``, reported as
    ``xsim_err_p2l`` (queries in the pivot) and ``xsim_err_l2p``; lower is better. One
    margin matrix is built and read by rows and by columns, so both directions share
    bit-identical scores. An error is counted by index (the retrieved row is not row i),
    as LASER does when asked for index comparison; its default compares the retrieved
    text, which differs only when a corpus repeats a sentence.

    Options: ``margin="ratio"`` (default), ``"distance"`` (cos minus the same
    denominator) or ``"absolute"`` (plain cosine; then xSIM error = 1 - retrieval@1).
    ``candidates="knn"`` (default: LASER's ``source/xsim.py`` and published xSIM numbers;
    only the k cosine-nearest neighbours of the query compete, a gold sentence outside
    them is an error; a candidate tied with the k-th nearest is included, and the gold
    is a candidate only if it is in the top k under the ``ties`` rule) or ``"all"`` (a
    named variant: argmax over every y; usually lower errors than ``knn``). Ties of the
    margin are misses (``ties="strict"``) or broken by first index (``"first"``).
    The ratio margin assumes positive neighbourhood similarities, as real sentence
    embeddings have; with a zero denominator the scores are inf/NaN and count as misses.
    """
    _check_choice("xsim", "margin", margin, ("ratio", "distance", "absolute"))
    _check_choice("xsim", "candidates", candidates, ("all", "knn"))
    _check_choice("xsim", "ties", ties, TIE_RULES)
    k = _check_pos_int("xsim", "k", k)
    if candidates == "knn":
        kk = min(k, pair.n)
        lists = _lists(pair, kk)
        r_p = r_o = None
        if margin != "absolute":  # the mean cosine of each query's kk nearest, as the dense path takes it
            r_p = lists.row_val[..., :kk].contiguous().mean(dim=-1)
            r_o = lists.col_val[:, :kk, :].contiguous().mean(dim=-2)
        ok_p2l, und_p2l = _side(lists, False).knn_correct(kk, ties, margin, r_p, r_o, cols=False)
        ok_l2p, und_l2p = _side(lists, True).knn_correct(kk, ties, margin, r_p, r_o, cols=True)
        if _decided(und_p2l, und_l2p):
            return {"xsim_err_p2l": 1.0 - _mean(ok_p2l), "xsim_err_l2p": 1.0 - _mean(ok_l2p)}
    if pair.blocked:
        return _xsim_blocked(pair, margin, min(k, pair.n), candidates, ties)
    S = pair.sim
    kk = min(k, pair.n)
    if margin == "absolute":
        M = S
    else:
        r_p = S.topk(kk, dim=-1).values.mean(dim=-1)  # (L, n): mean cos of pivot i to its kNN in other
        r_o = S.topk(kk, dim=-2).values.mean(dim=-2)  # (L, n): mean cos of other j to its kNN in pivot
        denom = (r_p.unsqueeze(-1) + r_o.unsqueeze(-2)) / 2
        M = S / denom if margin == "ratio" else S - denom
    out = {}
    for key, Mq, Sq in (("xsim_err_p2l", M, S), ("xsim_err_l2p", M.transpose(-1, -2), S.transpose(-1, -2))):
        if candidates == "all":
            correct = _n_above_gold(Mq, ties) == 0
        else:
            kth = Sq.topk(kk, dim=-1).values[..., -1:]  # k-th largest cosine of each query (with multiplicity)
            cand = Sq >= kth  # #{m: S_qm > S_qj} < k
            gold_in = _n_above_gold(Sq, ties) < kk
            correct = gold_in & (_n_above_gold(Mq, ties, candidates=cand) == 0)
        out[key] = 1.0 - _mean(correct)
    return out


def _xsim_blocked(pair: PairEmbeddings, margin: str, kk: int, candidates: str, ties: str) -> dict[str, torch.Tensor]:
    """:func:`xsim` in two streaming passes: neighbourhoods and gold scores first, then margins."""
    st = _pass1_full(pair, kk, (), ("row_top", "col_top"))
    L, n, dev = pair.L, pair.n, pair.device
    ok_p2l = torch.empty(L, n, dtype=torch.bool, device=dev)
    ok_l2p = torch.empty(L, n, dtype=torch.bool, device=dev)
    for layer in range(L):
        D = st.diag[layer]
        if margin != "absolute":
            r_p = st.row_top[layer, :, :kk].contiguous().mean(dim=-1)  # as the dense S.topk(kk, -1).values.mean(-1)
            r_o = st.col_top[layer, :kk, :].contiguous().mean(dim=-2)
            gold_m = D / ((r_p + r_o) / 2) if margin == "ratio" else D - (r_p + r_o) / 2
        else:
            gold_m = D
        kth_row = st.row_top[layer, :, kk - 1]
        kth_col = st.col_top[layer, kk - 1, :]
        col_s = torch.zeros(n, dtype=torch.long, device=dev)
        col_m = torch.zeros(n, dtype=torch.long, device=dev)
        for b0, b1, Sb in _blocks(pair, layer):
            if margin == "absolute":
                Mb = Sb
            else:
                denom = (r_p[b0:b1].unsqueeze(-1) + r_o.unsqueeze(-2)) / 2
                Mb = Sb / denom if margin == "ratio" else Sb - denom
                del denom
            if candidates == "all":
                ok_p2l[layer, b0:b1] = _n_above_rows(Mb, gold_m[b0:b1], b0, ties) == 0
                col_m += _n_above_cols(Mb, gold_m, b0, ties)
            else:
                cand = Sb >= kth_row[b0:b1].unsqueeze(-1)
                gold_in = _n_above_rows(Sb, D[b0:b1], b0, ties) < kk
                ok_p2l[layer, b0:b1] = gold_in & (_n_above_rows(Mb, gold_m[b0:b1], b0, ties, cand) == 0)
                cand = Sb >= kth_col.unsqueeze(0)
                col_s += _n_above_cols(Sb, D, b0, ties)
                col_m += _n_above_cols(Mb, gold_m, b0, ties, cand)
                del cand
            del Mb, Sb
        ok_l2p[layer] = (col_m == 0) if candidates == "all" else (col_s < kk) & (col_m == 0)
    return {"xsim_err_p2l": 1.0 - _mean(ok_p2l), "xsim_err_l2p": 1.0 - _mean(ok_l2p)}


@register_metric(
    "bitext_f1",
    higher_is_better={"bitext_f1": True, "bitext_acc": True, "bitext_precision": True, "bitext_recall": True},
    description="MTEB BitextMining: top-1 cosine search pivot->other, weighted F1 and accuracy",
)
def bitext_f1(pair: PairEmbeddings, *, ties: str = "strict", precision_recall: bool = False) -> dict[str, torch.Tensor]:
    """Bitext mining F1 as in MTEB's BitextMining tasks (Muennighoff et al. 2023, "MTEB";
    ``BitextMiningEvaluator``).

    Each pivot sentence i (MTEB's ``sentence1``) predicts the other-language sentence
    with the highest cosine; gold labels are ``range(n)``, and scores are
    sklearn's ``f1_score(gold, pred, average="weighted", zero_division=0)`` and
    ``accuracy_score``, computed here in closed form: every gold class has support 1, so
    ``F1 = (1/n) sum_i 1[pred_i = i] * 2 / (1 + #{m: pred_m = i})`` (a hub target that
    attracts many queries is penalised; F1 <= accuracy). Outputs ``bitext_f1`` and
    ``bitext_acc``; ``precision_recall=True`` adds ``bitext_precision`` (weighted) and
    ``bitext_recall`` (= accuracy).

    Ties: ``"strict"`` (default) predicts i only if it strictly beats every other
    candidate, otherwise the first-index best of the others (accuracy equals strict
    ``retrieval_p2l@1``); ``"first"`` is plain argmax with the first index on ties,
    which is what MTEB's ``torch.topk`` usually does (not guaranteed there).
    """
    _check_choice("bitext_f1", "ties", ties, TIE_RULES)
    n = pair.n
    idx = torch.arange(n, device=pair.device)
    lists = _lists(pair, 1)
    rows = _side(lists, False)
    if ties == "first":
        pred, und = rows.first_best(off=False)
        correct = pred == idx
    else:
        correct, _ = rows.above(1, "strict")
        best, und = rows.first_best(off=True)
        pred = torch.where(correct, idx, best)
        und = None if und is None else und & ~correct  # a query whose gold wins needs no runner-up
    if _decided(und):
        pass
    elif pair.blocked:  # exact ties at the end of a list: the full path
        st = _pass1_full(pair, 1, (ties,) if ties == "strict" else (), ("row_arg",) if ties == "first" else ())
        if ties == "first":
            pred = st.row_arg
            correct = pred == idx
        else:
            correct = st.row_above["strict"] == 0
            pred = torch.where(correct, idx, st.row_offarg)
    else:
        S = pair.sim
        if ties == "first":
            pred = S.argmax(dim=-1)  # documented: index of the first maximal value
            correct = pred == idx
        else:
            correct = _n_above_gold(S, "strict") == 0
            other_best = S.masked_fill(_eye(n, S.device), float("-inf")).argmax(dim=-1)
            pred = torch.where(correct, idx, other_best)
    counts = torch.zeros(pair.L, n, dtype=torch.float64, device=pair.device)
    counts.scatter_add_(1, pred, torch.ones_like(pred, dtype=torch.float64))  # predictions per target
    hit = correct.to(torch.float64)
    out = {
        "bitext_f1": (hit * 2.0 / (1.0 + counts)).mean(dim=-1),
        "bitext_acc": hit.mean(dim=-1),
    }
    if precision_recall:
        out["bitext_precision"] = (hit / counts.clamp(min=1.0)).mean(dim=-1)
        out["bitext_recall"] = out["bitext_acc"].clone()
    return out


# --------------------------------------------------------------------------------------
# Representation similarity (feature space)
# --------------------------------------------------------------------------------------


@register_metric(
    "cka",
    higher_is_better={"cka": True},
    description="Linear CKA between the two sides' column-centred embeddings (Kornblith et al. 2019)",
)
def cka(pair: PairEmbeddings, *, form: str = "auto") -> dict[str, torch.Tensor]:
    """Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of Neural
    Network Representations Revisited").

    With X, Y column-centred (n x d): ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``.
    ``form="feature"`` uses these d x d products, ``form="gram"`` the identical n x n
    form ``<XX^T, YY^T>_F / (||XX^T||_F ||YY^T||_F)``; ``"auto"`` (default) picks the
    smaller. Products run in the pair's dtype, the squared-entry sums in float64.
    Invariant to orthogonal transforms and isotropic scaling of either side. If either
    side has no variance at all (every sentence identical), CKA is undefined (0/0) and
    is reported as 0.
    """
    _check_choice("cka", "form", form, ("auto", "gram", "feature"))
    Xc, Yc = pair.Xc, pair.Yc
    gram = form == "gram" or (form == "auto" and pair.n <= pair.d)
    nums, nxs, nys = [], [], []
    for layer in range(pair.L):  # one product per layer: the same bits whatever the layer chunking
        x, y = Xc[layer], Yc[layer]
        if gram:
            Kx = (x @ x.T).to(torch.float64)
            Ky = (y @ y.T).to(torch.float64)
            nums.append((Kx * Ky).sum())
            nxs.append(Kx.square().sum().sqrt())
            nys.append(Ky.square().sum().sqrt())
        else:
            nums.append((y.T @ x).to(torch.float64).square().sum())
            nxs.append((x.T @ x).to(torch.float64).square().sum().sqrt())
            nys.append((y.T @ y).to(torch.float64).square().sum().sqrt())
    num, nx, ny = torch.stack(nums), torch.stack(nxs), torch.stack(nys)
    den = nx * ny
    ok = den > 0
    value = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    return {"cka": value.clamp(0.0, 1.0)}


@register_metric(
    "anc",
    higher_is_better={"anc": True, "anc_signed": True},
    description="Average neuron-wise Pearson correlation across parallel sentences (Del & Fishel 2021)",
)
def anc(pair: PairEmbeddings) -> dict[str, torch.Tensor]:
    """Average neuron-wise correlation (Del & Fishel 2021, "Establishing Interlingua in
    Multilingual Language Models"; also "Cross-lingual similarity of multilingual
    representations revisited", 2022).

    ``ANC = (1/d) sum_j |pearson_n(X[:, j], Y[:, j])|``, the correlation of neuron j over
    the n parallel sentences. Outputs ``anc`` (absolute, the default in methods.md) and
    ``anc_signed`` (the signed average, which the public code also reports).

    Constant neurons: a column whose n values are all exactly equal on either side
    (zero variance) has no defined correlation; it is **excluded from the average**
    (the mean runs over the remaining columns), so identical inputs still score 1 and no
    NaN appears. A layer where every column is excluded scores 0.
    """
    X, Y, Xc, Yc = pair.X, pair.Y, pair.Xc, pair.Yc
    const = (X.amax(dim=1) == X.amin(dim=1)) | (Y.amax(dim=1) == Y.amin(dim=1))  # (L, d)
    num = (Xc * Yc).sum(dim=1)
    den = torch.sqrt(Xc.square().sum(dim=1) * Yc.square().sum(dim=1))
    valid = ~const & (den > 0)
    r = torch.where(valid, num / torch.where(valid, den, torch.ones_like(den)), torch.zeros_like(den))
    r = r.clamp(-1.0, 1.0).to(torch.float64)
    count = valid.sum(dim=-1).to(torch.float64)
    safe = count.clamp(min=1.0)
    return {
        "anc": r.abs().sum(dim=-1) / safe,
        "anc_signed": r.sum(dim=-1) / safe,
    }


def _svd_basis(A: torch.Tensor, keep: float) -> torch.Tensor:
    """Orthonormal basis (n x r, float64) of the top left singular directions of the
    centred ``A`` (n x d) that explain a fraction ``keep`` of its variance (sum of
    squared singular values). Uses the eigendecomposition of the smaller of the two
    Gram matrices in float64; directions below numerical rank are always dropped."""
    A = A.to(torch.float64)
    n, d = A.shape
    if n <= d:
        evals, vecs = torch.linalg.eigh(A @ A.T)  # left singular vectors directly
    else:
        evals, vecs = torch.linalg.eigh(A.T @ A)  # right singular vectors
    evals = evals.flip(0).clamp(min=0.0)
    vecs = vecs.flip(1)
    total = evals.sum()
    if total <= 0:
        return A.new_zeros(n, 0)
    numeric_rank = int((evals > evals[0] * max(n, d) * torch.finfo(torch.float64).eps).sum())
    cum = torch.cumsum(evals, 0) / total
    r = int((cum < keep - 1e-12).sum()) + 1  # smallest r with cum[r-1] >= keep
    r = max(1, min(r, numeric_rank))
    if n <= d:
        return vecs[:, :r]
    # U = A V / s; orthonormal up to round-off of order eps * s_max / s_r (float64).
    return (A @ vecs[:, :r]) / evals[:r].sqrt()


@register_metric(
    "svcca",
    higher_is_better={"svcca": True},
    description="SVCCA: SVD to 99% variance on each side, then mean CCA correlation (Raghu et al. 2017)",
)
def svcca(pair: PairEmbeddings, *, keep: float = 0.99) -> dict[str, torch.Tensor]:
    """SVCCA (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis
    for Deep Learning Dynamics and Interpretability").

    Per layer and side, the column-centred n x d embeddings are SVD-reduced to the top
    directions explaining a fraction ``keep`` (default 0.99) of the variance (squared
    singular values; directions below numerical rank are always dropped). CCA between
    the reduced sides: the canonical correlations are the singular values of
    ``Ux^T Uy`` (orthonormal bases of the two reduced subspaces); the score is their mean
    over ``min(rx, ry)`` correlations. Unregularised (the reference code adds a small
    epsilon). Caution: with ``max(rx, ry)`` close to n the correlations approach 1
    whatever the data, so use n well above the kept dimensions. A side with no variance
    scores 0.
    """
    try:
        keep = float(keep)
    except (TypeError, ValueError):
        raise XlingError(f"metric 'svcca': option 'keep' must be a number in (0, 1], got {keep!r}") from None
    if not 0.0 < keep <= 1.0:
        raise XlingError(f"metric 'svcca': option 'keep' must be in (0, 1], got {keep!r}")
    values = []
    for layer in range(pair.L):  # ranks differ per layer; L is small
        Ux = _svd_basis(pair.Xc[layer], keep)
        Uy = _svd_basis(pair.Yc[layer], keep)
        if Ux.shape[1] == 0 or Uy.shape[1] == 0:
            values.append(torch.zeros((), dtype=torch.float64, device=pair.device))
            continue
        M = Ux.transpose(0, 1) @ Uy  # (rx, ry); its singular values are the canonical correlations
        G = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
        rho = torch.linalg.eigvalsh(G).clamp(0.0, 1.0).sqrt()  # min(rx, ry) correlations
        values.append(rho.mean())
    return {"svcca": torch.stack(values)}
