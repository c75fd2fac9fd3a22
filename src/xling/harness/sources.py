"""Parallel text and layer for middle-layer alignment training (``xling train --align-data``).

Two recipe steps that read files or run the engine, so they live here and not in
:mod:`xling.methods` (pure):

* :func:`read_align_pairs` turns any xling corpus (``--data`` spec: ``bible``,
  ``django``, a TSV, ...) into ``(source, target)`` sentence pairs for the given
  target languages: every row of the corpus gives one pair per target language;
  empty and duplicate pairs are dropped; a seeded shuffle then keeps at most
  ``max_pairs``.
* :func:`resolve_align_layer` turns ``--align-layer N|auto`` into a hidden-state
  index. ``auto`` runs ``xling align`` (MEXA, the first ``AUTO_SENTENCES`` rows of
  the same corpus and languages, cached embeddings) on the base model and applies
  :func:`xling.methods.align_loss.pick_align_layer`: the best-aligned layer of the
  middle half of the model.
"""

from __future__ import annotations

import random
from typing import Sequence

from xling.errors import XlingError

AUTO_SENTENCES = 200
DEFAULT_MAX_PAIRS = 4000


def load_align_corpus(spec: str, source: str, langs: Sequence[str] | None):
    """Corpus ``spec`` restricted to ``source`` and ``langs``: loaded once for the pairs and the ``auto`` layer.

    ``langs`` None or empty (a task with the source language only, the ordinary zero-shot case): every
    language of the corpus besides the source (:func:`corpus_targets` names them); ``langs`` that name only
    the source language are an error.
    """
    from xling.data.langcodes import normalize_lang
    from xling.data.readers import load_corpus
    import xling.tasks  # noqa: F401 - registers the task:<name> and bible-genre:align corpora

    src = normalize_lang(source)
    targets = [normalize_lang(x) for x in langs or () if normalize_lang(x) != src]
    if not targets and langs:
        raise XlingError("middle-layer alignment: no target languages to align with the source")
    if not targets:
        corpus = load_corpus(spec, None)
        if src not in corpus.langs:
            raise XlingError(f"alignment data {spec}: no {src} text (it has {', '.join(sorted(corpus.langs))})")
        if len(corpus.langs) < 2:
            raise XlingError(f"middle-layer alignment: alignment data {spec} has no language besides {src}")
        return corpus
    return load_corpus(spec, [src, *targets])


def corpus_targets(corpus, source: str) -> list[str]:
    """The languages of ``corpus`` other than ``source``: the alignment languages by default."""
    from xling.data.langcodes import normalize_lang

    src = normalize_lang(source)
    return [lg for lg in corpus.langs if lg != src]


def read_align_pairs(spec: str, source: str, langs: Sequence[str], max_pairs: int | None = DEFAULT_MAX_PAIRS,
                     seed: int = 0, corpus=None) -> tuple[list[tuple[str, str]], dict]:
    """``(pairs, info)``: source-target sentence pairs of corpus ``spec`` for each of ``langs``.

    ``corpus``: the corpus :func:`load_align_corpus` returned (loaded here when not given).
    """
    from xling.data.langcodes import normalize_lang

    if max_pairs is not None and max_pairs < 2:
        raise XlingError(f"--align-max-pairs must be at least 2, got {max_pairs}")
    if corpus is None:
        corpus = load_align_corpus(spec, source, langs)
    src = normalize_lang(source)
    targets = [normalize_lang(x) for x in langs if normalize_lang(x) != src]
    have = set(corpus.langs)
    missing = [t for t in [src, *targets] if t not in have]
    if missing:
        raise XlingError(f"alignment data {spec}: no {missing[0]} text (it has {', '.join(sorted(have))})")
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    per_lang: dict[str, int] = {}
    for t in targets:
        for a, b in zip(corpus.sentences[src], corpus.sentences[t]):
            a, b = a.strip(), b.strip()
            if not a or not b or (a, b) in seen:
                continue
            seen.add((a, b))
            pairs.append((a, b))
            per_lang[t] = per_lang.get(t, 0) + 1
    if len(pairs) < 2:
        raise XlingError(f"alignment data {spec}: fewer than 2 usable parallel pairs")
    random.Random(seed).shuffle(pairs)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    info = {"data": str(spec), "corpus": corpus.name, "source": src, "langs": targets,
            "available_pairs": per_lang, "max_pairs": max_pairs, "seed": seed}
    return pairs, info


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
    from xling.harness.alignment import AlignConfig, align

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


__all__ = ["corpus_targets", "load_align_corpus", "read_align_pairs", "resolve_align_layer", "AUTO_SENTENCES", "DEFAULT_MAX_PAIRS"]
