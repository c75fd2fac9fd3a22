"""The package's house plan, checked on the source: imports run downward only, no circles, recipes apart.

Layer order (low to high)::

    data < models < engine < tasks < methods < modules < harness < recipes < (the facade) < cli < _entry

* leaf helpers ``xling.errors``, ``xling.io``, ``xling.options``, ``xling.deps``, ``xling.textsafe``,
  ``xling.registry`` and ``xling.cache`` (the content cache the engine and the recipes share) may be
  imported from anywhere and import only each other;
* ``methods`` (pure functions: metrics, composition, statistics, lens, neurons) sits strictly below
  ``modules`` (the module file formats, which may use the composition maths);
* ``harness`` is what every recipe shares (config to flags, outputs, cache, HTML kit, store,
  executors); it never imports a recipe;
* a recipe (``xling.recipes.NAME``) imports the harness and the library, never another recipe;
* the package root ``xling`` is the API facade (lazy ``xling.align`` and friends), just above the
  recipes; importing ``__version__`` or ``XlingError`` from it counts as a leaf import;
* ``_entry`` (the console script) sits on top and imports the CLI lazily;
* no import circle anywhere, within a layer included.

Every import counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LEAVES = {"xling.errors", "xling.io", "xling.options", "xling.deps", "xling.textsafe", "xling.registry",
          "xling.cache"}
LAYERS = {"data": 0, "models": 1, "engine": 2, "tasks": 3, "methods": 4, "modules": 5, "harness": 6,
          "recipes": 7, "cli": 9, "_entry": 10}
FACADE = 8
ARGPARSE_PLACES = ("xling.cli", "xling.harness.config")  # the flags are built from the configs here only
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
        return FACADE
    return LAYERS[module.split(".")[1]]


def recipe_of(module: str) -> str | None:
    """``xling.recipes.align.run`` -> ``align``; ``None`` outside the recipes."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "recipes" else None


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
            elif recipe_of(module) and recipe_of(target) and recipe_of(module) != recipe_of(target):
                bad.append(f"{where} (a recipe imports another recipe)")
    return bad


def cycles(src: Path = SRC) -> list[list[str]]:
    """Import circles among all of xling's modules (strongly connected components of size > 1)."""
    known = module_names(src)
    members = list(known)
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
        if any(module == p or module.startswith(p + ".") for p in ARGPARSE_PLACES):
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


def _norm(found: list[str]) -> set[str]:
    return {re.sub(r":\d+:", ":", f) for f in found}


def test_no_import_runs_upward():
    found = _norm(violations())
    assert found == set()


def test_no_import_circle_anywhere():
    assert cycles() == []


def test_argparse_only_in_the_cli():
    assert argparse_outside_cli() == []


@pytest.mark.parametrize("rel, line, expect", [
    ("xling/data/corpus.py", "    import xling.tasks\n", "xling.data.corpus imports xling.tasks"),
    ("xling/methods/probe.py", "    from xling.harness.store import DEFAULT_STORE\n", "imports xling.harness.store"),
    ("xling/errors.py", "from xling.data import langcodes\n", "leaf helper"),
    ("xling/harness/store.py", "from xling.cli.common import csv_list\n", "imports xling.cli.common"),
    ("xling/harness/store.py", "    from xling.recipes.align.run import align\n", "imports xling.recipes.align.run"),
    ("xling/methods/chance.py", "    from xling.modules import meta\n", "imports xling.modules"),
    ("xling/recipes/vocab/run.py", "    from xling.recipes.lens.run import lens\n", "a recipe imports another recipe"),
])
def test_a_bad_import_is_caught(tmp_path, rel, line, expect):
    import shutil

    shutil.copytree(SRC / "xling", tmp_path / "xling")
    path = tmp_path / rel
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _bad():\n" + line if line.startswith(" ")
                    else path.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    found = sorted(_norm(violations(tmp_path)))
    assert len(found) == 1 and expect in found[0], found


def test_argparse_outside_the_cli_is_caught(tmp_path):
    import shutil

    shutil.copytree(SRC / "xling", tmp_path / "xling")
    path = tmp_path / "xling/recipes/probe/run.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _p(sub):\n    sub.add_parser('x')\n", encoding="utf-8")
    found = argparse_outside_cli(tmp_path)
    assert len(found) == 1 and "add_parser" in found[0], found


def test_a_circle_is_caught(tmp_path):
    import shutil

    shutil.copytree(SRC / "xling", tmp_path / "xling")
    path = tmp_path / "xling/data/overlap.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _c():\n    from xling.data import selection\n",
                    encoding="utf-8")
    path = tmp_path / "xling/data/selection.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _d():\n    from xling.data import overlap\n",
                    encoding="utf-8")
    found = [c for c in cycles(tmp_path) if "xling.data.overlap" in c]
    assert found and set(found[0]) >= {"xling.data.overlap", "xling.data.selection"}, found


IO_CALLS = {"open", "write_text", "read_text", "write_bytes", "read_bytes", "save_pretrained", "save_file", "mkdir",
            "unlink", "rmtree", "copyfile"}


def file_io_in_methods(src: Path = SRC) -> list[str]:
    """Calls that read or write files inside ``xling.methods`` (pure functions: the harness and formats do I/O)."""
    bad = []
    for module, path in module_names(src).items():
        if not module.startswith("xling.methods"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name in IO_CALLS:
                    bad.append(f"{path.relative_to(src)}:{node.lineno}: calls {name}")
    return bad


def test_methods_do_no_file_io():
    assert file_io_in_methods() == []


def test_file_io_in_methods_is_caught(tmp_path):
    import shutil

    shutil.copytree(SRC / "xling", tmp_path / "xling")
    path = tmp_path / "xling/methods/chance.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _w(p):\n    p.write_text('x')\n", encoding="utf-8")
    found = file_io_in_methods(tmp_path)
    assert len(found) == 1 and "write_text" in found[0], found
