"""Translate-test: every target-language test item translated into the source language by a prompted decoder.

The baseline zero-shot transfer has to beat (Conneau et al. 2018, "XNLI: Evaluating Cross-lingual Sentence
Representations"; Ponti et al. 2020, "XCOPA"; Artetxe et al. 2020, "Translation Artifacts in Cross-lingual
Transfer Learning"): instead of running the source-language task model on target-language text, translate the
text into the source language (English) and run the source-language task model on the translation. ``xling
transfer --translate-test MODEL`` uses it as the ``translate-test`` condition; this module does the translation:

* :func:`check_translator`: the ``generation`` extra (sacrebleu, lingua) and a decoder translator, checked before
  any long work (one line each);
* :func:`demonstrations`: the k fixed demonstration pairs (target text, source text) of a target language, from
  parallel text that is never a test item (:data:`DEMO_SOURCES`): the task's own training split paired by id
  (``task``), or the demonstration pool of the built-in ``bible-mt`` task (``bible-mt``: Bible verses of
  training-split chapters; the Bible is fetched once); ``auto`` takes ``task`` where the task has k parallel
  training pairs in that language, else ``bible-mt``. Any pair whose text (either side, after case, punctuation
  and space normalisation) equals a test item's text in any language is skipped;
* :func:`translate_examples`: the k-shot prompt of :func:`xling.tasks.bible_mt.translation_prompt` per text field
  (``text``, and ``text_pair`` for pair tasks), greedy decoding in length-sorted batches with the KV cache
  (:func:`xling.engine.generate.greedy_generate`, stopping at the first newline), each language's set cached
  in the generation cache (:class:`~xling.harness.generation.GenerationCache`) under the translator's
  fingerprint and the digest of the prompts and settings, so a rerun generates nothing;
* :func:`translation_quality`: the share of translations not identified as the source language by lingua
  (the off-target rate, :func:`xling.methods.generation.fidelity`, with its 95% Wilson interval), and, where
  the task is parallel (each target item's id is a source-language test item), chrF of the translations against
  those source-language items with a 95% bootstrap interval (:func:`xling.methods.generation.generation_scores`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Sequence

from xling.errors import XlingError

#: Where the demonstrations come from (``--translate-demos``).
DEMO_SOURCES = ("auto", "task", "bible-mt")
#: Text fields of a classification example that are translated.
FIELDS = ("text", "text_pair")
#: Prompt tokens kept at most (the prompt keeps its first and last tokens beyond; fewer where the model has fewer
#: positions than this plus ``max_new_tokens``).
MAX_PROMPT_TOKENS = 1024
#: A translation ends at the first newline (the prompt asks for one line).
STOP = ("\n",)


def check_translator(name: str, *, dtype: str = "fp32", device: str = "auto", what: str = "--translate-test"):
    """The translator's :class:`~xling.models.loading.LoadedModel` (lazy: config and tokenizer only), after the
    ``generation`` extra is checked; an encoder is one line."""
    from xling.deps import require_extra
    from xling.models.loading import load_model

    require_extra("generation", f"{what} (translating the test items and their language identification)")
    lm = load_model(name, dtype=dtype, device=device, quiet=True, lazy=True)
    if not lm.is_decoder:
        raise XlingError(f"{what} {name}: the translator must be a decoder LLM (prompted translation); it is an "
                         f"encoder")
    return lm


def _protected(task) -> set[str]:
    from xling.data.overlap import protected_keys

    return protected_keys(getattr(e, f) for exs in (task.data.get("test") or {}).values() for e in exs
                          for f in FIELDS if getattr(e, f, None))


def _task_pairs(task, source: str, target: str) -> list[tuple[str, str]]:
    """(target text, source text) pairs of the task's training split, paired by id, in the target's order."""
    train = task.data.get("train") or {}
    src = {e.id: e.text for e in train.get(source) or [] if e.id is not None and e.text}
    return [(e.text, src[e.id]) for e in train.get(target) or [] if e.id is not None and e.text and e.id in src]


def _bible_pairs(source: str, target: str, k: int) -> list[tuple[str, str]]:
    from xling.tasks.bible_mt import bible_mt

    pool = bible_mt(train_size=k + 32, langs=list(dict.fromkeys([source, target])), quiet=True)
    train = pool.data["train"]
    for lang in (source, target):
        if lang not in train:
            raise XlingError(f"--translate-demos bible-mt: the built-in Bible has no {lang}")
    src = {e.id: e.text for e in train[source]}
    return [(e.text, src[e.id]) for e in train[target] if e.id in src]


def demonstrations(task, source: str, target: str, k: int, spec: str = "auto") -> tuple[list[tuple[str, str]], str]:
    """The first ``k`` demonstration pairs ``(target text, source text)`` for ``target`` and where they come from
    (``task`` or ``bible-mt``); see the module docstring. Fewer than ``k`` usable pairs is one line."""
    if spec not in DEMO_SOURCES:
        raise XlingError(f"--translate-demos takes one of {', '.join(DEMO_SOURCES)}, got {spec!r}")
    if k <= 0:
        return [], "none"
    from xling.data.overlap import normalize_text

    protected = _protected(task)

    def usable(pairs):
        return [(t, s) for t, s in pairs if normalize_text(t) not in protected and normalize_text(s) not in protected]

    if spec in ("auto", "task"):
        pairs = usable(_task_pairs(task, source, target))
        if len(pairs) >= k or spec == "task":
            if len(pairs) < k:
                raise XlingError(f"--translate-demos task: task {task.name} has {len(pairs)} training pairs "
                                 f"{target}-{source} (same id in both, no test text), --translate-shots {k} needs "
                                 f"{k}; use --translate-demos bible-mt or fewer shots")
            return pairs[:k], "task"
    pairs = usable(_bible_pairs(source, target, k))
    if len(pairs) < k:
        raise XlingError(f"--translate-demos bible-mt: {len(pairs)} Bible demonstration pairs {target}-{source} "
                         f"outside the test items, --translate-shots {k} needs {k}")
    return pairs[:k], "bible-mt"


def translation_prompts(examples: Sequence, demos: Sequence[tuple[str, str]], target: str,
                        source: str) -> list[tuple[int, str, str]]:
    """``(example index, field, prompt)`` for every non-empty text field of every example: the k-shot prompt
    ``<Target>: ...`` / ``<Source>:`` of :func:`xling.tasks.bible_mt.translation_prompt`."""
    from xling.tasks.bible_mt import prompt_name, translation_prompt

    src_name, tgt_name = prompt_name(target), prompt_name(source)
    out = []
    for i, e in enumerate(examples):
        for f in FIELDS:
            text = getattr(e, f, None)
            if text:
                out.append((i, f, translation_prompt(text, src_name, tgt_name, demos)))
    return out


@dataclasses.dataclass
class Translations:
    """Every target language's translated test examples, the translation records and what it took."""

    examples: dict[str, list]            # lang -> the examples with their text fields translated (ids, labels kept)
    records: list[dict]                  # id, lang, field, source, translation, stop (translations.jsonl)
    settings: dict                       # translator, fingerprint, shots, demos per language, decoding
    fingerprints: dict[str, str]         # lang -> digest of the translated texts (the prediction cache's data key)
    timings: dict = dataclasses.field(default_factory=dict)


