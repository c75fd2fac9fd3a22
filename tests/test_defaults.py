"""Defaults that follow the data the user gave (issue 18, item 2): each test fails on the code before it."""

from __future__ import annotations

import json

import pytest
import torch

from xling.errors import XlingError

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- train --align-data, English-only task


def test_train_align_data_on_an_english_only_task_uses_the_corpus_languages(tiny_model_dirs, tmp_path, capsys):
    from test_align_train import _pairs
    from test_train import tiny_task, write_tiny_jsonl
    from xling.cli import main

    task = tiny_task(n_train=16, n_dev=4, n_test=8)
    task.data["test"] = {"eng_Latn": task.data["test"]["eng_Latn"]}  # the ordinary zero-shot case: English only
    data = write_tiny_jsonl(tmp_path / "task.jsonl", task)
    (tmp_path / "pairs.tsv").write_text("eng\tdeu\n" + "".join(f"{a}\t{b}\n" for a, b in _pairs()), encoding="utf-8")
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--epochs", "1", "--quiet",
               "--align-data", str(tmp_path / "pairs.tsv"), "--align-layer", "1", "--align-drop-overlap",
               "--out", str(tmp_path / "m")])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "m" / "xling_train.json").read_text())
    assert info["alignment"]["langs"] == ["deu_Latn"] and info["alignment"]["pairs"] > 0
    # languages given explicitly that name only the source are still an error
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--epochs", "1", "--quiet",
               "--align-data", str(tmp_path / "pairs.tsv"), "--align-langs", "en", "--align-layer", "1",
               "--out", str(tmp_path / "m2")])
    assert rc == 2 and "no target languages" in capsys.readouterr().err


# --------------------------------------------------------------------------- matrix --langs


def test_matrix_takes_langs_in_both_roles(monkeypatch, tmp_path):
    import xling.cli.matrix as cli_matrix
    import xling.recipes.matrix.run as runs_matrix
    from xling.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake(cfg):
        seen["sources"], seen["targets"] = cfg.sources, cfg.targets
        raise Stop

    monkeypatch.setattr(cli_matrix, "load_task_cli", lambda args: "task")
    monkeypatch.setattr(runs_matrix, "transfer_matrix", fake)
    base = ["matrix", "--model", str(tmp_path), "--store", "none", "--out", str(tmp_path / "o")]
    with pytest.raises(Stop):
        main(base + ["--langs", "de,fr"])
    assert seen == {"sources": ["de", "fr"], "targets": ["de", "fr"]}
    with pytest.raises(Stop):
        main(base + ["--langs", "de,fr", "--targets", "sw"])
    assert seen == {"sources": ["de", "fr"], "targets": ["sw"]}


# --------------------------------------------------------------------------- one rule for macrolanguages


def test_match_lang_is_one_rule_for_macrolanguages():
    from xling.data.langcodes import match_lang

    assert match_lang("sw", ["eng_Latn", "swh_Latn"]) == "swh_Latn"  # the Bible, FLORES
    assert match_lang("swh", ["eng_Latn", "swa_Latn"]) == "swa_Latn"  # Django's sw locale
    assert match_lang("swa_Latn", ["swa_Latn", "swh_Latn"]) == "swa_Latn"  # exact first
    assert match_lang("ar", ["arb_Arab"]) == "arb_Arab" and match_lang("de", ["fra_Latn"]) is None


def test_train_module_sw_records_the_code_the_eval_uses(tiny_model_dirs, tmp_path, capsys):
    """``train-module --lang sw`` on Swahili text and ``eval --langs sw`` on a task with swh_Latn agree."""
    from test_train import TR, tiny_task
    from xling.cli import main
    from xling.tasks.core import Task

    sents = [" ".join(TR["deu"][w] for w in e.text.split()) for e in tiny_task(n_train=24, n_dev=0, n_test=0).data["train"]["eng_Latn"]]
    (tmp_path / "text.tsv").write_text("eng\tswh\n" + "".join(f"x{i}\t{s}\n" for i, s in enumerate(sents)), encoding="utf-8")
    rc = main(["train-module", "--kind", "language", "--model", str(tiny_model_dirs["bert"]), "--lang", "sw",
               "--text", str(tmp_path / "text.tsv"), "--steps", "2", "--batch-size", "8", "--quiet",
               "--out", str(tmp_path / "mod")])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "mod" / "xling_module.json").read_text())
    task = Task("t", "classification", ["a", "b"], {"test": {"eng_Latn": [], "swh_Latn": []}})  # bible-genre's code
    assert meta["language"] == task.resolve_lang("sw") == "swh_Latn"


