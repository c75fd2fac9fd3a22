"""Metrics against independent, plainly written NumPy computations of methods.md formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xling.errors import XlingError
from xling.methods.metrics import (
    METRICS,
    PairEmbeddings,
    compute_metrics,
    higher_is_better,
    register_metric,
    resolve_options,
)

ALL = ["mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc", "svcca"]


# --------------------------------------------------------------------------------------
# Independent NumPy references (one layer at a time, loops where it reads plainly)
# --------------------------------------------------------------------------------------


def np_cos(X, Y):
    n = X.shape[0]
    S = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            nx, ny = np.linalg.norm(X[i]), np.linalg.norm(Y[j])
            S[i, j] = 0.0 if nx == 0 or ny == 0 else float(X[i] @ Y[j]) / (nx * ny)
    return S


def np_mexa(S):
    n = S.shape[0]
    hits = 0
    for i in range(n):
        others_row = [S[i, j] for j in range(n) if j != i]
        others_col = [S[j, i] for j in range(n) if j != i]
        if S[i, i] > max(others_row) and S[i, i] > max(others_col):
            hits += 1
    return hits / n


def np_rank_of_gold(scores, i, ties):
    """Position (0-based) of candidate i after sorting scores descending.

    strict: among equal scores the gold is placed last; first: a stable sort (earlier
    index first), as argmax/argsort would."""
    n = len(scores)
    if ties == "first":
        order = sorted(range(n), key=lambda j: (-scores[j], j))
    else:
        order = sorted(range(n), key=lambda j: (-scores[j], j == i, j))
    return order.index(i)


def np_retrieval(S, k, ties="strict"):
    n = S.shape[0]
    p2l = np.mean([np_rank_of_gold(S[i], i, ties) < k for i in range(n)])
    l2p = np.mean([np_rank_of_gold(S[:, i], i, ties) < k for i in range(n)])
    return p2l, l2p


def np_xsim_err(S, k=4, margin="ratio", candidates="knn", ties="strict"):
    """Queries are rows of S (pivot -> other); pass S.T for the other direction.

    knn candidates (LASER): the k cosine-nearest neighbours of the query, where a
    candidate tied with the k-th nearest is included and the gold only if its own rank
    (under the tie rule) is below k -- the documented rule; on tie-free data this is
    exactly LASER's faiss top-k."""
    n = S.shape[0]
    k = min(k, n)

    def nn_mean_row(i):  # mean cos of query i to its k nearest neighbours among columns
        return sum(sorted(S[i, :], reverse=True)[:k]) / k

    def nn_mean_col(j):  # mean cos of candidate j to its k nearest neighbours among rows
        return sum(sorted(S[:, j], reverse=True)[:k]) / k

    def score(i, j):
        if margin == "absolute":
            return S[i, j]
        b = nn_mean_row(i) / 2 + nn_mean_col(j) / 2
        return S[i, j] / b if margin == "ratio" else S[i, j] - b

    errors = 0
    for i in range(n):
        if candidates == "all":
            cands = list(range(n))
        else:
            cands = [j for j in range(n) if j != i and sum(S[i, m] > S[i, j] for m in range(n)) < k]
            if np_rank_of_gold(S[i], i, ties) < k:
                cands.append(i)
        scores = {j: score(i, j) for j in cands}
        if i not in scores:
            errors += 1
        elif ties == "first":
            best = max(scores.values())
            errors += min(j for j in cands if scores[j] == best) != i
        else:
            errors += not all(scores[i] > scores[j] for j in cands if j != i)
    return errors / n


def np_weighted_prf(labels, preds):
    """sklearn's precision/recall/f1 with average='weighted', zero_division=0, written out."""
    classes = sorted(set(labels) | set(preds))
    total = len(labels)
    P = R = F = 0.0
    for c in classes:
        tp = sum(1 for a, b in zip(labels, preds) if a == c and b == c)
        fp = sum(1 for a, b in zip(labels, preds) if a != c and b == c)
        fn = sum(1 for a, b in zip(labels, preds) if a == c and b != c)
        support = tp + fn
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        P += support / total * prec
        R += support / total * rec
        F += support / total * f1
    return P, R, F


def np_bitext_preds(S, ties="strict"):
    n = S.shape[0]
    preds = []
    for i in range(n):
        if ties == "first":
            preds.append(int(np.argmax(S[i])))  # numpy: first maximal index
        else:
            if all(S[i, i] > S[i, j] for j in range(n) if j != i):
                preds.append(i)
            else:
                best = max(S[i, j] for j in range(n) if j != i)
                preds.append(min(j for j in range(n) if j != i and S[i, j] == best))
    return preds