def _max_prompt(lm, max_new_tokens: int) -> int:
    positions = next((v for v in (getattr(lm.config, k, None) for k in ("max_position_embeddings", "n_positions"))
                      if isinstance(v, int) and v > 0), None)
    if positions is None:
        return MAX_PROMPT_TOKENS
    if positions - max_new_tokens < 2:
        raise XlingError(f"the translator reads at most {positions} positions: --translate-max-new-tokens "
                         f"{max_new_tokens} leaves no room for a prompt")
    return min(MAX_PROMPT_TOKENS, positions - max_new_tokens)


def _say_estimate(lm, name: str, todo: list[tuple[str, list[str], list[str]]], max_new_tokens: int,
                  max_prompt: int) -> None:
    """One line before the translation: prompt tokens read, plus each output's tokens (about its source's length,
    at most ``max_new_tokens``) generated one at a time on the KV cache (about 2N operations each)."""
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    try:
        config = lm.config
        params = model_params(config)
    except Exception:  # noqa: BLE001 - a model whose size is not in its config gets no estimate
        return
    if params <= 0:
        return
    prompts = [p for _, ps, _ in todo for p in ps]
    new = sum(min(max_new_tokens, count_tokens([s]) + 4) for _, _, srcs in todo for s in srcs)
    device = str(lm.device) if lm.device is not None else "cpu"
    device = "cuda" if device.startswith("cuda") else "cpu"
    load = current_load()
    secs = estimate_seconds(count_tokens(prompts, max_prompt) + new, forward_params(config), device=device, load=load)
    say(estimate_line("transfer translate-test", model=name, params=params, seconds=secs, device=device,
                      langs=len(todo), texts=len(prompts), text_word="text", load=load,
                      note="(less where translations are cached)"))


