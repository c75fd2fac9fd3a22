"""``xling eval --harness TASKS``: lm-evaluation-harness tasks on any model xling loads, per item into the store.

lm-evaluation-harness (Gao et al. 2024, "The Language Model Evaluation Harness"; EleutherAI, the ``harness``
extra: ``pip install 'lm-eval>=0.4.12'``) runs here as a library. xling loads the model its own way (built-in
names, folders, ``.gguf`` files, ``xling compose --as merged`` folders; ``--device``, ``--dtype``;
``trust_remote_code`` off) and hands the loaded causal LM and tokenizer to the harness's ``HFLM``, so what is
scored is exactly the model the other commands read.

Each entry of ``--harness`` is one of:

* an xling task (a built-in name such as ``bible-genre`` or ``bible-mt``, or a task file): written as a local
  harness task from xling's own data (:func:`xling.tasks.harness_export.export_harness_task`, into xling's cache),
  so nothing is fetched. ``--langs``, ``--split``, ``--test-size``, ``--template`` and the zero-shot verbalizers
  apply; for a generation task ``--shots``, ``--max-new-tokens`` and ``--stop`` too, and an item is correct when
  its sentence chrF reaches ``--correct-chrf`` (xling eval's rule, without its language check);
* a folder written by ``xling task --export-harness DIR``;
* anything else: a harness task, group or tag name (``xnli``, ``belebele``, ``global_mmlu``, ...), whose data the
  harness fetches from the Hugging Face hub. ``--langs`` keeps the subtasks of those languages, ``--test-size``
  is the harness's ``limit``. ``--harness-include DIR`` adds a folder of the user's own harness YAMLs.

An entry whose data needs the network while the hub cannot be reached is skipped with one line; when nothing is
left, that line is the error (exit 2).

Per-sample results are mapped back to items: the language (the document's ``lang`` for xling's tasks, else read
from the subtask name: ``xnli_de`` -> ``deu_Latn``, ``belebele_deu_Latn``), the item id (the document's parallel
``id`` for xling's tasks; else ``<subtask without its language>#<doc_id>``, paired across languages by position),
the prediction (the argmax of the choices' log-likelihoods for ``multiple_choice``, the generated text for
``generate_until``) and its correctness (the harness's own per-sample ``acc``, or ``exact_match``). Each entry is one
``eval`` run of the results store: the per-language ``accuracy`` (mean correctness, as xling's eval counts it) and
the harness's metrics in ``task_scores``, the items in ``item_scores`` and ``predictions``, so ``xling compare``,
``xling consistency`` and ``xling predict`` read it like any eval run. Files under ``--out``:
``harness_results.json`` (the harness's results dict, without the samples), ``harness_scores.csv`` (``task, lang,
metric, filter, value, stderr, n``: every task and group the harness reports), ``predictions.csv`` and
``report.html``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from xling.errors import XlingError

#: The harness metrics whose per-sample value is an item's correctness (0 or 1), in order of preference.
CORRECTNESS_METRICS = ("acc", "exact_match", "em")
#: The columns of ``harness_scores.csv``.
SCORE_COLUMNS = ["task", "lang", "metric", "filter", "value", "stderr", "n"]
#: The columns of a harness run's ``predictions.csv`` (``task`` first: a run may hold several).
PREDICTION_COLUMNS = ["task", "item_id", "lang", "prediction", "label", "correct"]
#: Bumped when what a cached local task folder holds changes.
EXPORT_VERSION = 1


@dataclass
class HarnessRun:
    """One ``--harness`` entry: one results-store run."""

    entry: str                       # as the user wrote it
    task: str                        # the task name stored (bible-genre, xnli)
    local: bool                      # data written by xling (nothing fetched)
    run_id: str
    leaves: dict[str, str]           # harness subtask -> language
    task_type: str                   # classification (xling's classification tasks) or multiple-choice/generation
    labels: list[str] | None
    source: str | None = None        # the task's source language (xling's tasks)
    records: dict[str, dict] = field(default_factory=dict)   # lang -> predictions record (harness.consistency)
    scores: list[dict] = field(default_factory=list)         # task_scores rows
    chance: dict[str, float] = field(default_factory=dict)   # lang -> chance accuracy (mean 1 / choices)
    notes: list[str] = field(default_factory=list)

    @property
    def langs(self) -> list[str]:
        return list(dict.fromkeys(self.leaves.values()))


@dataclass
class HarnessResult:
    model: str
    runs: list[HarnessRun]
    rows: list[dict]                 # harness_scores.csv
    results: dict                    # the harness's results dict, without its samples
    skipped: list[str]
    timings: dict
    meta: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # the harness's per-sample output (subtask -> samples), not written
    kind: str = "harness"  # what xling eval returned (the CLI prints each kind its own way)


# ----------------------------------------------------------------------------- languages and items


@contextlib.contextmanager
def _no_git_probe():
    """lm-evaluation-harness asks ``git describe`` for the current directory's commit to put in its results; outside
    a git checkout git prints ``fatal: not a git repository`` on the user's terminal. xling records its own versions,
    so the harness's probe is skipped for the duration of the evaluation (restored after)."""
    import lm_eval.evaluator as ev

    saved = getattr(ev, "get_git_commit_hash", None)
    if saved is None:
        yield
        return
    ev.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        ev.get_git_commit_hash = saved


