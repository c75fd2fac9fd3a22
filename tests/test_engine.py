"""The engine: pooling definitions, invariances (batch size, padding side, order), cache."""

import numpy as np
import pytest
import torch

import tiny_models
from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached, embed_sentences
from xling.engine.pooling import POOLINGS, get_pooling
from xling.errors import XlingError
from xling.models.layers import find_blocks, parse_layers
from xling.models.loading import from_objects, load_model

KINDS = ["bert", "xlmr", "llama", "gpt2", "gemma3"]
SENTS = tiny_models.PARALLEL["eng"] + tiny_models.PARALLEL["rus"] + ["猫 狗 房子", "one"]


@pytest.fixture(scope="module", params=KINDS)
def lm(request):
    model, tok = tiny_models.build(request.param)
    return from_objects(model, tok, request.param)


# ---------------------------------------------------------------- pooling vs NumPy


def _np_pool(h, m, kind):
    """Independent per-sentence reference: h (T, D) of one sentence, m its 0/1 mask."""
    real = np.nonzero(m)[0]
    if kind == "mean":
        return h[real].mean(0)
    if kind == "weighted-mean":
        w = np.arange(1, len(real) + 1, dtype=np.float64)
        return (h[real] * w[:, None]).sum(0) / w.sum()
    if kind == "last":
        return h[real[-1]]
    if kind == "cls":
        return h[real[0]]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["mean", "weighted-mean", "last", "cls"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_matches_numpy(kind, side):
    rng = np.random.default_rng(0)
    B, T, D, L = 5, 7, 4, 3
    lengths = [7, 1, 3, 5, 2]
    mask = np.zeros((B, T), dtype=np.int64)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = 1
        else:
            mask[b, T - n :] = 1
    h = rng.normal(size=(L, B, T, D))
    h_t = torch.tensor(h, dtype=torch.float32)
    h_t[:, mask == 0] = float("nan")  # padding garbage must never leak into a result
    out = get_pooling(kind)(h_t, torch.tensor(mask)).numpy()
    for layer in range(L):
        for b in range(B):
            np.testing.assert_allclose(out[layer, b], _np_pool(h[layer, b], mask[b], kind), rtol=1e-5, atol=1e-6)


def test_unknown_pooling():
    with pytest.raises(XlingError, match="unknown pooling 'max'"):
        EmbedConfig(pooling="max")


# ---------------------------------------------------------------- invariances on real forward passes


@pytest.mark.parametrize("pooling", ["mean", "weighted-mean", "last", "cls"])
def test_batch_size_and_padding_side_invariance(lm, pooling):
    ref = embed_sentences(lm, SENTS, EmbedConfig(pooling=pooling, batch_size=1))
    assert ref.shape == (lm.num_hidden_states, len(SENTS), lm.model.config.hidden_size)
    assert torch.isfinite(ref).all()
    for bs in (3, 64):
        for side in ("left", "right"):
            got = embed_sentences(lm, SENTS, EmbedConfig(pooling=pooling, batch_size=bs, padding_side=side))
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_order_equivariance(lm):
    perm = np.random.default_rng(1).permutation(len(SENTS))
    a = embed_sentences(lm, SENTS, EmbedConfig(batch_size=4))
    b = embed_sentences(lm, [SENTS[i] for i in perm], EmbedConfig(batch_size=4))
    torch.testing.assert_close(b, a[:, perm], atol=1e-5, rtol=1e-5)


def test_matches_unbatched_transformers_forward(lm):
    """Engine output equals a plain one-sentence-at-a-time transformers forward pass."""
    cfg = EmbedConfig(pooling="mean", layers=(0, lm.num_layers))
    got = embed_sentences(lm, SENTS[:4], cfg)
    for i, s in enumerate(SENTS[:4]):
        enc = lm.tokenizer(s, return_tensors="pt")
        with torch.no_grad():
            hs = lm.model(**enc, output_hidden_states=True).hidden_states
        for li, layer in enumerate(cfg.layers):
            torch.testing.assert_close(got[li, i], hs[layer][0].mean(0), atol=1e-5, rtol=1e-5)


def test_default_pooling_follows_architecture(lm):
    cfg = EmbedConfig().resolved(lm)
    assert cfg.pooling == ("weighted-mean" if lm.name in ("llama", "gpt2", "gemma3") else "mean")


def test_empty_input_is_an_error(lm):
    with pytest.raises(XlingError):
        embed_sentences(lm, [], EmbedConfig())


# ---------------------------------------------------------------- layers


def test_layer_accessor_finds_blocks(lm):
    blocks = find_blocks(lm.model)
    assert len(blocks) == lm.num_layers
    assert blocks.path in {"encoder.layer", "layers", "h"}


def test_parse_layers():
    assert parse_layers(None, 13) == list(range(13))
    assert parse_layers("0,6,12", 13) == [0, 6, 12]
    assert parse_layers("4-6", 13) == [4, 5, 6]
    assert parse_layers("-1", 13) == [12]
    assert parse_layers("middle", 13) == [6]
    with pytest.raises(XlingError, match="layer 13 is out of range"):
        parse_layers("13", 13)
    with pytest.raises(XlingError, match="invalid layer"):
        parse_layers("x", 13)


# ---------------------------------------------------------------- loading and cache


@pytest.mark.parametrize("kind", KINDS)
def test_load_from_folder(tiny_model_dirs, kind):
    lm = load_model(str(tiny_model_dirs[kind]), device="cpu")
    assert lm.is_decoder == (kind in ("llama", "gpt2", "gemma3"))
    assert lm.num_hidden_states == 4
    emb = embed_sentences(lm, SENTS[:3], EmbedConfig())
    assert torch.isfinite(emb).all()
    # the fingerprint depends on the weights, not on the folder name
    again = load_model(str(tiny_model_dirs[kind]), device="cpu")
    assert again.fingerprint == lm.fingerprint


def test_load_errors(tmp_path, tiny_model_dirs):
    with pytest.raises(XlingError, match="model not found"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(XlingError, match="model not found"):
        load_model("no-such-org/no-such-model")  # HF_HUB_OFFLINE is set by conftest
    (tmp_path / "empty").mkdir()
    with pytest.raises(XlingError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    # pickled weights only: refused
    import shutil

    pick = tmp_path / "pickled"
    shutil.copytree(tiny_model_dirs["bert"], pick)
    for f in pick.glob("*.safetensors"):
        f.unlink()
    (pick / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(XlingError, match="no .safetensors"):
        load_model(str(pick))
    with pytest.raises(XlingError, match="unknown dtype"):
        load_model(str(tiny_model_dirs["bert"]), dtype="int3")


def test_bf16_runs(tiny_model_dirs):
    lm = load_model(str(tiny_model_dirs["llama"]), dtype="bf16", device="cpu")
    emb = embed_sentences(lm, SENTS[:3], EmbedConfig())
    assert emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_cache_round_trip_and_keying(tmp_path):
    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "bert")
    cache = EmbeddingCache(tmp_path)
    cfg = EmbedConfig(batch_size=4)
    a, hit = embed_cached(lm, SENTS, cfg, cache)
    assert not hit
    b, hit = embed_cached(lm, SENTS, cfg, cache)
    assert hit and torch.equal(a, b)
    # a different pooling, prefix or sentence list is a different entry
    for other_cfg, sents in [(EmbedConfig(pooling="cls"), SENTS), (EmbedConfig(prefix="a "), SENTS), (cfg, SENTS[:-1])]:
        _, hit = embed_cached(lm, sents, other_cfg, cache)
        assert not hit
    # a damaged entry is recomputed, not trusted
    key = cache.key(lm, cfg, SENTS)
    cache.path(key).write_bytes(b"garbage")
    c, hit = embed_cached(lm, SENTS, cfg, cache)
    assert not hit and torch.equal(a, c)


def test_poolings_registry():
    assert {"mean", "mean-nospecial", "weighted-mean", "last", "cls"} <= set(POOLINGS)


def test_mean_nospecial_excludes_specials():
    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "bert")
    got = embed_sentences(lm, ["the cat"], EmbedConfig(pooling="mean-nospecial", layers=(2,)))
    enc = tok("the cat", return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(got[0, 0], hs[1:-1].mean(0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_hooks_equal_transformers_hidden_states(kind, one_thread):
    """The hook path pools exactly what output_hidden_states returns, for every layer and architecture."""
    from xling.engine.embed import EmbedConfig, embed_sentences

    model, tok = tiny_models.build(kind)
    lm = from_objects(model, tok, kind)
    sents = tiny_models.PARALLEL["eng"] + tiny_models.PARALLEL["deu"]
    got = embed_sentences(lm, sents, EmbedConfig(pooling="mean", batch_size=4))
    assert lm.meta.get("layer_capture") == "hooks"
    ref = []
    for s in sents:
        enc = tok(s, return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        ref.append(torch.stack([h[0].mean(0) for h in hs]))
    torch.testing.assert_close(got, torch.stack(ref, 1), atol=1e-5, rtol=1e-4)


def test_layer_hooks_fall_back_when_blocks_do_not_map_onto_hidden_states(one_thread):
    """Blocks that do not produce the model's hidden states in order are caught on the first batch."""
    from xling.models.layers import Blocks

    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "bert")
    shuffled = torch.nn.ModuleList(list(model.encoder.layer)[::-1])  # what a wrong accessor would return
    lm.blocks = lambda: Blocks("wrong", shuffled)
    sents = tiny_models.PARALLEL["eng"]
    got = embed_sentences(lm, sents, EmbedConfig(pooling="mean", batch_size=3))
    assert lm.meta.get("layer_capture") == "hidden_states"
    with torch.no_grad():
        ref = [torch.stack([h[0].mean(0) for h in model(**tok(s, return_tensors="pt"), output_hidden_states=True)
                            .hidden_states]) for s in sents]
    torch.testing.assert_close(got, torch.stack(ref, 1), atol=1e-5, rtol=1e-4)
