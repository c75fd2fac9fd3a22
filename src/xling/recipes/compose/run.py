"""The ``compose`` recipe: combine language and task modules (or fine-tuned models) into one.

Inputs are LoRA modules (store names or PEFT folders), sparse LT-SFT modules, or,
for full-model merges, transformers model folders (not mixed with modules). Outputs:

- ``output="lora"`` (LoRA inputs only): a new module, re-factorised by truncated
  SVD to ``rank`` (default: exact for the linear methods, the sum of the input
  ranks; the largest input rank for TIES/DARE), with the relative error per
  target and overall; written to ``out`` and/or, with ``name``, into the module store (both: to ``out``,
  then copied into the store).
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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xling.errors import XlingError
from xling.recipes.compose.config import ComposeConfig  # noqa: F401 - the options live there


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
    if cfg.out is not None:  # an input, a file, the cache or a user's own folder: refused before any work
        from xling.io import check_output_target
        from xling.modules.apply import _refuse_overwriting_inputs

        base_dir = Path(cfg.base).expanduser() if cfg.base and Path(cfg.base).expanduser().is_dir() else None
        _refuse_overwriting_inputs(Path(cfg.out), list(paths) + ([base_dir] if base_dir else []))
        check_output_target(cfg.out, overwrite=cfg.overwrite, command="compose")

    def written(fn, *args, out, **kw):
        """``fn(..., out=...)`` into ``--out`` built aside and swapped in whole (a module store path: as is)."""
        if cfg.out is None or Path(out) != Path(cfg.out):
            return fn(*args, out=out, **kw)
        from xling.io import output_folder

        with output_folder(out, command="compose", overwrite=cfg.overwrite) as tmp:
            outcome = fn(*args, out=tmp, **kw)
        outcome.out = Path(out)
        return outcome

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
        outcome = written(compose_to_merged, list(paths), cfg.method, cfg.weights, cfg.options, base=cfg.base,
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
        if cfg.out is not None:  # both: written to --out, then copied into the store under --name
            out = Path(cfg.out)
    else:
        out = Path(cfg.out)
    if kind == "full":
        if output == "lora":
            raise XlingError("full model folders merge into a model folder (--as merged), not a LoRA")
        if cfg.rank is not None:
            raise XlingError("--rank applies to a LoRA output only")
        outcome = written(merge_full, list(paths), cfg.method, cfg.weights, cfg.options, base=cfg.base, out=out,
                             max_shard_bytes=shard)
    elif output == "lora":
        outcome = written(compose_to_lora, list(paths), cfg.method, cfg.weights, cfg.options, out=out, rank=cfg.rank,
                                  base=cfg.base, num_layers=cfg.num_layers,
                                  allow_missing_targets=cfg.allow_missing_targets, svd=cfg.svd)
        if cfg.name is not None and cfg.out is not None:
            store.add(out, cfg.name, overwrite=cfg.overwrite)
            outcome.notes.append(f"also stored as module '{cfg.name}' in {store.root}")
    else:
        if cfg.base is None:
            raise XlingError("a merged output needs the base model: --base MODEL")
        if cfg.rank is not None:
            raise XlingError("--rank applies to a LoRA output only (--as lora)")
        outcome = written(compose_to_merged, list(paths), cfg.method, cfg.weights, cfg.options, base=cfg.base, out=out,
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