def _lang_code(text: str) -> str | None:
    from xling.data.langcodes import normalize_lang

    try:
        return normalize_lang(text)
    except XlingError:
        return None


def split_lang(name: str, request: str = "") -> tuple[str | None, str]:
    """The language a harness subtask name holds and the name without it: ``("deu_Latn", "xnli")`` for
    ``xnli_de``, ``belebele_deu_Latn`` -> ``("deu_Latn", "belebele")``. Segments right after the requested name
    are tried first (``global_mmlu_de_anatomy`` -> German), then from the end; a two-segment ``code_Script`` before
    one segment. ``(None, name)`` when no segment is a language code."""
    parts = name.split("_")
    start = len(request.split("_")) if request and name.startswith(request + "_") else 0
    n = len(parts)
    spans = [(start, start + 2), (start, start + 1)] if start else []
    spans += [(n - 2, n), (n - 1, n)]  # a name of its own (xnli_de, arc_easy): its last segments only
    for a, b in spans:
        if a < max(start, 0) or b > n or a >= b or (b - a == n and n > 1) or (a == 0 and not start and n > 1):
            continue
        if b - a == 2 and not (len(parts[a + 1]) == 4 and parts[a + 1][:1].isupper() and parts[a + 1][1:].islower()):
            continue  # two segments only as code_Script (deu_Latn)
        if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*", parts[a]):
            continue
        code = _lang_code("_".join(parts[a:b]))
        if code is not None:
            stem = "_".join(parts[:a] + parts[b:])
            return code, stem or name
    return None, name


def _choice_index(target, sample) -> int | None:
    """The gold choice's index of a multiple-choice sample (the harness's ``target``: an index or the choice)."""
    if isinstance(target, (list, tuple)):
        target = target[0] if target else None
    if isinstance(target, bool):
        return None
    if isinstance(target, int):
        return target
    if isinstance(target, str):
        conts = [str(a[1]).strip() for a in sample.get("arguments") or []
                 if isinstance(a, (list, tuple)) and len(a) > 1]
        if target.strip() in conts:
            return conts.index(target.strip())
        if target.strip().isdigit():
            return int(target.strip())
    return None


def _loglik(resp) -> float:
    """A multiple-choice response's log-likelihood: ``(ll, is_greedy)`` or the bare number."""
    while isinstance(resp, (list, tuple)):
        resp = resp[0]
    return float(resp)


def _correctness(samples: list[dict]) -> str | None:
    """The per-sample metric that is each item's correctness (0/1 for every sample), or None."""
    for m in CORRECTNESS_METRICS:
        vals = [s.get(m) for s in samples]
        if vals and all(isinstance(v, (bool, int, float)) and float(v) in (0.0, 1.0) for v in vals):
            return m
    return None


def sample_answer(sample: dict, output_type: str, labels: list[str] | None = None) -> tuple[str, str, int]:
    """``(prediction, gold, choices)`` of one harness sample as text: a multiple-choice prediction is the argmax of
    the choices' log-likelihoods (the first of equal ones, as ``acc`` counts it), written as the label name when
    ``labels`` are given (xling's classification tasks) and as the choice index otherwise; a generation is the
    generated text. ``choices``: how many answers there were (0 for generations)."""
    target = sample.get("target")
    if output_type == "multiple_choice":
        lls = [_loglik(r) for r in sample.get("filtered_resps") or []]
        if not lls:
            return "", str(target), 0
        pred = max(range(len(lls)), key=lambda j: (lls[j], -j))
        gold = _choice_index(target, sample)
        name = (lambda i: str(labels[i]) if labels and i is not None and 0 <= i < len(labels) else str(i))
        return name(pred), name(gold) if gold is not None else str(target), len(lls)
    resps = sample.get("filtered_resps")
    if output_type == "loglikelihood":
        r = resps[0] if isinstance(resps, (list, tuple)) and resps else resps
        greedy = bool(r[1]) if isinstance(r, (list, tuple)) and len(r) > 1 else False
        return ("greedy" if greedy else "not greedy"), "greedy", 0
    text = resps[0] if isinstance(resps, (list, tuple)) and resps else resps
    while isinstance(text, (list, tuple)) and text:
        text = text[0]
    gold = target[0] if isinstance(target, (list, tuple)) and target else target
    return str(text), str(gold), 0


