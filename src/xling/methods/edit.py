"""Knowledge editing by a small low-rank update: change one fact, then ask whether the change reaches other languages.

Cross-lingual editing studies (Wang et al. 2023, "Cross-Lingual Knowledge Editing in Large Language
Models"; Beniwal et al. 2024, "Cross-lingual Editing in Multilingual Language Models" (XME); "Breaking
Boundaries") edit a fact in one language and measure *efficacy* (the edited language now gives the new
answer), *propagation* (other languages give it too) and *locality* (unrelated facts do not change).

The edit here is constrained fine-tuning (Zhu et al. 2020; the FT baseline of ROME, Meng et al. 2022)
through a LoRA adapter (Hu et al. 2022, built with ``peft``): rank ``rank`` (default 1: a rank-one
update per edited matrix, as ROME's) on the feed-forward *output projection* of the chosen blocks (where
ROME locates factual associations), trained for at most ``steps`` Adam steps on one statement, the prompt
followed by the new answer, to minimise the answer tokens' negative log-likelihood, stopping early once that
mean negative log-likelihood is below ``stop_nll`` (0.1: about 0.9 probability per token; the smallest change
that makes the statement likely, which spares unrelated facts). Nothing else is
trained. The projection is found structurally (the linear map whose input is the feed-forward activation,
:func:`xling.engine.neurons.find_activations`), so every decoder works without per-architecture code.

:class:`FactEditor` injects the adapter once (``peft.inject_adapter_in_model``: the model stays a plain
transformers model). :meth:`FactEditor.reset` sets every ``B`` to 0, which makes the adapted model's
output *exactly* the original's (the adapter adds a zero), so each edit starts from the unedited model.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn as nn

from xling.errors import XlingError


def _in_features(m: nn.Module) -> int | None:
    if isinstance(m, nn.Linear):
        return m.in_features
    if type(m).__name__ == "Conv1D" and hasattr(m, "weight") and m.weight.dim() == 2:  # GPT-2: weight (in, out)
        return int(m.weight.shape[0])
    return None


def mlp_output_projections(model: nn.Module, layers: Sequence[int] | None = None) -> list[str]:
    """Dotted names of the feed-forward output projection of each block in ``layers`` (all when None): the one
    linear map in the block that takes the ``d_ff``-wide activation as input."""
    from xling.engine.neurons import find_activations

    blocks, _acts, d_ff = find_activations(model)
    chosen = list(range(len(blocks))) if layers is None else sorted({int(x) for x in layers})
    if not chosen:
        raise XlingError("edit: no layers chosen")
    names = []
    for i in chosen:
        if not 0 <= i < len(blocks):
            raise XlingError(f"edit: layer {i} out of range 0..{len(blocks) - 1}")
        found = [n for n, m in blocks[i].named_modules() if n and _in_features(m) == d_ff]
        if len(found) != 1:
            raise XlingError(f"edit: cannot find the feed-forward output projection of block {i} "
                             f"({len(found)} linear maps take {d_ff} inputs: {', '.join(found) or 'none'})")
        names.append(f"{blocks.path}.{i}.{found[0]}")
    return names


def middle_layers(n_layers: int) -> list[int]:
    """The middle third of the blocks (at least one): the default layers of an edit."""
    lo, hi = n_layers // 3, max(n_layers // 3 + 1, (2 * n_layers + 2) // 3)
    return list(range(lo, min(hi, n_layers)))


@dataclasses.dataclass
class EditSettings:
    rank: int = 1
    steps: int = 20
    lr: float = 5e-3
    layers: list[int] | None = None  # None: middle_layers
    stop_nll: float = 0.1  # stop once the new answer's mean token NLL is below this (p ~ 0.9 per token); 0: never

    def __post_init__(self):
        if self.rank < 1 or self.steps < 1 or not self.lr > 0 or self.stop_nll < 0:
            raise XlingError(f"edit: rank and steps must be >= 1 and lr > 0, got {self.rank}, {self.steps}, {self.lr}")


def _statement_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of ``prompt`` + " " + ``answer`` (BOS first where the tokenizer has one), and the number of
    answer tokens; the answer is tokenized alone with a leading space, as the log-likelihood scorer does."""
    bos = getattr(tokenizer, "bos_token_id", None)
    pid = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    aid = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    if not aid:
        raise XlingError(f"edit: the answer {answer!r} tokenizes to nothing")
    return ([bos] if bos is not None else []) + pid + aid, len(aid)


