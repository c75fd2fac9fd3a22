"""``bible-genre``: which part of the Bible does a verse come from?

A parallel classification task in the 22 languages of the built-in Bible corpus
(:mod:`xling.data.bible`). Every verse has the same label in every translation,
so training, dev and test sets are parallel across languages: zero-shot transfer
trains on English, and the gold translations of the English training verses
give the translate-train ceiling (``train`` holds every language).

Labels (canonical divisions, KJV book order): ``law`` (Genesis-Deuteronomy),
``history`` (Joshua-Esther and Acts), ``poetry`` (Job-Song of Songs),
``prophets`` (Isaiah-Malachi and Revelation), ``gospels`` (Matthew-John),
``letters`` (Romans-Jude). Acts joins the historical books and Revelation the
prophetic ones: both are too small for classes of their own.

Construction, deterministic for a given ``seed``:

1. Verses whose English text has at least ``min_words`` words, present in every
   selected language.
2. Whole chapters go to one split (a seeded hash of ``book:chapter``: 30% test,
   10% dev, the rest train), so adjacent verses of a test verse, which share its
   names and wording, are never trained on. Parallel passages in different
   books (the synoptic gospels, Kings and Chronicles) can still put near-copies
   of a test verse in training; they share its label, so they make the task
   easier in every language alike, not the transfer gap smaller.
3. ``train_size``, ``dev_size`` and ``test_size`` verses, drawn class-balanced
   (round-robin over classes in seeded-hash order), the same verses in every
   language.

The chance level is 1/6. Unlabeled text for language modules
(``--text unlabeled:bible-genre``) is the language's verses from train-split
chapters only, never a dev or test chapter.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from xling.data.bible import PIVOT, bible_corpus
from xling.errors import XlingError
from xling.tasks.core import Example, Task
from xling.tasks.libreoffice import _h, balanced_sample

NAME = "bible-genre"
LABELS = ["law", "history", "poetry", "prophets", "gospels", "letters"]
_DIVISION_LABEL = {"law": "law", "history": "history", "acts": "history", "poetry": "poetry",
                   "prophets": "prophets", "revelation": "prophets", "gospels": "gospels", "letters": "letters"}


def _split_of(chapter_key: str, seed: int, test_frac: float = 0.3, dev_frac: float = 0.1) -> str:
    u = int(_h("bible-split", seed, chapter_key)[:12], 16) / float(1 << 48)
    return "test" if u < test_frac else "dev" if u < test_frac + dev_frac else "train"


def _chapter(verse_id: str) -> str:
    return verse_id.rsplit(":", 1)[0]  # "GEN 1:1" -> "GEN 1"


def bible_genre(
    train_size: int = 2000, dev_size: int = 300, test_size: int = 400, seed: int = 0,
    langs: Sequence[str] | None = None, min_words: int = 5, quiet: bool = False,
) -> Task:
    """Build the ``bible-genre`` task (see the module docstring)."""
    for name, v in (("train_size", train_size), ("dev_size", dev_size), ("test_size", test_size)):
        if not isinstance(v, int) or v < 1:
            raise XlingError(f"{NAME}: {name} must be a positive integer, got {v!r}")
    corpus = bible_corpus(langs=list(langs) if langs is not None else None, quiet=quiet)
    ids = corpus.meta["ids"]
    labels = {vid: _DIVISION_LABEL[d] for vid, d in zip(ids, corpus.meta["divisions"])}
    row = {vid: i for i, vid in enumerate(ids)}
    english = corpus.sentences[PIVOT]
    pool: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for vid, text in zip(ids, english):
        if len(text.split()) >= min_words:
            pool[_split_of(_chapter(vid), seed)].append(vid)
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    data: dict[str, dict[str, list[Example]]] = {}
    for split, keys in pool.items():
        chosen = balanced_sample(keys, labels, sizes[split], seed, f"bible-{split}")
        data[split] = {
            lang: [Example(text=corpus.sentences[lang][row[k]], label=LABELS.index(labels[k]), id=k) for k in chosen]
            for lang in corpus.langs
        }
    counts = Counter(LABELS[e.label] for e in data["test"][PIVOT])
    meta = {
        "source": corpus.meta["source"], "translations": corpus.meta["translations"], "seed": seed,
        "min_words": min_words, "split_by": "chapter", "test_class_counts": dict(sorted(counts.items())),
        "translate_train": "train holds the gold translations of the English training verses in every language",
    }
    return Task(NAME, "classification", list(LABELS), data, source_lang=PIVOT, meta=meta)


def unlabeled_text(lang: str, task: Task | None = None, *, seed: int = 0) -> list[str]:
    """``lang`` verses of train-split chapters only (never a dev or test chapter), in corpus order."""
    corpus = bible_corpus(langs=[lang], quiet=True)
    target = next(k for k in corpus.langs if k != PIVOT) if len(corpus.langs) > 1 else PIVOT
    return [s for vid, s in zip(corpus.meta["ids"], corpus.sentences[target])
            if _split_of(_chapter(vid), seed) == "train"]


def align_corpus(langs: Sequence[str] | None = None, max_sentences: int | None = None, *, seed: int = 0):
    """Parallel verses for alignment training (``--align-data bible-genre:align``).

    The verses of train-split chapters, in every selected language, minus the
    task's own training verses (their translations are translate-train's data,
    not generic parallel text) and minus every dev and test chapter. So the
    alignment loss never sees a dev or test verse, nor its chapter.
    """
    from xling.data.corpus import ParallelCorpus

    from xling.data.overlap import normalize_text, protected_keys

    corpus = bible_corpus(langs=list(langs) if langs is not None else None, quiet=True)
    task = bible_genre(seed=seed, quiet=True)
    trained = {e.id for e in task.data["train"][PIVOT]}
    # a verse elsewhere whose text equals a dev/test verse (a repeated formula) is left out too
    protected = protected_keys(e.text for split in ("dev", "test") for exs in task.data[split].values() for e in exs)
    keep = [i for i, vid in enumerate(corpus.meta["ids"])
            if _split_of(_chapter(vid), seed) == "train" and vid not in trained
            and not any(normalize_text(corpus.sentences[lang][i]) in protected for lang in corpus.langs)]
    if max_sentences is not None:
        keep = keep[: int(max_sentences)]
    sentences = {lang: [corpus.sentences[lang][i] for i in keep] for lang in corpus.langs}
    meta = {"ids": [corpus.meta["ids"][i] for i in keep], "source": corpus.meta["source"] +
            " (train-split chapters of bible-genre, without its training verses)"}
    return ParallelCorpus(f"{NAME}:align", sentences, meta)


__all__ = ["bible_genre", "unlabeled_text", "align_corpus", "LABELS", "NAME"]
