"""Device-resident engine and metrics: on CPU always, on CUDA when present.

CPU: pooled states are gathered on the model's device and copied to the host once
(never per layer or batch), the result is bit-identical whether it stays on the
device or not, and ``--dtype auto`` is fp32. CUDA (skipped without it): the engine
and the metrics on the GPU agree with the CPU within the stated tolerance
(pooled embeddings: 1e-4 relative to the largest value, fp32; metrics: equal
up to a few sentences flipping on near-ties, i.e. at most 2/n per output).
"""

from __future__ import annotations

import argparse

import pytest
import torch

import tiny_models
from xling.engine.embed import EmbedConfig, embed_cached, embed_sentences
from xling.engine.pooling import get_pooling
from xling.methods.metrics import PairEmbeddings, compute_metrics
from xling.models.loading import from_objects, resolve_dtype

CUDA = torch.cuda.is_available()
SENTS = tiny_models.PARALLEL["eng"] + tiny_models.PARALLEL["rus"] + ["one", "two three four five six"]
DEFAULT = ["mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc"]


def _lm(kind="llama", device="cpu"):
    model, tok = tiny_models.build(kind)
    return from_objects(model.to(device), tok, kind)


def _host_reference(lm, sentences, cfg):
    """The engine as it was: every pooled layer of every batch copied to the host on its own, then scattered."""
    cfg = cfg.resolved(lm)
    pool = get_pooling(cfg.pooling)
    ids = lm.tokenizer(list(sentences), add_special_tokens=True, truncation=True, max_length=cfg.max_length,
                       return_attention_mask=False)["input_ids"]
    lengths = torch.tensor([len(r) for r in ids])
    order = torch.argsort(lengths, descending=True, stable=True)
    out = None
    for start in range(0, len(ids), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        T = int(lengths[idx].max())
        x = torch.zeros((len(idx), T), dtype=torch.long)
        m = torch.zeros((len(idx), T), dtype=torch.long)
        for b, i in enumerate(idx.tolist()):
            x[b, :len(ids[i])] = torch.tensor(ids[i])
            m[b, :len(ids[i])] = 1
        with torch.inference_mode():
            hs = lm.model(input_ids=x, attention_mask=m, output_hidden_states=True, return_dict=True).hidden_states
        for li, layer in enumerate(cfg.layers):
            v = pool(hs[layer][None], m)[0].float().cpu()
            if out is None:
                out = torch.empty((len(cfg.layers), len(ids), v.shape[-1]))
            out[li, idx] = v
    return out


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_cpu_engine_bit_identical_to_the_host_path(kind, one_thread):
    lm = _lm(kind)
    cfg = EmbedConfig(batch_size=3)
    ref = _host_reference(lm, SENTS, cfg)
    got = embed_sentences(lm, SENTS, cfg)
    assert torch.equal(got, ref)
    kept = embed_sentences(lm, SENTS, cfg, on_device=True)
    assert kept.device == lm.device and torch.equal(kept, ref)


def test_one_host_copy_per_language_not_per_batch(monkeypatch, one_thread):
    """The pooled states are gathered on the device: ``.cpu()`` at most once per call (was: layers x batches)."""
    lm = _lm("llama")
    calls = []
    real = torch.Tensor.cpu

    def counting(self, *a, **k):
        calls.append(tuple(self.shape))
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    embed_sentences(lm, SENTS, EmbedConfig(batch_size=2))  # 8 batches x 4 layers
    assert len(calls) == 1
    calls.clear()
    embed_sentences(lm, SENTS, EmbedConfig(batch_size=2), on_device=True)
    assert calls == []


def test_embed_cached_on_device_writes_the_host_copy(tmp_path, one_thread):
    from xling.engine.embed import EmbeddingCache

    lm = _lm("bert")
    cache = EmbeddingCache(tmp_path)
    a, hit_a = embed_cached(lm, SENTS, EmbedConfig(batch_size=4), cache, on_device=True)
    b, hit_b = embed_cached(lm, SENTS, EmbedConfig(batch_size=4), cache, on_device=True)
    assert (hit_a, hit_b) == (False, True)
    assert b.device == lm.device and torch.equal(a, b)


def test_dtype_auto():
    from xling.cli.common import add_model_flags

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    p = argparse.ArgumentParser()
    add_model_flags(p)
    assert p.parse_args(["--dtype", "auto"]).dtype == "auto"
    if CUDA and torch.cuda.is_bf16_supported():
        assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


# ---------------------------------------------------------------- CUDA


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_cuda_engine_matches_cpu(kind):
    cpu = _lm(kind)
    gpu = _lm(kind, "cuda")
    cfg = EmbedConfig(batch_size=3)
    a = embed_sentences(cpu, SENTS, cfg)
    b = embed_sentences(gpu, SENTS, cfg, on_device=True)
    assert b.device.type == "cuda"
    scale = float(a.abs().max())
    assert float((b.cpu() - a).abs().max()) <= 1e-4 * scale


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("block_size", [None, 128])
def test_cuda_metrics_match_cpu(block_size):
    g = torch.Generator().manual_seed(0)
    n = 300
    X = torch.randn(3, n, 48, generator=g)
    Y = X + 1.2 * torch.randn(3, n, 48, generator=g)
    cpu = compute_metrics(PairEmbeddings(X, Y), DEFAULT, block_size=block_size)
    gpu = compute_metrics(PairEmbeddings(X.cuda(), Y.cuda()), DEFAULT, block_size=block_size)
    assert set(cpu) == set(gpu)
    for key in cpu:
        assert gpu[key].device.type == "cuda"
        tol = 1e-6 if key in ("cka", "anc", "anc_signed") else 2.0 / n  # near-ties may flip in the last bit
        assert float((gpu[key].cpu() - cpu[key]).abs().max()) <= tol, key


# ---------------------------------------------------------------- placement: --device-map, --load-in-*


def test_device_map_auto_gives_the_same_embeddings(tiny_model_dirs, one_thread):
    """``device_map="auto"`` (accelerate) places the model itself; the engine finds its blocks and inputs."""
    pytest.importorskip("accelerate")
    from xling.models.loading import load_model

    folder = tiny_model_dirs["llama"]
    plain = load_model(str(folder), device="cpu", quiet=True)
    placed = load_model(str(folder), device="cpu", quiet=True, device_map="auto")
    assert placed.meta["device_map"] == "auto" and placed.fingerprint == plain.fingerprint
    a = embed_sentences(plain, SENTS, EmbedConfig(batch_size=4))
    b = embed_sentences(placed, SENTS, EmbedConfig(batch_size=4))
    assert placed.meta.get("layer_capture") == "hooks"
    scale = float(a.abs().max())
    assert float((a - b).abs().max()) <= 1e-5 * scale


@pytest.mark.skipif(CUDA, reason="the refusal is for machines without a CUDA GPU")
@pytest.mark.parametrize("flag", ["--load-in-8bit", "--load-in-4bit"])
def test_quantised_loading_refused_in_one_line_without_cuda(flag, capsys, monkeypatch):
    from xling.cli import main
    import xling.models.loading as loading

    called = []
    monkeypatch.setattr(loading, "model_folder", lambda *a, **k: called.append(1))
    for cmd in (["align", "--max-sentences", "5"], ["probe", "--task", "x"], ["lens"]):
        assert main([*cmd, flag]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"xling: error: {flag} needs a CUDA GPU and bitsandbytes (pip install bitsandbytes)"]
    assert not called  # refused before any work
    with pytest.raises(Exception, match="needs a CUDA GPU"):
        loading.load_model("e5-small", quantize=flag.split("-")[-1])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_model_split_between_gpu_and_cpu(tiny_model_dirs):
    """Blocks on different devices (what --device-map gives a model bigger than one GPU): hooks and pooling
    follow each block's device, the pooled states are gathered on the input device."""
    pytest.importorskip("accelerate")
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_model_dirs["llama"]
    tok = AutoTokenizer.from_pretrained(folder)
    ref = from_objects(AutoModel.from_pretrained(folder), tok, "cpu", is_decoder=True)
    n = ref.num_layers
    dmap = {"embed_tokens": 0, "norm": "cpu", "rotary_emb": 0,
            **{f"layers.{i}": (0 if i < n // 2 else "cpu") for i in range(n)}}
    split = from_objects(AutoModel.from_pretrained(folder, device_map=dmap), tok, "split", is_decoder=True)
    a = embed_sentences(ref, SENTS, EmbedConfig(batch_size=3))
    b = embed_sentences(split, SENTS, EmbedConfig(batch_size=3), on_device=True)
    assert b.device.type == "cuda"
    assert float((b.cpu() - a).abs().max()) <= 1e-4 * float(a.abs().max())
