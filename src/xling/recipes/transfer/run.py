"""``xling transfer``: the modular cross-lingual transfer experiment, end to end.

One command trains (or reuses) the modules and compares the ways of combining them
on every target language of a task:

* language modules: a LoRA per language (the source and each target) trained by
  masked LM (encoders) or causal LM (decoders) on unlabeled text
  (default ``unlabeled:<task>``: the task's domain text without its dev/test text);
* task modules: a task LoRA trained on the base (``task``), one trained on top of
  the source-language module (``task@src``, MAD-X; Pfeiffer et al. 2020), one trained
  with the middle-layer alignment loss on parallel text (``task+align``; Liu &
  Niehues 2025), and, for the ceiling, one per target trained on the gold
  translations of the training set (``tt:<lang>``, translate-train).

Conditions (:data:`CONDITIONS`; a per-target one is built for each target language):

=============  ==========================================================================
``task``       task module alone (trained on the base): plain zero-shot transfer
``no-lang``    baseline: the MAD-X task module with no language module
``src-lang``   baseline: the MAD-X task module with the source-language module kept
``stack``      MAD-X: the target-language module replaces the source one under the task module
``add``        arithmetic: ``dW_task + lambda dW_tgt`` (Chronopoulou et al. 2023)
``add-swap``   arithmetic: ``dW_task + lambda (dW_tgt - dW_src)``
``layer-swap`` the task module with its bottom b / top t layers from the target-language
               module (Bandarkar et al. 2025), optional linear transition zone
``align``      the task module trained with middle-layer alignment (Liu & Niehues 2025)
``madx2``      MAD-X 2.0: ``stack`` without the language module in the last layer
               (Pfeiffer et al. 2021)
``lang-expert`` baseline: the target-language module alone, with the task module's head
``translate-train`` the ceiling: a task module trained on the target language's gold
               translations of the training set
=============  ==========================================================================

Choices are made on dev, never on test (:func:`_select`): the lambda of ``add`` and
``add-swap`` from ``--lambdas`` and the bottom/top/transition of ``layer-swap`` from
``--swap auto`` (a grid scaled to the depth of the model), per target language, by
the accuracy of each candidate composition on the source-language dev set
(``--select-on source-dev``, the zero-shot protocol: no target label is used) or on
the target language's dev set (``target-dev``: a few hundred target labels, not
zero-shot; Keung et al. 2020 show English dev selection can mislead). A dev tie is
listed and broken by :data:`TIE_RULES` (:func:`pick_on_dev`: the gentlest composition).
:func:`honesty_warnings` says when every condition is within noise of chance (no best
condition is named then) and when the ceiling is not above the reference beyond noise.

Each condition is reported per language with the difference to ``task`` and its 95%
paired-bootstrap interval, and, when ``translate-train`` ran, the share of the
transfer gap it closes, ``(score - task) / (ceiling - task)`` (mean over targets of
numerator and denominator), with a bootstrap interval from the same resamples.

Every composition is exact arithmetic on dW (:func:`xling.modules.apply.compose_into`,
the same code as ``xling compose``), applied to one in-memory copy of the base
task model: weights are restored between conditions, so the base is loaded once.
Modules are saved in PEFT format under ``OUT/modules`` and reused when their
recipe (base, text, hyper-parameters) is unchanged; predictions are cached, so an
interrupted run resumes. ``--executor ray`` trains the modules not reusable on Ray
workers, one unit per module, each marked reusable as soon as it is trained; the
evaluation stays in this process. Outputs: ``transfer.csv`` (per language and condition),
``summary.csv`` (per condition, with a paired bootstrap CI of the difference to
``task``), ``report.html``, ``run.json`` and the results store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from xling.cache import ContentCache, FolderCodec, content_key
from xling.errors import XlingError
from xling.methods.stats import bootstrap_study
from xling.recipes.transfer.config import (CONDITIONS, DEFAULT_LAMBDAS, DEFAULT_MODEL, DEFAULT_OUT,  # noqa: F401
                                           DEFAULT_TARGETS, DEFAULT_TASK, NOT_RECORDED, SELECT_ON, TASK_TARGETS,
                                           Condition, TransferConfig)

RECIPE_FILE = "xling_transfer.json"
RECIPE_VERSION = 2
#: Conditions that need data a task may not have; dropped from the default set (with a note) when it is missing.
OPTIONAL = ("align", "translate-train")
#: A task module whose best dev accuracy is at most COLLAPSE x chance is retrained (twice at most) at half the lr.
COLLAPSE = 1.25
#: Built-in parallel text for the alignment loss, per task (train-split text only, never dev/test).
DEFAULT_ALIGN_DATA = {"bible-genre": "bible-genre:align"}


def swap_grid(num_layers: int) -> list[tuple[int, int, int]]:
    """``--swap auto`` candidates (bottom, top, transition), scaled to the depth ``L``.

    Bandarkar et al. (2025) swap the bottom 5 and top 2 of 32 layers (about L/6 and
    L/16) with 1-layer transitions; the grid spans bottom in {L/8, L/6, L/4}, top in
    {1, 2} and transition in {0, 1}, rounded, at least 1, deduplicated.
    """
    bottoms = sorted({max(1, round(num_layers * f)) for f in (1 / 8, 1 / 6, 1 / 4)})
    out = []
    for b in bottoms:
        for t in (1, 2):
            for w in (0, 1):
                if b + t + 2 * w <= num_layers:
                    out.append((b, t, w))
    return out or [(1, 1, 0)]


@dataclass
class TransferResult:
    rows: list[dict]                 # lang, condition, accuracy, macro_f1, n
    summary: list[dict]              # condition, mean target score, delta to task [CI]
    source: str
    targets: list[str]
    conditions: list[str]
    modules: dict[str, dict]
    metric: str
    run_id: str
    timings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    choices: list[dict] = field(default_factory=list)   # condition, lang, chosen, split, candidates (dev scores)
    notes: list[str] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)     # condition, lang, ids_hash, correct (0/1 per test example)
    warnings: list[str] = field(default_factory=list)   # numbers not to be trusted (chance, ceiling), see honesty_warnings

    def score(self, condition: str, lang: str, metric: str | None = None) -> float:
        m = metric or self.metric
        for r in self.rows:
            if r["condition"] == condition and r["lang"] == lang:
                return r[m]
        raise KeyError((condition, lang))

    def mean(self, condition: str, metric: str | None = None) -> float:
        vals = [self.score(condition, t, metric) for t in self.targets]
        return sum(vals) / len(vals)


# ----------------------------------------------------------------------------- helpers


def _log(msg: str, on: bool) -> None:
    if on:
        print(f"[transfer] {msg}", file=sys.stderr, flush=True)


def _key(recipe: dict) -> str:
    """A module's key: its recipe (which names ``RECIPE_VERSION``) as canonical JSON, hashed."""
    return content_key(recipe, 20)


