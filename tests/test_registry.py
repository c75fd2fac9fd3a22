"""The one registry type (xling.registry): lazy targets, collisions, unknown names, options, coercion."""

from __future__ import annotations

import sys
from typing import Sequence

import pytest

from xling.errors import XlingError
from xling.registry import Registry, registry_of, signature_options


@pytest.fixture
def lazy_module(monkeypatch):
    """A module ``xling_test_lazy`` that counts how often it is imported."""
    imported = []

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name != "xling_test_lazy":
                return None
            import importlib.machinery

            return importlib.machinery.ModuleSpec(name, self)

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            imported.append(module.__name__)

            def build(size: int = 3):
                return ["x"] * size

            module.build = build
            module.TABLE = {"a": 1}

    finder = Finder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "xling_test_lazy", raising=False)
    yield imported
    sys.modules.pop("xling_test_lazy", None)


def test_a_lazy_target_is_imported_on_first_get_and_once(lazy_module):
    reg = Registry("thing")
    reg.register("b", "xling_test_lazy:build")
    assert "b" in reg and reg.names() == ["b"] and lazy_module == []  # listing imports nothing
    fn = reg.get("b")
    assert fn() == ["x"] * 3 and lazy_module == ["xling_test_lazy"]
    assert reg.get("b") is fn and reg["b"] is fn and lazy_module == ["xling_test_lazy"]
    assert reg.options("b") == {"size": 3}
    reg.register("b", "xling_test_lazy:build")  # the same reference again: no collision
    reg.register("b", fn)  # nor the object it names
    reg.register("t", "xling_test_lazy:TABLE")
    assert reg.get("t") == {"a": 1}


def test_a_collision_is_refused_unless_replaced():
    reg = Registry("metric")

    @reg.register("m")
    def first(pair):
        return 1

    with pytest.raises(ValueError, match="metric 'm' is already registered"):
        reg.register("m", lambda pair: 2)
    reg.register("m", first)  # the same target: a no-op
    reg.register("m", lambda pair: 3, replace=True)
    assert reg.get("m")(None) == 3
    with pytest.raises(ValueError, match="'package.module:object'"):
        reg.register("n", "not a reference")


def test_aliases_and_case():
    reg = Registry("corpus", ignore_case=True)
    reg.register("django", object(), aliases=("builtin", "default"))
    assert "DJANGO" in reg and " Builtin " in reg and reg.canonical("default") == "django"
    assert list(reg) == ["django"] and reg.names(aliases=True) == ["builtin", "default", "django"]
    reg["builtin"] = replacement = object()  # an alias stands for its name
    assert reg["django"] is replacement and list(reg) == ["django"]
    with pytest.raises(ValueError, match="alias 'builtin' is already taken"):
        reg.register("other", object(), aliases=("builtin",))
    del reg["django"]
    assert "builtin" not in reg and len(reg) == 0


def test_an_unknown_name_is_one_line_with_a_suggestion():
    reg = registry_of("metric", {"mexa": 1, "retrieval": 2, "xsim": 3})
    with pytest.raises(XlingError) as exc:
        reg.get("mexaa")
    assert str(exc.value) == "unknown metric 'mexaa' (did you mean 'mexa'?); known: mexa, retrieval, xsim"
    with pytest.raises(XlingError) as exc:
        reg.get("zzz")
    assert str(exc.value) == "unknown metric 'zzz'; known: mexa, retrieval, xsim"
    assert reg.get("zzz", None) is None
    with pytest.raises(KeyError):
        reg["zzz"]
    worded = Registry("condition", ordered=True, unknown="unknown condition {name!r}{hint} (available: {known})")
    for name in ("task", "add", "stack"):
        worded.register(name, object())
    with pytest.raises(XlingError, match=r"^unknown condition 'ad' \(did you mean 'add'\?\) \(available: task, add, "
                                         r"stack\)$"):
        worded.get("ad")


def test_the_mapping_interface():
    reg = registry_of("pooling", [("mean", 1), ("last", 2)])
    assert list(reg.items()) == [("mean", 1), ("last", 2)] and set(reg) == {"mean", "last"}
    reg["cls"] = 3  # what monkeypatch.setitem does
    assert reg.pop("cls") == 3 and "cls" not in reg
    assert reg.info("mean") == {}
    reg.register("first", 4, description="the first token")
    assert reg.info("first") == {"description": "the first token"}


def build(langs: Sequence[str] | None = None, train_size: int = 2000, scale: float = 1.0, quiet: bool = False,
          name: str = "t", ks: tuple = (1, 5), *, seed: int | None = None, required=None):
    return locals()


def test_options_come_from_the_signature():
    reg = Registry("task")
    reg.register("t", build)
    want = {"langs": None, "train_size": 2000, "scale": 1.0, "quiet": False, "name": "t", "ks": (1, 5), "seed": None,
            "required": None}
    assert reg.options("t") == want == signature_options(build)
    reg.register("given", lambda deltas, **kw: 0, options={"lambda": 1.0})
    assert reg.options("given") == {"lambda": 1.0}
    with pytest.raises(XlingError, match="unknown task 'nope'"):
        reg.options("nope")


def test_coercion_converts_command_line_strings():
    reg = Registry("task")
    reg.register("t", build)
    got = reg.coerce("t", {"langs": "de, fr", "train_size": "10", "scale": "0.5", "quiet": "yes", "name": 7,
                           "ks": "1,10", "seed": "none"})
    assert got == {"langs": ["de", "fr"], "train_size": 10, "scale": 0.5, "quiet": True, "name": "7", "ks": (1, 10),
                   "seed": None}
    assert reg.coerce("t", {"train_size": 3.0, "quiet": False, "langs": ["de"], "seed": "4"}) == {
        "train_size": 3, "quiet": False, "langs": ["de"], "seed": 4}


@pytest.mark.parametrize("values, message", [
    ({"trainsize": 1}, "task t has no option 'trainsize' (did you mean 'train_size'?) (options: langs, train_size, "
                       "scale, quiet, name, ks, seed, required)"),
    ({"bogus": 1}, "task t has no option 'bogus' (options: langs, train_size, scale, quiet, name, ks, seed, required)"),
    ({"train_size": "many"}, "task t: option train_size must be an integer, got 'many'"),
    ({"train_size": True}, "task t: option train_size must be an integer, got True"),
    ({"train_size": 2.5}, "task t: option train_size must be an integer, got 2.5"),
    ({"quiet": "maybe"}, "task t: option quiet must be true or false, got 'maybe'"),
    ({"scale": "lots"}, "task t: option scale must be a number, got 'lots'"),
    ({"scale": "inf"}, "task t: option scale must be finite, got inf"),
    ({"ks": "1,x"}, "task t: option ks must be a list of integers, got '1,x'"),
])
def test_coercion_errors_are_one_line_naming_the_option(values, message):
    reg = Registry("task")
    reg.register("t", build)
    with pytest.raises(XlingError) as exc:
        reg.coerce("t", values)
    assert str(exc.value) == message


def read(path, limit: int = 1, **extra):
    return limit, extra


def test_a_target_taking_kwargs_accepts_any_option():
    reg = Registry("reader")
    reg.register("r", read)
    assert reg.options("r") == {"limit": 1}
    assert reg.coerce("r", {"limit": "2", "other": "[1, 2]", "word": "x"}) == {"limit": 2, "other": [1, 2], "word": "x"}
