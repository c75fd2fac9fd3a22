"""Generation tasks as prompts: the items ``xling eval`` generates for, per language and direction.

Two kinds of ``generation`` task (:class:`~xling.tasks.core.Task`):

* a **translation task** (``task.meta["translation"] = {"pivot": ...}``, the built-in ``bible-mt``): parallel
  texts per language, rows with the same id being translations. For each language X other than the pivot,
  direction ``en-x`` translates the pivot's text into X and ``x-en`` X's text into the pivot, with the k-shot
  prompt of :func:`xling.tasks.bible_mt.translation_prompt`; the demonstrations are the first k parallel rows of
  the ``train`` split, the same for every item;
* a **generation task file** (``text`` = the input, ``target`` = the reference output, ``lang`` = the language the
  output should be in; :mod:`xling.tasks.spec`): direction ``gen``. The prompt is the template (``{text}`` by
  default; ``--template``) filled with the input; with k demonstrations (the first k ``train`` rows of the same
  language), each demonstration is its filled template, a space and its target, and blocks are separated by a
  blank line::

      <template(demo 1 text)> <demo 1 target>

      <template(text)>

An item's id is the task's row id (``#<index>`` when the row has none), so items are parallel across languages
for ``xling consistency``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xling.errors import XlingError

#: The direction of a generation task file's items.
GENERIC = "gen"
#: Built-in generation tasks (names; task files say so by their type).
GENERATION_TASKS = ("bible-mt",)
DEFAULT_TEMPLATE = "{text}"


@dataclass
class GenItem:
    """One prompt to generate for: ``lang`` the task language (X of a translation), ``direction`` (``en-x``,
    ``x-en`` or ``gen``), ``target_lang`` the language the output should be in, ``source`` the input text."""

    id: str
    lang: str
    direction: str
    prompt: str
    reference: str
    target_lang: str
    source: str


def unit_key(lang: str, direction: str) -> str:
    """The name of a (language, direction) set in the results store and ``predictions.csv``: the language for a
    task file (``deu_Latn``), ``<lang>:<direction>`` for a translation (``deu_Latn:en-x``)."""
    return lang if direction == GENERIC else f"{lang}:{direction}"


def is_generation_task(spec) -> bool:
    """Whether ``--task`` names a generation task, cheaply (before any model or task is loaded): a Task of type
    ``generation``, a built-in generation task, an xling task file or spec of that type, or a data file whose
    first row has a ``target`` field."""
    if hasattr(spec, "type") and hasattr(spec, "data"):
        return spec.type == "generation"
    if isinstance(spec, dict):
        return spec.get("type") == "generation"
    text = os.fspath(spec)
    if text.strip().lower() in GENERATION_TASKS:
        return True
    path = Path(text).expanduser()
    if not path.is_file():
        return False
    from xling.data.readers import parse_json, read_text

    try:
        if path.suffix.lower() == ".json":
            obj = parse_json(read_text(path), path)
            return isinstance(obj, dict) and obj.get("type") == "generation"
        from xling.tasks.spec import _format_of, _rows

        first = next((row for _, row, _ in _rows(path, _format_of(path, None))), None)
    except XlingError:
        return False  # loading the task reports the problem
    return isinstance(first, dict) and "target" in first and not ("tokens" in first and "tags" in first)


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _fill(template: str, text: str) -> str:
    return template.replace("{text}", text)


def translation_items(task, lang: str, direction: str, *, split: str = "test", shots: int = 5) -> list[GenItem]:
    """The items of one translation direction (``en-x``: pivot -> ``lang``; ``x-en``: ``lang`` -> pivot)."""
    from xling.tasks.bible_mt import DIRECTIONS, prompt_name, translation_prompt

    pivot = task.meta["translation"]["pivot"]
    if direction not in DIRECTIONS:
        raise XlingError(f"unknown translation direction {direction!r} (use {', '.join(DIRECTIONS)})")
    if lang == pivot:
        raise XlingError(f"task {task.name}: {lang} is the pivot; its translations are the other languages' x-en")
    src, tgt = (pivot, lang) if direction == "en-x" else (lang, pivot)
    demos = []
    if shots:
        train = task.data.get("train") or {}
        if src not in train or tgt not in train:
            raise XlingError(f"task {task.name} has no train split in {src} and {tgt} for the demonstrations; "
                             f"pass --shots 0 for zero-shot prompts")
        by_id = {e.id: e for e in train[tgt] if e.id is not None}
        demos = [(e.text, by_id[e.id].text) for e in train[src] if e.id in by_id][:shots]
    test_src = {e.id: e for e in task.examples(split, src) if e.id is not None}
    names = prompt_name(src), prompt_name(tgt)
    items = []
    for e in task.examples(split, tgt):
        s = test_src.get(e.id)
        if s is None:
            continue
        items.append(GenItem(id=str(e.id), lang=lang, direction=direction,
                             prompt=translation_prompt(s.text, names[0], names[1], demos),
                             reference=_clean(e.text), target_lang=tgt, source=_clean(s.text)))
    return items


def generic_items(task, lang: str, *, split: str = "test", shots: int = 5,
                  template: str | None = None) -> list[GenItem]:
    """The items of a generation task file in ``lang`` (see the module docstring)."""
    template = template or DEFAULT_TEMPLATE
    if "{text}" not in template:
        raise XlingError(f"the generation template must contain {{text}}: {template!r}")
    demos = []
    if shots:
        for i, d in enumerate((task.data.get("train") or {}).get(lang, [])[:shots]):
            if not d.target:
                raise XlingError(f"task {task.name}: train example {d.id or f'#{i}'} of {lang} has no target")
            demos.append(f"{_fill(template, d.text or '')} {d.target}")
    items = []
    for i, e in enumerate(task.examples(split, lang)):
        if not e.target:
            raise XlingError(f"task {task.name}: {split} example {e.id or f'#{i}'} of {lang} has no target "
                             f"(the reference output)")
        prompt = "\n\n".join([*demos, _fill(template, e.text or "")])
        items.append(GenItem(id=str(e.id) if e.id not in (None, "") else f"#{i}", lang=lang, direction=GENERIC,
                             prompt=prompt, reference=e.target, target_lang=lang, source=e.text or ""))
    return items


def generation_units(task, langs, *, split: str = "test", shots: int = 5,
                     template: str | None = None) -> list[tuple[str, str, list[GenItem]]]:
    """``(lang, direction, items)`` for every language of ``langs`` (a translation task: both directions of every
    language but the pivot), in order."""
    if task.type != "generation":
        raise XlingError(f"task {task.name} is a {task.type} task, not a generation task")
    if shots and split == "train":
        raise XlingError("the demonstrations come from the train split; generate for another --split, or --shots 0")
    units = []
    if "translation" in task.meta:
        from xling.tasks.bible_mt import DIRECTIONS

        pivot = task.meta["translation"]["pivot"]
        for lang in langs:
            if lang == pivot:
                continue
            for direction in DIRECTIONS:
                units.append((lang, direction, translation_items(task, lang, direction, split=split, shots=shots)))
        return units
    return [(lang, GENERIC, generic_items(task, lang, split=split, shots=shots, template=template)) for lang in langs]


__all__ = ["DEFAULT_TEMPLATE", "GENERATION_TASKS", "GENERIC", "GenItem", "generation_units", "generic_items",
           "is_generation_task", "translation_items", "unit_key"]
