"""xling tasks as lm-evaluation-harness tasks: a folder of task YAMLs and JSONL data, nothing fetched.

lm-evaluation-harness (Gao et al. 2024, "The Language Model Evaluation Harness", EleutherAI;
``pip install lm-eval``) reads a task from a YAML config naming its data. :func:`export_harness_task` writes
one xling task (classification or multiple choice: the built-in ``bible-genre``, a task file) as such a folder:

* ``<lang>.jsonl``: the examples of one language of one split, one JSON object a line: ``id`` (the parallel item
  id), ``lang``, ``text`` (and ``text_pair``), ``query`` (the prompt, xling's zero-shot template filled in,
  :data:`xling.tasks.zeroshot.DEFAULT_TEMPLATES`), ``choices`` (the label verbalisations of a classification
  task, the example's own choices for multiple choice) and ``label`` (the gold choice's index);
* ``<lang>.dev.jsonl``: the language's dev examples where the task has them, the harness's ``fewshot_split``
  (few-shot demonstrations, ``--harness-fewshot N``, never drawn from the scored split);
* ``<lang>.yaml``: a ``multiple_choice`` task ``xling_<task>_<lang>`` on the harness's local ``json`` loader
  (``dataset_path: json``, ``data_files`` by absolute path), ``doc_to_text: query``, ``doc_to_choice:
  choices``, ``doc_to_target: label``, metrics ``acc`` and ``acc_norm``;
* ``_group.yaml``: the group ``xling_<task>`` of every language (accuracy averaged over languages, unweighted);
* ``xling_harness.json``: what xling needs to map the harness's per-sample output back to items (the group and
  task names, each task's language, the labels, the type, the split, each language's item digest).

The harness scores ``query + " " + choice`` by log-likelihood: the prediction of ``acc`` is the choice with the
largest summed log-probability, which is xling's zero-shot scorer (:func:`xling.tasks.zeroshot.label_loglik`) with
``normalize="sum"``, on the same prompts. YAML files are written as one ``key: JSON value`` a line (JSON is
YAML's flow style). ``trust_remote_code`` and ``!function`` tags are never used.

A generation task (the built-in ``bible-mt``, a task file with ``target`` fields) becomes one ``generate_until``
task per unit instead (a translation direction, ``deu_Latn:en-x``, or a task file's language), its documents
holding the k-shot prompt of xling's own generation eval (:mod:`xling.tasks.generation`) and the reference; the
harness generates greedily up to a newline and reports corpus ``chrf`` and ``bleu``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from xling.errors import XlingError
from xling.tasks.core import Task

#: ``xling_harness.json``'s format tag.
FORMAT = "xling-harness/1"
MANIFEST = "xling_harness.json"
GROUP_FILE = "_group.yaml"


def harness_name(task_name: str) -> str:
    """The harness group name of an xling task: ``bible-genre`` -> ``xling_bible_genre``."""
    stem = re.sub(r"[^0-9A-Za-z]+", "_", str(task_name)).strip("_").lower() or "task"
    return f"xling_{stem}"


def _yaml(cfg: dict) -> str:
    """``key: <JSON>`` lines: valid YAML (JSON is YAML's flow style), readable, no YAML library needed."""
    return "".join(f"{k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in cfg.items())


def harness_docs(task: Task, split: str, lang: str, template: str | None = None,
                 verbalizers: dict[str, str] | None = None) -> list[dict]:
    """The harness documents (JSONL rows) of one language: see the module docstring."""
    from xling.tasks.zeroshot import DEFAULT_TEMPLATES, _prompt, verbalize

    if task.type not in ("classification", "multiple-choice"):
        raise XlingError(f"task {task.name} is a {task.type} task; xling writes classification, multiple-choice "
                         f"and generation tasks as harness tasks")
    examples = task.examples(split, lang)
    if template is None:
        if task.type == "multiple-choice":
            template = DEFAULT_TEMPLATES["multiple-choice"]
        elif any(e.text_pair for e in examples):
            template = DEFAULT_TEMPLATES["pair"]
        else:
            template = DEFAULT_TEMPLATES["classification"]
    verb = [str((verbalizers or {}).get(lab, verbalize(lab))).strip() for lab in task.labels]
    docs = []
    for i, e in enumerate(examples):
        choices = [str(c).strip() for c in e.choices] if task.type == "multiple-choice" else verb
        if e.label is None or not 0 <= int(e.label) < len(choices):
            raise XlingError(f"task {task.name}, {split} {lang}, example {i}: no gold label among its "
                             f"{len(choices)} choices")
        doc = {"id": str(e.id) if e.id not in (None, "") else f"#{i}", "lang": lang, "text": e.text or ""}
        if e.text_pair:
            doc["text_pair"] = e.text_pair
        doc.update({"query": _prompt(e, template), "choices": choices, "label": int(e.label)})
        docs.append(doc)
    return docs


def generation_docs(task: Task, split: str, langs: Sequence[str], shots: int = 5,
                    template: str | None = None) -> list[tuple[str, list[dict]]]:
    """``(unit, docs)`` of a generation task (:func:`xling.tasks.generation.generation_units`: a translation task's
    ``<lang>:en-x`` and ``<lang>:x-en``, a task file's language): ``id``, ``lang`` (the unit), ``target_lang``,
    ``direction``, ``source``, ``query`` (the k-shot prompt xling's own generation eval uses) and ``target`` (the
    reference)."""
    from xling.tasks.generation import generation_units, unit_key

    out = []
    for lang, direction, items in generation_units(task, list(langs), split=split, shots=shots, template=template):
        key = unit_key(lang, direction)
        out.append((key, [{"id": it.id, "lang": key, "target_lang": it.target_lang, "direction": direction,
                           "source": it.source, "query": it.prompt, "target": it.reference} for it in items]))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


def export_harness_task(task: Task, folder: str | Path, *, split: str = "test", langs: Sequence[str] | None = None,
                        template: str | None = None, verbalizers: dict[str, str] | None = None,
                        final: str | Path | None = None, dataset_cache: str | Path | None = None,
                        shots: int = 5, max_new_tokens: int = 128, stop: Sequence[str] = ("\n",)) -> dict:
    """Write ``task`` as a harness task folder into ``folder`` (created; see the module docstring) and return its
    manifest.

    ``langs``: task languages (default: every language of ``split``). ``final``: where the folder will live when
    the caller moves it into place (the data files are named by absolute path; default ``folder``).
    ``dataset_cache``: the ``datasets`` cache the harness's ``json`` loader writes to (xling's own cache for
    xling's runs; default: the ``datasets`` default). A generation task (``bible-mt``, a task file with targets) is
    written as ``generate_until`` tasks instead, one per unit (:func:`generation_docs`; ``shots`` demonstrations in
    each prompt, greedy, at most ``max_new_tokens``, up to the first of ``stop``), with the harness's corpus
    ``chrf`` and ``bleu``.
    """
    folder = Path(folder)
    final = Path(final if final is not None else folder).expanduser().resolve()
    table = task.data.get(split) or {}
    if not table:
        raise XlingError(f"task {task.name} has no {split} split")
    chosen: list[str] = []
    for code in (langs if langs is not None else sorted(table)):
        lang = task.resolve_lang(code, split)
        if lang not in chosen:
            chosen.append(lang)
    group = harness_name(task.name)
    folder.mkdir(parents=True, exist_ok=True)
    tasks: dict[str, str] = {}
    counts: dict[str, int] = {}
    metrics = ["acc", "acc_norm"]
    if task.type == "generation":
        metrics = ["chrf", "bleu"]
        for unit, docs in generation_docs(task, split, chosen, shots, template):
            if not docs:
                raise XlingError(f"task {task.name}: no {split} items in {unit}")
            name, stem = f"{group}_{_slug(unit)}", _slug(unit)
            (folder / f"{stem}.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs),
                                                  encoding="utf-8")
            kwargs = {"data_files": {split: str(final / f"{stem}.jsonl")}}
            if dataset_cache is not None:
                kwargs["cache_dir"] = str(dataset_cache)
            (folder / f"{stem}.yaml").write_text(_yaml({
                "task": name, "dataset_path": "json", "dataset_kwargs": kwargs, "test_split": split,
                "output_type": "generate_until", "doc_to_text": "query", "doc_to_target": "target",
                "target_delimiter": " ",
                "generation_kwargs": {"until": list(stop), "do_sample": False, "max_gen_toks": int(max_new_tokens)},
                "metric_list": [{"metric": "chrf", "aggregation": "chrf", "higher_is_better": True},
                                {"metric": "bleu", "aggregation": "bleu", "higher_is_better": True}],
                "metadata": {"version": 1.0, "xling_task": task.name, "lang": unit},
            }), encoding="utf-8")
            tasks[name], counts[unit] = unit, len(docs)
    for lang in chosen if task.type != "generation" else []:
        docs = harness_docs(task, split, lang, template, verbalizers)
        if not docs:
            raise XlingError(f"task {task.name}: no {split} examples in {lang}")
        name = f"{group}_{lang}"
        (folder / f"{lang}.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs),
                                             encoding="utf-8")
        kwargs: dict = {"data_files": {split: str(final / f"{lang}.jsonl")}}
        shots: dict = {}
        fewshot = "dev" if split != "dev" else "train"  # few-shot examples (--harness-fewshot) from another split
        if (task.data.get(fewshot) or {}).get(lang):
            (folder / f"{lang}.{fewshot}.jsonl").write_text(
                "".join(json.dumps(d, ensure_ascii=False) + "\n"
                        for d in harness_docs(task, fewshot, lang, template, verbalizers)), encoding="utf-8")
            kwargs["data_files"][fewshot] = str(final / f"{lang}.{fewshot}.jsonl")
            shots = {"fewshot_split": fewshot}
        if dataset_cache is not None:
            kwargs["cache_dir"] = str(dataset_cache)
        (folder / f"{lang}.yaml").write_text(_yaml({
            "task": name, "dataset_path": "json", "dataset_kwargs": kwargs, "test_split": split, **shots,
            "output_type": "multiple_choice", "doc_to_text": "query", "doc_to_choice": "choices",
            "doc_to_target": "label", "target_delimiter": " ",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "xling_task": task.name, "lang": lang},
        }), encoding="utf-8")
        tasks[name], counts[lang] = lang, len(docs)
    (folder / GROUP_FILE).write_text(_yaml({
        "group": group, "task": list(tasks),
        **({"aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": False}
                                      for m in metrics]} if task.type != "generation" else {}),
        "metadata": {"version": 1.0, "xling_task": task.name},
    }), encoding="utf-8")
    manifest = {"format": FORMAT, "task": task.name, "type": task.type, "labels": list(task.labels),
                "split": split, "group": group, "tasks": tasks, "n_examples": counts, "source_lang": task.source_lang,
                "task_fingerprint": task.fingerprint(split), "template": template,
                "shots": shots if task.type == "generation" else None,
                "verbalizers": dict(verbalizers) if verbalizers else None}
    (folder / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: str | Path) -> dict | None:
    """The ``xling_harness.json`` of a folder written by :func:`export_harness_task` (None: not such a folder); a
    damaged one is one line."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise XlingError(f"{path}: cannot be read ({type(exc).__name__}); write the folder again with "
                         f"xling task --export-harness") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("tasks"), dict):
        raise XlingError(f"{path}: not an {FORMAT} manifest; write the folder again with xling task --export-harness")
    return manifest


__all__ = ["FORMAT", "GROUP_FILE", "MANIFEST", "export_harness_task", "generation_docs", "harness_docs", "harness_name",
           "read_manifest"]
