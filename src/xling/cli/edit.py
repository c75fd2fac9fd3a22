"""``xling edit``: cross-lingual knowledge editing (recipe: :func:`xling.recipes.edit.run.edit`).

The flags are the fields of :class:`xling.recipes.edit.config.EditConfig`; this module only prints.
"""

from __future__ import annotations


def add_edit_parser(sub) -> None:
    from xling.cli.common import add_placement_flags
    from xling.harness.config import add_command
    from xling.recipes.edit.config import EditConfig

    add_command(sub, "edit", EditConfig, cmd_edit, extra=add_placement_flags,
                help="edit a fact in one language; measure efficacy, propagation to other languages and locality",
                description="Facts of the built-in CLDR fact probe are changed, one at a time, to a distractor "
                            "answer in the edit language by a small LoRA update of the feed-forward output "
                            "projections (XME-style cross-lingual editing); every language is then asked the same "
                            "fact and unrelated ones. Writes edits.csv, locality.csv, summary.csv, run.json and "
                            "report.html.")


def cmd_edit(cfg) -> int:
    from xling.recipes.edit.run import edit, format_summary

    result = edit(cfg)
    print(format_summary(result))
    if cfg.out is not None:
        print(f"wrote {cfg.out}/edits.csv, locality.csv, summary.csv, report.html")
    return 0
