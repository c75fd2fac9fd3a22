"""The ``probe`` recipe: per-language task scores from a linear probe on frozen features.

``xling probe --model gemma-3-270m --task bible-genre`` embeds the source
language's training and dev examples and every language's test examples with
the engine (one forward pass per sentence for all hidden states, cached like
``xling align``), fits a multinomial logistic regression
(:func:`xling.methods.probe.fit_logreg`) on the source training set at each
hidden state and each ``l2`` of a small grid, keeps the (layer, l2) with the best
source-language **dev** accuracy (never test), and scores every language's test
set with it. It costs one embedding pass, where fine-tuning a 270M decoder on 2
CPU cores costs an hour, so it is how xling gets task scores for every built-in
model; ``xling train`` + ``xling eval`` remain the fine-tuned route.

The result is an ``eval`` run (same outputs and store rows as ``xling eval``:
``scores.csv``, ``per_language.csv``, ``run.json``, ``report.html``, ``predictions.csv``,
and per-item correctness and predictions in the store), so ``xling predict --model M``
correlates it with the model's alignment and ``xling consistency RUN_ID`` reads it.
"""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.recipes.probe.config import DEFAULT_L2, DEFAULT_OUT, NOT_RECORDED, ProbeConfig  # noqa: F401


def probe(config: ProbeConfig | None = None, **kwargs):
    """Run the probe recipe; returns an :class:`~xling.recipes.eval.run.EvalResult`."""
    from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached
    from xling.methods.probe import select_probe
    from xling.models.loading import load_model
    from xling.harness.scores import EvalResult
    from xling.tasks import load_task
    from xling.tasks.metrics import accuracy, macro_f1

    cfg = config if config is not None else ProbeConfig(**kwargs)
    if cfg.out is not None:  # a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="probe")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    task = load_task(cfg.task, **cfg.task_options)
    if task.type != "classification":
        raise XlingError(f"xling probe scores classification tasks; {task.name} is {task.type}")
    if any(e.text_pair for e in task.examples("train", task.source_lang)[:1]):
        raise XlingError(f"xling probe embeds single texts; task {task.name} has text pairs")
    src = task.source_lang
    langs = [task.resolve_lang(x) for x in cfg.langs] if cfg.langs else task.langs("test")
    if src not in langs:
        langs = [src, *langs]
    ecfg = EmbedConfig(pooling=cfg.pooling, batch_size=cfg.batch_size, max_length=cfg.max_length).resolved(lm)
    layers = list(ecfg.layers)
    if cfg.layer != "auto":  # checked before any embedding
        index = cfg.layer + len(layers) if cfg.layer < 0 else cfg.layer
        if not 0 <= index < len(layers):
            raise XlingError(f"--layer {cfg.layer} is not a hidden state of {cfg.model} (0..{len(layers) - 1})")
        candidates = [index]
    else:
        candidates = list(range(len(layers)))
    cache = EmbeddingCache()  # --no-cache: recompute, and write over the entries (as xling align does)
    train_all = task.examples("train", src)
    sample = training_sample(len(train_all), cfg.max_train, cfg.seed)
    sets = {("train", src): train_all[: cfg.max_train] if sample is None else train_all,
            ("dev", src): task.examples("dev", src)}
    for lang in langs:
        sets[("test", lang)] = task.examples("test", lang)[: cfg.max_test]
    total = sum(len(v) for v in sets.values())
    from xling.engine.embed import note_truncation

    by_lang: dict[str, list[str]] = {}
    for (_split, lang), exs in sets.items():
        by_lang.setdefault(lang, []).extend(e.text for e in exs)
    note_truncation(lm, by_lang, ecfg)  # one line, only when a text is longer than the model's limit
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds,
                                           forward_params, model_params, say)

        model, load = (lm.model if lm.loaded else None), current_load()  # before the pass: a rough estimate
        secs = estimate_seconds(count_tokens((e.text for v in sets.values() for e in v), ecfg.max_length),
                                forward_params(lm.config, model), device=str(lm.device), threads=cfg.threads,
                                load=load)
        say(estimate_line("probe", model=lm.name, params=model_params(lm.config, model), seconds=secs,
                          device=str(lm.device), threads=cfg.threads, langs=len(langs), texts=total,
                          layers=len(layers), text_word="text", note="(less where embeddings are cached)", load=load))
        bar = tqdm(total=total, unit="ex", desc="embedding", file=sys.stderr)
    feats: dict[tuple[str, str], torch.Tensor] = {}
    cached = 0
    for key, exs in sets.items():
        if bar is not None:
            bar.set_description(f"embedding {key[0]} {key[1]}")
        emb, hit = embed_cached(lm, [e.text for e in exs], ecfg, cache, bar.update if bar else None,
                                refresh=not cfg.cache)
        cached += int(hit)
        feats[key] = emb
    if bar is not None:
        bar.close()
    t_embed = time.perf_counter() - t0
    ytr = torch.tensor([e.label for e in sets[("train", src)]])
    if sample is not None:  # the seeded sample of the (whole, embedded once) training set
        ytr = ytr[sample]
        feats[("train", src)] = feats[("train", src)][:, sample]
    ydev = torch.tensor([e.label for e in sets[("dev", src)]])
    choice = select_probe(feats[("train", src)], ytr, task.num_labels, candidates, cfg.l2,
                          (feats[("dev", src)], ydev))
    li, l2, dev_acc, clf = choice.layer_index, choice.l2, choice.dev_accuracy, choice.clf
    grid = [{"layer": layers[g["layer_index"]], "l2": g["l2"], "dev_accuracy": round(g["dev_accuracy"], 6)}
            for g in choice.grid]
    from xling.harness.consistency import prediction_record
    from xling.harness.store import items_hash

    rows = []
    n_examples = {}
    correct: dict[str, list[int]] = {}
    ids_hash: dict[str, str] = {}
    records: dict[str, dict] = {}  # lang -> each item's prediction, keyed by its parallel id (predictions.csv)
    for lang in langs:
        exs = sets[("test", lang)]
        gold = [e.label for e in exs]
        pred = clf.predict(feats[("test", lang)][li]).tolist()
        n_examples[lang] = len(exs)
        correct[lang] = [int(p == g) for p, g in zip(pred, gold)]
        ids_hash[lang] = items_hash(exs)
        records[lang] = prediction_record(exs, pred, task.type, task.labels)
        for metric, value in (("accuracy", accuracy(gold, pred)), ("macro_f1", macro_f1(gold, pred))):
            rows.append({"model": cfg.model, "task": task.name, "lang": lang, "split": "test", "metric": metric,
                         "value": float(value)})
    meta = {
        "method": "probe", "started": started, "model_fingerprint": lm.fingerprint,
        "task_fingerprint": task.fingerprint(), "pooling": ecfg.pooling,
        "labels": list(task.labels),  # the report's chance line (1 / number of labels)
        "probe": {"layer": layers[li], "l2": l2, "dev_accuracy": dev_acc, "train_examples": len(ytr),
                  "grid": grid, "cached_sets": cached, "of_sets": len(sets),
                  **({} if cfg.seed is None else {
                      "seed": cfg.seed, "distinct_train": len(set(sample.tolist())),
                      "sample": "bootstrap" if cfg.max_train is None or cfg.max_train >= len(train_all) else "subset",
                      "sample_hash": hashlib.sha256(str(sample.tolist()).encode()).hexdigest()[:16]})},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in NOT_RECORDED},
    }
    result = EvalResult(rows=rows, run_id=uuid.uuid4().hex[:12], model=cfg.model, base_model=cfg.model,
                        task=task.name, task_type=task.type, split="test", source=src, langs=langs,
                        n_examples=n_examples, main_metric="accuracy",
                        timings={"embed_s": round(t_embed, 2), "total_s": round(time.perf_counter() - t0, 2)},
                        meta=meta, correct=correct, ids_hash=ids_hash, predictions=records)
    if cfg.out is not None:
        from xling.io import output_folder
        from xling.harness.scores import write_outputs

        with output_folder(cfg.out, command="probe", overwrite=cfg.overwrite) as tmp:  # built aside, swapped in
            write_outputs(result, tmp)
    if cfg.store is not None:
        from xling.harness.scores import save_to_store

        save_to_store(result, Path(cfg.store))
    return result


