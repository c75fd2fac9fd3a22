"""Giving a model another vocabulary: matching tokens across tokenizers and initialising the new embeddings.

Used by ``xling vocab transplant`` (a model gets another model's tokenizer) and ``xling vocab replace`` (a model gets
a tokenizer trained here on target-language text). Every row of every vocabulary-indexed tensor of the new model
(input embedding, untied LM head, output bias) comes from the old model's rows:

* **shared tokens** keep their exact old row. A new token is shared when it stands for the same text as an old
  token: the same string in the same tokenizer family, or the same *surface* across families
  (:func:`token_surfaces`: byte-level BPE's ``Ġthe`` and SentencePiece's ``▁the`` are both the bytes ``" the"``,
  a byte-fallback piece ``<0xC3>`` is the byte 0xC3, as is byte-level ``Ã``). Special tokens match by their content
  (``<|endoftext|>``), else by role (the new BOS gets the old BOS row, likewise EOS, UNK and PAD).
* every other token is a combination of old rows (a :data:`~xling.methods.vocab.init.Plan`): its weights are
  found in an *auxiliary space* where both it and the shared tokens (the *anchors*) have vectors, and applied to
  the anchors' old rows:

  - ``omp``: orthogonal matching pursuit (Pati, Rezaiifar and Krishnaprasad 1993): greedily pick the ``k``
    anchors (default :data:`OMP_K`) most correlated with the residual, refit the least-squares coefficients on
    all picked anchors, repeat; the coefficients (any sign) then combine the anchors' old rows. This is the idea
    of mergekit's ``tokensurgeon`` (Goddard et al. 2024, "Arcee's MergeKit"), written here from its description.
  - ``focus``: FOCUS (Dobler and de Melo 2023, "FOCUS: Effective Embedding Initialization for Monolingual
    Specialization of Multilingual Models", EMNLP 2023): weights ``sparsemax(cos(token, anchors))``
    (:func:`xling.methods.vocab.init.focus_weights`), a convex combination of a few similar anchors.
  - ``mean``: equal weights on the old tokens the old tokenizer splits the new token's text into
    (:func:`decomposition_plan`; Gee et al. 2022, "Fast Vocabulary Transfer");
  - ``random``: each dimension drawn from the old rows' mean and standard deviation.

Auxiliary spaces (:class:`AuxSpace`; the recipe picks one): ``donor`` -- the embedding matrix of the model whose
tokenizer is taken (tokensurgeon's choice; its LM head for the LM head); ``text`` -- PPMI + SVD token vectors of
target-language text tokenised with the new tokenizer (FOCUS's choice, with fastText there;
:func:`xling.methods.vocab.init.ppmi_svd`); ``decomposition`` -- the old model's own rows: an anchor is its old row,
a new token the mean of the old rows of its decomposition (:class:`Decomposer`), so OMP re-expresses that mean
with at most ``k`` anchors and FOCUS weights the anchors by their similarity to it. A token without a vector in the
chosen space (it never occurs in the text, or the donor has no row for it) falls back to its decomposition mean, and
one without a decomposition either (an unmatched special token) to the mean of all old rows; both are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from xling.errors import XlingError
from xling.methods.vocab.fertility import byte_level_decoder
from xling.methods.vocab.init import Plan, combine_rows, focus_weights, random_rows
from xling.methods.vocab.tokenizer import BYTE_PIECES, TokenizerInfo, build_tokenizer, inspect_tokenizer, model_vocab

#: Anchors per new token in orthogonal matching pursuit (tokensurgeon's default is 8 as well).
OMP_K = 8
#: The special-token roles matched across tokenizers, in order of precedence.
ROLES = ("bos", "eos", "unk", "pad")
#: Priority of old tokens that share a surface (lower wins): an ordinary vocabulary entry, a byte piece, an added
#: (non-special) token.
_RANK_NORMAL, _RANK_BYTE, _RANK_ADDED = 0, 1, 2


# ----------------------------------------------------------------------------- surfaces
def space_symbol(backend, info: TokenizerInfo) -> str | None:
    """The character that stands for a space inside vocabulary entries: ``Ġ`` (byte-level), ``▁`` (SentencePiece's
    Metaspace, or a normaliser that replaces spaces, as Gemma's does), None (WordPiece, plain BPE)."""
    if info.byte_level:
        return "\u0120"
    if info.word_prefix:
        return info.word_prefix
    if backend is not None and backend.normalizer is not None:
        s = backend.normalizer.normalize_str(" ")
        if len(s) == 1 and not s.isspace():
            return s
    return None


@dataclass
class VocabView:
    """A tokenizer seen as text: each id's string, surface bytes and kind."""

    tj: dict
    info: TokenizerInfo
    tokens: list[str | None]  # id -> vocabulary string or added-token content (None: a hole in the ids)
    surfaces: list[bytes | None]  # id -> the bytes it stands for in running text (None: special tokens)
    special: dict[str, int]  # content -> id of every special added token
    byte_pieces: set[int] = field(default_factory=set)
    added: set[int] = field(default_factory=set)


def token_surfaces(tj: dict, backend=None) -> VocabView:
    """The surface of every id of a tokenizer JSON (see the module docstring).

    * byte-level BPE: each character of the entry is one byte (``byte_level_decoder``);
    * ``<0xNN>`` pieces of a tokenizer with byte fallback: the byte NN;
    * SentencePiece (Metaspace or a space-replacing normaliser): ``▁`` is a space;
    * WordPiece and BPE with a continuing-subword prefix: ``##ing`` is ``ing``, any other entry starts a word and
      gets a leading space; an end-of-word suffix is dropped;
    * non-special added tokens: their content; special ones: None (they are matched by content or role).
    """
    info = inspect_tokenizer(tj)
    backend = backend if backend is not None else build_tokenizer(tj)
    vocab = model_vocab(tj)
    tokens: list[str | None] = [None] * info.size
    surfaces: list[bytes | None] = [None] * info.size
    m = tj["model"]
    dec = byte_level_decoder() if info.byte_level else None
    space = space_symbol(backend, info)
    cont = m.get("continuing_subword_prefix") or "" if info.family in ("wordpiece", "bpe") else ""
    suffix = m.get("end_of_word_suffix") or "" if info.family == "bpe" else ""
    byte_pieces = set()
    for tok, i in vocab.items():
        tokens[i] = tok
        if info.byte_fallback and tok in _BYTE_PIECE_SET:
            surfaces[i] = bytes([int(tok[3:5], 16)])
            byte_pieces.add(i)
            continue
        if dec is not None:
            if all(c in dec for c in tok):
                surfaces[i] = bytes(dec[c] for c in tok)
            else:
                surfaces[i] = tok.encode("utf-8")
            continue
        text = tok
        if space:
            text = text.replace(space, " ")
        if cont:
            text = text[len(cont):] if text.startswith(cont) else " " + text
        if suffix and text.endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)]
        surfaces[i] = text.encode("utf-8")
    special, added = {}, set()
    for a in tj.get("added_tokens") or []:
        i = int(a["id"])
        tokens[i] = a["content"]
        added.add(i)
        if a.get("special"):
            surfaces[i] = None
            special[a["content"]] = i
        else:
            surfaces[i] = a["content"].encode("utf-8")
    if info.unk_id is not None and info.unk_id < info.size:
        surfaces[info.unk_id] = None
        if tokens[info.unk_id] is not None:
            special.setdefault(tokens[info.unk_id], info.unk_id)
    return VocabView(tj, info, tokens, surfaces, special, byte_pieces, added)


