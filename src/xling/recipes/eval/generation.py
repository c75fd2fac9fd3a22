"""``xling eval`` on a generation task: prompted greedy generation, then chrF/chrF++/BLEU and language fidelity.

Run by :func:`xling.recipes.eval.run.evaluate` when ``--task`` names a generation task (the built-in
``bible-mt``, or a task file whose rows have a ``target``; :func:`xling.tasks.generation.is_generation_task`).
No training: the model is a decoder LLM, prompted k-shot (:mod:`xling.tasks.generation`):

1. the ``generation`` extra (sacrebleu, lingua) is checked before anything loads, then the model's config and
   tokenizer (a decoder, else one line), then the task;
2. per language and direction, the items' prompts are generated for in length-sorted batches with the KV cache
   (:func:`xling.engine.generate.greedy_generate`: greedy, stopping at EOS, a stop string, or
   ``--max-new-tokens``); each set is cached (:class:`~xling.harness.generation.GenerationCache`), so an
   interrupted run resumes and a rerun with other metric settings generates nothing;
3. lingua identifies the language of every output and of its lines (built once from the run's languages plus
   English); :func:`xling.methods.generation.generation_scores` scores each set with 95% bootstrap intervals
   over items;
4. the outputs and the results store (:mod:`xling.harness.generation`).
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError

#: The prompt length (tokens) a generation run keeps when ``--max-length`` is not given (less where the model has
#: fewer positions than this plus ``--max-new-tokens``: the prompt keeps its first and last tokens).
DEFAULT_MAX_PROMPT = 1024


def _langs(cfg, task) -> list[str]:
    table = task.data.get(cfg.split) or {}
    if not table:
        raise XlingError(f"task {task.name} has no {cfg.split} split")
    if cfg.langs is None:
        return sorted(table)
    langs = []
    for code in cfg.langs:
        lang = task.resolve_lang(code, cfg.split)
        if lang not in langs:
            langs.append(lang)
    return langs


def generation_settings(cfg, lm) -> dict:
    """The settings of a generation run (what its outputs depend on); one line when the model's positions leave no
    room for a prompt."""
    from xling.recipes.eval.config import DEFAULT_STOP

    stop = list(cfg.stop) if cfg.stop else list(DEFAULT_STOP)
    max_prompt = cfg.max_length or DEFAULT_MAX_PROMPT
    positions = next((v for v in (getattr(lm.config, k, None) for k in ("max_position_embeddings", "n_positions"))
                      if isinstance(v, int) and v > 0), None)
    if positions is not None:  # prompt and answer must fit the model's positions
        if positions - cfg.max_new_tokens < 2:
            raise XlingError(f"{cfg.model} reads at most {positions} positions: --max-new-tokens {cfg.max_new_tokens} "
                             f"leaves no room for a prompt")
        max_prompt = min(max_prompt, positions - cfg.max_new_tokens)
    return {"mode": "generation", "decoding": "greedy", "shots": cfg.shots, "max_new_tokens": cfg.max_new_tokens,
            "stop": stop, "max_prompt_tokens": max_prompt, "template": cfg.template,
            "correct_chrf": cfg.correct_chrf, "n_boot": cfg.n_boot}


class SetGenerator:
    """Generates for one (language, direction) set of items at a time, through the generation cache (keyed by the
    model, the task, the set and its prompts, and the decoding settings); the decoder is loaded on first need."""

    def __init__(self, cfg, lm, task_name: str, settings: dict):
        from xling.harness.generation import GenerationCache

        self.cfg, self.lm, self.task_name = cfg, lm, task_name
        self.gen_settings = {k: settings[k] for k in ("decoding", "shots", "max_new_tokens", "stop",
                                                      "max_prompt_tokens")}
        self.cache = GenerationCache()
        self.loaded = None
        self.from_cache = 0
        self.seconds = 0.0

    def generate(self, lang: str, direction: str, items, bar=None) -> list[dict]:
        from xling.engine.generate import greedy_generate
        from xling.harness.generation import GenerationCache, generations_problem
        from xling.io import json_digest
        from xling.tasks.generation import unit_key

        cfg, lm = self.cfg, self.lm
        key = GenerationCache.key({"model": lm.fingerprint, "task": self.task_name, "lang": lang,
                                   "direction": direction, "prompts": json_digest([it.prompt for it in items]),
                                   **self.gen_settings})
        if bar is not None:
            bar.set_description(f"generating {unit_key(lang, direction)}")
        n = len(items)
        got = self.cache.get(key, valid=lambda v: generations_problem(n, v)) if cfg.cache else None
        if got is not None:
            self.from_cache += 1
            if bar is not None:
                bar.update(len(items))
            return got
        if self.loaded is None:
            from xling.tasks.zeroshot import load_causal_lm

            self.loaded = load_causal_lm(lm.path, lm.dtype, lm.device)
        tg = time.perf_counter()
        gens = greedy_generate(self.loaded, lm.tokenizer, [it.prompt for it in items],
                               max_new_tokens=cfg.max_new_tokens, stop=self.gen_settings["stop"],
                               batch_size=cfg.batch_size, max_prompt_tokens=self.gen_settings["max_prompt_tokens"],
                               progress=bar.update if bar is not None else None)
        self.seconds += time.perf_counter() - tg
        got = [{"text": g.text, "reason": g.reason, "tokens": len(g.token_ids)} for g in gens]
        self.cache.put(key, got, {"model": cfg.model, "task": self.task_name, "lang": lang, "direction": direction,
                                  **self.gen_settings})
        return got


def identifier_notes(identifier) -> list[str]:
    if not identifier.unknown:
        return []
    return [(f"lingua does not know {', '.join(identifier.unknown)}: no language fidelity (off-target rate, "
             f"line-level pass rate) for outputs in them, and an item is correct on its chrF alone")]


def score_sets(cfg, units, outputs, identifier):
    """Score each (lang, direction, items) set's generations: ``(unit_rows, records, tidy rows, predictions)``."""
    from xling.harness.generation import prediction_record
    from xling.methods.generation import generation_scores
    from xling.tasks.generation import unit_key

    unit_rows, records, tidy, predictions = [], [], [], {}
    for (lang, direction, items), got in zip(units, outputs):
        hyps = [g["text"].strip() for g in got]
        target = items[0].target_lang if items else lang
        expected = identifier.expected(target)
        detected = identifier.detect(hyps) if expected is not None else None
        lines = identifier.detect_lines(hyps) if expected is not None else None
        sc = generation_scores(hyps, [it.reference for it in items], target_lang=target, detected=detected,
                               lines_detected=lines, expected=expected, correct_chrf=cfg.correct_chrf,
                               n_boot=cfg.n_boot, seed=0)
        key = unit_key(lang, direction)
        unit_rows.append({"lang": lang, "direction": direction, "key": key, "target_lang": target, "n": len(items),
                          "rows": sc["rows"], "signatures": sc["signatures"]})
        tidy += [{"lang": lang, "direction": direction, **r} for r in sc["rows"]]
        for i, (it, g, h) in enumerate(zip(items, got, hyps)):
            records.append({"id": it.id, "lang": lang, "direction": direction, "hypothesis": h,
                            "reference": it.reference, "source": it.source, "target_lang": target,
                            "detected": detected[i] if detected is not None else None,
                            "sentence_chrf": round(sc["sentence_chrf"][i], 4), "correct": sc["correct"][i],
                            "stop": g["reason"]})
        predictions[key] = prediction_record(items, sc["correct"])
    return unit_rows, records, tidy, predictions