def _example_of(doc: dict, multiple_choice: bool):
    """The xling :class:`~xling.tasks.core.Example` a local harness document was written from (for the items
    digest eval runs use, so ``xling compare`` pairs a harness run with an eval run on the same items)."""
    from xling.tasks.core import Example

    item = doc.get("id")
    return Example(text=doc.get("text"), text_pair=doc.get("text_pair") or None,
                   choices=list(doc["choices"]) if multiple_choice else None, label=doc.get("label"),
                   id=None if item is None or str(item).startswith("#") else str(item))


# ----------------------------------------------------------------------------- the entries


@dataclass
class _Entry:
    entry: str
    task: str
    local: bool
    spec: str                        # what the task manager loads (a group name)
    include: Path | None = None
    manifest: dict | None = None
    loaded: dict | None = None       # TaskManager.load's result
    objects: list = field(default_factory=list)
    leaves: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _is_xling_task(entry: str) -> bool:
    from xling.tasks.registry import TASKS

    if entry in TASKS:
        return True
    p = Path(entry).expanduser()
    return p.is_file() and p.suffix.lower() in (".json", ".jsonl", ".csv", ".tsv")


def _local_folder(entry: str, cfg) -> _Entry:
    """Write (or reuse, from xling's cache) the harness task folder of an xling task."""
    from xling.io import atomic_path, cache_dir
    from xling.tasks.harness_export import export_harness_task, read_manifest
    from xling.tasks.registry import load_task

    try:
        task = load_task(entry, **(cfg.task_options or {}))
    except TypeError as exc:
        raise XlingError(f"bad --task-option for {entry}: {exc}") from None
    if cfg.max_examples is not None:
        task = task.capped({cfg.split: cfg.max_examples})
    if not task.data.get(cfg.split):
        raise XlingError(f"task {task.name} has no {cfg.split} split")
    langs = None
    if cfg.langs:
        langs = list(dict.fromkeys(task.resolve_lang(code, cfg.split) for code in cfg.langs))
    gen = {"shots": int(getattr(cfg, "shots", 5)), "max_new_tokens": int(getattr(cfg, "max_new_tokens", 128)),
           "stop": list(getattr(cfg, "stop", None) or ["\n"])}  # generation tasks: xling eval's own settings
    if langs is None and task.type == "generation":
        langs = sorted(task.data[cfg.split])
    spec = {"v": EXPORT_VERSION, "task": task.name, "fingerprint": task.fingerprint(), "split": cfg.split,
            "langs": langs, "template": cfg.template, "verbalizers": cfg.verbalizers, **gen}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    folder = cache_dir("harness-tasks") / key
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        with atomic_path(folder) as tmp:
            export_harness_task(task, tmp, split=cfg.split, langs=langs, template=cfg.template,
                                verbalizers=cfg.verbalizers, final=folder,
                                dataset_cache=cache_dir("harness-datasets"), **gen)
        manifest = read_manifest(folder)
    return _Entry(entry=entry, task=task.name, local=True, spec=manifest["group"], include=folder, manifest=manifest)


def _folder_entry(entry: str) -> _Entry:
    from xling.tasks.harness_export import read_manifest

    folder = Path(entry).expanduser().resolve()
    manifest = read_manifest(folder)
    if manifest is None:
        raise XlingError(f"--harness {entry}: a folder, but not one xling task --export-harness wrote (no "
                         f"xling_harness.json); for your own harness YAMLs pass --harness-include {entry} and the "
                         f"task names in --harness")
    return _Entry(entry=entry, task=str(manifest.get("task") or entry), local=True, spec=manifest["group"],
                  include=folder, manifest=manifest)


