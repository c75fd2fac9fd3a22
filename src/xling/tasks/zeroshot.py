"""Zero-shot classification with a decoder LLM by label log-likelihood (no training).

Each example is put in a prompt (``template``) and every label is scored by the
log-probability the model gives to its verbalisation after the prompt::

    score(label) = sum_t log p(v_t | prompt, v_<t)       (normalize="sum")
                 = the same divided by len(v)            (normalize="mean", default)

and the best-scoring label is the prediction. Multiple choice scores each
choice the same way after the context. All (example, label) pairs are scored
in length-sorted batches with left padding and explicit position ids, and only
the logits of the last ``len(v) + 1`` positions are computed where the model
supports ``logits_to_keep`` (memory stays small with large vocabularies).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from xling.errors import XlingError
from xling.tasks.core import Example

DEFAULT_TEMPLATES = {
    "classification": "Text: {text}\nTopic:",
    "pair": "Sentence 1: {text}\nSentence 2: {text_pair}\nRelation:",
    "multiple-choice": "{text}\nAnswer:",
}


def verbalize(label: str) -> str:
    """A label name as words: ``impress-draw`` -> ``impress draw``."""
    return " ".join(str(label).replace("_", " ").replace("-", " ").split())


def _prompt(e: Example, template: str) -> str:
    return template.format(text=e.text or "", text_pair=e.text_pair or "")


def load_causal_lm(folder, dtype: torch.dtype, device: torch.device):
    """The causal LM in ``folder`` for scoring and generation (safetensors, no remote code, no weight left to
    random initialisation: :func:`xling.models.heads.load_causal_checked`)."""
    from xling.models.heads import load_causal_checked

    return load_causal_checked(folder, dtype, device)


@torch.inference_mode()
def label_loglik(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    normalize: str = "mean",
    batch_size: int = 16,
    max_length: int = 256,
    progress: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """``scores[i][j]``: log-likelihood of ``continuations[i][j]`` after ``prompts[i]``."""
    if normalize not in ("mean", "sum"):
        raise XlingError(f"normalize must be mean or sum, got {normalize!r}")
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = next((v for v in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if v is not None))
    pairs: list[tuple[int, int, list[int], int]] = []  # (example, choice, ids, n_cont)
    cont_cache: dict[str, list[int]] = {}
    from xling.textsafe import char_cap, note_capped

    cap, n_capped = char_cap(max_length), 0
    for i, (p, conts) in enumerate(zip(prompts, continuations)):
        if len(p) > cap:  # bounded tokenizer work: the first token and the last max_length tokens, from each end
            n_capped += 1
            pid = (tokenizer(p[:cap], add_special_tokens=False)["input_ids"][:1]
                   + tokenizer(p[-cap:], add_special_tokens=False)["input_ids"])
        else:
            pid = tokenizer(p, add_special_tokens=False)["input_ids"]
        if bos is not None:
            pid = [bos] + pid
        for j, c in enumerate(conts):
            if c not in cont_cache:
                cont_cache[c] = tokenizer(" " + c.strip(), add_special_tokens=False)["input_ids"]
            cid = cont_cache[c]
            if not cid:
                raise XlingError(f"label or choice {c!r} tokenizes to nothing")
            keep = max(1, max_length - len(cid))
            ids = (pid[:1] + pid[-(keep - 1):] if keep > 1 else pid[:1]) if len(pid) > keep else pid
            pairs.append((i, j, ids + cid, len(cid)))
    note_capped(n_capped, max_length)
    scores = [[0.0] * len(c) for c in continuations]
    order = sorted(range(len(pairs)), key=lambda k: -len(pairs[k][2]))
    device = next(model.parameters()).device
    import inspect

    params = inspect.signature(model.forward).parameters
    can_keep = "logits_to_keep" in params
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        T = max(len(pairs[k][2]) for k in idx)
        K = max(pairs[k][3] for k in idx) + 1
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        for b, k in enumerate(idx):
            row = pairs[k][2]
            ids[b, T - len(row):] = torch.tensor(row)
            mask[b, T - len(row):] = 1
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if "position_ids" in params:
            kwargs["position_ids"] = pos.to(device)
        if can_keep:
            kwargs["logits_to_keep"] = min(K, T)
        logits = model(**kwargs).logits.float()
        logp = torch.log_softmax(logits[:, -min(K, T):, :], dim=-1)  # positions T-K .. T-1
        kept = logp.shape[1]
        for b, k in enumerate(idx):
            n = pairs[k][3]
            target = ids[b, T - n:].to(device)
            # the token at position T-n+t is predicted at position T-n+t-1, i.e. kept index kept-n-1+t
            rows = logp[b, kept - n - 1 : kept - 1]
            lp = rows.gather(1, target[:, None]).squeeze(1).sum().item()
            i, j = pairs[k][0], pairs[k][1]
            scores[i][j] = lp / n if normalize == "mean" else lp
        if progress is not None:
            progress(len(idx))
    return scores


def zero_shot_predict(
    model: torch.nn.Module,
    tokenizer,
    task_type: str,
    labels: Sequence[str],
    examples: Sequence[Example],
    template: str | None = None,
    verbalizers: dict[str, str] | None = None,
    normalize: str = "mean",
    batch_size: int = 16,
    max_length: int = 256,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Predicted label (or choice) index per example by log-likelihood."""
    if task_type == "token-classification":
        raise XlingError("zero-shot log-likelihood scoring supports classification and multiple choice, not tagging")
    if template is None:
        if task_type == "multiple-choice":
            template = DEFAULT_TEMPLATES["multiple-choice"]
        elif any(e.text_pair for e in examples):
            template = DEFAULT_TEMPLATES["pair"]
        else:
            template = DEFAULT_TEMPLATES["classification"]
    prompts = [_prompt(e, template) for e in examples]
    if task_type == "multiple-choice":
        conts = [list(e.choices) for e in examples]
    else:
        verb = [(verbalizers or {}).get(lab, verbalize(lab)) for lab in labels]
        conts = [verb] * len(examples)
    scores = label_loglik(model, tokenizer, prompts, conts, normalize, batch_size, max_length)
    if progress is not None:
        progress(len(examples))
    return [max(range(len(s)), key=lambda j: (s[j], -j)) for s in scores]


__all__ = ["zero_shot_predict", "label_loglik", "load_causal_lm", "verbalize", "DEFAULT_TEMPLATES"]
