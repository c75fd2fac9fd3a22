"""``xling knowledge``: which facts does a decoder know, in which languages, and do they carry across?

The probe is :mod:`xling.data.facts`: parallel multiple-choice facts built offline from the Unicode CLDR (a
territory's primary official language, its currency, its continent), every name localised by CLDR, asked in each
language with the same choices in the same order. Each choice is scored by the log-likelihood the model gives its
text after the prompt (:func:`xling.tasks.zeroshot.label_loglik`, the scorer of ``xling eval --zero-shot``: summed
over the choice's tokens, divided by their number with ``--normalize mean``, the default) and the best-scoring
choice is the prediction (a tie goes to the first). Zero-shot, no training: the numbers say what the pretrained
model knows, in the spirit of LAMA (Petroni et al. 2019, "Language Models as Knowledge Bases?") and its
multilingual successors (Jiang et al. 2020, "X-FACTR"; Kassner et al. 2021, "Multilingual LAMA"), here as multiple
choice so every language is scored the same way.

What is reported (every rate with an interval, every accuracy against chance, 1/choices):

* accuracy per language and relation, with 95% Wilson intervals, on all items, on items whose answer contains the
  subject's name (``leak``: answerable by string matching, :func:`xling.data.facts.leaks`) and on the rest;
* the consistency and knowledge-transfer (KT) matrices over language pairs
  (:func:`xling.methods.consistency.consistency_rows`: agreement, Cohen's kappa, both correct, KT(a -> b) =
  P(correct in b | correct in a), paired bootstrap intervals over items);
* "known in English, known elsewhere" (:func:`xling.methods.knowledge.known_elsewhere`): P(correct in L | correct
  in English) per language and pooled over the languages written in English's script (Latin) and over the others,
  next to the same languages' plain accuracy, with bootstrap intervals over facts; on all items and without leaked
  ones (an item leaked in English or in L).

Outputs under ``--out``: ``knowledge.csv`` (per item and language), ``accuracy.csv``, ``predictions.csv``
(``item_id, lang, prediction, label, correct``; predictions and labels are choice indices, parallel across
languages), ``consistency.csv``, ``known_in_english.csv``, ``dropped.csv`` (items without a CLDR name in a
language), ``run.json`` and ``report.html``. The run goes to the results store with its per-item predictions, so
``xling consistency RUN_ID`` can read it again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError
from xling.recipes.knowledge.config import (DEFAULT_OUT, OTHER_SCRIPT, SAME_SCRIPT,  # noqa: F401 - the recipe's names
                                            KnowledgeConfig)

TASK = "facts"
SPLIT = "test"

KNOWLEDGE_COLUMNS = ["item_id", "relation", "lang", "script", "subject", "answer", "prediction", "correct", "leak",
                     "margin", "answer_score", "prediction_score"]
ACCURACY_COLUMNS = ["lang", "script", "relation", "items", "n", "correct", "accuracy", "accuracy_low",
                    "accuracy_high", "chance", "at_chance", "dropped"]
KNOWN_COLUMNS = ["items", "group", "langs", "n_pairs", "known_in_pivot", "p_known", "p_known_low", "p_known_high",
                 "accuracy", "accuracy_low", "accuracy_high"]
DROPPED_COLUMNS = ["lang", "relation", "reason", "n"]


@dataclasses.dataclass
class KnowledgeResult:
    config: KnowledgeConfig
    langs: list[str]
    probe: object                   # xling.data.facts.FactProbe
    rows: list[dict]                # knowledge.csv
    accuracy: list[dict]            # accuracy.csv
    consistency: list[dict]         # consistency.csv
    known: list[dict]               # known_in_english.csv
    records: dict[str, dict]        # per language: xling.harness.consistency.prediction_record
    run_id: str
    model_name: str
    started: str
    seconds: float
    meta: dict = dataclasses.field(default_factory=dict)

    def accuracy_of(self, lang: str, relation: str = "all", items: str = "all") -> float:
        for r in self.accuracy:
            if r["lang"] == lang and r["relation"] == relation and r["items"] == items:
                return r["accuracy"]
        raise KeyError((lang, relation, items))


def script_of(lang: str) -> str:
    return lang.split("_", 1)[1] if "_" in lang else ""


def _langs(cfg: KnowledgeConfig) -> tuple[list[str], list[str]]:
    from xling.data.facts import PIVOT, default_langs
    from xling.data.langcodes import normalize_lang

    notes = []
    langs = list(dict.fromkeys(normalize_lang(x) for x in (cfg.langs or default_langs())))
    if PIVOT not in langs:
        notes.append(f"English ({PIVOT}) added: it is the reference of 'known in English, known elsewhere'")
    return [PIVOT] + [x for x in langs if x != PIVOT], notes


def _say_estimate(cfg, lm, prompts, conts) -> None:
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    config = getattr(lm, "config", None)
    if config is None:
        try:
            config = json.loads((Path(lm.path) / "config.json").read_text())
        except (OSError, TypeError, ValueError):
            return
    params = model_params(config)
    if params <= 0:
        return
    import torch

    # the scorer reads each prompt once and then each choice on its cache (xling.tasks.zeroshot.label_loglik)
    texts = [*prompts, *(c for cs in conts for c in cs)]
    device = str(cfg.device)
    if device in ("auto", "cpu"):
        device = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
    load = current_load()
    secs = estimate_seconds(count_tokens(texts, cfg.max_length), forward_params(config), device=device, load=load)
    say(estimate_line("knowledge", model=cfg.model, params=params, seconds=secs, device=device,
                      texts=sum(len(c) for c in conts), text_word="prompt-choice pair", load=load))


def score_items(model, tokenizer, items, cfg: KnowledgeConfig, progress=None) -> list[list[float]]:
    """Each item's choice scores (:func:`xling.tasks.zeroshot.label_loglik`, batched, ``cfg.normalize``)."""
    from xling.tasks.zeroshot import label_loglik

    return label_loglik(model, tokenizer, [it.prompt for it in items], [list(it.choices) for it in items],
                        normalize=cfg.normalize, batch_size=cfg.batch_size, max_length=cfg.max_length,
                        progress=progress)


