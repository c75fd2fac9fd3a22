"""The blocked (streaming) path of the metrics equals the dense path exactly, and stays bounded."""

from __future__ import annotations

import pytest
import torch

import tiny_models
import xling.methods.metrics as mm
from xling.errors import XlingError
from xling.methods.metrics import PairEmbeddings, compute_metrics, parse_memory, plan_blocks

ALL = ["mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc", "svcca"]

OPTION_SETS = [
    None,
    {"retrieval": {"ties": "first", "ks": (1, 2, 3, 40)}, "xsim": {"ties": "first"},
     "bitext_f1": {"ties": "first", "precision_recall": True}},
    {"retrieval": {"ks": (1, 7, 1000)}, "xsim": {"candidates": "all"}, "bitext_f1": {"precision_recall": True},
     "mexa": {"directional": True}},
    {"xsim": {"margin": "distance", "k": 2}},
    {"xsim": {"margin": "absolute", "k": 1, "candidates": "all", "ties": "first"}},
    {"xsim": {"k": 100}},
]


def assert_same(X, Y, options=None, blocks=(4, 8, 12, 1000), tile=4, dtype=None, names=ALL):
    """Dense (no budget) vs blocked at each block size: bit-identical outputs."""
    old = mm.SIM_TILE
    mm.SIM_TILE = tile
    try:
        dense = compute_metrics(PairEmbeddings(X, Y, dtype=dtype), names, options, memory_budget=None)
        for block in blocks:
            got = compute_metrics(PairEmbeddings(X, Y, dtype=dtype), names, options, block_size=block)
            assert list(got) == list(dense), block
            for key in dense:
                assert torch.equal(got[key], dense[key]), (block, key, got[key], dense[key])
    finally:
        mm.SIM_TILE = old
    return dense


