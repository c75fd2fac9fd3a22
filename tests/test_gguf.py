"""GGUF checkpoints into safetensors folders (xling.models.gguf), on tiny GGUF files written here.

The converted folder must be exactly what transformers' own GGUF load computes
(logits and token ids), carry a verifying manifest, be made once per file (cached
by sha256) and rebuilt when damaged; files that are not GGUF, or damaged ones,
and a missing ``gguf`` package are one-line errors.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from tiny_gguf import TEXTS, write_gemma3_gguf, write_llama_gguf
from xling.errors import XlingError
from xling.io import cache_dir, manifest_problem, sha256_file

pytest.importorskip("gguf")



@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    """name -> (path of the GGUF, the transformers model it was written from)."""
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for name, writer, dtype in (("llama", write_llama_gguf, np.float32), ("llama-f16", write_llama_gguf, np.float16),
                                ("gemma3", write_gemma3_gguf, np.float32)):
        folder = root / name
        folder.mkdir()
        path = folder / f"tiny-{name}.gguf"
        out[name] = (path, writer(path, seed=len(out), dtype=dtype))
    return out


def _gguf_reference(path):
    """transformers' own load of the GGUF file (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tok


def _ids(tok, text):
    return torch.tensor([tok(text).input_ids])


@pytest.mark.parametrize("name", ["llama", "llama-f16", "gemma3"])
def test_converted_folder_equals_transformers_gguf_load(ggufs, name, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xling.models.gguf import SOURCE_JSON, convert_gguf

    path, original = ggufs[name]
    out = convert_gguf(path, tmp_path / "converted", source={"gguf_sha256": "abc"}, quiet=True)
    assert out == tmp_path / "converted"
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "xling_manifest.json", SOURCE_JSON} <= files
    assert not any(f.endswith((".bin", ".pt", ".gguf")) for f in files), files
    assert manifest_problem(out, use_stamp=False) is None
    assert json.loads((out / SOURCE_JSON).read_text()) == {"format": "xling-gguf/1", "gguf_file": path.name,
                                                          "gguf_sha256": "abc"}
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # saved as an ordinary float checkpoint
    assert not list(tmp_path.glob(".converted*"))  # no temporary left beside it

    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    assert model.dtype == torch.float32
    assert type(model).__name__ == {"llama": "LlamaForCausalLM", "gemma3": "Gemma3ForCausalLM"}[name.split("-")[0]]
    tok = AutoTokenizer.from_pretrained(out)
    ref_model, ref_tok = _gguf_reference(path)
    for text in TEXTS:
        assert tok(text).input_ids == ref_tok(text).input_ids, text
    assert tok.bos_token_id == ref_tok.bos_token_id and tok.eos_token_id == ref_tok.eos_token_id
    assert len(tok(TEXTS[0]).input_ids) < len(TEXTS[0])  # the merges made whole words, not only letters
    with torch.no_grad():
        for text in TEXTS:
            ids = _ids(ref_tok, text)
            got = model(ids).logits
            torch.testing.assert_close(got, ref_model(ids).logits, atol=1e-5, rtol=0)
            if name != "llama-f16":  # F32 GGUF: the very weights it was written from (q/k permutation undone)
                torch.testing.assert_close(got, original(ids).logits, atol=1e-5, rtol=0)


def test_load_model_converts_a_gguf_file_once(ggufs, monkeypatch, capsys, one_thread):
    import xling.models.gguf as G
    from xling.models.loading import load_model

    path, original = ggufs["llama"]
    lm = load_model(str(path), device="cpu")
    err = capsys.readouterr().err
    assert f"converting {path.name}" in err
    sha = sha256_file(path)
    assert lm.path == cache_dir("models") / f"gguf-{path.stem}-{sha[:12]}"
    assert lm.is_decoder and lm.num_layers == 2
    assert G.folder_ok(lm.path, sha) and not G.folder_ok(lm.path, "0" * 64)
    assert json.loads((lm.path / G.SOURCE_JSON).read_text())["gguf_sha256"] == sha
    ids = _ids(lm.tokenizer, TEXTS[0])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).last_hidden_state, original.model(ids).last_hidden_state,
                                   atol=1e-5, rtol=0)

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(G, "convert_gguf", no_conversion)
    again = load_model(str(path), device="cpu", lazy=True)
    assert again.path == lm.path and again.fingerprint == lm.fingerprint
    assert capsys.readouterr().err == ""


def test_damaged_converted_folder_is_converted_again_with_a_note(ggufs, capsys, one_thread):
    from xling.models.gguf import gguf_model_folder
    from xling.models.loading import load_model

    path, original = ggufs["llama"]
    folder = gguf_model_folder(path, quiet=True)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(1, 9):
        data[-i * 16] ^= 0xFF  # tensor bytes, not the header: still a loadable file, with wrong weights
    weights.write_bytes(bytes(data))
    capsys.readouterr()

    lm = load_model(str(path), device="cpu")
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("xling: note:")]
    assert len(notes) == 1 and "model.safetensors" in notes[0] and "converting it again" in notes[0], err
    assert lm.path == folder and manifest_problem(folder, use_stamp=False) is None
    ids = _ids(lm.tokenizer, TEXTS[1])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).last_hidden_state, original.model(ids).last_hidden_state,
                                   atol=1e-5, rtol=0)

    # a half-written folder (no manifest, no source record) is rebuilt too
    (folder / "xling_source.json").unlink()
    assert gguf_model_folder(path, quiet=True) == folder
    assert manifest_problem(folder, use_stamp=False) is None and (folder / "xling_source.json").is_file()


def test_files_that_are_not_readable_gguf_are_one_line_errors(ggufs, tmp_path):
    from xling.models.gguf import convert_gguf
    from xling.models.loading import load_model

    text = tmp_path / "notes.gguf"
    text.write_text("these are not weights\n")
    with pytest.raises(XlingError, match="not a GGUF file") as exc:
        load_model(str(text))
    assert "\n" not in str(exc.value)
    with pytest.raises(XlingError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(XlingError, match="GGUF file not found"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")

    # a damaged download: cut in the header (the GGUF reader's struct.error), in the tensors, or empty
    data = ggufs["llama"][0].read_bytes()
    for cut in (4, 64, 600, len(data) // 2, len(data) - 64):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(XlingError, match="cannot read this GGUF") as exc:
            convert_gguf(bad, tmp_path / f"out{cut}", quiet=True)
        assert "\n" not in str(exc.value) and bad.name in str(exc.value)
        assert not (tmp_path / f"out{cut}").exists()
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(XlingError, match="not a GGUF file"):
        convert_gguf(empty, tmp_path / "out-empty")
    assert not [p for p in cache_dir("models").iterdir() if p.name.startswith("gguf-")]


def test_missing_gguf_package_names_the_extra(ggufs, tmp_path, monkeypatch):
    from xling.models.gguf import convert_gguf
    from xling.models.loading import load_model

    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    path = ggufs["llama"][0]
    with pytest.raises(XlingError, match=r"needs the 'gguf' extra: pip install 'gguf>=") as exc:
        convert_gguf(path, tmp_path / "out")
    assert "\n" not in str(exc.value)
    with pytest.raises(XlingError, match=r"'gguf' extra"):
        load_model(str(path))
    assert not (tmp_path / "out").exists()
