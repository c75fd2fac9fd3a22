"""``xling edit``: edit a fact in one language and measure efficacy, propagation and locality in every language.

Cross-lingual knowledge editing (Wang et al. 2023; Beniwal et al. 2024, XME; "Breaking Boundaries"): a fact of
the built-in CLDR fact probe (:mod:`xling.data.facts`, the same items as ``xling knowledge``) is changed in the
*edit language* to a counterfactual answer, one of its distractors, by the small low-rank update of
:mod:`xling.methods.edit` (rank ``--rank`` LoRA on the feed-forward output projections of ``--layers``,
``--steps`` Adam steps on the statement ``<prompt> <new answer>``), then every language is asked again, each
item scored as multiple choice by log-likelihood (:func:`xling.tasks.zeroshot.label_loglik`):

* **efficacy**: the edit language now picks the new answer;
* **propagation** to language M: M picks the new answer for the same fact (the fact's item in M: same subject
  and choices, names in M's CLDR data);
* **locality**: ``--locality`` unrelated facts (other subjects, a seeded sample per edit) keep the unedited
  model's prediction, in every language;
* **base rate**: how often the *unedited* model already picks the new answer (the chance-like floor the
  success rates are read against).

Each edit starts from the unedited model (:meth:`~xling.methods.edit.FactEditor.reset`: exactly the original
weights' output). Facts edited: ``--edits`` per edit language, a seeded sample of the facts that have an item in
every language of the run; the new answer is a seeded choice among the distractors. Intervals: Wilson over
edits for one language's rate; for a group of languages (same script as the edit language or not) and for
locality the pooled rate, its interval the union of a cluster bootstrap over edits (each edit's rows resampled
together) and a Wilson interval counting each edit once (the bootstrap alone collapses to a point at 0 or 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError
from xling.recipes.edit.config import DEFAULT_LANGS, DEFAULT_OUT, OTHER, SAME, EditConfig  # noqa: F401 - the recipe's names

EDIT_COLUMNS = ["edit_lang", "item_id", "relation", "lang", "subject", "old_answer", "new_answer", "pred_before",
                "pred_after", "success", "base", "nll_before", "nll_after", "steps"]
LOCALITY_COLUMNS = ["edit_lang", "edited_item", "item_id", "lang", "pred_before", "pred_after", "unchanged"]
SUMMARY_COLUMNS = ["edit_lang", "lang", "group", "what", "n", "rate", "low", "high", "base", "base_low", "base_high"]


def script_of(lang: str) -> str:
    """The script subtag of a normalised code (``rus_Cyrl`` -> ``Cyrl``)."""
    return lang.split("_")[-1] if "_" in lang else lang


def _h(*parts) -> int:
    return int(hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest(), 16)


@dataclasses.dataclass
class EditResult:
    config: EditConfig
    edits: list[dict]
    locality: list[dict]
    summary: list[dict]
    langs: list[str]
    layers: list[int]
    targets: list[str]
    model_name: str
    meta: dict
    seconds: float
    started: str
    run_id: str = ""


def _score(model, tok, items, cfg: EditConfig) -> list[int]:
    from xling.tasks.zeroshot import label_loglik

    scores = label_loglik(model, tok, [it.prompt for it in items], [list(it.choices) for it in items],
                          normalize=cfg.normalize, batch_size=cfg.batch_size, max_length=cfg.max_length)
    return [max(range(len(s)), key=lambda j: (s[j], -j)) for s in scores]


def _say_estimate(cfg: EditConfig, model, base_items, edited_items, per_edit: int, n_langs: int) -> None:
    """One line before the work: the forward passes of the scoring (each prompt once, then its choices) and of the
    edits (forward + backward, counted as 3 forward passes, per step), at :mod:`xling.engine.estimate`'s rate."""
    import torch

    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    def tokens(items):
        # each prompt once, then each choice on its cache (xling.tasks.zeroshot.label_loglik's shared prefix)
        return count_tokens([*(it.prompt for it in items), *(c for it in items for c in it.choices)], cfg.max_length)

    scored = tokens(base_items) + len(edited_items) * per_edit * tokens(base_items) // max(1, len(base_items))
    trained = 3 * cfg.steps * count_tokens((it.prompt + " " + it.answer_text for it in edited_items), cfg.max_length)
    device = next(model.parameters()).device.type
    device = "cuda" if device == "cuda" else "cpu"
    load = current_load()
    secs = estimate_seconds(scored + trained, forward_params(model.config, model), device=device, load=load)
    say(estimate_line("edit", model=cfg.model, params=model_params(model.config, model), seconds=secs, device=device,
                      langs=n_langs, texts=len(edited_items), text_word="edit", load=load,
                      note="at most (edits that reach --stop-nll early take fewer steps)"))