def training_sample(n: int, max_train: int | None, seed: int | None) -> torch.Tensor | None:
    """Indices of the probe's training examples for ``seed`` (None: no seed, the first ``max_train``).

    The probe (logistic regression, a convex objective) is deterministic given its
    data, so what a seed can change is the data: with ``max_train`` below ``n``, a
    seeded random subset of ``max_train`` examples (without replacement); otherwise a
    bootstrap resample of the ``n`` training examples (with replacement). The layer
    and l2 are then chosen on the same, fixed dev set.
    """
    if seed is None:
        return None
    g = torch.Generator().manual_seed(int(seed))
    if max_train is not None and max_train < n:
        return torch.randperm(n, generator=g)[:max_train].sort().values
    return torch.randint(0, n, (n,), generator=g).sort().values


def format_summary(result) -> str:
    p = result.meta["probe"]
    scores = result.scores()
    lines = [f"{'lang':10s} {'accuracy':>9s} {'macro_f1':>9s}"]
    f1 = result.scores("macro_f1")
    for lang in sorted(scores, key=lambda k: (k != result.source, -scores[k])):
        lines.append(f"{lang:10s} {scores[lang]:9.3f} {f1[lang]:9.3f}" + ("  (source)" if lang == result.source else ""))
    g = result.gap()
    lines.append("")
    lines.append(f"{result.model} linear probe on {result.task}: hidden state {p['layer']}, l2 {p['l2']:g} "
                 f"(chosen on {result.source} dev, accuracy {p['dev_accuracy']:.3f}); source {g['source']:.3f}, "
                 f"mean over {g['n_targets']} targets {g['mean_target']:.3f}, transfer gap {g['gap']:.3f}")
    return "\n".join(lines)


__all__ = ["ProbeConfig", "probe", "format_summary", "training_sample"]
