"""The ``matrix`` recipe: a source x target transfer matrix and the pair features for ``xling rank``.

``xling matrix`` (default: the built-in e5-small on ``bible-genre``, whose
train/dev/test splits are parallel in 22 languages) trains on every source
language in turn and scores every target language's test set:

* ``--method probe`` (default, minutes): every split is embedded once with the
  engine (all hidden states in one pass, cached like ``xling align``); per
  source, a multinomial logistic regression (:func:`xling.methods.probe.fit_logreg`)
  is fit at each hidden state and each ``--l2``, and the pair with the best
  accuracy on **that source's own dev set** is kept (``--layer N`` fixes one
  hidden state for every source instead); it predicts every target's test set.
* ``--method lora|full`` (hours for e5-small on a CPU): one fine-tuned model per
  source with :func:`xling.harness.training.train_task` (``lang=source``, early
  stopping on the source's dev set), saved under ``OUT/models`` and reused when
  it is there, evaluated with the ``xling eval`` prediction code.

Each cell gets a percentile bootstrap CI over its test items and the paired
bootstrap CI of its difference to the reference source's cell (``--reference``,
default English) of the same target (:func:`xling.methods.stats.cell_bootstrap`).
Pair features for the ranker, from the same data: MEXA and top-1 retrieval in both
directions between the two languages' embeddings of the parallel test sentences,
best over hidden states (:func:`~xling.methods.matrix.pair_alignment`), LangRank's
subword-type overlap of the two training sets (test sets where a language has no
training data) under the model's tokenizer, and the source's training size in
examples and in subword tokens. URIEL distances are added by ``xling rank``.

Outputs in ``--out``: ``matrix.csv`` (one row per cell), ``features.csv``,
``sources.csv`` (the probe chosen for each source), ``predictions.csv`` (each test
item's prediction per source, ``condition`` = the source language), ``run.json``,
``report.html`` (heatmap); in the results store one ``matrix`` run per source (its
scores on every target as task scores, its per-layer alignment with every target as
alignment rows, its predictions on every target, the pair features in its config),
grouped by a matrix id.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from xling.errors import XlingError
from xling.harness.html import matrix_svg
from xling.recipes.matrix.config import (DEFAULT_L2, DEFAULT_OUT, METHODS, NOT_RECORDED,  # noqa: F401
                                         MatrixConfig)


@dataclass
class MatrixResult:
    matrix_id: str
    model: str
    task: str
    method: str
    reference: str | None
    sources: list[str]
    targets: list[str]
    cells: dict[str, dict[str, dict]]  # cells[src][tgt] = {accuracy, macro_f1, lo, hi, diff, diff_lo, diff_hi}
    features: dict[str, dict[str, dict]]  # features[src][tgt] = {name: value}
    alignment: dict[str, dict[str, dict[str, list[float]]]]  # alignment[src][tgt][metric] = per layer
    probes: dict[str, dict]
    layers: list[int]
    n_test: dict[str, int]
    timings: dict
    meta: dict = field(default_factory=dict)
    # predictions[src][tgt]: each test item's prediction, gold label and correctness, keyed by its parallel id
    # (xling.harness.consistency.prediction_record): predictions.csv and the store's predictions
    predictions: dict[str, dict[str, dict]] = field(default_factory=dict)

    def score(self, source: str, target: str, metric: str = "accuracy") -> float:
        return self.cells[source][target][metric]


def _resolve_all(task, codes, split):
    out = []
    for c in codes:
        lang = task.resolve_lang(c, split)
        if lang not in out:
            out.append(lang)
    return out


def _parallel(task, a: str, b: str, max_test: int | None) -> bool:
    ea, eb = task.examples("test", a)[:max_test], task.examples("test", b)[:max_test]
    return len(ea) == len(eb) >= 2 and all(x.id is not None and x.id == y.id for x, y in zip(ea, eb))


def _type_sets(tokenizer, texts: list[str]) -> tuple[set, int]:
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return {i for seq in ids for i in seq}, sum(len(seq) for seq in ids)


def _trained_predictions(cfg: MatrixConfig, task, src: str, targets: list[str], lm_fingerprint: str) -> tuple[dict, dict]:
    """Fine-tune on ``src`` (or reuse the folder of an identical earlier run) and predict every target."""
    from xling.harness.training import train_task
    from xling.modules.trained import read_train_info
    from xling.harness.scores import ModelSettings, TaskModel

    spec = {"model": cfg.model, "base": lm_fingerprint, "train": task.fingerprint("train", src),
            "dev": task.fingerprint("dev", src) if src in task.data.get("dev", {}) else None, "method": cfg.method,
            "epochs": cfg.epochs, "lr": cfg.lr, "max_train": cfg.max_train, "seed": cfg.seed,
            "max_length": cfg.max_length}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cfg.out) if cfg.out is not None else None
    if root is None:
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="xling-matrix-"))
    else:
        from xling.io import mark_output, output_lock

        with output_lock(root):  # the fine-tuned models live in --out/models: the folder is xling's from now on
            mark_output(root, "matrix")
    folder = root / "models" / f"{src}-{cfg.method}-{key}"
    reused = (folder / "xling_train.json").is_file() and read_train_info(folder) is not None
    if not reused:
        train_task(cfg.model, task, lang=src, method=cfg.method, out=folder, epochs=cfg.epochs, lr=cfg.lr,
                   max_train=cfg.max_train, seed=cfg.seed, max_length=cfg.max_length, batch_size=16,
                   device=cfg.device, dtype=cfg.dtype, threads=cfg.threads, progress=cfg.progress,
                   overwrite=True)  # a model folder inside the run's own --out/models
    handle = TaskModel(ModelSettings(model=str(folder), batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype),
                       task)
    preds = {t: torch.tensor(handle.predict(task.examples("test", t)[: cfg.max_test], None)) for t in targets}
    info = read_train_info(folder) or {}
    return preds, {"model_folder": str(folder), "reused": reused,
                   "best_dev": info.get("best_dev")}


def transfer_matrix(config: MatrixConfig | None = None, **kwargs) -> MatrixResult:
    """Run the matrix recipe (see the module docstring); returns a :class:`MatrixResult`."""
    from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached
    from xling.methods.matrix import pair_alignment, probe_matrix, token_overlap
    from xling.methods.stats import cell_bootstrap
    from xling.models.loading import load_model
    from xling.tasks import load_task
    from xling.tasks.metrics import accuracy, macro_f1

    cfg = config if config is not None else MatrixConfig(**kwargs)
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="matrix")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.store is not None:
        from xling.harness.store import ResultsStore

        ResultsStore(cfg.store).check()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    task = load_task(cfg.task, **cfg.task_options)
    if task.type != "classification":
        raise XlingError(f"xling matrix scores classification tasks; {task.name} is {task.type}")
    have_train = task.data.get("train") or {}
    if any(e.text_pair for lang in have_train for e in have_train[lang][:1]):
        raise XlingError(f"xling matrix embeds single texts; task {task.name} has text pairs")
    sources = _resolve_all(task, cfg.sources, "train") if cfg.sources else task.langs("train")
    targets = _resolve_all(task, cfg.targets, "test") if cfg.targets else task.langs("test")
    if not sources:
        raise XlingError(f"task {task.name} has no training data in any language")
    if len(sources) < 2 and cfg.sources is None:
        raise XlingError(f"task {task.name} has training data in {len(sources)} language only ({', '.join(sources)}); "
                         f"a transfer matrix needs training data in several languages (bible-genre has 22)")
    reference = None
    ref_code = cfg.reference or task.source_lang
    try:
        reference = task.resolve_lang(ref_code, "train")
    except XlingError:
        if cfg.reference:
            raise
    if reference not in sources:
        if cfg.reference:
            raise XlingError(f"--reference {cfg.reference} is not among the sources ({', '.join(sources)})")
        reference = None
    for s in sources:
        if len(task.examples("train", s)) == 0:
            raise XlingError(f"task {task.name}: no training examples in {s}")
    ecfg = EmbedConfig(pooling=cfg.pooling, batch_size=cfg.batch_size, max_length=cfg.max_length)
    cache = EmbeddingCache() if cfg.cache else None
    test_langs = list(dict.fromkeys([*targets, *(s for s in sources if s in task.data.get("test", {}))]))
    dev_table = task.data.get("dev") or {}
    sets: dict[tuple[str, str], list] = {}
    if cfg.method == "probe":
        for s in sources:
            sets[("train", s)] = task.examples("train", s)[: cfg.max_train]
            if s in dev_table:
                sets[("dev", s)] = dev_table[s]
    for lang in test_langs:
        sets[("test", lang)] = task.examples("test", lang)[: cfg.max_test]
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(v) for v in sets.values()), unit="ex", desc="embedding", file=sys.stderr)
    feats: dict[tuple[str, str], torch.Tensor] = {}
    cached = 0
    try:
        for key, exs in sets.items():
            if bar is not None:
                bar.set_description(f"embedding {key[0]} {key[1]}")
            emb, hit = embed_cached(lm, [e.text for e in exs], ecfg, cache, bar.update if bar else None)
            cached += int(bool(hit))
            feats[key] = emb
    finally:
        if bar is not None:
            bar.close()
    t_embed = time.perf_counter() - t0
    layers = list(ecfg.resolved(lm).layers)
    if cfg.layer != "auto":
        li = cfg.layer if cfg.layer >= 0 else len(layers) + cfg.layer
        if li not in layers:
            raise XlingError(f"--layer {cfg.layer} is not a hidden state of {cfg.model} (0..{len(layers) - 1})")
        candidates = [layers.index(li)]
    else:
        candidates = list(range(len(layers)))
    probes: dict[str, dict] = {}
    t1 = time.perf_counter()
    if cfg.method == "probe":
        train = {s: feats[("train", s)] for s in sources}
        ytr = {s: torch.tensor([e.label for e in sets[("train", s)]]) for s in sources}
        dev = {s: (feats[("dev", s)], torch.tensor([e.label for e in sets[("dev", s)]]))
               for s in sources if ("dev", s) in feats}
        chosen, preds = probe_matrix(train, ytr, dev, {t: feats[("test", t)] for t in targets}, task.num_labels,
                                     candidates, cfg.l2)
        for s, p in chosen.items():
            probes[s] = {"layer": layers[p.layer_index], "l2": p.l2, "dev_accuracy": p.dev_accuracy,
                         "train_examples": len(ytr[s]),
                         "grid": [{"layer": layers[g["layer_index"]], "l2": g["l2"], "dev_accuracy": g["dev_accuracy"]}
                                  for g in p.grid]}
    else:
        preds = {}
        for s in sources:
            preds[s], probes[s] = _trained_predictions(cfg, task, s, targets, lm.fingerprint)
            probes[s]["train_examples"] = len(task.examples("train", s)[: cfg.max_train])
    t_fit = time.perf_counter() - t1
    gold = {t: np.array([e.label for e in sets[("test", t)]]) for t in targets}
    correct = {s: {t: preds[s][t].numpy() == gold[t] for t in targets} for s in sources}
    from xling.harness.consistency import prediction_record

    records = {s: {t: prediction_record(sets[("test", t)], preds[s][t].tolist(), task.type, task.labels)
                   for t in targets} for s in sources}
    parallel_all = all(_parallel(task, targets[0], t, cfg.max_test) for t in targets[1:]) if len(targets) > 1 else False
    boot = cell_bootstrap(correct, reference, n_boot=cfg.n_boot, seed=cfg.seed, shared=parallel_all)
    cells: dict[str, dict[str, dict]] = {s: {} for s in sources}
    for s in sources:
        for t in targets:
            cells[s][t] = {**boot[s][t], "accuracy": float(accuracy(gold[t].tolist(), preds[s][t].tolist())),
                           "macro_f1": float(macro_f1(gold[t].tolist(), preds[s][t].tolist()))}
    # pair features ---------------------------------------------------------------------
    tok = lm.tokenizer
    types, tokens = {}, {}
    for lang in dict.fromkeys([*sources, *targets]):
        exs = task.examples("train", lang)[: cfg.max_train] if lang in have_train else sets[("test", lang)]
        types[lang], tokens[lang] = _type_sets(tok, [e.text for e in exs])
    alignment: dict[str, dict[str, dict[str, list[float]]]] = {s: {} for s in sources}
    done: dict[tuple[str, str], dict] = {}
    for s in sources:
        for t in targets:
            if s == t or ("test", s) not in feats or not _parallel(task, s, t, cfg.max_test):
                continue
            if (t, s) in done:
                r = done[(t, s)]
                alignment[s][t] = {"mexa": r["mexa"], "retrieval_src2tgt": r["retrieval_b2a"],
                                   "retrieval_tgt2src": r["retrieval_a2b"]}
                continue
            r = pair_alignment(feats[("test", s)], feats[("test", t)])
            done[(s, t)] = r
            alignment[s][t] = {"mexa": r["mexa"], "retrieval_src2tgt": r["retrieval_a2b"],
                               "retrieval_tgt2src": r["retrieval_b2a"]}
    features: dict[str, dict[str, dict]] = {s: {} for s in sources}
    for s in sources:
        for t in targets:
            f = {"token_overlap": token_overlap(types[s], types[t]), "source_train_tokens": float(tokens[s]),
                 "source_train_examples": float(probes[s]["train_examples"])}
            for name, per_layer in alignment[s].get(t, {}).items():
                f[name] = float(max(per_layer))
            features[s][t] = f
    result = MatrixResult(
        matrix_id=uuid.uuid4().hex[:12], model=cfg.model, task=task.name, method=cfg.method, reference=reference,
        sources=sources, targets=targets, cells=cells, features=features, alignment=alignment, probes=probes,
        layers=layers, n_test={t: len(gold[t]) for t in targets},
        timings={"embed_s": round(t_embed, 2), "fit_s": round(t_fit, 2), "total_s": round(time.perf_counter() - t0, 2),
                 "cached_sets": cached, "of_sets": len(sets)},
        meta={"started": started, "model_fingerprint": lm.fingerprint, "task_fingerprint": task.fingerprint(),
              "pooling": ecfg.resolved(lm).pooling, "parallel_test_sets": parallel_all,
              "layer_choice": "each source's own dev set" if cfg.layer == "auto" else f"fixed hidden state {cfg.layer}",
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                         if k != "task" and k not in NOT_RECORDED}
              | {"task": task.name}},
        predictions=records,
    )
    if cfg.out is not None:
        from xling.io import output_folder

        # built aside and swapped in whole; the fine-tuned models of earlier runs (reused) are carried over
        with output_folder(cfg.out, command="matrix", overwrite=cfg.overwrite, keep=("models",)) as tmp:
            write_outputs(result, tmp)
    if cfg.store is not None:
        save_to_store(result, Path(cfg.store))
    return result


# ----------------------------------------------------------------------------- outputs

CELL_COLUMNS = ["source", "target", "accuracy", "lo", "hi", "macro_f1", "diff", "diff_lo", "diff_hi"]


def cell_rows(result: MatrixResult) -> list[dict]:
    return [{"source": s, "target": t, **result.cells[s][t]} for s in result.sources for t in result.targets]


def feature_rows(result: MatrixResult) -> tuple[list[dict], list[str]]:
    names = sorted({k for s in result.sources for t in result.targets for k in result.features[s][t]})
    rows = [{"source": s, "target": t, **result.features[s][t]} for s in result.sources for t in result.targets]
    return rows, ["source", "target", *names]


def run_record(result: MatrixResult) -> dict:
    d = asdict(result)
    d.pop("alignment")
    d.pop("predictions")  # in predictions.csv
    return d


def write_outputs(result: MatrixResult, out: Path) -> dict[str, Path]:
    from xling.io import atomic_write_text
    from xling.harness.outputs import rows_to_csv

    out.mkdir(parents=True, exist_ok=True)
    frows, fcols = feature_rows(result)
    srows = [{"source": s, **{k: v for k, v in p.items() if k != "grid"}} for s, p in result.probes.items()]
    scols = ["source", *sorted({k for r in srows for k in r if k != "source"})]
    files = {
        "matrix.csv": rows_to_csv(cell_rows(result), CELL_COLUMNS),
        "features.csv": rows_to_csv(frows, fcols),
        "sources.csv": rows_to_csv(srows, scols),
        "run.json": json.dumps(run_record(result), indent=1, default=str),
        "report.html": render_matrix_report(result),
    }
    if result.predictions:  # one row per (source, target, item); the source in the condition column
        from xling.harness.consistency import predictions_csv, predictions_rows

        rows = [r for s in result.sources for r in predictions_rows(result.predictions.get(s, {}), condition=s)]
        files["predictions.csv"] = predictions_csv(rows, with_condition=True)
    paths = {}
    for name, text in files.items():
        atomic_write_text(out / name, text)
        paths[name] = out / name
    return paths


def save_to_store(result: MatrixResult, path: Path) -> None:
    """One ``matrix`` run per source: its scores on every target, its alignment with them, the pair features."""
    from xling import __version__
    from xling.harness.consistency import store_rows
    from xling.harness.store import ResultsStore

    store = ResultsStore(path)
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for s in result.sources:
        rows = [{"model": result.model, "task": result.task, "lang": t, "split": "test", "metric": m,
                 "value": result.cells[s][t][m]} for t in result.targets for m in ("accuracy", "macro_f1")]
        align = [{"model": result.model, "corpus": f"task:{result.task}:test", "lang": t, "layer": layer,
                  "pooling": result.meta["pooling"], "metric": name, "value": float(v)}
                 for t, per in result.alignment[s].items() for name, vals in per.items()
                 for layer, v in zip(result.layers, vals)]
        config = {"matrix_id": result.matrix_id, "source": s, "method": result.method, "task": result.task,
                  "reference": result.reference, "sources": result.sources, "targets": result.targets,
                  "features": result.features[s], "probe": {k: v for k, v in result.probes[s].items() if k != "grid"},
                  "cells": result.cells[s], "n_test": result.n_test, **{k: v for k, v in result.meta.items()}}
        store.add_run({"run_id": f"{result.matrix_id}-{s}", "command": "matrix", "model": result.model,
                       "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": f"task:{result.task}",
                       "corpus_fingerprint": result.meta.get("task_fingerprint"), "config": config,
                       "started": result.meta.get("started"), "finished": finished, "xling_version": __version__},
                      alignment=align, task_scores=rows,
                      predictions=store_rows(result.model, result.task, "test", result.predictions.get(s, {})))


def best_sources(result: MatrixResult) -> list[dict]:
    """Per target: the best source other than the target itself, and the reference source's cell."""
    rows = []
    for t in result.targets:
        cands = [s for s in result.sources if s != t]
        if not cands:
            continue
        best = max(cands, key=lambda s: (result.cells[s][t]["accuracy"], s))
        c = result.cells[best][t]
        row = {"target": t, "best_source": best, "best_accuracy": c["accuracy"]}
        if result.reference is not None and result.reference != t:
            r = result.cells[result.reference][t]
            row.update(reference_accuracy=r["accuracy"], best_minus_reference=c.get("diff", 0.0),
                       diff_lo=c.get("diff_lo", 0.0), diff_hi=c.get("diff_hi", 0.0))
        rows.append(row)
    return rows