def tied_pair(seed=0, L=2, n=23, d=3):
    """Embeddings from {-1, 0, 1}: exact ties everywhere, zero rows, and duplicated rows."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-1, 2, (L, n, d), generator=g).float()
    Y = torch.randint(-1, 2, (L, n, d), generator=g).float()
    X[:, 5] = X[:, 6]
    Y[:, 5] = Y[:, 6]
    Y[:, 10] = Y[:, 11]
    X[:, 3] = 0.0
    return X, Y


@pytest.mark.parametrize("options", OPTION_SETS)
def test_blocked_equals_dense_on_random_data(options):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 23, 6, generator=g)
    Y = X + torch.randn(3, 23, 6, generator=g)
    dense = assert_same(X, Y, options)
    assert 0.0 < dense["mexa"].max() < 1.0  # a non-trivial case
    assert_same(X.double(), Y.double(), options)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_blocked_equals_dense_with_exact_ties(options):
    X, Y = tied_pair()
    pair = PairEmbeddings(X, Y)
    S = pair.sim
    offdiag_ties = (S.unsqueeze(-1) == S.diagonal(dim1=1, dim2=2)[:, :, None, None]).sum()
    assert offdiag_ties > 100  # the data really ties with the gold
    assert_same(X, Y, options)
    # identical sides: every duplicated row is a tie with the gold itself
    assert_same(X, X.clone(), options)


def test_blocked_equals_dense_on_model_embeddings(one_thread):
    """Real-ish: pooled states of a tiny BERT (positive, anisotropic), several layers, two tile sizes."""
    from xling.engine.embed import EmbedConfig, embed_sentences
    from xling.models.loading import from_objects

    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "tiny-bert")
    langs = list(tiny_models.PARALLEL)
    sents = {k: tiny_models.PARALLEL[k] * 4 for k in langs[:2]}  # repeated sentences: duplicated rows
    cfg = EmbedConfig(pooling="mean").resolved(lm)
    X = embed_sentences(lm, sents[langs[0]], cfg)
    Y = embed_sentences(lm, sents[langs[1]], cfg)
    assert X.shape[0] == lm.num_hidden_states and X.shape[1] >= 20
    for options in OPTION_SETS[:3]:
        assert_same(X, Y, options, blocks=(4, 12, 64))
        assert_same(X, Y, options, tile=8, blocks=(8, 16, 24))


def test_default_tile_several_blocks_not_dividing_n():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1, 300, 16, generator=g)
    X = base + 0.05 * torch.randn(2, 300, 16, generator=g) + 1.0  # shared offset: positive cosines
    Y = base + 0.3 * torch.randn(2, 300, 16, generator=g) + 1.0
    X[:, 200] = X[:, 7]
    assert_same(X, Y, None, tile=mm.SIM_TILE, blocks=(128, 256))


def test_blocked_path_never_builds_the_full_matrix(monkeypatch):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(2, 40, 5, generator=g)
    Y = X + torch.randn(2, 40, 5, generator=g)
    monkeypatch.setattr(mm, "SIM_TILE", 4)
    dense = compute_metrics(PairEmbeddings(X, Y), ALL, memory_budget=None)
    asked = []
    real = mm._SimLayer.rows
    monkeypatch.setattr(mm._SimLayer, "rows", lambda self, a, b: asked.append(b - a) or real(self, a, b))
    monkeypatch.setattr(PairEmbeddings, "sim", property(lambda self: pytest.fail("dense matrix built")))
    got = compute_metrics(PairEmbeddings(X, Y), ALL, block_size=8)
    assert max(asked) == 8 and len(asked) == 2 * 5  # 2 layers x 5 blocks, one pass for every metric (xsim too)
    for key in dense:
        assert torch.equal(got[key], dense[key]), key


def test_budget_picks_dense_or_blocks():
    f32 = torch.float32
    assert plan_blocks(1000, 13, f32) is None  # 13 x 1000^2 x 48 B < 1 GiB: dense
    block = plan_blocks(31102, 13, f32)
    assert block is not None and block % mm.SIM_TILE == 0 and block * 31102 * 48 <= 1 << 30
    assert plan_blocks(31102, 13, f32, memory_budget=2 << 30) == 2 * block or \
        abs(plan_blocks(31102, 13, f32, memory_budget=2 << 30) - 2 * block) <= mm.SIM_TILE
    assert plan_blocks(10**6, 1, f32, memory_budget=1 << 20) == mm.SIM_TILE  # at least one tile
    assert plan_blocks(10, 1, f32, block_size=300) == 256
    assert plan_blocks(10, 1, f32, memory_budget=None) is None
    with pytest.raises(XlingError, match="block_size"):
        plan_blocks(10, 1, f32, block_size=0)


def test_budget_switches_path_with_identical_results(monkeypatch):
    g = torch.Generator().manual_seed(4)
    X = torch.randn(2, 60, 4, generator=g)
    Y = X + torch.randn(2, 60, 4, generator=g)
    monkeypatch.setattr(mm, "SIM_TILE", 8)
    calls = []
    real = mm._pass1
    monkeypatch.setattr(mm, "_pass1", lambda *a, **k: calls.append(1) or real(*a, **k))
    dense = compute_metrics(PairEmbeddings(X, Y), ALL)  # default budget: dense for this size
    assert not calls
    small = compute_metrics(PairEmbeddings(X, Y), ALL, memory_budget=60 * 48 * 16)  # 16 rows fit
    assert calls
    for key in dense:
        assert torch.equal(small[key], dense[key]), key


@pytest.mark.parametrize("text, size", [("2GB", 2 << 30), ("512MB", 512 << 20), ("1.5G", 3 << 29),
                                        ("800 MiB", 800 << 20), (1 << 30, 1 << 30), ("4096k", 4 << 20)])
def test_parse_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["lots", "2 PB", "", "-1GB", "10", True, "0.5k"])
def test_parse_memory_rejects(bad):
    with pytest.raises(XlingError, match="memory budget"):
        parse_memory(bad)


def test_align_threads_the_budget_to_the_metrics(monkeypatch, tmp_path):
    from xling.data.corpus import ParallelCorpus
    from xling.models.loading import from_objects
    from xling.recipes.align.run import AlignConfig, align

    seen = []
    real = mm.compute_metrics

    def spy(pair, names, options=None, **kw):
        seen.append((pair.n, kw.get("memory_budget")))
        return real(pair, names, options, **kw)

    monkeypatch.setattr(mm, "compute_metrics", spy)
    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "tiny-bert")
    corpus = ParallelCorpus("tiny", {"eng_Latn": tiny_models.PARALLEL["eng"], "deu_Latn": tiny_models.PARALLEL["deu"]})
    res = align(lm=lm, corpus=corpus, out=None, store=None, progress=False, memory_budget="2MB")
    n = len(tiny_models.PARALLEL["eng"])
    assert [b for m, b in seen if m == n] == [2 << 20] and res.config.memory_budget == 2 << 20
    with pytest.raises(XlingError, match="--memory-budget"):
        AlignConfig(memory_budget="a lot")


def test_cli_memory_budget_error_is_one_line(capsys):
    from xling.cli import main

    assert main(["align", "--memory-budget", "huge", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xling: error: --memory-budget") and "\n" not in err
