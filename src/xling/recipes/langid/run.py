"""``xling langid``: where language identity lives, layer by layer, beside alignment.

Libovický, Rosa and Fraser 2020 ("On the Language Neutrality of Pre-trained Multilingual
Representations") predict a sentence's language from its pooled representation with a linear
classifier: identity is linearly decodable at every layer, and what survives of it is the other
side of alignment. This recipe embeds the corpus exactly as ``xling align`` does (same pooling,
layers, length limit and embedding cache, so after an align run there is no second forward
pass), splits the *sentence ids* in two (a seeded half to train on, the other half held out, the
same ids in every language, so no translation of a test sentence is seen in training), fits a
multinomial logistic regression per hidden state (:func:`xling.methods.probe.fit_logreg`,
standardised features, L2) and reports held-out accuracy with a 95% Wilson interval, against
chance (1 / languages).

From the same embeddings it computes MEXA against the pivot per layer (mean over languages), so
the two curves sit side by side: where identity fades, alignment should rise. Their correlation
over layers is reported with a 95% bootstrap interval over layers (few points: read it as a
description, not a test).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.methods.stats import Q95, bootstrap_ci, pearson, wilson_interval
from xling.recipes.langid.config import DEFAULT_OUT, LangIdConfig  # noqa: F401


def _r(x, y) -> float:
    """Pearson r as ``xling langid`` reports it: plain Python sums, undefined below 3 points."""
    return pearson(x, y, min_points=3, sums="python")


@dataclasses.dataclass
class LangIdResult:
    config: LangIdConfig
    langs: list[str]
    pivot: str
    rows: list[dict]
    n_train: int
    n_test: int
    correlation: tuple[float, float, float]
    seconds: float
    started: str
    corpus: str


def _say_estimate(lm, sub, langs, ecfg, cache, cfg) -> None:
    """One line before embedding (:mod:`xling.engine.estimate`): languages already in the embedding cache (an
    earlier ``xling align`` or ``langid`` on the same corpus) count as free."""
    from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds, forward_params,
                                       model_params, say)

    model = lm.model if lm.loaded else None
    cached = [lang for lang in langs if cfg.cache and cache.path(cache.key(lm, ecfg, sub.sentences[lang])).exists()]
    todo = [lang for lang in langs if lang not in cached]
    load = current_load()
    secs = estimate_seconds(count_tokens((t for lang in todo for t in sub.sentences[lang]), cfg.max_length),
                            forward_params(lm.config, model), device=str(lm.device), load=load)
    note = f"({len(cached)} of {len(langs)} languages already embedded)" if cached else \
        "(a second run, or one after xling align on the same corpus, reads the embeddings from the cache)"
    say(estimate_line("langid", model=lm.name, params=model_params(lm.config, model), seconds=secs,
                      device=str(lm.device), langs=len(langs), texts=len(sub), note=note, load=load))


def langid(config: LangIdConfig | None = None, **kwargs) -> LangIdResult:
    """Run the language-identity probe (see the module doc)."""
    from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached
    from xling.harness.sources import load_text_source
    from xling.methods.metrics import PairEmbeddings, compute_metrics
    from xling.methods.probe import fit_logreg
    from xling.models.layers import parse_layers
    from xling.models.loading import load_model

    cfg = config if config is not None else LangIdConfig(**kwargs)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    if cfg.out is not None:  # a folder that is not xling's to write is refused before any work
        from xling.io import check_output_target

        check_output_target(cfg.out, overwrite=cfg.overwrite, command="langid")
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    corpus = load_text_source(cfg.data, langs=[cfg.pivot, *cfg.langs] if cfg.langs else None)
    from xling.data.langcodes import normalize_lang

    pivot = corpus.resolve(normalize_lang(cfg.pivot))
    if pivot is None:
        raise XlingError(f"pivot language {cfg.pivot} is not in corpus {corpus.name}")
    sub = corpus.select(None, cfg.max_sentences)
    langs = sub.langs
    if len(langs) < 2:
        raise XlingError("langid: need at least 2 languages")
    n = len(sub)
    if n < 10:
        raise XlingError(f"langid: corpus {corpus.name} has {n} shared sentences; need at least 10")
    layers = None if cfg.layers is None else tuple(parse_layers(cfg.layers, lm.num_hidden_states))
    ecfg = EmbedConfig(pooling=cfg.pooling, layers=layers, batch_size=cfg.batch_size, max_length=cfg.max_length)
    cache = EmbeddingCache()
    from xling.engine.embed import note_truncation

    note_truncation(lm, {lang: sub.sentences[lang] for lang in langs}, ecfg)
    if cfg.progress:
        print(f"xling: langid: {len(langs)} languages x {n} sentences through {cfg.model}", file=sys.stderr, flush=True)
        _say_estimate(lm, sub, langs, ecfg, cache, cfg)
    emb = {}
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(langs), unit="language", desc="embedding", file=sys.stderr, dynamic_ncols=True)
    try:
        for lang in langs:
            if bar is not None:
                bar.set_description(f"embedding {lang}")
            e, _hit = embed_cached(lm, sub.sentences[lang], ecfg, cache, refresh=not cfg.cache)
            emb[lang] = e.float()
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    layer_ids = list(ecfg.resolved(lm).layers)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=g)
    n_train = max(2, int(round(n * cfg.train_fraction)))
    tr, te = perm[:n_train], perm[n_train:]
    K = len(langs)
    y_tr = torch.arange(K).repeat_interleave(len(tr))
    y_te = torch.arange(K).repeat_interleave(len(te))
    mexa = {}
    for lang in langs:
        if lang == pivot:
            continue
        out = compute_metrics(PairEmbeddings(emb[pivot], emb[lang]), ["mexa"])
        mexa[lang] = out["mexa"].tolist()
    rows = []
    for j, layer in enumerate(layer_ids):
        x_tr = torch.cat([emb[lang][j, tr] for lang in langs])
        x_te = torch.cat([emb[lang][j, te] for lang in langs])
        probe = fit_logreg(x_tr, y_tr, K, l2=cfg.l2)
        correct = int((probe.predict(x_te) == y_te).sum())
        lo, hi = wilson_interval(correct, len(y_te), empty=(math.nan, math.nan))
        m = [mexa[x][j] for x in mexa]
        rows.append({"layer": layer, "accuracy": correct / len(y_te), "ci_low": lo, "ci_high": hi, "chance": 1 / K,
                     "mexa_mean": sum(m) / len(m) if m else math.nan, "n_test": len(y_te)})
    acc = [r["accuracy"] for r in rows]
    mx = [r["mexa_mean"] for r in rows]
    r = _r(acc, mx)
    lo, hi = (bootstrap_ci(acc, mx, _r, 2000, cfg.seed, generator="torch", min_share=0.5, tails=Q95) if r == r
              else (math.nan, math.nan))
    result = LangIdResult(cfg, langs, pivot, rows, len(tr), len(te), (r, lo, hi), time.perf_counter() - t0, started,
                          corpus.name)
    if cfg.out is not None:
        write_outputs(result, Path(cfg.out))
    return result


def write_outputs(result: LangIdResult, out: Path) -> None:
    from xling.io import output_folder
    from xling.harness.outputs import rows_to_csv

    with output_folder(out, command="langid", overwrite=result.config.overwrite) as tmp:  # built aside, swapped in
        tmp.mkdir()
        (tmp / "langid.csv").write_text(rows_to_csv(result.rows, ["layer", "accuracy", "ci_low", "ci_high", "chance",
                                                                  "mexa_mean", "n_test"]), encoding="utf-8")
        run = {"command": "langid", "model": result.config.model, "corpus": result.corpus, "langs": result.langs,
               "pivot": result.pivot, "config": dataclasses.asdict(result.config), "n_train_per_lang": result.n_train,
               "n_test_per_lang": result.n_test, "pearson_accuracy_mexa": result.correlation,
               "started": result.started, "seconds": round(result.seconds, 2)}
        (tmp / "run.json").write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
        (tmp / "report.html").write_text(render_report(result), encoding="utf-8")


def _describe(result: LangIdResult) -> list[str]:
    rows = result.rows
    low = min(rows, key=lambda r: r["accuracy"])
    best_mexa = max(rows, key=lambda r: r["mexa_mean"] if r["mexa_mean"] == r["mexa_mean"] else -1)
    chance = rows[0]["chance"]
    at_chance = [r["layer"] for r in rows if r["ci_low"] <= chance]
    r, lo, hi = result.correlation
    out = [f"Language identity is decodable at every layer: held-out accuracy {min(x['accuracy'] for x in rows):.3f} to "
           f"{max(x['accuracy'] for x in rows):.3f} over {len(rows)} hidden states ({len(result.langs)} languages, chance {chance:.3f})."
           if not at_chance else
           f"Held-out accuracy is within noise of chance ({chance:.3f}) at hidden states {', '.join(map(str, at_chance))}.",
           f"Lowest identity at hidden state {low['layer']} ({low['accuracy']:.3f} [{low['ci_low']:.3f}, {low['ci_high']:.3f}]); "
           f"best mean MEXA at {best_mexa['layer']} ({best_mexa['mexa_mean']:.3f}).",
           f"Pearson r over layers, identity vs MEXA: {r:+.2f} [{lo:+.2f}, {hi:+.2f}] ({len(rows)} layers; descriptive)."
           if r == r else "Correlation over layers: not defined (constant values or fewer than 3 layers)."]
    return out


def render_report(result: LangIdResult) -> str:
    from xling.harness.html import esc, headline_html, line_chart_svg, page, table_html

    rows = result.rows
    chart = line_chart_svg("Held-out language-identity accuracy and mean MEXA per hidden state",
                           {"language identity (accuracy)": [(r["layer"], r["accuracy"]) for r in rows],
                            "MEXA (mean vs pivot)": [(r["layer"], r["mexa_mean"]) for r in rows],
                            "chance": [(r["layer"], r["chance"]) for r in rows]},
                           "hidden state", "score", integer_x=True)
    table = table_html(["hidden state", "accuracy", "95% CI", "chance", "MEXA mean"],
                       [[r["layer"], r["accuracy"], f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]", r["chance"], r["mexa_mean"]]
                        for r in rows])
    body = (f"<h1>Language identity per layer: {esc(result.config.model)} on {esc(result.corpus)}</h1>" +
            headline_html([esc(s) for s in _describe(result)]) + chart + table +
            f"<p>{len(result.langs)} languages; per language {result.n_train} training and {result.n_test} held-out "
            f"sentences (the same sentence ids in every language). Linear probe: multinomial logistic regression on "
            f"standardised pooled states, L2 {result.config.l2:g}. Method: Libovický et al. 2020.</p>")
    return page(f"xling langid: {result.config.model}", body, script=True)


def format_summary(result: LangIdResult) -> str:
    lines = [f"langid: {result.config.model} on {result.corpus}, {len(result.langs)} languages, "
             f"{result.n_train}+{result.n_test} sentences per language, {result.seconds:.1f} s",
             "  layer  accuracy  [95% CI]          MEXA mean"]
    for r in result.rows:
        lines.append(f"  {r['layer']:>5}  {r['accuracy']:.3f}     [{r['ci_low']:.3f}, {r['ci_high']:.3f}]    {r['mexa_mean']:.3f}")
    lines.extend("  " + s for s in _describe(result))
    return "\n".join(lines)


__all__ = ["LangIdConfig", "LangIdResult", "format_summary", "langid"]
