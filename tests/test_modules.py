"""LoRA modules: reading, composing into merged folders and re-factorised LoRAs, PEFT parity."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import tiny_models
from test_modules_helpers import dense_dws, make_lora, read_model, transposed
from xling.errors import XlingError
from xling.methods.compose import block_index, layer_swap_alpha, tensor_seed
from xling.modules import ModuleMeta, compose_to_lora, compose_to_merged, read_lora

IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 3], [2, 10, 11, 12, 13, 14, 3]])


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """Three random LoRA modules per kind (module 2 has rank 6 and alpha 3)."""
    root = tmp_path_factory.mktemp("loras")
    out = {}
    for kind in ("bert", "llama", "gpt2"):
        out[kind] = [make_lora(kind, root / f"{kind}-{i}", i, r=6 if i == 2 else 4, alpha=3 if i == 2 else 8)
                     for i in range(3)]
    return out


def hidden(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).last_hidden_state


def check_merged(kind, base_dir, merged_dir, dw: dict[str, torch.Tensor], atol=1e-5):
    """Every weight of the merged folder equals base + reference dW; the rest is untouched."""
    base, merged = read_model(base_dir), read_model(merged_dir)
    assert set(base) == set(merged)
    for k, w0 in base.items():
        mod = k[:-len(".weight")] if k.endswith(".weight") else None
        if mod in dw:
            d = dw[mod].T if transposed(kind, mod) else dw[mod]
            assert torch.allclose(merged[k].double(), w0.double() + d, atol=atol), k
        else:
            assert torch.equal(merged[k], w0), k


# -- reading --------------------------------------------------------------------------------


def test_read_lora_targets_and_scaling(loras, tmp_path):
    m = read_lora(loras["gpt2"][0])
    assert len(m.targets) == 3 * 4  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
    t = m.targets["h.0.attn.c_attn"]
    assert (t.rank, t.scaling, t.transposed, t.out_features, t.in_features) == (4, 2.0, True, 96, 32)
    assert t.weight_shape == (32, 96)
    m2 = read_lora(make_lora("bert", tmp_path / "rs", 0, r=4, alpha=8, use_rslora=True,
                             alpha_pattern={"query": 2}))
    assert m2.targets["encoder.layer.0.attention.self.value"].scaling == pytest.approx(8 / 2)
    assert m2.targets["encoder.layer.0.attention.self.query"].scaling == pytest.approx(2 / 2)
    dW = m2.delta("encoder.layer.1.attention.self.query")
    A, B = m2.factors("encoder.layer.1.attention.self.query")
    assert torch.allclose(dW, (B @ A) * 1.0)


# -- merged folder vs peft ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2"])
def test_single_module_merge_equals_peft_merge_and_unload(kind, loras, tiny_model_dirs, tmp_path):
    from peft import PeftModel

    out = compose_to_merged([loras[kind][0]], base=tiny_model_dirs[kind], out=tmp_path / "m")
    model, _ = tiny_models.build(kind)
    ref = PeftModel.from_pretrained(model, str(loras[kind][0])).merge_and_unload()
    got = AutoModel.from_pretrained(out.out)
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    for k, v in ref_sd.items():
        assert torch.allclose(got_sd[k], v, atol=1e-5), k
    assert torch.allclose(hidden(got), hidden(ref), atol=1e-5)
    assert out.tensors_changed == len(read_lora(loras[kind][0]).targets)
    assert (out.out / "config.json").is_file() and (out.out / "tokenizer.json").is_file()


def test_embedding_lora_merge(tiny_model_dirs, tmp_path):
    from peft import PeftModel

    mod = make_lora("bert", tmp_path / "emb", 0, targets=["word_embeddings", "query"])
    assert read_lora(mod).targets["embeddings.word_embeddings"].embedding
    out = compose_to_merged([mod], base=tiny_model_dirs["bert"], out=tmp_path / "m")
    model, _ = tiny_models.build("bert")
    ref = PeftModel.from_pretrained(model, str(mod)).merge_and_unload()
    assert torch.allclose(hidden(AutoModel.from_pretrained(out.out)), hidden(ref), atol=1e-5)


METHODS = [
    ("add", [1.0, -0.5, 2.0], {}),
    ("add", [1.0, 1.0, 2.0], {"normalize": True, "lambda": 0.5}),
    ("genknowsub", None, {}),
    ("stack", None, {}),
    ("ties", [1.0, 0.5, 1.0], {"density": 0.5}),
    ("dare", [1.0, 1.0, 0.5], {"p": 0.6, "seed": 7}),
    ("dare_ties", None, {"p": 0.3, "seed": 1}),
]


def reference(method, dws: list[dict], weights, opts, name):
    """Independent dense computation of one target's composed dW from materialised dW."""
    from test_compose import keep_mask, ref_ties

    d = [x[name] for x in dws]
    w = weights or [1.0] * len(d)
    lam = opts.get("lambda", 1.0)
    if method == "add":
        s = sum(wi * di for wi, di in zip(w, d))
        return lam * (s / sum(w) if opts.get("normalize") else s)
    if method == "genknowsub":
        return d[0] - sum(d[1:]) / (len(d) - 1)
    if method == "stack":
        return sum(d)
    if method == "ties":
        return ref_ties(d, w, opts.get("density", 1.0), True, lam)
    dropped = [di * keep_mask(di.shape, opts["p"], opts["seed"], name, i) / (1 - opts["p"]) for i, di in enumerate(d)]
    if method == "dare":
        return sum(wi * di for wi, di in zip(w, dropped))
    return ref_ties(dropped, w, 1.0, False, 1.0)


