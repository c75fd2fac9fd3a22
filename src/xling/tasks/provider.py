"""Tasks as parallel corpora: ``xling align --data task:libreoffice-topic``.

The test split of a task whose languages share example ids (a parallel test
set, like ``libreoffice-topic``) becomes a :class:`~xling.data.corpus.ParallelCorpus`
of the very paragraphs the task is evaluated on, so alignment (MEXA, Kargaran
et al. 2024) and task scores are measured on the same text. Row metadata keeps
the ids and the label names.

:data:`CORPORA` holds the other corpora a task package builds (``bible-genre:align``:
parallel verses that never overlap the task's dev and test text). Both kinds are
read through :func:`xling.harness.sources.load_text_source`; the data layer below
knows nothing of tasks.
"""

from __future__ import annotations

from typing import Sequence

from xling.data.corpus import ParallelCorpus
from xling.errors import XlingError
from xling.registry import Registry

#: Corpora built by task packages, by name (any case): ``name -> f(langs, max_sentences) -> ParallelCorpus``.
CORPORA = Registry(kind="task corpus", ignore_case=True)
CORPORA.register("bible-genre:align", "xling.tasks.bible:align_corpus")


def task_corpus(task, langs: Sequence[str] | None = None, max_sentences: int | None = None,
                split: str = "test") -> ParallelCorpus:
    """The ``split`` of ``task`` (a name, path or :class:`~xling.tasks.core.Task`) aligned by example id.

    Rows present in every selected language are kept, in the source
    language's order. ``langs`` restricts the languages (the source is always
    kept as the pivot); ``max_sentences`` keeps the first rows.
    """
    from xling.tasks.registry import load_task

    t = load_task(task)
    if t.type == "token-classification":
        raise XlingError(f"task {t.name}: token-classification data cannot serve as a parallel corpus")
    table = t.data.get(split) or {}
    if t.source_lang not in table:
        raise XlingError(f"task {t.name}: no {split} data in the source language {t.source_lang}")
    chosen = [t.source_lang]
    for code in langs if langs is not None else sorted(table):
        lang = t.resolve_lang(code, split)
        if lang not in chosen:
            chosen.append(lang)
    by_id = {}
    for lang in chosen:
        exs = table[lang]
        if any(e.id is None for e in exs):
            raise XlingError(f"task {t.name}: {split} examples of {lang} have no ids; cannot align languages")
        by_id[lang] = {e.id: e for e in exs}
    ids = [e.id for e in table[t.source_lang] if all(e.id in by_id[lang] for lang in chosen)]
    if not ids:
        raise XlingError(f"task {t.name}: no {split} example shared by {', '.join(chosen)}")
    if max_sentences is not None:
        ids = ids[: int(max_sentences)]

    def text(e):
        return e.text if e.text_pair is None else f"{e.text} {e.text_pair}"

    sentences = {lang: [text(by_id[lang][i]) for i in ids] for lang in chosen}
    src = by_id[t.source_lang]
    meta = {"ids": ids, "labels": [t.labels[src[i].label] if src[i].label is not None else "" for i in ids],
            "source": f"task {t.name} ({split} split)", "dropped_empty": 0}
    return ParallelCorpus(f"task:{t.name}", sentences, meta)


__all__ = ["CORPORA", "task_corpus"]
