"""The shared-prefix log-likelihood scorer (each prompt run once, its choices after the KV cache) against the per-pair
path and an independent unpadded computation, on tiny random Llama, GPT-2 and Gemma 3 decoders."""

from __future__ import annotations

import functools
import random
from types import SimpleNamespace

import pytest
import tiny_models
import torch

from xling.errors import XlingError
from xling.tasks import zeroshot as zs
from xling.tasks.core import Example
from xling.tasks.zeroshot import label_loglik, zero_shot_predict

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("llama", "gpt2", "gemma3")
# prompts of different token lengths in one batch (Gemma 3's sliding window is 4 tokens: most prompts exceed it)
PROMPTS = [
    "the cat sees the dog and the big red house is blue",
    "one dog",
    "der hund sieht die katze und das haus ist rot blau grün eins zwei drei",
    "le chat voit le chien",
    "кот видит собака",
    "the small dog runs to the green house and one cat sees two dog",
]
# choices of 1, 2, 3 and 4 tokens; examples with different numbers of choices
CHOICES = [
    ["cat", "red house", "the big blue dog", "one"],
    ["cat", "red house", "the big blue dog", "one"],
    ["a", "two and three", "blue"],
    ["chat", "la maison rouge", "deux"],
    ["собака", "красный дом"],
    ["cat", "red house", "the big blue dog", "one"],
]


@functools.cache
def _lm(kind: str):
    model, tok = tiny_models.build(kind)
    return tiny_models.with_lm_head(model), tok


def _direct(model, tok, prompt: str, choice: str) -> tuple[float, int]:
    """Summed log-probability of ``choice`` after ``prompt`` from one unpadded forward pass of prompt + choice."""
    bos = tok.bos_token_id
    pid = ([bos] if bos is not None else []) + tok(prompt, add_special_tokens=False)["input_ids"]
    cid = tok(" " + choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([pid + cid])).logits[0].float(), -1)
    return sum(logp[len(pid) + t - 1, cid[t]].item() for t in range(len(cid))), len(cid)