def accuracy_rows(rows: list[dict], langs: list[str], relations: list[str], choices: int, probe) -> list[dict]:
    """Per language x relation (and ``all``) x items (``all``, ``no_leak``, ``leak``): accuracy, its 95% Wilson
    interval, chance and whether the interval contains it."""
    from xling.methods.stats import at_chance, wilson_interval

    out = []
    chance = 1.0 / choices
    for lang in langs:
        for rel in ["all", *relations]:
            for subset in ("all", "no_leak", "leak"):
                sel = [r for r in rows if r["lang"] == lang and rel in ("all", r["relation"])
                       and (subset == "all" or (r["leak"] == 1) == (subset == "leak"))]
                n, k = len(sel), sum(r["correct"] for r in sel)
                acc = k / n if n else math.nan
                lo, hi = wilson_interval(k, n, empty=(math.nan, math.nan))
                out.append({"lang": lang, "script": script_of(lang), "relation": rel, "items": subset, "n": n,
                            "correct": k, "accuracy": acc, "accuracy_low": lo, "accuracy_high": hi, "chance": chance,
                            "at_chance": int(at_chance(acc, n, choices)) if n else "",
                            "dropped": probe.n_dropped(lang, None if rel == "all" else rel) if subset == "all" else ""})
    return out


def known_rows(rows: list[dict], langs: list[str], pivot: str, n_boot: int, seed: int) -> list[dict]:
    """P(correct in L | correct in English) per language and per script group, on all items and without leaks."""
    from xling.methods.knowledge import known_elsewhere

    correct: dict[str, dict[str, int]] = {lang: {} for lang in langs}
    leaked: dict[str, set[str]] = {lang: set() for lang in langs}
    for r in rows:
        correct[r["lang"]][r["item_id"]] = r["correct"]
        if r["leak"]:
            leaked[r["lang"]].add(r["item_id"])
    others = [x for x in langs if x != pivot]
    groups = {x: [x] for x in others}
    same = [x for x in others if script_of(x) == script_of(pivot)]
    diff = [x for x in others if script_of(x) != script_of(pivot)]
    for name, members in ((SAME_SCRIPT, same), (OTHER_SCRIPT, diff), ("all languages", others)):
        if members:
            groups[name] = members
    out = []
    for subset, skip in (("all", None), ("no_leak", leaked)):
        for r in known_elsewhere(correct, pivot, groups, skip=skip, n_boot=n_boot, seed=seed):
            out.append({"items": subset, **r})
    return out


