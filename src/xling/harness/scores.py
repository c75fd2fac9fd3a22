"""Per-language task scores, shared by every recipe that scores a task model on languages.

``xling eval`` makes them by predicting, ``xling probe`` by a linear probe, ``xling matrix`` and
``xling transfer`` reuse the model handle and the prediction cache. Here:

* :class:`EvalResult`, the scores of one model on the languages of a task, and the transfer gap
  (XTREME, Hu et al. 2020);
* :class:`PredictionCache`, predictions per (model, task, language, data, settings), and
  :func:`prediction_problem`, why cached predictions cannot be a task's;
* :class:`TaskModel` (a trained folder or, zero-shot, a decoder) and :func:`check_model`;
* the outputs: ``scores.csv``, ``per_language.csv``, ``run.json``, ``report.html``
  (:mod:`xling.harness.scores_report`), ``predictions.csv`` (each item's prediction, gold label and correctness,
  keyed by its parallel id: :mod:`xling.harness.consistency`) and the results store's ``task_scores``,
  ``item_scores`` and ``predictions``.

A config passed here is any object with the fields of :class:`xling.recipes.eval.run.EvalConfig`
that the function reads (``model``, ``zero_shot``, ``device``, ``dtype``, ``max_length`` ...).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from xling.cache import ContentCache, JsonCodec, content_key
from xling.errors import XlingError
from xling.harness.links import corpus_family
from xling.harness.outputs import rows_to_csv
from xling.harness.scores_report import render_eval_report, wide_rows

PRED_CACHE_VERSION = 2  # 2: whole-file model fingerprints; entries name their key


@dataclass
class ModelSettings:
    """What :class:`TaskModel` and :func:`check_model` read of a config (``EvalConfig`` has these fields too)."""

    model: str
    zero_shot: bool = False
    device: str = "auto"
    dtype: str = "fp32"
    max_length: int | None = None
    batch_size: int = 32
    template: str | None = None
    verbalizers: dict[str, str] | None = None
    normalize: str = "mean"


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
    predictions: dict[str, dict] = field(default_factory=dict)    # lang -> consistency.prediction_record (not tokens)

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


def one_class_warning(task_type: str, labels, preds: list, gold: list | None = None,
                      prompted: bool = False) -> str | None:
    """A line when a model predicts one class for every example of a language, else None. For a trained head
    the hint is the training; for a prompted model (``prompted=True``: harness, in-context) it is the label bias
    of prompting (Zhao et al. 2021), with that class's share of the gold labels when ``gold`` is given."""
    flat = [t for p in preds for t in p] if task_type == "token-classification" else list(preds)
    if len(flat) < 2 or len(labels) < 2 or len(set(map(str, flat))) != 1:
        return None
    only = flat[0]
    share = ""
    if gold is not None and len(gold) == len(preds) and task_type != "token-classification":
        g = sum(str(x) == str(only) for x in gold)
        share = f"; {g} of {len(gold)} gold labels are that {'choice' if task_type == 'multiple-choice' else 'class'}"
    if task_type == "multiple-choice":
        why = "a prompted model's position bias" if prompted else "a degenerate model"
        return f"the model picks choice {only} for all {len(flat)} examples ({why}; its score is chance){share}"
    name = labels[only] if isinstance(only, int) and 0 <= only < len(labels) else only
    what = "words" if task_type == "token-classification" else "examples"
    if prompted:
        return (f"the model predicts {name!r} for all {len(flat)} {what} (one label everywhere: the prompt's "
                f"label bias, Zhao et al. 2021; the accuracy is that label's share, not skill){share}")
    return (f"the model predicts {name!r} for all {len(flat)} {what} (one class everywhere: check the training, "
            f"e.g. the learning rate or label balance){share}")


#: The share of one predicted class above which a classification result is flagged as mostly one class.
DOMINANT_SHARE = 0.9