class FactEditor:
    """A LoRA adapter on the feed-forward output projections of ``settings.layers``, reset and retrained per edit."""

    ADAPTER = "xling_edit"

    def __init__(self, model: nn.Module, tokenizer, settings: EditSettings | None = None):
        from peft import LoraConfig, inject_adapter_in_model

        self.settings = settings or EditSettings()
        from xling.models.layers import num_layers

        layers = self.settings.layers if self.settings.layers is not None else middle_layers(num_layers(model.config))
        self.layers = sorted({int(x) for x in layers})
        self.targets = mlp_output_projections(model, self.layers)
        self.tokenizer = tokenizer
        for p in model.parameters():
            p.requires_grad_(False)
        conv1d = any(type(model.get_submodule(t)).__name__ == "Conv1D" for t in self.targets)  # GPT-2: (in, out)
        cfg = LoraConfig(r=self.settings.rank, lora_alpha=self.settings.rank, lora_dropout=0.0,
                         target_modules=self.targets, bias="none", fan_in_fan_out=conv1d)
        self.model = inject_adapter_in_model(cfg, model, adapter_name=self.ADAPTER)
        self.params = [p for n, p in self.model.named_parameters() if "lora_" in n and self.ADAPTER in n]
        import inspect

        self._keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        if not self.params:
            raise XlingError("edit: the adapter has no parameters (peft injected nothing)")
        self.reset(0)

    def lora_layers(self):
        from peft.tuners.lora import LoraLayer

        return [m for m in self.model.modules() if isinstance(m, LoraLayer)]

    @torch.no_grad()
    def reset(self, seed: int) -> None:
        """Back to the unedited model: ``A`` re-drawn from ``seed``, every ``B`` exactly 0."""
        torch.manual_seed(seed)
        for m in self.lora_layers():
            m.reset_lora_parameters(self.ADAPTER, True)
            m.lora_B[self.ADAPTER].weight.zero_()
        for p in self.params:
            p.requires_grad_(True)

    def answer_nll(self, prompt: str, answer: str) -> float:
        """Mean negative log-likelihood of the answer's tokens after the prompt, under the current weights."""
        with torch.no_grad():
            return float(self._loss(*_statement_ids(self.tokenizer, prompt, answer)))

    def _loss(self, ids: list[int], n_answer: int) -> torch.Tensor:
        device = next(self.model.parameters()).device
        x = torch.tensor([ids], device=device)
        kwargs = {"logits_to_keep": n_answer + 1} if self._keep else {}  # no head over the prompt's positions
        logits = self.model(input_ids=x, **kwargs).logits[0, -n_answer - 1:-1].float()
        return torch.nn.functional.cross_entropy(logits, x[0, -n_answer:])

    def edit(self, prompt: str, answer: str, seed: int = 0) -> dict:
        """Reset, then train the adapter so that ``answer`` follows ``prompt``; returns the loss before and after."""
        self.reset(seed)
        ids, n = _statement_ids(self.tokenizer, prompt, answer)
        was_training = self.model.training
        self.model.eval()  # no dropout: the edit is deterministic given the seed
        opt = torch.optim.Adam(self.params, lr=self.settings.lr)
        before, taken = None, 0
        try:
            for _ in range(self.settings.steps):
                opt.zero_grad(set_to_none=True)
                loss = self._loss(ids, n)
                if before is None:
                    before = loss.item()
                if loss.item() < self.settings.stop_nll:
                    break
                loss.backward()
                opt.step()
                taken += 1
        finally:
            self.model.train(was_training)
            for p in self.params:
                p.grad = None
        after = self.answer_nll(prompt, answer)
        return {"nll_before": before, "nll_after": after, "steps": taken}


def edit_rates(pred_before: Sequence[int], pred_after: Sequence[int], new_answer: Sequence[int]) -> dict:
    """Share of items that give the new answer after the edit (``success``) and before it (``base``), for the
    edited items; for unrelated items (``new_answer`` entries of -1) the share whose prediction did not change
    (``locality``). Empty groups give ``None``."""
    if not len(pred_before) == len(pred_after) == len(new_answer):
        raise XlingError("edit_rates: sequences of different lengths")
    edited = [(b, a, t) for b, a, t in zip(pred_before, pred_after, new_answer) if t >= 0]
    other = [(b, a) for b, a, t in zip(pred_before, pred_after, new_answer) if t < 0]
    return {
        "success": sum(a == t for _, a, t in edited) / len(edited) if edited else None,
        "base": sum(b == t for b, _, t in edited) / len(edited) if edited else None,
        "locality": sum(a == b for b, a in other) / len(other) if other else None,
        "n_edited": len(edited), "n_other": len(other),
    }


__all__ = ["EditSettings", "FactEditor", "edit_rates", "middle_layers", "mlp_output_projections"]
