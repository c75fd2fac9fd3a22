"""Say when a language selection changed a built-in corpus's sentence set.

A provider corpus (``django``, ...) built for a list of languages keeps the
messages translated in *all* of them, so ``--langs de,sw`` gives different
sentences (and a different count) than the default selection, and its scores
are not comparable with a default run. A provider that can tell records its
default selection in ``meta["default_selection"]`` (``{"langs": number of
languages, "ids": row ids in the corpus's order}``) next to the rows'
``meta["ids"]``; :func:`selection_note` turns that into one line.
"""

from __future__ import annotations

from xling.data.corpus import ParallelCorpus

#: The ``meta`` key a provider sets when the requested languages are not its default selection.
DEFAULT_SELECTION = "default_selection"


def selection_note(corpus: ParallelCorpus, max_sentences: int | None = None) -> str | None:
    """One line if ``corpus``'s sentences differ from the default selection's, else ``None``.

    ``max_sentences`` is the cut applied to ``corpus`` (its first rows); the
    default selection is cut the same way before comparing.
    """
    ref = corpus.meta.get(DEFAULT_SELECTION)
    ids = corpus.meta.get("ids")
    if not isinstance(ref, dict) or ids is None:
        return None
    default = list(ref.get("ids", []))
    if max_sentences is not None:
        default = default[: int(max_sentences)]
    mine = set(ids)
    if mine == set(default):
        return None
    common = len(mine & set(default))
    return (
        f"corpus {corpus.name}: this language selection changes the sentence set: {len(ids)} sentences "
        f"translated in all {len(corpus.langs)} languages, {common} of them among the {len(default)} of the "
        f"default {ref.get('langs', '?')}-language selection (scores are not comparable with a default run)"
    )


__all__ = ["DEFAULT_SELECTION", "selection_note"]
