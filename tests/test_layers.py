"""The package's layers, checked on the source: no import runs upward, argparse only in the CLI.

Layer order (low to high)::

    data < models < engine < tasks < (modules, methods) < runs < cli < _entry

* leaf helpers ``xling.errors``, ``xling.io``, ``xling.options``, ``xling.deps``
  may be imported from anywhere and import only each other;
* ``tasks`` imports neither ``modules`` nor ``methods``; ``modules`` and ``methods``
  are one layer (composition math in methods, the module files in modules, training
  on both) whose module-level imports must be acyclic;
* the package root ``xling`` is the API facade (lazy ``xling.align`` and friends): a
  ``runs``-level module for what it imports; importing ``__version__`` or
  ``XlingError`` from it counts as a leaf import;
* ``_entry`` (the console script) sits on top and imports the CLI lazily.

Every import counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LEAVES = {"xling.errors", "xling.io", "xling.options", "xling.deps", "xling.textsafe"}
LAYERS = {"data": 0, "models": 1, "engine": 2, "tasks": 3, "modules": 4, "methods": 4, "runs": 5, "cli": 6,
          "_entry": 7}
ROOT_LEAF_NAMES = {"__version__", "XlingError"}  # the facade's names that need nothing above a leaf


def module_names(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for f in sorted((src / "xling").rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def layer(module: str) -> int | None:
    """A module's layer; ``None`` for a leaf helper."""
    if module in LEAVES:
        return None
    if module == "xling":
        return LAYERS["runs"]
    return LAYERS[module.split(".")[1]]


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported xling module, line)`` for every import in the file, function bodies included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(resolve(a.name), node.lineno) for a in node.names if a.name.split(".")[0] == "xling"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "xling":
                continue
            if name == "xling" and all(a.name in ROOT_LEAF_NAMES for a in node.names):
                found.append(("xling.errors", node.lineno))  # __version__ / XlingError: no facade needed
                continue
            subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in known]
            found += [(s, node.lineno) for s in subs] or [(resolve(name), node.lineno)]
    return found


def violations(src: Path = SRC) -> list[str]:
    known = module_names(src)
    bad = []
    for module, path in known.items():
        mine = layer(module)
        for target, line in imports(module, path, known):
            theirs = layer(target)
            where = f"{path.relative_to(src)}:{line}: {module} imports {target}"
            if mine is None and theirs is not None:
                bad.append(f"{where} (a leaf helper imports only leaves)")
            elif mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{where} (layer {theirs} above {mine})")
    return bad


def same_layer_cycles(src: Path = SRC, layer_of: int = LAYERS["methods"]) -> list[list[str]]:
    """Import cycles among the modules of one layer (strongly connected components of size > 1)."""
    known = module_names(src)
    members = [m for m in known if layer(m) == layer_of]
    graph = {m: {t for t, _ in imports(m, known[m], known) if t in members and t != m} for m in members}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in members:
        if m not in index:
            visit(m)
    return cycles


def argparse_outside_cli(src: Path = SRC) -> list[str]:
    bad = []
    for module, path in module_names(src).items():
        if module == "xling.cli" or module.startswith("xling.cli."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names) or \
                    isinstance(node, ast.ImportFrom) and node.module == "argparse":
                bad.append(f"{path.relative_to(src)}:{node.lineno}: imports argparse")
            elif isinstance(node, ast.Attribute) and node.attr in ("add_parser", "add_argument", "add_subparsers",
                                                                   "add_argument_group",
                                                                   "add_mutually_exclusive_group"):
                bad.append(f"{path.relative_to(src)}:{node.lineno}: calls {node.attr}")
    return bad


def test_every_module_has_a_layer():
    for module in module_names():
        layer(module)  # a KeyError names a package the rule does not know


def test_no_import_runs_upward():
    assert violations() == []


def test_modules_and_methods_import_each_other_without_cycles():
    assert same_layer_cycles() == []


def test_argparse_only_in_the_cli():
    assert argparse_outside_cli() == []


@pytest.mark.parametrize("rel, line, expect", [
    ("xling/data/corpus.py", "    import xling.tasks\n", "xling.data.corpus imports xling.tasks"),
    ("xling/methods/probe.py", "    from xling.runs.store import DEFAULT_STORE\n", "imports xling.runs.store"),
    ("xling/errors.py", "from xling.data import langcodes\n", "leaf helper"),
    ("xling/runs/store.py", "from xling.cli.common import csv_list\n", "imports xling.cli.common"),
])
def test_a_bad_import_is_caught(tmp_path, rel, line, expect):
    import shutil

    shutil.copytree(SRC / "xling", tmp_path / "xling")
    path = tmp_path / rel
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _bad():\n" + line if line.startswith(" ")
                    else path.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    found = violations(tmp_path)
    assert len(found) == 1 and expect in found[0], found


def test_argparse_outside_the_cli_is_caught(tmp_path):
    import shutil

    shutil.copytree(SRC / "xling", tmp_path / "xling")
    path = tmp_path / "xling/runs/probe.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _p(sub):\n    sub.add_parser('x')\n", encoding="utf-8")
    found = argparse_outside_cli(tmp_path)
    assert len(found) == 1 and "add_parser" in found[0], found
