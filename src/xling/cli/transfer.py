"""``xling transfer``: the modular transfer experiment (recipe: :func:`xling.recipes.transfer.run.run_transfer`).

The flags are the fields of :class:`xling.recipes.transfer.config.TransferConfig`; this module only prints.
"""

from __future__ import annotations

from pathlib import Path


def add_transfer_parser(sub) -> None:
    from xling.harness.config import add_command
    from xling.recipes.transfer.config import CONDITIONS, TransferConfig

    add_command(sub, "transfer", TransferConfig, cmd_transfer,
                help="modular transfer experiment: language + task modules, composed several ways",
                description="Train (or reuse) language modules for the source and each target language and task "
                            "modules (on the base and on the source-language module), then compare on every "
                            "target: " + "; ".join(f"{c.name} = {c.description}" for c in CONDITIONS.values()) + ".")


def cmd_transfer(cfg) -> int:
    from xling.models.builtin import check_model_name
    from xling.recipes.transfer.run import format_table, run_transfer

    check_model_name(cfg.model)  # a typo is reported before the task is built
    if cfg.seeds is not None:
        from xling.recipes.transfer.run import format_seeds, run_transfer_seeds

        done, rows = run_transfer_seeds(cfg, cfg.seeds)
        print(format_seeds(done, rows))
        print(f"wrote {Path(cfg.out) / 'seeds.csv'} (and seeds.json; each seed's run in {Path(cfg.out)}/seed-<s>)")
        return 0
    result = run_transfer(cfg)
    print(format_table(result))
    extra = ", translations.jsonl" if result.translations else ""
    print(f"wrote {Path(cfg.out) / 'report.html'} (and transfer.csv, summary.csv, run.json{extra})")
    return 0


__all__ = ["add_transfer_parser", "cmd_transfer"]
