"""Stage 2 of ``xling transfer``, the units: language and task modules trained (or reused from their keyed
folders), locally or on Ray, and the alignment inputs of the ``align`` condition.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from xling.errors import XlingError
from xling.recipes.transfer.config import TransferConfig


from xling.recipes.transfer.plan import COLLAPSE, DEFAULT_ALIGN_DATA, RECIPE_VERSION, _key, _log, _mark, _reusable

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
