"""``xling vocab transplant`` and ``xling vocab replace`` on tiny random decoders.

The models (tests/test_vocab_decoders.py builds them): SmolLM2-style Llama (tied head, byte-level BPE), Llama with an
untied head and a Unigram tokenizer with byte fallback, Gemma 3 (tied, SentencePiece BPE with byte fallback), plus an
untied byte-level Llama (the same tokenizer as the SmolLM2 one) and a byte-level donor trained on Portuguese only.

Checked against computations written here independently of xling: orthogonal matching pursuit as an explicit
least-squares loop (numpy), FOCUS as sparsemax (found by bisection) of cosine similarities to the shared tokens,
``mean`` as the average of the old pieces of a token's text (GPT-2's byte alphabet written out here); a token in both
vocabularies keeps its exact vector; tied heads stay tied, untied heads get their own rows; the written folder
reloads and runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import test_vocab_decoders as TD
from xling.cli import main

K = 8


# ----------------------------------------------------------------------------- independent references
def gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table (Radford et al. 2019), written out."""
    shown = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"),
                                                                                                   ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in shown:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def omp_reference(target: np.ndarray, atoms: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """OMP as the textbook loop: pick the atom most correlated (normalised) with the residual, refit by lstsq."""
    chosen: list[int] = []
    residual = target.copy()
    coef = np.zeros(0)
    norms = np.linalg.norm(atoms, axis=1)
    for _ in range(min(k, len(atoms))):
        score = np.abs(atoms @ residual) / norms
        score[chosen] = -1.0
        chosen.append(int(np.argmax(score)))
        basis = atoms[chosen]
        coef = np.linalg.lstsq(basis.T, target, rcond=None)[0]
        residual = target - basis.T @ coef
    return chosen, coef


def sparsemax_reference(z: np.ndarray) -> np.ndarray:
    """The Euclidean projection onto the simplex, its threshold found by bisection on sum(max(z - tau, 0)) = 1."""
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.maximum(z - mid, 0).sum() > 1:
            lo = mid
        else:
            hi = mid
    return np.maximum(z - (lo + hi) / 2, 0)


# ----------------------------------------------------------------------------- models
def _bytelevel_model(folder: Path, tok, tied: bool, hidden: int = 32, seed: int = 1) -> Path:
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=320,
                        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                        tie_word_embeddings=tied, architectures=["LlamaForCausalLM"])
    model = T.LlamaForCausalLM(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                              unk_token="<|endoftext|>", pad_token="<|im_end|>").save_pretrained(folder)
    return folder


def _pt_bytelevel_tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TD.sentences(TD.PT, 400, 11),
                            trainers.BpeTrainer(vocab_size=380, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                                "<|im_end|>"],
                                                show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-transplant")
    out = {k: TD.build(k, root / k) for k in ("smollm2", "llama-unigram", "gemma3")}
    smol_tok = TD.tok_bytelevel(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    out["bytelevel-untied"] = _bytelevel_model(root / "bytelevel-untied", smol_tok, tied=False, seed=2)
    out["donor-pt"] = _bytelevel_model(root / "donor-pt", _pt_bytelevel_tokenizer(), tied=False, hidden=24, seed=3)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-transplant-data")
    pt, en = root / "pt.txt", root / "en.txt"
    pt.write_text("\n".join(TD.sentences(TD.PT, 120, 21)) + "\n", encoding="utf-8")
    en.write_text("\n".join(TD.sentences(TD.EN, 120, 22)) + "\n", encoding="utf-8")
    return f"pt={pt},en={en}"


def load(folder):
    return TD.load(Path(folder))


def inp(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach().double()


def head(model) -> torch.Tensor:
    return model.get_output_embeddings().weight.detach().double()


def vocab_of(folder) -> dict[str, int]:
    tj = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))
    from xling.methods.vocab.tokenizer import model_vocab

    return model_vocab(tj)


def added_of(folder) -> set[int]:
    tj = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))
    return {int(a["id"]) for a in tj.get("added_tokens") or []}


