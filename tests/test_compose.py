"""Pure composition functions against plain dense references written here."""

from __future__ import annotations

import math

import pytest
import torch

import tiny_models
from xling.errors import XlingError
from xling.methods.compose import (
    COMPOSERS,
    TensorContext,
    block_index,
    coefficients,
    compose,
    layer_swap_alpha,
    layer_swap_state_dict,
    lora_factorwise,
    refactorize,
    refactorize_factored,
    tensor_seed,
)
from xling.models.layers import find_blocks


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- plain references ---------------------------------------------------------------------


def ref_ties(deltas, weights, density=1.0, normalize=True, lam=1.0, consensus="sum"):
    """TIES written entry by entry with Python lists."""
    shape = deltas[0].shape
    flats = [d.flatten().tolist() for d in deltas]
    n = len(flats[0])
    trimmed = []
    for f in flats:
        if density >= 1:
            trimmed.append(f)
            continue
        k = max(1, int(density * n))
        keep = set(sorted(range(n), key=lambda i: -abs(f[i]))[:k])
        trimmed.append([f[i] if i in keep else 0.0 for i in range(n)])
    out = []
    for j in range(n):
        vals = [w * t[j] for w, t in zip(weights, trimmed)]
        if consensus == "sum":
            s = 1 if sum(vals) >= 0 else -1
        else:
            s = 1 if sum((v > 0) - (v < 0) for v in vals) >= 0 else -1
        agree = [(v, w) for v, w in zip(vals, weights) if (v > 0 and s > 0) or (v < 0 and s < 0)]
        total = sum(v for v, _ in agree)
        if normalize:
            div = sum(w for _, w in agree)
            total = total / (div if div != 0 else 1.0)
        out.append(lam * total)
    return torch.tensor(out, dtype=torch.float64).reshape(shape)


def keep_mask(shape, p, seed, name, i):
    g = torch.Generator().manual_seed(tensor_seed(seed, name, i))
    return (torch.rand(shape, generator=g) >= p).double()


# -- arithmetic --------------------------------------------------------------------------------


def test_add_is_weighted_sum_with_subtraction():
    d = [rand(5, 7, seed=i) for i in range(3)]
    w = [1.0, -0.5, 2.0]
    want = d[0] - 0.5 * d[1] + 2 * d[2]
    assert torch.allclose(compose("add", d, w), want, atol=1e-12)
    assert torch.allclose(compose("add", d, w, normalize=True, **{"lambda": 0.5}), 0.5 * want / 2.5, atol=1e-12)
    assert coefficients("add", w) == w


def test_add_normalize_with_zero_sum_weights_is_refused():
    d = [rand(3, 3, seed=i) for i in range(2)]
    with pytest.raises(XlingError, match="sum to zero"):
        compose("add", d, [1.0, -1.0], normalize=True)
    assert torch.allclose(compose("add", d, [1.0, -1.0]), d[0] - d[1])  # plain subtraction is fine


def test_genknowsub_subtracts_mean_of_general_modules():
    task, g1, g2 = (rand(4, 6, seed=i) for i in range(3))
    assert torch.allclose(compose("genknowsub", [task, g1, g2]), task - (g1 + g2) / 2, atol=1e-12)
    with pytest.raises(XlingError, match="at least 2"):
        compose("genknowsub", [task])


def test_stack_adds_modules():
    a, b = rand(3, 4, seed=1), rand(3, 4, seed=2)
    assert torch.allclose(compose("stack", [a, b]), a + b)


# -- TIES --------------------------------------------------------------------------------------


@pytest.mark.parametrize("density,normalize,lam,consensus", [
    (1.0, True, 1.0, "sum"), (0.5, True, 1.0, "sum"), (0.3, False, 0.7, "sum"), (0.5, True, 1.0, "count"),
])
def test_ties_matches_plain_reference(density, normalize, lam, consensus):
    d = [rand(6, 9, seed=i) for i in range(3)]
    w = [1.0, 0.5, 2.0]
    got = compose("ties", d, w, density=density, normalize=normalize, consensus=consensus, **{"lambda": lam})
    want = ref_ties(d, w, density, normalize, lam, consensus)
    assert torch.allclose(got, want, atol=1e-10)