def np_bitext(S, ties="strict"):
    labels = list(range(S.shape[0]))
    preds = np_bitext_preds(S, ties)
    P, R, F = np_weighted_prf(labels, preds)
    acc = float(np.mean([a == b for a, b in zip(labels, preds)]))
    return F, acc, P, R


def np_cka(X, Y):
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    return np.linalg.norm(Y.T @ X, "fro") ** 2 / (np.linalg.norm(X.T @ X, "fro") * np.linalg.norm(Y.T @ Y, "fro"))


def np_anc(X, Y):
    rs = []
    for j in range(X.shape[1]):
        if np.ptp(X[:, j]) == 0 or np.ptp(Y[:, j]) == 0:
            continue  # documented rule: constant neurons are excluded from the average
        rs.append(np.corrcoef(X[:, j], Y[:, j])[0, 1])
    if not rs:
        return 0.0, 0.0
    rs = np.array(rs)
    return float(np.mean(np.abs(rs))), float(np.mean(rs))


def np_svcca(X, Y, keep=0.99):
    """Reduce each side with numpy SVD, then classical CCA through covariance whitening."""

    def reduce(A):
        A = A - A.mean(axis=0)
        U, s, Vt = np.linalg.svd(A, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        r = int(np.searchsorted(frac, keep - 1e-12) + 1)
        return A @ Vt[:r].T  # coordinates in the top-r directions (n x r)

    def inv_sqrt(C):
        w, V = np.linalg.eigh(C)
        return V @ np.diag(w**-0.5) @ V.T

    A, B = reduce(X), reduce(Y)
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    T = inv_sqrt(A.T @ A) @ (A.T @ B) @ inv_sqrt(B.T @ B)
    rho = np.linalg.svd(T, compute_uv=False)
    return float(np.mean(rho[: min(A.shape[1], B.shape[1])]))


def np_all(X, Y, ks=(1, 5)):
    """Every default output for one layer of float64 arrays."""
    S = np_cos(X, Y)
    out = {"mexa": np_mexa(S)}
    for k in ks:
        out[f"retrieval_p2l@{k}"], out[f"retrieval_l2p@{k}"] = np_retrieval(S, k)
    out["xsim_err_p2l"] = np_xsim_err(S)
    out["xsim_err_l2p"] = np_xsim_err(S.T)
    out["bitext_f1"], out["bitext_acc"], _, _ = np_bitext(S)
    out["cka"] = np_cka(X, Y)
    out["anc"], out["anc_signed"] = np_anc(X, Y)
    out["svcca"] = np_svcca(X, Y)
    return out


def run(X, Y, names=ALL, options=None, **kw):
    return compute_metrics(PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y), **kw), names, options)


def assert_layer_matches(got, X, Y, layer, atol=1e-9):
    ref = np_all(X[layer], Y[layer])
    for key, value in ref.items():
        assert got[key][layer].item() == pytest.approx(value, abs=atol), key


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def noisy_pair(L=3, n=30, d=8, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(L, n, d))
    Y = X + noise * rng.normal(size=(L, n, d))
    return X, Y


# --------------------------------------------------------------------------------------
# Against the references
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_all_metrics_match_numpy_on_random_data(noise):
    X, Y = noisy_pair(L=2, n=25, d=6, noise=noise, seed=int(noise * 10))
    got = run(X, Y)
    for layer in range(2):
        assert_layer_matches(got, X, Y, layer)
    for value in got.values():
        assert value.shape == (2,) and value.dtype == torch.float64


def test_outputs_names_and_values_are_in_range():
    X, Y = noisy_pair()
    got = run(X, Y)
    assert set(got) == {
        "mexa", "retrieval_p2l@1", "retrieval_l2p@1", "retrieval_p2l@5", "retrieval_l2p@5",
        "xsim_err_p2l", "xsim_err_l2p", "bitext_f1", "bitext_acc", "cka", "anc", "anc_signed", "svcca",
    }  # fmt: skip
    for key, value in got.items():
        assert torch.isfinite(value).all(), key
        lo = -1.0 if key == "anc_signed" else 0.0
        assert (value >= lo).all() and (value <= 1.0).all(), key
    assert (got["bitext_f1"] <= got["bitext_acc"] + 1e-12).all()
    assert (got["mexa"] <= torch.minimum(got["retrieval_p2l@1"], got["retrieval_l2p@1"])).all()


