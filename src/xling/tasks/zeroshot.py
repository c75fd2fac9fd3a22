"""Zero-shot classification with a decoder LLM by label log-likelihood (no training).

Each example is put in a prompt (``template``) and every label is scored by the
log-probability the model gives to its verbalisation after the prompt::

    score(label) = sum_t log p(v_t | prompt, v_<t)       (normalize="sum")
                 = the same divided by len(v)            (normalize="mean", default)

and the best-scoring label is the prediction. Multiple choice scores each
choice the same way after the context.

Two paths give the same scores (up to floating-point rounding):

* **shared prefix** (default where the model has a KV cache): the prompts of a
  batch of examples run once (length-sorted, left-padded, explicit position
  ids, only the last position's logits), whose last position scores every
  choice's first token; the cache is then repeated to one row per
  (example, choice) and all continuations run after it at once (right-padded
  among themselves, positions continuing from each prompt's length), scoring
  tokens 2..n. A k-shot prompt is computed once instead of once per label.
* **per pair** (the fallback): one sequence per (example, choice) = prompt +
  continuation, in length-sorted batches with left padding and explicit
  position ids; only the logits of the last ``len(v) + 1`` positions are
  computed where the model supports ``logits_to_keep``. An example whose prompt
  must be truncated for some choice (``len(prompt) + len(v) > max_length``: the
  prompt keeps its first token and as many last tokens as fit beside ``v``, so
  the kept prompt differs per choice) always takes this path, as do models
  whose forward takes no cache or whose cache cannot be repeated per row.
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


#: The fields a prompt template may name.
TEMPLATE_FIELDS = ("text", "text_pair")


def template_problem(template: str | None) -> str | None:
    """Why ``template`` cannot be a prompt template (a field other than ``{text}``/``{text_pair}``, an attribute
    or index, an unbalanced brace), else None. Literal braces are written ``{{`` and ``}}``."""
    import string

    if template is None:
        return None
    try:
        parts = list(string.Formatter().parse(str(template)))
    except ValueError as exc:
        return f"is not a prompt template ({exc}; write a literal brace as {{{{ or }}}})"
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            return (f"names the field {{{name}}}; a template may name only "
                    + " and ".join("{" + f + "}" for f in TEMPLATE_FIELDS) + " (a literal brace is {{ or }})")
        if spec or conv:
            return f"formats {{{name}}} with a conversion or spec; write {{{name}}} alone"
    return None


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


def _cache_kwarg(params) -> str | None:
    """The name under which ``forward`` takes a KV cache (``cache`` from transformers 5.x, ``past_key_values``
    before), or None where it takes none or cannot be told to return one."""
    if "use_cache" not in params:
        return None
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def _repeat_rows(cache, rows: torch.Tensor):
    """``cache`` with its batch rows picked by ``rows`` (repeats allowed): transformers' public
    ``Cache.batch_select_indices`` (in place), or index selection of a legacy tuple of (key, value) tensors."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(rows)
        return cache
    if isinstance(cache, (tuple, list)) and cache and all(isinstance(layer, (tuple, list)) for layer in cache):
        return tuple(tuple(t.index_select(0, rows.to(t.device)) for t in layer) for layer in cache)
    raise TypeError(f"cannot repeat the rows of a {type(cache).__name__}")


def _score_pairs(model, params, device, pad, pairs, batch_size, normalize, scores, progress) -> None:
    """The per-pair path: ``pairs`` = (example, choice, prompt+continuation ids, continuation length)."""
    can_keep = "logits_to_keep" in params
    order = sorted(range(len(pairs)), key=lambda k: -len(pairs[k][2]))
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


