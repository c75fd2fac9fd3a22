"""One source for every option: a recipe's config dataclass generates its command-line flags.

A config field carries its help, choices and parsing as metadata (the way peft's ``LoraConfig`` fields
carry their help), so adding a flag to a command means adding one field::

    @dataclasses.dataclass
    class LensConfig:
        model: str = option("gemma-3-270m", help="a decoder: ...")
        langs: list[str] | None = option(None, help="comma-separated target languages")
        max_prompts: int = option(100, help="prompts per language", check=at_least(1))
        progress: bool = quiet_option()

:func:`add_flags` turns the fields into ``argparse`` flags (``max_prompts`` -> ``--max-prompts``) and
:func:`from_args` turns the parsed namespace back into the config. Flags the user did not give are not
passed, so the dataclass default is the only default. Parsing of comma lists, ``none`` and repeated
``KEY=VALUE`` lives here and nowhere else; a value that does not parse is one line naming the flag.

:func:`flag` gives a field's flag spelling for messages (``flag("max_prompts")`` -> ``--max-prompts``),
so a config's own checks name the flag the user typed without writing it by hand, and
:func:`check_config` runs the per-field checks declared with ``check=``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable

from xling.errors import XlingError
from xling.options import option_value

_MISSING = dataclasses.MISSING

#: Metadata keys a field may carry (anything else is a programming error, caught at class creation).
_KEYS = {"help", "flag", "choices", "metavar", "parse", "none", "cli", "negate", "check", "short", "group", "dest",
         "repeat", "exclusive", "positional", "required"}


def option(default: Any = _MISSING, *, help: str = "", default_factory: Callable[[], Any] | None = None,
           flag: str | None = None, choices: typing.Sequence[str] | None = None, metavar: str | None = None,
           parse: str | Callable[[str], Any] | None = None, none: bool = False, cli: bool = True,
           negate: bool = False, check: Callable[[Any], str | None] | None = None, short: str | None = None,
           group: str | None = None, repeat: bool = False, exclusive: str | None = None, positional: bool = False,
           required: bool = False) -> Any:
    """A config field with its command-line flag.

    * ``help``: the flag's help; the default is appended unless the text already says ``default``.
    * ``flag``: the flag's spelling when it is not ``--field-name`` (``--langs`` for ``targets``).
    * ``choices``: allowed values (checked by argparse and by :func:`check_config`).
    * ``parse``: ``"list"`` (comma list), ``"tuple"`` (comma list as a tuple), ``"kv"`` (repeatable
      ``KEY=VALUE`` into a dict, values parsed as JSON when they can be), ``"json"`` (one JSON/number/
      word value), or a callable taking the string; by default the field's annotated type decides
      (``int``, ``float``, ``str``, ``Path``, ``list[str]`` -> comma list, ``bool`` -> a switch).
    * ``none``: the word ``none`` (any case) gives ``None`` (``--store none``).
    * ``negate``: a bool field shown as the opposite switch (``progress`` as ``--quiet``).
    * ``repeat``: the flag may be given several times, each value appended (``--task-option``); values that
      ``parse`` turns into dicts are merged into one dict (``--metric-option xsim.k=8``).
    * ``check``: ``value -> message or None``; :func:`check_config` raises the message naming the flag.
    * ``cli=False``: an API-only field (no flag).
    * ``exclusive``: fields sharing this name form a mutually exclusive group of flags.
    * ``group``: a heading the flag is listed under in ``--help`` (fields sharing it are listed together).
    * ``positional``: an argument without a flag (one or more values for a list field).
    * ``required``: argparse refuses the command without the flag (in an ``exclusive`` group: one of the group).
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "metavar": metavar,
            "parse": parse, "none": none, "cli": cli, "negate": negate, "check": check, "short": short,
            "group": group, "repeat": repeat, "exclusive": exclusive, "positional": positional, "required": required}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# -- options every recipe shares ---------------------------------------------------------------------------------------

def quiet_option() -> Any:
    """``progress: bool`` shown as ``--quiet``."""
    return option(True, flag="--quiet", negate=True, help="no progress lines on stderr")


def overwrite_option(what: str = "--out") -> Any:
    return option(False, help=f"replace {what} even when it is a non-empty folder that xling did not write (without "
                              f"it such a folder is refused; a file, the cache folder and the working folder are "
                              f"refused always)")


def store_option(help: str | None = None) -> Any:
    from xling.harness.store import DEFAULT_STORE, STORE_HELP

    text = help or STORE_HELP
    if "default" not in text:
        text += " (default $XLING_STORE or results.sqlite in the user data folder)"
    return option(DEFAULT_STORE, none=True, parse=str, help=text)


def task_options_option(help: str = "options of a built-in task, e.g. test_size=500, train_size=4000 "
                                    "(repeatable)") -> Any:
    """``task_options: dict`` shown as the repeatable ``--task-option NAME=VALUE`` (the task builder's arguments)."""
    return option(default_factory=dict, flag="--task-option", parse="kv", repeat=True, metavar="NAME=VALUE", help=help)


