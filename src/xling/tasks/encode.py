"""Tokenisation, length-bucketed batching and batched inference for task models.

Shared by training (:mod:`xling.methods.train`) and evaluation
(:mod:`xling.recipes.eval.run`):

* :func:`encode` turns examples into token ids (and labels) once;
* :func:`length_sorted` / :func:`bucketed` order them so a batch holds
  examples of similar length (little padding): evaluation sorts by length
  outright, training sorts within shuffled buckets of ``bucket`` batches and
  shuffles the batches, so the order still changes every epoch;
* :func:`collate` pads a batch (right padding; decoder heads find the last
  real token from the attention mask / pad id);
* :func:`predict` runs a task model over examples in length-sorted batches and
  returns predictions in input order; they do not depend on the batch size
  (each example's logits depend on its own tokens only).

Token classification labels the first sub-word of every word (the others get
``-100``, ignored by the loss) and predicts a word's tag from its first
sub-word; words cut off by ``max_length`` are predicted ``O`` (label 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from xling.engine.embed import pad_id
from xling.errors import XlingError
from xling.tasks.core import Example

IGNORE = -100


@dataclass
class Encoded:
    """One tokenised example. ``input_ids`` is a list of rows for multiple choice."""

    input_ids: list
    token_type_ids: list | None
    label: int | list[int] | None
    first_subword: list[int] | None = None  # token classification: position of each word's first piece (-1: cut)

    @property
    def length(self) -> int:
        if self.input_ids and isinstance(self.input_ids[0], list):
            return max(len(r) for r in self.input_ids) * len(self.input_ids)
        return len(self.input_ids)


def uses_token_types(config) -> bool:
    return int(getattr(config, "type_vocab_size", 0) or 0) > 1


def encode(tokenizer, task_type: str, examples: Sequence[Example], max_length: int = 128) -> list[Encoded]:
    """Tokenise examples for a task model (truncating to ``max_length`` tokens)."""
    if max_length < 4:
        raise XlingError(f"max length must be at least 4, got {max_length}")
    if not examples:
        return []
    from xling.textsafe import cap_texts, cap_words, note_capped

    capped = 0

    def cap(texts):
        nonlocal capped
        out, n = cap_texts(texts, max_length)  # bounded tokenizer work; same ids for every text that fits
        capped += n
        return out

    def cap_split(words):
        nonlocal capped
        out, cut = cap_words(words, max_length)
        capped += cut
        return out

    out = _encode(tokenizer, task_type, examples, max_length, cap, cap_split)
    note_capped(capped, max_length)
    return out


def _encode(tokenizer, task_type, examples, max_length, cap, cap_split) -> list[Encoded]:
    if task_type == "classification":
        firsts = cap([e.text for e in examples])
        seconds = [e.text_pair for e in examples]
        if any(s is not None for s in seconds):
            if any(s is None for s in seconds):
                raise XlingError("a text-pair task mixes single texts and pairs")
            enc = tokenizer(firsts, cap(seconds), truncation="longest_first", max_length=max_length)
        else:
            enc = tokenizer(firsts, truncation=True, max_length=max_length)
        tt = enc.get("token_type_ids")
        return [Encoded(enc["input_ids"][i], tt[i] if tt is not None else None, e.label)
                for i, e in enumerate(examples)]
    if task_type == "token-classification":
        if not getattr(tokenizer, "is_fast", False):
            raise XlingError("token classification needs a fast tokenizer (word alignment)")
        enc = tokenizer([cap_split(e.tokens) for e in examples], is_split_into_words=True, truncation=True,
                        max_length=max_length)
        tt = enc.get("token_type_ids")
        out = []
        for i, e in enumerate(examples):
            word_ids = enc.word_ids(i)
            first = [-1] * len(e.tokens)
            labels = [IGNORE] * len(word_ids)
            prev = None
            for pos, w in enumerate(word_ids):
                if w is not None and w != prev:
                    first[w] = pos
                    if e.tags is not None:
                        labels[pos] = e.tags[w]
                prev = w
            out.append(Encoded(enc["input_ids"][i], tt[i] if tt is not None else None,
                               labels if e.tags is not None else None, first))
        return out
    if task_type == "multiple-choice":
        out = []
        for e in examples:
            seconds = cap([" ".join(x for x in (e.text_pair, c) if x) for c in e.choices])
            if e.text:
                enc = tokenizer(cap([e.text]) * len(seconds), seconds, truncation="longest_first", max_length=max_length)
            else:
                enc = tokenizer(seconds, truncation=True, max_length=max_length)
            tt = enc.get("token_type_ids")
            out.append(Encoded(list(enc["input_ids"]), list(tt) if tt is not None else None, e.label))
        return out
    raise XlingError(f"unknown task type {task_type!r}")


def collate(items: Sequence[Encoded], pad: int, token_types: bool = False, with_labels: bool = True) -> dict:
    """Pad a batch to its longest row (right padding)."""
    mc = isinstance(items[0].input_ids[0], list)
    token_types = token_types and items[0].token_type_ids is not None
    rows = [r for it in items for r in (it.input_ids if mc else [it.input_ids])]
    trows = [r for it in items for r in (it.token_type_ids if mc else [it.token_type_ids])] if token_types else None
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    tts = torch.zeros((len(rows), T), dtype=torch.long) if token_types else None
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
        if tts is not None and trows[i] is not None:
            tts[i, : len(r)] = torch.tensor(trows[i], dtype=torch.long)
    if mc:
        C = len(items[0].input_ids)
        if any(len(it.input_ids) != C for it in items):
            raise XlingError("multiple-choice examples in one batch have different numbers of choices")
        ids, mask = ids.view(len(items), C, T), mask.view(len(items), C, T)
        tts = tts.view(len(items), C, T) if tts is not None else None
    batch = {"input_ids": ids, "attention_mask": mask}
    if tts is not None:
        batch["token_type_ids"] = tts
    if with_labels and items[0].label is not None:
        if isinstance(items[0].label, list):
            lab = torch.full((len(items), T), IGNORE, dtype=torch.long)
            for i, it in enumerate(items):
                lab[i, : len(it.label)] = torch.tensor(it.label, dtype=torch.long)
            batch["labels"] = lab
        else:
            batch["labels"] = torch.tensor([it.label for it in items], dtype=torch.long)
    return batch


def length_sorted(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches in descending length order (evaluation: least padding)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def bucketed(lengths: Sequence[int], batch_size: int, seed: int, bucket: int = 50, shuffle: bool = True) -> list[list[int]]:
    """Training batches: shuffle, sort within buckets of ``bucket`` batches by length, shuffle the batches.

    ``bucket=0`` (or 1) gives plain shuffled batches.
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(idx)
    if bucket and bucket > 1:
        size = batch_size * bucket
        chunks = [sorted(idx[i : i + size], key=lambda j: lengths[j]) for i in range(0, len(idx), size)]
        idx = [j for c in chunks for j in c]
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    pad: int,
    batch_size: int = 64,
    token_types: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Logits per example in input order: ``(num_labels,)``, ``(choices,)`` or ``(tokens, num_labels)``."""
    model.eval()
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(encoded)
    for idx in length_sorted([e.length for e in encoded], batch_size):
        items = [encoded[i] for i in idx]
        batch = collate(items, pad, token_types, with_labels=False)
        logits = model(**_to(batch, device)).logits.float().cpu()
        for b, i in enumerate(idx):
            row = logits[b]
            if row.dim() == 2:  # tokens x labels: keep the real tokens only
                row = row[: len(encoded[i].input_ids)]
            out[i] = row
        if progress is not None:
            progress(len(idx))
    return out  # type: ignore[return-value]


def decode(task_type: str, encoded: Sequence[Encoded], logits: Sequence[torch.Tensor]) -> list:
    """Predicted label index per example (a list of tag indices per word for tagging)."""
    if task_type != "token-classification":
        return [int(torch.argmax(lg)) for lg in logits]
    preds = []
    for enc, lg in zip(encoded, logits):
        arg = torch.argmax(lg, dim=-1).tolist()
        preds.append([arg[p] if p >= 0 else 0 for p in enc.first_subword])
    return preds


def predict(
    model: torch.nn.Module,
    tokenizer,
    task_type: str,
    examples: Sequence[Example],
    batch_size: int = 64,
    max_length: int = 128,
    progress: Callable[[int], None] | None = None,
) -> list:
    """Predictions for ``examples`` (input order), batched and length-sorted."""
    encoded = encode(tokenizer, task_type, examples, max_length)
    cfg = getattr(model, "config", None)
    logits = predict_logits(model, encoded, pad_id(tokenizer), batch_size, uses_token_types(cfg), progress)
    return decode(task_type, encoded, logits)


__all__ = ["Encoded", "encode", "collate", "length_sorted", "bucketed", "predict", "predict_logits", "decode",
           "pad_id", "uses_token_types", "IGNORE"]