_BYTE_PIECE_SET = frozenset(BYTE_PIECES)


class Decomposer:
    """Splits a surface (bytes) into the ids of a tokenizer's vocabulary, as that tokenizer's model would.

    Byte-level BPE: the bytes become their stand-in characters and the BPE model runs on them. Otherwise the text
    (the bytes' valid UTF-8 runs) goes through the tokenizer's normaliser, spaces become the space symbol, and the
    model (BPE, Unigram, WordPiece word by word) segments it; bytes that are not valid UTF-8 (half a character,
    from a byte-level token) become ``<0xNN>`` pieces where the tokenizer has them. The unknown token is left
    out; an empty list means no decomposition.
    """

    def __init__(self, tj: dict, backend=None):
        self.info = inspect_tokenizer(tj)
        self.backend = backend if backend is not None else build_tokenizer(tj)
        self.vocab = model_vocab(tj)
        self.space = space_symbol(self.backend, self.info)
        self.enc = {b: c for c, b in byte_level_decoder().items()} if self.info.byte_level else None
        self.unk = self.info.unk_id

    def _model(self, text: str) -> list[int]:
        if not text:
            return []
        return [t.id for t in self.backend.model.tokenize(text)]

    def __call__(self, data: bytes) -> list[int]:
        if not data:
            return []
        if self.enc is not None:
            ids = self._model("".join(self.enc[b] for b in data))
        else:
            ids = []
            text = data.decode("utf-8", errors="surrogateescape")
            run: list[str] = []
            for ch in text + "\udfff":  # a sentinel that flushes the last run
                if "\udc80" <= ch <= "\udcff" or ch == "\udfff":
                    ids += self._text("".join(run))
                    run = []
                    if ch != "\udfff":
                        piece = f"<0x{ord(ch) - 0xDC00:02X}>"
                        if piece in self.vocab:
                            ids.append(self.vocab[piece])
                else:
                    run.append(ch)
        return [i for i in ids if i != self.unk]

    def _text(self, text: str) -> list[int]:
        if not text:
            return []
        if self.backend.normalizer is not None:
            text = self.backend.normalizer.normalize_str(text)
        if self.info.family in ("wordpiece", "wordlevel") or (self.info.family == "bpe" and not self.space):
            return [i for w in text.split() for i in self._model(w)]
        if self.space:
            text = text.replace(" ", self.space)
        return self._model(text)