def _say_estimate(cfg, lm, units, langs, total: int) -> None:
    """One line before generating: the prompts' forward passes (logits at the last position only) plus at most
    ``--max-new-tokens`` decoding steps per item through the whole model, its head included
    (:mod:`xling.engine.estimate`; a rough guide, less where sets are cached or outputs stop early)."""
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    config = getattr(lm, "config", None)
    params = model_params(config) if config is not None else 0
    if params <= 0 or not cfg.progress:
        return
    device = str(cfg.device)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    load = current_load()
    prompts = [it.prompt for _, _, items in units for it in items]
    secs = (estimate_seconds(count_tokens(prompts), forward_params(config), device=device, load=load)
            + estimate_seconds(total * cfg.max_new_tokens, params, device=device, load=load))
    say(estimate_line("eval (generation)", model=str(cfg.model), params=params, seconds=secs, device=device,
                      langs=len(langs), texts=total, text_word="item", load=load,
                      note=f"(at most {cfg.max_new_tokens} new tokens each; less where cached or stopped early)"))


def evaluate_generation(cfg, task=None):
    """Generate for and score every language (and direction) of a generation task; see the module docstring.

    ``cfg``: an :class:`~xling.recipes.eval.config.EvalConfig`; ``task``: a ready Task, else ``cfg.task`` is loaded.
    Returns a :class:`~xling.harness.generation.GenerationResult`.
    """
    import torch

    from xling.deps import require_extra
    from xling.harness.generation import (GenerationResult, LanguageIdentifier, save_generation_to_store,
                                          write_generation_outputs)
    from xling.models.loading import load_model
    from xling.tasks.generation import generation_units
    from xling.tasks.registry import load_task

    name = getattr(task, "name", None) or str(cfg.task)
    require_extra("generation", f"xling eval --task {name} (prompted generation)")
    if cfg.executor != "local":
        raise XlingError(f"xling eval on a generation task runs in this process; --executor {cfg.executor} is not "
                         f"supported for it (use --executor local)")
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, quiet=True, lazy=True)
    if not lm.is_decoder:
        raise XlingError(f"{cfg.model}: a generation task needs a decoder LLM (prompted generation); it is an encoder")
    task = task if task is not None else load_task(cfg.task, **cfg.task_options)
    if task.type != "generation":
        raise XlingError(f"task {task.name} is a {task.type} task, not a generation task")
    if cfg.max_examples is not None:
        task = task.capped({cfg.split: cfg.max_examples})
    langs = _langs(cfg, task)
    units = generation_units(task, langs, split=cfg.split, shots=cfg.shots, template=cfg.template)
    if not units:
        raise XlingError(f"task {task.name}: nothing to generate for {', '.join(langs)} (a translation task needs a "
                         f"language other than its pivot)")
    settings = generation_settings(cfg, lm)
    t_data = time.perf_counter()
    total = sum(len(items) for _, _, items in units)
    _say_estimate(cfg, lm, units, langs, total)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="item", desc="generating", file=sys.stderr, dynamic_ncols=True)
    runner = SetGenerator(cfg, lm, task.name, settings)
    try:
        outputs = [runner.generate(lang, direction, items, bar) for lang, direction, items in units]
    finally:
        if bar is not None:
            bar.close()
    from_cache, t_gen = runner.from_cache, runner.seconds
    t_scored = time.perf_counter()
    identifier = LanguageIdentifier(sorted({it.target_lang for _, _, items in units for it in items}))
    notes = identifier_notes(identifier)
    unit_rows, records, tidy, predictions = score_sets(cfg, units, outputs, identifier)
    t_done = time.perf_counter()
    pivot = (task.meta.get("translation") or {}).get("pivot") or task.source_lang
    result = GenerationResult(
        run_id=uuid.uuid4().hex[:12], model=str(cfg.model), task=task.name, split=cfg.split, source=pivot,
        langs=langs, units=unit_rows, records=records, rows=tidy, notes=notes, predictions=predictions,
        base_model=str(cfg.model),
        timings={"data_s": round(t_data - t0, 3), "generation_s": round(t_gen, 3),
                 "scoring_s": round(t_done - t_scored, 3), "total_s": round(t_done - t0, 3),
                 "sets_from_cache": from_cache, "model_loaded": runner.loaded is not None,
                 "items_per_s": round(total / t_gen, 2) if t_gen > 0 else None},
        meta={"model_fingerprint": lm.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
              "settings": settings, "identifier": identifier.describe(), "started": started, "device": cfg.device,
              "torch": torch.__version__, "task_meta": {k: v for k, v in task.meta.items() if k != "translations"}},
    )
    if cfg.out is not None:
        from xling.io import output_folder

        with output_folder(cfg.out, command="eval", overwrite=cfg.overwrite) as tmp:
            write_generation_outputs(result, tmp, cfg)
    if cfg.store is not None:
        save_generation_to_store(result, Path(cfg.store), cfg)
    return result


__all__ = ["DEFAULT_MAX_PROMPT", "SetGenerator", "evaluate_generation", "generation_settings", "identifier_notes",
           "score_sets"]