def _modules(mdir: Path) -> ContentCache:
    """``OUT/modules`` as the resume cache of this recipe: a folder per module, reused while its marker
    (:data:`RECIPE_FILE`) names the key of the recipe asked for; one whose weights no longer match the
    checksums in its ``xling_module.json`` is retrained (with a note), not used."""
    return ContentCache(mdir, FolderCodec(RECIPE_FILE, ("adapter_model.safetensors",), "xling_module.json"),
                        RECIPE_VERSION, name="module", key_length=20)


def _reusable(folder: Path, key: str) -> bool:
    return _modules(folder.parent).get(key, name=folder.name) is not None


def _mark(folder: Path, key: str, recipe: dict) -> None:
    _modules(folder.parent).put(key, recipe, name=folder.name)


def module_fingerprint(folder: Path) -> str:
    """Content hash of a module folder's weights (adapter + head)."""
    from xling.io import sha256_file

    parts = [sha256_file(folder / "adapter_model.safetensors")]
    head = folder / "head.safetensors"
    if head.is_file():
        parts.append(sha256_file(head))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _resolve_condition(cond: Condition, cfg: TransferConfig, paths: dict[str, Path], tgt: str | None,
                       choice: Any = None):
    """(input paths, weights, options) of ``cond`` for target ``tgt``; ``choice``: its lambda or (b, t, w)."""
    inputs = []
    for role in cond.inputs:
        key = f"lang:{tgt}" if role == "lang:tgt" else f"tt:{tgt}" if role == "tt:tgt" else role
        inputs.append(paths[key])
    weights = None
    if cond.weights is not None:
        lam = float(choice if cond.choice == "lambda" and choice is not None else cfg.lambdas[0])
        weights = [lam if w == "lambda" else -lam if w == "-lambda" else float(w) for w in cond.weights]
    options = {}
    if cond.method == "layer_swap":
        b, t, w = choice if choice is not None else cfg.swap
        options = {"bottom": int(b), "top": int(t), "transition": int(w)}
    return inputs, weights, options


#: How a dev tie is broken: the option that changes the task module least (Occam), stated in the notes.
TIE_RULES = {"lambda": "tie rule: the smallest lambda, the least weight on the language module",
             "swap": "tie rule: the fewest layers taken from the language module (bottom + top + 2 x transition), "
                     "then the smaller bottom"}


def _tie_order(choice: str | None, value) -> tuple:
    if choice == "lambda":
        return (float(value),)
    if choice == "swap":
        b, t, w = value
        return (b + t + 2 * w, b, t, w)
    return ()


def pick_on_dev(scored: Sequence[tuple[float, Any]], choice: str | None) -> tuple[Any, list]:
    """``(chosen, tied)``: the candidate with the best dev score; ``tied``: every candidate with that score.

    A tie is broken by :data:`TIE_RULES` (the gentlest composition: smallest lambda,
    fewest swapped layers), not by the order of the candidates on the command line.
    """
    best = max(v for v, _ in scored)
    tied = [cand for v, cand in scored if v == best]
    return min(tied, key=lambda x: _tie_order(choice, x)), tied


