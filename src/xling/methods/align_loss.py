"""Middle-layer representation alignment as a training objective.

Liu & Niehues (2025), "Middle-Layer Representation Alignment for Cross-Lingual
Transfer in Fine-Tuned LLMs": while a model is fine-tuned on a task, a
contrastive loss pulls the representations of parallel sentences ``(x_i, y_i)``
together at one middle layer ``l``. Each sentence is pooled at ``l`` by the mean
over its real (non-padding) tokens, and

    L_align = 1/2 [ CE(S, I) + CE(S^T, I) ],   S_ij = cos(h(x_i), h(y_j)) / tau

is InfoNCE with in-batch negatives, symmetric in both directions, temperature
``tau = 0.1``. Their setting alternates alignment and task batches and trains
LoRA; :func:`xling.methods.train.fit` offers both that (``alternate``) and a
weighted sum per step (``sum``).

Pieces, all pure (tensors and models in, tensors out):

* :func:`info_nce`: the loss on two ``[n, d]`` batches of pooled vectors;
* :class:`LayerTap` and :func:`pooled_layer`: the mean-pooled hidden state at
  hidden-state index ``l`` (0 = embeddings, ``i`` = output of block ``i - 1``, as
  ``output_hidden_states``) of any encoder or decoder, found with
  :func:`xling.models.layers.find_blocks`. The forward pass stops right after
  block ``l - 1`` (the blocks above it do not run), so an alignment step at the
  middle layer costs about half a forward pass;
* :func:`pick_align_layer`: the documented ``--align-layer auto`` rule;
* :func:`overlapping` / :func:`normalize_text`: the check that alignment pairs
  never contain a task's dev or test item.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from xling.data.overlap import normalize_text, overlapping  # noqa: F401 - re-exported
from xling.errors import XlingError

DEFAULT_TEMPERATURE = 0.1
MODES = ("alternate", "sum")


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
             symmetric: bool = True) -> torch.Tensor:
    """InfoNCE of paired rows ``a[i] <-> b[i]`` with in-batch negatives on cosine similarity.

    ``a``, ``b``: ``[n, d]``; row ``i`` of one is the translation of row ``i`` of
    the other, every other row is a negative. Symmetric (the mean of the a->b and
    b->a cross-entropies) unless ``symmetric=False`` (a->b only).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise XlingError(f"info_nce: expected two [n, d] tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not temperature > 0:
        raise XlingError(f"alignment temperature must be positive, got {temperature}")
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


class _Stop(Exception):
    """Raised by the tap's hook to end the forward pass after the tapped block."""


def _inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The backbone that runs the blocks: unwrap PEFT, then a head model's base (``bert``, ``model``)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    prefix = getattr(model, "base_model_prefix", "")
    inner = getattr(model, prefix, None) if prefix else None
    return inner if isinstance(inner, torch.nn.Module) else model


class LayerTap:
    """Capture hidden-state entry ``layer`` of any transformers model, and stop there.

    ``layer`` counts like ``output_hidden_states``: 0 is the embedding output
    (captured with a hook on block 0's input), ``i >= 1`` the output of block ``i - 1``.
    """

    def __init__(self, model: torch.nn.Module, layer: int):
        from xling.models.layers import find_blocks, num_layers

        self.model = model
        self.backbone = _inner_model(model)
        config = getattr(self.backbone, "config", None) or getattr(model, "config", None)
        n = num_layers(config)
        if not 0 <= int(layer) <= n:
            raise XlingError(f"alignment layer {layer} is out of range: the model has hidden states 0..{n}")
        self.layer = int(layer)
        self.num_layers = n
        self.blocks = find_blocks(self.backbone, n)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra) -> torch.Tensor:
        """Hidden states ``[batch, seq, d]`` at the tapped layer (with gradients)."""
        captured: list[torch.Tensor] = []
        if self.layer == 0:
            def pre(_module, args, kwargs):
                h = args[0] if args else kwargs.get("hidden_states")
                captured.append(h)
                raise _Stop

            handle = self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
        else:
            def post(_module, _args, output):
                captured.append(output[0] if isinstance(output, (tuple, list)) else output)
                raise _Stop

            handle = self.blocks[self.layer - 1].register_forward_hook(post)
        try:
            self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise XlingError(f"the forward pass of {type(self.backbone).__name__} never reached block "
                             f"{max(0, self.layer - 1)}")
        return captured[0]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens (``attention_mask == 1``) of ``[batch, seq, d]``."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def pooled_layer(tap: LayerTap, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled hidden state at the tap's layer for one tokenized batch."""
    extra = {k: v for k, v in batch.items() if k == "token_type_ids"}
    h = tap(batch["input_ids"], batch["attention_mask"], **extra)
    return mean_pool(h, batch["attention_mask"])


def alignment_loss(tap: LayerTap, src: Mapping[str, torch.Tensor], tgt: Mapping[str, torch.Tensor],
                   temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """L_align of one batch of parallel sentences (``src[i]`` translates ``tgt[i]``)."""
    return info_nce(pooled_layer(tap, src), pooled_layer(tap, tgt), temperature)


def middle_band(num_layers: int) -> tuple[int, int]:
    """Hidden-state indices of the middle half of a model with ``num_layers`` blocks: ``[ceil(L/4), floor(3L/4)]``."""
    lo = max(1, -(-num_layers // 4))
    hi = max(lo, (3 * num_layers) // 4)
    return lo, hi


def pick_align_layer(scores: Mapping[int, float], num_layers: int) -> int:
    """The ``--align-layer auto`` rule.

    Among the hidden states of the middle half of the model (``middle_band``:
    layers ceil(L/4) .. floor(3L/4); Liu & Niehues align the middle layer, 16 of
    32), take the one where the base model's mean alignment score (``xling
    align``'s MEXA over the languages to be aligned, higher is better) is highest:
    the layer where the languages already share the most is the one a contrastive
    loss can pull together without fighting the layers that map to and from the
    vocabulary. Ties go to the layer nearest L/2. Without a finite score in the
    band, the middle layer round(L/2).
    """
    lo, hi = middle_band(num_layers)
    band = [(layer, float(v)) for layer, v in scores.items() if lo <= layer <= hi and v == v]
    if not band:
        return max(1, round(num_layers / 2))
    best = max(v for _, v in band)
    ties = [layer for layer, v in band if v >= best - 1e-12]
    return min(ties, key=lambda layer: (abs(layer - num_layers / 2), layer))


__all__ = ["info_nce", "LayerTap", "mean_pool", "pooled_layer", "alignment_loss", "pick_align_layer",
           "middle_band", "normalize_text", "overlapping", "DEFAULT_TEMPERATURE", "MODES"]
