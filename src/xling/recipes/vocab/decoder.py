"""What ``xling vocab trim`` measures on a decoder: held-out perplexity and tokens per second, before and after.

The maths is in :mod:`xling.methods.vocab.lm` (see its docstring for why the
trimmed model's perplexity equals the original's renormalised over the kept
vocabulary); this module picks the held-out sentences, runs the measurements
and summarises them for ``vocab_report.json``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

#: Prompts and new tokens per prompt of the greedy-decoding speed measurement.
SPEED_PROMPTS = 4
SPEED_PROMPT_TOKENS = 32
SPEED_NEW_TOKENS = 32
#: Longest held-out sequence scored (tokens); longer ones are cut.
MAX_TOKENS = 256


def head_missing(model) -> bool:
    """Whether the checkpoint lacked the output projection, so the loaded one is random (a bare ``LlamaModel``
    saved under ``LlamaForCausalLM``): its logits mean nothing and are neither scored nor compared."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    missing = set(getattr(model, "_xling_missing_keys", ()) or ())
    if out is None or not missing:
        return False
    names = [name for name, module in model.named_modules() if module is out]
    return any(f"{name}.weight" in missing for name in names)


def is_causal_lm(model) -> bool:
    """A decoder with a trained LM head (``...ForCausalLM``, ``...LMHeadModel``): what perplexity is defined for."""
    from xling.models.loading import _is_decoder

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return out is not None and _is_decoder(model.config) and not head_missing(model)


