"""align --save-embeddings: the xling-embeddings/1 folder round-trips and is never half-written."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import tiny_models
from xling.data.corpus import ParallelCorpus
from xling.errors import XlingError
from xling.models.loading import from_objects
from xling.recipes.align.run import align
from xling.harness.saved_embeddings import FORMAT, read_saved_embeddings

CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn"}


def _setup():
    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "tiny-bert")
    corpus = ParallelCorpus("tiny", {CODES[k]: tiny_models.PARALLEL[k] for k in CODES},
                            {"ids": [f"s{i}" for i in range(len(tiny_models.PARALLEL["eng"]))]})
    return lm, corpus


def test_round_trip(tmp_path, one_thread):
    from xling.engine.embed import EmbedConfig, embed_sentences

    lm, corpus = _setup()
    out = tmp_path / "emb"
    res = align(lm=lm, corpus=corpus, out=None, store=None, progress=False, layers="0,2,3", save_embeddings=out)
    index, embs = read_saved_embeddings(out)
    assert index["format"] == FORMAT and index["model"] == "tiny-bert" and index["corpus"] == "tiny"
    assert index["layers"] == [0, 2, 3] and index["pooling"] == res.pooling and index["pivot"] == "eng_Latn"
    n = len(corpus)
    assert index["n_sentences"] == n and index["sentence_ids"] == [f"s{i}" for i in range(n)]
    assert set(embs) == set(CODES.values())
    cfg = EmbedConfig(pooling=res.pooling, layers=(0, 2, 3)).resolved(lm)
    for lang, emb in embs.items():
        assert emb.shape == (3, n, index["dim"]) and emb.dtype == torch.float32
        torch.testing.assert_close(emb, embed_sentences(lm, corpus.sentences[lang], cfg), rtol=0, atol=1e-6)
        want = [hashlib.sha256(s.encode("utf-8")).hexdigest() for s in corpus.sentences[lang]]
        assert index["languages"][lang]["sentence_sha256"] == want
    # a changed file is one line naming it
    f = out / "deu_Latn.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(XlingError, match="deu_Latn.safetensors: missing or changed") as e:
        read_saved_embeddings(out)
    assert "\n" not in str(e.value)
    _, only = read_saved_embeddings(out, langs=["fra_Latn"])
    assert list(only) == ["fra_Latn"]


def test_failed_run_leaves_no_folder(tmp_path, monkeypatch):
    import xling.methods.metrics as mm

    lm, corpus = _setup()
    out = tmp_path / "emb"

    def boom(*a, **k):
        raise RuntimeError("metrics failed")

    monkeypatch.setattr(mm, "compute_metrics", boom)
    with pytest.raises(RuntimeError, match="metrics failed"):
        align(lm=lm, corpus=corpus, out=None, store=None, progress=False, save_embeddings=out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".emb")]


def test_not_a_folder_of_embeddings(tmp_path):
    with pytest.raises(XlingError, match="not found"):
        read_saved_embeddings(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(XlingError, match="not an xling-embeddings/1 index"):
        read_saved_embeddings(tmp_path)