def test_sim_matrix_is_cosine_and_shared():
    X, Y = noisy_pair(L=2, n=7, d=5)
    pair = PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y))
    S = pair.sim
    assert S is pair.sim  # cached
    for layer in range(2):
        np.testing.assert_allclose(S[layer].numpy(), np_cos(X[layer], Y[layer]), atol=1e-12)


@pytest.mark.parametrize("ties", ["strict", "first"])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 50])
def test_retrieval_topk_with_ties(ties, k):
    # Duplicated rows give exact ties everywhere in S.
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 5))
    X = np.concatenate([base, base[:3], base[1:2]])[None]  # rows 0..9 with duplicates
    Y = X + 0.0
    Y[0, 2] = -Y[0, 2]  # one clear miss
    got = run(X, Y, ["retrieval"], {"retrieval": {"ks": (k,), "ties": ties}})
    S = np_cos(X[0], Y[0])
    p2l, l2p = np_retrieval(S, k, ties)
    assert got[f"retrieval_p2l@{k}"].item() == pytest.approx(p2l)
    assert got[f"retrieval_l2p@{k}"].item() == pytest.approx(l2p)


def test_mexa_and_retrieval_treat_ties_as_misses():
    # Rows 0 and 1 identical on both sides: S_00 == S_01 == S_10 == S_11.
    X = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None]
    got = run(X, X.copy(), ["mexa", "retrieval", "bitext_f1"], {"retrieval": {"ks": (1, 2)}})
    assert got["mexa"].item() == pytest.approx(0.5)
    assert got["retrieval_p2l@1"].item() == pytest.approx(0.5)
    assert got["retrieval_p2l@2"].item() == pytest.approx(1.0)
    assert got["bitext_acc"].item() == pytest.approx(0.5)
    # "first": sentence 0 wins its tie (earlier index), sentence 1 loses it.
    got = run(X, X.copy(), ["retrieval", "bitext_f1"], {"retrieval": {"ties": "first"}, "bitext_f1": {"ties": "first"}})
    assert got["retrieval_p2l@1"].item() == pytest.approx(0.75)
    assert got["bitext_acc"].item() == pytest.approx(0.75)
    # both rows 0 and 1 predict target 0: F1 = (2/3 + 0 + 1 + 1) / 4
    assert got["bitext_f1"].item() == pytest.approx((2 / 3 + 2) / 4)


def test_collapsed_space_scores_zero_not_first_index():
    X = np.ones((1, 5, 4))
    got = run(X, X.copy(), ["mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc", "svcca"])
    for key in ("mexa", "retrieval_p2l@1", "retrieval_l2p@1", "bitext_acc", "bitext_f1", "cka", "anc", "svcca"):
        assert got[key].item() == 0.0, key
    assert got["xsim_err_p2l"].item() == 1.0
    assert got["retrieval_p2l@5"].item() == 1.0  # k >= n: always within the top k


def test_identical_sides():
    X, _ = noisy_pair(L=2, n=20, d=8)
    got = run(X, X.copy())
    for key in ("mexa", "retrieval_p2l@1", "retrieval_l2p@1", "bitext_f1", "bitext_acc", "cka", "anc", "anc_signed", "svcca"):
        np.testing.assert_allclose(got[key].numpy(), 1.0, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(got["xsim_err_p2l"].numpy(), 0.0)


def test_permutation_makes_retrieval_zero():
    X, _ = noisy_pair(L=1, n=12, d=16, seed=3)
    perm = np.roll(np.arange(12), 1)  # a derangement
    got = run(X, X[:, perm].copy())
    for key in ("mexa", "retrieval_p2l@1", "retrieval_l2p@1", "bitext_acc", "bitext_f1"):
        assert got[key].item() == 0.0, key
    assert got["xsim_err_p2l"].item() == 1.0 and got["xsim_err_l2p"].item() == 1.0
    assert_layer_matches(got, X, X[:, perm], 0)


def test_bitext_hub_penalty_matches_weighted_f1():
    # Three queries map onto target 0 (a hub): accuracy counts one, F1 penalises it.
    X = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.8, 0.0, 0.2], [0.0, 0.0, 1.0]])[None]
    Y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.1], [0.0, 0.2, 1.0], [-0.1, 0.1, 1.0]])[None]
    got = run(X, Y, ["bitext_f1"], {"bitext_f1": {"precision_recall": True}})
    F, acc, P, R = np_bitext(np_cos(X[0], Y[0]))
    assert got["bitext_f1"].item() == pytest.approx(F)
    assert got["bitext_acc"].item() == pytest.approx(acc)
    assert got["bitext_precision"].item() == pytest.approx(P)
    assert got["bitext_recall"].item() == pytest.approx(R)
    assert F < acc