@pytest.mark.parametrize("method,weights,opts", METHODS, ids=[m[0] + str(i) for i, m in enumerate(METHODS)])
def test_every_composition_equals_dense_reference(method, weights, opts, loras, tiny_model_dirs, tmp_path):
    kind = "gpt2" if method in ("ties", "dare") else "bert"
    mods = loras[kind]
    dws = [dense_dws(m) for m in mods]
    out = compose_to_merged(mods, method, weights, opts, base=tiny_model_dirs[kind], out=tmp_path / "m")
    ref = {name: reference(method, dws, weights, opts, name) for name in dws[0]}
    check_merged(kind, tiny_model_dirs[kind], out.out, ref)
    # the same composition as a LoRA at full rank reproduces the merged model through PEFT
    rank = min(min(t.shape) for t in ref.values())
    lo = compose_to_lora(mods, method, weights, opts, out=tmp_path / "l", rank=rank)
    from peft import PeftModel

    model, _ = tiny_models.build(kind)
    peft_out = hidden(PeftModel.from_pretrained(model, str(lo.out)))
    assert torch.allclose(peft_out, hidden(AutoModel.from_pretrained(out.out)), atol=1e-4)
    assert lo.overall_error < 1e-5


def test_layer_swap_of_lora_modules(loras, tiny_model_dirs, tmp_path):
    task, lang = loras["llama"][0], loras["llama"][1]
    opts = {"bottom": 1, "top": 0, "transition": 1}
    out = compose_to_merged([task, lang], "layer_swap", None, opts, base=tiny_model_dirs["llama"], out=tmp_path / "m")
    dt, dl = dense_dws(task), dense_dws(lang)
    ref = {}
    for name in dt:
        a = layer_swap_alpha(block_index(name, "layers"), 3, 1, 0, 1)
        ref[name] = (1 - a) * dt[name] + a * dl[name]
    assert {block_index(n, "layers"): layer_swap_alpha(block_index(n, "layers"), 3, 1, 0, 1) for n in dt} == \
        {0: 1.0, 1: 0.5, 2: 0.0}
    check_merged("llama", tiny_model_dirs["llama"], out.out, ref)
    # as a LoRA without a base: the layer count is given instead
    lo = compose_to_lora([task, lang], "layer_swap", None, opts, out=tmp_path / "l", rank=4, num_layers=3)
    got = read_lora(lo.out)
    A, B = got.factors("layers.0.self_attn.q_proj")
    assert torch.allclose((B @ A).double(), dl["layers.0.self_attn.q_proj"], atol=1e-5)
    A, B = got.factors("layers.2.self_attn.q_proj")
    assert torch.allclose((B @ A).double(), dt["layers.2.self_attn.q_proj"], atol=1e-5)
    with pytest.raises(XlingError, match="num_layers"):
        compose_to_lora([task, lang], "layer_swap", None, opts, out=tmp_path / "x", rank=4)


# -- re-factorised LoRA ---------------------------------------------------------------------


def test_refactorised_lora_reports_tail_singular_value_errors(loras, tmp_path):
    mods = loras["bert"][:2]
    dws = [dense_dws(m) for m in mods]
    out = compose_to_lora(mods, "add", [1.0, -0.5], out=tmp_path / "l", rank=3)
    written = read_lora(out.out)
    assert written.ranks == [3] and written.config["lora_alpha"] == 3
    num = den = 0.0
    for name in dws[0]:
        dW = dws[0][name] - 0.5 * dws[1][name]
        S = torch.linalg.svdvals(dW)
        tail = math.sqrt(float((S[3:] ** 2).sum() / (S ** 2).sum()))
        assert out.rel_errors[name] == pytest.approx(tail, rel=1e-4)
        A, B = written.factors(name)
        assert float(torch.linalg.norm(dW - B.double() @ A.double()) / torch.linalg.norm(dW)) == \
            pytest.approx(tail, rel=1e-4)
        num += float((S[3:] ** 2).sum())
        den += float((S ** 2).sum())
    assert out.overall_error == pytest.approx(math.sqrt(num / den), rel=1e-4)
    meta = json.loads((out.out / "xling_module.json").read_text())
    assert meta["kind"] == "composed" and meta["composition"]["method"] == "add"
    assert meta["composition"]["rank"] == 3


