"""Sparse (LT-SFT) modules: reading, the store, composition alone and with LoRA modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

import tiny_models
from test_modules_helpers import dense_dws, make_lora, read_model, transposed
from xling.errors import XlingError
from xling.methods.compose import layer_swap_alpha
from xling.methods.modules_train import per_tensor_budget, per_tensor_topk, streaming_topk
from xling.modules.apply import compose_into, compose_to_lora, compose_to_merged
from xling.modules.meta import base_fingerprint
from xling.modules.sparse import SparseModule
from xling.modules.store import ModuleStore, summarize


def make_sparse(base_dir: Path, folder: Path, seed: int, n: int = 40, names=None, meta: dict | None = None) -> Path:
    """A random sparse diff over some block weights (and a bias and LayerNorm) of the tiny model in ``base_dir``."""
    sd = read_model(base_dir)
    g = torch.Generator().manual_seed(seed)
    names = names or [k for k in sorted(sd) if k.startswith("encoder.layer.")][::3]
    tensors = {}
    for k in names:
        numel = sd[k].numel()
        idx = torch.sort(torch.randperm(numel, generator=g)[: min(n, numel)]).values
        tensors[f"{k}.indices"] = idx
        tensors[f"{k}.values"] = torch.randn(idx.numel(), generator=g) * 0.1
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "sparse_diff.safetensors"))
    m = {"kind": "language", "language": "swh_Latn", "base_model": str(base_dir),
         "base_fingerprint": base_fingerprint(base_dir), "extra": {"type": "lt-sft", "k": n}}
    m.update(meta or {})
    (folder / "xling_sft.json").write_text(json.dumps(m), encoding="utf-8")
    return folder


def dense_sparse(folder: Path, sd: dict) -> dict[str, torch.Tensor]:
    """Independent reference: the diff as a dense tensor per weight, by plain indexing."""
    raw = load_file(str(folder / "sparse_diff.safetensors"))
    out = {}
    for k, idx in raw.items():
        if k.endswith(".indices"):
            name = k[: -len(".indices")]
            d = torch.zeros(sd[name].numel(), dtype=torch.float64)
            d[idx] += raw[f"{name}.values"].double()
            out[name] = d.view(sd[name].shape)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    base = tiny_models.save("bert", root / "base")
    s1 = make_sparse(base, root / "s1", 1)
    s2 = make_sparse(base, root / "s2", 2, names=["encoder.layer.1.attention.self.query.weight",
                                                   "encoder.layer.2.output.dense.bias",
                                                   "embeddings.LayerNorm.weight"])
    lora = make_lora("bert", root / "lora", 5, meta={"kind": "task", "base_fingerprint": base_fingerprint(base)})
    return root, base, s1, s2, lora


def test_sum_of_sparse_and_lora_modules_equals_dense_reference(setup, tmp_path):
    root, base, s1, s2, lora = setup
    sd = read_model(base)
    w = [0.5, -2.0, 1.5]
    out = compose_to_merged([s1, s2, lora], "add", w, base=base, out=tmp_path / "m")
    merged = read_model(tmp_path / "m")
    ref = {k: v.double() for k, v in sd.items()}
    for c, f in ((w[0], s1), (w[1], s2)):
        for k, d in dense_sparse(f, sd).items():
            ref[k] += c * d
    for mod, d in dense_dws(lora).items():
        k = mod + ".weight"
        ref[k] += w[2] * (d.T if transposed("bert", mod) else d)
    changed = 0
    for k, v in merged.items():
        assert torch.allclose(v.double(), ref[k], atol=1e-6), k
        changed += int(not torch.equal(v, sd[k]))
    assert out.tensors_changed == changed


def test_in_memory_composition_equals_merged_folder(setup, tmp_path):
    root, base, s1, s2, lora = setup
    compose_to_merged([s1, lora], "stack", base=base, out=tmp_path / "m")
    model = AutoModel.from_pretrained(base)
    compose_into(model, [s1, lora], "stack")
    merged = read_model(tmp_path / "m")
    for k, p in model.state_dict().items():
        if k in merged:
            assert torch.allclose(p, merged[k], atol=1e-6), k


def test_layer_swap_weights_sparse_entries_by_layer(setup, tmp_path):
    root, base, s1, s2, lora = setup
    sd = read_model(base)
    compose_to_merged([lora, s2], "layer_swap", options={"bottom": 1, "top": 0}, base=base, out=tmp_path / "ls")
    merged = read_model(tmp_path / "ls")
    diff = dense_sparse(s2, sd)
    lw = dense_dws(lora)
    for k, d in diff.items():
        layer = int(k.split(".")[2]) if k.startswith("encoder.layer.") else None
        a = layer_swap_alpha(layer, 3, 1, 0)
        lora_part = lw.get(k[: -len(".weight")])
        ref = sd[k].double() + a * d
        if lora_part is not None:
            ref += (1 - a) * (lora_part.T if transposed("bert", k[:-7]) else lora_part)
        assert torch.allclose(merged[k].double(), ref, atol=1e-6), k


def test_sparse_errors(setup, tmp_path):
    root, base, s1, s2, lora = setup
    with pytest.raises(XlingError, match="merged model"):
        compose_to_lora([s1, lora], "add", out=tmp_path / "x")
    with pytest.raises(XlingError, match="compose by addition"):
        compose_to_merged([s1, s2], "ties", base=base, out=tmp_path / "t")
    other = tiny_models.save("bert", root / "other-base", seed=3)
    with pytest.raises(XlingError, match="refusing"):
        compose_to_merged([s1], "add", base=other, out=tmp_path / "o")
    bad = make_sparse(base, tmp_path / "bad", 4, names=["encoder.layer.0.attention.self.query.weight"])
    raw = load_file(str(bad / "sparse_diff.safetensors"))
    raw["encoder.layer.0.attention.self.query.weight.values"][3] = float("nan")
    save_file(raw, str(bad / "sparse_diff.safetensors"))
    with pytest.raises(XlingError, match="NaN"):
        compose_to_merged([bad], "add", base=base, out=tmp_path / "n")
    ghost = make_sparse(base, tmp_path / "ghost", 5, names=["encoder.layer.0.attention.self.query.weight"])
    raw = load_file(str(ghost / "sparse_diff.safetensors"))
    save_file({k.replace("query", "nothere"): v for k, v in raw.items()}, str(ghost / "sparse_diff.safetensors"))
    with pytest.raises(XlingError, match="not in the base"):
        compose_to_merged([ghost], "add", base=base, out=tmp_path / "g")
    for name in ("x", "t", "o", "n", "g"):
        assert not (tmp_path / name).exists()


def test_store_lists_shows_and_copies_sparse_and_task_modules(setup, tmp_path, capsys):
    from xling.cli import main

    root, base, s1, s2, lora = setup
    store = ModuleStore(tmp_path / "store")
    store.add(s1, "swh-sft")
    (lora / "head.safetensors").write_bytes((lora / "adapter_model.safetensors").read_bytes())
    store.add(lora, "task-x")
    assert (store.root / "task-x" / "head.safetensors").is_file()
    rows = {r["name"]: r for r in store.list()}
    assert rows["swh-sft"]["type"] == "lt-sft" and rows["swh-sft"]["params"] == SparseModule(s1).num_entries
    assert rows["task-x"]["type"] == "lora"
    assert summarize(store.path("swh-sft"))["language"] == "swh_Latn"
    assert main(["modules", "list", "--modules-dir", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "swh-sft" in out and "lt-sft" in out
    assert main(["modules", "show", "swh-sft", "--modules-dir", str(store.root)]) == 0
    assert "k=40" in capsys.readouterr().out
    rc = main(["compose", "swh-sft", "task-x", "--modules-dir", str(store.root), "--base", str(base),
               "--as", "merged", "--out", str(tmp_path / "cli")])
    assert rc == 0 and (tmp_path / "cli" / "config.json").is_file()
    rc = main(["compose", "swh-sft", "--modules-dir", str(store.root), "--out", str(tmp_path / "cli2")])
    assert rc == 2 and "merged" in capsys.readouterr().err


def test_per_tensor_selection_budget_and_topk():
    sizes = {"a": 10, "b": 30, "c": 60}
    b = per_tensor_budget(sizes, 7)
    assert sum(b.values()) == 7 and b == {"a": 1, "b": 2, "c": 4}
    assert per_tensor_budget(sizes, 1000) == sizes
    g = torch.Generator().manual_seed(0)
    ts = {n: torch.randn(v, generator=g) for n, v in sizes.items()}
    chosen = per_tensor_topk(ts.items(), b)
    for n, idx in chosen.items():
        ref = torch.sort(torch.topk(ts[n].abs(), b[n]).indices).values
        assert torch.equal(idx, ref)
    glob = streaming_topk(ts.items(), 7)
    assert sum(v.numel() for v in glob.values()) == 7