def test_ties_defaults_are_mergekits():
    assert COMPOSERS["ties"].defaults == {"density": 1.0, "lambda": 1.0, "normalize": True, "consensus": "sum"}
    # density 1 + normalize: entries where all agree become the (weighted) mean
    a = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    b = torch.tensor([3.0, 2.0, -1.0], dtype=torch.float64)
    got = compose("ties", [a, b])
    assert torch.allclose(got, torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))


def test_ties_bad_options():
    d = [rand(3, 3, seed=i) for i in range(2)]
    with pytest.raises(XlingError, match="density"):
        compose("ties", d, density=0.0)
    with pytest.raises(XlingError, match="no option 'dropout'"):
        compose("ties", d, dropout=0.1)
    with pytest.raises(XlingError, match="sum to zero"):
        compose("ties", d, [1.0, -1.0])
    with pytest.raises(XlingError, match="consensus"):
        compose("ties", d, consensus="vote")


# -- DARE --------------------------------------------------------------------------------------


def test_dare_matches_reference_and_is_seeded():
    d = [rand(20, 30, seed=i) for i in range(2)]
    w = [1.0, 0.5]
    ctx = TensorContext(name="layers.0.q_proj")
    got = compose("dare", d, w, ctx, p=0.7, seed=3)
    want = sum(wi * di * keep_mask(di.shape, 0.7, 3, ctx.name, i) / 0.3 for i, (wi, di) in enumerate(zip(w, d)))
    assert torch.allclose(got, want, atol=1e-10)
    assert torch.equal(got, compose("dare", d, w, ctx, p=0.7, seed=3))
    assert not torch.equal(got, compose("dare", d, w, ctx, p=0.7, seed=4))
    other = compose("dare", d, w, TensorContext(name="layers.1.q_proj"), p=0.7, seed=3)
    assert not torch.equal(got, other)  # each tensor draws its own mask


def test_dare_drop_rate_and_unbiasedness():
    d = torch.ones(400, 500, dtype=torch.float64)
    out = compose("dare", [d], p=0.9, seed=0)
    kept = (out != 0).double().mean().item()
    assert abs(kept - 0.1) < 0.005
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 10.0))
    assert abs(out.mean().item() - 1.0) < 0.05
    assert torch.equal(compose("dare", [d], p=0.0), d)
    with pytest.raises(XlingError, match=r"\[0, 1\)"):
        compose("dare", [d], p=1.0)


def test_dare_ties_matches_reference():
    d = [rand(8, 8, seed=i) for i in range(3)]
    w = [1.0, 1.0, 0.5]
    ctx = TensorContext(name="w")
    got = compose("dare_ties", d, w, ctx, p=0.5, seed=1, normalize=True)
    dropped = [di * keep_mask(di.shape, 0.5, 1, "w", i) / 0.5 for i, di in enumerate(d)]
    assert torch.allclose(got, ref_ties(dropped, w, 1.0, True, 1.0), atol=1e-10)


# -- layer swapping ----------------------------------------------------------------------------


def test_layer_swap_alpha_schedule():
    L = 8
    assert [layer_swap_alpha(i, L, 2, 1) for i in range(L)] == [1, 1, 0, 0, 0, 0, 0, 1]
    got = [layer_swap_alpha(i, L, 2, 1, transition=2) for i in range(L)]
    want = [1, 1, 2 / 3, 1 / 3, 0, 1 / 3, 2 / 3, 1]
    assert all(math.isclose(a, b) for a, b in zip(got, want))
    assert layer_swap_alpha(None, L, 2, 1) == 0.0
    assert layer_swap_alpha(None, L, 2, 1, non_block="language") == 1.0
    with pytest.raises(XlingError, match="exceeds"):
        layer_swap_alpha(0, 4, 3, 2)
    with pytest.raises(XlingError, match="no weights"):
        compose("layer_swap", [rand(2, 2), rand(2, 2)], [1.0, 1.0], TensorContext(layer=0, num_layers=4))