@pytest.mark.parametrize("ties", ["strict", "first"])
def test_bitext_against_sklearn(ties):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1, 40, 4))
    Y = X + 1.5 * rng.normal(size=(1, 40, 4))
    Y[0, 7] = Y[0, 3]  # an exact tie somewhere
    got = run(X, Y, ["bitext_f1"], {"bitext_f1": {"ties": ties, "precision_recall": True}})
    labels = list(range(40))
    preds = np_bitext_preds(np_cos(X[0], Y[0]), ties)
    kw = dict(average="weighted", zero_division=0)
    assert got["bitext_f1"].item() == pytest.approx(metrics.f1_score(labels, preds, **kw))
    assert got["bitext_precision"].item() == pytest.approx(metrics.precision_score(labels, preds, **kw))
    assert got["bitext_recall"].item() == pytest.approx(metrics.recall_score(labels, preds, **kw))
    assert got["bitext_acc"].item() == pytest.approx(metrics.accuracy_score(labels, preds))


@pytest.mark.parametrize("margin", ["ratio", "distance", "absolute"])
@pytest.mark.parametrize("candidates", ["all", "knn"])
@pytest.mark.parametrize("k", [1, 4, 100])
def test_xsim_options(margin, candidates, k):
    X, Y = noisy_pair(L=1, n=30, d=5, noise=1.2, seed=7)
    got = run(X, Y, ["xsim"], {"xsim": {"margin": margin, "candidates": candidates, "k": k}})
    S = np_cos(X[0], Y[0])
    assert got["xsim_err_p2l"].item() == pytest.approx(np_xsim_err(S, k, margin, candidates))
    assert got["xsim_err_l2p"].item() == pytest.approx(np_xsim_err(S.T, k, margin, candidates))


@pytest.mark.parametrize("ties", ["strict", "first"])
@pytest.mark.parametrize("candidates", ["all", "knn"])
@pytest.mark.parametrize("margin", ["ratio", "absolute"])
def test_xsim_with_exact_ties(ties, candidates, margin):
    rng = np.random.default_rng(21)
    base = rng.normal(size=(7, 4))
    X = np.concatenate([base, base[2:5], base[:1]])[None]  # duplicated sentences
    Y = X + 0.05 * rng.normal(size=X.shape)
    Y[0, 8] = Y[0, 3]
    Y[0, 9] = Y[0, 1]
    got = run(X, Y, ["xsim"], {"xsim": {"margin": margin, "candidates": candidates, "ties": ties, "k": 3}})
    S = np_cos(X[0], Y[0])
    assert got["xsim_err_p2l"].item() == pytest.approx(np_xsim_err(S, 3, margin, candidates, ties))
    assert got["xsim_err_l2p"].item() == pytest.approx(np_xsim_err(S.T, 3, margin, candidates, ties))


def test_xsim_absolute_is_one_minus_retrieval():
    X, Y = noisy_pair(L=2, n=60, d=6, noise=1.0, seed=11)
    got = run(X, Y, ["xsim", "retrieval"], {"xsim": {"margin": "absolute"}})
    torch.testing.assert_close(got["xsim_err_p2l"], 1 - got["retrieval_p2l@1"])
    torch.testing.assert_close(got["xsim_err_l2p"], 1 - got["retrieval_l2p@1"])


def test_cka_forms_agree_and_match_numpy():
    X, Y = noisy_pair(L=2, n=12, d=20, seed=2)  # n < d
    a = run(X, Y, ["cka"], {"cka": {"form": "gram"}})["cka"]
    b = run(X, Y, ["cka"], {"cka": {"form": "feature"}})["cka"]
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for layer in range(2):
        assert a[layer].item() == pytest.approx(np_cka(X[layer], Y[layer]), abs=1e-12)