# ----------------------------------------------------------------------------- matching
@dataclass
class Overlap:
    """Which new ids stand for an old token: ``shared[new] = old``; ``how[new]``: ``token`` (the same string and
    surface), ``surface`` (the same surface across families), ``special`` (a special token with the same content),
    ``role`` (the special token of the same role)."""

    shared: dict[int, int]
    how: dict[int, str]

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("token", "surface", "special", "role")}
        for v in self.how.values():
            out[v] += 1
        return out


def match_vocabularies(new: VocabView, old: VocabView, new_roles: dict[str, int] | None = None,
                       old_roles: dict[str, int] | None = None) -> Overlap:
    """The new ids that stand for an old token (see :class:`Overlap` and the module docstring).

    Among old tokens with one surface, the token with the new token's own string wins, then an ordinary vocabulary
    entry, then a byte piece, then an added token; ties go to the lowest id.
    """
    best: dict[bytes, tuple[int, int]] = {}
    for i, s in enumerate(old.surfaces):
        if s is None:
            continue
        rank = _RANK_ADDED if i in old.added else (_RANK_BYTE if i in old.byte_pieces else _RANK_NORMAL)
        cur = best.get(s)
        if cur is None or (rank, i) < cur:
            best[s] = (rank, i)
    old_vocab = model_vocab(old.tj)
    new_role_ids = {}
    for role in ROLES:
        nid = (new_roles or {}).get(role)
        if nid is not None and nid not in new_role_ids:
            new_role_ids[nid] = role
    shared: dict[int, int] = {}
    how: dict[int, str] = {}
    for nid, s in enumerate(new.surfaces):
        tok = new.tokens[nid]
        if tok is None:
            continue
        if s is None:  # a special token
            if tok in old.special:
                shared[nid], how[nid] = old.special[tok], "special"
            elif nid in new_role_ids and (old_roles or {}).get(new_role_ids[nid]) is not None:
                shared[nid], how[nid] = int(old_roles[new_role_ids[nid]]), "role"
            continue
        same = old_vocab.get(tok)
        if same is not None and old.surfaces[same] == s:
            shared[nid], how[nid] = same, "token"
        elif s in best:
            shared[nid], how[nid] = best[s][1], "surface"
    return Overlap(shared, how)


# ----------------------------------------------------------------------------- plans
def decomposition_plan(surfaces: dict[int, bytes], decompose: Callable[[bytes], list[int]]) -> tuple[Plan, list[int]]:
    """``mean``: each new id's weights are equal over the old pieces of its surface (a piece counted as often as it
    occurs). Returns the plan and the ids without a decomposition."""
    plan: Plan = {}
    missing = []
    for nid, s in surfaces.items():
        parts = decompose(s) if s else []
        if not parts:
            missing.append(int(nid))
            continue
        ids, inv = np.unique(np.asarray(parts, dtype=np.int64), return_inverse=True)
        plan[int(nid)] = (ids, np.bincount(inv).astype(np.float64) / len(parts))
    return plan, missing


