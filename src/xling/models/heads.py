"""The decoder's own read-out, found without per-architecture code: final norm, unembedding, soft-capping.

The logit lens (nostalgebraist 2020; Wendler et al. 2024, "Do Llamas Work in English? On the
Latent Language of Multilingual Transformers") reads every hidden state ``h_l`` through the
model's own read-out: ``logits_l = cap(W_U norm_f(h_l) + b)``. Every transformers decoder keeps
the three pieces in the same places structurally:

* the unembedding is ``model.get_output_embeddings()`` (a ``Linear``; tied or untied to the
  input embedding, it is the same module the model uses);
* the final norm is the one child of the base model (the module that holds the block list)
  that is neither the block list nor an embedding and whose parameters are all vectors of the
  hidden size (``norm`` in Llama, Qwen, Mistral and Gemma, ``ln_f`` in GPT-2,
  ``final_layernorm`` in Phi); a model without one reads its last block directly;
* logit soft-capping (Gemma 2/3: ``tanh(z / c) * c``) is the config's ``final_logit_softcapping``.

:func:`find_lens_head` locates them and :meth:`LensHead.verify` checks the identification on a
real batch: the final norm applied to the last block's output must give the model's last hidden
state, and the read-out of that state must give the model's own logits. A model for which either
check fails is refused with one line, never read through a wrong norm.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from xling.errors import XlingError
from xling.models.layers import Blocks, find_blocks, num_layers


@dataclasses.dataclass
class LensHead:
    """The read-out of a decoder: ``logits = cap(unembed(norm(h)))``.

    ``norm`` is ``None`` for a model without a final norm; ``softcap`` is ``None`` without
    soft-capping. ``blocks`` is the model's block list (hidden state ``l`` is the output of block
    ``l - 1``; entry 0 is the embedding output)."""

    norm: nn.Module | None
    unembed: nn.Module
    softcap: float | None
    blocks: Blocks
    norm_name: str | None

    @property
    def num_hidden_states(self) -> int:
        return len(self.blocks) + 1

    def logits(self, h: torch.Tensor, *, normed: bool = False) -> torch.Tensor:
        """Logits of hidden states ``h`` (..., d); ``normed=True`` skips the final norm (the last
        hidden state of transformers' ``output_hidden_states`` is already normed)."""
        if not normed and self.norm is not None:
            h = self.norm(h)
        z = self.unembed(h)
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def stack_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of a stack of every layer's hidden states ``h`` (H, ..., d) whose last entry is the model's last
        hidden state (already normed): the norm on the others, then *one* unembedding of the whole stack, the
        soft-capping in place (over a large vocabulary each extra pass over (H, ..., V) is a visible cost)."""
        if self.norm is not None:
            h = torch.cat([self.norm(h[:-1]), h[-1:]])
        z = self.unembed(h)
        if self.softcap:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z

    @torch.no_grad()
    def verify(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               *, atol: float = 1e-4) -> None:
        """Check on one batch that ``norm`` turns the last block's output into the model's last hidden
        state and that the read-out of that state gives the model's own logits; raise otherwise."""
        captured = {}

        def grab(_mod, _inp, out):
            captured["h"] = out[0] if isinstance(out, tuple) else out

        handle = self.blocks[len(self.blocks) - 1].register_forward_hook(grab)
        try:
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        finally:
            handle.remove()
        last = out.hidden_states[-1]
        tol = atol if last.dtype == torch.float32 else 5e-2
        normed = self.norm(captured["h"]) if self.norm is not None else captured["h"]
        if not torch.allclose(normed.float(), last.float(), atol=tol, rtol=tol):
            raise XlingError(
                f"logit lens: cannot identify the final norm of {type(model).__name__} "
                f"(candidate {self.norm_name or 'none'} does not reproduce the last hidden state)"
            )
        z = self.logits(last, normed=True)
        if not torch.allclose(z.float(), out.logits.float(), atol=tol * 10, rtol=tol):
            raise XlingError(
                f"logit lens: the unembedding of {type(model).__name__} does not reproduce its own logits "
                f"(an output transformation xling does not know)"
            )


def _is_norm_like(module: nn.Module, d: int) -> bool:
    params = list(module.parameters(recurse=True))
    if not params:
        return False
    return all(p.ndim == 1 and p.shape[0] == d for p in params)


def find_lens_head(model: nn.Module) -> LensHead:
    """Locate the final norm, the unembedding and the soft-capping of a causal LM (see the module doc).

    Raises :class:`XlingError` in one line for an encoder or a model without an LM head."""
    config = getattr(model, "config", None)
    unembed = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if unembed is None or config is None:
        raise XlingError(
            f"logit lens needs a decoder with its LM head (unembedding); {type(model).__name__} has none "
            f"(an encoder or a base model without a head)"
        )
    if getattr(config, "is_encoder_decoder", False):
        raise XlingError("logit lens: encoder-decoder models are not supported (it reads a decoder-only residual stream)")
    n = num_layers(config)
    blocks = find_blocks(model, n)
    # the module that holds the block list: its other children hold the final norm
    holder_name = blocks.path.rsplit(".", 1)[0] if "." in blocks.path else ""
    holder = model.get_submodule(holder_name) if holder_name else model
    list_name = blocks.path.rsplit(".", 1)[-1]
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    d = getattr(text_cfg, "hidden_size", None) or getattr(text_cfg, "n_embd", None) or unembed.weight.shape[1]
    candidates = []
    for name, child in holder.named_children():
        if name == list_name or isinstance(child, (nn.Embedding, nn.ModuleList)):
            continue
        if _is_norm_like(child, d):
            candidates.append((name, child))
    if len(candidates) > 1:
        raise XlingError(
            f"logit lens: {type(model).__name__} has several final-norm candidates "
            f"({', '.join(n for n, _ in candidates)}); cannot tell which one reads the residual stream"
        )
    norm_name, norm = (candidates[0] if candidates else (None, None))
    if norm_name is not None and holder_name:
        norm_name = f"{holder_name}.{norm_name}"
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    return LensHead(norm=norm, unembed=unembed, softcap=float(softcap) if softcap else None, blocks=blocks,
                    norm_name=norm_name)


def load_causal_checked(folder, dtype, device, name: str | None = None) -> nn.Module:
    """The causal LM (with its head) in ``folder``: safetensors only, no remote code, and missing weights are an
    error unless they are the head of a model with tied embeddings (the head *is* the input embedding then).

    transformers would otherwise initialise a missing untied head at random on every load, so two loads of
    the same folder would predict differently; xling never scores with weights nobody trained."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    name = name or str(folder)
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                           trust_remote_code=False, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise XlingError(f"{name}: cannot load it with its LM head ({type(exc).__name__}: {first})") from None
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    missing = [k for k in info.get("missing_keys", []) if not (tied and "lm_head" in k)]
    bad = missing + list(info.get("mismatched_keys", []))
    if bad:
        raise XlingError(f"{name}: its files lack weights for {', '.join(map(str, bad[:3]))} "
                         f"(an untied LM head that is not in the checkpoint is never initialised at random)")
    return model.eval().to(device)


def load_with_head(lm) -> nn.Module:
    """The causal LM (with its head) of a :class:`~xling.models.loading.LoadedModel`'s folder
    (:func:`load_causal_checked`)."""
    if lm.path is None:
        raise XlingError(f"{lm.name}: an in-memory model has no folder to load its LM head from")
    if not lm.is_decoder:
        raise XlingError(f"{lm.name} is an encoder; this reads a decoder's next-token predictions")
    return load_causal_checked(lm.path, lm.dtype, lm.device, name=lm.name)


__all__ = ["LensHead", "find_lens_head", "load_causal_checked", "load_with_head"]