def _tokens_seen(model):
    """A forward pre-hook counting the input tokens each call runs, and whether a call was given a cache."""
    seen = {"tokens": 0, "cached_calls": 0}

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen["tokens"] += ids.numel()
        seen["cached_calls"] += kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def _close(a, b, atol=1e-5):
    assert [len(r) for r in a] == [len(r) for r in b]
    for ra, rb in zip(a, b):
        assert ra == pytest.approx(rb, abs=atol)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_prefix_matches_per_pair_and_direct(kind):
    model, tok = _lm(kind)
    direct = [[_direct(model, tok, p, c) for c in cs] for p, cs in zip(PROMPTS, CHOICES)]
    for normalize in ("sum", "mean"):
        ref = [[lp / n if normalize == "mean" else lp for lp, n in row] for row in direct]
        per_pair = label_loglik(model, tok, PROMPTS, CHOICES, normalize, batch_size=7, share_prefix=False)
        _close(per_pair, ref)
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        n_prompt = [len(bos + tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
        per_pair_tokens = sum(n_prompt[i] + n for i, row in enumerate(direct) for _, n in row)
        for bs in (1, 7):
            seen, handle = _tokens_seen(model)
            try:
                shared = label_loglik(model, tok, PROMPTS, CHOICES, normalize, batch_size=bs, share_prefix=True)
            finally:
                handle.remove()
            auto = label_loglik(model, tok, PROMPTS, CHOICES, normalize, batch_size=bs)
            _close(shared, per_pair)
            _close(shared, ref)
            assert auto == shared  # auto takes the shared path here: same batches, same numbers
            assert seen["cached_calls"] > 0
            # each prompt ran once (+ continuation tokens 1..n-1), not once per choice
            assert sum(n_prompt) <= seen["tokens"] < 0.6 * per_pair_tokens
            if bs == 1:  # one example a batch: its prompt, then its choices' tokens 1..n-1 padded among themselves
                cont = sum(sum(n > 1 for _, n in row) * (max(n for _, n in row) - 1) for row in direct)
                assert seen["tokens"] == sum(n_prompt) + cont


def test_batch_sizes_agree_and_progress_counts_pairs():
    model, tok = _lm("gemma3")
    got = {}
    for bs in (1, 2, 7, 64):
        calls = []
        got[bs] = label_loglik(model, tok, PROMPTS, CHOICES, "mean", batch_size=bs, progress=calls.append)
        assert sum(calls) == sum(len(c) for c in CHOICES)
        assert all(c <= max(bs, 4) for c in calls)  # a batch holds about batch_size pairs (one example at least)
    for bs in (2, 7, 64):
        _close(got[bs], got[1])


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_fallback_is_todays_path(kind):
    model, tok = _lm(kind)
    # every prompt is longer than max_length minus its longest choice: the kept prompt differs per choice
    long_prompts = [p + " and the cat sees the dog" for p in PROMPTS]
    for bs in (1, 7):
        today = label_loglik(model, tok, long_prompts, CHOICES, "sum", batch_size=bs, max_length=8,
                             share_prefix=False)
        assert label_loglik(model, tok, long_prompts, CHOICES, "sum", batch_size=bs, max_length=8) == today
        assert label_loglik(model, tok, long_prompts, CHOICES, "sum", batch_size=bs, max_length=8,
                            share_prefix=True) == today
    # mixed: the truncated example keeps today's scores exactly (batch size 1), the others are shared
    mixed = ["one dog", PROMPTS[2]]
    conts = [CHOICES[0], CHOICES[2]]
    today = label_loglik(model, tok, mixed, conts, "sum", batch_size=1, max_length=12, share_prefix=False)
    got = label_loglik(model, tok, mixed, conts, "sum", batch_size=1, max_length=12)
    assert got[1] == today[1]
    _close(got, today)
    assert got[0] == pytest.approx([_direct(model, tok, mixed[0], c)[0] for c in conts[0]], abs=1e-5)


class _NoCache(torch.nn.Module):
    """A causal LM whose forward takes no cache."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


class _OpaqueCache(torch.nn.Module):
    """A causal LM that takes a cache but returns one whose rows cannot be repeated."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      logits_to_keep=logits_to_keep)
        return SimpleNamespace(logits=out.logits, cache=object() if use_cache else None)


def test_models_without_a_usable_cache_score_per_pair():
    model, tok = _lm("llama")
    today = label_loglik(model, tok, PROMPTS, CHOICES, "sum", batch_size=5, share_prefix=False)
    for wrapped in (_NoCache(model), _OpaqueCache(model)):
        calls = []
        got = label_loglik(wrapped, tok, PROMPTS, CHOICES, "sum", batch_size=5, progress=calls.append)
        _close(got, today)
        if isinstance(wrapped, _OpaqueCache):  # the same per-pair batches as today's path
            assert got == today
        assert sum(calls) == sum(len(c) for c in CHOICES)
        with pytest.raises(XlingError, match="KV cache"):
            label_loglik(wrapped, tok, PROMPTS, CHOICES, "sum", batch_size=5, share_prefix=True)


def test_single_token_choices_need_no_continuation_pass():
    model, tok = _lm("gpt2")
    conts = [["cat", "dog", "one"]] * len(PROMPTS)
    seen, handle = _tokens_seen(model)
    try:
        got = label_loglik(model, tok, PROMPTS, conts, "sum", batch_size=6, share_prefix=True)
    finally:
        handle.remove()
    assert seen["cached_calls"] == 0
    _close(got, label_loglik(model, tok, PROMPTS, conts, "sum", batch_size=6, share_prefix=False))


def test_bf16_on_cpu():
    model, tok = _lm("llama")
    half = tiny_models.with_lm_head(tiny_models.build("llama")[0]).to(torch.bfloat16)
    shared = label_loglik(half, tok, PROMPTS, CHOICES, "sum", batch_size=7, share_prefix=True)
    per_pair = label_loglik(half, tok, PROMPTS, CHOICES, "sum", batch_size=7, share_prefix=False)
    fp32 = label_loglik(model, tok, PROMPTS, CHOICES, "sum", batch_size=7, share_prefix=False)
    for a, b, c in zip(shared, per_pair, fp32):
        assert all(torch.isfinite(torch.tensor(a)))
        assert a == pytest.approx(b, abs=0.1)
        assert a == pytest.approx(c, abs=0.1)


def test_zero_shot_predictions_unchanged(tiny_causal_dirs, monkeypatch):
    rng = random.Random(0)
    words = tiny_models.WORDS[:40]
    examples = [Example(text=" ".join(rng.choice(words) for _ in range(rng.randint(2, 14))), label=0)
                for _ in range(12)]
    labels = ["cat", "dog", "red_house", "big-blue-dog", "one", "two-and-three"]
    for kind in KINDS:
        model = zs.load_causal_lm(tiny_causal_dirs[kind], torch.float32, torch.device("cpu"))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tiny_causal_dirs[kind])
        with monkeypatch.context() as m:
            m.setattr(zs, "label_loglik", functools.partial(label_loglik, share_prefix=False))
            today = zero_shot_predict(model, tok, "classification", labels, examples, batch_size=6)
        got = zero_shot_predict(model, tok, "classification", labels, examples, batch_size=6)
        assert got == today
        assert set(got) <= set(range(len(labels)))
