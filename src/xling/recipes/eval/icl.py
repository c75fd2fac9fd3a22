"""``xling eval --demos source,target,retrieved``: cross-lingual in-context learning, three demonstration sources.

A decoder gets k (``--shots``) demonstrations before each test item; where they come from is the only thing that
changes between the conditions (:mod:`xling.methods.icl` for the definitions and the papers):

* ``source``: k fixed train items in ``--demo-source-lang`` (the task's source language by default, English for
  the built-in tasks), chosen by a seeded hash of their ids (``--demo-seed``): the same items for every test item
  and every language;
* ``target``: the same k items in the test language (their parallel versions; where the test language lacks one of
  them, k items of its own train split in the same seeded order, with a note);
* ``retrieved``: per test item, the k source-language train items nearest to it by the cosine similarity of
  ``--demo-encoder``'s embeddings (the built-in e5-small by default: mean-pooled last layer, ``query: `` before
  every text; embeddings cached by :mod:`xling.engine.embed`), the most similar placed last.

Demonstrations come from the ``train`` split only. A train item whose id is a test item's id, or whose normalised
text equals a test item's text in any language evaluated, is never a demonstration, and the chosen demonstrations
are checked against the test ids (:func:`xling.methods.icl.check_disjoint`).

**Classification and multiple choice** are scored by label log-likelihood (:func:`xling.tasks.zeroshot.label_loglik`,
the scorer of ``--zero-shot``, ``--normalize`` and ``--verbalizers`` included). The prompt is the zero-shot template
(``--template``, default ``Text: {text}\\nTopic:``) once per demonstration with its answer, blank-line separated,
then the query::

    Text: <demonstration 1>
    Topic: law

    Text: <demonstration 2>
    Topic: poetry

    Text: <the test item>
    Topic:

and each label's words are scored after it. **Generation** (``bible-mt``, generation task files): the demonstrations
are input/output pairs, for a translation task in the query's direction between the pivot and the demonstration
language (``English: ...\\nFrench: ...`` before ``English: ...\\nGerman:``), greedy decoding as
:mod:`xling.recipes.eval.generation`; a translation task needs a ``--demo-source-lang`` other than its pivot.

Outputs: per language (and direction) and source the score with its 95% interval (``icl.csv``: accuracy with its
Wilson interval and whether it is at chance, or each generation metric with its bootstrap interval), per language
the paired differences target - source, retrieved - source and retrieved - target with a 95% paired bootstrap
interval over items and whether it contains 0 (``icl_differences.csv``), the demonstrations of every prompt
(``demonstrations.jsonl``), ``predictions.csv`` (with a ``condition`` column: the source), ``report.html``,
``run.json``; and one ``eval`` run per source in the results store, so ``xling compare`` pairs them over items and
``xling consistency`` reads each.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError

#: The prompt length (tokens) of in-context classification when ``--max-length`` is not given.
DEFAULT_ICL_LENGTH = 1024
#: The e5 models' prefix for symmetric similarity (Wang et al. 2024, multilingual E5).
E5_PREFIX = "query: "

ICL_COLUMNS = ["lang", "direction", "demos", "metric", "value", "low", "high", "n", "at_chance"]
DIFF_COLUMNS = ["lang", "direction", "metric", "comparison", "a", "b", "value", "low", "high", "n", "contains_zero"]


@dataclass
class IclResult:
    """One in-context-learning comparison: per source its own eval result (and store run)."""

    model: str
    task: str
    task_type: str
    split: str
    langs: list[str]
    demos: list[str]
    shots: int
    demo_source_lang: str
    encoder: str | None
    rows: list[dict]                          # icl.csv
    differences: list[dict]                   # icl_differences.csv
    results: dict = field(default_factory=dict)           # source -> EvalResult | GenerationResult
    demonstrations: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    kind: str = "icl"

    @property
    def run_ids(self) -> dict[str, str]:
        return {s: r.run_id for s, r in self.results.items()}

    def value(self, lang: str, demos: str, metric: str | None = None, direction: str = "") -> float:
        metric = metric or ("chrf" if self.task_type == "generation" else "accuracy")
        for r in self.rows:
            if (r["lang"], r["direction"], r["demos"], r["metric"]) == (lang, direction, demos, metric):
                return r["value"]
        raise KeyError((lang, direction, demos, metric))

    def summary(self) -> str:
        return format_icl_summary(self)


# ----------------------------------------------------------------------------- demonstrations


def _id(e, i: int) -> str:
    return str(e.id) if e.id not in (None, "") else f"train#{i}"


def _is_prefix_e5(name: str) -> bool:
    from xling.models.builtin import same_model

    return same_model(str(name), "e5-small")


class DemoSelector:
    """The train pools and the three selections of one run (see the module docstring).

    ``pools[lang]``: the usable train items of ``lang`` (test ids and test texts left out), as ``(id, item)``
    pairs; the item is an :class:`~xling.tasks.core.Example` (or, for a translation task, a ``(pivot text, text)``
    pair keyed by verse id).
    """

    def __init__(self, task, source_lang: str, k: int, seed: int, test_ids, test_texts, pairs=None,
                 balance: bool = True):
        from xling.data.overlap import normalize_text, protected_keys

        self.task, self.source_lang, self.k, self.seed = task, source_lang, k, seed
        self.test_ids = {str(x) for x in test_ids}
        self.protected = protected_keys(test_texts)
        self._norm = normalize_text
        self.pairs = pairs  # translation: lang -> [(id, (pivot text, lang text))]
        self.balance = balance and pairs is None and task.type == "classification"
        self.left_out: dict[str, int] = {}
        self.pools: dict[str, list[tuple[str, object]]] = {}
        self.source_pool = self.pool(source_lang)
        if k > len(self.source_pool):
            left = self.left_out.get(source_lang, 0)
            raise XlingError(f"--shots {k}: the {source_lang} train pool of task {task.name} has only "
                             f"{len(self.source_pool)} demonstrations"
                             + (f" ({left} more are test items or copies of one, never used)" if left else "")
                             + "; pass a smaller --shots or a larger train split (--task-option train_size=N)")
        from xling.methods.icl import fixed_demos

        self.source_idx = fixed_demos([i for i, _ in self.source_pool], k, seed, self._labels(self.source_pool))

    def _labels(self, pool) -> list | None:
        """The pool's labels when the fixed demonstrations are label-balanced (classification), else None."""
        return [it.label for _, it in pool] if self.balance else None

    def _texts(self, item) -> list[str]:
        return [t for t in (item if isinstance(item, tuple) else (item.text, item.text_pair)) if t]

    def pool(self, lang: str) -> list[tuple[str, object]]:
        if lang in self.pools:
            return self.pools[lang]
        if self.pairs is not None:
            raw = self.pairs.get(lang)
        else:
            raw = (self.task.data.get("train") or {}).get(lang)
            raw = None if raw is None else [(_id(e, i), e) for i, e in enumerate(raw)]
        if raw is None:
            raise XlingError(f"task {self.task.name} has no train data in {lang} for the demonstrations "
                             f"(in-context demonstrations come from the train split only)")
        keep = [(i, it) for i, it in raw
                if i not in self.test_ids and not any(self._norm(t) in self.protected for t in self._texts(it))]
        self.left_out[lang] = len(raw) - len(keep)
        self.pools[lang] = keep
        return keep

    def source(self) -> list[tuple[str, object]]:
        return [self.source_pool[j] for j in self.source_idx]

    def target(self, lang: str) -> tuple[list[tuple[str, object]], str | None]:
        """The source demonstrations' parallel versions in ``lang``; else ``lang``'s own fixed k, with a note."""
        if lang == self.source_lang:
            return self.source(), None
        pool = self.pool(lang)
        by_id = dict(pool)
        want = [i for i, _ in self.source()]
        if all(i in by_id for i in want):
            return [(i, by_id[i]) for i in want], None
        from xling.methods.icl import fixed_demos

        if self.k > len(pool):
            raise XlingError(f"--shots {self.k}: the {lang} train pool of task {self.task.name} has only {len(pool)} "
                             f"demonstrations for --demos target")
        return ([pool[j] for j in fixed_demos([i for i, _ in pool], self.k, self.seed, self._labels(pool))],
                f"{lang}: the target demonstrations are not the source ones' translations (the task's train split "
                f"is not parallel there): {self.k} of {lang}'s own train items in the same seeded order")

    def retrieved(self, query_emb, pool_emb) -> list[list[tuple[str, object]]]:
        """Per query, its k nearest source-pool items, the most similar last (next to the query)."""
        from xling.methods.icl import top_k_similar

        idx = top_k_similar(query_emb, pool_emb, self.k).tolist()
        return [[self.source_pool[j] for j in reversed(row)] for row in idx]

    def check(self, chosen) -> None:
        from xling.methods.icl import check_disjoint

        check_disjoint([i for i, _ in chosen], self.test_ids, where=f"task {self.task.name}")


