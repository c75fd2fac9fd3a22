"""Tasks for zero-shot cross-lingual transfer: data, specs, the registry, built-in tasks.

>>> from xling.tasks import load_task
>>> task = load_task("libreoffice-topic")        # built-in, offline (Debian packages)
>>> task = load_task("path/to/spec.json")         # your JSONL/CSV/TSV files (see xling.tasks.spec)

Importing this package also makes every registered task a parallel-corpus
provider, ``--data task:<name>``, for ``xling align``.
"""

from xling.tasks.core import SPLITS, TASK_TYPES, Example, Task
from xling.tasks.registry import TASKS, load_task, register_task, task_names
from xling.tasks.spec import TaskSpec, load_task_spec


def _register_providers() -> None:
    from xling.tasks.provider import register_task_providers

    register_task_providers(sorted(TASKS))
    import xling.tasks.bible  # noqa: F401 - registers the bible-genre:align corpus


_register_providers()

__all__ = ["Task", "Example", "TaskSpec", "TASK_TYPES", "SPLITS", "TASKS", "load_task", "load_task_spec",
           "register_task", "task_names"]
