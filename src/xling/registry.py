"""One registry type for every ``name -> object`` table of xling: metrics, composers, corpora, tasks, ...

::

    POOLINGS = Registry(kind="pooling")

    @POOLINGS.register("mean")
    def mean_pool(hidden, mask, *, scale: float = 1.0): ...

    POOLINGS.register("last", "xling.engine.pooling:last_pool")   # lazy: imported on first use
    POOLINGS.get("mean"), POOLINGS.options("mean")                # -> mean_pool, {"scale": 1.0}

* A target is an object or a lazy ``"package.module:object"`` string, imported on the first
  :meth:`~Registry.get` (once); listing names imports nothing.
* Registering a name again with a different target is a programming error (``ValueError``)
  unless ``replace=True``; the same target again is a no-op.
* :meth:`~Registry.get` of an unknown name is one :class:`~xling.errors.XlingError` line with the
  closest name: ``unknown metric 'mexaa' (did you mean 'mexa'?); known: anc, mexa, ...``
  (each registry may word it its own way with ``unknown=``).
* :meth:`~Registry.options` are the keyword options of a target with their defaults, read from its
  signature (or given at registration), and :meth:`~Registry.coerce` turns option values, command-line
  strings included, into their declared types (:func:`xling.options.convert_option`).

A registry is also a mutable mapping (``name in R``, ``R[name]``, ``R.items()``, ``del R[name]``), so
code written for the plain dicts it replaced keeps working. A leaf module: it imports only the error
type and :mod:`xling.options`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import MutableMapping
from typing import Any, Iterable, Iterator, Mapping

from xling.errors import XlingError
from xling.options import convert_option, option_kind, option_value

_MISSING = object()
#: Parameter kinds that can be given as ``name=value``.
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def is_reference(target: Any) -> bool:
    """Whether ``target`` is a lazy ``"package.module:object"`` reference."""
    if not isinstance(target, str):
        return False
    module, sep, attr = target.partition(":")
    return bool(sep and module.strip() and attr.strip() and ":" not in attr)


def resolve_reference(ref: str) -> Any:
    """The object a ``"package.module:object"`` reference names (``object`` may be dotted)."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def signature_options(fn: Any) -> dict[str, Any]:
    """``{option: default}``: the parameters of ``fn`` that can be given by keyword and have a default, in
    signature order (what a registered function accepts as options; ``{}`` when it has no signature)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params.values() if p.kind in _KEYWORD and p.default is not p.empty}


def _reference_of(obj: Any) -> str | None:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{name}" if module and name else None


class Registry(MutableMapping):
    """Named targets of one kind (see the module docstring).

    ``kind`` names the entries in messages (``"metric"``, ``"composition method"``). ``ignore_case``:
    names match ignoring case and surrounding spaces. ``ordered``: :meth:`names` and the known names of
    an error keep the registration order instead of sorting. ``unknown`` and ``no_option`` word the two
    user errors; their fields are ``{kind}``, ``{name}``, ``{known}``, ``{hint}`` (`` (did you mean
    'x'?)`` or nothing: the closest name, or option) and, for ``no_option``, ``{option}``.
    """

    UNKNOWN = "unknown {kind} {name!r}{hint}; known: {known}"
    NO_OPTION = "{kind} {name} has no option {option!r}{hint} (options: {known})"

    def __init__(self, kind: str, *, ignore_case: bool = False, ordered: bool = False, unknown: str | None = None,
                 no_option: str | None = None):
        self.kind = kind
        self.ignore_case = ignore_case
        self.ordered = ordered
        self.unknown_message = unknown or self.UNKNOWN
        self.no_option_message = no_option or self.NO_OPTION
        self._targets: dict[str, Any] = {}
        self._refs: dict[str, str] = {}  # name -> the lazy reference it was registered with
        self._info: dict[str, dict] = {}
        self._options: dict[str, dict | None] = {}  # name -> options given at registration (None: signature)
        self._aliases: dict[str, str] = {}  # alias -> name

    # ------------------------------------------------------------------ registering

    def _key(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} names are strings, got {name!r}")
        return name.strip().lower() if self.ignore_case else name

    def register(self, name: str, target: Any = None, *, aliases: Iterable[str] = (), replace: bool = False,
                 options: Mapping[str, Any] | None = None, **info):
        """Register ``target`` (an object or a ``"module:object"`` string) under ``name``; returns ``target``.

        Without ``target``, a decorator. ``aliases`` are other names for it; ``options`` its option
        defaults when the signature does not tell them; ``info`` is kept as :meth:`info`.
        """
        if target is None:
            return lambda fn: self.register(name, fn, aliases=aliases, replace=replace, options=options, **info)
        key = self._key(name)
        if isinstance(target, str) and not is_reference(target):
            raise ValueError(f"{self.kind} {name!r}: a string target must be 'package.module:object', got {target!r}")
        if key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is already an alias of {self._aliases[key]!r}")
        if key in self._targets and not replace and not self._same(key, target):
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        spellings = []  # checked before anything is stored: a refused registration leaves no trace
        for alias in aliases:
            a = self._key(alias)
            if a != key and (a in self._targets or self._aliases.get(a, key) != key):
                raise ValueError(f"{self.kind} alias {alias!r} is already taken")
            spellings += [a] if a != key else []
        if key not in self._targets or replace or isinstance(self._targets[key], str):
            self._targets[key] = target
            if isinstance(target, str):
                self._refs[key] = target
            else:
                self._refs.pop(key, None)
        self._info[key] = dict(info)
        self._options[key] = dict(options) if options is not None else None
        self._aliases.update(dict.fromkeys(spellings, key))
        return target

    def _same(self, key: str, target: Any) -> bool:
        have = self._targets[key]
        if have is target:
            return True
        if not isinstance(target, str) and not isinstance(have, str):
            try:
                return bool(have == target)  # an equal spec (a dataclass around the same function)
            except (TypeError, ValueError, RuntimeError):  # == gave no truth value (arrays, tensors)
                return False
        ref = self._refs.get(key)
        if isinstance(target, str):
            return target == ref or target == _reference_of(have)
        return ref is not None and ref == _reference_of(target)

    # ------------------------------------------------------------------ looking up

    def canonical(self, name: str) -> str | None:
        """The registered name ``name`` (a name or an alias) stands for, else None."""
        if not isinstance(name, str):
            return None
        key = self._key(name)
        key = self._aliases.get(key, key)
        return key if key in self._targets else None

    def _resolve(self, key: str) -> Any:
        target = self._targets[key]
        if isinstance(target, str):
            target = self._targets[key] = resolve_reference(target)
        return target

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The target of ``name`` (lazy ones imported now, once); unknown: ``default`` if given, else one
        :class:`XlingError` line (:meth:`unknown`)."""
        key = self.canonical(name)
        if key is None:
            if default is not _MISSING:
                return default
            raise self.unknown(name)
        return self._resolve(key)

    def suggest(self, name: str, cutoff: float = 0.6) -> str | None:
        """The registered name closest to ``name`` (aliases count), or None."""
        if not isinstance(name, str):
            return None
        spellings = [*self._targets, *self._aliases]
        close = difflib.get_close_matches(self._key(name), spellings, n=1, cutoff=cutoff)
        return self._aliases.get(close[0], close[0]) if close else None

    def unknown(self, name: str, **fields) -> XlingError:
        """The error for an unknown ``name``, worded by the registry's ``unknown`` template."""
        close = self.suggest(name)
        hint = f" (did you mean {close!r}?)" if close else ""
        return XlingError(self.unknown_message.format(kind=self.kind, name=name, hint=hint,
                                                      known=", ".join(self.names()) or "none", **fields))

    def no_option(self, name: str, option: str, known: Iterable[str]) -> XlingError:
        """The error for an option ``name`` does not have, worded by the registry's ``no_option`` template."""
        known = list(known)
        close = difflib.get_close_matches(str(option), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return XlingError(self.no_option_message.format(kind=self.kind, name=name, option=option, hint=hint,
                                                        known=", ".join(known) or "none"))

    def names(self, aliases: bool = False) -> list[str]:
        """Registered names, sorted (registration order if ``ordered``); ``aliases``: their aliases too."""
        names = list(self._targets) + (list(self._aliases) if aliases else [])
        return names if self.ordered else sorted(names)

    def info(self, name: str) -> dict:
        """What was registered with ``name`` besides its target (keyword ``info``)."""
        key = self.canonical(name)
        if key is None:
            raise self.unknown(name)
        return dict(self._info[key])

    # ------------------------------------------------------------------ options

    def _parameters(self, key: str) -> dict[str, inspect.Parameter] | None:
        try:
            params = inspect.signature(self._resolve(key)).parameters
        except (TypeError, ValueError):
            return None
        return dict(params)

    def options(self, name: str) -> dict[str, Any]:
        """``{option: default}`` of ``name``: given at registration, else the target's keyword parameters
        that have a default, in signature order (``name`` unknown: :meth:`unknown`)."""
        key = self.canonical(name)
        if key is None:
            raise self.unknown(name)
        if self._options[key] is not None:
            return dict(self._options[key])
        return signature_options(self._resolve(key))

    def coerce(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (command-line strings or Python values) in the declared types of ``name``'s options.

        An option ``name`` does not have, or a value not of its type, is one :class:`XlingError` line
        naming the option (and the known ones). A target taking ``**kwargs`` accepts any other option
        as it is (a string read as JSON when it parses).
        """
        defaults = self.options(name)
        key = self.canonical(name)
        params = self._parameters(key) if self._options[key] is None else None
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in (params or {}).values())
        out = {}
        for option, value in values.items():
            if option not in defaults:
                if not open_ended:
                    raise self.no_option(name, option, defaults)
                out[option] = option_value(value) if isinstance(value, str) else value
                continue
            default = defaults[option]
            optional = default is None
            if optional and (value is None or isinstance(value, str) and value.strip().lower() in ("none", "null")):
                out[option] = None
                continue
            annotation = params[option].annotation if params and option in params else None
            kind = option_kind(default, None if annotation is inspect.Parameter.empty else annotation)
            out[option] = convert_option(value, kind, f"{self.kind} {name}: option {option}")
        return out

    # ------------------------------------------------------------------ the mapping

    def __getitem__(self, name: str) -> Any:
        key = self.canonical(name)
        if key is None:
            raise KeyError(name)
        return self._resolve(key)

    def __setitem__(self, name: str, target: Any) -> None:
        self.register(self.canonical(name) or name, target, replace=True)  # an alias stands for its name

    def __delitem__(self, name: str) -> None:
        key = self.canonical(name)
        if key is None:
            raise KeyError(name)
        for store in (self._targets, self._refs, self._info, self._options):
            store.pop(key, None)
        self._aliases = {a: k for a, k in self._aliases.items() if k != key}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._targets))

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"Registry(kind={self.kind!r}, names={self.names()!r})"


def registry_of(kind: str, entries: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
                **kwargs) -> Registry:
    """A :class:`Registry` holding ``entries`` (``name -> target``), in their order."""
    reg = Registry(kind, **kwargs)
    for name, target in (entries.items() if isinstance(entries, Mapping) else entries):
        reg.register(name, target)
    return reg


__all__ = ["Registry", "registry_of", "signature_options", "is_reference", "resolve_reference"]