def run_transplant(model, donor, out, **kw):
    from xling.recipes.vocab.transplant import transplant

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return transplant(model=str(model), tokenizer_from=str(donor), out=out, store=None, progress=False,
                          bootstrap=50, **kw)
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- unit: OMP and FOCUS primitives
def test_omp_equals_an_explicit_least_squares_loop():
    from xling.methods.vocab.transplant import omp

    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(40, 12)) * rng.uniform(0.5, 3, size=(40, 1))
    targets = rng.normal(size=(25, 12))
    for k in (1, 3, 8, 12):
        sel, coef = omp(torch.tensor(targets), torch.tensor(atoms), k, chunk=7)
        for b in range(len(targets)):
            ref_sel, ref_coef = omp_reference(targets[b], atoms, k)
            assert sel[b].tolist() == ref_sel
            np.testing.assert_allclose(coef[b].numpy(), ref_coef, atol=1e-9)
    # a target that is a sparse combination of atoms is recovered exactly
    t = 2.0 * atoms[3] - 0.5 * atoms[17] + atoms[30]
    sel, coef = omp(torch.tensor(t[None]), torch.tensor(atoms), 8)
    got = dict(zip(sel[0].tolist(), coef[0].tolist()))
    assert got[3] == pytest.approx(2.0) and got[17] == pytest.approx(-0.5) and got[30] == pytest.approx(1.0)
    assert sum(abs(v) for j, v in got.items() if j not in (3, 17, 30)) < 1e-9
    # more anchors than atoms: every atom once
    sel, _ = omp(torch.tensor(targets[:2]), torch.tensor(atoms[:5]), 8)
    assert sorted(sel[0].tolist()) == list(range(5))


def test_focus_weights_are_sparsemax_of_cosines():
    from xling.methods.vocab.init import focus_weights

    rng = np.random.default_rng(1)
    cands, targets = rng.normal(size=(30, 6)), rng.normal(size=(9, 6))
    got = focus_weights(targets, cands, chunk=4)
    unit = cands / np.linalg.norm(cands, axis=1, keepdims=True)
    for t, (idx, w) in zip(targets, got):
        ref = sparsemax_reference(unit @ (t / np.linalg.norm(t)))
        assert sorted(idx.tolist()) == np.flatnonzero(ref > 1e-12).tolist()
        np.testing.assert_allclose(w, ref[idx], atol=1e-9)
        assert w.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- surfaces and matching
def test_surfaces_decompose_back_to_the_same_bytes(dirs):
    """Every new token of every family decomposes, under every old tokenizer, into old pieces whose surfaces
    concatenate to its own surface (byte fallback and byte-level BPE cover every byte)."""
    from xling.methods.vocab.transplant import Decomposer, token_surfaces

    tjs = {k: json.loads((dirs[k] / "tokenizer.json").read_text(encoding="utf-8"))
           for k in ("smollm2", "llama-unigram", "gemma3")}
    views = {k: token_surfaces(tj) for k, tj in tjs.items()}
    # spot checks of the surface rules
    g, s, u = views["gemma3"], views["smollm2"], views["llama-unigram"]
    assert g.surfaces[g.tokens.index("<0xC3>")] == b"\xc3"
    assert s.surfaces[s.tokens.index("Ã")] == b"\xc3"
    for view, word in ((g, "\u2581casa"), (u, "\u2581casa"), (s, "\u0120casa")):
        if word in view.tokens:
            assert view.surfaces[view.tokens.index(word)] == b" casa"
    assert g.surfaces[g.special["<bos>"]] is None
    for old in tjs:
        dec = Decomposer(tjs[old])
        for new in tjs:
            for i, surface in enumerate(views[new].surfaces):
                if surface is None:
                    continue
                pieces = dec(surface)
                assert b"".join(views[old].surfaces[p] for p in pieces) == surface, (old, new, views[new].tokens[i])


def test_matching_across_families(dirs):
    from xling.methods.vocab.transplant import match_vocabularies, token_surfaces

    new = token_surfaces(json.loads((dirs["gemma3"] / "tokenizer.json").read_text(encoding="utf-8")))
    old = token_surfaces(json.loads((dirs["smollm2"] / "tokenizer.json").read_text(encoding="utf-8")))
    ov = match_vocabularies(new, old, {"bos": 2, "eos": 1, "unk": 3, "pad": 0}, {"bos": 1, "eos": 2, "unk": 0})
    assert ov.shared[new.tokens.index("<0xC3>")] == old.tokens.index("Ã")
    assert ov.shared[2] == 1 and ov.how[2] == "role"  # <bos> -> <|im_start|>
    assert 0 not in ov.shared  # Gemma's <pad>: the old tokenizer has no pad role
    for n, o in ov.shared.items():
        if ov.how[n] in ("token", "surface"):
            assert new.surfaces[n] == old.surfaces[o]
    ghost = {i for i, t in enumerate(new.tokens) if t and t.startswith("\u2581")}
    assert any(ov.how.get(i) == "surface" for i in ghost)  # "▁the" <-> "Ġthe"