def executor_option() -> Any:
    """``executor``: where the units run (``local`` or ``ray``); a bad name is one line naming ``--executor``."""
    from xling.harness.executor import EXECUTORS

    return option("local", metavar="|".join(EXECUTORS),
                  check=lambda v: None if v in EXECUTORS else f"must be one of {', '.join(EXECUTORS)}, got {v!r}",
                  help="where the units run: local (default, this process) or ray (Ray actors, one model loaded "
                       "per worker; pip install 'ray>=2.9')")


def ray_address_option() -> Any:
    return option(None, metavar="ADDR", help="--executor ray: connect to this Ray cluster (default: start a local Ray)")


def ray_workers_option() -> Any:
    from xling.harness.executor import DEFAULT_RAY_WORKERS

    def check(v):
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else f"must be at least 1, got {v!r}"

    return option(DEFAULT_RAY_WORKERS, check=check, help="--executor ray: workers (actors) at a time, 1 torch thread "
                                                          "each")


def dtype_option(default: str = "fp32") -> Any:
    return option(default, choices=("fp32", "bf16", "fp16", "auto"),
                  help="fp32, bf16, fp16, or auto: bf16 on a GPU that supports it, fp32 on CPU")


def device_option() -> Any:
    return option("auto", help="cpu, cuda, cuda:N or auto")


def threads_option() -> Any:
    return option(None, check=at_least(1), help="CPU threads for torch (default: torch's choice)")


def at_least(n: int | float) -> Callable[[Any], str | None]:
    """A check: the value (when not ``None``) is at least ``n``."""
    return lambda v: None if v is None or v >= n else f"must be at least {n}, got {v}"


def between(lo: int | float, hi: int | float) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


# -- flag spelling -----------------------------------------------------------------------------------------------------

def _field(cls, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def flag(name: str, cls: type | None = None) -> str:
    """The flag of field ``name`` (``max_prompts`` -> ``--max-prompts``; a field's own ``flag=`` wins)."""
    if cls is not None:
        meta = _field(cls, name).metadata
        if meta.get("flag"):
            return meta["flag"]
    return "--" + name.replace("_", "-")


def check_config(cfg) -> None:
    """Run the declared ``choices`` and ``check=`` of every field; the first problem is one line naming the flag."""
    for f in dataclasses.fields(cfg):
        meta = f.metadata
        value = getattr(cfg, f.name)
        if value is None:
            continue
        choices = meta.get("choices")
        if choices:
            values = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in values if v not in choices]
            if bad:
                raise XlingError(f"{flag(f.name, type(cfg))} must be one of {', '.join(map(str, choices))}, "
                                 f"got {bad[0]!r}")
        check = meta.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise XlingError(f"{flag(f.name, type(cfg))} {problem}")


# -- parsing -----------------------------------------------------------------------------------------------------------

def csv_list(value: str | None) -> list[str] | None:
    """``"de, fr,"`` -> ``["de", "fr"]``; ``None`` or nothing but commas -> ``None``."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _given_list(value: str, name: str) -> list[str]:
    """A comma list given on the command line: its items in order, each once; an empty one is an error (an
    empty ``--langs`` would otherwise mean "the default", which may be hours of work)."""
    items = csv_list(value)
    if items is None:
        raise XlingError(f"{name} is empty ({value!r}); give at least one value, or leave the flag out for the default")
    return list(dict.fromkeys(items))


def key_values(pairs: typing.Iterable[str], name: str) -> dict:
    """Repeated ``KEY=VALUE`` -> a dict (``-`` in keys becomes ``_``; values parsed as JSON when they can be)."""
    out = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            raise XlingError(f"{name} expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = option_value(raw)
    return out


def _base_type(hint) -> tuple[Any, bool]:
    """``int | None`` -> ``(int, True)``; ``list[str]`` -> ``(list[str], False)``."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else str  # str | Path -> taken as a string
    return hint, optional


def _converter(f: dataclasses.Field, hint) -> Callable[[str], Any]:
    meta, name = f.metadata, flag(f.name) if not f.metadata.get("flag") else f.metadata["flag"]
    parse = meta.get("parse")
    base, _ = _base_type(hint)
    if callable(parse):
        one = parse
    elif parse == "list" or (parse is None and typing.get_origin(base) is list):
        def one(v, name=name):
            return _given_list(v, name)
    elif parse == "tuple" or (parse is None and typing.get_origin(base) is tuple):
        def one(v, name=name):
            return tuple(_given_list(v, name))
    elif parse == "json":
        one = option_value
    elif base in (int, float):
        def one(v, base=base):
            try:
                return base(v)
            except ValueError:
                kind = "a whole number" if base is int else "a number"
                raise XlingError(f"{name} expects {kind}, got {v!r}") from None
    elif base is Path:
        one = Path
    else:
        one = str

    if meta.get("none"):
        return lambda v: None if v.strip().lower() == "none" else one(v)
    return one


