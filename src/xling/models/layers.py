"""One architecture-agnostic way to reach the transformer blocks of any model.

Every transformers encoder and decoder keeps its blocks in a single
``nn.ModuleList`` whose length equals the configured number of layers
(``encoder.layer`` for BERT/XLM-R, ``layers`` for Llama/Qwen/Mistral, ``h`` for
GPT-2, ``encoder.block`` for T5 encoders, ...). Instead of a table of names per
architecture, :func:`find_blocks` looks for that list structurally, so new
architectures work without changes.

Hidden-state indexing follows transformers' ``output_hidden_states``: entry 0 is
the embedding output and entry ``i`` (1-based) the output of block ``i - 1``, so a
model with ``L`` blocks has ``L + 1`` hidden-state entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from xling.errors import XlingError


def num_layers(config) -> int:
    """Number of transformer blocks declared by a transformers config."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise XlingError(f"cannot tell the number of layers of model type {getattr(config, 'model_type', '?')}")


@dataclass(frozen=True)
class Blocks:
    """The block list of a model: ``path`` is its dotted name, ``modules`` the list."""

    path: str
    modules: nn.ModuleList

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, i: int) -> nn.Module:
        return self.modules[i]


def find_blocks(model: nn.Module, expected: int | None = None) -> Blocks:
    """Locate the transformer block list of ``model``.

    Picks the ``nn.ModuleList`` whose length equals ``expected`` (by default the
    config's layer count) and whose entries are all of one class; on ties the
    shallowest wins (e.g. a decoder's ``layers`` rather than a nested list).
    """
    if expected is None and getattr(model, "config", None) is not None:
        expected = num_layers(model.config)
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if expected is not None and len(module) != expected:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        # Prefer block lists whose entries hold parameters of their own (not e.g. dropout lists).
        n_params = sum(p.numel() for p in module[0].parameters())
        if n_params == 0:
            continue
        candidates.append((name.count("."), -n_params, name, module))
    if not candidates:
        raise XlingError(
            f"cannot find the transformer blocks of {type(model).__name__} (expected {expected} layers)"
        )
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, name, module = candidates[0]
    return Blocks(name, module)


def parse_layers(spec: str | list[int] | None, n_hidden: int) -> list[int]:
    """Parse a layer selection against ``n_hidden`` hidden-state entries (L + 1).

    Accepts ``None``/``"all"`` (every entry), comma lists and ranges
    (``"0,6,12"``, ``"4-8"``), negative indices from the end (``"-1"`` = last)
    and ``"middle"``. Out-of-range layers raise :class:`XlingError`.
    """
    if spec is None or spec == "all":
        return list(range(n_hidden))
    if isinstance(spec, (list, tuple)):
        items = [str(x) for x in spec]
    else:
        items = [s.strip() for s in str(spec).split(",") if s.strip()]
    out: list[int] = []

    def norm(tok: str) -> int:
        try:
            v = int(tok)
        except ValueError:
            raise XlingError(f"invalid layer '{tok}' (use numbers, ranges like 4-8, 'middle' or 'all')") from None
        if v < 0:
            v += n_hidden
        if not 0 <= v < n_hidden:
            raise XlingError(f"layer {tok} is out of range: the model has hidden states 0..{n_hidden - 1}")
        return v

    for item in items:
        if item == "middle":
            out.append(n_hidden // 2)
        elif "-" in item[1:]:
            a, b = item[0] + item[1:].split("-", 1)[0], item[1:].split("-", 1)[1]
            lo, hi = norm(a), norm(b)
            if lo > hi:
                raise XlingError(f"invalid layer range '{item}'")
            out.extend(range(lo, hi + 1))
        else:
            out.append(norm(item))
    if not out:
        raise XlingError("no layers selected")
    return sorted(set(out))