def split_heldout(sources: list, n: int) -> tuple[list, dict[str, list[str]]]:
    """Hold out the last ``min(n, len // 2)`` texts of every sentence source (word lists are never held out).

    Returns the sources without them (for the token count) and ``lang -> held-out texts``.
    """
    kept, held = [], {}
    for s in sources:
        k = min(n, len(s.texts) // 2) if s.kind == "sentences" and s.weights is None else 0
        if k <= 0:
            kept.append(s)
            continue
        kept.append(replace(s, texts=s.texts[:-k], meta={**s.meta, "heldout": k}))
        held.setdefault(s.lang or "any", []).extend(s.texts[-k:])
    return kept, held


def heldout_ids(backend, texts: Sequence[str], prefix: int | None) -> list[list[int]]:
    """Each text's ids with the tokenizer's special tokens; ``prefix`` (a BOS or end-of-text id) is put in front
    when the tokenizer adds no leading token, so that the first word is scored too."""
    out = []
    for t in texts:
        ids = backend.encode(t).ids
        bare = backend.encode(t, add_special_tokens=False).ids
        if prefix is not None and ids[:1] == bare[:1]:
            ids = [prefix] + ids
        out.append(ids[:MAX_TOKENS])
    return out


def score(model, held: dict[str, list[str]], seqs: dict[str, list[list[int]]], columns=None,
          covered: dict[str, list[bool]] | None = None, progress=None) -> dict:
    """Per language: per-sentence NLL, predicted tokens and characters (and the kept-vocabulary terms on covered
    sentences when ``columns`` is given). ``progress(1)`` is called after each sentence."""
    from xling.methods.vocab.lm import sequence_nll

    out = {}
    for lang, ids_list in seqs.items():
        rows = []
        for k, (text, ids) in enumerate(zip(held[lang], ids_list)):
            cov = covered is not None and covered[lang][k]
            r = sequence_nll(model, ids, columns if cov else None)
            r["chars"], r["covered"] = len(text), bool(cov)
            rows.append(r)
            if progress is not None:
                progress(1)
        out[lang] = rows
    return out


def heldout_pass(model, held, seqs, columns=None, covered=None, *, label: str, enabled: bool = True):
    """:func:`score` then :func:`speed`, with an estimate line first and a progress bar over the sentences (the
    speed measurement after it is bounded: at most 2 x 20 s for each of forward and greedy decoding)."""
    import sys

    from xling.engine.estimate import current_load, estimate_line, estimate_seconds, model_params, say

    n = sum(len(v) for v in seqs.values())
    if enabled:
        load = current_load()
        tokens = sum(len(s) for v in seqs.values() for s in v)
        secs = estimate_seconds(tokens, model_params(model.config, model), load=load) + 80.0
        say(estimate_line(f"vocab trim: held-out perplexity and speed ({label})",
                          model=str(getattr(model.config, "_name_or_path", "") or model.config.model_type),
                          params=model_params(model.config, model), seconds=secs, langs=len(seqs), texts=n, load=load))
    bar = None
    if enabled:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="sentence", desc=f"perplexity ({label})", file=sys.stderr, dynamic_ncols=True)
    try:
        scored = score(model, held, seqs, columns, covered, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return scored, speed(model, seqs)


def speed(model, seqs: dict[str, list[list[int]]]) -> dict:
    """Forward (teacher-forced) and greedy-decoding tokens per second on the held-out sequences."""
    from xling.methods.vocab.lm import forward_speed, generate_speed

    flat = [s for v in seqs.values() for s in v]
    prompts = [s[:SPEED_PROMPT_TOKENS] for s in flat[:SPEED_PROMPTS]]
    return {"forward": forward_speed(model, flat), "generate": generate_speed(model, prompts, SPEED_NEW_TOKENS)}


def _ppl(rows: list[dict], key: str = "nll") -> float | None:
    from xling.methods.vocab.lm import perplexity

    n = sum(r["n"] for r in rows)
    return None if not n else round(perplexity(sum(r[key] for r in rows), n), 6)


def _bpc(rows: list[dict]) -> float | None:
    chars = sum(r["chars"] for r in rows if r["n"])
    return None if not chars else round(sum(r["nll"] for r in rows if r["n"]) / chars / math.log(2), 6)


def summarise(before: dict, after: dict, reps: int = 1000, seed: int = 0) -> dict:
    """The perplexity part of the report (see :mod:`xling.methods.vocab.lm`).

    ``all``: every held-out sentence, per-token perplexity and bits per character before and after, and the change in
    bits per character with a 95% paired bootstrap interval over sentences (:func:`xling.methods.stats.delta_log_ppl`);
    ``covered``: sentences whose tokens were all kept (same tokens before and after): the original's perplexity, the
    original's renormalised over the kept vocabulary, the trimmed model's (equal to the renormalised one up to float
    error: ``max_abs_diff_nll``) and the mean ``-log P(kept)`` per token that separates the first two.
    """
    import torch

    from xling.methods.stats import delta_log_ppl

    b_all = [r for rows in before.values() for r in rows]
    a_all = [r for rows in after.values() for r in rows]
    res: dict = {"heldout_sentences": len(b_all)}
    res["all"] = {"tokens_before": sum(r["n"] for r in b_all), "tokens_after": sum(r["n"] for r in a_all),
                  "perplexity_before": _ppl(b_all), "perplexity_after": _ppl(a_all),
                  "bits_per_char_before": _bpc(b_all), "bits_per_char_after": _bpc(a_all)}
    pairs = [(b, a) for b, a in zip(b_all, a_all) if b["n"] and a["n"]]
    if len(pairs) >= 2:
        t = lambda key, side: torch.tensor([p[side][key] for p in pairs], dtype=torch.float64)  # noqa: E731
        d, lo, hi = delta_log_ppl((t("nll", 0), t("chars", 0)), (t("nll", 1), t("chars", 1)), reps, seed)
        res["all"]["delta_bits_per_char"] = round(d / math.log(2), 6)
        res["all"]["delta_bits_per_char_ci"] = [round(lo / math.log(2), 6), round(hi / math.log(2), 6)]
    cb = [b for b in b_all if b["covered"]]
    ca = [a for b, a in zip(b_all, a_all) if b["covered"]]
    cov = {"sentences": len(cb), "tokens": sum(r["n"] for r in cb)}
    if cb and cov["tokens"]:
        cov |= {"perplexity_before": _ppl(cb), "perplexity_before_renormalised": _ppl(cb, "nll_kept"),
                "perplexity_after": _ppl(ca),
                "max_abs_diff_nll": float(max(abs(b["nll_kept"] - a["nll"]) for b, a in zip(cb, ca))),
                "mean_neg_log_kept_mass": round(sum(r["neg_log_kept_mass"] for r in cb) / cov["tokens"], 8)}
    res["covered"] = cov
    res["langs"] = {lang: {"sentences": len(rows), "perplexity_before": _ppl(rows),
                           "perplexity_after": _ppl(after[lang]), "bits_per_char_before": _bpc(rows),
                           "bits_per_char_after": _bpc(after[lang])} for lang, rows in before.items()}
    return res


def covered_flags(seqs: dict[str, list[list[int]]], old_to_new: np.ndarray) -> dict[str, list[bool]]:
    """Whether every id of each held-out sequence is kept."""
    return {lang: [bool((old_to_new[np.asarray(s, dtype=np.int64)] >= 0).all()) if s else False for s in v]
            for lang, v in seqs.items()}


__all__ = ["MAX_TOKENS", "SPEED_NEW_TOKENS", "SPEED_PROMPTS", "covered_flags", "head_missing", "heldout_ids",
           "heldout_pass", "is_causal_lm",
           "score", "speed", "split_heldout", "summarise"]