def embed_texts(lm, texts, *, prefix: str, batch_size: int, refresh: bool = False):
    """``(n, dim)``: the encoder's last hidden state, pooled (mean for encoders), of ``prefix + text``; cached."""
    from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached

    ecfg = EmbedConfig(layers=(lm.num_hidden_states - 1,), batch_size=batch_size, prefix=prefix)
    emb, _ = embed_cached(lm, list(texts), ecfg, EmbeddingCache(), refresh=refresh)
    return emb[0].float()


# ----------------------------------------------------------------------------- the recipe


def _resolve_langs(cfg, task) -> list[str]:
    table = task.data.get(cfg.split) or {}
    if not table:
        raise XlingError(f"task {task.name} has no {cfg.split} split")
    if cfg.langs is None:
        return sorted(table, key=lambda x: (x != task.source_lang, x))
    out = []
    for code in cfg.langs:
        lang = task.resolve_lang(code, cfg.split)
        if lang not in out:
            out.append(lang)
    return out


def evaluate_icl(cfg, task=None) -> IclResult:
    """Run every source of ``cfg.demos`` on every language; see the module docstring."""
    import torch

    from xling.models.loading import load_model
    from xling.tasks.generation import is_generation_task
    from xling.tasks.registry import load_task

    demos = list(dict.fromkeys(cfg.demos))
    if cfg.shots < 1:
        raise XlingError("--demos compares demonstration sources: pass --shots 1 or more")
    if cfg.split == "train":
        raise XlingError("--demos takes the demonstrations from the train split; evaluate another --split")
    if cfg.executor != "local":
        raise XlingError(f"xling eval --demos runs in this process; --executor {cfg.executor} is not supported for it")
    generation = is_generation_task(task if task is not None else cfg.task)
    if generation:
        from xling.deps import require_extra

        require_extra("generation", f"xling eval --demos on {getattr(task, 'name', None) or cfg.task}")
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, quiet=True, lazy=True)
    if not lm.is_decoder:
        raise XlingError(f"{cfg.model}: --demos prompts a decoder LLM with demonstrations; it is an encoder")
    task = task if task is not None else load_task(cfg.task, **cfg.task_options)
    if task.type == "token-classification":
        raise XlingError(f"task {task.name} is a tagging task: --demos supports classification, multiple choice and "
                         f"generation")
    if cfg.max_examples is not None:
        task = task.capped({cfg.split: cfg.max_examples})
    langs = _resolve_langs(cfg, task)
    translation = task.meta.get("translation") if task.type == "generation" else None
    code = cfg.demo_source_lang or task.source_lang
    source_lang = task.resolve_lang(code, "train") if (task.data.get("train") or {}) else code
    if translation is not None and source_lang == translation["pivot"]:
        raise XlingError(f"task {task.name} translates between {source_lang} and each other language: pass "
                         f"--demo-source-lang with another language, whose pairs with {source_lang} are the source "
                         f"demonstrations (e.g. --demo-source-lang fra_Latn)")
    encoder = None
    if "retrieved" in demos:
        encoder = load_model(cfg.demo_encoder, device=cfg.device, quiet=True, lazy=True)
    prefix = cfg.demo_prefix if cfg.demo_prefix is not None else (E5_PREFIX if _is_prefix_e5(cfg.demo_encoder)
                                                                  else "")
    ctx = _Context(cfg, task, lm, encoder, prefix, demos, langs, source_lang, started, t0)
    if task.type == "generation":
        result = _run_generation(ctx)
    else:
        result = _run_choice(ctx)
    result.meta.update({"torch": torch.__version__, "started": started})
    if cfg.out is not None:
        from xling.io import output_folder

        with output_folder(cfg.out, command="eval", overwrite=cfg.overwrite) as tmp:
            write_icl_outputs(result, tmp, cfg)
    if cfg.store is not None:
        _save(result, cfg)
    return result


