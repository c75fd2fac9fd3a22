"""Feed-forward neurons: where their activation lives, how often it fires per language, and switching them off.

Tang et al. 2024 ("Language-Specific Neurons: The Key to Multilingual Capabilities in Large
Language Models") count, per feed-forward neuron, the tokens of each language on which its
activation is positive: for gated MLPs (Llama, Qwen, Mistral, Gemma) the activation is
``act_fn(gate_proj(x))``, the factor that multiplies ``up_proj(x)``; for plain MLPs (GPT-2,
BLOOM, BERT) the output of the activation function. Both are the output of the *activation
module* inside each block's MLP (transformers builds every activation as a module from
``ACT2FN``), so :func:`find_activations` locates it structurally: the one parameter-free
module in each block whose output's last dimension is the intermediate size. No
per-architecture code; a block with none or several such modules is refused in one line.

:class:`ActivationCounter` streams the counts with forward hooks, padding excluded, in memory
``O(layers x d_ff)`` per language (``n`` tokens and ``over_zero[layer, neuron]``, as the authors
store them). :class:`NeuronAblation` sets chosen neurons' activations to 0 (the authors'
deactivation), so the MLP's output no longer depends on them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from xling.errors import XlingError
from xling.models.layers import Blocks, find_blocks, num_layers


def intermediate_size(config) -> int:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("intermediate_size", "n_inner", "ffn_dim", "d_ff"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    if isinstance(d, int):
        return 4 * d  # GPT-2 / BLOOM convention when n_inner is None
    raise XlingError(f"cannot tell the feed-forward size of model type {getattr(cfg, 'model_type', '?')}")


def _is_activation(module: nn.Module) -> bool:
    if any(True for _ in module.parameters(recurse=True)) or list(module.children()):
        return False
    mod = type(module).__module__
    return mod.startswith("torch.nn.modules.activation") or mod.startswith("transformers.activations") or \
        "activation" in mod.lower() or type(module).__name__.lower().endswith(("gelu", "silu", "relu", "activation"))


def find_activations(model: nn.Module) -> tuple[Blocks, list[nn.Module], int]:
    """``(blocks, activation module per block, d_ff)`` for any transformers model (see the module doc)."""
    n = num_layers(model.config)
    blocks = find_blocks(model, n)
    d_ff = intermediate_size(model.config)
    acts = []
    for i, block in enumerate(blocks.modules):
        found = [(name, m) for name, m in block.named_modules() if name and _is_activation(m)]
        # attention blocks hold softmax/dropout modules; the MLP's activation is the one in an "mlp"-like
        # child when several are found, else the only one
        if len(found) > 1:
            mlp_like = [(nm, m) for nm, m in found if any(k in nm.lower() for k in ("mlp", "ffn", "feed", "intermediate"))]
            found = mlp_like or found
        if len(found) != 1:
            raise XlingError(
                f"cannot find the feed-forward activation of block {i} of {type(model).__name__} "
                f"({len(found)} candidate modules: {', '.join(nm for nm, _ in found) or 'none'})"
            )
        acts.append(found[0][1])
    return blocks, acts, d_ff


class ActivationCounter:
    """Count positive activations per (layer, neuron) and tokens, padding excluded.

    Use as ``with counter.attach(model): counter.run(model, ids, mask)`` per batch; read ``n`` and
    ``over_zero`` (int64, ``(layers, d_ff)``). Hooks check that each activation has ``d_ff`` units."""

    def __init__(self, model: nn.Module):
        self.blocks, self.acts, self.d_ff = find_activations(model)
        L = len(self.acts)
        device = next(model.parameters()).device
        self.over_zero = torch.zeros(L, self.d_ff, dtype=torch.long, device=device)
        self.n = 0
        self._mask: torch.Tensor | None = None
        self._seen: set[int] = set()

    def _hook(self, layer: int):
        def fn(_mod, _inp, out):
            if out.shape[-1] != self.d_ff:
                raise XlingError(f"feed-forward activation of layer {layer} has {out.shape[-1]} units, expected {self.d_ff}")
            # the count as one matrix product (mask row @ positive indicators), about twice as fast as a boolean
            # sum on CPU; float32 sums of 0/1 are exact below 2**24 tokens per batch
            pos = (out > 0).reshape(-1, self.d_ff).to(torch.float32)
            weights = (self._mask.reshape(1, -1).to(torch.float32) if self._mask is not None
                       else torch.ones(1, pos.shape[0], dtype=torch.float32, device=pos.device))
            if pos.shape[0] >= 2 ** 24:
                raise XlingError(f"neuron counting: {pos.shape[0]} tokens in one batch; use a smaller --batch-size")
            self.over_zero[layer] += (weights @ pos)[0].to(torch.long)
            self._seen.add(layer)
        return fn

    @contextlib.contextmanager
    def attach(self, model: nn.Module) -> Iterator["ActivationCounter"]:
        handles = [a.register_forward_hook(self._hook(i)) for i, a in enumerate(self.acts)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def run(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self._mask = attention_mask.bool()
        self._seen.clear()
        try:
            model(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            self._mask = None
        if len(self._seen) != len(self.acts):
            raise XlingError(f"feed-forward hooks fired in {len(self._seen)} of {len(self.acts)} layers")
        self.n += int(attention_mask.sum())


@contextlib.contextmanager
def NeuronAblation(model: nn.Module, neurons: Mapping[int, Sequence[int]]) -> Iterator[None]:
    """Within the block, the activations of ``neurons[layer]`` (neuron ids) are set to 0 in every layer listed."""
    _blocks, acts, d_ff = find_activations(model)
    handles = []
    for layer, ids in neurons.items():
        if not 0 <= int(layer) < len(acts):
            raise XlingError(f"ablation: layer {layer} out of range 0..{len(acts) - 1}")
        ids = sorted({int(i) for i in ids})
        if not ids:
            continue
        if ids[0] < 0 or ids[-1] >= d_ff:
            raise XlingError(f"ablation: neuron ids of layer {layer} outside 0..{d_ff - 1}")
        index = torch.tensor(ids, dtype=torch.long)

        def fn(_mod, _inp, out, index=index):
            out = out.clone()
            out[..., index.to(out.device)] = 0
            return out

        handles.append(acts[int(layer)].register_forward_hook(fn))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["ActivationCounter", "NeuronAblation", "find_activations", "intermediate_size"]