def _network_problem(exc: BaseException) -> str | None:
    """The first line of ``exc`` when it (or its cause) says the hub or network cannot be reached, else None."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        names = {c.__name__ for c in type(e).__mro__}
        text = str(e)
        if names & {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "Timeout",
                    "ConnectTimeout", "ReadTimeout", "NewConnectionError", "MaxRetryError"} \
                or "Couldn't reach" in text or "Name or service not known" in text:
            return (text.splitlines()[0] if text else type(e).__name__)[:300]
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _top_level(loaded: dict) -> list:
    """The objects to hand the harness: groups no other group holds, and tasks in no group."""
    groups, tasks = loaded.get("groups") or {}, loaded.get("tasks") or {}
    children = {c for kids in (loaded.get("group_map") or {}).values() for c in kids}
    in_group = {t for g in groups.values() for t in _group_tasks(g)}
    return [g for n, g in groups.items() if n not in children] + [t for n, t in tasks.items() if n not in in_group]


def _group_tasks(group) -> list[str]:
    try:
        return [t.task_name for t in group.get_all_tasks()]
    except AttributeError:
        return []


def _load_entries(entries: list[_Entry], manager, cfg) -> tuple[list[_Entry], list[str]]:
    """Build each entry's harness tasks (the data is read or fetched here, before the model): entries whose data
    needs an unreachable network are skipped with a line each."""
    from xling.data.langcodes import match_lang, normalize_lang

    kept, skipped = [], []
    for e in entries:
        try:
            e.loaded = manager.load([e.spec])
        except KeyError as exc:
            raise XlingError(f"--harness {e.entry}: not a harness task, group or tag, nor an xling task "
                             f"({str(exc).strip(chr(39) + chr(34))[:200]}); lm_eval --tasks list names them") from None
        except Exception as exc:  # noqa: BLE001 - the harness's and datasets' errors are many; network ones are named
            why = _network_problem(exc)
            if why is None:
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise XlingError(f"--harness {e.entry}: the harness cannot build it ({type(exc).__name__}: "
                                 f"{first[:300]})") from None
            skipped.append(f"harness task {e.entry}: its data needs the network, and the Hugging Face hub cannot be "
                           f"reached ({why})")
            continue
        leaves = list(e.loaded.get("tasks") or {})
        for leaf in leaves:
            if e.manifest is not None:
                e.leaves[leaf] = e.manifest["tasks"].get(leaf) or split_lang(leaf, e.spec)[0] or leaf
            else:
                lang, _ = split_lang(leaf, e.spec)
                if lang is None:
                    e.notes.append(f"no language code in the harness task name {leaf}: its items are stored under "
                                   f"the language '{leaf}'")
                e.leaves[leaf] = lang or leaf
        objects = _top_level(e.loaded)
        if cfg.langs and e.manifest is None:  # keep the subtasks of the languages asked for
            want = [normalize_lang(c) for c in cfg.langs]
            have = sorted(set(e.leaves.values()))
            keep_langs = {m for m in (match_lang(w, have) for w in want) if m is not None}
            if not keep_langs:
                raise XlingError(f"--harness {e.entry}: none of --langs {','.join(cfg.langs)} among its subtasks' "
                                 f"languages ({', '.join(have)})")
            e.leaves = {k: v for k, v in e.leaves.items() if v in keep_langs}
            objects = [e.loaded["tasks"][k] for k in e.leaves]
        e.objects = objects
        kept.append(e)
    return kept, skipped


# ----------------------------------------------------------------------------- per-sample results -> items


def _records(e: _Entry, samples: dict, configs: dict, threshold: float = 50.0) -> HarnessRun:
    from xling.harness.store import items_hash

    manifest = e.manifest or {}
    xling_type = manifest.get("type")
    labels = list(manifest["labels"]) if xling_type == "classification" else None
    run = HarnessRun(entry=e.entry, task=e.task, local=e.local, run_id=uuid.uuid4().hex[:12], leaves=dict(e.leaves),
                     task_type=xling_type or "multiple-choice", labels=labels, notes=list(e.notes),
                     source=manifest.get("source_lang"))
    per_lang: dict[str, dict] = {}
    types = set()
    for leaf in sorted(e.leaves):
        lang = e.leaves[leaf]
        rows = samples.get(leaf) or []
        if not rows:
            run.notes.append(f"{leaf}: the harness logged no samples")
            continue
        filters = list(dict.fromkeys(str(s.get("filter", "none")) for s in rows))
        if len(filters) > 1:  # each filter logs every document again: one answer per item, the unfiltered one first
            chosen = "none" if "none" in filters else filters[0]
            run.notes.append(f"{leaf}: items from the harness's filter '{chosen}' (of {', '.join(filters)})")
            rows = [s for s in rows if str(s.get("filter", "none")) == chosen]
        rows = sorted(rows, key=lambda s: int(s.get("doc_id", 0)))
        otype = str((configs.get(leaf) or {}).get("output_type") or "multiple_choice")
        types.add(otype)
        metric = "chrf_threshold" if xling_type == "generation" else _correctness(rows)
        if metric is None:
            run.notes.append(f"{leaf}: no per-sample 0/1 metric ({', '.join(CORRECTNESS_METRICS)}); its items are not "
                             f"stored (its metrics are in harness_scores.csv)")
            continue
        stem = split_lang(leaf, e.spec)[1] if e.manifest is None else ""
        rec = per_lang.setdefault(lang, {"item_ids": [], "predictions": [], "labels": [], "correct": [],
                                         "keys": [], "choices": [], "id_source": "task" if e.manifest else "position"})
        for s in rows:
            doc = s.get("doc") if isinstance(s.get("doc"), dict) else {}
            pred, gold, k = sample_answer(s, otype, labels)
            if e.manifest is not None:
                item = str(doc.get("id"))
                if item.startswith("#"):
                    rec["id_source"] = "position"
                rec["keys"].append(_example_of(doc, xling_type == "multiple-choice"))
            else:
                item = f"{stem}#{s.get('doc_id')}"
                rec["keys"].append(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str))
            rec["item_ids"].append(item)
            rec["predictions"].append(pred)
            rec["labels"].append(gold)
            rec["correct"].append(None if metric == "chrf_threshold" else int(float(s[metric])))
            rec["choices"].append(k)
        if metric == "chrf_threshold":  # xling's generation eval's rule: sentence chrF >= --correct-chrf
            from xling.methods.generation import sentence_chrf

            n = len(rows)
            chrf = sentence_chrf(rec["predictions"][-n:], rec["labels"][-n:])
            rec["correct"][-n:] = [int(c >= threshold) for c in chrf]
    if e.manifest is None:
        run.task_type = "multiple-choice" if types <= {"multiple_choice"} else "generation"
    if xling_type == "generation" and per_lang:
        run.notes.append(f"an item is correct when its sentence chrF is at least {threshold:g} (xling eval's rule "
                         f"for generation, without the language check)")
    for lang, rec in per_lang.items():
        keys, choices = rec.pop("keys"), rec.pop("choices")
        rec["ids_hash"] = items_hash(keys)
        run.records[lang] = rec
        ks = [k for k in choices if k > 0]
        if ks and len(ks) == len(choices):
            run.chance[lang] = sum(1.0 / k for k in ks) / len(ks)
        if run.task_type != "generation":  # a model that answers mostly one label: said, with that label's share
            from xling.harness.scores import dominant_class_note, one_class_warning

            kinds = run.labels or list(range(max(choices, default=0)))  # multiple choice: the choice indices
            lean = (one_class_warning(run.task_type, kinds, rec["predictions"], rec["labels"], prompted=True)
                    or dominant_class_note(run.task_type, kinds, rec["predictions"], rec["labels"]))
            if lean:
                run.notes.append(f"{lang}: {lean}")
    return run


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def metric_rows(results: dict, leaf_lang: dict[str, str], n_samples: dict | None = None) -> list[dict]:
    """``harness_scores.csv`` rows of the harness's ``results`` dict: one per task (or group), metric and filter
    (``"acc,none"`` -> metric ``acc``, filter ``none``) with its ``_stderr`` value; ``lang`` for subtasks."""
    rows = []
    for name, res in results.items():
        if not isinstance(res, dict):
            continue
        n = (n_samples or {}).get(name, {})
        n = n.get("effective") if isinstance(n, dict) else None
        for key, value in res.items():
            if "," not in key or key.split(",", 1)[0].endswith("_stderr"):
                continue
            metric, flt = key.split(",", 1)
            v = _number(value)
            if v is None:
                continue
            rows.append({"task": name, "lang": leaf_lang.get(name, ""), "metric": metric, "filter": flt, "value": v,
                         "stderr": _number(res.get(f"{metric}_stderr,{flt}")), "n": n})
    return rows


def _scores(run: HarnessRun, model: str, split: str, results: dict) -> list[dict]:
    """The store's ``task_scores`` of a run: per language ``accuracy`` (mean correctness) and, where one subtask is
    the language, the harness's own metrics under their names (``acc``, ``acc_norm``, filter other than ``none``
    as ``metric/filter``)."""
    out = []
    for lang, rec in run.records.items():
        if rec["correct"]:
            out.append({"model": model, "task": run.task, "lang": lang, "split": split, "metric": "accuracy",
                        "value": sum(rec["correct"]) / len(rec["correct"])})
    by_lang: dict[str, list[str]] = {}
    for leaf, lang in run.leaves.items():
        by_lang.setdefault(lang, []).append(leaf)
    for lang, leaves in by_lang.items():
        if len(leaves) != 1:
            continue
        for row in metric_rows({leaves[0]: results.get(leaves[0]) or {}}, {}):
            metric = row["metric"] if row["filter"] == "none" else f"{row['metric']}/{row['filter']}"
            if metric == "accuracy":
                continue
            out.append({"model": model, "task": run.task, "lang": lang, "split": split, "metric": metric,
                        "value": row["value"]})
    return out


# ----------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _harness_logging(quiet: bool):
    """The log lines of the harness, datasets and the hub client (its retries when offline) at WARNING (ERROR with
    --quiet; and no datasets progress bars), restored afterwards."""
    import datasets

    loggers = [logging.getLogger(n) for n in ("lm-eval", "lm_eval", "huggingface_hub", "datasets")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR if quiet else logging.WARNING)
    bars = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()  # "Generating test split" per task
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)
        if quiet and bars:
            datasets.enable_progress_bars()


def run_harness(cfg) -> HarnessResult:
    """``xling eval --harness``: see the module docstring. ``cfg``: an :class:`xling.recipes.eval.config.EvalConfig`
    with ``harness`` set."""
    import torch

    from xling.deps import require
    from xling.harness.outputs import preflight
    from xling.models.loading import load_model

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    names = [x.strip() for x in ([cfg.harness] if isinstance(cfg.harness, str) else cfg.harness or []) if x.strip()]
    if not names:
        raise XlingError("--harness: name at least one task (bible-genre, xnli, ...)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    preflight(cfg, "eval")
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, quiet=True, lazy=True)  # config and tokenizer only
    if not lm.is_decoder:
        raise XlingError(f"--harness scores a causal LM (log-likelihoods, generation); {cfg.model} is an encoder")
    require("lm_eval", "xling eval --harness (lm-evaluation-harness)")
    from lm_eval.tasks import TaskManager

    entries: list[_Entry] = []
    for name in names:
        p = Path(name).expanduser()
        if p.is_dir():
            entries.append(_folder_entry(name))
        elif _is_xling_task(name):
            entries.append(_local_folder(name, cfg))
        else:
            entries.append(_Entry(entry=name, task=name, local=False, spec=name))
    include = [str(e.include) for e in entries if e.include is not None]
    for extra in ([cfg.harness_include] if isinstance(cfg.harness_include, (str, Path)) else cfg.harness_include or []):
        folder = Path(extra).expanduser()
        if not folder.is_dir():
            raise XlingError(f"--harness-include {extra}: not a folder")
        include.append(str(folder.resolve()))
    with _harness_logging(not cfg.progress):
        # the harness's own task index (some 15,000 YAMLs, seconds to read) only for names the folders lack
        manager = TaskManager(include_path=include, include_defaults=False) if include else None
        if any(not e.local for e in entries) and (
                manager is None or any(e.spec not in set(manager.all_tasks) for e in entries if not e.local)):
            manager = TaskManager(include_path=include or None, include_defaults=True)
        t_index = time.perf_counter()
        entries, skipped = _load_entries(entries, manager, cfg)
        if not entries:
            raise XlingError("; ".join(skipped) + "; offline, xling's own tasks run locally (--harness bible-genre, "
                                                  "a task file, a folder of xling task --export-harness)")
        for line in skipped:
            print(f"xling: warning: {line}; skipped", file=sys.stderr, flush=True)
        t_data = time.perf_counter()
        model, hflm, batch_size = _harness_model(lm, cfg)
        t_model = time.perf_counter()
        from lm_eval import simple_evaluate

        with _no_git_probe():
            res = simple_evaluate(model=hflm, tasks=[o for e in entries for o in e.objects], task_manager=manager,
                                  num_fewshot=cfg.harness_fewshot, limit=cfg.max_examples, log_samples=True,
                                  batch_size=batch_size)
    t_eval = time.perf_counter()
    samples = res.pop("samples", None) or {}
    configs = res.get("configs") or {}
    leaf_lang = {leaf: lang for e in entries for leaf, lang in e.leaves.items()}
    runs = []
    for e in entries:
        run = _records(e, samples, configs, float(getattr(cfg, "correct_chrf", 50.0)))
        run.scores = _scores(run, str(cfg.model), cfg.split, res.get("results") or {})
        runs.append(run)
    result = HarnessResult(
        model=str(cfg.model), runs=runs, rows=metric_rows(res.get("results") or {}, leaf_lang, res.get("n-samples")),
        results=res, skipped=skipped, samples=samples,
        timings={"tasks_s": round(t_data - t_index, 3), "model_s": round(t_model - t_data, 3),
                 "harness_s": round(t_eval - t_model, 3), "total_s": round(time.perf_counter() - t0, 3)},
        meta={"started": started, "model_fingerprint": lm.fingerprint, "device": str(lm.device),
              "dtype": str(lm.dtype).replace("torch.", ""), "torch": torch.__version__,
              "lm_eval": _lm_eval_version(), "num_fewshot": cfg.harness_fewshot, "limit": cfg.max_examples})
    del model, hflm
    if cfg.out is not None:
        from xling.io import output_folder

        with output_folder(cfg.out, command="eval", overwrite=cfg.overwrite) as tmp:
            write_harness_outputs(result, tmp)
    if cfg.store is not None:
        save_harness_runs(result, Path(cfg.store), cfg)
    return result


def _lm_eval_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return "?"


#: The memory the harness's float32 logits may take per batch (three copies: logits, log-softmax, gather),
#: counted at :data:`LOGITS_TOKENS` tokens per prompt: 4 GiB.
LOGITS_BUDGET = 4 * 2 ** 30
LOGITS_TOKENS = 128


def harness_batch_size(requested: int, vocab: int, budget: int | None = None, tokens: int | None = None) -> int:
    """The batch size given to the harness's ``HFLM``: ``requested``, lowered so that three float32 copies of a
    batch's logits (``batch x tokens x vocab x 4`` bytes each) fit ``budget``. HFLM scores a whole batch's logits
    over the full vocabulary at once: Gemma 3's 262,144-word vocabulary at batch 32 took 10.6 GB on 100-token
    Bible prompts, 4.2 GB at batch 8, with the same scores. Scores do not depend on the batch size."""
    budget = LOGITS_BUDGET if budget is None else budget
    per_item = 3 * (LOGITS_TOKENS if tokens is None else tokens) * max(1, int(vocab)) * 4
    return max(1, min(int(requested), budget // per_item))


def _size(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MB"


def _harness_model(lm, cfg):
    """xling's loaded causal LM (:func:`xling.tasks.zeroshot.load_causal_lm`: safetensors only, on xling's device
    and dtype) wrapped in the harness's ``HFLM``; returns ``(model, hflm, batch_size)``."""
    from lm_eval.models.huggingface import HFLM

    from xling.tasks.zeroshot import load_causal_lm

    model = load_causal_lm(lm.path, lm.dtype, lm.device)
    head = model.get_output_embeddings()
    vocab = int(head.weight.shape[0]) if head is not None else int(getattr(model.config, "vocab_size", 0) or 0)
    batch_size = harness_batch_size(cfg.batch_size, vocab)
    if batch_size < cfg.batch_size:
        print(f"xling: note: --batch-size {cfg.batch_size} lowered to {batch_size} for the harness: it keeps the "
              f"float32 logits of a whole batch over the {vocab:,}-word vocabulary (about "
              f"{_size(3 * cfg.batch_size * LOGITS_TOKENS * vocab * 4)} at {LOGITS_TOKENS} tokens a prompt); the scores do not depend on it beyond float rounding", file=sys.stderr, flush=True)
    kwargs = {"pretrained": model, "tokenizer": lm.tokenizer, "batch_size": batch_size,
              "device": str(lm.device), "trust_remote_code": False}
    if cfg.max_length is not None:
        kwargs["max_length"] = cfg.max_length
    return model, HFLM(**kwargs), batch_size


