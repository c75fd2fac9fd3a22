"""The options of ``xling task``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses

from xling.harness.config import at_least, check_config, option, overwrite_option, task_options_option


@dataclasses.dataclass
class TaskConfig:
    """Which task ``xling task`` shows, and how many of its examples."""

    task: str = option("libreoffice-topic", help="built-in task name (libreoffice-topic, default), a JSON task spec, "
                                                 "or a .jsonl/.csv/.tsv file")
    task_options: dict = task_options_option()
    show: int = option(0, check=at_least(0), help="print the first N test examples of the source language")
    export_harness: str | None = option(None, metavar="DIR",
                                        help="write the task's test split as an lm-evaluation-harness task folder "
                                             "(YAML + JSONL, one task per language and their group) into DIR; run it "
                                             "with xling eval --harness DIR or lm_eval --include_path DIR")
    langs: list[str] | None = option(None, help="--export-harness: comma-separated languages (default: all)")
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        check_config(self)


__all__ = ["TaskConfig"]