def knowledge(config: KnowledgeConfig | None = None, **kwargs) -> KnowledgeResult:
    """Run the fact probe on ``config.model`` (see the module doc)."""
    from xling.data.facts import PIVOT, RELATIONS, build_fact_probe, probe_fingerprint
    from xling.harness.consistency import prediction_record
    from xling.harness.outputs import preflight
    from xling.methods.consistency import consistency_rows
    from xling.methods.knowledge import best_choice, choice_margin
    from xling.models.loading import load_model
    from xling.tasks.core import Example
    from xling.tasks.zeroshot import load_causal_lm

    cfg = config if config is not None else KnowledgeConfig(**kwargs)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    preflight(cfg, "knowledge")  # a folder that is not xling's, an unusable store: refused before any work
    langs, notes = _langs(cfg)
    relations = list(dict.fromkeys(cfg.relations or RELATIONS))
    probe = build_fact_probe(langs, relations, cfg.choices, cfg.shots, cfg.seed, cfg.max_per_relation)
    empty = [lang for lang in langs if not probe.items[lang]]
    if PIVOT in empty:
        raise XlingError("knowledge: no fact has English names; nothing to compare against")
    for lang in empty:
        notes.append(f"{lang}: no item has all its names in CLDR; the language has no scores")
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    if not lm.is_decoder:
        raise XlingError(f"knowledge: {cfg.model} is an encoder without a language-model head; the fact probe scores "
                         f"each answer's log-likelihood, which needs a decoder (gemma-3-270m, smollm2-135m)")
    model = load_causal_lm(lm.path, lm.dtype, lm.device)
    tok = lm.tokenizer
    items = [it for lang in langs for it in probe.items[lang]]
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        _say_estimate(cfg, lm, [it.prompt for it in items], [it.choices for it in items])
        bar = tqdm(total=sum(len(it.choices) for it in items), unit="pair", desc="knowledge", file=sys.stderr,
                   dynamic_ncols=True)
    t_score = time.perf_counter()
    try:
        scores = score_items(model, tok, items, cfg, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    score_s = time.perf_counter() - t_score
    rows, preds = [], {lang: [] for lang in langs}
    for it, s in zip(items, scores):
        pred = best_choice(s)
        preds[it.lang].append(pred)
        rows.append({"item_id": it.id, "relation": it.relation, "lang": it.lang, "script": script_of(it.lang),
                     "subject": it.subject, "answer": it.answer_text, "prediction": it.choices[pred],
                     "correct": int(pred == it.answer), "leak": int(it.leak), "margin": choice_margin(s, it.answer),
                     "answer_score": s[it.answer], "prediction_score": s[pred]})
    labels = [str(i) for i in range(cfg.choices)]
    records = {}
    for lang in langs:
        examples = [Example(text=it.prompt, choices=list(it.choices), label=it.answer, id=it.id)
                    for it in probe.items[lang]]
        records[lang] = prediction_record(examples, preds[lang], "multiple-choice", labels)
    accuracy = accuracy_rows(rows, langs, relations, cfg.choices, probe)
    table = {lang: {i: (p, c) for i, p, c in zip(rec["item_ids"], rec["predictions"], rec["correct"])}
             for lang, rec in records.items() if rec["item_ids"]}
    consistency = consistency_rows(table, n_boot=cfg.bootstrap, seed=cfg.seed)
    known = known_rows(rows, langs, PIVOT, cfg.bootstrap, cfg.seed)
    meta = {"probe": probe.meta, "probe_fingerprint": probe_fingerprint(probe), "model_fingerprint": lm.fingerprint,
            "normalize": cfg.normalize, "scoring": _scoring_line(cfg), "notes": notes,
            "n_items": {lang: len(probe.items[lang]) for lang in langs}, "score_seconds": round(score_s, 2)}
    result = KnowledgeResult(cfg, langs, probe, rows, accuracy, consistency, known, records, uuid.uuid4().hex[:12],
                             cfg.model, started, time.perf_counter() - t0, meta)
    if cfg.store is not None:
        save_to_store(result, cfg.store)
    if cfg.out is not None:
        write_outputs(result, Path(cfg.out))
    return result


def _scoring_line(cfg: KnowledgeConfig) -> str:
    how = ("the mean log-probability of its tokens (summed, divided by the token count)" if cfg.normalize == "mean"
           else "the summed log-probability of its tokens")
    return f"each choice scored by {how} after the prompt (--normalize {cfg.normalize}); the best one is the prediction"


def run_record(result: KnowledgeResult) -> dict:
    """``run.json`` and the results store's run config."""
    from xling.data.facts import PIVOT

    cfg = result.config
    return {"run_id": result.run_id, "command": "knowledge", "model": result.model_name,
            "base_model": result.model_name,
            "task": TASK, "task_type": "multiple-choice", "split": SPLIT, "source": PIVOT, "langs": result.langs,
            "main_metric": "accuracy", "started": result.started, "seconds": round(result.seconds, 2),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
            **result.meta}


def save_to_store(result: KnowledgeResult, path) -> None:
    """The run, its per-language accuracies (``task_scores``), per-item correctness and predictions."""
    from xling import __version__
    from xling.harness.consistency import store_rows
    from xling.harness.store import ResultsStore, item_row

    model = result.model_name
    scores = [{"model": model, "task": TASK, "lang": r["lang"], "split": SPLIT,
               "metric": "accuracy" + ("" if r["relation"] == "all" else f":{r['relation']}")
                         + ("" if r["items"] == "all" else f":{r['items']}"), "value": r["accuracy"]}
              for r in result.accuracy if r["n"]]
    items = [item_row(model, TASK, lang, SPLIT, rec["ids_hash"], rec["correct"])
             for lang, rec in result.records.items() if rec["item_ids"]]
    preds = store_rows(model, TASK, SPLIT, {k: v for k, v in result.records.items() if v["item_ids"]})
    ResultsStore(path).add_run(
        {"run_id": result.run_id, "command": "knowledge", "model": model,
         "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": f"task:{TASK}",
         "corpus_fingerprint": result.meta.get("probe_fingerprint"), "config": run_record(result),
         "started": result.started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "xling_version": __version__},
        task_scores=scores, items=items, predictions=preds)


def write_outputs(result: KnowledgeResult, out: Path) -> None:
    from xling.harness.consistency import consistency_csv, predictions_csv, predictions_rows
    from xling.harness.outputs import rows_to_csv
    from xling.io import output_folder
    from xling.recipes.knowledge.report import render_report

    with output_folder(out, command="knowledge", overwrite=result.config.overwrite) as tmp:  # built aside, swapped in
        tmp.mkdir()
        (tmp / "knowledge.csv").write_text(rows_to_csv(result.rows, KNOWLEDGE_COLUMNS), encoding="utf-8")
        (tmp / "accuracy.csv").write_text(rows_to_csv(result.accuracy, ACCURACY_COLUMNS), encoding="utf-8")
        (tmp / "predictions.csv").write_text(predictions_csv(predictions_rows(result.records)), encoding="utf-8")
        (tmp / "consistency.csv").write_text(consistency_csv(result.consistency), encoding="utf-8")
        (tmp / "known_in_english.csv").write_text(rows_to_csv(result.known, KNOWN_COLUMNS), encoding="utf-8")
        (tmp / "dropped.csv").write_text(rows_to_csv(result.probe.dropped, DROPPED_COLUMNS), encoding="utf-8")
        (tmp / "run.json").write_text(json.dumps(run_record(result), indent=2, ensure_ascii=False, default=str) + "\n",
                                      encoding="utf-8")
        (tmp / "report.html").write_text(render_report(result), encoding="utf-8")


def format_summary(result: KnowledgeResult) -> str:
    """Per language: accuracy on all items and without leaks (95% intervals, at chance), and the known-in-English
    rows of the script groups."""
    from xling.textsafe import term

    def ci(lo, hi):
        return f"[{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi else "[-]"

    chance = 1.0 / result.config.choices
    lines = [f"knowledge: {term(result.model_name)}, {len(result.langs)} language{'s' if len(result.langs) != 1 else ''}, chance {chance:.3f}; "
             f"{result.meta.get('scoring', '')}",
             f"{'lang':10s} {'items':>5s} {'accuracy':>8s} {'95% CI':>16s} {'no-leak':>8s} {'95% CI':>16s}"]
    for lang in result.langs:
        a = next(r for r in result.accuracy if r["lang"] == lang and r["relation"] == "all" and r["items"] == "all")
        b = next(r for r in result.accuracy if r["lang"] == lang and r["relation"] == "all" and r["items"] == "no_leak")
        mark = "  at chance" if a["at_chance"] == 1 else ""
        lines.append(f"{lang:10s} {a['n']:5d} {a['accuracy']:8.3f} {ci(a['accuracy_low'], a['accuracy_high']):>16s} "
                     f"{b['accuracy']:8.3f} {ci(b['accuracy_low'], b['accuracy_high']):>16s}{mark}")
    for r in result.known:
        if r["items"] == "all" and r["group"] in (SAME_SCRIPT, OTHER_SCRIPT):
            lines.append(f"known in English -> known in {r['group']}: {r['p_known']:.3f} "
                         f"{ci(r['p_known_low'], r['p_known_high'])} (their accuracy {r['accuracy']:.3f} "
                         f"{ci(r['accuracy_low'], r['accuracy_high'])})")
    lines += [f"note: {term(n)}" for n in result.meta.get("notes", [])]
    return "\n".join(lines)


__all__ = ["KnowledgeConfig", "KnowledgeResult", "accuracy_rows", "format_summary", "known_rows", "knowledge",
           "run_record", "save_to_store", "score_items", "write_outputs"]
