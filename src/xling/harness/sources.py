"""The sources of text every recipe reads: ``--data`` corpora, ``task:NAME``, alignment pairs.

Recipe steps that read files or run the engine, so they live here and not in
:mod:`xling.methods` (pure):

* :func:`load_text_source` reads any ``--data`` spec: ``task:NAME`` (a task's parallel
  test split, :func:`xling.tasks.provider.task_corpus`) and the corpora task packages
  build (``bible-genre:align``, :data:`xling.tasks.provider.CORPORA`) here, everything
  else with :func:`xling.data.readers.load_corpus` (the data layer knows nothing of tasks).
* :func:`read_align_pairs` turns any xling corpus (``--data`` spec: ``bible``,
  ``django``, a TSV, ...) into ``(source, target)`` sentence pairs for the given
  target languages: every row of the corpus gives one pair per target language;
  empty and duplicate pairs are dropped; a seeded shuffle then keeps at most
  ``max_pairs``.

The layer of ``--align-layer auto`` is found by running the alignment engine:
:func:`xling.harness.alignment.resolve_align_layer`.
"""

from __future__ import annotations

import os
import random
from typing import Sequence

from xling.errors import XlingError

DEFAULT_MAX_PAIRS = 4000
TASK_PREFIX = "task:"


def task_source(spec) -> str | None:
    """The task corpus a ``--data`` spec names (``task:NAME`` or a :data:`~xling.tasks.provider.CORPORA` name,
    any case), lower-cased; None for anything else (a path is never a task corpus)."""
    if not isinstance(spec, str) or any(sep in spec for sep in ("/", "\\", os.sep)):
        return None
    from xling.tasks.provider import CORPORA

    key = spec.strip().lower()
    return key if key.startswith(TASK_PREFIX) or key in CORPORA else None


def load_text_source(spec, langs: Sequence[str] | None = None, max_sentences: int | None = None,
                     split: str | None = None):
    """The :class:`~xling.data.corpus.ParallelCorpus` of a ``--data`` spec (see the module docstring).

    Arguments as :func:`xling.data.readers.load_corpus`: a task corpus, like a built-in provider, chooses
    its languages itself (the task's source language kept as the pivot) and keeps the first
    ``max_sentences`` rows.
    """
    from xling.data.readers import load_corpus, restrict

    key = task_source(spec)
    if key is None:
        return load_corpus(spec, langs, max_sentences, split)
    if max_sentences is not None and int(max_sentences) < 1:
        raise XlingError(f"max_sentences must be at least 1, got {max_sentences}")
    from xling.tasks.provider import CORPORA, task_corpus
    from xling.tasks.registry import TASKS

    if key.startswith(TASK_PREFIX):
        name = key[len(TASK_PREFIX):]
        if name not in TASKS:
            raise TASKS.unknown(name)  # one line naming the built-in tasks
        corpus = task_corpus(name, langs, max_sentences)
    else:
        corpus = CORPORA.get(key)(langs, max_sentences)
    return restrict(corpus, None, max_sentences)


def load_align_corpus(spec: str, source: str, langs: Sequence[str] | None):
    """Corpus ``spec`` restricted to ``source`` and ``langs``: loaded once for the pairs and the ``auto`` layer.

    ``langs`` None or empty (a task with the source language only, the ordinary zero-shot case): every
    language of the corpus besides the source (:func:`corpus_targets` names them); ``langs`` that name only
    the source language are an error.
    """
    from xling.data.langcodes import normalize_lang

    src = normalize_lang(source)
    targets = [normalize_lang(x) for x in langs or () if normalize_lang(x) != src]
    if not targets and langs:
        raise XlingError("middle-layer alignment: no target languages to align with the source")
    if not targets:
        corpus = load_text_source(spec, None)
        if src not in corpus.langs:
            raise XlingError(f"alignment data {spec}: no {src} text (it has {', '.join(sorted(corpus.langs))})")
        if len(corpus.langs) < 2:
            raise XlingError(f"middle-layer alignment: alignment data {spec} has no language besides {src}")
        return corpus
    return load_text_source(spec, [src, *targets])


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


__all__ = ["load_text_source", "task_source", "corpus_targets", "load_align_corpus", "read_align_pairs",
           "DEFAULT_MAX_PAIRS"]