# ----------------------------------------------------------------------------- transplant: direct computations
def _expected_same_family(old_dir, donor_dir, method: str, role: str, donor_model, old_model):
    """Rows of the new vocabulary computed here: shared tokens (the same byte-level string) copy the old row,
    the others combine old rows with weights found in the donor's own matrix (``role``)."""
    old_vocab, new_vocab = vocab_of(old_dir), vocab_of(donor_dir)
    new_added = added_of(donor_dir)
    aux = (inp if role == "input" else head)(donor_model).numpy()
    old_rows = (inp if role == "input" else head)(old_model).numpy()
    anchors = sorted(i for t, i in new_vocab.items() if t in old_vocab and i not in new_added)
    anchor_old = [old_vocab[t] for t, i in sorted(new_vocab.items(), key=lambda kv: kv[1])
                  if t in old_vocab and i not in new_added]
    A = aux[anchors]
    out = {}
    for tok, i in new_vocab.items():
        if tok in old_vocab:
            out[i] = old_rows[old_vocab[tok]]
            continue
        if method == "omp":
            chosen, coef = omp_reference(aux[i], A, K)
            out[i] = sum(c * old_rows[anchor_old[j]] for j, c in zip(chosen, coef))
        else:
            unit = A / np.linalg.norm(A, axis=1, keepdims=True)
            w = sparsemax_reference(unit @ (aux[i] / np.linalg.norm(aux[i])))
            out[i] = (w[:, None] * old_rows[anchor_old]).sum(axis=0)
    return out


@pytest.mark.parametrize("old_kind,method", [("smollm2", "omp"), ("bytelevel-untied", "omp"),
                                             ("bytelevel-untied", "focus")])
def test_transplant_equals_direct_computation(dirs, tmp_path, old_kind, method):
    old_dir, donor_dir = dirs[old_kind], dirs["donor-pt"]
    rep = run_transplant(old_dir, donor_dir, tmp_path / "out", init=method, aux="donor")
    old_model, _ = load(old_dir)
    donor_model, _ = load(donor_dir)
    new_model, new_tok = load(tmp_path / "out")
    tied = old_kind == "smollm2"
    assert rep["init"]["tied"] is tied and rep["init"]["aux"] == "donor"
    roles = ["input"] if tied else ["input", "output"]
    for role in roles:
        want = _expected_same_family(old_dir, donor_dir, method, role, donor_model, old_model)
        got = (inp if role == "input" else head)(new_model).numpy()
        old_rows = (inp if role == "input" else head)(old_model)
        old_vocab = vocab_of(old_dir)
        for i, row in want.items():
            tok = new_tok.convert_ids_to_tokens(i)
            if tok in old_vocab:  # a shared token keeps its exact vector
                assert torch.equal(torch.tensor(got[i]), old_rows[old_vocab[tok]]), tok
            else:
                np.testing.assert_allclose(got[i], row, atol=2e-5, err_msg=f"{role} {tok!r}")
    if tied:
        assert new_model.get_output_embeddings().weight is new_model.get_input_embeddings().weight
        assert new_model.config.tie_word_embeddings
    else:
        assert not torch.equal(inp(new_model), head(new_model))
    # the special tokens are the donor's, with the old rows of the same content
    specials = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for content, old_id in specials.items():
        assert torch.equal(inp(new_model)[new_tok.convert_tokens_to_ids(content)], inp(old_model)[old_id])
    assert new_model.config.vocab_size == len(vocab_of(donor_dir))
    assert rep["reload"]["max_abs_diff_logits"] == 0.0 and rep["reload"]["tokenizer_ids_equal"]


@pytest.mark.parametrize("old_kind,donor", [("smollm2", "gemma3"), ("llama-unigram", "gemma3"),
                                             ("gemma3", "llama-unigram")])
