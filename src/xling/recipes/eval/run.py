"""The ``eval`` recipe: zero-shot cross-lingual transfer scores and the transfer gap.

A model fine-tuned on the source language (``xling train``) is evaluated on the
test split of every language of a task (XTREME protocol, Hu et al. 2020):
accuracy and macro-F1 for classification, accuracy for multiple choice, entity
F1 (exact spans) for tagging. The transfer gap is

    gap = score(source) - mean over targets != source of score(target)

Decoder LLMs can be evaluated without training (``zero_shot=True``): labels are
scored by their log-likelihood after a prompt (:mod:`xling.tasks.zeroshot`).

Inference is batched and length-sorted. Predictions are cached on disk per
(model fingerprint, task, language, test data, settings), so an interrupted
evaluation resumes with the next unfinished language and a rerun reads the
weights only if something is missing. Outputs, each written atomically, under
``out``: ``scores.csv`` (per language and metric), ``per_language.csv`` (wide),
``report.html`` (table, bar chart, and the alignment-vs-score scatter when the
results store holds an ``align`` run of the same base model on the task's own corpus,
:func:`corpus_family`), ``run.json``; and
the scores go to the results store (``task_scores``; classification and
multiple-choice runs also per-item correctness, ``item_scores``, for paired
intervals in ``xling compare``).

The report and the summary are drawn by :mod:`xling.recipes.eval.report`; the flags of
``xling train|eval|task`` are read by :mod:`xling.cli.eval`.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from xling.cache import ContentCache, JsonCodec, content_key
from xling.errors import XlingError
from xling.recipes.eval.report import (chance_level, format_summary, group_warnings, render_eval_report,  # noqa: F401
                                    wide_rows)
from xling.harness.store import DEFAULT_STORE

DEFAULT_OUT = Path("xling-out") / "eval"
PRED_CACHE_VERSION = 2  # 2: whole-file model fingerprints; entries name their key


@dataclass
class EvalConfig:
    """Everything an evaluation depends on; see :func:`evaluate`."""

    model: str = "xling-out/train/model"
    task: str = "libreoffice-topic"
    langs: list[str] | None = None
    split: str = "test"
    max_examples: int | None = None         # --test-size: the first N examples per language of the split
    source_lang: str | None = None
    batch_size: int = 32
    max_length: int | None = None
    zero_shot: bool = False
    template: str | None = None
    verbalizers: dict[str, str] | None = None
    normalize: str = "mean"
    task_options: dict = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "fp32"
    threads: int | None = None
    out: str | Path | None = DEFAULT_OUT
    store: str | Path | None = DEFAULT_STORE
    cache: bool = True
    progress: bool = True
    executor: str = "local"  # where the languages run: local (this process) or ray (xling.harness.executor)
    ray_address: str | None = None  # executor ray: a running cluster; None starts a local Ray
    ray_workers: int = 2  # executor ray: actors at a time (torch threads each: threads, default 1)
    overwrite: bool = False  # replace a non-empty --out folder that xling did not write

    def __post_init__(self):
        from xling.harness.executor import check_executor, check_workers

        check_executor(self.executor)
        check_workers(self.ray_workers)
        if self.batch_size < 1:
            raise XlingError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_examples is not None and self.max_examples < 1:
            raise XlingError(f"--test-size must be at least 1, got {self.max_examples}")
        if self.max_length is not None and self.max_length < 4:
            raise XlingError(f"--max-length must be at least 4, got {self.max_length}")
        if self.normalize not in ("mean", "sum"):
            raise XlingError(f"--normalize must be mean or sum, got {self.normalize}")


@dataclass
class EvalResult:
    rows: list[dict]
    run_id: str
    model: str
    base_model: str | None
    task: str
    task_type: str
    split: str
    source: str
    langs: list[str]
    n_examples: dict[str, int]
    main_metric: str
    timings: dict
    meta: dict = field(default_factory=dict)
    correct: dict[str, list[int]] = field(default_factory=dict)   # lang -> 0/1 per example (not token tasks)
    ids_hash: dict[str, str] = field(default_factory=dict)        # lang -> digest of its examples, in order

    def score(self, lang: str, metric: str | None = None) -> float:
        metric = metric or self.main_metric
        for r in self.rows:
            if r["lang"] == lang and r["metric"] == metric:
                return r["value"]
        raise KeyError((lang, metric))

    def scores(self, metric: str | None = None) -> dict[str, float]:
        metric = metric or self.main_metric
        return {r["lang"]: r["value"] for r in self.rows if r["metric"] == metric}

    def gap(self, metric: str | None = None) -> dict[str, float]:
        """XTREME transfer gap: source score minus the mean over the other languages."""
        return transfer_gap(self.scores(metric), self.source)


def _say_estimate(cfg, handle, table, langs, total) -> None:
    """One line before inference: its rough duration (:mod:`xling.engine.estimate`), when the model's size is
    known from its config (the base model's, or the trained folder's ``config.json``)."""
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    config = getattr(getattr(handle, "lm", None), "config", None)
    if config is None:
        try:
            config = json.loads((Path(cfg.model).expanduser() / "config.json").read_text())
        except (OSError, ValueError):
            return
    params = model_params(config)
    if params <= 0:
        return
    def passes(e):  # what the model reads: the text (and pair, or words), once per choice for multiple choice
        text = " ".join(x for x in (e.text, e.text_pair, " ".join(e.tokens or [])) if x)
        return [text + " " + c for c in e.choices] if e.choices else [text]

    texts = (t for lang in langs for e in table[lang] for t in passes(e))
    device = "cpu" if str(cfg.device) in ("auto", "cpu") and not _cuda() else str(cfg.device)
    load = current_load()
    secs = estimate_seconds(count_tokens(texts, handle.max_length), forward_params(config), device=device, load=load)
    say(estimate_line("eval", model=handle.name, params=params, seconds=secs, device=device, langs=len(langs),
                      texts=total, text_word="example", note="(less where predictions are cached)", load=load))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def one_class_warning(task_type: str, labels, preds: list) -> str | None:
    """A line when a model predicts one class for every example of a language (a collapsed head), else None."""
    flat = [t for p in preds for t in p] if task_type == "token-classification" else list(preds)
    if len(flat) < 2 or len(labels) < 2 or len(set(map(str, flat))) != 1:
        return None
    only = flat[0]
    if task_type == "multiple-choice":
        return f"the model picks choice {only} for all {len(flat)} examples (a degenerate model; its score is chance)"
    name = labels[only] if isinstance(only, int) and 0 <= only < len(labels) else only
    what = "words" if task_type == "token-classification" else "examples"
    return (f"the model predicts {name!r} for all {len(flat)} {what} (one class everywhere: check the training, "
            f"e.g. the learning rate or label balance)")


def transfer_gap(scores: dict[str, float], source: str) -> dict[str, float]:
    """``{"source", "mean_target", "gap", "n_targets"}`` (Hu et al. 2020)."""
    if source not in scores:
        raise XlingError(f"no score for the source language {source}; evaluate it too to get the transfer gap")
    targets = [v for k, v in scores.items() if k != source]
    mean_t = sum(targets) / len(targets) if targets else float("nan")
    return {"source": scores[source], "mean_target": mean_t, "gap": scores[source] - mean_t, "n_targets": len(targets)}


# ----------------------------------------------------------------------------- prediction cache


class PredictionCache(ContentCache):
    """Predictions per (model, task, language, data, settings) as small JSON files, ``<key[:2]>/<key>.json`` under
    ``root`` (:class:`~xling.cache.JsonCodec`: each names its key and the sha256 of its predictions)."""

    def __init__(self, root: str | Path | None = None):
        from xling.io import cache_dir

        super().__init__(root if root is not None else cache_dir("predictions"), JsonCodec("predictions"),
                         PRED_CACHE_VERSION, name="prediction")

    @staticmethod
    def key(spec: dict) -> str:
        return content_key({"v": PRED_CACHE_VERSION, **spec})

    def get(self, key: str, valid: Callable[[list], str | None] | None = None) -> list | None:
        """The cached predictions, or None when absent or not to be trusted.

        An entry is used only if it holds the sha256 of its predictions and they
        match it, and ``valid(predictions)`` (the number of predictions, each a label
        or choice of the task) names no problem. Anything else (an edited file, a
        label out of range, a folder in its place, an entry whose recorded key is not
        ``key``: copied or renamed from another key's path) is discarded with a
        one-line note and recomputed by the caller; an entry of an older xling (no
        key) is recomputed with one note per run.
        """
        return super().get(key, valid=valid)


def _is_index(v, n: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n


def prediction_problem(task_type: str, labels, examples, preds) -> str | None:
    """Why ``preds`` cannot be predictions of ``examples`` (wrong count, label out of range), or None."""
    if not isinstance(preds, list) or len(preds) != len(examples):
        return f"holds {len(preds) if isinstance(preds, list) else 'no'} predictions for {len(examples)} examples"
    n = len(labels)
    for i, (e, p) in enumerate(zip(examples, preds)):
        if task_type == "token-classification":
            tokens = getattr(e, "tokens", None)
            if not isinstance(p, list) or (tokens is not None and len(p) != len(tokens)) \
                    or not all(_is_index(t, n) for t in p):
                return f"has tags out of range for example {i}"
        elif task_type == "multiple-choice":
            choices = getattr(e, "choices", None)
            if not _is_index(p, len(choices) if choices is not None else 1 << 62):
                return f"has a choice out of range for example {i}"
        elif not _is_index(p, n):
            return f"has a label out of range for example {i} ({p!r}; the task has {n} labels)"
    return None


# ----------------------------------------------------------------------------- model handle


def check_model(cfg: EvalConfig):
    """Check ``--model`` before the task is loaded (building a task may take many minutes).

    Zero-shot: the decoder's config and tokenizer are loaded (returned, lazily, for the
    evaluation). Trained: the folder exists and holds a readable config or
    ``xling_train.json`` and a task head. Problems are one-line :class:`XlingError`.
    """
    if cfg.zero_shot:
        from xling.models.loading import load_model

        lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, quiet=True, lazy=True)
        if not lm.is_decoder:
            raise XlingError(
                f"--zero-shot scores labels by log-likelihood and needs a decoder LLM; {cfg.model} is an encoder")
        return lm
    from xling.methods.train import _type_from_arch, read_train_info

    folder = Path(cfg.model).expanduser()
    if not folder.is_dir():
        raise XlingError(
            f"trained model not found: {folder} (train one with xling train, or pass --zero-shot with a decoder)")
    info = read_train_info(folder) or {}
    if info.get("method") in ("lora", "merged"):
        if not isinstance(info.get("labels"), list) or not info.get("task_type"):
            raise XlingError(f"{folder}/xling_train.json: no task_type or labels; train the model again")
        return None
    if not (folder / "config.json").is_file():
        mark = next((m for m in ("xling_module.json", "adapter_config.json", "xling_sft.json") if (folder / m).is_file()),
                    None)
        if mark:
            raise XlingError(f"{folder} is a module without a task head ({mark}, no xling_train.json): train a task "
                             f"module on it (xling train-module --kind task --language-module {folder}) and evaluate that")
        raise XlingError(f"{folder}: no config.json (not a model folder; train one with xling train)")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is the user's file
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise XlingError(f"{folder}/config.json: cannot be read ({type(exc).__name__}: {first})") from None
    if not (info.get("task_type") or _type_from_arch(config)):
        raise XlingError(f"{folder}: not a task model (no task head; train one with xling train, or use --zero-shot)")
    return None


class _Model:
    """The model side of an evaluation, loaded only when a language is not cached."""

    def __init__(self, cfg: EvalConfig, task, lm=None):
        from xling.methods.train import _folder_fingerprint, read_train_info

        self.cfg = cfg
        self.task = task
        self._loaded = None
        if cfg.zero_shot:
            self.lm = lm if lm is not None else check_model(cfg)
            self.info = {}
            self.fingerprint = self.lm.fingerprint
            self.name = cfg.model
            self.base_model = cfg.model
            self.task_type = task.type
            self.labels = task.labels
            self.max_length = cfg.max_length or 256
        else:
            folder = Path(cfg.model).expanduser()
            if not folder.is_dir():
                raise XlingError(
                    f"trained model not found: {folder} (train one with xling train, or pass --zero-shot with a decoder)")
            self.info = read_train_info(folder) or {}
            self.fingerprint = _folder_fingerprint(folder, self.info.get("base_fingerprint") or "")
            self.name = str(cfg.model)
            self.base_model = self.info.get("base_model")
            self.task_type = self.info.get("task_type")
            self.labels = self.info.get("labels")
            self.max_length = cfg.max_length or int(self.info.get("hparams", {}).get("max_length", 128))
            if self.task_type is not None and self.task_type != task.type:
                raise XlingError(f"{folder} was trained for a {self.task_type} task, but {task.name} is {task.type}")
            if self.labels is not None and list(self.labels) != list(task.labels):
                raise XlingError(f"{folder} was trained with labels {self.labels}, but task {task.name} has {task.labels}")

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _load(self):
        if self._loaded is None:
            if self.cfg.zero_shot:
                from xling.tasks.zeroshot import load_causal_lm

                model = load_causal_lm(self.lm.path, self.lm.dtype, self.lm.device)
                tok = self.lm.tokenizer
                self._loaded = (model, tok)
            else:
                from xling.methods.train import load_trained

                tm = load_trained(self.cfg.model, self.cfg.device, self.cfg.dtype)
                if list(tm.labels) != list(self.task.labels):
                    raise XlingError(
                        f"{self.cfg.model} predicts labels {tm.labels}, but task {self.task.name} has {self.task.labels}")
                if tm.task_type != self.task.type:
                    raise XlingError(f"{self.cfg.model} is a {tm.task_type} model, but task {self.task.name} is {self.task.type}")
                self._loaded = (tm.model, tm.tokenizer)
        return self._loaded

    def settings(self) -> dict:
        s = {"mode": "zero-shot" if self.cfg.zero_shot else "trained", "max_length": self.max_length}
        if self.cfg.zero_shot:
            s.update({"template": self.cfg.template, "verbalizers": self.cfg.verbalizers, "normalize": self.cfg.normalize})
        return s

    def predict(self, examples, progress) -> list:
        model, tok = self._load()
        if self.cfg.zero_shot:
            from xling.tasks.zeroshot import zero_shot_predict

            return zero_shot_predict(model, tok, self.task.type, self.task.labels, examples, self.cfg.template,
                                     self.cfg.verbalizers, self.cfg.normalize, self.cfg.batch_size, self.max_length,
                                     progress)
        from xling.tasks.encode import predict

        return predict(model, tok, self.task.type, examples, self.cfg.batch_size, self.max_length, progress)


# ----------------------------------------------------------------------------- the units


def _returns(value):
    return value


def _task_stub(task):
    """What a worker needs of the task (name, type, labels): not its data, which the units carry."""
    import dataclasses

    return dataclasses.replace(task, data={}, meta={})


class _EvalUnits:
    """The worker of an evaluation: unit ``(lang, examples, cache key, cache meta)`` -> its predictions.

    Reads the prediction cache (unless ``--no-cache``); otherwise predicts, loading the model
    on first use, and writes the entry (atomic, checksummed). In this process it gets the
    driver's model handle and progress bar; on Ray (picklable) it builds its own handle.
    """

    def __init__(self, cfg: EvalConfig, task, cache_root: str | Path, handle=None, bar=None):
        self.cfg = cfg
        self.task = task
        self.handle = handle if handle is not None else _Model(cfg, task)
        self.cache = PredictionCache(cache_root)
        self.bar = bar

    def __call__(self, unit) -> dict:
        lang, examples, key, meta = unit
        task, bar = self.task, self.bar
        if bar is not None:
            bar.set_description(f"evaluating {lang}")
        check = functools.partial(prediction_problem, task.type, task.labels, examples)
        preds = self.cache.get(key, check) if self.cfg.cache else None
        if preds is not None:
            if bar is not None:
                bar.update(len(examples))
            return {"preds": preds, "cached": True, "infer_s": 0.0, "loaded": self.handle.loaded}
        ti = time.perf_counter()
        preds = self.handle.predict(examples, bar.update if bar is not None else None)
        infer_s = time.perf_counter() - ti
        self.cache.put(key, preds, meta)
        return {"preds": preds, "cached": False, "infer_s": infer_s, "loaded": self.handle.loaded}


# ----------------------------------------------------------------------------- the recipe


def evaluate(config: EvalConfig | None = None, *, task=None, executor=None, **kwargs) -> EvalResult:
    """Evaluate a trained model (or a decoder, zero-shot) on every language of a task.

    Pass an :class:`EvalConfig` or its fields as keywords; ``task`` may be a
    ready :class:`~xling.tasks.core.Task`. ``executor`` (:mod:`xling.harness.executor`)
    overrides the one ``config.executor`` names: with ``ray`` each language's
    predictions are made on a Ray worker (the model loaded once per worker) and
    written to the prediction cache there; the driver reads the cached languages
    itself, computes the scores and writes the outputs and the store.
    """
    import dataclasses

    import torch

    from xling.recipes.align.run import worker_model_name
    from xling.harness.executor import make_executor
    from xling.harness.store import items_hash
    from xling.tasks.metrics import main_metric, task_metrics
    from xling.tasks.registry import load_task

    if task is not None and not hasattr(task, "data"):  # a name or path: a config field
        kwargs["task"], task = str(task), None
    cfg = config if config is not None else EvalConfig(**kwargs)
    ex = executor if executor is not None else make_executor(  # a missing ray fails now, before the task
        cfg.executor, address=cfg.ray_address, workers=cfg.ray_workers, threads=cfg.threads or 1)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="eval")
    if cfg.store is not None:  # an unusable store fails now, not after the run
        from xling.harness.store import ResultsStore

        ResultsStore(cfg.store).check()
    lm = check_model(cfg)  # before the task: a wrong --model must not wait for a task build
    task = task if task is not None else load_task(cfg.task, **cfg.task_options)
    if cfg.max_examples is not None:
        task = task.capped({cfg.split: cfg.max_examples})
    table = task.data.get(cfg.split) or {}
    if not table:
        raise XlingError(f"task {task.name} has no {cfg.split} split")
    t_data = time.perf_counter()
    handle = _Model(cfg, task, lm)
    source = cfg.source_lang or handle.info.get("language") or task.source_lang
    try:
        source = task.resolve_lang(source, cfg.split)
    except XlingError:
        if cfg.source_lang:
            raise
    if cfg.langs is not None:
        langs = []
        for code in cfg.langs:
            lang = task.resolve_lang(code, cfg.split)
            if lang not in langs:
                langs.append(lang)
    else:
        langs = sorted(table, key=lambda x: (x != source, x))
    cache = PredictionCache()  # cfg.cache False (--no-cache): recompute, and write over the entries
    total = sum(len(table[lang]) for lang in langs)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        _say_estimate(cfg, handle, table, langs, total)
        bar = tqdm(total=total, unit="ex", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    rows: list[dict] = []
    n_examples: dict[str, int] = {}
    from_cache = 0
    warned: dict[str, str] = {}
    correct: dict[str, list[int]] = {}
    ids_hash: dict[str, str] = {}
    metric = main_metric(task.type)
    t_infer = 0.0
    units = []
    for lang in langs:
        spec = {"model": handle.fingerprint, "task": task.name, "data": task.fingerprint(cfg.split, lang),
                "lang": lang, **handle.settings()}
        units.append((lang, table[lang], PredictionCache.key(spec),
                      {"model": handle.name, **{k: v for k, v in spec.items() if k != "verbalizers"}}))
    remote = ex.name != "local"
    predicted: dict[str, dict] = {}
    try:
        if not remote:  # in this process: today's loop, the progress bar per batch
            worker = _EvalUnits(cfg, task, cache.root, handle, bar)
            todo = units
        else:  # cached languages are read here; the others go to the workers, each loading the model once
            worker, todo = None, []
            for unit in units:
                lang, examples, key, _ = unit
                check = functools.partial(prediction_problem, task.type, task.labels, examples)
                preds = cache.get(key, check) if cfg.cache else None
                if preds is None:
                    todo.append(unit)
                    continue
                predicted[lang] = {"preds": preds, "cached": True, "infer_s": 0.0, "loaded": False}
                if bar is not None:
                    bar.update(len(examples))
        remote_cfg = dataclasses.replace(cfg, model=worker_model_name(str(cfg.model)), progress=False)
        make = functools.partial(_returns, worker) if worker is not None else \
            functools.partial(_EvalUnits, remote_cfg, _task_stub(task), str(cache.root))

        def on_result(j, u, value):
            predicted[todo[u][0]] = value
            if remote and bar is not None:
                bar.update(len(todo[u][1]))
                bar.set_description(f"evaluating: {len(predicted)}/{len(units)} languages done")

        from xling.harness.executor import Job

        ex.run([Job(make, todo, [f"eval {handle.name}, language {u[0]}" for u in todo])], on_result=on_result)
    finally:
        if bar is not None:
            bar.close()
    for lang in langs:
        value = predicted[lang]
        preds = value["preds"]
        from_cache += value["cached"]
        t_infer += value["infer_s"]
        examples = table[lang]
        gold = [e.tags if task.type == "token-classification" else e.label for e in examples]
        n_examples[lang] = len(examples)
        warning = one_class_warning(task.type, task.labels, preds)
        if warning:
            warned[lang] = warning
        if task.type != "token-classification":  # per-item correctness: classification and multiple choice
            correct[lang] = [int(p == g) for p, g in zip(preds, gold)]
            ids_hash[lang] = items_hash(examples)
        for m, v in task_metrics(task.type, task.labels, gold, preds).items():
            rows.append({"model": handle.name, "task": task.name, "lang": lang, "split": cfg.split,
                         "metric": m, "value": float(v)})
    model_loaded = handle.loaded or any(v["loaded"] for v in predicted.values())
    for warning, wlangs in group_warnings(warned):  # after the progress bar: one line per kind of warning
        print(f"xling: warning: {', '.join(wlangs)}: {warning}", file=sys.stderr)
    t_done = time.perf_counter()
    n_total = sum(n_examples.values())
    result = EvalResult(
        rows=rows, run_id=uuid.uuid4().hex[:12], model=handle.name, base_model=handle.base_model, task=task.name,
        task_type=task.type, split=cfg.split, source=source, langs=langs, n_examples=n_examples, main_metric=metric,
        timings={"data_s": round(t_data - t0, 3), "inference_s": round(t_infer, 3), "total_s": round(t_done - t0, 3),
                 "languages_from_cache": from_cache, "model_loaded": model_loaded,
                 "examples_per_s": round(n_total / t_infer, 1) if t_infer > 0 else None},
        meta={"model_fingerprint": handle.fingerprint, "task_fingerprint": task.fingerprint(cfg.split),
              "settings": handle.settings(), "train_info": {k: v for k, v in handle.info.items() if k != "curve"},
              "dev_curve": handle.info.get("curve"), "started": started, "device": cfg.device,
              "torch": torch.__version__, "labels": task.labels, "warnings": warned},
        correct=correct, ids_hash=ids_hash,
    )
    store_align = _alignment_for(result, Path(cfg.store)) if cfg.store is not None else None
    if cfg.out is not None:
        from xling.io import output_folder

        # built aside and swapped in whole under the output lock: one run's files, never a mix; a failure
        # (a full disk) leaves the earlier folder as it was
        with output_folder(cfg.out, command="eval", overwrite=cfg.overwrite) as tmp:
            write_outputs(result, tmp, cfg, store_align)
    if cfg.store is not None:
        save_to_store(result, Path(cfg.store), cfg)
    return result


# ----------------------------------------------------------------------------- outputs


def _rows_csv(rows: list[dict], columns: list[str]) -> str:
    from xling.recipes.align.run import rows_to_csv

    return rows_to_csv(rows, columns)


def corpus_family(name: str) -> str:
    """The text collection a corpus or task comes from: ``bible:mexa``, ``bible-genre:align`` and
    ``task:bible-genre`` are all ``bible``; ``libreoffice-ui`` and ``libreoffice-topic`` are ``libreoffice``."""
    name = str(name or "").lower()
    if name.startswith("task:"):
        name = name[5:]
    return name.split(":")[0].split("-")[0]


def _alignment_for(result: EvalResult, store_path: Path) -> dict | None:
    """Per-language mean-over-layers alignment (MEXA if present) from the latest align run of the base model on
    the task's own text (``task:<task>`` first, then a corpus of the same collection, :func:`corpus_family`).

    Align runs on other corpora are never joined: then only ``{"note": ...}`` saying which corpora there were."""
    from xling.harness.store import ResultsStore

    if not store_path.is_file() or not result.base_model:
        return None
    store = ResultsStore(store_path)
    runs = [r for r in store.runs("align") if r.get("model") == result.base_model]
    if not runs:
        return None
    preferred = [r for r in runs if r.get("corpus") == f"task:{result.task}"]
    same = [r for r in runs if corpus_family(r.get("corpus")) == corpus_family(result.task)]
    if not (preferred or same):
        others = ", ".join(dict.fromkeys(str(r.get("corpus")) for r in runs))
        return {"note": f"the results store has align runs of {result.base_model} only on other corpora ({others}) "
                        f"than the one task {result.task} is built on; alignment from another corpus is not joined"}
    run = (preferred or same)[-1]
    rows = store.alignment(run["run_id"])
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    if not metrics:
        return None
    metric = "mexa" if "mexa" in metrics else metrics[0]
    per: dict[str, list[float]] = {}
    for r in rows:
        if r["metric"] == metric:
            per.setdefault(r["lang"], []).append(r["value"])
    return {"run_id": run["run_id"], "corpus": run.get("corpus"), "metric": metric,
            "values": {k: sum(v) / len(v) for k, v in per.items()}}


def write_outputs(result: EvalResult, out: Path, cfg: EvalConfig | None = None, alignment: dict | None = None) -> dict[str, Path]:
    from xling.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = {"scores": out / "scores.csv", "per_language": out / "per_language.csv", "run": out / "run.json",
             "report": out / "report.html"}
    atomic_write_text(paths["scores"], _rows_csv(result.rows, ["model", "task", "lang", "split", "metric", "value"]))
    wide = wide_rows(result)
    cols = list(wide[0]) if wide else ["lang"]
    atomic_write_text(paths["per_language"], _rows_csv(wide, cols))
    atomic_write_text(paths["run"], json.dumps(run_record(result, cfg), indent=2, default=str))
    atomic_write_text(paths["report"], render_eval_report(result, alignment))
    return paths


def run_record(result: EvalResult, cfg: EvalConfig | None = None) -> dict:
    try:
        gap = result.gap()
    except XlingError:
        gap = None
    return {
        "run_id": result.run_id, "command": "eval", "model": result.model, "base_model": result.base_model,
        "task": result.task, "task_type": result.task_type, "split": result.split, "source": result.source,
        "langs": result.langs, "n_examples": result.n_examples, "main_metric": result.main_metric,
        "transfer_gap": gap, "timings": result.timings,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()} if cfg else None,
        **{k: v for k, v in result.meta.items() if k != "dev_curve"},
    }


def save_to_store(result: EvalResult, path: Path, cfg: EvalConfig | None = None) -> None:
    from xling import __version__
    from xling.harness.store import ResultsStore, item_row

    items = [item_row(result.model, result.task, lang, result.split, result.ids_hash[lang], c)
             for lang, c in result.correct.items() if lang in result.ids_hash]
    ResultsStore(path).add_run(
        {"run_id": result.run_id, "command": "eval", "model": result.model,
         "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": f"task:{result.task}",
         "corpus_fingerprint": result.meta.get("task_fingerprint"), "config": run_record(result, cfg),
         "started": result.meta.get("started"), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "xling_version": __version__},
        task_scores=result.rows, items=items,
    )


__all__ = ["EvalConfig", "EvalResult", "evaluate", "transfer_gap", "PredictionCache", "render_eval_report",
           "format_summary"]
