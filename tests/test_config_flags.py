"""One source for every option: a command's flags are its config's fields (xling.harness.config)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from xling.cli import build_parser
from xling.errors import XlingError
from xling.harness.config import add_flags, check_config, flag, from_args, option, quiet_option, store_option

#: Flags that are not config fields: where the model is placed (read before any work, for every load).
NOT_CONFIG = {"help", "device_map", "quantize"}

#: command -> its config class (every command built by ``add_command`` is listed by the test below).
CONVERTED = {"lens": "xling.recipes.lens.config:LensConfig", "edit": "xling.recipes.edit.config:EditConfig",
             "eval": "xling.recipes.eval.config:EvalConfig",
             "task": "xling.recipes.task.config:TaskConfig", "compose": "xling.recipes.compose.config:ComposeConfig",
             "modules list": "xling.recipes.modules.config:ModulesListConfig",
             "modules show": "xling.recipes.modules.config:ModulesShowConfig",
             "matrix": "xling.recipes.matrix.config:MatrixConfig", "rank": "xling.recipes.rank.config:RankConfig",
             "align": "xling.recipes.align.config:AlignConfig", "models": "xling.recipes.align.config:ModelsConfig",
             "corpus": "xling.recipes.align.config:CorpusConfig", "probe": "xling.recipes.probe.config:ProbeConfig",
             "predict": "xling.recipes.predict.config:PredictConfig",
             "neurons": "xling.recipes.neurons.config:NeuronsConfig",
             "langid": "xling.recipes.langid.config:LangIdConfig", "runs": "xling.recipes.compare.config:RunsConfig",
             "compare": "xling.recipes.compare.config:CompareConfig",
             "consistency": "xling.recipes.consistency.config:ConsistencyConfig",
             "transfer": "xling.recipes.transfer.config:TransferConfig",
             "vocab trim": "xling.recipes.vocab.config:TrimConfig",
             "vocab extend": "xling.recipes.vocab.config:ExtendConfig",
             "vocab compare": "xling.recipes.vocab.config:CompareConfig",
             "vocab fertility": "xling.recipes.vocab.config:FertilityConfig",
             "vocab export": "xling.recipes.vocab.config:ExportConfig",
             "vocab transplant": "xling.recipes.vocab.config:TransplantConfig",
             "vocab replace": "xling.recipes.vocab.config:ReplaceConfig",
             "train": "xling.recipes.train.config:TrainRunConfig",
             "train-module": "xling.recipes.train_module.config:TrainModuleConfig",
             "knowledge": "xling.recipes.knowledge.config:KnowledgeConfig"}


#: command -> (the arguments it cannot run without, the config fields they give).
REQUIRED: dict[str, tuple[list[str], dict]] = {
    "compose": (["a", "b", "--out", "o"], {"inputs": ["a", "b"], "out": "o"}),
    "modules show": (["m"], {"module": "m"}),
    "compare": (["a", "b"], {"run_ids": ["a", "b"]}),
    "consistency": (["r"], {"run_id": "r"}),
    "vocab trim": (["--langs", "pt"], {"langs": ["pt"]}),
    "vocab extend": (["--corpus", "c", "--langs", "pt"], {"corpus": "c", "langs": ["pt"]}),
    "vocab compare": (["--model", "a", "--reference", "b"], {"model": "a", "reference": "b"}),
    "vocab fertility": (["--model", "a,b"], {"models": ["a", "b"]}),
    "vocab export": (["--model", "m", "--out", "m.gguf"], {"model": "m", "out": "m.gguf"}),
    "vocab transplant": (["--model", "m", "--tokenizer-from", "t"], {"model": "m", "tokenizer_from": "t"}),
    "vocab replace": (["--model", "m", "--data", "d", "--langs", "pt"], {"model": "m", "data": "d", "langs": ["pt"]}),
    "train-module": (["--kind", "task", "--out", "o"], {"kind": "task", "out": "o"}),
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by name; nested groups as "group action" (``vocab trim``)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return out


def _config(target: str):
    import importlib

    mod, name = target.split(":")
    return getattr(importlib.import_module(mod), name)


@pytest.mark.parametrize("command", sorted(CONVERTED))
def test_every_flag_is_a_config_field(command):
    cls = _config(CONVERTED[command])
    sub = _subparsers(build_parser())[command]
    dests = {a.dest for a in sub._actions} - NOT_CONFIG
    fields = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli") is not False}
    assert dests == fields


@pytest.mark.parametrize("command", sorted(CONVERTED))
def test_no_flags_gives_the_config_defaults(command):
    cls = _config(CONVERTED[command])
    argv, given = REQUIRED.get(command, ([], {}))
    args = build_parser().parse_args(command.split() + argv)
    assert from_args(cls, args) == cls(**given)


@dataclasses.dataclass
class _Cfg:
    langs: list[str] | None = option(None, help="languages")
    max_items: int = option(10, help="items", check=lambda v: None if v >= 1 else f"must be at least 1, got {v}")
    rate: float = option(0.5, help="a rate")
    mode: str = option("a", choices=("a", "b"), help="mode")
    store: str | None = store_option()
    target_langs: list[str] | None = option(None, flag="--targets", help="targets")
    opts: dict = option(default_factory=dict, parse="kv", repeat=True, help="KEY=VALUE")
    progress: bool = quiet_option()
    secret: int = option(3, cli=False)

    def __post_init__(self):
        check_config(self)


def _parse(argv):
    p = argparse.ArgumentParser()
    add_flags(p, _Cfg)
    return from_args(_Cfg, p.parse_args(argv))


def test_flags_parse_into_the_config():
    cfg = _parse(["--langs", "de, fr,", "--max-items", "3", "--rate", "0.25", "--mode", "b", "--store", "NONE",
                  "--targets", "sw", "--opts", "k=2", "--opts", "name=x", "--quiet"])
    assert cfg == _Cfg(langs=["de", "fr"], max_items=3, rate=0.25, mode="b", store=None, target_langs=["sw"],
                       opts={"k": 2, "name": "x"}, progress=False)
    assert _parse([]) == _Cfg()


def test_bad_values_name_the_flag():
    with pytest.raises(XlingError, match=r"^--max-items expects a whole number, got 'x'$"):
        _parse(["--max-items", "x"])
    with pytest.raises(XlingError, match=r"^--max-items must be at least 1, got 0$"):
        _parse(["--max-items", "0"])
    with pytest.raises(XlingError, match=r"^--mode must be one of a, b, got 'c'$"):
        _Cfg(mode="c")  # the API gets the same message as the command line
    with pytest.raises(XlingError, match=r"expects KEY=VALUE"):
        _parse(["--opts", "novalue"])


def test_api_only_field_has_no_flag_and_flag_spelling():
    p = argparse.ArgumentParser()
    add_flags(p, _Cfg)
    assert "--secret" not in p.format_help()
    assert flag("max_items") == "--max-items" and flag("target_langs", _Cfg) == "--targets"
    assert flag("progress", _Cfg) == "--quiet"


def test_unknown_metadata_is_refused():
    @dataclasses.dataclass
    class Bad:
        x: int = dataclasses.field(default=1, metadata={"hepl": "typo"})

    with pytest.raises(TypeError, match="unknown option metadata"):
        add_flags(argparse.ArgumentParser(), Bad)


def test_help_shows_defaults_once():
    p = argparse.ArgumentParser()
    add_flags(p, _Cfg)
    text = " ".join(p.format_help().split())
    assert "items (default 10)" in text and "a rate (default 0.5)" in text