@pytest.mark.parametrize("kind,path", [("bert", "encoder.layer"), ("llama", "layers"), ("gpt2", "h")])
def test_layer_swap_state_dict_picks_the_right_layers(kind, path):
    task_model, _ = tiny_models.build(kind, seed=1, layers=6)
    lang_model, _ = tiny_models.build(kind, seed=2, layers=6)
    blocks = find_blocks(task_model)
    assert blocks.path == path
    task, lang = task_model.state_dict(), lang_model.state_dict()
    out = layer_swap_state_dict(task, lang, block_path=blocks.path, num_layers=6, bottom=1, top=1, transition=1)
    shares = {0: 1.0, 1: 0.5, 2: 0.0, 3: 0.0, 4: 0.5, 5: 1.0}
    seen = set()
    for name, t in out.items():
        i = block_index(name, path)
        if i is None:
            assert torch.equal(t, task[name]), name  # embeddings, final norm: task expert
            continue
        seen.add(i)
        a = shares[i]
        if task[name].is_floating_point():
            assert torch.allclose(t, (1 - a) * task[name] + a * lang[name], atol=1e-6), name
    assert seen == set(range(6))


def test_block_index():
    assert block_index("bert.encoder.layer.3.attention.self.query.weight", "encoder.layer") == 3
    assert block_index("model.layers.11.mlp.up_proj.weight", "layers") == 11
    assert block_index("h.2.attn.c_attn.weight", "h") == 2
    assert block_index("wte.weight", "h") is None
    assert block_index("encoder.layer_norm.weight", "encoder.layer") is None


# -- re-factorisation -------------------------------------------------------------------------


