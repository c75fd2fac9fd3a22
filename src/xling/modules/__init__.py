"""Language and task modules: LoRA modules stored as PEFT folders, composed and applied.

Public API::

    from xling.modules import read_lora, ModuleStore, ModuleMeta, save_module
    compose_to_lora([m1, m2], "ties", [1, 1], {"density": 0.5}, out="mix", rank=8)
    compose_to_merged([m1, m2], "add", [1, -1], base="base-folder", out="merged")
    merge_full(["ft1", "ft2"], "ties", base="base-folder", out="merged", options={"density": 0.2})

See :mod:`xling.methods.compose` for the composition methods themselves.
"""

from xling.modules.apply import ComposeOutcome, compose_to_lora, compose_to_merged, merge_full, methods
from xling.modules.lora import LoraModule, LoraTarget, read_lora, save_module, write_lora
from xling.modules.meta import META_FILE, ModuleMeta, base_fingerprint, read_meta
from xling.modules.store import ModuleStore, summarize

__all__ = [
    "ComposeOutcome",
    "LoraModule",
    "LoraTarget",
    "META_FILE",
    "ModuleMeta",
    "ModuleStore",
    "base_fingerprint",
    "compose_to_lora",
    "compose_to_merged",
    "merge_full",
    "methods",
    "read_lora",
    "read_meta",
    "save_module",
    "summarize",
    "write_lora",
]