# --------------------------------------------------------------------------- sizes


def test_size_flags_are_one_vocabulary(tiny_model_dirs, tmp_path, capsys):
    from test_train import tiny_task, write_tiny_jsonl
    from xling.cli import build_parser, main

    p = build_parser()
    for argv, dest, value in ((["probe", "--train-size", "5"], "max_train", 5), (["probe", "--max-train", "5"], "max_train", 5),
                              (["matrix", "--test-size", "7"], "max_test", 7), (["train", "--train-size", "9"], "max_train", 9),
                              (["transfer", "--dev-size", "11"], "max_dev", 11), (["transfer", "--max-dev", "11"], "max_dev", 11),
                              (["train-module", "--kind", "task", "--out", "x", "--train-size", "3"], "max_train", 3),
                              (["eval", "--test-size", "4"], "max_examples", 4)):
        assert getattr(p.parse_args(argv), dest) == value, argv
    data = write_tiny_jsonl(tmp_path / "task.jsonl", tiny_task(n_train=8, n_dev=4, n_test=8))
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--epochs", "1", "--quiet",
               "--out", str(tmp_path / "m")])
    assert rc == 0, capsys.readouterr().err
    rc = main(["eval", "--model", str(tmp_path / "m"), "--task", str(data), "--test-size", "3", "--store", "none",
               "--out", str(tmp_path / "e"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    import csv

    rows = list(csv.DictReader(open(tmp_path / "e" / "per_language.csv", encoding="utf-8")))
    counts = {r.get("lang") or r.get("language"): r.get("n") or r.get("n_examples") for r in rows}
    assert counts and all(str(v) == "3" for v in counts.values()), rows


# --------------------------------------------------------------------------- compose --name --out, help texts


def test_compose_with_name_and_out_writes_both(tmp_path, capsys):
    from test_modules_helpers import make_lora
    from xling.cli import main

    a = make_lora("bert", tmp_path / "a", 1, meta={"format": "xling-module/1", "kind": "language", "language": "deu"})
    b = make_lora("bert", tmp_path / "b", 2, meta={"format": "xling-module/1", "kind": "language", "language": "fra"})
    store = tmp_path / "store"
    rc = main(["compose", str(a), str(b), "--method", "add", "--name", "mix", "--out", str(tmp_path / "out"),
               "--modules-dir", str(store)])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (store / "mix" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == (store / "mix" / "adapter_model.safetensors").read_bytes()


def _help(argv, capsys, monkeypatch):
    from xling.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_texts_name_the_real_choices_and_defaults(capsys, monkeypatch):
    from xling.recipes.transfer.run import DEFAULT_TASK, TASK_TARGETS

    text = _help(["align"], capsys, monkeypatch)
    for name in (" bible ", "bible:mexa", "firefox", "task:NAME", "libreoffice"):
        assert name in text, name
    text = _help(["transfer"], capsys, monkeypatch)
    assert ",".join(TASK_TARGETS[DEFAULT_TASK]) in text and DEFAULT_TASK in text


# --------------------------------------------------------------------------- typo suggestions


def test_a_model_typo_gets_a_suggestion_before_any_corpus_is_read(monkeypatch, tmp_path, capsys):
    import xling.data.readers as readers
    from xling.cli import main

    def never(*a, **k):
        pytest.fail("the corpus was loaded before the model name was checked")

    monkeypatch.setattr(readers, "load_corpus", never)
    rc = main(["align", "--model", "e5-smal", "--out", str(tmp_path / "o"), "--store", "none", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "unknown model 'e5-smal'; did you mean 'e5-small'?" in err[0] and "xling models" in err[0]
    from xling.models.builtin import check_model_name

    check_model_name("intfloat/multilingual-e5-small")  # a hub id: not a typo
    check_model_name("gpt2")  # far from every built-in: left to the hub loader
    check_model_name(str(tmp_path))  # an existing folder


def test_a_language_typo_gets_a_suggestion():
    from xling.data.langcodes import normalize_lang

    with pytest.raises(XlingError, match=r"^unknown language code 'jp'; did you mean 'ja' \(Japanese"):
        normalize_lang("jp")
    with pytest.raises(XlingError, match=r"did you mean 'de' \(German\)"):
        normalize_lang("german")
    with pytest.raises(XlingError, match=r"^unknown language code 'xx'$"):
        normalize_lang("xx")


# --------------------------------------------------------------------------- max_length: the model's own context


def _long_context_llama(tiny_model_dirs, positions: int = 1024):
    from transformers import AutoModel, AutoTokenizer

    from xling.models.loading import from_objects

    path = tiny_model_dirs["llama"]
    model = AutoModel.from_pretrained(path).eval()
    model.config.max_position_embeddings = positions  # rotary positions: a longer context needs no new weights
    tok = AutoTokenizer.from_pretrained(path)
    tok.model_max_length = int(1e30)  # transformers' "not set"
    return from_objects(model, tok, name="tiny-llama-long", is_decoder=True)


def test_max_length_defaults_to_the_models_context_and_truncation_is_noted(tiny_model_dirs, capsys):
    from tiny_models import WORDS
    from xling.engine.embed import EmbedConfig, embed_sentences, model_context, note_truncation

    lm = _long_context_llama(tiny_model_dirs)
    assert model_context(lm) == 1024 and EmbedConfig().resolved(lm).max_length == 1024  # was 512 for every model
    words = [w for w in WORDS if w.isalpha()][:20]
    long = " ".join(words[i % len(words)] for i in range(700))
    short = " ".join(words[:5])
    n_tokens = len(lm.tokenizer(long)["input_ids"])
    assert 512 < n_tokens <= 1024
    cfg = EmbedConfig(pooling="mean", layers=(lm.num_hidden_states - 1,))
    default = embed_sentences(lm, [long, short], cfg)
    # the independent reference: the whole sentence, untruncated, mean-pooled by hand
    with torch.no_grad():
        ids = torch.tensor([lm.tokenizer(long)["input_ids"]])
        hs = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
    assert torch.allclose(default[0, 0], hs[-1][0].mean(0), atol=1e-4)
    cut = embed_sentences(lm, [long, short], EmbedConfig(pooling="mean", layers=cfg.layers, max_length=512))
    assert not torch.allclose(cut[0, 0], default[0, 0], atol=1e-4)
    capsys.readouterr()
    assert note_truncation(lm, {"hin_Deva": [long, short], "eng_Latn": [short]}, cfg) is None
    assert capsys.readouterr().err == ""
    msg = note_truncation(lm, {"hin_Deva": [long, long, short], "amh_Ethi": [long], "eng_Latn": [short]},
                          EmbedConfig(max_length=512))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == "xling: note: " + msg
    assert msg == "truncated 3 of 5 sentences to 512 tokens: hin_Deva 2, amh_Ethi 1"


def test_cache_key_follows_the_effective_max_length(tiny_model_dirs, tmp_path):
    from xling.engine.embed import EmbedConfig, EmbeddingCache

    lm = _long_context_llama(tiny_model_dirs)
    cache = EmbeddingCache(tmp_path)
    assert cache.key(lm, EmbedConfig(), ["a"]) == cache.key(lm, EmbedConfig(max_length=1024), ["a"])
    assert cache.key(lm, EmbedConfig(), ["a"]) != cache.key(lm, EmbedConfig(max_length=512), ["a"])
