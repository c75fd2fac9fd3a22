"""Full-model merges, the module store, the CLI, and bad input (one-line errors, nothing half-written)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

import tiny_models
from test_compose import keep_mask, ref_ties
from test_modules_helpers import corrupt, make_finetuned, make_lora, read_model
from xling.cli import main
from xling.errors import XlingError
from xling.methods.compose import block_index, layer_swap_alpha
from xling.modules import ModuleMeta, ModuleStore, compose_to_lora, compose_to_merged, merge_full


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return {kind: [make_finetuned(kind, root / f"{kind}-{i}", i) for i in range(3)] for kind in ("llama", "bert")}


# -- full-model merges ------------------------------------------------------------------------


def test_full_ties_equals_plain_reference(finetuned, tiny_model_dirs, tmp_path):
    w = [1.0, 0.5, 1.5]
    out = merge_full(finetuned["llama"], "ties", w, {"density": 0.4}, base=tiny_model_dirs["llama"], out=tmp_path / "m")
    base = read_model(tiny_model_dirs["llama"])
    models = [read_model(f) for f in finetuned["llama"]]
    merged = read_model(out.out)
    for k, b in base.items():
        deltas = [m[k].double() - b.double() for m in models]
        want = b.double() + ref_ties(deltas, w, 0.4, True, 1.0)
        assert torch.allclose(merged[k].double(), want, atol=1e-5), k
    assert out.tensors_changed == len(base)
    AutoModel.from_pretrained(out.out)  # loads


def test_full_dare_equals_reference_and_is_deterministic(finetuned, tiny_model_dirs, tmp_path):
    opts = {"p": 0.5, "seed": 3}
    a = merge_full(finetuned["bert"][:2], "dare", [1.0, 1.0], opts, base=tiny_model_dirs["bert"], out=tmp_path / "a")
    b = merge_full(finetuned["bert"][:2], "dare", [1.0, 1.0], opts, base=tiny_model_dirs["bert"], out=tmp_path / "b")
    ma, mb = read_model(a.out), read_model(b.out)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    base = read_model(tiny_model_dirs["bert"])
    models = [read_model(f) for f in finetuned["bert"][:2]]
    for k, b0 in base.items():
        if not b0.is_floating_point():
            assert torch.equal(ma[k], b0)
            continue
        want = b0.double() + sum((m[k].double() - b0.double()) * keep_mask(b0.shape, 0.5, 3, k, i) / 0.5
                                 for i, m in enumerate(models))
        assert torch.allclose(ma[k].double(), want, atol=1e-5), k


def test_full_merge_writes_shards(finetuned, tiny_model_dirs, tmp_path):
    out = merge_full(finetuned["llama"][:2], "add", [0.5, 0.5], base=tiny_model_dirs["llama"], out=tmp_path / "m",
                     max_shard_bytes=20_000)
    shards = sorted(p.name for p in out.out.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out.out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(read_model(tiny_model_dirs["llama"]))
    loaded = AutoModel.from_pretrained(out.out).state_dict()
    m0, m1 = (read_model(f) for f in finetuned["llama"][:2])
    for k in index["weight_map"]:
        assert torch.allclose(loaded[k], (m0[k] + m1[k]) / 2, atol=1e-6), k


def test_full_layer_swap_takes_bottom_and_top_from_the_language_expert(finetuned, tmp_path):
    task, lang = finetuned["llama"][0], finetuned["llama"][1]
    out = merge_full([task, lang], "layer_swap", options={"bottom": 1, "top": 1, "transition": 0}, base=None,
                     out=tmp_path / "m")
    t, l, m = read_model(task), read_model(lang), read_model(out.out)
    for k in m:
        i = block_index(k, "layers")
        a = layer_swap_alpha(i, 3, 1, 1)
        src = {0.0: t, 1.0: l}[a]
        assert torch.allclose(m[k], src[k], atol=1e-6), k
    assert any(block_index(k, "layers") == 1 for k in m)


def test_full_merge_needs_base_and_matching_models(finetuned, tiny_model_dirs, tmp_path):
    with pytest.raises(XlingError, match="needs the base"):
        merge_full(finetuned["llama"], "ties", base=None, out=tmp_path / "x")
    with pytest.raises(XlingError, match="not the same architecture"):
        merge_full([finetuned["llama"][0], finetuned["bert"][0]], "add", base=tiny_model_dirs["llama"],
                   out=tmp_path / "x")
    bigger = tiny_models.save("llama", tmp_path / "big", hidden=64)
    with pytest.raises(XlingError, match="shape"):
        merge_full([bigger], "add", base=tiny_model_dirs["llama"], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


# -- bad input: one line, nothing half-written ------------------------------------------------


def test_nan_in_a_module_leaves_the_previous_output_intact(tiny_model_dirs, tmp_path):
    good = make_lora("bert", tmp_path / "good", 0)
    out = compose_to_merged([good], base=tiny_model_dirs["bert"], out=tmp_path / "m")
    before = read_model(out.out)
    bad = make_lora("bert", tmp_path / "bad", 1)
    corrupt(bad, float("inf"))
    with pytest.raises(XlingError, match="NaN or inf"):
        compose_to_merged([good, bad], base=tiny_model_dirs["bert"], out=tmp_path / "m")
    after = read_model(tmp_path / "m")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "m"]  # no temporaries left
    with pytest.raises(XlingError, match="NaN or inf"):
        compose_to_lora([bad], out=tmp_path / "l")
    assert not (tmp_path / "l").exists()


def test_incompatible_modules(tiny_model_dirs, tmp_path):
    a = make_lora("bert", tmp_path / "a", 0, targets=["query"])
    b = make_lora("bert", tmp_path / "b", 1, targets=["query", "value"])
    with pytest.raises(XlingError, match="has no LoRA on .*value"):
        compose_to_lora([a, b], out=tmp_path / "x")
    out = compose_to_lora([a, b], out=tmp_path / "ok", allow_missing_targets=True, rank=4)
    assert out.targets == 6
    wide = tmp_path / "wide-base"
    tiny_models.save("bert", wide, hidden=64)
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_models.build("bert", hidden=64)
    get_peft_model(model, LoraConfig(r=4, target_modules=["query"])).save_pretrained(str(tmp_path / "w"))
    with pytest.raises(XlingError, match="disagree on target"):
        compose_to_lora([a, tmp_path / "w"], out=tmp_path / "x")
    with pytest.raises(XlingError, match="expects a"):
        compose_to_merged([tmp_path / "w"], base=tiny_model_dirs["bert"], out=tmp_path / "x")
    llama = make_lora("llama", tmp_path / "ll", 0)
    with pytest.raises(XlingError, match="no weight in base"):
        compose_to_merged([llama], base=tiny_model_dirs["bert"], out=tmp_path / "x")
    with pytest.raises(XlingError, match="rank 40 does not fit"):
        compose_to_lora([a], out=tmp_path / "x", rank=40)
    assert not (tmp_path / "x").exists()


def test_missing_and_unsupported_files(tmp_path):
    from xling.modules import read_lora

    with pytest.raises(XlingError, match="not found"):
        read_lora(tmp_path / "nope")
    m = make_lora("bert", tmp_path / "m", 0)
    (m / "adapter_model.safetensors").unlink()
    with pytest.raises(XlingError, match="has no adapter_model.safetensors"):
        read_lora(m)
    d = make_lora("bert", tmp_path / "dora", 0, use_dora=True)
    with pytest.raises(XlingError, match="DoRA"):
        read_lora(d)
    cfg = json.loads((tmp_path / "dora" / "adapter_config.json").read_text())
    cfg.update(use_dora=False, r=8)
    (tmp_path / "dora" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(XlingError):
        read_lora(d)  # magnitude vectors are refused, or rank mismatch
    r = make_lora("bert", tmp_path / "r", 0)
    cfg = json.loads((r / "adapter_config.json").read_text())
    cfg["r"] = 8
    (r / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(XlingError, match="config says r=8"):
        read_lora(r)


# -- store and CLI ----------------------------------------------------------------------------


def test_store_and_cli(tiny_model_dirs, tmp_path, capsys):
    store = ModuleStore(tmp_path / "store")
    de = make_lora("bert", tmp_path / "de", 0)
    task = make_lora("bert", tmp_path / "nli", 1)
    store.add(de, "lang-de", ModuleMeta(kind="language", language="de", base_model="tiny-bert",
                                        data_hash="abc", metrics={"ppl": 12.5}))
    store.add(task, "task-nli", ModuleMeta(kind="task", task="nli", metrics={"acc": 0.8}))
    with pytest.raises(XlingError, match="already exists"):
        store.add(task, "task-nli")
    assert store.names() == ["lang-de", "task-nli"]

    sd = str(tmp_path / "store")
    assert main(["modules", "list", "--store", sd]) == 0
    text = capsys.readouterr().out
    assert "lang-de" in text and "deu_Latn" in text and "task-nli" in text
    assert main(["modules", "show", "lang-de", "--modules-dir", sd]) == 0
    text = capsys.readouterr().out
    assert "language" in text and "ppl" in text and "sha256" in text

    rc = main(["compose", "task-nli", "lang-de", "--method", "stack", "--name", "nli-de", "--modules-dir", sd,
               "--rank", "8"])
    assert rc == 0
    assert "stack of 2 modules" in capsys.readouterr().out
    assert "nli-de" in store.names()
    rc = main(["compose", "task-nli", "lang-de", "--method", "ties", "--option", "density=0.5",
               "--weights=1,0.5", "--as", "merged", "--base", str(tiny_model_dirs["bert"]),
               "--out", str(tmp_path / "merged"), "--modules-dir", sd])
    assert rc == 0 and (tmp_path / "merged" / "model.safetensors").is_file()
    capsys.readouterr()

    assert main(["modules", "show", "nope", "--store", sd]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xling: error: no module 'nope'") and err.count("\n") == 1
    assert main(["compose", "task-nli", "--method", "ties", "--option", "density=2", "--out",
                 str(tmp_path / "bad"), "--modules-dir", sd]) == 2
    assert "density" in capsys.readouterr().err
    assert main(["compose", "task-nli", "lang-de", "--weights=1,-1", "--option", "normalize=true",
                 "--out", str(tmp_path / "bad"), "--modules-dir", sd]) == 2
    assert "sum to zero" in capsys.readouterr().err
    assert main(["compose", "task-nli", "--as", "merged", "--out", str(tmp_path / "bad"),
                 "--modules-dir", sd]) == 2
    assert "--base" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_save_module_writes_a_peft_folder_with_metadata(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from xling.modules import read_lora, read_meta, save_module

    model, _ = tiny_models.build("bert")
    pm = get_peft_model(model, LoraConfig(r=2, target_modules=["query"]))
    folder = save_module(pm, tmp_path / "mod", ModuleMeta(kind="task", task="nli", base_model="tiny",
                                                          base_fingerprint="f" * 16, metrics={"acc": 0.5}))
    meta = read_meta(folder)
    assert (meta.kind, meta.task, meta.metrics) == ("task", "nli", {"acc": 0.5})
    assert read_lora(folder).ranks == [2]
    PeftModel.from_pretrained(tiny_models.build("bert")[0], str(folder))
    with pytest.raises(XlingError, match="kind must be"):
        ModuleMeta(kind="adapter")


def test_bf16_base_stays_bf16(tmp_path):
    from test_modules_helpers import dense_dws

    model, tok = tiny_models.build("llama")
    base = tmp_path / "bf16"
    model.to(torch.bfloat16).save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    mod = make_lora("llama", tmp_path / "l", 0)
    out = compose_to_merged([mod], base=base, out=tmp_path / "m")
    b, m = read_model(base), read_model(out.out)
    dw = dense_dws(mod)
    for k, w0 in b.items():
        assert m[k].dtype == torch.bfloat16
        mod_name = k[:-len(".weight")]
        if mod_name in dw:
            assert torch.equal(m[k], (w0.float() + dw[mod_name].float()).to(torch.bfloat16)), k


def test_streaming_writer_and_reader_round_trip(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from xling.modules.weights import ModelWeights, ShardWriter

    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(5, 7, generator=g),
        "b.bf16": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "c.ids": torch.arange(6).reshape(2, 3),
        "d.mask": torch.tensor([True, False, True]),
        "e.scalar": torch.tensor(2.5, dtype=torch.float64),
        "f.empty": torch.zeros(0, 3),
        "g.half": torch.randn(9, generator=g).half(),
    }
    plan = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    for shard_bytes, n_files in ((1 << 20, 1), (60, 4)):
        out = tmp_path / f"w{n_files}"
        with ShardWriter(out, plan, shard_bytes) as w:
            for k, v in tensors.items():
                w.add(k, v)
            files = w.finish()
        assert len(files) >= n_files if n_files > 1 else files == ["model.safetensors"]
        back = {}
        for f in files:
            back.update(load_file(str(out / f)))
            with safe_open(str(out / f), framework="pt") as h:
                assert h.metadata() == {"format": "pt"}
        assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
        with ModelWeights(out) as mw:
            assert mw.keys() == list(tensors) or set(mw.keys()) == set(tensors)
            assert all(torch.equal(mw.get(k), v) and mw.dtype(k) == v.dtype for k, v in tensors.items())
    with pytest.raises(ValueError, match="expected"):
        ShardWriter(tmp_path / "x", plan).add("b.bf16", tensors["b.bf16"])
    # a file written by safetensors itself reads the same
    save_file(tensors, str(tmp_path / "ref.safetensors"))
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref.safetensors").rename(tmp_path / "ref" / "model.safetensors")
    with ModelWeights(tmp_path / "ref") as mw:
        assert all(torch.equal(mw.get(k), v) for k, v in tensors.items())


def test_corrupt_weights_are_one_line_errors(tmp_path, tiny_model_dirs):
    import shutil

    from xling.modules.weights import ModelWeights

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dirs["bert"], bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(XlingError, match="truncated or corrupt"):
        ModelWeights(bad)
    (bad / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(XlingError, match="not a safetensors file"):
        ModelWeights(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(XlingError, match="no .safetensors weights"):
        ModelWeights(bad)
    mod = make_lora("bert", tmp_path / "m", 0)
    with pytest.raises(XlingError, match="no .safetensors"):
        compose_to_merged([mod], base=bad, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
