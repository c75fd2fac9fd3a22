"""``facts``: the CLDR fact probe (:mod:`xling.data.facts`) as a parallel multiple-choice task.

Every language's ``test`` split holds the probe's items in that language: ``text`` is the item's prompt
(demonstration lines ``<subject>: <answer>``, then ``<subject>:``), ``choices`` the localised answer names,
``label`` the right choice's index and ``id`` the fact id (``currency:JP``), the same in every language. So
``xling eval --zero-shot --task facts --template "{text}"`` scores exactly what ``xling knowledge`` scores (the
default multiple-choice template would append an English ``Answer:`` line). Chance is ``1 / choices``.
"""

from __future__ import annotations

from typing import Sequence

from xling.data.facts import DEFAULT_CHOICES, DEFAULT_SHOTS, PIVOT, RELATIONS, build_fact_probe
from xling.tasks.core import Example, Task

NAME = "facts"


def facts_task(langs: Sequence[str] | None = None, relations: str | Sequence[str] | None = None,
               choices: int = DEFAULT_CHOICES, shots: int = DEFAULT_SHOTS, seed: int = 0,
               max_per_relation: int | None = None) -> Task:
    """Build the ``facts`` task; ``relations`` a comma list or a sequence of :data:`~xling.data.facts.RELATIONS`."""
    if isinstance(relations, str):
        relations = [r.strip() for r in relations.split(",") if r.strip()]
    if isinstance(langs, str):
        langs = [x.strip() for x in langs.split(",") if x.strip()]
    probe = build_fact_probe(langs, relations or RELATIONS, choices, shots, seed, max_per_relation)
    test = {lang: [Example(text=it.prompt, choices=list(it.choices), label=it.answer, id=it.id) for it in items]
            for lang, items in probe.items.items()}
    meta = dict(probe.meta, dropped=probe.dropped,
                leaks={lang: [it.id for it in items if it.leak] for lang, items in probe.items.items()})
    return Task(NAME, "multiple-choice", [str(i) for i in range(choices)], {"test": test},
                source_lang=PIVOT if PIVOT in test else probe.langs[0], meta=meta)


__all__ = ["NAME", "facts_task"]
