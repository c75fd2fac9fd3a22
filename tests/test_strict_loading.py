"""A model is what its files say, or an error (issue 19, item 4).

Each damaged model folder goes through the CLI (``xling align``) and must give
exit status 2 and one ``xling: error:`` line naming the problem, never a model
with randomly initialised layers, an ``IndexError`` or a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny_models
from xling.cli import main
from xling.models.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def data(tmp_path) -> str:
    eng, deu = tmp_path / "a.txt", tmp_path / "b.txt"
    eng.write_text("\n".join(tiny_models.PARALLEL["eng"]) + "\n", encoding="utf-8")
    deu.write_text("\n".join(tiny_models.PARALLEL["deu"]) + "\n", encoding="utf-8")
    return f"eng={eng},deu={deu}"


def _copy(tiny_model_dirs, kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dirs[kind], tmp_path / kind))


def _align_error(capsys, folder: Path, data: str, tmp_path: Path) -> str:
    capsys.readouterr()
    out = tmp_path / "out"
    rc = main(["align", "--model", str(folder), "--data", data, "--out", str(out), "--quiet", "--device", "cpu"])
    got, err = capsys.readouterr()
    assert rc == 2, (rc, got, err)
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("xling: error: "), err
    assert "Traceback" not in err
    assert not out.exists()
    return lines[0]


def _rewrite(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_a_sound_model_still_aligns(tiny_model_dirs, data, tmp_path, capsys):
    for kind in ("bert", "llama"):
        assert main(["align", "--model", str(tiny_model_dirs[kind]), "--data", data, "--quiet", "--device", "cpu",
                     "--out", str(tmp_path / kind)]) == 0, capsys.readouterr().err


def test_missing_tensors_are_an_error_naming_them(tiny_model_dirs, data, tmp_path, capsys):
    folder = _copy(tiny_model_dirs, "bert", tmp_path)
    _rewrite(folder, lambda t: t.pop("encoder.layer.1.attention.self.query.weight"))
    line = _align_error(capsys, folder, data, tmp_path)
    assert "lacks" in line and "encoder.layer.1.attention.self.query.weight" in line


def test_unexpected_tensors_are_an_error_naming_them(tiny_model_dirs, data, tmp_path, capsys):
    folder = _copy(tiny_model_dirs, "llama", tmp_path)
    _rewrite(folder, lambda t: t.__setitem__("layers.0.mlp.extra_proj.weight", torch.zeros(4, 4)))
    line = _align_error(capsys, folder, data, tmp_path)
    assert "does not have" in line and "layers.0.mlp.extra_proj.weight" in line


def test_tensors_of_the_wrong_shape_are_an_error(tiny_model_dirs, data, tmp_path, capsys):
    folder = _copy(tiny_model_dirs, "llama", tmp_path)
    _rewrite(folder, lambda t: t.__setitem__("layers.1.mlp.up_proj.weight", torch.zeros(3, 3)))
    line = _align_error(capsys, folder, data, tmp_path)
    assert "wrong shape" in line and "layers.1.mlp.up_proj.weight" in line


def test_a_head_checkpoint_and_a_missing_pooler_are_benign(tiny_model_dirs, tmp_path):
    from transformers import AutoConfig, LlamaForCausalLM

    # a checkpoint with an LM head (model.* + lm_head.weight), read as the base model
    src = tiny_model_dirs["llama"]
    head = tmp_path / "head"
    LlamaForCausalLM(AutoConfig.from_pretrained(src)).save_pretrained(head)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special")):
            shutil.copy(f, head)
    assert any(k.startswith("lm_head") for k in load_file(str(head / "model.safetensors")))
    load_model(str(head), device="cpu", quiet=True)
    # the tiny BERT is saved without its pooler, which BertModel has
    load_model(str(tiny_model_dirs["bert"]), device="cpu", quiet=True)


def test_a_config_with_200000_layers_is_refused_before_any_allocation(tiny_model_dirs, data, tmp_path, capsys,
                                                                     monkeypatch):
    import transformers

    def no_allocation(*a, **kw):
        raise AssertionError("a model was built")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_allocation)
    monkeypatch.setattr(transformers.AutoModel, "from_config", no_allocation)
    folder = _copy(tiny_model_dirs, "bert", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 200_000
    (folder / "config.json").write_text(json.dumps(cfg))
    line = _align_error(capsys, folder, data, tmp_path)
    assert "200000 layers" in line and "hold 3" in line


def test_a_config_vocabulary_the_weights_do_not_have_is_refused(tiny_model_dirs, data, tmp_path, capsys):
    folder = _copy(tiny_model_dirs, "gpt2", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    rows = cfg["vocab_size"]
    cfg["vocab_size"] = 5_000_000
    (folder / "config.json").write_text(json.dumps(cfg))
    line = _align_error(capsys, folder, data, tmp_path)
    assert "5000000" in line and f"{rows} rows" in line


def test_a_tokenizer_with_ids_beyond_the_embedding_matrix_is_one_line(tiny_model_dirs, data, tmp_path, capsys):
    folder = _copy(tiny_model_dirs, "bert", tmp_path)
    rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    tj = folder / "tokenizer.json"
    tok = json.loads(tj.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    vocab["cat"] = rows + 5  # the tokenizer gives an id the matrix does not have
    tj.write_text(json.dumps(tok), encoding="utf-8")
    line = _align_error(capsys, folder, data, tmp_path)
    assert f"token id {rows + 5}" in line and f"{rows} rows" in line


@pytest.mark.parametrize("damage", ["truncated-header", "truncated-data", "garbage"])
def test_a_damaged_safetensors_file_is_one_line_naming_it(tiny_model_dirs, data, tmp_path, capsys, damage):
    folder = _copy(tiny_model_dirs, "bert", tmp_path)
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes({"truncated-header": raw[:40], "truncated-data": raw[:-100],
                      "garbage": b"\xff" * 8 + raw[8:]}[damage])
    line = _align_error(capsys, folder, data, tmp_path)
    assert str(path) in line and "safetensors" in line


def test_causal_loading_never_initialises_an_untied_head_at_random(tiny_causal_dirs, tmp_path):
    """A decoder folder without its untied LM head is refused in one line by every scoring/generation loader;
    a complete folder loads to the same logits twice (no weight left to transformers' random init)."""
    import torch
    from transformers import AutoConfig, LlamaModel

    from xling.errors import XlingError
    from xling.tasks.zeroshot import load_causal_lm

    src = tiny_causal_dirs["llama"]
    ids = torch.tensor([[1, 5, 6, 7]])
    torch.manual_seed(0)
    a = load_causal_lm(src, torch.float32, torch.device("cpu"))(ids).logits
    torch.manual_seed(1)
    b = load_causal_lm(src, torch.float32, torch.device("cpu"))(ids).logits
    assert torch.equal(a, b)
    headless = tmp_path / "headless"
    base = LlamaModel(AutoConfig.from_pretrained(src))
    assert not base.config.tie_word_embeddings
    base.save_pretrained(headless)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special")):
            shutil.copy(f, headless)
    with pytest.raises(XlingError, match="lack weights for lm_head") as info:
        load_causal_lm(headless, torch.float32, torch.device("cpu"))
    assert "\n" not in str(info.value)
