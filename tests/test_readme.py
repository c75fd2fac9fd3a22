"""The README runs as written: every `xling` command in its bash blocks parses, uses only variables
set before it, reads only what an earlier command wrote, and its metric options and languages are valid."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Flags whose value names a model or module: a local one (under xling-out/ or a README variable) must
#: have been written by an earlier README command.
MODEL_FLAGS = ("model", "base", "language_module", "reference")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def segments(block: str):
    """``(line, tokens)`` for every simple command of a block (split on ; && || |)."""
    for line in block.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lex.whitespace_split = True
        lex.commenters = "#"
        current: list[str] = []
        for tok in list(lex) + [";"]:
            if tok in (";", "&&", "||", "|", "&"):
                if current:
                    yield line.strip(), current
                current = []
            else:
                current.append(tok)


def expand(tok: str, env: dict[str, str], line: str) -> str:
    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in env:
            raise AssertionError(f"README: ${name} is used before it is set: {line}")
        return env[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, tok)


def _parser():
    from xling.cli import build_parser

    return build_parser()


def _config_default(args, attr: str):
    """A flag the command line left out: the default of its field in the command's config (None if none)."""
    import dataclasses

    cls = getattr(getattr(args, "func", None), "config", None)
    field = {f.name: f for f in dataclasses.fields(cls)}.get(attr) if cls else None
    value = None if field is None else field.default
    return str(value) if isinstance(value, Path) else value


def check_readme(text: str) -> list[str]:
    """Problems found in the README text (empty when it runs as written)."""
    from xling.data.django_corpus import default_languages, django_corpus
    from xling.data.langcodes import normalize_lang
    from xling.harness.config import from_args
    from xling.recipes.align.config import AlignConfig

    parser = _parser()
    defaults = set(default_languages())
    env: dict[str, str] = {}
    produced: set[str] = set()
    problems: list[str] = []
    n_commands = 0
    for block in bash_blocks(text):
        for line, toks in segments(block):
            try:
                toks = [expand(t, env, line) for t in toks]
            except AssertionError as exc:
                problems.append(str(exc))
                continue
            while toks and re.fullmatch(r"[A-Za-z_]\w*=.*", toks[0]):
                name, value = toks.pop(0).split("=", 1)
                env[name] = value
            if ">" in toks:  # printf ... > file: a file later commands may read
                produced.add(toks[toks.index(">") + 1])
                toks = toks[: toks.index(">")]
            if not toks or toks[0] != "xling":
                continue
            n_commands += 1
            try:
                args = parser.parse_args(toks[1:])
            except SystemExit:
                problems.append(f"README: does not parse: {line}")
                continue
            local = lambda v: v.startswith(("xling-out", "./", "/")) or any(  # noqa: E731
                v.startswith(val) for val in env.values() if "/" in val)
            for flag in MODEL_FLAGS:
                value = getattr(args, flag, None)
                if isinstance(value, str):
                    if re.fullmatch(r"[A-Z_]+", value):
                        problems.append(f"README: placeholder {value!r} for --{flag.replace('_', '-')}: {line}")
                    elif local(value) and value not in produced:
                        problems.append(f"README: --{flag.replace('_', '-')} {value} is not written by an earlier "
                                        f"command: {line}")
            if args.command == "compose":
                for item in args.inputs:
                    if item not in produced:
                        problems.append(f"README: compose input {item!r} is not written by an earlier command: {line}")
            if args.command == "modules" and getattr(args, "module", None) and args.module not in produced:
                problems.append(f"README: module {args.module!r} is not written by an earlier command: {line}")
            if args.command == "align":
                data, langs = getattr(args, "data", None), getattr(args, "langs", None)  # flags given only
                try:
                    from_args(AlignConfig, args)  # the metrics and their options, checked as xling align checks them
                except Exception as exc:  # noqa: BLE001 - reported with the line
                    problems.append(f"README: {exc}: {line}")
                if data in (None, "django") and langs:
                    corpus = django_corpus()
                    for code in langs:
                        if corpus.resolve(normalize_lang(code)) not in defaults:
                            problems.append(f"README: {code} is not a default language of the built-in corpus: {line}")
                if data and "=" in data:
                    for item in data.split(","):
                        if item.split("=", 1)[1] not in produced:
                            problems.append(f"README: {item} is not written by an earlier command: {line}")
                elif data and data.endswith((".tsv", ".jsonl")) and data not in produced:
                    problems.append(f"README: {data} is not written by an earlier command: {line}")
            for attr in ("out", "name"):
                value = getattr(args, attr) if hasattr(args, attr) else _config_default(args, attr)
                if isinstance(value, str):
                    produced.add(value)
    if n_commands < 20:
        problems.append(f"README: only {n_commands} xling commands found; is the block syntax still ```bash?")
    return problems


def test_readme_commands_run_as_written():
    problems = check_readme(README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_readme_python_example_uses_default_languages():
    from xling.data.django_corpus import default_languages, django_corpus
    from xling.data.langcodes import normalize_lang

    text = README.read_text(encoding="utf-8")
    calls = re.findall(r"xling\.align\(langs=\[([^\]]*)\]", text)
    assert calls
    corpus, defaults = django_corpus(), set(default_languages())
    for call in calls:
        for code in re.findall(r"\"(\w+)\"", call):
            assert corpus.resolve(normalize_lang(code)) in defaults, code


@pytest.mark.parametrize("bad, message", [
    ("```bash\nxling compose a b --method ties --out mods/ab\n```", "compose input 'a'"),
    ("```bash\nxling compose $M/x --out y\n```", "$M is used before it is set"),
    ("```bash\nM=xling-out/m\nxling compose xling-out/t --method dare --base BASE --out $M/x\n```", "placeholder 'BASE'"),
    ("```bash\nxling align --metrics mexa --metric-option anc.signed=true\n```", "unknown option 'signed'"),
    ("```bash\nxling align --langs de,sw\n```", "de is not a default language"),
    ("```bash\nxling align --data eng=en.txt,deu=de.txt\n```", "eng=en.txt is not written"),
    ("```bash\nxling align --no-such-flag\n```", "does not parse"),
    ("```bash\nxling eval --model xling-out/never\n```", "--model xling-out/never is not written"),
])
def test_checker_catches_what_the_old_readme_had(bad, message, capsys):
    problems = check_readme(bad)
    capsys.readouterr()  # argparse's usage message for the unparsable line
    assert any(message in p for p in problems), problems