def plan(probe, edit_langs: list[str], langs: list[str], cfg: EditConfig) -> tuple[list[str], dict, dict]:
    """``(edited fact ids, {fact id: new answer index}, {(edit_lang, fact id): unrelated fact ids})``: facts with
    an item in every language, sampled by a seeded hash; each new answer a seeded distractor; the unrelated facts
    of an edit are other subjects, a seeded sample."""
    everywhere = set.intersection(*(set(it.id for it in probe.items[lang]) for lang in langs))
    by_id = {f.id: f for f in probe.facts}
    pool = sorted(everywhere, key=lambda i: _h("xling-edit", cfg.seed, i))
    if len(pool) < 2:
        raise XlingError(f"edit: {len(pool)} facts have an item in every language of the run ({', '.join(langs)}); "
                         f"choose fewer or other --langs")
    chosen = pool[: cfg.edits]
    new = {}
    for fid in chosen:
        f = by_id[fid]
        distractors = [j for j in range(len(f.choices)) if j != f.answer]
        new[fid] = distractors[_h("xling-edit-new", cfg.seed, fid) % len(distractors)]
    unrelated = {}
    for e in edit_langs:
        for fid in chosen:
            others = [i for i in pool if by_id[i].subject != by_id[fid].subject]
            others.sort(key=lambda i: _h("xling-edit-locality", cfg.seed, e, fid, i))
            unrelated[(e, fid)] = others[: cfg.locality]
    return chosen, new, unrelated


def summarise(edits: list[dict], locality: list[dict], edit_langs: list[str], langs: list[str],
              n_boot: int, seed: int) -> list[dict]:
    """Rates per edit language and language (Wilson over edits), per script group (pooled, bootstrap over edits),
    and locality per language (pooled over edits and unrelated facts, bootstrap over edits)."""
    import numpy as np

    from xling.methods.stats import Resampler, defined_interval, wilson_interval

    def group_rate(rows, key):
        by_edit: dict[str, list[int]] = {}
        for r in rows:
            by_edit.setdefault(r.get("edited_item", r["item_id"]), []).append(int(r[key]))  # the edit a row belongs to
        ids = sorted(by_edit)
        n = sum(len(v) for v in by_edit.values())
        if not n:
            return 0, None, (None, None)
        rate = sum(sum(v) for v in by_edit.values()) / n
        # a Wilson interval as if each edit were one observation (the rows of an edit are not independent) ...
        wlo, whi = wilson_interval(rate * len(ids), len(ids))
        if n_boot < 1 or len(ids) < 2:
            return n, rate, (wlo, whi)
        rs, vals = Resampler(seed), []
        for _ in range(n_boot):
            pick = [ids[i] for i in rs.draw(len(ids))]
            tot = sum(len(by_edit[i]) for i in pick)
            vals.append(sum(sum(by_edit[i]) for i in pick) / tot if tot else np.nan)
        blo, bhi = defined_interval(vals)
        # ... widened by the cluster bootstrap over edits; the bootstrap alone collapses to a point at 0 or 1
        return n, rate, (min(wlo, blo), max(whi, bhi))

    out = []
    for e in edit_langs:
        mine = [r for r in edits if r["edit_lang"] == e]
        for lang in langs:
            rows = [r for r in mine if r["lang"] == lang]
            if not rows:
                continue
            k, kb, n = sum(r["success"] for r in rows), sum(r["base"] for r in rows), len(rows)
            lo, hi = wilson_interval(k, n)
            blo, bhi = wilson_interval(kb, n)
            group = "edited" if lang == e else (SAME if script_of(lang) == script_of(e) else OTHER)
            out.append({"edit_lang": e, "lang": lang, "group": group,
                        "what": "efficacy" if lang == e else "propagation", "n": n, "rate": k / n, "low": lo,
                        "high": hi, "base": kb / n, "base_low": blo, "base_high": bhi})
        for group in (SAME, OTHER):
            rows = [r for r in mine if r["lang"] != e and (script_of(r["lang"]) == script_of(e)) == (group == SAME)]
            n, rate, (lo, hi) = group_rate(rows, "success")
            if n:
                _, base, (blo, bhi) = group_rate(rows, "base")
                out.append({"edit_lang": e, "lang": "all", "group": group, "what": "propagation", "n": n, "rate": rate,
                            "low": lo, "high": hi, "base": base, "base_low": blo, "base_high": bhi})
        loc = [r for r in locality if r["edit_lang"] == e]
        for lang in [*langs, "all"]:
            rows = [r for r in loc if lang in ("all", r["lang"])]
            n, rate, (lo, hi) = group_rate(rows, "unchanged")
            if n:
                out.append({"edit_lang": e, "lang": lang, "group": "unrelated facts", "what": "locality", "n": n,
                            "rate": rate, "low": lo, "high": hi, "base": None, "base_low": None, "base_high": None})
    return out


