"""``bible-mt``: translate held-out Bible verses, English -> X and X -> English, by k-shot prompting.

A parallel generation task in the 22 languages of the built-in Bible corpus (:mod:`xling.data.bible`): rows with
the same verse id (``GEN 1:1``) are translations of each other. ``xling eval --task bible-mt --model DECODER``
translates every test verse from English into each other language (``en-x``) and back (``x-en``) with a fixed
k-shot prompt (:func:`translation_prompt`; demonstrations from the ``train`` split) and scores the outputs with
chrF, chrF++, BLEU and their language fidelity (:mod:`xling.methods.generation`). No training.

Construction, deterministic for a given ``seed``:

1. Verses whose English text has ``min_words`` to ``max_words`` words, present in every language.
2. Whole chapters go to one split, with ``bible-genre``'s seeded chapter hash (``xling.tasks.bible``: 30% test,
   10% dev, the rest train), so a test verse's neighbours, which share its names and wording, never serve as
   demonstrations.
3. ``test_size`` test verses and ``train_size`` demonstration verses, the first in a seeded hash order of
   verse ids. A train verse whose text (in any language, normalised) equals a test verse's (a repeated formula)
   is never a demonstration.

The demonstrations are the first k of the ``train`` split (``xling eval --shots k``), the same for every test
verse and every direction; ``test`` holds the verses translated. English is the pivot: it is the source of
``en-x`` and the target of ``x-en``, and has no direction of its own.
"""

from __future__ import annotations

from typing import Sequence

from xling.data.bible import PIVOT, bible_corpus
from xling.errors import XlingError
from xling.tasks.bible import _chapter, _split_of
from xling.tasks.core import Example, Task
from xling.tasks.libreoffice import _h

NAME = "bible-mt"
#: The translation directions: from the pivot (English) into X, and from X into the pivot.
DIRECTIONS = ("en-x", "x-en")
#: Language names used in prompts where the CLDR name is not the usual English one.
PROMPT_NAMES = {"arb_Arab": "Arabic", "pes_Arab": "Persian", "ben_Beng": "Bengali", "tgl_Latn": "Tagalog",
                "zho_Hans": "Chinese", "swh_Latn": "Swahili"}


def prompt_name(lang: str) -> str:
    """The language's name in a prompt (``deu_Latn`` -> ``German``; see :data:`PROMPT_NAMES`)."""
    from xling.data.langcodes import short_lang_name

    return PROMPT_NAMES.get(lang) or short_lang_name(lang)


def translation_prompt(source: str, src_name: str, tgt_name: str, demos: Sequence[tuple[str, str]] = ()) -> str:
    """The k-shot translation prompt: one block per demonstration, blank-line separated, then the query::

        English: <source of demonstration 1>
        German: <its translation>

        English: <the verse to translate>
        German:

    Line breaks inside a text become spaces (each text is one line); the answer is the model's continuation up
    to the first newline.
    """
    one = lambda t: " ".join(str(t).split())  # noqa: E731
    blocks = [f"{src_name}: {one(s)}\n{tgt_name}: {one(t)}" for s, t in demos]
    blocks.append(f"{src_name}: {one(source)}\n{tgt_name}:")
    return "\n\n".join(blocks)


def bible_mt(
    test_size: int = 200, train_size: int = 8, seed: int = 0, langs: Sequence[str] | None = None,
    min_words: int = 5, max_words: int = 40, quiet: bool = False,
) -> Task:
    """Build the ``bible-mt`` task (see the module docstring)."""
    for name, v in (("train_size", train_size), ("test_size", test_size), ("min_words", min_words),
                    ("max_words", max_words)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise XlingError(f"{NAME}: {name} must be a positive integer, got {v!r}")
    if max_words < min_words:
        raise XlingError(f"{NAME}: max_words ({max_words}) is below min_words ({min_words})")
    from xling.data.overlap import normalize_text, protected_keys

    corpus = bible_corpus(langs=list(langs) if langs is not None else None, quiet=quiet)
    ids = corpus.meta["ids"]
    english = corpus.sentences[PIVOT]
    pool: dict[str, list[int]] = {"train": [], "test": []}
    for i, (vid, text) in enumerate(zip(ids, english)):
        if min_words <= len(text.split()) <= max_words:
            split = _split_of(_chapter(vid), seed)
            if split in pool:
                pool[split].append(i)
    for split in pool:
        pool[split].sort(key=lambda i: _h("bible-mt", seed, ids[i]))
    test = pool["test"][:test_size]
    protected = protected_keys(corpus.sentences[lang][i] for i in test for lang in corpus.langs)
    train = [i for i in pool["train"]
             if not any(normalize_text(corpus.sentences[lang][i]) in protected for lang in corpus.langs)][:train_size]
    if not test or not train:
        raise XlingError(f"{NAME}: no {'test' if not test else 'demonstration'} verses of {min_words}-{max_words} "
                         f"English words in the selected languages")
    data = {split: {lang: [Example(text=corpus.sentences[lang][i], id=ids[i]) for i in rows] for lang in corpus.langs}
            for split, rows in (("train", train), ("test", test))}
    meta = {
        "source": corpus.meta["source"], "translations": corpus.meta["translations"], "seed": seed,
        "min_words": min_words, "max_words": max_words, "split_by": "chapter",
        "translation": {"pivot": PIVOT, "directions": list(DIRECTIONS)},
        "demonstrations": "the first k verses of the train split (train-split chapters only), fixed for every "
                          "test verse",
    }
    return Task(NAME, "generation", [], data, source_lang=PIVOT, meta=meta)


__all__ = ["DIRECTIONS", "NAME", "PROMPT_NAMES", "bible_mt", "prompt_name", "translation_prompt"]