@dataclass
class _Context:
    cfg: object
    task: object
    lm: object
    encoder: object
    prefix: str
    demos: list
    langs: list
    source_lang: str
    started: str
    t0: float

    def settings(self, source: str) -> dict:
        cfg = self.cfg
        return {"mode": "icl", "demos": source, "shots": cfg.shots, "demo_source_lang": self.source_lang,
                "demo_seed": cfg.demo_seed,
                "demo_balance": bool(cfg.demo_balance and self.task.type == "classification" and source != "retrieved"),
                "demo_encoder": cfg.demo_encoder if source == "retrieved" else None,
                "demo_prefix": self.prefix if source == "retrieved" else None}


def _say_estimate(ctx, prompts: list[str], what: str, extra: list[str] | None = None) -> None:
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    config = ctx.lm.config
    params = model_params(config)
    if params <= 0 or not ctx.cfg.progress:
        return
    device = str(ctx.cfg.device)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    load = current_load()
    secs = estimate_seconds(count_tokens(prompts) + count_tokens(extra or []), forward_params(config), device=device,
                            load=load)
    say(estimate_line("eval --demos", model=str(ctx.cfg.model), params=params, seconds=secs, device=device,
                      langs=len(ctx.langs), texts=len(prompts), text_word=what,
                      note=f"({', '.join(ctx.demos)}; less where cached)", load=load))


def _retrieval(ctx, sel: DemoSelector, queries: dict[str, list[str]], pool_texts: list[str]):
    """Per language, per query, its retrieved demonstrations."""
    cfg = ctx.cfg
    pool_emb = embed_texts(ctx.encoder, pool_texts, prefix=ctx.prefix, batch_size=cfg.batch_size,
                           refresh=not cfg.cache)
    return {key: sel.retrieved(embed_texts(ctx.encoder, texts, prefix=ctx.prefix, batch_size=cfg.batch_size,
                                           refresh=not cfg.cache), pool_emb)
            for key, texts in queries.items()}


