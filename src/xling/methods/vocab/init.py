"""Embedding initialisation for new tokens: mean, random, FOCUS, WECHSEL.

Every method except ``random`` expresses a new token as a sparse convex
combination of *old* tokens, ``e_new = sum_j w_j e_old[j]``; the same weights
are applied to every vocabulary-indexed tensor (input embeddings, untied
output embeddings, output biases), as FOCUS and WECHSEL do for untied heads.

* ``mean``: the old tokenizer splits the new token into pieces; equal weights
  on those pieces (a common baseline, e.g. Gee et al. 2022, "Fast Vocabulary
  Transfer").
* ``random``: each dimension drawn from a normal with that dimension's mean and
  standard deviation over the existing rows; biases get the mean bias.
* ``focus`` (Dobler and de Melo 2023, "FOCUS: Effective Embedding
  Initialization for Monolingual Specialization of Multilingual Models",
  EMNLP 2023): auxiliary vectors are trained on target-language text tokenised
  with the *new* tokenizer; a new token's weights are ``sparsemax`` of its
  cosine similarities to the overlapping (old) tokens in that space, so only a
  few close old tokens get non-zero weight. FOCUS trains fastText; here the
  auxiliary space is PPMI + truncated SVD of the token co-occurrence matrix
  (Levy, Goldberg and Dagan 2015), which needs no extra dependency and is
  deterministic; see :func:`ppmi_svd`.
* ``wechsel`` (Minixhofer, Paischer and Rekabsaz 2022, "WECHSEL: Effective
  initialization of subword embeddings for cross-lingual transfer of
  monolingual language models", NAACL 2022): source-language and
  target-language auxiliary spaces are trained separately (source text with
  the old tokenizer, target text with the new one), word vectors are the mean
  of their tokens' vectors, and the source space is rotated onto the target
  space by orthogonal Procrustes on the pairs of a bilingual dictionary
  (:func:`procrustes`). A new token's weights are ``softmax(cos / tau)`` over
  its ``k`` most similar source tokens, ``k = 10`` and ``tau = 0.1`` as in
  the paper. (WECHSEL uses fastText word vectors aligned with MUSE-style
  dictionaries; the auxiliary vectors here are PPMI + SVD as for FOCUS.)

A new token without an auxiliary vector (it never occurs in the auxiliary
text) falls back to ``mean``; the number of fallbacks is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from xling.errors import XlingError

WECHSEL_K = 10
WECHSEL_TAU = 0.1

#: A plan: new id -> (old ids, weights).
Plan = dict[int, tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- primitives
def sparsemax(z: np.ndarray) -> np.ndarray:
    """Sparsemax (Martins and Astudillo 2016) along the last axis: the Euclidean projection onto the simplex.

    With ``z`` sorted decreasingly, ``k* = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}``,
    ``tau = (sum_{j<=k*} z_(j) - 1) / k*`` and ``p = max(z - tau, 0)``.
    """
    z = np.asarray(z, dtype=np.float64)
    zs = -np.sort(-z, axis=-1)
    cs = np.cumsum(zs, axis=-1)
    k = np.arange(1, z.shape[-1] + 1)
    support = 1 + k * zs > cs
    k_star = support.sum(axis=-1, keepdims=True)
    tau = (np.take_along_axis(cs, k_star - 1, axis=-1) - 1) / k_star
    return np.maximum(z - tau, 0.0)


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The orthogonal ``W`` minimising ``||x W - y||_F``: ``W = U V^T`` with ``U S V^T = svd(x^T y)`` (Schoenemann 1966)."""
    u, _, vt = np.linalg.svd(np.asarray(x, dtype=np.float64).T @ np.asarray(y, dtype=np.float64))
    return u @ vt


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


@dataclass
class AuxVectors:
    """Auxiliary vectors of some token ids (rows of ``vectors`` follow ``ids``)."""

    ids: np.ndarray
    vectors: np.ndarray

    def index(self) -> dict[int, int]:
        cached = getattr(self, "_index", None)
        if cached is None or len(cached) != len(self.ids):
            cached = {int(i): r for r, i in enumerate(self.ids.tolist())}
            self._index = cached
        return cached

    def lookup(self, ids: Sequence[int]) -> np.ndarray | None:
        """Mean vector of ``ids`` (None if any has no vector)."""
        idx = self.index()
        rows = [idx.get(int(i)) for i in ids]
        if not rows or any(r is None for r in rows):
            return None
        return self.vectors[rows].mean(axis=0)