def test_refactorize_error_is_the_tail_singular_values():
    dW = rand(12, 9, seed=5)
    S = torch.linalg.svdvals(dW)
    for r in (1, 3, 9):
        A, B, err = refactorize(dW, r)
        assert A.shape == (r, 9) and B.shape == (12, r)
        tail = math.sqrt(float((S[r:] ** 2).sum() / (S ** 2).sum()))
        actual = float(torch.linalg.norm(dW - B @ A) / torch.linalg.norm(dW))
        assert math.isclose(err, tail, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(err, actual, rel_tol=1e-6, abs_tol=1e-10)
    with pytest.raises(XlingError, match="exceeds"):
        refactorize(dW, 10)
    with pytest.raises(XlingError, match="positive"):
        refactorize(dW, 0)
    A, B, err = refactorize(torch.zeros(4, 4), 2)
    assert err == 0.0


def test_refactorize_factored_equals_dense_svd():
    factors = [(rand(30, 4, seed=i), rand(4, 20, seed=10 + i)) for i in range(3)]
    coefs = [1.0, -0.5, 2.0]
    dW = sum(c * B @ A for c, (B, A) in zip(coefs, factors))
    for r in (3, 8, 12):
        A1, B1, e1 = refactorize(dW, r)
        A2, B2, e2 = refactorize_factored(factors, coefs, r)
        assert math.isclose(e1, e2, rel_tol=1e-6, abs_tol=1e-12)
        assert torch.allclose(B1 @ A1, B2 @ A2, atol=1e-8)
    assert refactorize_factored(factors, coefs, 12).rel_error < 1e-7  # rank 12 = sum of ranks: exact


# -- the factor-wise approximation ------------------------------------------------------------


def test_lora_factorwise_is_peft_linear_and_not_dw_arithmetic():
    As = [rand(4, 10, seed=i).float() for i in range(2)]
    Bs = [rand(6, 4, seed=5 + i).float() for i in range(2)]
    w, s = [1.0, -0.5], [2.0, 2.0]
    A, B = lora_factorwise(As, Bs, w, s)
    k = [wi * si for wi, si in zip(w, s)]
    want_A = sum(math.copysign(math.sqrt(abs(ki)), ki) * Ai for ki, Ai in zip(k, As))
    want_B = sum(math.sqrt(abs(ki)) * Bi for ki, Bi in zip(k, Bs))
    assert torch.allclose(A, want_A, atol=1e-6) and torch.allclose(B, want_B, atol=1e-6)
    exact = sum(ki * Bi @ Ai for ki, Ai, Bi in zip(k, As, Bs))
    assert (B @ A - exact).abs().max() > 1e-2  # the cross terms
    with pytest.raises(XlingError, match="one rank"):
        lora_factorwise([As[0], torch.zeros(2, 10)], [Bs[0], torch.zeros(6, 2)], w, s)
    with pytest.raises(XlingError, match="approximation"):
        compose("lora_factorwise", As)


# -- input validation ------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors():
    a = rand(3, 3)
    with pytest.raises(XlingError, match="unknown composition method"):
        compose("mean", [a])
    with pytest.raises(XlingError, match="shape"):
        compose("add", [a, rand(3, 4)])
    with pytest.raises(XlingError, match="NaN or inf"):
        compose("add", [a, torch.full((3, 3), float("nan"))])
    with pytest.raises(XlingError, match="2 weights for 1 inputs"):
        compose("add", [a], [1.0, 2.0])
    with pytest.raises(XlingError, match="finite"):
        compose("add", [a], [float("inf")])
    with pytest.raises(XlingError, match="must be a number"):
        compose("ties", [a], density="lots")
    with pytest.raises(XlingError, match="needs the number of layers"):
        compose("layer_swap", [a, a])


def test_refactorize_lowrank_reports_its_true_error():
    low = rand(200, 12, seed=1) @ rand(12, 150, seed=2)
    dW = low + 1e-3 * rand(200, 150, seed=3)
    exact = refactorize(dW, 12)
    fast = refactorize(dW, 12, svd="lowrank")
    actual = float(torch.linalg.norm(dW - fast.B @ fast.A) / torch.linalg.norm(dW))
    assert math.isclose(fast.rel_error, actual, rel_tol=1e-6)
    assert fast.rel_error >= exact.rel_error * (1 - 1e-9)
    assert fast.rel_error < exact.rel_error * 1.05
    again = refactorize(dW, 12, svd="lowrank")
    assert torch.equal(fast.A, again.A)  # seeded
    with pytest.raises(XlingError, match="svd must be"):
        refactorize(dW, 3, svd="fast")


def test_refactorize_factored_handles_rank_deficient_inputs():
    B, A = rand(40, 4, seed=1), rand(4, 30, seed=2)
    res = refactorize_factored([(B, A), (B, A)], [1.0, -1.0], 3)  # cancels exactly
    assert res.rel_error == 0.0 and torch.allclose(res.B @ res.A, torch.zeros(40, 30, dtype=torch.float64))
    res = refactorize_factored([(B, A), (B, A)], [1.0, 2.0], 6)  # rank 4 in an 8-column product
    assert torch.allclose(res.B @ res.A, 3 * B @ A, atol=1e-9) and res.rel_error < 1e-7


def test_all_finite():
    from xling.methods.compose import all_finite

    assert all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows, the values are finite
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))
    assert all_finite(torch.tensor([1, 2]))


def test_ties_trim_keeps_exactly_k_with_ties_lowest_index_first():
    d = torch.tensor([1.0, -1.0, 1.0, 0.5, -1.0, 2.0], dtype=torch.float64)
    got = compose("ties", [d], density=0.5)
    assert torch.equal(got, torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0, 2.0], dtype=torch.float64))
    assert torch.equal(compose("ties", [torch.zeros(5)], density=0.5), torch.zeros(5))
    one = compose("ties", [torch.tensor([3.0])], density=0.1)
    assert torch.equal(one, torch.tensor([3.0]))