def render_matrix_report(result: MatrixResult) -> str:
    from xling.harness.html import esc, page, plural, table_html

    acc = {s: {t: result.cells[s][t]["accuracy"] for t in result.targets} for s in result.sources}
    note = {s: {t: f"[{result.cells[s][t]['lo']:.3f}, {result.cells[s][t]['hi']:.3f}]" for t in result.targets}
            for s in result.sources}
    body = [f"<h1>Transfer matrix: {esc(result.task)}</h1>",
            f'<p class="muted">model {esc(result.model)}; method {esc(result.method)}; '
            f'{plural(len(result.sources), "source")} x {plural(len(result.targets), "target")}; '
            f'layer: {esc(result.meta.get("layer_choice"))}; '
            f'reference source {esc(result.reference)}; matrix id {esc(result.matrix_id)}</p>',
            matrix_svg("accuracy (row: trained on, column: tested on)", result.sources, result.targets, acc, note=note)]
    body.append("<h2>Best source per target</h2>")
    body.append('<p class="muted">The target itself excluded; the difference to the reference source with a 95% '
                'paired bootstrap interval over the target\'s test items.</p>')
    bs = best_sources(result)
    body.append(table_html(["target", "best source", "accuracy", "reference", "best - reference", "95% CI"],
                           [[r["target"], r["best_source"], r["best_accuracy"], r.get("reference_accuracy", ""),
                             r.get("best_minus_reference", ""),
                             f"[{r['diff_lo']:.3f}, {r['diff_hi']:.3f}]" if "diff_lo" in r else ""] for r in bs],
                           left_cols=2))
    body.append("<h2>Sources</h2>")
    keys = sorted({k for p in result.probes.values() for k in p if k != "grid"})
    body.append(table_html(["source", *keys], [[s, *[result.probes[s].get(k, "") for k in keys]]
                                                for s in result.sources]))
    body.append(f'<p class="muted">timings {esc(json.dumps(result.timings))}</p>')
    return page(f"xling matrix: {result.task}", "".join(body))