def ppmi_matrix(sequences: Sequence[Sequence[int]], window: int = 5, alpha: float = 0.75,
                weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse PPMI of windowed token co-occurrence: ``(ids, rows, cols, values)``.

    Pairs within ``window`` positions inside each sequence are counted in both
    directions (each sequence optionally weighted); then ``PPMI(i, c) = max(0,
    log P(i, c) - log P(i) - log P_alpha(c))`` with the context distribution
    smoothed, ``P_alpha(c) = n(c)^alpha / sum n^alpha`` (Levy, Goldberg and
    Dagan 2015). ``rows``/``cols`` index into ``ids``.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if lengths.sum() == 0:
        raise XlingError("no text for the auxiliary vectors")
    flat = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
    sent = np.repeat(np.arange(len(sequences)), lengths)
    w_tok = np.ones(len(flat)) if weights is None else np.repeat(np.asarray(weights, dtype=np.float64), lengths)
    ids, local = np.unique(flat, return_inverse=True)
    T = len(ids)
    rows, cols, vals = [], [], []
    for o in range(1, window + 1):
        same = sent[:-o] == sent[o:]
        a, b, w = local[:-o][same], local[o:][same], w_tok[o:][same]
        rows += [a, b]
        cols += [b, a]
        vals += [w, w]
    if sum(len(r) for r in rows) == 0:
        raise XlingError("the auxiliary text has no token pairs (every sentence is one token)")
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    uniq, inv = np.unique(r * T + c, return_inverse=True)
    counts = np.bincount(inv, weights=v)
    r, c = uniq // T, uniq % T
    total = counts.sum()
    row_sum = np.bincount(r, weights=counts, minlength=T)
    col_pow = np.bincount(c, weights=counts, minlength=T) ** alpha
    pmi = np.log(counts / total) - np.log(row_sum[r] / total) - np.log(col_pow[c] / col_pow.sum())
    keep = pmi > 0
    return ids.astype(np.int64), r[keep], c[keep], pmi[keep]


def ppmi_svd(sequences: Sequence[Sequence[int]], dim: int = 100, window: int = 5, alpha: float = 0.75,
             seed: int = 0, weights: Sequence[float] | None = None) -> AuxVectors:
    """Token vectors: the top ``dim`` singular vectors of :func:`ppmi_matrix`, scaled by sqrt(singular value).

    Exact SVD for up to 3,000 distinct tokens, else randomised
    ``torch.svd_lowrank`` on the sparse matrix with a fixed seed. Each
    component's sign is fixed (largest entry positive) so results do not
    depend on the SVD routine.
    """
    ids, r, c, pmi = ppmi_matrix(sequences, window, alpha, weights)
    T = len(ids)
    k = max(1, min(dim, T - 1))
    if T <= 3000:
        m = np.zeros((T, T))
        m[r, c] = pmi
        u, s, _ = np.linalg.svd(m)
        u, s = u[:, :k], s[:k]
    else:
        mat = torch.sparse_coo_tensor(np.stack([r, c]), torch.tensor(pmi, dtype=torch.float32), (T, T),
                                      check_invariants=True).coalesce()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            u_t, s_t, _ = torch.svd_lowrank(mat, q=min(T, k + 10), niter=4)
        u, s = u_t[:, :k].double().numpy(), s_t[:k].double().numpy()
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    u = u * np.where(signs == 0, 1, signs)
    return AuxVectors(ids, (u * np.sqrt(s)).astype(np.float64))


# ----------------------------------------------------------------------------- plans
def mean_plan(old_backend, pieces: dict[str, int]) -> Plan:
    """Each new piece: equal weights on the old pieces the old tokenizer splits it into."""
    plan: Plan = {}
    for piece, nid in pieces.items():
        parts = [t.id for t in old_backend.model.tokenize(piece)]
        if not parts:
            raise XlingError(f"the old tokenizer gives no pieces for {piece!r}")
        ids, inv = np.unique(np.asarray(parts, dtype=np.int64), return_inverse=True)
        plan[nid] = (ids, np.bincount(inv).astype(np.float64) / len(parts))
    return plan


def focus_plan(aux: AuxVectors, new_ids: Sequence[int], candidates: Sequence[int]) -> tuple[Plan, list[int]]:
    """FOCUS weights: ``sparsemax(cos(aux[new], aux[old]))`` over old ``candidates`` with aux vectors.

    Returns the plan and the new ids without an auxiliary vector (for the fallback).
    """
    idx = aux.index()
    cand = np.array([c for c in candidates if int(c) in idx], dtype=np.int64)
    if len(cand) == 0:
        raise XlingError("FOCUS: no old token occurs in the auxiliary text")
    cvec = aux.vectors[[idx[int(c)] for c in cand]]
    missing = [int(n) for n in new_ids if int(n) not in idx]
    found = [int(n) for n in new_ids if int(n) in idx]
    weights = focus_weights(aux.vectors[[idx[n] for n in found]] if found else np.zeros((0, cvec.shape[1])), cvec)
    plan: Plan = {nid: (cand[j], w) for nid, (j, w) in zip(found, weights)}
    return plan, missing


def focus_weights(targets: np.ndarray, candidates: np.ndarray,
                  chunk: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row of ``targets``: the candidate rows with non-zero weight and their weights,
    ``sparsemax(cos(target, candidates))`` (FOCUS, Dobler and de Melo 2023), computed ``chunk`` rows at a time.

    Returns ``(candidate indices, weights)`` per target; the weights are non-negative and sum to 1.
    """
    cvec = _unit(np.asarray(candidates, dtype=np.float64))
    targets = np.asarray(targets, dtype=np.float64)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for a in range(0, len(targets), chunk):
        w = sparsemax(_unit(targets[a : a + chunk]) @ cvec.T)
        for row in w:
            nz = np.flatnonzero(row > 0)
            out.append((nz, row[nz]))
    return out


def align_spaces(src: AuxVectors, tgt: AuxVectors,
                 pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[np.ndarray, dict]:
    """Procrustes ``W`` mapping (normalised, centred) source vectors onto target vectors.

    ``pairs``: (source token ids, target token ids) of dictionary word pairs;
    each word's vector is the mean of its tokens' vectors. Vectors are unit
    normalised, centred, and normalised again before solving (Artetxe et al. 2018).
    """
    xs, ys = [], []
    for s_ids, t_ids in pairs:
        x, y = src.lookup(s_ids), tgt.lookup(t_ids)
        if x is not None and y is not None and x.shape == y.shape:
            xs.append(x)
            ys.append(y)
    if src.vectors.shape[1] != tgt.vectors.shape[1]:
        raise XlingError(
            f"WECHSEL: source and target auxiliary spaces differ in size ({src.vectors.shape[1]} vs "
            f"{tgt.vectors.shape[1]}); use more text or a smaller --aux-dim"
        )
    if len(xs) < 2:
        raise XlingError(f"WECHSEL: only {len(xs)} dictionary pairs occur in both texts; need at least 2")
    x, y = np.array(xs), np.array(ys)
    x = _unit(_unit(x) - _unit(x).mean(axis=0))
    y = _unit(_unit(y) - _unit(y).mean(axis=0))
    w = procrustes(x, y)
    return w, {"pairs_used": len(xs), "fit_cosine": float(np.mean(np.sum((x @ w) * y, axis=1)))}


def wechsel_plan(src: AuxVectors, tgt: AuxVectors, w: np.ndarray, new_ids: Sequence[int],
                 candidates: Sequence[int], k: int = WECHSEL_K, tau: float = WECHSEL_TAU) -> tuple[Plan, list[int]]:
    """WECHSEL weights: ``softmax(cos/tau)`` over the ``k`` most similar source tokens in the aligned space."""
    sidx, tidx = src.index(), tgt.index()
    cand = np.array([c for c in candidates if int(c) in sidx], dtype=np.int64)
    if len(cand) == 0:
        raise XlingError("WECHSEL: no old token occurs in the source text")
    mapped = _unit(_unit(src.vectors[[sidx[int(c)] for c in cand]]) @ w)
    plan: Plan = {}
    missing = []
    kk = min(k, len(cand))
    for nid in new_ids:
        r = tidx.get(int(nid))
        if r is None:
            missing.append(int(nid))
            continue
        sims = mapped @ _unit(tgt.vectors[r])
        top = np.argsort(-sims, kind="stable")[:kk]
        plan[int(nid)] = (cand[top], softmax(sims[top] / tau))
    return plan, missing


# ----------------------------------------------------------------------------- applying
def combine_rows(old: torch.Tensor, dim: int, plan: Plan, new_ids: Sequence[int]) -> torch.Tensor:
    """Rows ``sum_j w_j old[j]`` (along ``dim``) for each of ``new_ids``, in that order."""
    V = old.shape[dim]
    x = old.movedim(dim, 0)
    rest = x.shape[1:]
    x = x.reshape(V, -1).float()
    r_idx, c_idx, vals = [], [], []
    for r, nid in enumerate(new_ids):
        ids, w = plan[int(nid)]
        r_idx += [r] * len(ids)
        c_idx += list(map(int, ids))
        vals += list(map(float, w))
    mat = torch.sparse_coo_tensor(torch.tensor([r_idx, c_idx], dtype=torch.long), torch.tensor(vals, dtype=torch.float32),
                                  (len(new_ids), V), check_invariants=True)
    y = torch.sparse.mm(mat, x) if len(new_ids) else x[:0]
    return y.reshape(len(new_ids), *rest).movedim(0, dim).to(old.dtype)


def random_rows(old: torch.Tensor, dim: int, n: int, generator: torch.Generator, is_bias: bool = False) -> torch.Tensor:
    """``n`` rows with each dimension ~ N(mean, std) of the existing rows; bias entries get the mean bias."""
    x = old.movedim(dim, 0).float()
    if is_bias:
        y = x.mean(dim=0).expand(n, *x.shape[1:]).clone()
    else:
        mean, std = x.mean(dim=0), x.std(dim=0)
        y = mean + std * torch.randn((n, *x.shape[1:]), generator=generator)
    return y.movedim(0, dim).to(old.dtype)