def dominant_class_note(task_type: str, labels, preds: list, gold: list | None = None,
                        share: float = DOMINANT_SHARE) -> str | None:
    """A line when one class is at least ``share`` of a language's predictions (but not all of them: that is
    :func:`one_class_warning`), with that class's share of the gold labels when given: the accuracy then mostly
    measures how often the test set holds that class. None for token tasks, fewer than 10 items or below
    ``share``."""
    from collections import Counter

    if task_type == "token-classification" or len(preds) < 10 or len(labels or ()) < 2:
        return None
    top, count = Counter(map(str, preds)).most_common(1)[0]
    if count / len(preds) < share or count == len(preds):
        return None
    name = top
    if task_type != "multiple-choice":
        hit = next((p for p in preds if str(p) == top), None)
        name = labels[hit] if isinstance(hit, int) and 0 <= hit < len(labels) else hit
    what = f"choice {top}" if task_type == "multiple-choice" else repr(name)
    text = f"the model predicts {what} for {count} of {len(preds)} items ({100 * count / len(preds):.0f}%)"
    if gold is not None and len(gold) == len(preds):
        g = sum(str(x) == top for x in map(str, gold))
        text += f"; {g} of {len(gold)} gold labels are that class, so the accuracy mostly counts them"
    return text


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


def check_model(cfg):
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
    from xling.modules.trained import _type_from_arch, read_train_info

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


class TaskModel:
    """The model side of an evaluation, loaded only when a language is not cached."""

    def __init__(self, cfg, task, lm=None):
        from xling.modules.trained import _folder_fingerprint, read_train_info

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
                from xling.modules.trained import load_trained

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


def alignment_for(result: EvalResult, store_path: Path) -> dict | None:
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


def write_outputs(result: EvalResult, out: Path, cfg=None, alignment: dict | None = None) -> dict[str, Path]:
    from xling.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = {"scores": out / "scores.csv", "per_language": out / "per_language.csv", "run": out / "run.json",
             "report": out / "report.html"}
    atomic_write_text(paths["scores"], rows_to_csv(result.rows, ["model", "task", "lang", "split", "metric", "value"]))
    wide = wide_rows(result)
    cols = list(wide[0]) if wide else ["lang"]
    atomic_write_text(paths["per_language"], rows_to_csv(wide, cols))
    atomic_write_text(paths["run"], json.dumps(run_record(result, cfg), indent=2, default=str))
    atomic_write_text(paths["report"], render_eval_report(result, alignment))
    if result.predictions:
        from xling.harness.consistency import predictions_csv, predictions_rows

        paths["predictions"] = out / "predictions.csv"
        atomic_write_text(paths["predictions"], predictions_csv(predictions_rows(result.predictions)))
    return paths


def run_record(result: EvalResult, cfg=None) -> dict:
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


def save_to_store(result: EvalResult, path: Path, cfg=None) -> None:
    from xling import __version__
    from xling.harness.consistency import store_rows
    from xling.harness.store import ResultsStore, item_row

    items = [item_row(result.model, result.task, lang, result.split, result.ids_hash[lang], c)
             for lang, c in result.correct.items() if lang in result.ids_hash]
    predictions = store_rows(result.model, result.task, result.split, result.predictions)
    ResultsStore(path).add_run(
        {"run_id": result.run_id, "command": "eval", "model": result.model,
         "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": f"task:{result.task}",
         "corpus_fingerprint": result.meta.get("task_fingerprint"), "config": run_record(result, cfg),
         "started": result.meta.get("started"), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "xling_version": __version__},
        task_scores=result.rows, items=items, predictions=predictions,
    )


__all__ = ["EvalResult", "ModelSettings", "PRED_CACHE_VERSION", "PredictionCache", "TaskModel", "alignment_for", "check_model",
           "corpus_family", "dominant_class_note", "one_class_warning", "prediction_problem", "run_record", "save_to_store", "transfer_gap",
           "write_outputs"]
