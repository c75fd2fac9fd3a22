"""The ``compose`` recipe: combine language and task modules (or fine-tuned models) into one.

Inputs are LoRA modules (store names or PEFT folders), sparse LT-SFT modules, or,
for full-model merges, transformers model folders (not mixed with modules). Outputs:

- ``output="lora"`` (LoRA inputs only): a new module, re-factorised by truncated
  SVD to ``rank`` (default: exact for the linear methods, the sum of the input
  ranks; the largest input rank for TIES/DARE), with the relative error per
  target and overall; written to ``out`` or, with ``name``, into the module store.
  A task module among the inputs lends the output its head (``xling eval`` reads it);
- sparse modules (alone or with LoRA modules, linear methods only) compose into a
  merged model: ``theta0 + sum_m c_m diff_m`` (Ansell et al. 2022);
- ``output="merged"``: a transformers folder, the base with the composed dW added
  (LoRA inputs: needs ``base``; full models: ``base`` needed except for layer_swap).

Methods: ``add``, ``genknowsub``, ``stack``, ``layer_swap``, ``ties``, ``dare``,
``dare_ties`` (see :mod:`xling.methods.compose`) and the approximation
``lora_factorwise`` (LoRA only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xling.errors import XlingError


@dataclass
class ComposeConfig:
    """Everything a composition depends on; validated on construction."""

    inputs: list[str] = field(default_factory=list)
    method: str = "add"
    weights: list[float] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    output: str | None = None          # "lora" or "merged"; default lora for modules, merged for models
    rank: int | None = None
    base: str | None = None
    out: str | Path | None = None
    name: str | None = None            # store the output LoRA in the module store under this name
    modules_dir: str | Path | None = None
    num_layers: int | None = None
    allow_missing_targets: bool = False
    overwrite: bool = False
    max_shard_size: str | int = "2GB"
    svd: str = "exact"                 # or "lowrank" (randomised) for dense re-factorisation

    def __post_init__(self):
        from xling.modules.apply import methods

        if not self.inputs:
            raise XlingError("nothing to compose: give one or more modules or model folders")
        if self.method not in methods():
            raise XlingError(f"unknown composition method '{self.method}' (available: {', '.join(methods())})")
        if self.output not in (None, "lora", "merged"):
            raise XlingError(f"--as must be lora or merged, got {self.output!r}")
        if self.rank is not None and self.rank < 1:
            raise XlingError(f"--rank must be at least 1, got {self.rank}")
        if self.out is None and self.name is None:
            raise XlingError("say where to write the result: --out DIR (or --name NAME for the module store)")
        if self.name is not None:
            from xling.modules.store import check_name

            check_name(self.name)


@dataclass
class ComposeResult:
    outcome: Any
    kind: str          # "lora" (module inputs) or "full" (model inputs)
    config: ComposeConfig


def _classify(ref: str, store) -> tuple[str, Path]:
    from xling.modules.sparse import is_sparse_module

    p = Path(ref).expanduser()
    if p.is_dir():
        if (p / "adapter_config.json").is_file():
            return "lora", p
        if is_sparse_module(p):
            return "sparse", p
        if (p / "config.json").is_file():
            return "full", p
        raise XlingError(f"{p} is neither a LoRA module (adapter_config.json) nor a model folder (config.json)")
    p = store.resolve(ref)
    return ("sparse" if is_sparse_module(p) and not (p / "adapter_config.json").is_file() else "lora"), p


def compose(cfg: ComposeConfig) -> ComposeResult:
    from xling.modules.apply import compose_to_lora, compose_to_merged, merge_full
    from xling.modules.store import ModuleStore
    from xling.modules.weights import parse_size

    store = ModuleStore(cfg.modules_dir)
    kinds, paths = zip(*(_classify(r, store) for r in cfg.inputs))
    if "full" in kinds and len(set(kinds)) > 1:
        raise XlingError("mix of modules and full model folders: compose one kind at a time")
    if "sparse" in kinds:
        if (cfg.output or "merged") != "merged":
            raise XlingError("sparse (LT-SFT) modules compose into a merged model folder (--as merged --base MODEL), "
                             "not into a LoRA")
        if cfg.base is None:
            raise XlingError("a merged output needs the base model: --base MODEL")
        if cfg.out is None:
            raise XlingError("--name stores a LoRA module; sparse modules compose into a model folder: --out DIR")
        outcome = compose_to_merged(list(paths), cfg.method, cfg.weights, cfg.options, base=cfg.base,
                                    out=Path(cfg.out), allow_missing_targets=cfg.allow_missing_targets,
                                    num_layers=cfg.num_layers, max_shard_bytes=parse_size(cfg.max_shard_size))
        return ComposeResult(outcome=outcome, kind="lora", config=cfg)
    kind = kinds[0]
    output = cfg.output or ("lora" if kind == "lora" else "merged")
    shard = parse_size(cfg.max_shard_size)
    if cfg.name is not None:
        if output != "lora" or kind != "lora":
            raise XlingError("--name stores a LoRA module; use --out for a merged model folder")
        out = store.root / cfg.name
        if out.exists() and not cfg.overwrite:
            raise XlingError(f"module '{cfg.name}' already exists in {store.root} (use --overwrite)")
    else:
        out = Path(cfg.out)
    if kind == "full":
        if output == "lora":
            raise XlingError("full model folders merge into a model folder (--as merged), not a LoRA")
        if cfg.rank is not None:
            raise XlingError("--rank applies to a LoRA output only")
        outcome = merge_full(list(paths), cfg.method, cfg.weights, cfg.options, base=cfg.base, out=out,
                             max_shard_bytes=shard)
    elif output == "lora":
        outcome = compose_to_lora(list(paths), cfg.method, cfg.weights, cfg.options, out=out, rank=cfg.rank,
                                  base=cfg.base, num_layers=cfg.num_layers,
                                  allow_missing_targets=cfg.allow_missing_targets, svd=cfg.svd)
    else:
        if cfg.base is None:
            raise XlingError("a merged output needs the base model: --base MODEL")
        if cfg.rank is not None:
            raise XlingError("--rank applies to a LoRA output only (--as lora)")
        outcome = compose_to_merged(list(paths), cfg.method, cfg.weights, cfg.options, base=cfg.base, out=out,
                                    allow_missing_targets=cfg.allow_missing_targets, num_layers=cfg.num_layers,
                                    max_shard_bytes=shard)
    return ComposeResult(outcome=outcome, kind=kind, config=cfg)


def format_summary(result: ComposeResult) -> str:
    o = result.outcome
    lines = [f"{o.method} of {len(o.inputs)} {'modules' if result.kind == 'lora' else 'models'} "
             f"({', '.join(o.inputs)}) -> {o.output} {o.out}  [{o.seconds:.2f}s]"]
    if o.output == "lora":
        worst = max(o.rel_errors.items(), key=lambda kv: kv[1]) if o.rel_errors else None
        lines.append(f"  {o.targets} targets re-factorised; relative Frobenius error overall "
                     f"{o.overall_error:.3e}" + (f", worst {worst[1]:.3e} ({worst[0]})" if worst else ""))
    else:
        lines.append(f"  {o.tensors_changed} of {o.targets if result.kind == 'full' else 'the base'} "
                     f"tensors changed")
    for note in o.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Command-line handlers (``xling compose``, ``xling modules list|show``)
# --------------------------------------------------------------------------------------


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
    k.add_argument("--name", default=None, help="store the output LoRA in the module store under NAME")
    k.add_argument("--modules-dir", default=None, help="module store folder (default: the xling cache)")
    k.add_argument("--num-layers", type=int, default=None, help="layer count for layer_swap without --base")
    k.add_argument("--allow-missing-targets", action="store_true",
                   help="a module without a LoRA on some target counts as dW = 0 there")
    k.add_argument("--overwrite", action="store_true", help="replace an existing module of the same --name")
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