def _score_shared(model, params, cache_kw, device, pad, items, batch_size, normalize, scores, progress) -> list:
    """The shared-prefix path over ``items`` = (example, prompt ids, [continuation ids per choice]), none of whose
    prompts is truncated. Returns the items it could not score (the cache of a batch could not be repeated per
    row: that batch and the rest), for the per-pair path."""
    order = sorted(items, key=lambda it: -len(it[1]))
    start = 0
    while start < len(order):
        take, n_pairs = [order[start]], len(order[start][2])
        start += 1
        while start < len(order) and n_pairs + len(order[start][2]) <= batch_size:
            take.append(order[start])
            n_pairs += len(order[start][2])
            start += 1
        B, P = len(take), max(len(it[1]) for it in take)
        ids = torch.full((B, P), pad, dtype=torch.long)
        mask = torch.zeros((B, P), dtype=torch.long)
        for b, (_, pid, _) in enumerate(take):
            ids[b, P - len(pid):] = torch.tensor(pid)
            mask[b, P - len(pid):] = 1
        kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": True}
        if "position_ids" in params:
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0).to(device)
        if "logits_to_keep" in params:
            kwargs["logits_to_keep"] = 1
        out = model(**kwargs)
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (B, V): each continuation's first token
        totals = [[first[b, cid[0]].item() for cid in cids] for b, (_, _, cids) in enumerate(take)]
        rows = [(b, j) for b, (_, _, cids) in enumerate(take) for j, cid in enumerate(cids) if len(cid) > 1]
        if rows:
            sel = torch.tensor([b for b, _ in rows], dtype=torch.long)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            try:
                if cache is None:
                    raise TypeError("the forward returned no cache")
                cache = _repeat_rows(cache, sel.to(device))
            except (AttributeError, TypeError, NotImplementedError, IndexError, RuntimeError):
                return take + order[start:]
            L = max(len(take[b][2][j]) - 1 for b, j in rows)  # inputs: tokens 1..n-1, predicting 2..n
            cids = torch.full((len(rows), L), pad, dtype=torch.long)
            cmask = torch.zeros((len(rows), L), dtype=torch.long)
            for r, (b, j) in enumerate(rows):
                c = take[b][2][j]
                cids[r, : len(c) - 1] = torch.tensor(c[:-1])
                cmask[r, : len(c) - 1] = 1
            kw2 = {"input_ids": cids.to(device), "attention_mask": torch.cat([mask[sel], cmask], 1).to(device),
                   cache_kw: cache, "use_cache": True}
            if "position_ids" in params:
                kw2["position_ids"] = (mask.sum(1)[sel][:, None] + torch.arange(L)[None, :]).to(device)
            logp = torch.log_softmax(model(**kw2).logits.float(), dim=-1)  # (rows, L, V)
            for r, (b, j) in enumerate(rows):
                c = take[b][2][j]
                target = torch.tensor(c[1:], device=logp.device)
                totals[b][j] += logp[r, : len(c) - 1].gather(1, target[:, None]).sum().item()
            del cache, logp
        for b, (i, _, cids) in enumerate(take):
            for j, cid in enumerate(cids):
                scores[i][j] = totals[b][j] / len(cid) if normalize == "mean" else totals[b][j]
        if progress is not None:
            progress(n_pairs)
    return []


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
    share_prefix: bool | None = None,
) -> list[list[float]]:
    """``scores[i][j]``: log-likelihood of ``continuations[i][j]`` after ``prompts[i]``.

    ``batch_size`` counts (example, choice) sequences; ``progress`` is called with the pairs each batch scored.
    ``share_prefix``: None (default) runs each untruncated prompt once and its choices after its KV cache where the
    model supports it, else per pair; True requires the shared path for every untruncated prompt (an error where the
    model has no cache); False scores every pair on its own (the reference path)."""
    if normalize not in ("mean", "sum"):
        raise XlingError(f"normalize must be mean or sum, got {normalize!r}")
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = next((v for v in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if v is not None))
    examples: list[tuple[int, list[int], list[list[int]]]] = []  # (example, prompt ids, continuation ids)
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
        cids = []
        for c in conts:
            if c not in cont_cache:
                cont_cache[c] = tokenizer(" " + c.strip(), add_special_tokens=False)["input_ids"]
            if not cont_cache[c]:
                raise XlingError(f"label or choice {c!r} tokenizes to nothing")
            cids.append(cont_cache[c])
        examples.append((i, pid, cids))
    note_capped(n_capped, max_length)
    scores = [[0.0] * len(c) for c in continuations]
    device = next(model.parameters()).device
    import inspect

    params = inspect.signature(model.forward).parameters
    cache_kw = _cache_kwarg(params)
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        cache_kw = None
    if share_prefix and cache_kw is None:
        raise XlingError(f"{type(model).__name__} takes no KV cache: its prompts cannot be shared across choices")

    def keep(cid: list[int]) -> int:
        return max(1, max_length - len(cid))

    per_pair = examples
    if share_prefix is not False and cache_kw is not None:
        # an example is shared only where no choice truncates its prompt (else the kept prompt differs per choice)
        fits = [e for e in examples if e[2] and all(len(e[1]) <= keep(cid) for cid in e[2])]
        fit_ids = {e[0] for e in fits}
        per_pair = [e for e in examples if e[0] not in fit_ids]
        left = _score_shared(model, params, cache_kw, device, pad, fits, batch_size, normalize, scores, progress)
        if left and share_prefix:
            raise XlingError(f"the KV cache of {type(model).__name__} cannot be repeated per choice")
        per_pair = per_pair + left
    pairs: list[tuple[int, int, list[int], int]] = []  # (example, choice, ids, n_cont)
    for i, pid, cids in sorted(per_pair, key=lambda e: e[0]):
        for j, cid in enumerate(cids):
            k = keep(cid)
            ids = (pid[:1] + pid[-(k - 1):] if k > 1 else pid[:1]) if len(pid) > k else pid
            pairs.append((i, j, ids + cid, len(cid)))
    _score_pairs(model, params, device, pad, pairs, batch_size, normalize, scores, progress)
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
