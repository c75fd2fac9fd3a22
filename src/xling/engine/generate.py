"""Batched greedy generation with a decoder LLM and its KV cache, with per-row stop rules.

:func:`greedy_generate` produces, for every prompt, the continuation that one-prompt-at-a-time greedy
decoding (``model.generate(do_sample=False)``) produces, cut at the stop rules, but many prompts at once:

* prompts are tokenised once (the tokenizer's BOS token first where it has one, as
  :func:`xling.tasks.zeroshot.label_loglik` does; a prompt longer than ``max_prompt_tokens`` keeps its first
  token and its last ``max_prompt_tokens - 1`` tokens) and sorted by length, longest first, so a batch holds
  prompts of similar length (little padding);
* each batch is left-padded with explicit position ids (``cumsum(mask) - 1``: every row's first real token is
  at position 0, exactly as when it runs alone) and one forward pass fills the KV cache; after that each step
  feeds one token per row and reuses the cache (``past_key_values``);
* where every prompt of a batch starts with the same tokens (a k-shot prompt's fixed demonstrations: most of
  it), that prefix is computed once and its cache copied to every row (:func:`shared_prefix`); each row's own
  tokens follow it, padded on their left, at the positions they have alone. This is used only where it changes
  nothing but rounding: at least :data:`MIN_SHARED_PREFIX` shared tokens, a model that takes position ids, and
  no sliding attention window shorter than the sequence (the padding sits inside the sequence);
* each row stops on its own: at an end-of-sequence token (the tokenizer's and the model's generation config's
  ``eos_token_id``), when its decoded text contains a stop string (the text is cut before the first
  occurrence; a newline ends a one-line answer), or after ``max_new_tokens`` tokens. A finished row leaves the
  batch (its cache rows are dropped, ``Cache.batch_select_indices``), so a long answer does not make the
  batch's short ones pay for its steps;
* results come back in input order, whatever the batch size: batching changes only floating-point rounding
  (padding is masked and positions are per row), which ``tests/test_generation.py`` checks against
  one-at-a-time ``model.generate``.

Stop strings are matched as lm-evaluation-harness's ``until`` matches them: anywhere in the generated text,
leading whitespace included (a model that answers ``"\\n..."`` to a one-line prompt gets an empty answer).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Sequence

import torch

from xling.errors import XlingError

#: Why a row stopped: an end-of-sequence token, a stop string, or ``max_new_tokens``.
STOP_REASONS = ("eos", "stop", "length")


@dataclasses.dataclass
class Generation:
    """One prompt's continuation: ``text`` (cut before the first stop string, special tokens dropped),
    ``token_ids`` (generated ids, without the EOS token), ``reason`` (:data:`STOP_REASONS`) and the number of
    prompt tokens the model read."""

    text: str
    token_ids: list[int]
    reason: str
    prompt_tokens: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def eos_token_ids(model, tokenizer) -> set[int]:
    """The token ids that end a sequence: the tokenizer's EOS and the model's ``generation_config`` (an id or a
    list of ids, e.g. Gemma's ``<end_of_turn>``)."""
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source if x is not None)
    return ids


