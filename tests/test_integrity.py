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
from xling.recipes.align.run import align

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
    from xling.harness.training import train_task

    torch.set_num_threads(1)
    task = tiny_task()
    out = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path_factory.mktemp("trained") / "model",
                     epochs=2, lr=1e-2, batch_size=8, patience=0, progress=False)
    return out, task


def _evaluate(trained, **kw):
    from xling.recipes.eval.run import EvalConfig, evaluate

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


# ----------------------------------------------------------------------------- modules


def _flip(path: Path, n: int = 16) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) - n, len(raw)):  # the end of the tensor data
        raw[i] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def modules(tiny_model_dirs, tmp_path_factory):
    """One module of each writer: language LoRA, task LoRA, LT-SFT sparse, composed LoRA, train --method lora."""
    from test_train import tiny_task
    from xling.harness.training import (train_language_module, train_sparse_language_module, train_task,
                                        train_task_module)
    from xling.modules.apply import compose_to_lora

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("modules")
    base = str(tiny_model_dirs["bert"])
    corpus = ["the cat sees the dog", "one big red house", "the small dog runs"] * 4
    task = tiny_task(n_train=16, n_dev=8, n_test=4)
    out = {
        "lang": train_language_module(base, "deu", corpus, root / "lang", steps=2, batch_size=4),
        "task": train_task_module(base, task, root / "task", epochs=1, lr=1e-2, batch_size=8, patience=0),
        "sparse": train_sparse_language_module(base, "deu", corpus, root / "sparse", k=50, phase1_steps=2,
                                               phase2_steps=2, batch_size=4),
        "lora": train_task(base, task, method="lora", out=root / "lora", epochs=1, lr=1e-2, batch_size=8,
                           patience=0, progress=False),
    }
    compose_to_lora([out["task"], out["lang"]], "add", out=root / "composed")
    out["composed"] = root / "composed"
    return out, task