def format_summary(result: MatrixResult) -> str:
    short = {lang: lang.split("_")[0] for lang in [*result.sources, *result.targets]}
    lines = ["src\\tgt " + " ".join(f"{short[t]:>5s}" for t in result.targets)]
    for s in result.sources:
        lines.append(f"{short[s]:8s}" + " ".join(f"{result.cells[s][t]['accuracy']:5.3f}" for t in result.targets))
    lines.append("")
    bs = best_sources(result)
    beats = [r for r in bs if r.get("diff_lo", 0) > 0]
    lines.append(f"{result.model} {result.method} matrix on {result.task}: {len(result.sources)} sources x "
                 f"{len(result.targets)} targets ({result.meta.get('layer_choice')}), {result.timings['total_s']:.0f} s")
    if result.reference is not None:
        n_not = sum(1 for r in bs if r["best_source"] != result.reference and "diff_lo" in r)
        lines.append(f"best source is not {result.reference} for {n_not} of {len(bs)} targets; better than "
                     f"{result.reference} beyond the 95% paired CI for {len(beats)}"
                     + (f" ({', '.join(short[r['target']] + '<-' + short[r['best_source']] for r in beats)})"
                        if beats else ""))
    return "\n".join(lines)


__all__ = ["MatrixConfig", "MatrixResult", "transfer_matrix", "format_summary", "best_sources"]