def _fmt_choice(value) -> str:
    if isinstance(value, (tuple, list)):
        return "/".join(str(x) for x in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def honesty_warnings(summary: list[dict], correct: dict[str, Sequence[Sequence[int]]], num_labels: int,
                     metric: str = "accuracy") -> list[str]:
    """Warnings on what the numbers cannot support; sets ``at_chance`` / ``chance_lo`` / ``chance_hi`` in ``summary``.

    * A condition is *within noise of chance* when the 95% Wilson interval
      (:func:`xling.methods.stats.wilson_interval`) of its accuracy pooled over every
      target's test examples contains ``1/k``; when every condition is, no condition
      is best (the report's headline says so instead of naming one).
    * The ceiling is *not above the reference beyond noise* when the lower end of the
      paired-bootstrap interval of its difference to the reference is at most 0 (the
      point difference without a bootstrap): the gap-closed shares are then not
      interpretable.
    """
    from xling.methods.stats import at_chance, wilson_interval

    out = []
    chance = 1.0 / num_labels if num_labels >= 2 else None
    flags = []
    for s in summary:
        rows = correct.get(s["condition"])
        if not rows or chance is None or metric != "accuracy":
            continue
        k, n = sum(sum(r) for r in rows), sum(len(r) for r in rows)
        lo, hi = wilson_interval(k, n)
        s["chance_lo"], s["chance_hi"] = round(lo, 6), round(hi, 6)
        s["at_chance"] = at_chance(k / n if n else None, n, num_labels)
        flags.append(s["at_chance"])
    if flags and all(flags):
        n = sum(len(r) for r in next(iter(correct.values())))
        out.append(f"every condition is within noise of chance (1/{num_labels} = {chance:.3f}; 95% Wilson interval "
                   f"of each condition's accuracy over {n} target test examples); no best condition")
    ref = next((s.get("reference") for s in summary if s.get("reference")), None)
    ceil = next((s for s in summary if s.get("ceiling") and s["condition"] == s["ceiling"]), None)
    if ceil is not None and ref is not None and ceil["condition"] != ref:
        d, lo, hi = ceil.get("delta"), ceil.get("delta_lo"), ceil.get("delta_hi")
        if d is not None and ((lo if lo is not None else d) <= 0):
            mean = f"mean_target_{metric}"
            rs = next((s for s in summary if s["condition"] == ref), {})
            out.append(f"the ceiling {ceil['condition']} ({ceil.get(mean, float('nan')):.3f}) is not above the "
                       f"reference {ref} ({rs.get(mean, float('nan')):.3f}) beyond noise (difference {d:+.3f}"
                       + (f", 95% CI [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "")
                       + "); the shares of the gap closed are not interpretable")
    return out


# ----------------------------------------------------------------------------- modules


class _ModuleUnits:
    """The worker of the module trainings: unit (a dict, see :func:`_train_modules`) -> its module trained.

    A unit trains one module into its folder (the trainings write it atomically),
    retrains a task module stuck at chance on dev at half the learning rate (twice at
    most; each retry beside the folder, which it replaces only with a better best dev
    accuracy: the best attempt is kept, not the last), then writes the recipe mark (atomic): a folder holds a marked module only
    once it is complete, so a run that dies reuses every module finished before.
    Returns the seconds taken and the notes for the driver to print (``local``: printed
    here at once, in this process); the driver reads the rest from the folder.
    Picklable, for Ray (each training loads its own model, so nothing is kept between
    units).
    """

    def __init__(self, model: str, task, device: str, dtype: str, progress: bool, local: bool = False):
        self.model, self.task, self.device, self.dtype, self.progress = model, task, device, dtype, progress
        self.local = local

    def __call__(self, unit: dict) -> dict:
        from xling.harness.training import train_language_module, train_task_module

        t0 = time.perf_counter()
        folder = Path(unit["folder"])
        notes: list[str] = []
        _log(unit["log"], self.progress)
        if unit["kind"] == "language":
            train_language_module(self.model, unit["lang"], unit["sentences"], folder, device=self.device,
                                  dtype=self.dtype, progress=self.progress, overwrite=True,  # inside the run's own
                                  **unit["kwargs"])
        else:
            import shutil

            from xling.io import atomic_path

            hp = dict(unit["hparams"])
            lm = unit["language_module"]
            best, best_lr, tried = None, hp["lr"], []
            for attempt in range(3):  # a module stuck at chance on dev diverged: retrain at half the learning rate
                target = folder
                if attempt:
                    hp["lr"] = hp["lr"] / 2
                    notes.append(f"task module {unit['role']}: best dev accuracy {best:.3f} is at chance "
                                 f"(1/{len(self.task.labels)}); {'retraining' if self.local else 'retrained'} at "
                                 f"learning rate {hp['lr']:g}")
                    if self.local:
                        from xling.io import note

                        note(notes.pop())
                    target = folder.parent / f".{folder.name}.retry{attempt}"  # the kept module stays until beaten
                    shutil.rmtree(target, ignore_errors=True)
                train_task_module(self.model, self.task, target, lang=unit["lang"], language_module=lm,
                                  device=self.device, dtype=self.dtype, progress=self.progress, **hp,
                                  overwrite=True, **unit["kwargs"])  # a module folder of the run's own
                dev = json.loads((target / "xling_train.json").read_text(encoding="utf-8")).get("best_dev")
                tried.append((hp["lr"], dev))
                if attempt and target != folder:
                    if dev is not None and (best is None or dev > best):  # keep the best attempt, not the last
                        with atomic_path(folder) as tmp:
                            target.rename(tmp)
                    else:
                        shutil.rmtree(target, ignore_errors=True)
                if attempt == 0 or (dev is not None and (best is None or dev > best)):
                    best, best_lr = dev, hp["lr"]
                if best is None or best > COLLAPSE * (1 / len(self.task.labels)):
                    break
            if len(tried) > 1:
                kept = (f"task module {unit['role']}: kept the attempt at learning rate {best_lr:g} (best dev "
                        f"{best:.3f}; tried " + ", ".join(f"{lr:g}: {'-' if d is None else f'{d:.3f}'}"
                                                          for lr, d in tried) + ")")
                notes.append(kept)
                if self.local:
                    from xling.io import note

                    note(notes.pop())
        _mark(folder, unit["key"], unit["recipe"])
        return {"notes": notes, "seconds": round(time.perf_counter() - t0, 1)}


def _returns(value):
    return value


def _module_jobs(units: list[dict], make) -> tuple[list, list[list[int]]]:
    """The executor's jobs: one per unit (each training loads its own model: a fresh worker frees its memory),
    except that ``task@src`` follows the source-language module in one job when both are trained (it trains
    on that module: ``first_alone``)."""
    from xling.harness.executor import Job

    def label(u):
        return (f"transfer: language module {u['lang']}" if u["kind"] == "language"
                else f"transfer: task module {u['role']}")

    src = next((i for i, u in enumerate(units) if u.get("source_lang")), None)
    dep = next((i for i, u in enumerate(units) if u["role"] == "task@src"), None)
    jobs, index = [], []  # index[j][k]: the position in ``units`` of job j's unit k
    if src is not None and dep is not None:
        jobs.append(Job(make, [units[src], units[dep]], [label(units[src]), label(units[dep])], first_alone=True))
        index.append([src, dep])
    for i, u in enumerate(units):
        if not (jobs and i in index[0]):
            jobs.append(Job(make, [u], [label(u)]))
            index.append([i])
    return jobs, index


def _train_modules(cfg: TransferConfig, task, source: str, targets: list[str], mdir: Path,
                   needed: set[str], executor=None) -> dict[str, dict]:
    """Train (or reuse) the modules the conditions need; returns role -> info (path, key, reused, seconds).

    The modules not reusable are the executor's units (:class:`_ModuleUnits`): in this
    process, or on Ray workers, where each trains its module into its folder and marks
    it; the driver reads every module's files afterwards, in a fixed order.
    """
    from xling.io import note
    from xling.harness.training import read_module_text
    from xling.methods.modules_train import text_hash
    from xling.models.loading import load_model
    from xling.harness.executor import LocalExecutor

    ex = executor if executor is not None else LocalExecutor()
    lm = load_model(cfg.model, quiet=True, lazy=True)
    base_fp = lm.fingerprint
    text = cfg.text or f"unlabeled:{task.name}"
    n_sent = cfg.lang_sentences or cfg.lang_steps * cfg.lang_batch_size
    plan: list[dict] = []  # every module, in the order of the info: role, folder, key, reused (+ unit when trained)
    langs = ([source] if {"lang:src", "task@src"} & needed else []) + (list(targets) if "lang:tgt" in needed else [])
    keys: dict[str, str] = {}
    folders: dict[str, Path] = {}
    for lang in langs:
        sentences = read_module_text(text.replace("{lang}", lang), lang, n_sent)
        hp = {"r": cfg.r, "alpha": cfg.alpha, "steps": cfg.lang_steps, "lr": cfg.lang_lr,
              "batch_size": cfg.lang_batch_size, "max_length": cfg.lang_max_length, "seed": cfg.seed,
              "head_transform": cfg.head_transform}
        recipe = {"v": RECIPE_VERSION, "kind": "language", "base": base_fp, "lang": lang, "text": text,
                  "data": text_hash(sentences), "hparams": hp}
        key = _key(recipe)
        folder = mdir / f"lang-{lang}"
        role = f"lang:{lang}"
        keys[role], folders[role] = key, folder
        t0 = time.perf_counter()
        item = {"role": role, "folder": folder, "key": key, "reused": cfg.cache and _reusable(folder, key),
                "sentences": len(sentences)}
        if item["reused"]:
            item["seconds"] = round(time.perf_counter() - t0, 1)
            _log(f"language module {lang}: reusing {folder}", cfg.progress)
        else:
            item["unit"] = {"kind": "language", "role": role, "lang": lang, "source_lang": lang == source,
                            "sentences": sentences, "folder": str(folder), "key": key, "recipe": recipe,
                            "kwargs": dict(r=cfg.r, alpha=cfg.alpha, steps=cfg.lang_steps, lr=cfg.lang_lr,
                                           batch_size=cfg.lang_batch_size, max_length=cfg.lang_max_length,
                                           seed=cfg.seed, name=f"lang-{lang}", head_transform=cfg.head_transform)}
            item["unit"]["log"] = f"language module {lang}: {len(sentences)} sentences, {cfg.lang_steps} steps"
        plan.append(item)
    task_hp = {"epochs": cfg.task_epochs, "lr": cfg.task_lr, "lora_r": cfg.r, "lora_alpha": cfg.alpha,
               "batch_size": cfg.task_batch_size, "max_length": cfg.task_max_length, "seed": cfg.seed}
    roles = [role for role in ("task", "task@src", "task+align") if role in needed]
    if "tt:tgt" in needed:
        roles += [f"tt:{t}" for t in targets]
    for role in roles:
        stacked = f"lang:{source}" if role == "task@src" else None
        lang = role[3:] if role.startswith("tt:") else source
        extra: dict[str, Any] = {}
        recipe = {"v": RECIPE_VERSION, "kind": "task", "base": base_fp, "task": task.name,
                  "data": task.fingerprint("train", lang), "lang": lang, "hparams": task_hp,
                  "stacked_on": keys[stacked] if stacked else None}
        if role == "task+align":
            extra = _alignment_inputs(cfg, task, source, targets)
            recipe["alignment"] = extra["recipe"]
        key = _key(recipe)
        folder = mdir / {"task": "task", "task@src": f"task-on-{source}", "task+align": _align_folder(cfg)}.get(
            role, f"task-tt-{lang}")
        t0 = time.perf_counter()
        item = {"role": role, "folder": folder, "key": key, "reused": cfg.cache and _reusable(folder, key),
                "lang": lang}
        if item["reused"]:
            item["seconds"] = round(time.perf_counter() - t0, 1)
            _log(f"task module {role}: reusing {folder}", cfg.progress)
        else:
            what = (f"on the {source} language module" if stacked else
                    f"with middle-layer alignment at layer {extra['layer']} ({len(extra['pairs'])} pairs)"
                    if role == "task+align" else "translate-train" if role.startswith("tt:") else "on the base")
            kwargs = {}
            if role == "task+align":
                kwargs = {"align_pairs": extra["pairs"], "align_info": extra["info"], "align_layer": extra["layer"],
                          "align_weight": cfg.align_weight, "align_mode": cfg.align_mode}
            item["unit"] = {"kind": "task", "role": role, "lang": lang, "folder": str(folder), "key": key,
                            "recipe": recipe, "hparams": dict(task_hp), "kwargs": kwargs,
                            "language_module": str(folders[stacked]) if stacked else None}
            item["unit"]["log"] = f"task module ({task.name}, {lang}, {what}): {cfg.task_epochs} epoch(s)"
        plan.append(item)

    todo = [item for item in plan if "unit" in item]
    units = [item["unit"] for item in todo]
    if todo:
        remote = ex.name != "local"
        if remote:
            from xling.harness.outputs import worker_model_name

            _log(f"training {len(units)} module(s) on {ex.describe()}", cfg.progress)
            for u in units:  # workers may start in another folder
                u["folder"] = str(Path(u["folder"]).resolve())
                if u.get("language_module"):
                    u["language_module"] = str(Path(u["language_module"]).resolve())
            make = functools.partial(_ModuleUnits, worker_model_name(str(cfg.model)), task, cfg.device, cfg.dtype,
                                     False)
        else:
            worker = _ModuleUnits(cfg.model, task, cfg.device, cfg.dtype, cfg.progress, local=True)
            make = functools.partial(_returns, worker)  # the driver's worker, progress shown
        jobs, index = _module_jobs(units, make)
        if remote:  # in this process, each unit says what it trains as it starts
            for item in todo:
                _log(item["unit"]["log"], cfg.progress)

        def on_result(j, k, value):
            item = todo[index[j][k]]
            for n in value["notes"]:
                note(n)
            item["seconds"] = value["seconds"]
            if remote:
                _log(f"module {item['role']} trained ({value['seconds']:.1f} s)", cfg.progress)

        ex.run(jobs, on_result=on_result)
    info: dict[str, dict] = {}
    for item in plan:
        role, folder = item["role"], item["folder"]
        seconds = item["seconds"]
        if role.startswith("lang:"):
            meta = json.loads((folder / "xling_module.json").read_text(encoding="utf-8"))
            info[role] = {"path": folder, "key": item["key"], "reused": item["reused"], "seconds": seconds,
                          "loss_before": meta["metrics"].get("eval_loss_before"),
                          "loss_after": meta["metrics"].get("eval_loss_after"), "sentences": item["sentences"]}
            continue
        tinfo = json.loads((folder / "xling_train.json").read_text(encoding="utf-8"))
        info[role] = {"path": folder, "key": item["key"], "reused": item["reused"], "seconds": seconds,
                      "best_dev": tinfo.get("best_dev"), "steps": tinfo.get("steps"), "lang": item["lang"],
                      "lr": tinfo.get("hparams", {}).get("lr"),
                      "train_seconds": tinfo.get("train_seconds"), "train_examples": tinfo.get("train_examples")}
        if tinfo.get("alignment"):
            a = tinfo["alignment"]
            info[role]["alignment"] = {k: a.get(k) for k in ("layer", "pairs", "weight", "mode", "steps",
                                                             "final_loss", "data")}
    return info


def _align_folder(cfg: TransferConfig) -> str:
    """``task-align``, or with non-default alignment settings a name that says them (variants sit side by side)."""
    parts = []
    if str(cfg.align_layer) != "auto":
        parts.append(f"L{cfg.align_layer}")
    if cfg.align_weight != 1.0:
        parts.append(f"w{cfg.align_weight:g}")
    if cfg.align_mode != "alternate":
        parts.append(cfg.align_mode)
    if cfg.align_max_pairs != 4000:
        parts.append(f"p{cfg.align_max_pairs}")
    if cfg.align_data is not None:
        parts.append(hashlib.sha256(str(cfg.align_data).encode()).hexdigest()[:6])
    return "task-align" + "".join(f"-{p}" for p in parts)


def _alignment_inputs(cfg: TransferConfig, task, source: str, targets: list[str]) -> dict:
    """Pairs, layer and recipe of the ``task+align`` module (checked against the task's dev/test items)."""
    from xling.methods.train import check_align_pairs, pairs_hash
    from xling.harness.alignment import resolve_align_layer
    from xling.harness.sources import load_align_corpus, read_align_pairs

    spec = cfg.align_data or DEFAULT_ALIGN_DATA.get(task.name)
    if spec is None:
        raise XlingError(f"condition align needs parallel text: pass --align-data (task {task.name} has no built-in one)")
    corpus = load_align_corpus(spec, source, targets)  # once, for the pairs and the auto layer
    pairs, info = read_align_pairs(spec, source, targets, cfg.align_max_pairs, cfg.seed, corpus=corpus)
    # the built-in text leaves out the default task's dev/test verses by construction; with other task
    # options (sizes, seed) a few may remain, and those are dropped (with a note), not refused
    builtin = cfg.align_data is None
    pairs = check_align_pairs(pairs, task, cfg.align_drop_overlap or builtin, where=f"--align-data {spec}")
    layer, layer_info = resolve_align_layer(cfg.align_layer, cfg.model, spec, source, targets, device=cfg.device,
                                            dtype=cfg.dtype, corpus=corpus)
    info["layer_rule"] = layer_info
    recipe = {"data": spec, "pairs": pairs_hash(pairs), "layer": layer, "weight": cfg.align_weight,
              "mode": cfg.align_mode}
    return {"pairs": pairs, "info": info, "layer": layer, "recipe": recipe}


# ----------------------------------------------------------------------------- evaluation


class _Bench:
    """The base task model in memory; each composition restores the base weights first."""

    def __init__(self, cfg: TransferConfig, task, task_folder: Path):
        import torch

        from xling.methods.train import build_task_model
        from xling.models.loading import load_model, resolve_device, resolve_dtype

        self.cfg = cfg
        lm = load_model(cfg.model, quiet=True, lazy=True)
        dev = resolve_device(cfg.device)
        info = json.loads((task_folder / "xling_train.json").read_text(encoding="utf-8"))
        self.tokenizer = lm.tokenizer
        self.model = build_task_model(lm.path, task.type, task.labels, self.tokenizer,
                                      resolve_dtype(cfg.dtype, dev)).to(dev)
        self.model.eval()
        self.max_length = int(info.get("hparams", {}).get("max_length", cfg.task_max_length))
        self.pristine = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.torch = torch

    def set(self, inputs: list[Path], method: str, weights, options) -> None:
        from safetensors.torch import load_file

        from xling.modules.trained import HEAD_FILE
        from xling.modules.apply import compose_into

        self.model.load_state_dict(self.pristine)
        head = load_file(str(inputs[0] / HEAD_FILE))
        res = self.model.load_state_dict(head, strict=False)
        if res.unexpected_keys:
            raise XlingError(f"{inputs[0]}/{HEAD_FILE}: unexpected tensors {res.unexpected_keys[:3]}")
        compose_into(self.model, inputs, method, weights, options)

    def predict(self, examples, progress) -> list:
        from xling.tasks.encode import predict

        with self.torch.inference_mode():
            return predict(self.model, self.tokenizer, "classification", examples, self.cfg.batch_size,
                           self.max_length, progress)


def run_transfer(config: TransferConfig | None = None, *, task=None, executor=None, **kwargs) -> TransferResult:
    """Run the modular transfer experiment; see the module docstring.

    The run owns ``--out`` (where it trains and reuses its modules) from start to
    end: a second run into the same folder is refused with one line.

    ``executor`` (:mod:`xling.harness.executor`) overrides the one ``config.executor``
    names: with ``ray`` the modules to train (each language module, each task module)
    are units trained on Ray workers, each into its folder, marked there as soon as
    it is complete; the driver reads them, evaluates every condition in this process
    (one base model in memory, the dev choices in order) and writes the outputs and
    the store.
    """
    from xling.io import check_output_target, mark_output, output_lock
    from xling.harness.executor import make_executor

    cfg = config if config is not None else TransferConfig(**kwargs)
    # a file, the cache or a user's own folder: refused before any work. The folder is written incrementally
    # (its modules are the resume cache), so it is not swapped whole: it is marked as xling's at the start
    check_output_target(cfg.out, overwrite=cfg.overwrite, command="transfer")
    ex = executor if executor is not None else make_executor(  # a missing ray fails now, before anything is read
        cfg.executor, address=cfg.ray_address, workers=cfg.ray_workers, threads=cfg.threads or 1)
    with output_lock(cfg.out, wait=False):
        check_output_target(cfg.out, overwrite=cfg.overwrite, command="transfer")
        mark_output(cfg.out, "transfer")
        return _run_transfer(cfg, task, ex)


def _run_transfer(config: TransferConfig, task, executor=None) -> TransferResult:
    import torch

    from xling.harness.scores import PredictionCache, prediction_problem
    from xling.harness.store import items_hash
    from xling.tasks.metrics import main_metric, task_metrics
    from xling.tasks.registry import load_task

    cfg = config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.store is not None:  # an unusable store fails now, not after the run
        from xling.harness.store import ResultsStore

        ResultsStore(cfg.store).check()
    task = load_task(task if task is not None else cfg.task, **(cfg.task_options or {}))
    if task.type != "classification":
        raise XlingError(f"xling transfer runs classification tasks; {task.name} is {task.type}")
    source = task.resolve_lang(cfg.source_lang, "test") if cfg.source_lang else task.source_lang
    wanted = cfg.langs if cfg.langs is not None else \
        [t for t in TASK_TARGETS.get(task.name, DEFAULT_TARGETS) if t in task.data.get("test", {})] or \
        [t for t in task.langs("test") if t != source][:5]
    targets = []
    for code in wanted:
        lang = task.resolve_lang(code, "test")
        if lang == source:
            raise XlingError(f"{code} is the source language ({source}); name target languages only")
        if lang not in targets:
            targets.append(lang)
    if not targets:
        raise XlingError("no target languages")
    notes: list[str] = []
    names = list(cfg.conditions) if cfg.conditions is not None else list(CONDITIONS)
    if cfg.conditions is None:  # the default set: drop what this task cannot support, with a note
        if not all(task.data.get("train", {}).get(t) for t in targets):
            names.remove("translate-train")
            notes.append(f"translate-train skipped: task {task.name} has no training data in every target language")
        if cfg.align_data is None and task.name not in DEFAULT_ALIGN_DATA:
            names.remove("align")
            notes.append(f"align skipped: task {task.name} has no built-in parallel text; pass --align-data")
    elif "translate-train" in names:
        for t in targets:
            if not task.data.get("train", {}).get(t):
                raise XlingError(f"translate-train needs gold translations of the training set: task {task.name} "
                                 f"has no training data in {t}")
    for n in notes:
        _log(n, cfg.progress)
    conds = [CONDITIONS[c] for c in names]
    needed = {role for c in conds for role in c.inputs}
    out = Path(cfg.out)
    mdir = Path(cfg.modules_dir) if cfg.modules_dir is not None else out / "modules"
    mdir.mkdir(parents=True, exist_ok=True)
    _log(f"{task.name}: source {source}, targets {', '.join(targets)}; conditions {', '.join(names)}",
         cfg.progress)
    t_mod = time.perf_counter()
    modules = _train_modules(cfg, task, source, targets, mdir, needed, executor)
    t_mod = time.perf_counter() - t_mod
    paths = {role: m["path"] for role, m in modules.items()}
    if "lang:src" in needed:
        paths["lang:src"] = paths[f"lang:{source}"]
    fps = {str(m["path"]): module_fingerprint(m["path"]) for m in modules.values()}
    from xling.modules.lora import LoraModule

    for m in modules.values():
        m["dw_norm"] = round(LoraModule(m["path"]).delta_norm(), 4)
    n_layers = None
    if any(c.choice == "swap" for c in conds) and cfg.swap == "auto":
        from transformers import AutoConfig

        from xling.models.layers import num_layers
        from xling.models.loading import load_model

        n_layers = num_layers(AutoConfig.from_pretrained(load_model(cfg.model, quiet=True, lazy=True).path))

    examples = {}
    for lang in [source, *targets]:
        ex = task.examples("test", lang)
        examples[lang] = ex[: cfg.max_test] if cfg.max_test else ex
    dev_examples: dict[str, list] = {}
    if any(c.choice for c in conds):
        for lang in ([source] if cfg.select_on == "source-dev" else targets):
            if not (task.data.get("dev") or {}).get(lang):
                raise XlingError(f"--select-on {cfg.select_on}: task {task.name} has no dev data in {lang}"
                                 + ("; pass --lambda and --swap B,T,W to fix the choices" if lang == source else ""))
            ex = task.examples("dev", lang)
            dev_examples[lang] = ex[: cfg.max_dev] if cfg.max_dev else ex
    cache = PredictionCache()  # cfg.cache False (--no-cache): recompute, and write over the entries
    state = {"bench": None, "current": None, "predicted": 0, "total": 0}

    def candidates(c: Condition) -> list:
        if c.choice == "lambda":
            return list(cfg.lambdas)
        if c.choice == "swap":
            return swap_grid(n_layers) if cfg.swap == "auto" else [tuple(cfg.swap)]
        return [None]

    def predictions(c: Condition, choice, tgt, lang: str, split: str, ex: list, bar) -> list:
        inputs, weights, options = _resolve_condition(c, cfg, paths, tgt, choice)
        spec_base = {"transfer": RECIPE_VERSION, "base": modules[c.inputs[0].replace("tt:tgt", f"tt:{tgt}")]["key"],
                     "method": c.method, "inputs": [fps[str(p)] for p in inputs], "weights": weights,
                     "options": options, "max_length": cfg.task_max_length, "task": task.name}
        key = PredictionCache.key({**spec_base, "data": task.fingerprint(split, lang), "lang": lang,
                                   "n": len(ex), **({"split": split} if split != "test" else {})})
        got = cache.get(key, functools.partial(prediction_problem, task.type, task.labels, ex)) if cfg.cache else None
        if got is None:
            if state["bench"] is None:
                state["bench"] = _Bench(cfg, task, paths.get("task", paths.get("task@src", paths.get("task+align"))))
            comp = json.dumps([str(p) for p in inputs] + [c.method, weights, options], default=str)
            if state["current"] != comp:
                state["bench"].set(inputs, c.method, weights, options)
                state["current"] = comp
            if bar is not None:
                bar.set_description(f"{c.name} {lang} {split}")
            got = state["bench"].predict(ex, bar.update if bar is not None else None)
            state["predicted"] += len(ex)
            cache.put(key, got, {"condition": c.name, "lang": lang, "split": split, **spec_base})
        elif bar is not None:
            bar.update(len(ex))
        state["total"] += len(ex)
        return got

    def accuracy(preds, ex) -> float:
        return sum(int(p == e.label) for p, e in zip(preds, ex)) / max(1, len(ex))

    # the plan: per condition, the evaluation languages and (per target) the candidates to choose among on dev
    total = 0
    for c in conds:
        n_cand = len(candidates(c))
        if c.per_target:
            for t in targets:
                total += len(examples[t])
                if n_cand > 1:
                    total += n_cand * len(dev_examples[source if cfg.select_on == "source-dev" else t])
        else:
            total += sum(len(examples[lang]) for lang in [source, *targets])
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="ex", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    t_eval = time.perf_counter()
    preds: dict[tuple[str, str], list[int]] = {}
    choices: list[dict] = []
    try:
        for c in conds:
            if not c.per_target:
                for lang in [source, *targets]:
                    preds[(c.name, lang)] = predictions(c, None, None, lang, "test", examples[lang], bar)
                continue
            for t in targets:
                cands = candidates(c)
                chosen = cands[0]
                if len(cands) > 1:
                    dev_lang = source if cfg.select_on == "source-dev" else t
                    scored = []
                    for cand in cands:
                        p = predictions(c, cand, t, dev_lang, "dev", dev_examples[dev_lang], bar)
                        scored.append((accuracy(p, dev_examples[dev_lang]), cand))
                    chosen, tied = pick_on_dev(scored, c.choice)
                    choices.append({"condition": c.name, "lang": t, "chosen": chosen, "split": f"dev:{dev_lang}",
                                    "candidates": [{"value": cand, "dev": round(v, 6)} for v, cand in scored]})
                    if len(tied) > 1:
                        choices[-1]["tied"] = tied
                        notes.append(f"{c.name} {t}: dev tie ({dev_lang} accuracy {max(v for v, _ in scored):.3f}) "
                                     f"between {c.choice} {', '.join(_fmt_choice(x) for x in tied)}; chose "
                                     f"{_fmt_choice(chosen)} ({TIE_RULES[c.choice]})")
                elif c.choice:
                    choices.append({"condition": c.name, "lang": t, "chosen": chosen, "split": "fixed",
                                    "candidates": []})
                preds[(c.name, t)] = predictions(c, chosen, t, t, "test", examples[t], bar)
    finally:
        if bar is not None:
            bar.close()
    t_eval = time.perf_counter() - t_eval

    metric = main_metric(task.type)
    correct = {(cn, lang): [int(p == e.label) for p, e in zip(v, examples[lang])] for (cn, lang), v in preds.items()}
    ref = "task" if "task" in names else names[0]
    ceiling = "translate-train" if "translate-train" in names else None
    stats = bootstrap_study({c.name: [correct[(c.name, t)] for t in targets] for c in conds}, ref, ceiling,
                            cfg.bootstrap, cfg.seed)
    rows = []
    for c in conds:
        for lang in [source, *targets]:
            if (c.name, lang) not in preds:
                continue
            gold = [e.label for e in examples[lang]]
            scores = task_metrics(task.type, task.labels, gold, preds[(c.name, lang)])
            row = {"lang": lang, "role": "source" if lang == source else "target", "condition": c.name,
                   "n": len(gold), **{k: round(float(v), 6) for k, v in scores.items()}}
            if lang != source:
                j = targets.index(lang)
                st = stats[c.name]
                row.update({"delta": round(st["lang_delta"][j], 6),
                            "delta_lo": None if st["lang_lo"][j] is None else round(st["lang_lo"][j], 6),
                            "delta_hi": None if st["lang_hi"][j] is None else round(st["lang_hi"][j], 6)})
            rows.append(row)
    summary = []

    def r6(v):
        return None if v is None else round(v, 6)

    for c in conds:
        accs = [next(r[metric] for r in rows if r["condition"] == c.name and r["lang"] == t) for t in targets]
        st = stats[c.name]
        src = next((r[metric] for r in rows if r["condition"] == c.name and r["lang"] == source), None)
        summary.append({"condition": c.name, "description": c.description, "method": c.method,
                        f"mean_target_{metric}": round(sum(accs) / len(accs), 6),
                        f"source_{metric}": src, "reference": ref, "ceiling": ceiling,
                        "delta": r6(st["delta"]), "delta_lo": r6(st["delta_lo"]), "delta_hi": r6(st["delta_hi"]),
                        "gap_closed": r6(st["gap_closed"]), "gap_closed_lo": r6(st["gap_closed_lo"]),
                        "gap_closed_hi": r6(st["gap_closed_hi"])})
    warnings = honesty_warnings(summary, {c.name: [correct[(c.name, t)] for t in targets] for c in conds},
                                len(task.labels), metric)
    for w in warnings:
        print(f"xling: warning: {w}", file=sys.stderr, flush=True)
    result = TransferResult(
        rows=rows, summary=summary, source=source, targets=targets, conditions=names, warnings=warnings,
        modules={role: {k: (str(v) if isinstance(v, Path) else v) for k, v in m.items()} for role, m in modules.items()},
        metric=metric, run_id=uuid.uuid4().hex[:12],
        timings={"modules_s": round(t_mod, 1), "eval_s": round(t_eval, 1),
                 "total_s": round(time.perf_counter() - t0, 1), "examples": state["total"],
                 "predicted": state["predicted"], "modules_trained": sum(not m["reused"] for m in modules.values())},
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in NOT_RECORDED},
        choices=choices, notes=notes,
        items=[{"condition": cn, "lang": lang, "ids_hash": items_hash(examples[lang]), "correct": v}
               for (cn, lang), v in correct.items()],
    )
    result.config["started"] = started
    _write(result, cfg, task)
    return result


# ----------------------------------------------------------------------------- outputs


def format_table(result: TransferResult, metric: str | None = None) -> str:
    """Plain-text table: one row per language, one column per condition, plus the mean over targets."""
    m = metric or result.metric
    names = result.conditions
    width = max(8, *(len(n) for n in names))
    head = f"{'language':<10}" + "".join(f"{n:>{width + 1}}" for n in names)
    lines = [head, "-" * len(head)]
    for lang in [result.source, *result.targets]:
        cells = []
        for n in names:
            try:
                cells.append(f"{result.score(n, lang, m):>{width + 1}.3f}")
            except KeyError:
                cells.append(f"{'-':>{width + 1}}")
        tag = " (src)" if lang == result.source else ""
        lines.append(f"{(lang[:3] + tag):<10}" + "".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'mean tgt':<10}" + "".join(f"{result.mean(n, m):>{width + 1}.3f}" for n in names))
    ref = result.summary[0]["reference"] if result.summary else None
    deltas = []
    for s in result.summary:
        if s["delta_lo"] is None:
            deltas.append(f"{'-':>{width + 1}}")
        else:
            deltas.append(f"{s['delta']:>+{width + 1}.3f}")
    lines.append(f"{'vs ' + str(ref):<10}" + "".join(deltas))
    if any(s.get("gap_closed") is not None for s in result.summary):
        cells = [f"{'-':>{width + 1}}" if s.get("gap_closed") is None else f"{s['gap_closed']:>+{width + 1}.2f}"
                 for s in result.summary]
        lines.append(f"{'gap closed':<10}" + "".join(cells))
    for n in result.notes:
        lines.append(f"note: {n}")
    for w in getattr(result, "warnings", None) or []:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def render_report(result: TransferResult, task) -> str:
    """The HTML report (:func:`xling.recipes.transfer.report.render_transfer_report`)."""
    from xling.recipes.transfer.report import render_transfer_report

    return render_transfer_report(result, task)


def _write(result: TransferResult, cfg: TransferConfig, task) -> None:
    from xling.io import atomic_write_text
    from xling.harness.outputs import rows_to_csv

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    m = result.metric
    atomic_write_text(out / "transfer.csv", rows_to_csv(result.rows, ["lang", "role", "condition", "n", "accuracy",
                                                               "macro_f1", "delta", "delta_lo", "delta_hi"]))
    atomic_write_text(out / "summary.csv", rows_to_csv(result.summary, ["condition", "method", f"mean_target_{m}",
                                                                  f"source_{m}", "reference", "delta", "delta_lo",
                                                                  "delta_hi", "ceiling", "gap_closed",
                                                                  "gap_closed_lo", "gap_closed_hi", "description"]))
    atomic_write_text(out / "report.html", render_report(result, task))
    run = {"run_id": result.run_id, "command": "transfer", "source": result.source, "targets": result.targets,
           "conditions": result.conditions, "summary": result.summary, "modules": result.modules,
           "timings": result.timings, "config": result.config, "choices": result.choices, "notes": result.notes,
           "warnings": result.warnings, "rows": result.rows, "table": format_table(result)}
    atomic_write_text(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    if cfg.store is not None:
        from xling import __version__
        from xling.harness.store import ResultsStore, item_row

        Path(cfg.store).parent.mkdir(parents=True, exist_ok=True)
        scores = [{"model": f"transfer:{r['condition']}", "task": task.name, "lang": r["lang"], "split": "test",
                   "metric": k, "value": r[k]} for r in result.rows for k in ("accuracy", "macro_f1") if k in r]
        ResultsStore(cfg.store).add_run(
            {"run_id": result.run_id, "command": "transfer", "model": cfg.model, "corpus": task.name,
             "config": result.config, "started": result.config.get("started"),
             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "xling_version": __version__},
            task_scores=scores,
            items=[item_row(f"transfer:{x['condition']}", task.name, x["lang"], "test", x["ids_hash"], x["correct"])
                   for x in result.items])


def run_transfer_seeds(config: TransferConfig, seeds: Sequence[int], *, task=None,
                       executor=None) -> tuple[list[tuple[int, TransferResult]], list[dict]]:
    """``--seeds``: the whole experiment once per seed (every module trained with that seed), each in ``OUT/seed-<s>``
    (modules in ``OUT/seed-<s>/modules``, or ``MODULES_DIR/seed-<s>``), then per condition the mean over seeds of the
    mean target score and of the difference to the reference, with the sd across seeds next to the mean of the
    seeds' paired-bootstrap intervals (:func:`xling.harness.seeds.spread`); written to ``OUT/seeds.csv`` and
    ``OUT/seeds.json`` (with the per-language rows). Returns the per-seed results and the per-condition rows.
    """
    import dataclasses

    from xling.io import check_output_target, mark_output
    from xling.harness.seeds import run_seeds, spread, write_spread

    cfg = config
    check_output_target(cfg.out, overwrite=cfg.overwrite, command="transfer")
    mark_output(cfg.out, "transfer")

    def one(seed, out):
        mods = None if cfg.modules_dir is None else Path(cfg.modules_dir) / f"seed-{seed}"
        return run_transfer(dataclasses.replace(cfg, seed=seed, out=out, modules_dir=mods), task=task,
                            executor=executor)

    done = run_seeds(seeds, one, cfg.out, progress=cfg.progress)
    metric = done[0][1].metric
    mean = f"mean_target_{metric}"
    rows = spread([(s, r.summary) for s, r in done], ["condition"], [mean, "delta"],
                  bounds={"delta": ("delta_lo", "delta_hi")})
    lang_rows = spread([(s, [x for x in r.rows if x["role"] == "target"]) for s, r in done], ["lang", "condition"],
                       [metric, "delta"], bounds={"delta": ("delta_lo", "delta_hi")})
    warnings = {s: r.warnings for s, r in done if r.warnings}
    write_spread(cfg.out, rows, ["condition"], [mean, "delta"], seeds,
                 extra={"metric": metric, "per_language": lang_rows, "warnings": warnings,
                        "runs": {s: r.run_id for s, r in done}})
    return done, rows


def format_seeds(done: list[tuple[int, TransferResult]], rows: list[dict]) -> str:
    """The ``--seeds`` table: per condition each seed's mean target score, mean ± sd, then the difference to the
    reference: mean ± sd across seeds and the mean of the seeds' 95% paired-bootstrap intervals."""
    from xling.harness.seeds import format_spread

    seeds = [s for s, _ in done]
    metric = done[0][1].metric
    ref = done[0][1].summary[0].get("reference") if done[0][1].summary else None
    lines = [format_spread(rows, ["condition"], f"mean_target_{metric}", seeds,
                           title=f"mean target {metric} over {len(seeds)} seeds"), "",
             format_spread(rows, ["condition"], "delta", seeds,
                           title=f"difference to {ref}: across-seed sd next to the mean bootstrap interval")]
    for s, r in done:
        for w in r.warnings:
            lines.append(f"warning (seed {s}): {w}")
    return "\n".join(lines)


__all__ = ["CONDITIONS", "Condition", "TransferConfig", "TransferResult", "run_transfer", "format_table",
           "run_transfer_seeds", "format_seeds", "DEFAULT_TARGETS"]