def test_transplant_across_families_keeps_shared_vectors_and_runs(dirs, data, tmp_path, old_kind, donor):
    """Gemma's SentencePiece BPE vocabulary into the SmolLM2-style model (tied, byte-level BPE) and into the untied
    Unigram Llama, and the Unigram vocabulary into Gemma (tied, scaled embeddings): every shared token (same string,
    same bytes, same special content or role) keeps its old row, in the input embedding and in an untied head; the
    folder reloads, generates, and the report measures both languages before and after adaptation."""
    from xling.methods.vocab.transplant import match_vocabularies, token_surfaces

    out = tmp_path / old_kind
    rep = run_transplant(dirs[old_kind], dirs[donor], out, init="omp", data=data, langs="pt,en", heldout=15,
                         adapt_steps=3, adapt_batch_size=4)
    old_model, old_tok = load(dirs[old_kind])
    new_model, new_tok = load(out)
    new = token_surfaces(json.loads((out / "tokenizer.json").read_text(encoding="utf-8")))
    old = token_surfaces(json.loads((dirs[old_kind] / "tokenizer.json").read_text(encoding="utf-8")))
    roles_new = {r: getattr(new_tok, f"{r}_token_id") for r in ("bos", "eos", "unk", "pad")}
    roles_old = {r: getattr(old_tok, f"{r}_token_id") for r in ("bos", "eos", "unk", "pad")}
    ov = match_vocabularies(new, old, {r: i for r, i in roles_new.items() if i is not None},
                            {r: i for r, i in roles_old.items() if i is not None})
    assert rep["init"]["shared"] == len(ov.shared) > 100
    # after adaptation the rows moved: compare with a run without it
    rep0 = run_transplant(dirs[old_kind], dirs[donor], tmp_path / f"{old_kind}-0", init="omp")
    m0, _ = load(tmp_path / f"{old_kind}-0")
    for n, o in ov.shared.items():
        assert torch.equal(inp(m0)[n], inp(old_model)[o])
        if old_kind == "llama-unigram":
            assert torch.equal(head(m0)[n], head(old_model)[o])
    assert rep0["init"]["aux"] == "donor" and "bits_per_char" not in rep0
    assert m0.config.bos_token_id == new_tok.bos_token_id and m0.config.eos_token_id == new_tok.eos_token_id
    # measured: both languages, four arms, intervals, the note on bits per character
    bpc = rep["bits_per_char"]
    assert "bits per character" in bpc["note"] and "not comparable" in bpc["note"]
    assert set(bpc["langs"]) == {"por_Latn", "eng_Latn"}
    for res in bpc["langs"].values():
        assert set(res["arms"]) == {"original", "original + adapted", "transplanted", "transplanted + adapted"}
        d = res["arms"]["transplanted"]
        assert d["bits_per_char_ci"][0] <= d["bits_per_char"] <= d["bits_per_char_ci"][1]
        lo, hi = d["delta_bits_per_char_ci"]
        assert lo <= d["delta_bits_per_char"] <= hi
    assert set(rep["fertility"]["por_Latn"]) == {"original", "transplanted"}
    assert rep["adaptation"]["runs"]["transplanted + adapted"]["steps"] == 3
    # the folder runs: greedy generation with the reloaded model and tokenizer
    ids = new_tok("o gato", return_tensors="pt")["input_ids"]
    gen = new_model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > ids.shape[1] and int(gen.max()) < new_model.config.vocab_size
    assert (out / "report.html").is_file() and (out / "GEMMA_TERMS.html").is_file()
    assert "bits per character" in (out / "report.html").read_text(encoding="utf-8")


def test_transplant_decomposition_space_reproduces_the_mean_of_pieces(dirs, tmp_path):
    """In the old model's own space, with k at least the hidden size, OMP's residual is zero, so each new row is
    exactly its target there: the mean of its old pieces' rows (what --init mean gives)."""
    from xling.methods.vocab.transplant import token_surfaces

    rep = run_transplant(dirs["smollm2"], dirs["gemma3"], tmp_path / "omp", init="omp", aux="decomposition", k=32)
    mean = run_transplant(dirs["smollm2"], dirs["gemma3"], tmp_path / "mean", init="mean")
    assert rep["init"]["aux"] == "decomposition" and rep["init"]["k"] == 32
    role = "input (tied head)"
    assert mean["init"]["by_role"][role]["mean_of_pieces"] == rep["init"]["by_role"][role]["omp"] > 100
    a, _ = load(tmp_path / "omp")
    b, _ = load(tmp_path / "mean")
    new = token_surfaces(json.loads((tmp_path / "omp" / "tokenizer.json").read_text(encoding="utf-8")))
    np.testing.assert_allclose(inp(a).numpy(), inp(b).numpy(), atol=1e-5)
    assert sum(s is not None for s in new.surfaces) > 600