def test_anc_constant_columns_are_excluded():
    X, Y = noisy_pair(L=1, n=15, d=6, seed=4)
    X[0, :, 2] = 3.25  # constant neuron on the pivot side
    Y[0, :, 4] = -1.0  # constant neuron on the other side
    got = run(X, Y, ["anc"])
    a, s = np_anc(X[0], Y[0])
    assert got["anc"].item() == pytest.approx(a, abs=1e-12)
    assert got["anc_signed"].item() == pytest.approx(s, abs=1e-12)
    # Identical sides with a constant neuron still score exactly 1, no NaN.
    got = run(X, X.copy(), ["anc"])
    assert got["anc"].item() == pytest.approx(1.0) and got["anc_signed"].item() == pytest.approx(1.0)
    # Every neuron constant: 0 by definition.
    got = run(np.ones((1, 4, 3)), np.zeros((1, 4, 3)), ["anc"])
    assert got["anc"].item() == 0.0 and got["anc_signed"].item() == 0.0


def test_anc_signed_sees_anticorrelation():
    X, _ = noisy_pair(L=1, n=20, d=4, seed=9)
    got = run(X, -X, ["anc", "cka"])
    assert got["anc"].item() == pytest.approx(1.0)
    assert got["anc_signed"].item() == pytest.approx(-1.0)
    assert got["cka"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("keep", [0.9, 0.99, 1.0])
def test_svcca_matches_numpy(keep):
    rng = np.random.default_rng(8)
    # anisotropic data so that the 99% cut keeps fewer than d directions
    X = rng.normal(size=(1, 80, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1, 0.05])
    Y = X @ rng.normal(size=(6, 6)) + 0.5 * rng.normal(size=(1, 80, 6))
    got = run(X, Y, ["svcca"], {"svcca": {"keep": keep}})
    assert got["svcca"].item() == pytest.approx(np_svcca(X[0], Y[0], keep), abs=1e-9)


def test_svcca_wide_layer_uses_left_gram_path():
    X, Y = noisy_pair(L=1, n=10, d=30, noise=0.5, seed=12)  # n < d
    got = run(X, Y, ["svcca"], {"svcca": {"keep": 0.9}})
    assert got["svcca"].item() == pytest.approx(np_svcca(X[0], Y[0], 0.9), abs=1e-9)


# --------------------------------------------------------------------------------------
# Invariances and sanity
# --------------------------------------------------------------------------------------


def test_same_permutation_of_sentences_changes_nothing():
    X, Y = noisy_pair(L=2, n=25, d=6, noise=1.0, seed=13)
    Y[:, 5] = Y[:, 9]  # include a tie so that the tie rule is exercised
    perm = np.random.default_rng(0).permutation(25)
    a = run(X, Y)
    b = run(X[:, perm], Y[:, perm])
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-9, rtol=0, msg=key)


def test_positive_row_scaling_leaves_cosine_metrics_unchanged():
    X, Y = noisy_pair(L=2, n=25, d=6, noise=1.0, seed=14)
    scale = np.random.default_rng(1).uniform(0.1, 10.0, size=(1, 25, 1))
    a = run(X, Y, ["mexa", "retrieval", "xsim", "bitext_f1"])
    b = run(X * scale, Y, ["mexa", "retrieval", "xsim", "bitext_f1"])
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_cka_svcca_invariant_to_orthogonal_maps_and_isotropic_scaling():
    X, Y = noisy_pair(L=2, n=40, d=6, noise=1.0, seed=15)
    Q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(6, 6)))
    a = run(X, Y, ["cka", "svcca"])
    b = run(3.7 * X @ Q, Y * 0.01, ["cka", "svcca"])
    torch.testing.assert_close(a["cka"], b["cka"], atol=1e-10, rtol=0)
    torch.testing.assert_close(a["svcca"], b["svcca"], atol=1e-8, rtol=0)


def test_mexa_chance_level_is_small():
    rng = np.random.default_rng(16)
    X = rng.normal(size=(3, 200, 32))
    Y = rng.normal(size=(3, 200, 32))
    got = run(X, Y, ["mexa", "retrieval"])
    assert (got["mexa"] < 0.03).all()
    assert (got["retrieval_p2l@1"] < 0.05).all()