def _run_choice(ctx) -> IclResult:
    """Classification / multiple choice: every source's prompts, scored by label log-likelihood."""
    from xling.harness.consistency import prediction_record
    from xling.harness.scores import EvalResult, PredictionCache, prediction_problem
    from xling.harness.store import items_hash
    from xling.io import json_digest
    from xling.methods.icl import block, default_template, icl_prompt
    from xling.tasks.metrics import main_metric, task_metrics
    from xling.tasks.zeroshot import label_loglik, verbalize

    cfg, task = ctx.cfg, ctx.task
    table = task.data[cfg.split]
    tests = {lang: table[lang] for lang in ctx.langs}
    test_ids = {str(e.id) for exs in tests.values() for e in exs if e.id not in (None, "")}
    sel = DemoSelector(task, ctx.source_lang, cfg.shots, cfg.demo_seed, test_ids,
                       [t for exs in tests.values() for e in exs for t in (e.text, e.text_pair) if t],
                       balance=cfg.demo_balance)
    mc = task.type == "multiple-choice"
    template = cfg.template or default_template(task.type, any(e.text_pair for exs in tests.values() for e in exs))
    verb = [(cfg.verbalizers or {}).get(lab, verbalize(lab)) for lab in task.labels]

    def answer(e) -> str:
        if mc:
            return e.choices[e.label]
        return verb[e.label]

    def demo_block(item) -> str:
        return block(template, item.text, item.text_pair, answer(item))

    notes: list[str] = []
    retrieved = {}
    if "retrieved" in ctx.demos:
        retrieved = _retrieval(ctx, sel, {lang: [" ".join(t for t in (e.text, e.text_pair) if t) for e in exs]
                                          for lang, exs in tests.items()},
                               [" ".join(t for t in (it.text, it.text_pair) if t) for _, it in sel.source_pool])
    prompts: dict[tuple[str, str], list[str]] = {}
    shown: list[dict] = []
    for lang, exs in tests.items():
        for source in ctx.demos:
            if source == "retrieved":
                per = retrieved[lang]
            else:
                chosen, note = (sel.source(), None) if source == "source" else sel.target(lang)
                if note:
                    notes.append(note)
                per = [chosen] * len(exs)
                shown.append({"lang": lang, "direction": "", "demos": source, "item_id": None,
                              "demo_ids": [i for i, _ in chosen]})
            for i, chosen in enumerate(per):
                sel.check(chosen)
                if source == "retrieved":
                    shown.append({"lang": lang, "direction": "", "demos": source, "item_id": _id(exs[i], i),
                                  "demo_ids": [x for x, _ in chosen]})
            prompts[(lang, source)] = [icl_prompt([demo_block(it) for _, it in chosen],
                                                  block(template, e.text, e.text_pair))
                                       for e, chosen in zip(exs, per)]
    max_length = cfg.max_length or DEFAULT_ICL_LENGTH
    positions = getattr(ctx.lm.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        max_length = min(max_length, positions)
    conts = {lang: ([list(e.choices) for e in exs] if mc else [verb] * len(exs)) for lang, exs in tests.items()}
    # the scorer reads each prompt once, then each label on its cache (xling.tasks.zeroshot.label_loglik)
    all_prompts = [p for ps in prompts.values() for p in ps]
    labels = [c for (lang, _), ps in prompts.items() for cs in conts[lang][:len(ps)] for c in cs]
    _say_estimate(ctx, all_prompts, "prompt", extra=labels)
    cache = PredictionCache()
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(cs) for lang in tests for _ in ctx.demos for cs in conts[lang]), unit="pair",
                   desc="scoring", file=sys.stderr, dynamic_ncols=True)
    loaded, t_infer, from_cache = None, 0.0, 0
    preds: dict[tuple[str, str], list[int]] = {}
    try:
        for (lang, source), ps in prompts.items():
            spec = {"model": ctx.lm.fingerprint, "task": task.name, "lang": lang, "mode": "icl", "demos": source,
                    "prompts": json_digest(ps), "continuations": json_digest(conts[lang]),
                    "normalize": cfg.normalize, "max_length": max_length}
            key = PredictionCache.key(spec)
            n_pairs = sum(len(c) for c in conts[lang])
            if bar is not None:
                bar.set_description(f"scoring {lang}, {source} demonstrations")
            exs = tests[lang]
            got = cache.get(key, lambda v, exs=exs: prediction_problem(task.type, task.labels, exs, v)) \
                if cfg.cache else None
            if got is None:
                if loaded is None:
                    from xling.tasks.zeroshot import load_causal_lm

                    loaded = load_causal_lm(ctx.lm.path, ctx.lm.dtype, ctx.lm.device)
                ti = time.perf_counter()
                scores = label_loglik(loaded, ctx.lm.tokenizer, ps, conts[lang], cfg.normalize, cfg.batch_size,
                                      max_length, bar.update if bar is not None else None)
                t_infer += time.perf_counter() - ti
                got = [max(range(len(s)), key=lambda j, s=s: (s[j], -j)) for s in scores]
                cache.put(key, got, {"model": str(cfg.model), **{k: v for k, v in spec.items() if k != "prompts"}})
            else:
                from_cache += 1
                if bar is not None:
                    bar.update(n_pairs)
            preds[(lang, source)] = got
    finally:
        if bar is not None:
            bar.close()
    from xling.harness.scores import dominant_class_note
    from xling.methods.stats import at_chance, wilson_interval

    results, rows, correct = {}, [], {}
    constant: dict[tuple[str, str], list[str]] = {}  # (source, the one answer) -> languages
    for source in ctx.demos:
        metric_rows, corr, ids, records = [], {}, {}, {}
        for lang, exs in tests.items():
            p = preds[(lang, source)]
            gold = [e.label for e in exs]
            for m, v in task_metrics(task.type, task.labels, gold, p).items():
                metric_rows.append({"model": str(cfg.model), "task": task.name, "lang": lang, "split": cfg.split,
                                    "metric": m, "value": float(v)})
            corr[lang] = [int(a == b) for a, b in zip(p, gold)]
            if len(set(map(str, p))) == 1 and len(p) > 1:  # one answer everywhere: grouped over languages below
                only = p[0]
                name = task.labels[only] if not mc and isinstance(only, int) and 0 <= only < len(task.labels) \
                    else f"choice {only}"
                constant.setdefault((source, str(name)), []).append(lang)
            else:
                lean = dominant_class_note(task.type, task.labels, p, gold)
                if lean:
                    notes.append(f"{lang}, {source} demonstrations: {lean}")
            ids[lang] = items_hash(exs)
            records[lang] = prediction_record(exs, p, task.type, task.labels)
            n = len(exs)
            acc = sum(corr[lang]) / n if n else float("nan")
            lo, hi = wilson_interval(sum(corr[lang]), n)
            k_choices = len(exs[0].choices) if mc and exs else len(task.labels)
            rows.append({"lang": lang, "direction": "", "demos": source, "metric": "accuracy", "value": acc,
                         "low": lo, "high": hi, "n": n, "at_chance": at_chance(acc, n, k_choices)})
        correct[source] = corr
        results[source] = EvalResult(
            rows=metric_rows, run_id=uuid.uuid4().hex[:12], model=str(cfg.model), base_model=str(cfg.model),
            task=task.name, task_type=task.type, split=cfg.split, source=ctx.source_lang, langs=list(ctx.langs),
            n_examples={lang: len(exs) for lang, exs in tests.items()}, main_metric=main_metric(task.type),
            timings={}, correct=corr, ids_hash=ids, predictions=records,
            meta={"model_fingerprint": ctx.lm.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
                  "settings": {**ctx.settings(source), "template": template, "normalize": cfg.normalize,
                               "max_length": max_length, "verbalizers": cfg.verbalizers},
                  "labels": task.labels, "started": ctx.started, "device": cfg.device})
    if "retrieved" in ctx.demos and not mc:  # the retriever alone: the retrieved demonstrations' majority label
        from xling.methods.icl import VOTE, label_vote

        corr = {}
        for lang, exs in tests.items():
            votes = [label_vote([it.label for _, it in chosen]) for chosen in retrieved[lang]]
            corr[lang] = [int(v == e.label) for v, e in zip(votes, exs)]
            n = len(exs)
            acc = sum(corr[lang]) / n if n else float("nan")
            lo, hi = wilson_interval(sum(corr[lang]), n)
            rows.append({"lang": lang, "direction": "", "demos": VOTE, "metric": "accuracy", "value": acc,
                         "low": lo, "high": hi, "n": n, "at_chance": at_chance(acc, n, len(task.labels))})
        correct[VOTE] = corr
        notes.append(f"{VOTE}: the majority label of each item's {cfg.shots} retrieved demonstrations, no language "
                     f"model (a {cfg.shots}-nearest-neighbour classifier on {cfg.demo_encoder}); retrieved - vote is "
                     f"what the model adds to its retriever")
    for (source, name), langs in constant.items():
        notes.append(f"{source} demonstrations: the model answers {name!r} for every item in {', '.join(langs)}: it "
                     f"copies one label instead of classifying (the majority and recency biases of Zhao et al. 2021), "
                     f"so the accuracy there is that label's share of the test items, not transfer")
    from xling.methods.icl import DIFFERENCES, contains_zero, paired_accuracy_difference

    diffs = []
    for lang in ctx.langs:
        for a, b in DIFFERENCES:
            if a in correct and b in correct:
                d = paired_accuracy_difference(correct[a][lang], correct[b][lang], cfg.n_boot, seed=0)
                diffs.append({"lang": lang, "direction": "", "metric": "accuracy", "comparison": f"{a}-{b}", "a": a,
                              "b": b, **d, "contains_zero": contains_zero(d["low"], d["high"])})
    t_done = time.perf_counter()
    return IclResult(
        model=str(cfg.model), task=task.name, task_type=task.type, split=cfg.split, langs=list(ctx.langs),
        demos=list(ctx.demos), shots=cfg.shots, demo_source_lang=ctx.source_lang,
        encoder=cfg.demo_encoder if "retrieved" in ctx.demos else None, rows=rows, differences=diffs,
        results=results, demonstrations=shown, notes=list(dict.fromkeys(notes)) + _left_out_note(sel),
        timings={"inference_s": round(t_infer, 3), "total_s": round(t_done - ctx.t0, 3),
                 "sets_from_cache": from_cache, "model_loaded": loaded is not None},
        meta={"model_fingerprint": ctx.lm.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
              "template": template, "normalize": cfg.normalize, "max_length": max_length,
              "demo_prefix": ctx.prefix if "retrieved" in ctx.demos else None, "demo_seed": cfg.demo_seed,
              "labels": task.labels})


