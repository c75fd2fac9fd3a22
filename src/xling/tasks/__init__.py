"""Tasks for zero-shot cross-lingual transfer: data, specs, the registry, built-in tasks.

>>> from xling.tasks import load_task
>>> task = load_task("libreoffice-topic")        # built-in, offline (Debian packages)
>>> task = load_task("path/to/spec.json")         # your JSONL/CSV/TSV files (see xling.tasks.spec)

Every registered task is also a parallel corpus, ``--data task:<name>``, read by
:func:`xling.harness.sources.load_text_source` (importing this package registers nothing elsewhere).
"""

from xling.tasks.core import SPLITS, TASK_TYPES, Example, Task
from xling.tasks.registry import TASKS, load_task, register_task, task_names
from xling.tasks.spec import TaskSpec, load_task_spec


__all__ = ["Task", "Example", "TaskSpec", "TASK_TYPES", "SPLITS", "TASKS", "load_task", "load_task_spec",
           "register_task", "task_names"]
