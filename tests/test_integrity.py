"""Caches and artefacts that cannot lie: damaged entries are caught, noted and recomputed.

Each test damages an entry the way it was seen damaged (flipped bytes, a wrong
shape, labels out of range, a folder in its place, edited module weights) and
checks that the next run gives exactly the clean run's results, says so on stderr
in one line, and replaced the entry.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import tiny_models
from xling.data.corpus import ParallelCorpus
from xling.engine.embed import EmbeddingCache
from xling.io import cache_dir
from xling.runs.align import align

pytestmark = pytest.mark.usefixtures("one_thread")

CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}


def _corpus():
    return ParallelCorpus("tiny", {CODES[k]: v for k, v in tiny_models.PARALLEL.items()})


def _align(model_dir, **kw):
    return align(model=str(model_dir), corpus=_corpus(), out=None, store=None, progress=False, **kw)


def _values(res):
    return [(r["lang"], r["layer"], r["metric"], r["value"]) for r in res.rows]


def _entries() -> list[Path]:
    return sorted(cache_dir("embeddings").rglob("*.safetensors"))


def _flip_data_bytes(path: Path, n: int = 200) -> None:
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    start = 8 + header_len
    assert len(raw) - start > n
    for i in range(start, start + n):
        raw[i] ^= 0x01  # the lowest mantissa bit of 50 floats: values stay finite
    path.write_bytes(bytes(raw))


@pytest.fixture()
def clean(tiny_model_dirs):
    """A clean run (which fills the cache) and its values."""
    res = _align(tiny_model_dirs["bert"])
    assert res.timings["languages_from_cache"] == 0
    entries = _entries()
    assert len(entries) == 4
    return tiny_model_dirs["bert"], _values(res), entries


def _check_recomputed(model_dir, values, capsys, words):
    capsys.readouterr()
    res = _align(model_dir)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("xling: note: cache entry")]
    assert len(notes) == 1, err
    assert words in notes[0] and "recomputing" in notes[0]
    assert "Traceback" not in err
    assert res.timings["languages_from_cache"] == 3
    assert _values(res) == values
    again = _align(model_dir)  # the entry was replaced by a sound one
    assert again.timings["languages_from_cache"] == 4
    assert "xling: note" not in capsys.readouterr().err
    assert _values(again) == values


def test_flipped_bytes_in_embeddings_are_recomputed(clean, capsys):
    model_dir, values, entries = clean
    _flip_data_bytes(entries[1])
    _check_recomputed(model_dir, values, capsys, "failed its checksum")


def test_embeddings_of_the_wrong_shape_are_recomputed(clean, capsys):
    model_dir, values, entries = clean
    from safetensors.torch import load_file

    cache = EmbeddingCache()
    key = entries[0].stem
    emb = load_file(entries[0])["embeddings"]
    assert emb.dim() == 3 and emb.shape[1] == 8  # (layers, n, dim)
    cache.put(key, emb[:, :5].clone())  # a sound entry, but not for this request
    _check_recomputed(model_dir, values, capsys, "has shape (4, 5, ")


def test_non_finite_embeddings_are_recomputed(clean, capsys):
    model_dir, values, entries = clean
    from safetensors.torch import load_file

    emb = load_file(entries[2])["embeddings"]
    emb[1, 2, 3] = float("nan")
    EmbeddingCache().put(entries[2].stem, emb)
    _check_recomputed(model_dir, values, capsys, "NaN")


def test_embeddings_entry_replaced_by_a_folder_is_recomputed(clean, capsys):
    model_dir, values, entries = clean
    entries[3].unlink()
    entries[3].mkdir()
    (entries[3] / "junk").write_text("x")
    _check_recomputed(model_dir, values, capsys, "is not a file")
    assert entries[3].is_file()


def test_embeddings_entry_without_checksum_is_recomputed(clean, capsys):
    model_dir, values, entries = clean
    from safetensors.torch import load_file, save_file

    emb = load_file(entries[0])["embeddings"]
    save_file({"embeddings": emb}, str(entries[0]))  # as written before checksums existed
    _check_recomputed(model_dir, values, capsys, "has no checksum")


def test_no_cache_recomputes_and_overwrites(clean, capsys, monkeypatch):
    model_dir, values, entries = clean
    _flip_data_bytes(entries[0])
    damaged = entries[0].read_bytes()
    res = _align(model_dir, cache=False)
    assert res.timings["languages_from_cache"] == 0 and _values(res) == values
    assert "xling: note" not in capsys.readouterr().err  # --no-cache does not read the entry
    assert entries[0].read_bytes() != damaged  # but writes it afresh
    again = _align(model_dir)
    assert again.timings["languages_from_cache"] == 4 and _values(again) == values


# ----------------------------------------------------------------------------- prediction cache


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    from test_train import tiny_task
    from xling.methods.train import train_task

    torch.set_num_threads(1)
    task = tiny_task()
    out = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path_factory.mktemp("trained") / "model",
                     epochs=2, lr=1e-2, batch_size=8, patience=0, progress=False)
    return out, task


def _evaluate(trained, **kw):
    from xling.runs.eval import EvalConfig, evaluate

    out, task = trained
    return evaluate(EvalConfig(model=str(out), out=None, store=None, progress=False, **kw), task=task)


def _pred_entries() -> list[Path]:
    return sorted(cache_dir("predictions").rglob("*.json"))


@pytest.mark.parametrize("damage", ["edit", "out-of-range", "wrong-count", "folder", "garbage"])
def test_damaged_prediction_entries_are_recomputed(trained, capsys, damage):
    from xling.io import json_digest

    clean = _evaluate(trained)
    assert clean.timings["languages_from_cache"] == 0
    entries = _pred_entries()
    assert len(entries) == 3
    victim = entries[1]
    data = json.loads(victim.read_text())
    preds = data["predictions"]
    if damage == "edit":  # what made `xling eval` report accuracy 0 with exit status 0
        data["predictions"] = [(p + 1) % 3 for p in preds]
        victim.write_text(json.dumps(data))
        words = "failed its checksum"
    elif damage in ("out-of-range", "wrong-count"):
        data["predictions"] = [7] * len(preds) if damage == "out-of-range" else preds[:-1]
        data["sha256"] = json_digest(data["predictions"])  # consistent, but not predictions of this task
        victim.write_text(json.dumps(data))
        words = "out of range" if damage == "out-of-range" else "predictions for"
    elif damage == "folder":
        victim.unlink()
        victim.mkdir()
        words = "is unreadable"
    else:
        victim.write_bytes(b"\x00\xff not json")
        words = "is unreadable"
    capsys.readouterr()
    res = _evaluate(trained)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("xling: note: cache entry")]
    assert len(notes) == 1 and words in notes[0] and str(victim) in notes[0], err
    assert res.rows == clean.rows and res.timings["languages_from_cache"] == 2
    assert json.loads(victim.read_text())["predictions"] == preds  # replaced by the recomputed entry
    assert _evaluate(trained).timings["languages_from_cache"] == 3


def test_eval_no_cache_overwrites_prediction_entries(trained, capsys):
    clean = _evaluate(trained)
    victim = _pred_entries()[0]
    victim.write_text("{}")
    res = _evaluate(trained, cache=False)
    assert res.timings["languages_from_cache"] == 0 and res.rows == clean.rows
    assert "xling: note" not in capsys.readouterr().err
    again = _evaluate(trained)
    assert again.timings["languages_from_cache"] == 3 and again.rows == clean.rows