# ----------------------------------------------------------------------------- replace
def _train_texts(data: str, heldout: int) -> list[str]:
    out = []
    for item in data.split(","):
        texts = [t.strip() for t in Path(item.split("=", 1)[1]).read_text(encoding="utf-8").splitlines() if t.strip()]
        k = min(heldout, len(texts) // 2)
        held = set(texts[-k:])
        out += [t for t in texts[:-k] if t not in held]
    return out


def test_replace_focus_equals_direct_computation(dirs, data, tmp_path, one_thread):
    """A byte-level BPE trained on the text replaces the SmolLM2-style vocabulary: shared tokens (the same
    string) keep their rows, the others are sparsemax-weighted sums of shared tokens' rows, the weights from the
    cosine similarities of PPMI+SVD vectors of the training text under the new tokenizer."""
    from xling.methods.vocab import init as I
    from xling.methods.vocab.corpus import encode
    from xling.methods.vocab.tokenizer import build_tokenizer
    from xling.recipes.vocab.transplant import replace

    out = tmp_path / "replaced"
    rep = replace(model=str(dirs["smollm2"]), data=data, langs="pt,en", heldout=15, vocab_size=520,
                  tokenizer_type="bpe", init="focus", adapt_steps=0, out=out, store=None, progress=False,
                  bootstrap=50)
    old_model, _ = load(dirs["smollm2"])
    new_model, new_tok = load(out)
    tj = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    # the trainer stops early when the text has no more pairs to merge: the size is reported as trained
    assert len(vocab_of(out)) == rep["tokenizer"]["vocab_size"] <= rep["tokenizer"]["requested_vocab_size"] == 520
    assert rep["tokenizer"]["family"] == "byte-level-bpe"
    # the special tokens come first, with their old contents, and keep their rows
    assert [a["content"] for a in tj["added_tokens"]][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = build_tokenizer(tj)
    aux = I.ppmi_svd(encode(backend, _train_texts(data, 15)), 100, seed=0)
    idx = aux.index()
    old_vocab, new_vocab = vocab_of(dirs["smollm2"]), vocab_of(out)
    specials = {0, 1, 2}
    anchors = [i for t, i in sorted(new_vocab.items(), key=lambda kv: kv[1]) if t in old_vocab and i not in specials]
    cand = [a for a in anchors if a in idx]
    unit = np.array([aux.vectors[idx[a]] for a in cand])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    old_rows = inp(old_model).numpy()
    got = inp(new_model).numpy()
    byte = gpt2_byte_chars()
    inverse = {c: b for b, c in byte.items()}
    focus_checked = mean_checked = 0
    for tok, i in new_vocab.items():
        if tok in old_vocab:
            assert np.array_equal(got[i], old_rows[old_vocab[tok]])
        elif i in idx:
            v = aux.vectors[idx[i]]
            w = sparsemax_reference(unit @ (v / np.linalg.norm(v)))
            want = sum(w[j] * old_rows[old_vocab[new_tok.convert_ids_to_tokens(cand[j])]] for j in np.flatnonzero(w))
            np.testing.assert_allclose(got[i], want, atol=2e-5)
            focus_checked += 1
        else:  # no vector in the text space: the mean of its old pieces (the old tokenizer is byte-level too)
            text = "".join(byte[b] for b in bytes(inverse[c] for c in tok))
            from tokenizers import Tokenizer

            pieces = [t.id for t in Tokenizer.from_file(str(dirs["smollm2"] / "tokenizer.json")).model.tokenize(text)]
            np.testing.assert_allclose(got[i], old_rows[pieces].mean(axis=0), atol=2e-5)
            mean_checked += 1
    assert focus_checked > 10
    assert rep["init"]["by_role"] == {"input (tied head)": {"focus": focus_checked,
                                                            "fallback_mean_of_pieces": mean_checked,
                                                            "fallback_mean_of_all_rows": 0}}
    arms = rep["bits_per_char"]["langs"]["por_Latn"]["arms"]
    assert set(arms) == {"original", "extended", "replaced"}  # no adaptation asked
    assert rep["extension"]["words_added"] > 0


@pytest.mark.parametrize("tokenizer_type,init", [("unigram", "mean"), ("bpe", "random")])
def test_replace_untied_unigram_model_adapts_and_reloads(dirs, data, tmp_path, one_thread, tokenizer_type, init):
    from xling.recipes.vocab.transplant import replace

    out = tmp_path / "replaced"
    rep = replace(model=str(dirs["llama-unigram"]), data=data, langs="pt,en", heldout=15, vocab_size=380,
                  tokenizer_type=tokenizer_type, init=init, adapt_steps=3, adapt_batch_size=4, out=out, store=None,
                  progress=False, bootstrap=50, extend_tokens=20)
    model, tok = load(out)
    assert model.config.vocab_size == 380 == inp(model).shape[0] == head(model).shape[0]
    assert rep["init"]["tied"] is False and rep["init"]["by_role"]["output"]
    assert tok("o gato vê")["input_ids"][0] == tok.convert_tokens_to_ids("<s>") == model.config.bos_token_id
    arms = rep["bits_per_char"]["all"]["arms"]
    assert set(arms) == {"original", "original + adapted", "extended", "extended + adapted", "replaced",
                         "replaced + adapted"}
    assert all(math.isfinite(d["bits_per_char"]) for d in arms.values())
    assert rep["adaptation"]["runs"]["replaced + adapted"]["trained_parameters"] == 2 * 380 * 32
    assert rep["reload"]["max_abs_diff_logits"] == 0.0
    assert set(rep["fertility"]["eng_Latn"]) == {"original", "extended", "replaced"}
    assert rep["fertility"]["por_Latn"]["replaced"]["parity_vs_english"] is None  # two monolingual files
    if init == "random":
        assert rep["init"]["by_role"]["input"] == {"random": rep["init"]["initialised"]}


# ----------------------------------------------------------------------------- adaptation
def test_adaptation_trains_only_the_vocabulary_and_is_seeded(dirs, one_thread):
    from xling.methods.vocab.adapt import adapt_causal_lm

    seqs = [[1] + list(range(5, 5 + n)) for n in range(3, 12)]
    runs = []
    for _ in range(2):
        model, _ = load(dirs["llama-unigram"])
        body = {k: v.clone() for k, v in model.state_dict().items() if "embed" not in k and "lm_head" not in k}
        before_e, before_h = inp(model).clone(), head(model).clone()
        rep = adapt_causal_lm(model, seqs, steps=4, lr=1e-2, batch_size=3, seed=5, pad_id=0)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in body.items())
        assert not torch.equal(inp(model), before_e) and not torch.equal(head(model), before_h)
        assert not model.training and all(p.requires_grad for p in model.parameters())
        runs.append(rep["losses"])
    assert runs[0] == runs[1] and len(runs[0]) == 4


# ----------------------------------------------------------------------------- command line
def test_cli_transplant_a_bare_tokenizer_json_and_errors(dirs, tmp_path, capsys, one_thread):
    import shutil

    out = tmp_path / "bare"
    tj = dirs["gemma3"] / "tokenizer.json"
    odd = tmp_path / "sm<i>ol"  # a name the report must escape
    shutil.copytree(dirs["smollm2"], odd)
    assert main(["vocab", "transplant", "--model", str(odd), "--tokenizer-from", str(tj), "--init",
                 "focus", "--out", str(out), "--store", "none", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "decomposition space" in text and "wrote" in text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "sm&lt;i&gt;ol" in html and "<i>ol" not in html
    rep = json.loads((out / "vocab_report.json").read_text(encoding="utf-8"))
    assert rep["init"]["aux"] == "decomposition" and rep["init"]["special_roles_new"]["eos"] == 1
    cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "TokenizersBackend" and cfg["eos_token"] == "<eos>"
    load(out)
    capsys.readouterr()
    bad = [
        (["--model", str(dirs["smollm2"]), "--tokenizer-from", str(tj), "--aux", "donor"], "no model weights"),
        (["--model", str(dirs["smollm2"]), "--tokenizer-from", str(tj), "--adapt-steps", "5"], "--data"),
        (["--model", str(dirs["smollm2"]), "--tokenizer-from", str(tmp_path / "x.txt")], None),
    ]
    (tmp_path / "x.txt").write_text("hello", encoding="utf-8")
    for args, needle in bad:
        rc = main(["vocab", "transplant", *args, "--out", str(tmp_path / "o"), "--store", "none", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("xling: error: ") and err.count("\n") == 1, err
        if needle:
            assert needle in err
    rc = main(["vocab", "replace", "--model", str(dirs["smollm2"]), "--data", str(tj), "--langs", "pt",
               "--vocab-size", "50", "--out", str(tmp_path / "r"), "--store", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--vocab-size" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_work_estimate_follows_the_arithmetic(dirs):
    """The estimate said before a transplant or replacement: scoring is 2 x (body + vocabulary x hidden) flops per
    held-out token, counted with each tokenizer; adaptation scales with the steps; OMP is k FOCUS rounds; mean and
    random cost nothing to initialise."""
    from tokenizers import Tokenizer

    from xling.engine.estimate import forward_params, throughput
    from xling.recipes.vocab.transplant import work_estimate

    model, _ = load(dirs["smollm2"])
    old = Tokenizer.from_file(str(dirs["smollm2"] / "tokenizer.json"))
    new = Tokenizer.from_file(str(dirs["gemma3"] / "tokenizer.json"))
    held = {"en": ["the cat sat on the mat", "a dog ran"], "pt": ["o gato dormiu"]}
    train = {"en": ["the cat sat on the mat"] * 4}
    V, h = model.get_input_embeddings().weight.shape
    base = dict(measures_old=0, measures_new=1, adapt_old=0, adapt_new=0, steps=0, batch=4, max_length=64,
                init="focus", n_todo=100, n_anchors=50, aux_dim=10, k=8, load=0.0)
    est = work_estimate(model, held, train, old, new, 5000, **base)
    body = forward_params(model.config, model)  # tied: the head is the input matrix, not counted here
    prefix = model.config.bos_token_id
    toks = 0
    for texts in held.values():
        for t in texts:
            ids = new.encode(t).ids
            toks += len(ids) + int(ids[:1] == new.encode(t, add_special_tokens=False).ids[:1])
    rate = throughput("cpu", None, 0.0)
    assert prefix is not None and est["scoring"] == pytest.approx(2.0 * (body + 5000 * h) * toks / rate)
    assert est["initialisation"] == pytest.approx(2.0 * 100 * 50 * 10 / rate)
    omp = work_estimate(model, held, train, old, new, 5000, **{**base, "init": "omp"})
    assert omp["initialisation"] == pytest.approx(8 * est["initialisation"])
    assert work_estimate(model, held, train, old, new, 5000, **{**base, "init": "mean"})["initialisation"] == 0
    a1 = work_estimate(model, held, train, old, new, 5000, **{**base, "adapt_new": 1, "steps": 10})["adaptation"]
    a2 = work_estimate(model, held, train, old, new, 5000, **{**base, "adapt_new": 1, "steps": 20})["adaptation"]
    assert a1 > 0 and a2 == pytest.approx(2 * a1)
    assert est["total"] == pytest.approx(est["scoring"] + est["adaptation"] + est["initialisation"])


def test_transplant_says_its_estimate_first(dirs, data, tmp_path, capsys, one_thread):
    assert main(["vocab", "transplant", "--model", str(dirs["smollm2"]), "--tokenizer-from", str(dirs["gemma3"]),
                 "--init", "focus", "--data", data, "--langs", "pt,en", "--heldout", "10", "--adapt-steps", "2",
                 "--adapt-batch-size", "2", "--bootstrap", "20", "--out", str(tmp_path / "o"), "--store",
                 "none"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("xling: estimate:")]
    assert len(lines) == 1 and lines[0].startswith("xling: estimate: vocab transplant: 2 languages x 20 held-out")
    assert err.index("xling: estimate:") < err.index("measured the original")


def test_measured_rate_times_the_scorer_or_says_none(dirs):
    from tokenizers import Tokenizer

    from xling.recipes.vocab.transplant import measured_rate

    model, _ = load(dirs["smollm2"])
    tok = Tokenizer.from_file(str(dirs["smollm2"] / "tokenizer.json"))
    rate = measured_rate(model, tok, {"en": ["the cat sat on the mat", "a dog ran far", "o gato"] * 2})
    assert rate is not None and rate > 0
    assert measured_rate(model, tok, {}) is None and measured_rate(model, tok, {"en": ["a dog ran far"]}) is None