def test_default_rank_is_exact_for_linear_methods_and_the_largest_input_rank_otherwise(loras, tmp_path):
    mods = loras["llama"]
    out = compose_to_lora(mods, "add", [0.5, -1.0, 2.0], out=tmp_path / "l")
    got = read_lora(out.out)
    assert got.ranks == [4 + 4 + 6]
    assert out.overall_error < 1e-6
    ref = {n: sum(w * read_lora(m).delta(n) for w, m in zip([0.5, -1.0, 2.0], mods)) for n in got.targets}
    for n, d in ref.items():
        assert torch.allclose(got.delta(n).double(), d.double(), atol=1e-5), n
    out = compose_to_lora(mods, "ties", out=tmp_path / "t")
    assert read_lora(out.out).ranks == [6]


def test_lora_factorwise_matches_peft_linear_and_is_only_an_approximation(loras, tmp_path):
    from peft import PeftModel

    mods = loras["bert"][:2]
    w = [0.7, -0.4]
    out = compose_to_lora(mods, "lora_factorwise", w, out=tmp_path / "fw")
    assert out.notes and "approximation" in out.notes[0]
    model, _ = tiny_models.build("bert")
    pm = PeftModel.from_pretrained(model, str(mods[0]), adapter_name="a")
    pm.load_adapter(str(mods[1]), adapter_name="b")
    pm.add_weighted_adapter(["a", "b"], w, "lin", combination_type="linear")
    sd = {k: v for k, v in pm.state_dict().items() if ".lin." in k or k.endswith(".lin")}
    ours = load_file(str(out.out / "adapter_model.safetensors"))
    for k, v in ours.items():
        peft_key = k.replace(".lora_A.weight", ".lora_A.lin.weight").replace(".lora_B.weight", ".lora_B.lin.weight")
        assert torch.allclose(sd[peft_key], v, atol=1e-6), k
    exact = compose_to_lora(mods, "add", w, out=tmp_path / "ex", rank=8)
    name = "encoder.layer.0.attention.self.query"
    A1, B1 = read_lora(out.out).factors(name)
    A2, B2 = read_lora(exact.out).factors(name)
    assert (B1 @ A1 - B2 @ A2).abs().max() > 1e-3
    with pytest.raises(XlingError, match="one rank"):
        compose_to_lora(loras["bert"], "lora_factorwise", out=tmp_path / "bad")  # ranks 4, 4, 6


def test_dare_output_is_reproducible(loras, tmp_path):
    mods = loras["bert"][:2]
    a = compose_to_lora(mods, "dare", options={"p": 0.5, "seed": 11}, out=tmp_path / "a", rank=4)
    b = compose_to_lora(mods, "dare", options={"p": 0.5, "seed": 11}, out=tmp_path / "b", rank=4)
    c = compose_to_lora(mods, "dare", options={"p": 0.5, "seed": 12}, out=tmp_path / "c", rank=4)
    fa, fb, fc = (load_file(str(x.out / "adapter_model.safetensors")) for x in (a, b, c))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert not all(torch.equal(fa[k], fc[k]) for k in fa)
    assert tensor_seed(11, "x", 0) == tensor_seed(11, "x", 0) != tensor_seed(11, "x", 1)


# -- base checks ------------------------------------------------------------------------------


def test_module_for_another_base_is_refused(tiny_model_dirs, tmp_path):
    from xling.modules import base_fingerprint

    fp = base_fingerprint(tiny_model_dirs["bert"])
    from xling.models.loading import load_model

    assert fp == load_model(str(tiny_model_dirs["bert"]), device="cpu").fingerprint
    good = make_lora("bert", tmp_path / "good", 0, meta={"kind": "language", "language": "de",
                                                         "base_model": "tiny-bert", "base_fingerprint": fp})
    other = tiny_models.save("bert", tmp_path / "other-base", seed=5)
    with pytest.raises(XlingError, match="refusing to apply it to another base"):
        compose_to_merged([good], base=other, out=tmp_path / "m")
    assert not (tmp_path / "m").exists()
    bad = make_lora("bert", tmp_path / "bad", 1, meta={"kind": "task", "task": "nli", "base_fingerprint": "0" * 16})
    with pytest.raises(XlingError, match="different bases"):
        compose_to_lora([good, bad], out=tmp_path / "l")
    out = compose_to_merged([good], base=tiny_model_dirs["bert"], out=tmp_path / "ok")
    assert out.tensors_changed > 0
    lo = compose_to_lora([good], out=tmp_path / "lo", meta=ModuleMeta(kind="language", language="deu"))
    assert json.loads((lo.out / "xling_module.json").read_text())["base_fingerprint"] == fp