def edit(config: EditConfig | None = None, **kwargs) -> EditResult:
    """Run the editing study (see the module doc)."""
    from xling.data.facts import RELATIONS, build_fact_probe, probe_fingerprint
    from xling.data.langcodes import normalize_lang
    from xling.harness.outputs import preflight
    from xling.methods.edit import EditSettings, FactEditor
    from xling.models.loading import load_model
    from xling.tasks.zeroshot import load_causal_lm

    cfg = config if config is not None else EditConfig(**kwargs)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    preflight(cfg, "edit")
    edit_langs = list(dict.fromkeys(normalize_lang(x) for x in (cfg.lang or [])))
    if not edit_langs:
        raise XlingError("edit: --lang names no language")
    langs = list(dict.fromkeys(edit_langs + [normalize_lang(x) for x in (cfg.langs or DEFAULT_LANGS)]))
    relations = list(dict.fromkeys(cfg.relations or RELATIONS))
    probe = build_fact_probe(langs, relations, cfg.choices, cfg.shots, cfg.seed)
    chosen, new, unrelated = plan(probe, edit_langs, langs, cfg)
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    if not lm.is_decoder:
        raise XlingError(f"edit: {cfg.model} is an encoder without a language-model head; editing a fact changes "
                         f"the answer a decoder predicts (gemma-3-270m, smollm2-135m)")
    model = load_causal_lm(lm.path, lm.dtype, lm.device)
    tok = lm.tokenizer
    item = {(it.lang, it.id): it for lang in langs for it in probe.items[lang]}
    needed = sorted(set(chosen) | {i for v in unrelated.values() for i in v})
    editor = FactEditor(model, tok, EditSettings(rank=cfg.rank, steps=cfg.steps, lr=cfg.lr, layers=cfg.layers,
                                                   stop_nll=cfg.stop_nll))
    # the unedited model's predictions (the adapter is exactly zero after reset)
    base_items = [item[(lang, i)] for i in needed for lang in langs]
    n_units = len(edit_langs) * len(chosen)
    per_edit = (1 + cfg.locality) * len(langs)
    if cfg.progress:
        print(f"xling: edit: {n_units} edits ({len(chosen)} facts x {len(edit_langs)} edit languages), each "
              f"at most {cfg.steps} steps and {per_edit} items re-scored in {len(langs)} languages; "
              f"{len(base_items)} items scored first on the unedited model", file=sys.stderr, flush=True)
        _say_estimate(cfg, model, base_items, [item[(e, f)] for e in edit_langs for f in chosen], per_edit,
                      len(langs))
    base = dict(zip([(it.lang, it.id) for it in base_items], _score(editor.model, tok, base_items, cfg)))
    edits, locality = [], []
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_units, unit="edit", desc="edit", file=sys.stderr, dynamic_ncols=True)
    try:
        for e in edit_langs:
            for k, fid in enumerate(chosen):
                it = item[(e, fid)]
                info = editor.edit(it.prompt, it.choices[new[fid]], seed=_h("xling-edit-adapter", cfg.seed, e, fid)
                                   % (2 ** 31))
                asked = [item[(lang, fid)] for lang in langs]
                others = [item[(lang, o)] for o in unrelated[(e, fid)] for lang in langs]
                preds = _score(editor.model, tok, asked + others, cfg)
                for q, p in zip(asked, preds[: len(asked)]):
                    b = base[(q.lang, fid)]
                    edits.append({"edit_lang": e, "item_id": fid, "relation": q.relation, "lang": q.lang,
                                  "subject": q.subject, "old_answer": q.answer_text, "new_answer": q.choices[new[fid]],
                                  "pred_before": q.choices[b], "pred_after": q.choices[p],
                                  "success": int(p == new[fid]), "base": int(b == new[fid]),
                                  "nll_before": round(info["nll_before"], 6), "nll_after": round(info["nll_after"], 6),
                                  "steps": info["steps"]})
                for q, p in zip(others, preds[len(asked):]):
                    b = base[(q.lang, q.id)]
                    locality.append({"edit_lang": e, "edited_item": fid, "item_id": q.id, "lang": q.lang,
                                     "pred_before": q.choices[b], "pred_after": q.choices[p], "unchanged": int(p == b)})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        editor.reset(0)
    summary = summarise(edits, locality, edit_langs, langs, cfg.bootstrap, cfg.seed)
    meta = {"probe": probe.meta, "probe_fingerprint": probe_fingerprint(probe), "model_fingerprint": lm.fingerprint,
            "edit_langs": edit_langs, "facts": chosen, "new_answer": new,
            "method": f"LoRA rank {cfg.rank} on {len(editor.targets)} feed-forward output projections, at most "
                      f"{cfg.steps} Adam steps at lr {cfg.lr} (stopping below NLL {cfg.stop_nll}) on '<prompt> "
                      f"<new answer>' in the edit language"}
    result = EditResult(cfg, edits, locality, summary, langs, editor.layers, editor.targets, cfg.model, meta,
                        time.perf_counter() - t0, started)
    result.run_id = hashlib.sha256(json.dumps([started, cfg.model, edit_langs, chosen], default=str).encode()
                                   ).hexdigest()[:12]
    if cfg.store is not None:
        save_to_store(result, cfg.store)
    if cfg.out is not None:
        write_outputs(result, Path(cfg.out))
    return result