def _left_out_note(sel: DemoSelector) -> list[str]:
    out = [f"{lang}: {n} train item(s) left out of the demonstrations (a test item's id, or the text of a test item)"
           for lang, n in sel.left_out.items() if n]
    return out


# ----------------------------------------------------------------------------- generation


def _one(text) -> str:
    return " ".join(str(text).split())


def _run_generation(ctx) -> IclResult:
    """Generation tasks: per source, prompts with k input/output demonstrations; greedy generation; chrF etc."""
    from xling.harness.generation import GenerationResult, LanguageIdentifier
    from xling.methods.generation import metric_objects, score_from_stats, segment_stats
    from xling.methods.icl import DIFFERENCES, contains_zero, paired_accuracy_difference, paired_corpus_difference
    from xling.recipes.eval.generation import SetGenerator, generation_settings, identifier_notes, score_sets
    from xling.tasks.bible_mt import prompt_name
    from xling.tasks.generation import DEFAULT_TEMPLATE, GenItem, generic_items, translation_items

    cfg, task = ctx.cfg, ctx.task
    translation = task.meta.get("translation")
    S = ctx.source_lang
    # the zero-shot items (their prompt is the query block alone), per (lang, direction)
    sets: list[tuple[str, str, list]] = []
    if translation is not None:
        pivot = translation["pivot"]
        for lang in ctx.langs:
            if lang == pivot:
                continue
            for direction in translation.get("directions") or ("en-x", "x-en"):
                sets.append((lang, direction, translation_items(task, lang, direction, split=cfg.split, shots=0)))
        train = task.data.get("train") or {}
        if pivot not in train:
            raise XlingError(f"task {task.name} has no train split in {pivot} for the demonstrations")
        piv = {str(e.id): e.text for e in train[pivot] if e.id is not None}
        pairs = {lang: [(str(e.id), (piv[str(e.id)], e.text)) for e in exs if e.id is not None and str(e.id) in piv]
                 for lang, exs in train.items() if lang != pivot}
    else:
        pivot = None
        sets = [(lang, "gen", generic_items(task, lang, split=cfg.split, shots=0, template=cfg.template))
                for lang in ctx.langs]
        pairs = None
    if not sets:
        raise XlingError(f"task {task.name}: nothing to generate for {', '.join(ctx.langs)}")
    test_ids = {str(it.id) for _, _, items in sets for it in items}
    test_texts = [t for _, _, items in sets for it in items for t in (it.source, it.reference) if t]
    sel = DemoSelector(task, S, cfg.shots, cfg.demo_seed, test_ids, test_texts, pairs=pairs)
    template = cfg.template or DEFAULT_TEMPLATE

    def demo_block(item, lang, direction, demo_lang) -> str:
        if translation is None:  # a task file's example: its filled template, a space, its target
            if not item.target:
                raise XlingError(f"task {task.name}: a train example of {demo_lang} has no target")
            return f"{template.replace('{text}', item.text or '')} {item.target}"
        p_text, d_text = item
        a, b = (prompt_name(pivot), _one(p_text)), (prompt_name(demo_lang), _one(d_text))
        first, second = (a, b) if direction == "en-x" else (b, a)
        return f"{first[0]}: {first[1]}\n{second[0]}: {second[1]}"

    def input_text(item, direction) -> str:  # the side of a pool item that plays the query's input role
        if translation is None:
            return item.text or ""
        return item[0] if direction == "en-x" else item[1]

    notes: list[str] = []
    retrieved = {}
    if "retrieved" in ctx.demos:
        directions = list(dict.fromkeys(d for _, d, _ in sets))
        for direction in directions:
            got = _retrieval(ctx, sel, {(lang, d): [it.source for it in items] for lang, d, items in sets
                                        if d == direction},
                             [input_text(it, direction) for _, it in sel.source_pool])
            retrieved.update(got)
    shown: list[dict] = []
    per_source: dict[str, list[tuple[str, str, list]]] = {}
    for source in ctx.demos:
        units = []
        for lang, direction, items in sets:
            if source == "retrieved":
                per, demo_lang = retrieved[(lang, direction)], S
            else:
                chosen, note = (sel.source(), None) if source == "source" else sel.target(lang)
                if note:
                    notes.append(note)
                demo_lang = S if source == "source" else lang
                per = [chosen] * len(items)
                shown.append({"lang": lang, "direction": direction, "demos": source, "item_id": None,
                              "demo_ids": [i for i, _ in chosen]})
            new = []
            for it, chosen in zip(items, per):
                sel.check(chosen)
                if source == "retrieved":
                    shown.append({"lang": lang, "direction": direction, "demos": source, "item_id": it.id,
                                  "demo_ids": [i for i, _ in chosen]})
                prompt = "\n\n".join([*(demo_block(x, lang, direction, demo_lang) for _, x in chosen), it.prompt])
                new.append(GenItem(id=it.id, lang=it.lang, direction=it.direction, prompt=prompt,
                                   reference=it.reference, target_lang=it.target_lang, source=it.source))
            units.append((lang, direction, new))
        per_source[source] = units
    settings = generation_settings(cfg, ctx.lm)
    settings.update({"mode": "icl"})
    all_prompts = [it.prompt for units in per_source.values() for _, _, items in units for it in items]
    _say_estimate(ctx, all_prompts, "prompt")
    runner = SetGenerator(cfg, ctx.lm, task.name, settings)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(all_prompts), unit="item", desc="generating", file=sys.stderr, dynamic_ncols=True)
    outputs: dict[str, list] = {}
    try:
        for source, units in per_source.items():
            outputs[source] = [runner.generate(lang, direction, items, bar) for lang, direction, items in units]
    finally:
        if bar is not None:
            bar.close()
    identifier = LanguageIdentifier(sorted({it.target_lang for _, _, items in sets for it in items}))
    notes += identifier_notes(identifier)
    results, rows, scored = {}, [], {}
    for source, units in per_source.items():
        unit_rows, records, tidy, predictions = score_sets(cfg, units, outputs[source], identifier)
        for r in records:
            r["demos"] = source
        scored[source] = (units, records, predictions)
        rows += [{"lang": r["lang"], "direction": r["direction"] if translation is not None else "", "demos": source,
                  "metric": r["metric"], "value": r["value"], "low": r["low"], "high": r["high"], "n": r["n"],
                  "at_chance": None} for r in tidy]
        results[source] = GenerationResult(
            run_id=uuid.uuid4().hex[:12], model=str(cfg.model), task=task.name, split=cfg.split,
            source=pivot or task.source_lang, langs=list(ctx.langs), units=unit_rows, records=records, rows=tidy,
            notes=[], predictions=predictions, base_model=str(cfg.model), timings={},
            meta={"model_fingerprint": ctx.lm.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
                  "settings": {**settings, **ctx.settings(source)}, "identifier": identifier.describe(),
                  "started": ctx.started, "device": cfg.device})
    chrf = metric_objects()["chrf"]
    diffs = []
    for j, (lang, direction, items) in enumerate(sets):
        refs = [it.reference for it in items]
        hyps = {s: [r["hypothesis"] for r in scored[s][1] if (r["lang"], r["direction"]) == (lang, direction)]
                for s in per_source}
        corr = {s: [r["correct"] for r in scored[s][1] if (r["lang"], r["direction"]) == (lang, direction)]
                for s in per_source}
        stats = {s: segment_stats(chrf, hyps[s], refs) for s in per_source}
        for a, b in DIFFERENCES:
            if a not in per_source or b not in per_source:
                continue
            d = paired_corpus_difference(stats[a], stats[b], lambda x: score_from_stats(chrf, x), cfg.n_boot, seed=0)
            acc = paired_accuracy_difference(corr[a], corr[b], cfg.n_boot, seed=0)
            shown_dir = direction if translation is not None else ""
            for metric, v in (("chrf", d), ("accuracy", acc)):
                diffs.append({"lang": lang, "direction": shown_dir, "metric": metric, "comparison": f"{a}-{b}",
                              "a": a, "b": b, **v, "contains_zero": contains_zero(v["low"], v["high"])})
    t_done = time.perf_counter()
    return IclResult(
        model=str(cfg.model), task=task.name, task_type="generation", split=cfg.split, langs=list(ctx.langs),
        demos=list(ctx.demos), shots=cfg.shots, demo_source_lang=S,
        encoder=cfg.demo_encoder if "retrieved" in ctx.demos else None, rows=rows, differences=diffs,
        results=results, demonstrations=shown, notes=list(dict.fromkeys(notes)) + _left_out_note(sel),
        timings={"generation_s": round(runner.seconds, 3), "total_s": round(t_done - ctx.t0, 3),
                 "sets_from_cache": runner.from_cache, "model_loaded": runner.loaded is not None},
        meta={"model_fingerprint": ctx.lm.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
              "settings": settings, "demo_prefix": ctx.prefix if "retrieved" in ctx.demos else None,
              "demo_seed": cfg.demo_seed})


