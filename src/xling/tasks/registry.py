"""Tasks by name: ``--task libreoffice-topic`` or ``--task path/to/spec.json``.

Built-in tasks are registered lazily as ``"module:function"`` strings, so
listing them imports nothing heavy. :func:`load_task` resolves, in order:

1. a registered name (``libreoffice-topic``), with builder options as keywords;
2. an xling task file (``{"format": "xling-task/1", ...}``, as written by
   :meth:`~xling.tasks.core.Task.save`);
3. a JSON task spec (:class:`~xling.tasks.spec.TaskSpec`);
4. a single ``.jsonl``/``.csv``/``.tsv`` file or saved Hugging Face dataset folder,
   read with the default spec (fields ``text``, ``label``, ``lang``, ``split``;
   ``text_pair`` when present).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

from xling.errors import XlingError
from xling.tasks.core import Task

#: ``name -> "module:function"`` (lazy) or a callable returning a :class:`Task`.
TASKS: dict[str, str | Callable[..., Task]] = {
    "libreoffice-topic": "xling.tasks.libreoffice:libreoffice_topic",
    "bible-genre": "xling.tasks.bible:bible_genre",
}


#: ``name -> "module:function"``: unlabeled in-domain text of a task, ``f(lang) -> list[str]``,
#: with the task's evaluation text removed (``--text unlabeled:<task>`` for language modules).
UNLABELED: dict[str, str | Callable[[str], list[str]]] = {
    "libreoffice-topic": "xling.tasks.libreoffice:unlabeled_text",
    "bible-genre": "xling.tasks.bible:unlabeled_text",
}


def unlabeled_text(task: str, lang: str) -> list[str]:
    """Unlabeled ``lang`` text in the domain of ``task`` (never its dev/test text)."""
    key = task.strip().lower()
    if key not in UNLABELED:
        have = ", ".join(f"unlabeled:{k}" for k in sorted(UNLABELED))
        raise XlingError(f"no unlabeled text source for task {task!r} (available: {have})")
    target = UNLABELED[key]
    if not callable(target):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return list(target(lang))


#: The languages each unlabeled source has (``module:attribute``, a mapping or list of codes), for
#: :func:`unlabeled_lang`; a source not listed keeps the normalised code.
UNLABELED_LANGS: dict[str, str] = {"bible-genre": "xling.data.bible:TRANSLATIONS"}


def unlabeled_lang(task: str, lang: str) -> str:
    """The code ``unlabeled:TASK`` text of ``lang`` has (:func:`~xling.data.langcodes.match_lang`'s rule)."""
    from xling.data.langcodes import match_lang, normalize_lang

    code = normalize_lang(lang)
    target = UNLABELED_LANGS.get(task.strip().lower())
    if target is None:
        return code
    module, _, attr = target.partition(":")
    return match_lang(code, getattr(importlib.import_module(module), attr)) or code


def register_task(name: str, factory: str | Callable[..., Task] | None = None):
    """Register a task builder (``"module:function"`` or a callable); usable as a decorator."""

    def deco(fn):
        from xling.tasks.provider import register_task_providers

        TASKS[name.lower()] = fn
        register_task_providers([name.lower()])
        return fn

    return deco(factory) if factory is not None else deco


def _factory(name: str) -> Callable[..., Task]:
    target = TASKS[name]
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def task_names() -> list[str]:
    return sorted(TASKS)


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
        factory = _factory(key)
        _check_options(key, factory, options)
        return factory(**options)
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


def _check_options(name: str, factory: Callable[..., Task], options: dict) -> None:
    """Options a built-in task does not take, or of the wrong type: one line naming the option."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for opt, value in options.items():
        if opt not in params:
            known = ", ".join(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
            raise XlingError(f"task {name} has no option {opt!r} (options: {known})")
        default = params[opt].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise XlingError(f"task {name}: option {opt} must be true or false, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and (
                not isinstance(value, int) or isinstance(value, bool)):
            raise XlingError(f"task {name}: option {opt} must be an integer, got {value!r}")


def _default_fields(path: Path) -> dict:
    """Guess the task type of a bare data file from its first record's field names."""
    from xling.tasks.spec import _format_of, _rows

    fmt = _format_of(path, None)
    first = next((row for _, row, _ in _rows(path, fmt)), None)
    if first is None:
        raise XlingError(f"{path}: no examples")
    if "tokens" in first and "tags" in first:
        return {"type": "token-classification"}
    if "choices" in first:
        return {"type": "multiple-choice", "text": [k for k in ("text", "text_pair") if k in first] or []}
    if "text_pair" in first:
        return {"text": ["text", "text_pair"]}
    return {}


__all__ = ["TASKS", "register_task", "load_task", "task_names"]