def run_record(result: EditResult) -> dict:
    from xling import __version__

    return {"command": "edit", "run_id": result.run_id, "model": result.model_name,
            "config": dataclasses.asdict(result.config), "langs": result.langs, "layers": result.layers,
            "targets": result.targets, "meta": result.meta, "started": result.started,
            "seconds": round(result.seconds, 2), "xling_version": __version__}


def save_to_store(result: EditResult, path) -> None:
    """The run and its summary rates (``task_scores``: metric ``<what>:<edit lang>``, per language)."""
    from xling import __version__
    from xling.harness.store import ResultsStore

    scores = [{"model": result.model_name, "task": "facts-edit", "lang": r["lang"], "split": "edit",
               "metric": f"{r['what']}:{r['edit_lang']}", "value": r["rate"]}
              for r in result.summary if r["rate"] is not None and r["lang"] != "all"]
    ResultsStore(path).add_run(
        {"run_id": result.run_id, "command": "edit", "model": result.model_name,
         "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": "task:facts",
         "corpus_fingerprint": result.meta.get("probe_fingerprint"), "config": run_record(result),
         "started": result.started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "xling_version": __version__},
        task_scores=scores)


def write_outputs(result: EditResult, out: Path) -> None:
    from xling.harness.outputs import rows_to_csv
    from xling.io import output_folder
    from xling.recipes.edit.report import render_report

    with output_folder(out, command="edit", overwrite=result.config.overwrite) as tmp:  # built aside, swapped in
        tmp.mkdir()
        (tmp / "edits.csv").write_text(rows_to_csv(result.edits, EDIT_COLUMNS), encoding="utf-8")
        (tmp / "locality.csv").write_text(rows_to_csv(result.locality, LOCALITY_COLUMNS), encoding="utf-8")
        (tmp / "summary.csv").write_text(rows_to_csv(result.summary, SUMMARY_COLUMNS), encoding="utf-8")
        (tmp / "run.json").write_text(json.dumps(run_record(result), indent=2, ensure_ascii=False, default=str) + "\n",
                                      encoding="utf-8")
        (tmp / "report.html").write_text(render_report(result), encoding="utf-8")


def format_summary(result: EditResult) -> str:
    """The terminal table: per edit language, efficacy, propagation by script group and locality."""
    from xling.harness.html import display_lang
    from xling.textsafe import term as terminal_text

    def pct(r):
        if r is None or r["rate"] is None:
            return "-"
        ci = f" [{r['low']:.2f}, {r['high']:.2f}]" if r["low"] is not None else ""
        base = f" (unedited {r['base']:.2f})" if r.get("base") is not None else ""
        return f"{r['rate']:.2f}{ci}{base}"

    lines = [f"edit: {terminal_text(result.model_name)}, {len(result.meta['facts'])} facts x "
             f"{len(result.meta['edit_langs'])} edit languages, layers {result.layers[0]}-{result.layers[-1]}, "
             f"{result.seconds:.0f} s"]
    for e in result.meta["edit_langs"]:
        rows = [r for r in result.summary if r["edit_lang"] == e]
        get = {(r["what"], r["lang"], r["group"]): r for r in rows}
        lines.append(f"edited in {terminal_text(display_lang(e))}:")
        lines.append(f"  efficacy                     {pct(get.get(('efficacy', e, 'edited')))}")
        lines.append(f"  propagation, {SAME:<15} {pct(get.get(('propagation', 'all', SAME)))}")
        lines.append(f"  propagation, {OTHER:<15} {pct(get.get(('propagation', 'all', OTHER)))}")
        lines.append(f"  locality (unrelated facts)   {pct(get.get(('locality', 'all', 'unrelated facts')))}")
    return "\n".join(lines)


__all__ = ["EditConfig", "EditResult", "edit", "format_summary", "plan", "summarise"]