# ----------------------------------------------------------------------------- outputs


def _cell(v):
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return v


def icl_csv(rows) -> str:
    from xling.harness.outputs import rows_to_csv

    return rows_to_csv([{k: _cell(r.get(k)) for k in ICL_COLUMNS} for r in rows], ICL_COLUMNS)


def differences_csv(rows) -> str:
    from xling.harness.outputs import rows_to_csv

    return rows_to_csv([{k: _cell(r.get(k)) for k in DIFF_COLUMNS} for r in rows], DIFF_COLUMNS)


def run_record(result: IclResult, cfg=None) -> dict:
    return {"command": "eval", "mode": "icl", "model": result.model, "task": result.task,
            "task_type": result.task_type, "split": result.split, "langs": result.langs, "demos": result.demos,
            "shots": result.shots, "demo_source_lang": result.demo_source_lang, "demo_encoder": result.encoder,
            "runs": result.run_ids, "notes": result.notes, "timings": result.timings, **result.meta,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
            if cfg is not None else None}


def write_icl_outputs(result: IclResult, out: Path, cfg=None) -> dict[str, Path]:
    from xling.harness.consistency import predictions_csv, predictions_rows
    from xling.io import atomic_write_text
    from xling.recipes.eval.icl_report import render_icl_report

    out.mkdir(parents=True, exist_ok=True)
    paths = {"icl": out / "icl.csv", "differences": out / "icl_differences.csv", "report": out / "report.html",
             "demonstrations": out / "demonstrations.jsonl", "predictions": out / "predictions.csv",
             "run": out / "run.json"}
    atomic_write_text(paths["icl"], icl_csv(result.rows))
    atomic_write_text(paths["differences"], differences_csv(result.differences))
    atomic_write_text(paths["demonstrations"],
                      "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in result.demonstrations))
    rows = [r for s, res in result.results.items() for r in predictions_rows(res.predictions, condition=s)]
    atomic_write_text(paths["predictions"], predictions_csv(rows, with_condition=True))
    if result.task_type == "generation":
        from xling.harness.generation import generations_jsonl

        paths["generations"] = out / "generations.jsonl"
        atomic_write_text(paths["generations"], "".join(
            json.dumps({"demos": s, **json.loads(line)}, ensure_ascii=False) + "\n"
            for s, res in result.results.items() for line in generations_jsonl(res.records).splitlines()))
    atomic_write_text(paths["run"], json.dumps(run_record(result, cfg), indent=2, default=str))
    atomic_write_text(paths["report"], render_icl_report(result))
    return paths


def _save(result: IclResult, cfg) -> None:
    """One ``eval`` run per demonstration source (its config says which: ``demos``)."""
    for source, res in result.results.items():
        one = dataclasses.replace(cfg, demos=[source])
        if result.task_type == "generation":
            from xling.harness.generation import save_generation_to_store

            save_generation_to_store(res, Path(cfg.store), one)
        else:
            from xling.harness.scores import save_to_store

            save_to_store(res, Path(cfg.store), one)


# ----------------------------------------------------------------------------- terminal


def _fmt(v, pct: bool) -> str:
    if v is None or v != v:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def format_icl_summary(result: IclResult) -> str:
    """The terminal table: per language (and direction) each source's score with its interval, then the paired
    differences; ``*`` marks an interval that contains 0 (or an accuracy at chance)."""
    from xling.textsafe import term

    gen = result.task_type == "generation"
    metric = "chrf" if gen else "accuracy"
    pct = not gen
    unit = "chrF" if gen else "accuracy %"
    keys = list(dict.fromkeys((r["lang"], r["direction"]) for r in result.rows))
    pairs = [f"{d['a']}-{d['b']}" for d in result.differences if d["metric"] == metric]
    pairs = list(dict.fromkeys(pairs))
    lines = [f"in-context learning: {term(result.model)} on {term(result.task)}, k={result.shots} demonstrations "
             f"(source language {term(result.demo_source_lang)}"
             + (f", retrieved by {term(result.encoder)}" if result.encoder else "") + f"); {unit} [95% interval]"]
    columns = list(dict.fromkeys([*result.demos, *(r["demos"] for r in result.rows)]))
    head = f"{'language':16s}" + "".join(f"{s:>24s}" for s in columns) + "".join(f"{p:>26s}" for p in pairs)
    lines.append(head)
    for lang, direction in keys:
        name = f"{lang}:{direction}" if direction else lang
        cells = []
        for s in columns:
            r = next((x for x in result.rows if (x["lang"], x["direction"], x["demos"], x["metric"])
                      == (lang, direction, s, metric)), None)
            c = "-" if r is None else (f"{_fmt(r['value'], pct)} [{_fmt(r['low'], pct)}, {_fmt(r['high'], pct)}]"
                                       + ("*" if r.get("at_chance") else ""))
            cells.append(f"{c:>24s}")
        for p in pairs:
            d = next((x for x in result.differences if (x["lang"], x["direction"], x["metric"], x["comparison"])
                      == (lang, direction, metric, p)), None)
            c = "-" if d is None else (f"{'+' if d['value'] >= 0 else ''}{_fmt(d['value'], pct)} "
                                       f"[{_fmt(d['low'], pct)}, {_fmt(d['high'], pct)}]"
                                       + ("*" if d.get("contains_zero") else ""))
            cells.append(f"{c:>26s}")
        lines.append(f"{term(name):16s}" + "".join(cells))
    marks = ["* on a difference: its paired 95% interval contains 0"]
    if not gen:
        marks.append("* on an accuracy: its Wilson interval contains chance")
    lines.append("; ".join(marks))
    lines += [f"note: {term(n)}" for n in result.notes]
    lines.append("runs: " + ", ".join(f"{s} {rid}" for s, rid in result.run_ids.items()))
    return "\n".join(lines)


__all__ = ["DEFAULT_ICL_LENGTH", "DemoSelector", "E5_PREFIX", "IclResult", "differences_csv", "embed_texts",
           "evaluate_icl", "format_icl_summary", "icl_csv", "write_icl_outputs"]