def translate_examples(lm, name: str, task, examples: dict[str, list], source: str, *, shots: int,
                       demos: str = "auto", max_new_tokens: int = 128, batch_size: int = 16, use_cache: bool = True,
                       progress: bool = True, cache=None) -> Translations:
    """Translate the text fields of every language's ``examples`` into ``source`` (see the module docstring).

    ``lm``: the translator (:func:`check_translator`); ``name``: its name as given. Returns the translated
    examples (same order, ids and labels; only the text fields replaced, each stripped of surrounding space)."""
    from xling.engine.generate import greedy_generate
    from xling.harness.generation import GenerationCache, generations_problem
    from xling.io import json_digest

    cache = cache if cache is not None else GenerationCache()
    max_prompt = _max_prompt(lm, max_new_tokens)
    decoding = {"decoding": "greedy", "shots": shots, "max_new_tokens": max_new_tokens, "stop": list(STOP),
                "max_prompt_tokens": max_prompt}
    plan, demo_from = [], {}
    for lang, exs in examples.items():
        pairs, origin = demonstrations(task, source, lang, shots, demos)
        demo_from[lang] = origin
        prompts = translation_prompts(exs, pairs, lang, source)
        key = GenerationCache.key({"model": lm.fingerprint, "purpose": "translate-test", "lang": lang,
                                   "target_lang": source, "prompts": json_digest([p for _, _, p in prompts]),
                                   **decoding})
        got = cache.get(key, valid=lambda v, n=len(prompts): generations_problem(n, v)) if use_cache else None
        plan.append((lang, exs, prompts, key, got))
    todo = [(lang, [p for _, _, p in ps], [getattr(exs[i], f) for i, f, _ in ps])
            for lang, exs, ps, _, got in plan if got is None]
    t_gen, loaded, bar = 0.0, None, None
    if todo and progress:
        from tqdm.auto import tqdm

        _say_estimate(lm, name, todo, max_new_tokens, max_prompt)
        bar = tqdm(total=sum(len(ps) for _, ps, _ in todo), unit="text", desc="translating", file=sys.stderr,
                   dynamic_ncols=True)
    out, records, fps = {}, [], {}
    try:
        for lang, exs, prompts, key, got in plan:
            if got is None:
                if loaded is None:
                    from xling.tasks.zeroshot import load_causal_lm

                    loaded = load_causal_lm(lm.path, lm.dtype, lm.device)
                if bar is not None:
                    bar.set_description(f"translating {lang}")
                t = time.perf_counter()
                gens = greedy_generate(loaded, lm.tokenizer, [p for _, _, p in prompts], max_new_tokens=max_new_tokens,
                                       stop=STOP, batch_size=batch_size, max_prompt_tokens=max_prompt,
                                       progress=bar.update if bar is not None else None)
                t_gen += time.perf_counter() - t
                got = [{"text": g.text, "reason": g.reason, "tokens": len(g.token_ids)} for g in gens]
                cache.put(key, got, {"model": name, "purpose": "translate-test", "lang": lang, "target_lang": source,
                                     **decoding})
            new = [dict() for _ in exs]
            for (i, f, _), g in zip(prompts, got):
                text = g["text"].strip()
                new[i][f] = text
                records.append({"id": exs[i].id if exs[i].id is not None else f"#{i}", "lang": lang, "field": f,
                                "source": getattr(exs[i], f), "translation": text, "stop": g["reason"]})
            out[lang] = [dataclasses.replace(e, **n) for e, n in zip(exs, new)]
            fps[lang] = json_digest([[getattr(e, f, None) for f in FIELDS] for e in out[lang]])
    finally:
        if bar is not None:
            bar.close()
        del loaded
    settings = {"translator": name, "fingerprint": lm.fingerprint, "target_lang": source, "demos": demo_from,
                "demo_source": demos, **decoding}
    return Translations(out, records, settings, fps, {"generation_s": round(t_gen, 3),
                                                       "languages_generated": len(todo)})