def omp(targets: torch.Tensor, atoms: torch.Tensor, k: int = OMP_K,
        chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal matching pursuit of each row of ``targets`` (B, d) over the rows of ``atoms`` (n, d).

    Each of ``min(k, n)`` steps picks the atom with the largest ``|<residual, atom>| / ||atom||`` (the first on a
    tie; an atom is picked once), then refits the coefficients of all picked atoms by least squares
    (``min_c ||target - sum_j c_j atom_j||``) and recomputes the residual. Returns the picked atom indices (B, k')
    in the order picked and their final coefficients (B, k'), float64. Computed ``chunk`` targets at a time on the
    atoms' device.
    """
    atoms = atoms.to(torch.float64)
    targets = targets.to(device=atoms.device, dtype=torch.float64)
    n = atoms.shape[0]
    steps = min(int(k), n)
    if steps < 1 or targets.shape[0] == 0:
        return (torch.zeros((targets.shape[0], 0), dtype=torch.long, device=atoms.device),
                torch.zeros((targets.shape[0], 0), dtype=torch.float64, device=atoms.device))
    unit = atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-300)
    picks, coefs = [], []
    for a in range(0, targets.shape[0], chunk):
        t = targets[a : a + chunk]
        residual = t.clone()
        sel = torch.zeros((t.shape[0], 0), dtype=torch.long, device=atoms.device)
        c = torch.zeros((t.shape[0], 0), dtype=torch.float64, device=atoms.device)
        for _ in range(steps):
            corr = (residual @ unit.T).abs()
            corr.scatter_(1, sel, -1.0)
            sel = torch.cat([sel, corr.argmax(dim=1, keepdim=True)], dim=1)
            basis = atoms[sel]  # (b, s, d)
            c = _least_squares(basis.transpose(1, 2), t)
            residual = t - torch.einsum("bs,bsd->bd", c, basis)
        picks.append(sel)
        coefs.append(c)
    return torch.cat(picks), torch.cat(coefs)


def _least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``argmin_c ||a c - b||`` per batch (a: (B, d, s), b: (B, d)), by the pseudo-inverse so that rank-deficient
    systems (duplicate atoms) get the minimum-norm solution on every device."""
    return (torch.linalg.pinv(a) @ b.unsqueeze(-1)).squeeze(-1)


def omp_plan(targets: np.ndarray | torch.Tensor, new_ids: Sequence[int], anchors: np.ndarray | torch.Tensor,
             anchor_old_ids: Sequence[int], k: int = OMP_K, device: str | torch.device = "cpu") -> Plan:
    """OMP weights of each new id over the anchors (rows of ``anchors`` stand for old ids ``anchor_old_ids``);
    anchors sharing an old id have their coefficients summed."""
    t = torch.as_tensor(np.asarray(targets), dtype=torch.float64, device=device)
    a = torch.as_tensor(np.asarray(anchors), dtype=torch.float64, device=device)
    sel, coef = omp(t, a, k)
    old = np.asarray(anchor_old_ids, dtype=np.int64)
    return {int(nid): _merge(old[s], c) for nid, s, c in zip(new_ids, sel.cpu().numpy(), coef.cpu().numpy())}


def focus_overlap_plan(targets: np.ndarray, new_ids: Sequence[int], anchors: np.ndarray,
                       anchor_old_ids: Sequence[int]) -> Plan:
    """FOCUS weights (``sparsemax`` of cosine similarities) of each new id over the anchors."""
    old = np.asarray(anchor_old_ids, dtype=np.int64)
    return {int(nid): _merge(old[j], w)
            for nid, (j, w) in zip(new_ids, focus_weights(np.asarray(targets), np.asarray(anchors)))}


def _merge(ids: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, inv = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
    return u, np.bincount(inv, weights=np.asarray(w, dtype=np.float64), minlength=len(u))


# ----------------------------------------------------------------------------- auxiliary spaces
@dataclass
class AuxSpace:
    """Vectors of some new ids (``new``: new id -> row) and of the anchors (``anchor``: new id -> row), in one
    space. ``name`` for the report."""

    name: str
    new: dict[int, np.ndarray]
    anchor: dict[int, np.ndarray]


def donor_space(matrix: torch.Tensor | np.ndarray, ids: Sequence[int], anchors: Sequence[int]) -> AuxSpace:
    """The donor model's rows (its embedding matrix, or LM head), indexed by the new ids (the donor's own ids)."""
    m = matrix.detach().float().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    rows = m.shape[0]
    return AuxSpace("donor", {int(i): m[i] for i in ids if int(i) < rows},
                    {int(i): m[i] for i in anchors if int(i) < rows})


def text_space(aux, ids: Sequence[int], anchors: Sequence[int]) -> AuxSpace:
    """PPMI + SVD vectors (:class:`xling.methods.vocab.init.AuxVectors` keyed by new ids)."""
    idx = aux.index()
    return AuxSpace("text", {int(i): aux.vectors[idx[int(i)]] for i in ids if int(i) in idx},
                    {int(i): aux.vectors[idx[int(i)]] for i in anchors if int(i) in idx})


def decomposition_space(old_rows: torch.Tensor, dim: int, decomposition: Plan, ids: Sequence[int],
                        shared: dict[int, int]) -> AuxSpace:
    """The old model's own rows (``old_rows`` along ``dim``): anchors their old row, new ids the weighted mean of
    their decomposition's rows."""
    x = old_rows.detach().movedim(dim, 0).float().cpu()
    x = x.reshape(x.shape[0], -1).double().numpy()
    new = {}
    for i in ids:
        p = decomposition.get(int(i))
        if p is not None:
            new[int(i)] = (p[1][:, None] * x[p[0]]).sum(axis=0)
    return AuxSpace("decomposition", new, {int(n): x[o] for n, o in shared.items()})


def plan_in_space(space: AuxSpace, method: str, ids: Sequence[int], anchors: Sequence[int], shared: dict[int, int],
                  k: int = OMP_K, device: str | torch.device = "cpu") -> tuple[Plan, list[int]]:
    """``omp`` or ``focus`` weights of ``ids`` over ``anchors`` (new ids; ``shared`` maps them to old ids) in
    ``space``; returns the plan and the ids that have no vector there."""
    anchors = [int(a) for a in anchors if int(a) in space.anchor]
    if not anchors:
        raise XlingError(f"{method}: no shared token has a vector in the {space.name} space, so there is nothing "
                         "to combine (the two vocabularies share no token?)")
    have = [int(i) for i in ids if int(i) in space.new]
    missing = [int(i) for i in ids if int(i) not in space.new]
    if not have:
        return {}, missing
    t = np.stack([space.new[i] for i in have])
    a = np.stack([space.anchor[i] for i in anchors])
    old = [shared[i] for i in anchors]
    if method == "omp":
        return omp_plan(t, have, a, old, k, device), missing
    if method == "focus":
        return focus_overlap_plan(t, have, a, old), missing
    raise XlingError(f"unknown initialisation {method!r}")


# ----------------------------------------------------------------------------- the new tensors
def assemble_rows(old: torch.Tensor, dim: int, new_size: int, shared: dict[int, int], plan: Plan,
                  random_ids: Sequence[int] = (), mean_ids: Sequence[int] = (),
                  generator: torch.Generator | None = None, is_bias: bool = False) -> torch.Tensor:
    """The new tensor (``new_size`` along ``dim``): shared ids copy their old row exactly, planned ids combine old
    rows, ``random_ids`` are drawn (:func:`xling.methods.vocab.init.random_rows`), ``mean_ids`` get the mean of all
    old rows (the fallback for a token with nothing to go on). Every id must be covered once."""
    covered = np.zeros(new_size, dtype=np.int64)
    for group in (list(shared), list(plan), list(random_ids), list(mean_ids)):
        if group:
            np.add.at(covered, np.asarray(group, dtype=np.int64), 1)
    if (covered != 1).any():
        bad = np.flatnonzero(covered != 1)[:5].tolist()
        raise RuntimeError(f"internal: new ids {bad} are initialised {covered[bad].tolist()} times")
    shape = list(old.shape)
    shape[dim] = new_size
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if shared:
        nid = torch.tensor(list(shared), dtype=torch.long, device=old.device)
        oid = torch.tensor([shared[i] for i in shared], dtype=torch.long, device=old.device)
        new.index_copy_(dim, nid, old.index_select(dim, oid))
    if plan:
        ids = sorted(plan)
        rows = combine_rows(old.cpu(), dim, plan, ids).to(old.device)
        new.index_copy_(dim, torch.tensor(ids, dtype=torch.long, device=old.device), rows)
    if len(random_ids):
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        rows = random_rows(old.cpu(), dim, len(random_ids), gen, is_bias=is_bias).to(old.device)
        new.index_copy_(dim, torch.tensor(list(random_ids), dtype=torch.long, device=old.device), rows)
    if len(mean_ids):
        mean = old.float().mean(dim=dim, keepdim=True).to(old.dtype)
        shape_m = list(mean.shape)
        shape_m[dim] = len(mean_ids)
        new.index_copy_(dim, torch.tensor(list(mean_ids), dtype=torch.long, device=old.device), mean.expand(shape_m))
    return new


__all__ = ["AuxSpace", "Decomposer", "OMP_K", "Overlap", "ROLES", "VocabView", "assemble_rows", "decomposition_plan",
           "decomposition_space", "donor_space", "focus_overlap_plan", "match_vocabularies", "omp",
           "omp_plan", "plan_in_space", "space_symbol", "text_space", "token_surfaces"]