def test_half_precision_inputs_are_upcast_and_directions_agree():
    X, Y = noisy_pair(L=2, n=50, d=16, noise=0.8, seed=17)
    Xh = torch.as_tensor(X).to(torch.float16)
    Yh = torch.as_tensor(Y).to(torch.bfloat16)
    pair = PairEmbeddings(Xh, Yh)
    assert pair.dtype == torch.float32 and pair.sim.dtype == torch.float32
    got = compute_metrics(pair, ALL)
    ref = run(Xh.double(), Yh.double())  # same values, float64
    for key in ("mexa", "retrieval_p2l@1", "retrieval_l2p@1", "bitext_acc"):
        torch.testing.assert_close(got[key], ref[key], atol=0.05, rtol=0, msg=key)
    # both directions read one matrix: the other->pivot numbers are those of S transposed
    S = pair.sim
    above = (~(S.diagonal(dim1=1, dim2=2)[:, None, :] > S)).sum(dim=1) - 1  # per column
    torch.testing.assert_close(got["retrieval_l2p@1"], (above < 1).double().mean(dim=1))


def test_layer_chunking_gives_identical_results():
    X, Y = noisy_pair(L=5, n=20, d=6, noise=1.0, seed=18)
    pair = PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y))
    whole = compute_metrics(pair, ALL)
    chunked = compute_metrics(pair, ALL, layer_chunk=2)
    for key in whole:
        torch.testing.assert_close(whole[key], chunked[key], atol=1e-12, rtol=0, msg=key)


def test_two_dimensional_input_is_one_layer_and_dtype_choice():
    X, Y = noisy_pair(L=1, n=10, d=4)
    got = compute_metrics(PairEmbeddings(torch.as_tensor(X[0]), torch.as_tensor(Y[0])), ["mexa"])
    assert got["mexa"].shape == (1,)
    assert PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y)).dtype == torch.float64
    assert PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y), dtype=torch.float32).dtype == torch.float32


def test_metric_call_uses_defaults_and_directional_mexa():
    X, Y = noisy_pair(L=2, n=30, d=4, noise=1.5, seed=19)
    pair = PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y))
    out = METRICS["mexa"](pair, directional=True)
    r = METRICS["retrieval"](pair, ks=[1])
    torch.testing.assert_close(out["mexa_p2l"], r["retrieval_p2l@1"])
    torch.testing.assert_close(out["mexa_l2p"], r["retrieval_l2p@1"])
    assert set(METRICS["mexa"](pair)) == {"mexa"}


def test_xsim_default_is_lasers_knn_candidates():
    # methods.md: only the k cosine-nearest neighbours compete (LASER source/xsim.py); "all" is a named variant
    rng = np.random.default_rng(14)  # data where the two variants disagree
    X = rng.normal(size=(1, 40, 8))
    Y = X + rng.normal(scale=1.2, size=X.shape)
    S = np_cos(X[0], Y[0])
    default = run(X, Y, ["xsim"])["xsim_err_p2l"].item()
    everyone = run(X, Y, ["xsim"], {"xsim": {"candidates": "all"}})["xsim_err_p2l"].item()
    assert np_xsim_err(S, candidates="knn") != np_xsim_err(S, candidates="all")
    assert default == pytest.approx(np_xsim_err(S, candidates="knn"))
    assert everyone == pytest.approx(np_xsim_err(S, candidates="all"))
    assert METRICS["xsim"].defaults["candidates"] == "knn"


def test_registry_metadata():
    for name in ALL:
        m = METRICS[name]
        assert m.name == name and m.description and callable(m.fn)
    assert higher_is_better("mexa") and higher_is_better("retrieval_l2p@10")
    assert not higher_is_better("xsim_err_p2l") and not higher_is_better("xsim_err_l2p")
    assert resolve_options("xsim", {"k": 8}) == {"margin": "ratio", "k": 8, "candidates": "knn", "ties": "strict"}
    with pytest.raises(ValueError):
        register_metric("mexa")(lambda pair: {})


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_unknown_metric_lists_available():
    X, Y = noisy_pair(L=1, n=5, d=3)
    with pytest.raises(XlingError, match=r"unknown metric 'mexaa'.*available: .*anc.*mexa"):
        run(X, Y, ["mexaa"])
    with pytest.raises(XlingError, match="unknown metric 'nope'"):
        run(X, Y, ["mexa"], {"nope": {}})