# ----------------------------------------------------------------------------- outputs and the store


def _stored_config(run: HarnessRun, result: HarnessResult, cfg) -> dict:
    conf = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()} if cfg is not None else {}
    return {
        "run_id": run.run_id, "command": "eval", "model": result.model, "base_model": result.model,
        "task": run.task, "task_type": run.task_type, "split": getattr(cfg, "split", "test"), "source": run.source,
        "langs": run.langs, "n_examples": {lang: len(rec["correct"]) for lang, rec in run.records.items()},
        "main_metric": "accuracy", "labels": run.labels,
        "settings": {"mode": "harness", "harness": run.entry, "harness_tasks": sorted(run.leaves), "local": run.local,
                     "num_fewshot": result.meta.get("num_fewshot"), "limit": result.meta.get("limit"),
                     "lm_eval": result.meta.get("lm_eval")},
        "timings": result.timings, "notes": run.notes, "started": result.meta.get("started"),
        "device": result.meta.get("device"), "dtype": result.meta.get("dtype"), "torch": result.meta.get("torch"),
        "config": conf,
    }


def _items_digest(run: HarnessRun) -> str:
    """A digest of a run's items (each language's ``ids_hash``): the data a local run scored."""
    text = json.dumps({lang: rec["ids_hash"] for lang, rec in sorted(run.records.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_harness_runs(result: HarnessResult, path: Path, cfg=None) -> None:
    """One ``eval`` run per ``--harness`` entry: scores, per-item correctness and predictions."""
    from xling import __version__
    from xling.harness.consistency import store_rows
    from xling.harness.store import ResultsStore, item_row

    store = ResultsStore(path)
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    split = getattr(cfg, "split", "test")
    for run in result.runs:
        items = [item_row(result.model, run.task, lang, split, rec["ids_hash"], rec["correct"])
                 for lang, rec in run.records.items()]
        store.add_run(
            {"run_id": run.run_id, "command": "eval", "model": result.model,
             "model_fingerprint": result.meta.get("model_fingerprint"),
             "corpus": f"task:{run.task}" if run.local else f"harness:{run.task}",
             "corpus_fingerprint": _items_digest(run) if run.local else None,
             "config": _stored_config(run, result, cfg), "started": result.meta.get("started"), "finished": finished,
             "xling_version": __version__},
            task_scores=run.scores, items=items, predictions=store_rows(result.model, run.task, split, run.records))


def prediction_rows(result: HarnessResult) -> list[dict]:
    return [{"task": run.task, "item_id": i, "lang": lang, "prediction": p, "label": g, "correct": c}
            for run in result.runs for lang, rec in run.records.items()
            for i, p, g, c in zip(rec["item_ids"], rec["predictions"], rec["labels"], rec["correct"])]


def accuracy_rows(run: HarnessRun) -> list[dict]:
    """Per language: items, accuracy, its 95% Wilson interval, the chance level and whether the interval holds it."""
    from xling.methods.stats import wilson_interval

    out = []
    for lang, rec in run.records.items():
        n, k = len(rec["correct"]), sum(rec["correct"])
        lo, hi = wilson_interval(k, n, empty=(math.nan, math.nan))
        chance = run.chance.get(lang)
        out.append({"lang": lang, "n": n, "accuracy": k / n if n else math.nan, "low": lo, "high": hi,
                    "chance": chance, "at_chance": chance is not None and n > 0 and lo <= chance <= hi})
    return out


def write_harness_outputs(result: HarnessResult, out: Path) -> None:
    """``harness_results.json``, ``harness_scores.csv``, ``predictions.csv`` and ``report.html`` into ``out``."""
    from xling.harness.outputs import rows_to_csv

    out.mkdir(parents=True, exist_ok=True)
    (out / "harness_results.json").write_text(json.dumps(result.results, indent=1, default=str, ensure_ascii=False)
                                              + "\n", encoding="utf-8")
    (out / "harness_scores.csv").write_text(rows_to_csv(result.rows, SCORE_COLUMNS), encoding="utf-8")
    (out / "predictions.csv").write_text(rows_to_csv(prediction_rows(result), PREDICTION_COLUMNS), encoding="utf-8")
    (out / "report.html").write_text(render_harness_report(result), encoding="utf-8")


def render_harness_report(result: HarnessResult) -> str:
    from xling.harness.html import esc, page, table_html

    parts = [f"<h1>lm-evaluation-harness tasks: {esc(result.model)}</h1>"]
    for line in result.skipped:
        parts.append(f"<p>{esc(line)}</p>")
    for run in result.runs:
        parts.append(f"<h2>{esc(run.entry)} (run {esc(run.run_id)}{', local data' if run.local else ''})</h2>")
        acc = accuracy_rows(run)
        if acc:
            parts.append(table_html(["language", "items", "accuracy", "95% low", "95% high", "chance", "at chance"],
                                    [[r["lang"], r["n"], r["accuracy"], r["low"], r["high"], r["chance"],
                                      "yes" if r["at_chance"] else "no"] for r in acc], sortable=True))
        for note in run.notes:
            parts.append(f"<p>{esc(note)}</p>")
    parts.append("<h2>Every metric the harness reports</h2>")
    parts.append(table_html(SCORE_COLUMNS, [[r[c] for c in SCORE_COLUMNS] for r in result.rows], left_cols=4,
                            sortable=True))
    return page(f"xling eval --harness: {result.model}", "".join(parts), script=True)


def format_harness_summary(result: HarnessResult) -> str:
    """Per run and language: accuracy with its 95% Wilson interval, and whether it is at chance."""
    from xling.textsafe import term

    lines = []
    for run in result.runs:
        lines.append(f"{term(run.entry)}: run {run.run_id} ({'local data' if run.local else 'harness data'}, "
                     f"{len(run.leaves)} harness task{'s' if len(run.leaves) != 1 else ''})")
        for r in accuracy_rows(run):
            chance = "" if r["chance"] is None else f"  chance {r['chance']:.3f}" + (" (at chance)" if r["at_chance"]
                                                                                     else "")
            lines.append(f"  {term(r['lang']):12s} accuracy {r['accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}] "
                         f"n={r['n']}{chance}")
        for note in run.notes:
            lines.append(f"  note: {term(note)}")
    return "\n".join(lines)


__all__ = ["HarnessResult", "HarnessRun", "format_harness_summary", "metric_rows", "run_harness", "sample_answer",
           "save_harness_runs", "split_lang", "write_harness_outputs"]