def _copy(src: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("which", ["lang", "task", "sparse", "lora", "composed"])
def test_every_module_writer_records_weight_checksums(modules, which):
    from xling.io import sha256_file

    folder = Path(modules[0][which])
    meta_file = "xling_sft.json" if which == "sparse" else "xling_module.json"
    sums = json.loads((folder / meta_file).read_text())["checksums"]
    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    assert weights and sorted(sums) == weights
    assert all(sha256_file(folder / name) == sha for name, sha in sums.items())


@pytest.mark.parametrize("which", ["lang", "sparse", "composed"])
def test_edited_module_weights_are_a_one_line_error_everywhere(modules, which, tiny_model_dirs, tmp_path,
                                                                 capsys):
    from xling.cli import main
    from xling.errors import XlingError
    from xling.modules.apply import compose_to_lora
    from xling.modules.lora import LoraModule
    from xling.modules.sparse import SparseModule

    folder = _copy(Path(modules[0][which]), tmp_path)
    weights = "sparse_diff.safetensors" if which == "sparse" else "adapter_model.safetensors"
    _flip(folder / weights)
    cls = SparseModule if which == "sparse" else LoraModule
    with pytest.raises(XlingError, match=f"module {folder}: {weights} does not match"):
        cls(folder)
    capsys.readouterr()
    assert main(["modules", "show", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xling: error: module ") and str(folder) in err[0]
    other = modules[0]["task"]
    if which != "sparse":
        with pytest.raises(XlingError, match="does not match"):
            compose_to_lora([other, folder], "add", out=tmp_path / "mix")
        assert not (tmp_path / "mix").exists()
    merged = ["--as", "merged", "--base", str(tiny_model_dirs["bert"])] if which == "sparse" else []
    assert main(["compose", str(other), str(folder), "--method", "add", "--out", str(tmp_path / "mix2"),
                 *merged]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0] and not (tmp_path / "mix2").exists()


@pytest.mark.parametrize("which,weights", [("task", "head.safetensors"), ("lora", "adapter_model.safetensors"),
                                           ("composed", "head.safetensors")])
def test_eval_of_an_edited_module_is_a_one_line_error(modules, which, weights, tmp_path, capsys):
    from xling.cli import main
    from xling.errors import XlingError
    from xling.modules.trained import load_trained

    folder = _copy(Path(modules[0][which]), tmp_path)
    load_trained(folder)  # a sound copy loads
    _flip(folder / weights)
    with pytest.raises(XlingError, match=f"{weights} does not match"):
        load_trained(folder)
    from test_train import write_tiny_jsonl

    data = write_tiny_jsonl(tmp_path / "task.jsonl", modules[1])
    assert main(["eval", "--model", str(folder), "--task", str(data), "--out", str(tmp_path / "ev"),
                 "--store", "none", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xling: error: module ") and weights in err[0]
    assert not (tmp_path / "ev").exists()


def test_modules_without_checksums_still_load(modules, tmp_path):
    from xling.modules.trained import load_trained
    from xling.modules.lora import LoraModule

    folder = _copy(Path(modules[0]["task"]), tmp_path)
    meta = json.loads((folder / "xling_module.json").read_text())
    del meta["checksums"]  # as written before checksums were recorded
    (folder / "xling_module.json").write_text(json.dumps(meta))
    _flip(folder / "head.safetensors")  # unverifiable, so not refused
    assert LoraModule(folder).meta.checksums is None
    load_trained(folder)


def test_transfer_retrains_a_damaged_cached_module(modules, tmp_path, capsys):
    from xling.recipes.transfer.run import _mark, _reusable

    folder = _copy(Path(modules[0]["lang"]), tmp_path)
    _mark(folder, "k1", {})
    assert _reusable(folder, "k1") and not _reusable(folder, "k2")
    capsys.readouterr()
    _flip(folder / "adapter_model.safetensors")
    assert not _reusable(folder, "k1")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"xling: note: module {folder}") and "retraining" in err[0]


# ----------------------------------------------------------------------------- one run owns its output folder


def _align_into(model_dir: str, layer: int, out: str, barrier, results) -> None:
    """A child process: align with one layer into ``out``, all children writing at the same moment, slowly."""
    import contextlib
    import time as _time

    import xling.io as xio

    torch.set_num_threads(1)
    real_lock, real_write = xio.output_lock, xio.atomic_write_text

    @contextlib.contextmanager
    def lock_after_barrier(path, **kw):
        barrier.wait(timeout=120)  # every run has its results: they all start writing now
        with real_lock(path, **kw) as p:
            yield p

    def slow_write(*a, **kw):
        _time.sleep(0.15)  # widen the window in which another writer could interleave
        real_write(*a, **kw)

    xio.output_lock, xio.atomic_write_text = lock_after_barrier, slow_write
    # device cpu: a forked child must not touch CUDA (the parent may have initialised it on a GPU machine)
    res = align(model=model_dir, corpus=_corpus(), layers=[layer], out=out, store=None, progress=False, device="cpu")
    results.put((layer, res.run_id))


def test_concurrent_align_runs_leave_one_runs_folder(tiny_model_dirs, tmp_path):
    import csv
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the children inherit the imported torch: seconds, not a re-import each
    barrier, results = ctx.Barrier(3), ctx.Queue()
    out = tmp_path / "out"
    procs = [ctx.Process(target=_align_into, args=(str(tiny_model_dirs["bert"]), layer, str(out), barrier, results))
             for layer in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    run_ids = dict(results.get(timeout=5) for _ in procs)
    run = json.loads((out / "run.json").read_text())
    layer = run["layers"][0]
    assert run["run_id"] == run_ids[layer]
    assert f"<td>{run['run_id']}</td>" in (out / "report.html").read_text() or run["run_id"] in (
        out / "report.html").read_text()
    for other in set(run_ids.values()) - {run["run_id"]}:
        assert other not in (out / "report.html").read_text()
    with open(out / "alignment.csv", newline="") as f:
        assert {int(r["layer"]) for r in csv.DictReader(f)} == {layer}
    with open(out / "summary.csv", newline="") as f:
        assert {int(r["best_layer"]) for r in csv.DictReader(f)} == {layer}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left beside it


def test_transfer_refuses_a_second_run_into_the_same_folder(tmp_path):
    from xling.errors import XlingError
    from xling.io import output_lock
    from xling.recipes.transfer.run import run_transfer

    out = tmp_path / "transfer"
    with output_lock(out):  # another run holds the folder
        with pytest.raises(XlingError, match=f"another xling run is writing {out}"):
            run_transfer(out=out, store=None, progress=False)
    assert not out.exists()


def test_concurrent_first_use_of_the_libreoffice_cache(monkeypatch):
    """Four threads fetch the same package at once: one download, one unpack, every caller sees the whole tree."""
    import shutil
    import subprocess
    import threading
    import time as _time

    from xling.data import libreoffice as lo

    calls = []
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")

    def fake_run(cmd, cwd=None, **kw):  # no network, no dpkg: write what they would, slowly
        calls.append(cmd[1])
        _time.sleep(0.1)
        if cmd[1] == "download":
            Path(cwd, f"{cmd[2]}_7.4_all.deb").write_bytes(b"deb")
        else:
            dest = Path(cmd[3])
            for i in range(20):
                (dest / "usr" / "share" / f"d{i}").mkdir(parents=True)
                (dest / "usr" / "share" / f"d{i}" / "page.xhp").write_text("x")
                _time.sleep(0.005)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    roots, errors = [], []
    barrier = threading.Barrier(4)

    def fetch():
        try:
            barrier.wait(timeout=10)
            root = lo.fetch_package("libreoffice-help-de")
            roots.append(len(list(root.rglob("page.xhp"))))
        except BaseException as e:  # noqa: BLE001 - the failure being tested
            errors.append(repr(e))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert roots == [20] * 4
    assert sorted(calls) == ["-x", "download"]
    debs = cache_dir("debian", "debs")
    assert [p.name for p in debs.iterdir()] == ["libreoffice-help-de_7.4_all.deb"]
    assert [p.name for p in cache_dir("debian", "root").iterdir()] == ["libreoffice-help-de"]
