"""``xling compose``, ``xling modules list|show`` and ``xling train-module``.

Recipes: :func:`xling.recipes.compose.run.compose` (on :mod:`xling.modules`) and
:func:`xling.recipes.train_module.run.train_module`.
"""

from __future__ import annotations


def cmd_compose(cfg) -> int:
    from xling.recipes.compose.run import compose, format_summary

    print(format_summary(compose(cfg)))
    return 0


def cmd_modules_list(cfg) -> int:
    from xling.modules.store import ModuleStore

    store = ModuleStore(cfg.modules_dir)
    rows = store.list()
    if not rows:
        print(f"no modules in {store.root}")
        return 0
    print(f"{len(rows)} modules in {store.root}")
    print(f"  {'name':24s} {'type':6s} {'kind':9s} {'language':10s} {'task':18s} {'rank':>5s} {'targets':>7s}  base")
    for r in rows:
        if "error" in r:
            print(f"  {r['name']:24s} unreadable: {r['error']}")
            continue
        ranks = ",".join(str(x) for x in r["ranks"]) or "-"
        print(f"  {r['name']:24s} {r.get('type', 'lora'):6s} {r['kind'] or '-':9s} {r['language'] or '-':10s} "
              f"{r['task'] or '-':18s} {ranks:>5s} {r['targets']:7d}  {r['base_model'] or '-'}")
    return 0


def cmd_modules_show(cfg) -> int:
    import json

    from xling.modules.store import ModuleStore, summarize

    store = ModuleStore(cfg.modules_dir)
    row = summarize(store.resolve(cfg.module), with_hash=True)
    meta = row.pop("meta")
    width = max(len(k) for k in row)
    for k, v in row.items():
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        print(f"{k:{width}s}  {v if v is not None else '-'}")
    if meta:
        if meta.get("extra", {}).get("type") == "lt-sft":
            x = meta["extra"]
            print(f"{'lt-sft':{width}s}  k={x.get('k')} selection={x.get('selection', 'global')} "
                  f"entries={x.get('entries')} phases={x.get('phase1_steps')}+{x.get('phase2_steps')} steps")
        if meta.get("metrics"):
            print(f"{'metrics':{width}s}  {json.dumps(meta['metrics'], sort_keys=True)}")
        if meta.get("data_hash"):
            print(f"{'data_hash':{width}s}  {meta['data_hash']}")
        if meta.get("composition"):
            comp = {k: v for k, v in meta["composition"].items() if k != "rel_errors"}
            print(f"{'composition':{width}s}  {json.dumps(comp, default=str)}")
    else:
        print("(no xling_module.json: a plain PEFT folder)")
    return 0


def add_compose_parsers(sub) -> None:
    """Add ``xling compose`` and ``xling modules list|show`` to the CLI's subparsers."""
    from xling.harness.config import add_command
    from xling.recipes.compose.config import ComposeConfig
    from xling.recipes.modules.config import ModulesListConfig, ModulesShowConfig

    add_command(sub, "compose", ComposeConfig, cmd_compose,
                help="compose LoRA modules (or merge fine-tuned models) into one",
                description="Compose language and task modules: exact arithmetic on dW, GenKnowSub, TIES, DARE, "
                            "layer swapping, MAD-X stacking. Output: a re-factorised LoRA module (--as lora) or the "
                            "base with the composed dW merged in (--as merged).")
    mo = sub.add_parser("modules", help="list and show the stored language and task modules")
    mosub = mo.add_subparsers(dest="modules_command", metavar="ACTION")
    add_command(mosub, "list", ModulesListConfig, cmd_modules_list, help="list the modules in the store")
    add_command(mosub, "show", ModulesShowConfig, cmd_modules_show, help="show one module's metadata and LoRA facts")


def add_train_module_parser(sub) -> None:
    """``xling train-module --kind language|task ...``"""
    from xling.harness.config import add_command
    from xling.recipes.train_module.config import TrainModuleConfig

    add_command(sub, "train-module", TrainModuleConfig, cmd_train_module,
                help="train a LoRA language module (MLM / causal LM) or task module",
                description="Train a LoRA module. --kind language: masked LM (encoders) or causal LM (decoders) on "
                            "monolingual text. --kind task: a task LoRA, optionally on top of a language module "
                            "(--language-module, MAD-X stacking).")


def cmd_train_module(cfg) -> int:
    import dataclasses

    from xling.recipes.train_module.run import train_module

    out = train_module(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    print(f"wrote {out}")
    return 0


__all__ = ["add_compose_parsers", "add_train_module_parser", "cmd_compose", "cmd_modules_list",
           "cmd_modules_show", "cmd_train_module"]