def translation_quality(translations: Translations, task, source: str, *, n_boot: int = 1000,
                        seed: int = 0) -> tuple[dict[str, dict], list[str]]:
    """Per language: ``n`` (translated texts), ``off_target`` (share not identified as ``source`` by lingua, over
    the texts with a detected language) with its 95% Wilson interval ``off_target_lo/hi``, and ``chrf`` with a 95%
    bootstrap interval against the source-language test items of the same ids where the task has every one of
    them (else None). Each record gets its ``detected`` language. Returns (per language, notes)."""
    import math

    from xling.harness.generation import LanguageIdentifier
    from xling.methods.generation import fidelity, generation_scores
    from xling.methods.stats import wilson_interval

    ident = LanguageIdentifier([source])
    expected = ident.expected(source)
    notes = []
    if expected is None:
        notes.append(f"lingua does not know {source}: no off-target rate for the translations")
    refs = {(e.id, f): getattr(e, f) for e in (task.data.get("test") or {}).get(source, [])
            for f in FIELDS if getattr(e, f, None)}
    by_lang: dict[str, list[dict]] = {}
    for r in translations.records:
        by_lang.setdefault(r["lang"], []).append(r)
    out = {}
    for lang, recs in by_lang.items():
        hyps = [r["translation"] for r in recs]
        row = {"n": len(recs), "off_target": None, "off_target_lo": None, "off_target_hi": None, "off_target_n": 0,
               "chrf": None, "chrf_lo": None, "chrf_hi": None}
        if expected is not None:
            detected = ident.detect(hyps)
            for r, d in zip(recs, detected):
                r["detected"] = d
            off, _ = fidelity(detected, [[d] for d in detected], expected)
            known = [v for v in off if not math.isnan(v)]
            if known:
                k = sum(known)
                lo, hi = wilson_interval(k, len(known))
                row.update({"off_target": round(k / len(known), 6), "off_target_lo": round(lo, 6),
                            "off_target_hi": round(hi, 6), "off_target_n": len(known)})
        if recs and all((r["id"], r["field"]) in refs for r in recs):
            sc = generation_scores(hyps, [refs[(r["id"], r["field"])] for r in recs], target_lang=source,
                                   n_boot=n_boot, seed=seed)
            c = next(x for x in sc["rows"] if x["metric"] == "chrf")

            def r4(v):
                return round(float(v), 4) if v == v else None

            row.update({"chrf": r4(c["value"]), "chrf_lo": r4(c["low"]), "chrf_hi": r4(c["high"])})
        out[lang] = row
    return out, notes


#: A target language whose translations are off target at least this often (the lower end of the 95% Wilson
#: interval) gets a warning: the condition then measures the translator more than the transfer.
OFF_TARGET_WARNING = 0.25


def translation_warnings(quality: dict[str, dict], source: str) -> list[str]:
    """Warnings for languages whose translations are mostly not in ``source`` (:data:`OFF_TARGET_WARNING`)."""
    bad = [(lang, q) for lang, q in quality.items()
           if q.get("off_target_lo") is not None and q["off_target_lo"] >= OFF_TARGET_WARNING]
    if not bad:
        return []
    return [f"translate-test: the translator's output is not {source} for "
            + ", ".join(f"{lang} ({100 * q['off_target']:.0f}% off target, 95% CI [{100 * q['off_target_lo']:.0f}, "
                        f"{100 * q['off_target_hi']:.0f}])" for lang, q in bad)
            + "; translate-test there measures the translator more than the task model"]


def translations_jsonl(records: Sequence[dict]) -> str:
    """``translations.jsonl``: one translated text a line (JSON escapes every control character)."""
    import json

    keys = ("id", "lang", "field", "source", "translation", "detected", "stop")
    return "".join(json.dumps({k: r.get(k) for k in keys}, ensure_ascii=False) + "\n" for r in records)


__all__ = ["DEMO_SOURCES", "FIELDS", "OFF_TARGET_WARNING", "Translations", "check_translator", "demonstrations",
           "translate_examples", "translation_prompts", "translation_quality", "translation_warnings",
           "translations_jsonl"]
