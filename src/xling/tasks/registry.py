"""Tasks by name: ``--task libreoffice-topic`` or ``--task path/to/spec.json``.

Built-in tasks are registered lazily as ``"module:function"`` strings in :data:`TASKS`
(a :class:`~xling.registry.Registry`), so listing them imports nothing heavy.
:func:`load_task` resolves, in order:

1. a registered name (``libreoffice-topic``), with builder options as keywords
   (checked and converted against the builder's signature, :meth:`~xling.registry.Registry.coerce`);
2. an xling task file (``{"format": "xling-task/1", ...}``, as written by
   :meth:`~xling.tasks.core.Task.save`);
3. a JSON task spec (:class:`~xling.tasks.spec.TaskSpec`);
4. a single ``.jsonl``/``.csv``/``.tsv`` file or saved Hugging Face dataset folder,
   read with the default spec (fields ``text``, ``label``, ``lang``, ``split``;
   ``text_pair`` when present).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from xling.errors import XlingError
from xling.registry import Registry
from xling.tasks.core import Task

#: Task builders by name (any case): ``"module:function"`` (lazy) or a callable returning a :class:`Task`.
TASKS = Registry(kind="task", ignore_case=True, unknown="unknown task {name!r}{hint} (built-in tasks: {known})")
TASKS.register("libreoffice-topic", "xling.tasks.libreoffice:libreoffice_topic")
TASKS.register("bible-genre", "xling.tasks.bible:bible_genre")
TASKS.register("facts", "xling.tasks.facts:facts_task")
TASKS.register("bible-mt", "xling.tasks.bible_mt:bible_mt")


#: Unlabeled in-domain text of a task, ``f(lang) -> list[str]``, with the task's evaluation text
#: removed (``--text unlabeled:<task>`` for language modules).
UNLABELED = Registry(kind="unlabeled text source", ignore_case=True)
UNLABELED.register("libreoffice-topic", "xling.tasks.libreoffice:unlabeled_text")
UNLABELED.register("bible-genre", "xling.tasks.bible:unlabeled_text")


def unlabeled_text(task: str, lang: str) -> list[str]:
    """Unlabeled ``lang`` text in the domain of ``task`` (never its dev/test text)."""
    if task not in UNLABELED:
        have = ", ".join(f"unlabeled:{k}" for k in UNLABELED.names())
        raise XlingError(f"no unlabeled text source for task {task!r} (available: {have})")
    return list(UNLABELED.get(task)(lang))


#: The languages each unlabeled source has (``module:attribute``, a mapping or list of codes), for
#: :func:`unlabeled_lang`; a source not listed keeps the normalised code.
UNLABELED_LANGS = Registry(kind="unlabeled text languages", ignore_case=True)
UNLABELED_LANGS.register("bible-genre", "xling.data.bible:TRANSLATIONS")


def unlabeled_lang(task: str, lang: str) -> str:
    """The code ``unlabeled:TASK`` text of ``lang`` has (:func:`~xling.data.langcodes.match_lang`'s rule)."""
    from xling.data.langcodes import match_lang, normalize_lang

    code = normalize_lang(lang)
    langs = UNLABELED_LANGS.get(task, None)
    if langs is None:
        return code
    return match_lang(code, langs) or code


def register_task(name: str, factory: str | Callable[..., Task] | None = None):
    """Register a task builder (``"module:function"`` or a callable); usable as a decorator.

    The task's test split is then a parallel corpus too, ``--data task:<name>``
    (:func:`xling.harness.sources.load_text_source`).
    """
    return TASKS.register(name, factory)


def task_names() -> list[str]:
    return TASKS.names()


def load_task(spec: str | os.PathLike | Task | dict, **options) -> Task:
    """A :class:`Task` from a registered name, a task/spec file, a data file or a dict spec."""
    from xling.tasks.spec import TaskSpec, load_task_spec

    if isinstance(spec, Task):
        return spec
    if isinstance(spec, dict):
        return load_task_spec(TaskSpec.from_dict(spec))
    text = os.fspath(spec)
    key = text.strip().lower()
    if key in TASKS:
        return TASKS.get(key)(**TASKS.coerce(key, options))
    if options:
        raise XlingError(f"task options ({', '.join(options)}) apply to built-in tasks only, not {text}")
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join(task_names())
        raise XlingError(f"unknown task {text!r}: not a built-in task ({known}) and no such file")
    if path.is_file() and path.suffix.lower() == ".json":
        from xling.data.readers import parse_json, read_text

        obj = parse_json(read_text(path), path)
        if isinstance(obj, dict) and obj.get("format") == "xling-task/1":
            return Task.from_json(obj, where=str(path))
        if isinstance(obj, dict):
            obj.setdefault("name", path.stem)
        return load_task_spec(TaskSpec.from_dict(obj, base=path.parent, where=str(path)))
    # a bare data file or dataset folder, default field names
    fields = _default_fields(path)
    return load_task_spec(TaskSpec(name=path.stem, files=[{"path": str(path)}], **fields))


def _default_fields(path: Path) -> dict:
    """Guess the task type of a bare data file from its first record's field names."""
    from xling.tasks.spec import _format_of, _rows

    fmt = _format_of(path, None)
    first = next((row for _, row, _ in _rows(path, fmt)), None)
    if first is None:
        raise XlingError(f"{path}: no examples")
    if "tokens" in first and "tags" in first:
        return {"type": "token-classification"}
    if "target" in first:
        return {"type": "generation"}
    if "choices" in first:
        return {"type": "multiple-choice", "text": [k for k in ("text", "text_pair") if k in first] or []}
    if "text_pair" in first:
        return {"text": ["text", "text_pair"]}
    return {}


__all__ = ["TASKS", "register_task", "load_task", "task_names"]