def encode_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int | None = None,
                   add_bos: bool = True, cut: list[int] | None = None) -> list[list[int]]:
    """Token ids of each prompt: the BOS token (when the tokenizer has one and ``add_bos``), then the prompt's
    tokens without other special tokens; over ``max_prompt_tokens``, the first token and the last
    ``max_prompt_tokens - 1`` (a very long text is tokenized from its two ends only: bounded work). The indices
    of the prompts so cut are appended to ``cut`` when given."""
    from xling.textsafe import char_cap

    bos = getattr(tokenizer, "bos_token_id", None) if add_bos else None
    cap = char_cap(max_prompt_tokens) if max_prompt_tokens is not None else None
    out = []
    for i, p in enumerate(prompts):
        if cap is not None and len(p) > cap:
            ids = (tokenizer(p[:cap], add_special_tokens=False)["input_ids"][:1]
                   + tokenizer(p[-cap:], add_special_tokens=False)["input_ids"])
        else:
            ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        if bos is not None:
            ids = [bos] + ids
        if not ids:
            raise XlingError("an empty prompt tokenizes to nothing (and the tokenizer has no BOS token)")
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            ids = ids[:1] + ids[len(ids) - (max_prompt_tokens - 1):] if max_prompt_tokens > 1 else ids[:1]
            if cut is not None:
                cut.append(i)
        out.append(ids)
    return out


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """The index where the first stop string starts in ``text`` (the earliest of any), or None."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def _pad_id(tokenizer, eos: set[int]) -> int:
    for v in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if v is not None:
            return int(v)
    return min(eos) if eos else 0


@torch.inference_mode()
def greedy_generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 128,
    stop: Sequence[str] = ("\n",),
    batch_size: int = 16,
    max_prompt_tokens: int | None = 1024,
    add_bos: bool = True,
    share_prefix: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Greedy continuations of ``prompts`` (see the module docstring), in input order."""
    if max_new_tokens < 1:
        raise XlingError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise XlingError(f"batch_size must be at least 1, got {batch_size}")
    cut: list[int] = []
    encoded = encode_prompts(tokenizer, prompts, max_prompt_tokens, add_bos, cut)
    if cut:
        from xling.io import note

        note(f"{len(cut)} prompt{'s' if len(cut) != 1 else ''} longer than {max_prompt_tokens} tokens kept "
             f"{'their' if len(cut) != 1 else 'its'} first token and last {max_prompt_tokens - 1} (--max-length)")
    eos = eos_token_ids(model, tokenizer)
    pad = _pad_id(tokenizer, eos)
    params = inspect.signature(model.forward).parameters
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    results: list[Generation | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        for i, gen in zip(idx, _generate_batch(model, tokenizer, [encoded[i] for i in idx], max_new_tokens,
                                               list(stop), eos, pad, params, share_prefix)):
            results[i] = gen
        if progress is not None:
            progress(len(idx))
    return results  # type: ignore[return-value]


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


#: The fewest prompt tokens all rows of a batch must share before their prefix is computed once.
MIN_SHARED_PREFIX = 16


def shared_prefix(rows: list[list[int]], model, max_new_tokens: int) -> int:
    """How many leading tokens every row of a batch shares and can read from one prefix computation (0: none).

    At least :data:`MIN_SHARED_PREFIX` tokens, and every row keeps one token of its own. Sharing puts each row's
    padding between the prefix and its own tokens, so it is used only where that changes nothing: a model without
    a sliding attention window, or whose window covers the whole sequence (prompt and answer)."""
    if len(rows) < 2:
        return 0
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    p = 0
    while p < n and all(r[p] == first[p] for r in rows):
        p += 1
    if p < MIN_SHARED_PREFIX:
        return 0
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    if isinstance(window, int) and max(len(r) for r in rows) + max_new_tokens >= window:
        return 0
    return p


def _generate_batch(model, tokenizer, rows: list[list[int]], max_new_tokens: int, stop: list[str], eos: set[int],
                    pad: int, params, share: bool = True) -> list[Generation]:
    device = next(model.parameters()).device
    cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers 5 renamed it
    with_pos, keep = "position_ids" in params, "logits_to_keep" in params
    B = len(rows)
    P = shared_prefix(rows, model, max_new_tokens) if share and with_pos else 0
    head = {}
    if P:  # the prefix (a k-shot prompt's demonstrations) once, its cache copied to every row
        kwargs = {"input_ids": torch.tensor([rows[0][:P]], device=device),
                  "attention_mask": torch.ones((1, P), dtype=torch.long, device=device), "use_cache": True}
        if with_pos:
            kwargs["position_ids"] = torch.arange(P, device=device)[None]
        if keep:
            kwargs["logits_to_keep"] = 1
        past = _cache_of(model(**kwargs))
        if callable(getattr(past, "batch_repeat_interleave", None)):
            past.batch_repeat_interleave(B)
            head = {cache_kw: past}
        else:
            P = 0
    parts = [r[P:] for r in rows]
    T = max(len(r) for r in parts)
    ids = torch.full((B, T), pad, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, r in enumerate(parts):
        ids[b, T - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[b, T - len(r):] = 1
    pos = (mask.cumsum(1) - 1).clamp_min(0) + P  # each row's own tokens follow the prefix, padding skipped
    mask = torch.cat([torch.ones((B, P), dtype=torch.long), mask], dim=1)
    kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": True, **head}
    if with_pos:
        kwargs["position_ids"] = pos.to(device)
    if keep:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    past, logits = _cache_of(out), out.logits[:, -1, :]
    mask = mask.to(device)
    next_pos = pos[:, -1].to(device) + 1
    in_cache = list(range(B))  # the original row of each row of the cache
    generated: list[list[int]] = [[] for _ in range(B)]
    texts, reasons = [""] * B, [""] * B
    can_prune = callable(getattr(past, "batch_select_indices", None))
    while True:
        tokens = logits.argmax(dim=-1)
        for j, b in enumerate(in_cache):
            if reasons[b]:
                continue  # finished earlier; kept in a cache that cannot drop rows
            t = int(tokens[j])
            if t in eos:
                texts[b], reasons[b] = tokenizer.decode(generated[b], skip_special_tokens=True), "eos"
                continue
            generated[b].append(t)
            text = tokenizer.decode(generated[b], skip_special_tokens=True)
            cut = first_stop(text, stop)
            if cut is not None:
                texts[b], reasons[b] = text[:cut], "stop"
            elif len(generated[b]) >= max_new_tokens:
                texts[b], reasons[b] = text, "length"
        live = [j for j, b in enumerate(in_cache) if not reasons[b]]
        if not live:
            break
        if len(live) < len(in_cache):
            if can_prune:  # finished rows leave the batch and the cache
                sel = torch.tensor(live, dtype=torch.long, device=device)
                past.batch_select_indices(sel)
                tokens, mask, next_pos = tokens[sel], mask[sel], next_pos[sel]
                in_cache = [in_cache[j] for j in live]
            else:  # they keep stepping on padding, their results already set
                tokens = tokens.clone()
                for j, b in enumerate(in_cache):
                    if reasons[b]:
                        tokens[j] = pad
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
        kwargs = {"input_ids": tokens[:, None], "attention_mask": mask, cache_kw: past, "use_cache": True}
        if with_pos:
            kwargs["position_ids"] = next_pos[:, None]
        out = model(**kwargs)
        past, logits = _cache_of(out), out.logits[:, -1, :]
        next_pos = next_pos + 1
    return [Generation(texts[b], generated[b], reasons[b], len(rows[b])) for b in range(B)]


__all__ = ["Generation", "STOP_REASONS", "encode_prompts", "eos_token_ids", "first_stop", "greedy_generate"]
