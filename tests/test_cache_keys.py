"""The cache key binds everything that decides the numbers (issue 19, item 3).

The model fingerprint hashes the whole of every weights file and the tokenizer
files (memoised per file version), and every embedding and prediction entry
records the key it was written under: an edit in the middle of the weights, a
changed tokenizer, or two valid entries swapped on disk all lead to a fresh
computation, never to reused numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch

import tiny_models
from xling.data.corpus import ParallelCorpus
from xling.engine.embed import EmbedConfig, EmbeddingCache, embed_cached, embed_sentences
from xling.io import cache_dir
from xling.models.loading import load_model
from xling.recipes.align.run import align

pytestmark = pytest.mark.usefixtures("one_thread")

CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}
SENTS = tiny_models.PARALLEL["eng"]


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory):
    """A tiny BERT whose weights file is well over 2 MiB (the old key read its first and last MiB only)."""
    folder = tiny_models.save("bert", tmp_path_factory.mktemp("wide") / "bert", layers=4, hidden=256)
    assert (folder / "model.safetensors").stat().st_size > 6 << 20
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tensor_span(path: Path, name: str) -> tuple[int, int]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    a, b = header[name]["data_offsets"]
    return 8 + n + a, 8 + n + b


def _edit_middle_tensor(path: Path, name: str = "encoder.layer.2.attention.self.query.weight") -> None:
    """Change one float of a middle layer in place (same size, same header)."""
    start, end = _tensor_span(path, name)
    size = path.stat().st_size
    assert start > 1 << 20 and end < size - (1 << 20)  # outside the first and last MiB
    with open(path, "r+b") as fh:
        fh.seek(start + 4 * 17)
        (v,) = struct.unpack("<f", fh.read(4))
        fh.seek(start + 4 * 17)
        fh.write(struct.pack("<f", v + 5.0))
    assert path.stat().st_size == size


def _embed(folder: Path, cache: EmbeddingCache) -> tuple[torch.Tensor, bool]:
    lm = load_model(str(folder), device="cpu", quiet=True, lazy=True)
    return embed_cached(lm, SENTS, EmbedConfig(layers=(3,)), cache)


def _fresh(folder: Path) -> torch.Tensor:
    lm = load_model(str(folder), device="cpu", quiet=True)
    return embed_sentences(lm, SENTS, EmbedConfig(layers=(3,)))


def test_an_edit_in_the_middle_of_the_weights_is_not_reused(wide_bert, tmp_path):
    folder = _copy(wide_bert, tmp_path / "m")
    cache = EmbeddingCache(tmp_path / "cache")
    before, cached = _embed(folder, cache)
    assert not cached and _embed(folder, cache)[1]  # the second run reads the entry
    _edit_middle_tensor(folder / "model.safetensors")  # what layer_swap / a TIES merge into the folder does
    after, cached = _embed(folder, cache)
    assert not cached
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _fresh(folder), rtol=0, atol=0)


def test_a_changed_tokenizer_is_not_reused(wide_bert, tmp_path):
    folder = _copy(wide_bert, tmp_path / "m")
    cache = EmbeddingCache(tmp_path / "cache")
    before, _ = _embed(folder, cache)
    tj = folder / "tokenizer.json"
    data = json.loads(tj.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]  # same size, other ids
    tj.write_text(json.dumps(data), encoding="utf-8")
    after, cached = _embed(folder, cache)
    assert not cached
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _fresh(folder), rtol=0, atol=0)


def test_the_fingerprint_covers_tokenizer_files_and_every_weights_byte(wide_bert, tmp_path):
    folder = _copy(wide_bert, tmp_path / "m")
    fp = load_model(str(folder), quiet=True, lazy=True).fingerprint
    cfg = folder / "tokenizer_config.json"
    data = json.loads(cfg.read_text(encoding="utf-8"))
    data["model_max_length"] = 17
    cfg.write_text(json.dumps(data), encoding="utf-8")
    fp2 = load_model(str(folder), quiet=True, lazy=True).fingerprint
    assert fp2 != fp
    _edit_middle_tensor(folder / "model.safetensors")
    fp3 = load_model(str(folder), quiet=True, lazy=True).fingerprint
    assert fp3 not in (fp, fp2)
    (folder / "README.md").write_text("notes\n")  # not something that decides the numbers
    assert load_model(str(folder), quiet=True, lazy=True).fingerprint == fp3


def test_trained_folder_fingerprint_sees_the_middle_of_the_weights(wide_bert, tmp_path):
    from xling.modules.trained import _folder_fingerprint

    folder = _copy(wide_bert, tmp_path / "m")
    fp = _folder_fingerprint(folder, "base")
    _edit_middle_tensor(folder / "model.safetensors")
    assert _folder_fingerprint(folder, "base") != fp


def test_file_hashes_are_memoised_per_file_version(tmp_path, monkeypatch):
    from xling.models import fingerprint as F

    calls = []
    real = F.sha256_file
    monkeypatch.setattr(F, "sha256_file", lambda p: calls.append(p) or real(p))
    p = tmp_path / "w.bin"
    p.write_bytes(b"a" * 1000)
    first = F.file_sha256(p)
    assert F.file_sha256(p) == first and len(calls) == 2  # just written: too recent to be remembered
    monkeypatch.setattr(F, "_RACY_S", -1.0)
    F.file_sha256(p)
    F._MEMO.clear()  # a new process: the memo in the cache answers
    assert F.file_sha256(p) == first and len(calls) == 3
    assert list(cache_dir("hashes").glob("*.json"))
    st = p.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    p.write_bytes(b"b" * 1000)  # same size, mtime set back: ctime still moves
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert F.file_sha256(p) != first and len(calls) == 4


# ----------------------------------------------------------------------------- swapped entries


def _corpus():
    return ParallelCorpus("tiny", {CODES[k]: v for k, v in tiny_models.PARALLEL.items()})


def _align(model_dir):
    return align(model=str(model_dir), corpus=_corpus(), out=None, store=None, progress=False)


def _values(res):
    return [(r["lang"], r["layer"], r["metric"], r["value"]) for r in res.rows]


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap.tmp")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def test_swapped_embedding_entries_are_recomputed(tiny_model_dirs, capsys):
    clean = _align(tiny_model_dirs["bert"])
    entries = sorted(cache_dir("embeddings").rglob("*.safetensors"))
    assert len(entries) == 4
    _swap(entries[1], entries[2])  # two valid entries, each with a sound checksum
    capsys.readouterr()
    res = _align(tiny_model_dirs["bert"])
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("xling: note: cache entry")]
    assert len(notes) == 2 and all("another key" in n and "recomputing" in n for n in notes), err
    assert res.timings["languages_from_cache"] == 2
    assert _values(res) == _values(clean)
    again = _align(tiny_model_dirs["bert"])
    assert again.timings["languages_from_cache"] == 4 and _values(again) == _values(clean)


def test_entries_of_an_older_xling_are_stale_with_one_note(tiny_model_dirs, capsys, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import save_file

    import xling.engine.embed as E

    monkeypatch.setattr(E, "_LEGACY_NOTED", False)
    clean = _align(tiny_model_dirs["bert"])
    for p in sorted(cache_dir("embeddings").rglob("*.safetensors")):  # as written before keys were recorded
        with safe_open(str(p), framework="pt") as f:
            meta, t = dict(f.metadata()), f.get_tensor("embeddings")
        del meta[E.KEY_KEY]
        save_file({"embeddings": t}, str(p), metadata=meta)
    capsys.readouterr()
    res = _align(tiny_model_dirs["bert"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xling: note:")]
    assert len(notes) == 1 and "older xling" in notes[0]
    assert res.timings["languages_from_cache"] == 0 and _values(res) == _values(clean)


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    from test_train import tiny_task
    from xling.harness.training import train_task

    torch.set_num_threads(1)
    task = tiny_task()
    out = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path_factory.mktemp("trained") / "model",
                     epochs=2, lr=1e-2, batch_size=8, patience=0, progress=False)
    return out, task


def _evaluate(trained):
    from xling.recipes.eval.run import EvalConfig, evaluate

    out, task = trained
    return evaluate(EvalConfig(model=str(out), out=None, store=None, progress=False), task=task)


def test_swapped_prediction_entries_are_recomputed(trained, capsys):
    clean = _evaluate(trained)
    entries = sorted(cache_dir("predictions").rglob("*.json"))
    assert len(entries) == 3
    preds = [json.loads(p.read_text())["predictions"] for p in entries]
    # two languages with different predictions when the tiny model has them (the notes are the point)
    pair = next(((i, j) for i in range(3) for j in range(i + 1, 3) if preds[i] != preds[j]), (0, 1))
    _swap(entries[pair[0]], entries[pair[1]])  # same count, labels in range, sound checksums
    capsys.readouterr()
    res = _evaluate(trained)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("xling: note: cache entry")]
    assert len(notes) == 2 and all("another key" in n for n in notes), err
    assert res.rows == clean.rows and res.timings["languages_from_cache"] == 1
    assert [json.loads(p.read_text())["predictions"] for p in entries] == preds
    assert [json.loads(p.read_text())["key"] for p in entries] == [p.stem for p in entries]


def test_prediction_entry_under_another_key_is_refused(tmp_path, capsys):
    from xling.recipes.eval.run import PredictionCache

    cache = PredictionCache(tmp_path)
    k1, k2 = PredictionCache.key({"lang": "deu"}), PredictionCache.key({"lang": "fra"})
    cache.put(k1, [0, 1, 1], {})
    cache.put(k2, [1, 0, 0], {})
    shutil.copyfile(cache.path(k2), cache.path(k1))
    assert cache.get(k1) is None
    assert "another key" in capsys.readouterr().err
    assert cache.get(k2) == [1, 0, 0]


def test_background_cache_writes_are_waited_for_and_identical(tmp_path, capsys):
    """GPU runs write entries on a background thread: a get of the same key waits for the write, the
    entry is the same file a direct put writes, and a failed write is one note, never an exception."""
    import torch

    from xling.engine.embed import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "c")
    emb = torch.randn(3, 5, 4)
    cache.put_background("k" * 64, emb, {"model": "m"})
    got = cache.get("k" * 64, (3, 5, 4))
    assert got is not None and torch.equal(got, emb)
    direct = EmbeddingCache(tmp_path / "d")
    direct.put("k" * 64, emb, {"model": "m"})
    # the same tensor and the same metadata (safetensors may order metadata keys differently per write,
    # so the files are compared by content, not byte for byte)
    from safetensors import safe_open

    def content(path):
        with safe_open(str(path), framework="pt") as f:
            return f.metadata(), f.get_tensor("embeddings")

    (m1, t1), (m2, t2) = content(cache.path("k" * 64)), content(direct.path("k" * 64))
    assert m1 == m2 and torch.equal(t1, t2)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    cache.put = boom
    cache.put_background("z" * 64, emb)
    cache.flush()
    err = capsys.readouterr().err
    assert "not written" in err and "disk on fire" in err and len(err.strip().splitlines()) == 1