def add_flags(parser: argparse.ArgumentParser, cls: type, *, skip: typing.Iterable[str] = (),
              defaults: dict | None = None) -> None:
    """Add one flag per field of the dataclass ``cls`` (fields with ``cli=False`` or in ``skip`` left out).

    ``defaults`` overrides the default shown in the help of some fields (a command whose default model
    differs from the config's). Flags that are not given stay out of the namespace, so :func:`from_args`
    leaves those fields to the dataclass.
    """
    hints = typing.get_type_hints(cls)
    skip = set(skip)
    groups: dict[str, Any] = {}
    headings: dict[str, Any] = {}
    required_groups = {f.metadata["exclusive"] for f in dataclasses.fields(cls)
                       if f.metadata.get("exclusive") and f.metadata.get("required")}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        unknown = set(meta) - _KEYS
        if unknown:
            raise TypeError(f"{cls.__name__}.{f.name}: unknown option metadata {sorted(unknown)}")
        if f.name in skip or meta.get("cli") is False:
            continue
        target = parser
        if meta.get("group"):
            if meta["group"] not in headings:
                headings[meta["group"]] = parser.add_argument_group(meta["group"])
            target = headings[meta["group"]]
        if meta.get("exclusive"):
            if meta["exclusive"] not in groups:
                groups[meta["exclusive"]] = target.add_mutually_exclusive_group(
                    required=meta["exclusive"] in required_groups)
            target = groups[meta["exclusive"]]
        names = [flag(f.name, cls)] + ([meta["short"]] if meta.get("short") else [])
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if meta.get("positional"):
            names, kwargs = [f.name], {"default": argparse.SUPPRESS}
        elif meta.get("required") and not meta.get("exclusive"):
            kwargs["required"] = True
        help_text = meta.get("help") or ""
        shown = (defaults or {}).get(f.name, f.default if f.default is not _MISSING else None)
        base, _ = _base_type(hints[f.name])
        if base is bool and not meta.get("parse"):
            kwargs["action"] = "store_false" if meta.get("negate") else "store_true"
        else:
            kwargs["type"] = _converter(f, hints[f.name])
            if meta.get("positional") and typing.get_origin(base) is list:
                kwargs["type"], kwargs["nargs"] = str, "+"  # one value per argument, not a comma list
                kwargs["metavar"] = meta.get("metavar") or f.name.upper()
            elif meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            elif base is int:
                kwargs["metavar"] = "N"
            elif base is float:
                kwargs["metavar"] = "X"
            elif typing.get_origin(base) in (list, tuple) or meta.get("parse") in ("list", "tuple"):
                kwargs["metavar"] = "A,B,..."
            if meta.get("choices") and not meta.get("repeat") and typing.get_origin(base) not in (list, tuple):
                kwargs["choices"] = meta["choices"]
            if meta.get("repeat"):
                kwargs["action"] = "append"
            if help_text and "default" not in help_text and shown not in (None, "", [], ()) \
                    and not meta.get("repeat"):
                if isinstance(shown, (list, tuple)):
                    shown = ",".join(map(str, shown))
                help_text = f"{help_text} (default {shown})"
        kwargs["help"] = help_text.replace("%", "%%") or None
        target.add_argument(*names, **kwargs)


def _merged(dicts: typing.Iterable[dict]) -> dict:
    """Dicts merged in order; a nested dict is merged key by key (``{"xsim": {"k": 8}}`` then ``{"xsim": ...}``)."""
    out: dict = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def from_args(cls: type, args: argparse.Namespace, **overrides) -> Any:
    """The config ``cls`` from the flags given (absent flags keep the dataclass default) and ``overrides``."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if f.metadata.get("repeat") and f.metadata.get("parse") == "kv":
            value = key_values(value or [], flag(f.name, cls))
        elif f.metadata.get("repeat") and value and all(isinstance(v, dict) for v in value):
            value = _merged(value)  # a repeated flag whose parse gives dicts (--metric-option xsim.k=8): one dict
        values[f.name] = value
    values.update(overrides)
    return cls(**values)


def add_command(sub, name: str, cls: type, run: Callable[[Any], int], *, help: str, description: str | None = None,
                skip: typing.Iterable[str] = (), defaults: dict | None = None,
                extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """A subcommand whose flags are the fields of ``cls``; ``run(config) -> exit code`` is the thin printer.

    ``extra`` adds flags that are not config fields (placement flags read before any work). ``defaults``
    are config values this command uses instead of the dataclass defaults.
    """
    p = sub.add_parser(name, help=help, description=description or help)
    add_flags(p, cls, skip=skip, defaults=defaults)
    if extra is not None:
        extra(p)

    def func(args):
        given = {k: v for k, v in (defaults or {}).items() if not hasattr(args, k)}
        return run(from_args(cls, args, **given))

    func.config = cls  # which config the command builds (its defaults are the flags' defaults)
    p.set_defaults(func=func)
    return p


__all__ = ["add_command", "add_flags", "at_least", "between", "check_config", "csv_list", "device_option",
           "dtype_option", "executor_option", "flag", "from_args", "key_values", "option", "overwrite_option",
           "quiet_option", "ray_address_option", "ray_workers_option", "store_option", "task_options_option",
           "threads_option"]
