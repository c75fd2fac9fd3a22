"""The options of ``xling compose``: one field each, and the flag is generated from it (:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from xling.errors import XlingError
from xling.harness.config import at_least, check_config, flag, option

def parse_weights(value: str) -> list[float] | None:
    """``--weights 1,-0.5`` -> ``[1.0, -0.5]``; anything but numbers is one line naming the flag."""
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise XlingError(f"--weights expects comma-separated numbers (e.g. --weights=1,-0.5), got '{value}'") from None


@dataclasses.dataclass
class ComposeConfig:
    """Everything a composition depends on; validated on construction."""

    inputs: list[str] = option(default_factory=list, positional=True, metavar="INPUT",
                               help="module names in the store, LoRA or sparse (LT-SFT) module folders; or "
                                    "fine-tuned model folders for full merges")
    method: str = option("add", help="add (default), genknowsub, stack, layer_swap, ties, dare, dare_ties, or "
                                     "lora_factorwise (peft 'linear': an approximation)")
    weights: list[float] | None = option(None, parse=parse_weights, metavar="W1,W2,...",
                                         help="comma-separated per-input weights, e.g. --weights=1,-0.5")
    options: dict[str, Any] = option(default_factory=dict, flag="--option", parse="kv", repeat=True,
                                     metavar="KEY=VALUE",
                                     help="method option, e.g. density=0.5, p=0.9, lambda=1, normalize=false, "
                                          "bottom=2, top=2, transition=1, seed=0 (repeatable)")
    output: str | None = option(None, flag="--as", choices=("lora", "merged"),
                                help="lora (default for modules): re-factorised LoRA; merged: base + dW as a model "
                                     "folder")
    rank: int | None = option(None, check=at_least(1),
                              help="rank of the output LoRA (default: exact for add/stack/genknowsub/layer_swap, the "
                                   "sum of the input ranks; the largest input rank for ties/dare)")
    base: str | None = option(None, help="base model (folder or hub id); needed for --as merged")
    out: str | Path | None = option(None, help="output folder")
    name: str | None = option(None, help="store the output LoRA in the module store under NAME (with --out as well: "
                                         "written to --out and copied into the store)")
    modules_dir: str | Path | None = option(None, help="module store folder (default: the xling cache)")
    num_layers: int | None = option(None, help="layer count for layer_swap without --base")
    allow_missing_targets: bool = option(False, help="a module without a LoRA on some target counts as dW = 0 there")
    overwrite: bool = option(False, help="replace an existing module of the same --name, or an --out folder that "
                                         "xling did not write (without it such a non-empty folder is refused)")
    max_shard_size: str | int = option("2GB", help="shard size of a merged model")
    svd: str = option("exact", choices=("exact", "lowrank"),
                      help="re-factorisation of a dense dW (ties, dare, ...): exact (default) or lowrank (seeded "
                           "randomised SVD: faster on large matrices; error still reported exactly)")

    def __post_init__(self):
        from xling.modules.apply import methods

        if not self.inputs:
            raise XlingError("nothing to compose: give one or more modules or model folders")
        if self.method not in methods():
            raise XlingError(f"unknown composition method '{self.method}' (available: {', '.join(methods())})")
        check_config(self)
        if self.out is None and self.name is None:
            raise XlingError(f"say where to write the result: {flag('out')} DIR (or {flag('name')} NAME for the "
                             f"module store)")
        if self.name is not None:
            from xling.modules.store import check_name

            check_name(self.name)


__all__ = ["ComposeConfig", "parse_weights"]