def test_unknown_or_bad_option():
    X, Y = noisy_pair(L=1, n=5, d=3)
    with pytest.raises(XlingError, match=r"metric 'xsim': unknown option 'kk'"):
        run(X, Y, ["xsim"], {"xsim": {"kk": 3}})
    with pytest.raises(XlingError, match=r"metric 'anc': unknown option 'abs'"):
        run(X, Y, ["mexa"], {"anc": {"abs": False}})  # validated even when not selected
    with pytest.raises(XlingError, match=r"'margin' must be one of"):
        run(X, Y, ["xsim"], {"xsim": {"margin": "cosine"}})
    with pytest.raises(XlingError, match=r"'ks' must be a positive integer"):
        run(X, Y, ["retrieval"], {"retrieval": {"ks": (1, 0)}})
    with pytest.raises(XlingError, match=r"'keep' must be in"):
        run(X, Y, ["svcca"], {"svcca": {"keep": 1.5}})
    with pytest.raises(XlingError, match="layer_chunk"):
        compute_metrics(PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y)), ["mexa"], layer_chunk=0)


def test_shape_and_value_errors():
    X, Y = noisy_pair(L=2, n=5, d=3)
    with pytest.raises(XlingError, match="differ in shape"):
        PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y[:, :4]))
    with pytest.raises(XlingError, match="differ in shape"):
        PairEmbeddings(torch.as_tensor(X), torch.as_tensor(Y[:1]))
    with pytest.raises(XlingError, match=r"shape \(layers, sentences, dim\)"):
        PairEmbeddings(torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2))
    with pytest.raises(XlingError, match="at least 2"):
        PairEmbeddings(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))
    bad = torch.as_tensor(X).clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(XlingError, match="pivot embeddings contain NaN"):
        PairEmbeddings(bad, torch.as_tensor(Y))


@pytest.mark.parametrize("n,d", [(300, 384), (257, 96), (131, 17)])
def test_identical_embeddings_give_identical_similarities_anywhere(n, d):
    """Duplicates at positions where a BLAS kernel splits the product differently (tile and
    panel edges, the last row and column, odd vector lanes) must give bit-identical cosines:
    a tie is a tie by construction, not by luck of the kernel."""
    import xling.methods.metrics as mm

    g = torch.Generator().manual_seed(n)
    X = torch.randn(n, d, generator=g)
    Y = torch.randn(n, d, generator=g)
    spots = sorted({0, 1, 3, 7, 15, 31, 63, mm.SIM_TILE - 1, mm.SIM_TILE, n // 2, n - 2, n - 1} - {n})
    for i in spots[1:]:
        X[i] = X[0]
        Y[i] = Y[0]
    pair = PairEmbeddings(X, Y)
    S = pair.sim[0]
    for i in spots[1:]:
        assert torch.equal(S[i], S[0]), f"row {i}"
        assert torch.equal(S[:, i], S[:, 0]), f"column {i}"
    # the blocked path reads the same bits
    pair_b = PairEmbeddings(X, Y)
    pair_b.block_rows = mm.SIM_TILE
    Sb = torch.cat([blk for _, _, blk in mm._blocks(pair_b, 0)])
    assert torch.equal(Sb, S)


def test_row_hash_fast_path_finds_exactly_the_duplicates():
    import xling.methods.metrics as mm

    g = torch.Generator().manual_seed(5)
    A = torch.randn(50, 7, generator=g)
    assert mm._distinct_rows(A)[1] is None
    A[30] = A[4]
    A[49] = A[4]
    A[11] = A[12]
    A[11, 3] = 0.0
    A[12, 3] = -0.0  # equal as numbers: one row
    uniq, inv = mm._distinct_rows(A)
    assert uniq.shape[0] == 47 and inv[11] == inv[12] and inv[30] == inv[4] == inv[49] and torch.equal(uniq[inv], A)
    assert torch.equal(mm._distinct_rows(A.double())[0].float(), uniq)


def test_row_hash_collisions_fall_back_to_whole_rows(monkeypatch):
    import xling.methods.metrics as mm

    g = torch.Generator().manual_seed(6)
    A = torch.randn(20, 5, generator=g)
    A[7] = A[2]
    monkeypatch.setattr(mm, "_row_hashes", lambda X: torch.zeros(X.shape[0], dtype=torch.int64))  # every row collides
    uniq, inv = mm._distinct_rows(A)
    assert uniq.shape[0] == 19 and inv[7] == inv[2] and torch.equal(uniq[inv], A)
    monkeypatch.setattr(mm, "_row_hashes", lambda X: torch.arange(X.shape[0]) % 10)  # false groups of two
    uniq, inv = mm._distinct_rows(A)
    assert uniq.shape[0] == 19 and torch.equal(uniq[inv], A)
