"""One scan of the cosine matrix feeds MEXA, retrieval, xSIM and bitext F1 (row and column top-k lists).

The lists decide every default output; exact ties that reach the end of a list send a
metric to its full path. These tests force the full path (the metrics as they were
computed before the shared lists) and compare it with the lists, bit for bit, dense and
blocked, on random data, on positive model-like data and on data full of exact ties.
"""

from __future__ import annotations

import pytest
import torch

import xling.methods.metrics as mm
from xling.methods.metrics import PairEmbeddings, compute_metrics

MATRIX = ["mexa", "retrieval", "xsim", "bitext_f1"]
OPTION_SETS = [
    None,
    {"mexa": {"directional": True}, "retrieval": {"ks": (1, 2, 3, 40)}, "bitext_f1": {"precision_recall": True}},
    {"retrieval": {"ties": "first", "ks": (1, 5)}, "xsim": {"ties": "first"}, "bitext_f1": {"ties": "first"}},
    {"xsim": {"margin": "distance", "k": 2}},
    {"xsim": {"margin": "absolute", "k": 1, "ties": "first"}},
    {"xsim": {"k": 100}},
]


def _data(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        X = torch.randn(2, 37, 6, generator=g)
        return X, X + torch.randn(2, 37, 6, generator=g)
    if kind == "positive":  # a shared offset: all cosines positive, as pooled model states have
        base = torch.randn(1, 37, 8, generator=g)
        return base + 0.1 * torch.randn(2, 37, 8, generator=g) + 1.0, base + 0.4 * torch.randn(2, 37, 8, generator=g) + 1.0
    X = torch.randint(-1, 2, (2, 37, 3), generator=g).float()  # "ties": exact ties, duplicates, a zero row
    Y = torch.randint(-1, 2, (2, 37, 3), generator=g).float()
    X[:, 5] = X[:, 6]
    Y[:, 10] = Y[:, 11]
    X[:, 3] = 0.0
    return X, Y


def _full_path(monkeypatch, X, Y, options, **kw):
    with monkeypatch.context() as m:
        m.setattr(mm, "_decided", lambda *undecided: False)  # nothing decided by the lists
        return compute_metrics(PairEmbeddings(X, Y), MATRIX, options, **kw)


@pytest.mark.parametrize("kind", ["random", "positive", "ties"])
@pytest.mark.parametrize("options", OPTION_SETS)
def test_lists_equal_the_full_path(monkeypatch, kind, options):
    X, Y = _data(kind)
    monkeypatch.setattr(mm, "SIM_TILE", 4)
    for kw in ({"memory_budget": None}, {"block_size": 8}, {"block_size": 12}):
        ref = _full_path(monkeypatch, X, Y, options, **kw)
        got = compute_metrics(PairEmbeddings(X, Y), MATRIX, options, **kw)
        assert list(got) == list(ref)
        for key in ref:
            assert torch.equal(got[key], ref[key]), (kind, kw, key, got[key], ref[key])


def test_default_metrics_decided_by_the_lists_without_a_second_scan(monkeypatch):
    """On tie-free data every default output comes from the lists: one scan, no full pass."""
    X, Y = _data("positive", 1)
    monkeypatch.setattr(mm, "SIM_TILE", 4)
    monkeypatch.setattr(mm, "_pass1_full", lambda *a, **k: pytest.fail("full pass"))
    scans = []
    real = mm._scan
    monkeypatch.setattr(mm, "_scan", lambda *a, **k: scans.append(1) or real(*a, **k))
    compute_metrics(PairEmbeddings(X, Y), MATRIX, block_size=8)  # blocked: one layer at a time
    assert len(scans) == X.shape[0]


def test_ties_at_a_list_end_take_the_full_path(monkeypatch):
    """Many copies of one sentence tie past the end of every list: the result still equals the full path."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(1, 30, 4, generator=g)
    Y = X + 0.3 * torch.randn(1, 30, 4, generator=g)
    Y[:, 1:12] = Y[:, 0]  # 12 identical columns: a tie group longer than any list
    opts = {"retrieval": {"ties": "first"}, "bitext_f1": {"ties": "first"}, "xsim": {"ties": "first"}}
    ref = _full_path(monkeypatch, X, Y, opts, memory_budget=None)
    got = compute_metrics(PairEmbeddings(X, Y), MATRIX, opts, memory_budget=None)
    for key in ref:
        assert torch.equal(got[key], ref[key]), key


@pytest.mark.parametrize("kw", [{"memory_budget": None}, {"block_size": 8}])
def test_one_scan_per_layer_dense_and_blocked(monkeypatch, kw):
    """MEXA (top-1) then retrieval@5 then xSIM@4: the first scan already keeps the largest k."""
    X, Y = _data("random", 3)
    monkeypatch.setattr(mm, "SIM_TILE", 4)
    scans = []
    real = mm._scan
    monkeypatch.setattr(mm, "_scan", lambda pair, K, slabs: scans.append(pair.L) or real(pair, K, slabs))
    compute_metrics(PairEmbeddings(X, Y), ["mexa", "retrieval", "xsim", "bitext_f1"], **kw)
    assert sum(scans) == X.shape[0]  # every layer scanned once
