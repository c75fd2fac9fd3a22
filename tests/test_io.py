"""The shared IO helpers: folder manifests, file locks, atomic folder replacement."""

import json
import multiprocessing as mp
import os
import threading
import time

import pytest

from xling.io import (
    MANIFEST_NAME,
    atomic_path,
    file_lock,
    manifest_problem,
    verify_manifest,
    write_manifest,
)


def _folder(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"a": 1}')
    (d / "model.safetensors").write_bytes(os.urandom(4096))
    (d / "sub" / "tokenizer.json").write_text("{}")
    return d


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    import hashlib

    d = _folder(tmp_path)
    m = write_manifest(d)
    assert sorted(m["files"]) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert m["files"]["config.json"]["sha256"] == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert json.loads((d / MANIFEST_NAME).read_text()) == m
    assert verify_manifest(d) and verify_manifest(d, use_stamp=False)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "add", "no-manifest", "bad-manifest"])
def test_manifest_catches_damage(tmp_path, damage):
    d = _folder(tmp_path)
    write_manifest(d)
    assert verify_manifest(d)  # the stamp is now fresh
    w = d / "model.safetensors"
    if damage == "flip":
        data = bytearray(w.read_bytes())
        data[100] ^= 0xFF
        w.write_bytes(bytes(data))
    elif damage == "truncate":
        w.write_bytes(w.read_bytes()[:-1])
    elif damage == "delete":
        w.unlink()
    elif damage == "add":
        (d / "extra.bin").write_bytes(b"x")
    elif damage == "no-manifest":
        (d / MANIFEST_NAME).unlink()
    else:
        (d / MANIFEST_NAME).write_text("{not json")
    reason = manifest_problem(d)
    assert reason is not None and "\n" not in reason
    assert not verify_manifest(d)


def test_manifest_flip_with_restored_mtime_is_still_caught(tmp_path):
    d = _folder(tmp_path)
    write_manifest(d)
    assert verify_manifest(d)
    w = d / "model.safetensors"
    st = w.stat()
    data = bytearray(w.read_bytes())
    data[7] ^= 0x01
    w.write_bytes(bytes(data))
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime; ctime moved
    assert "checksum" in manifest_problem(d)


def test_manifest_stamp_skips_rehash_until_a_file_changes(tmp_path, monkeypatch):
    import xling.io as xio

    d = _folder(tmp_path)
    write_manifest(d)
    calls = []
    real = xio.sha256_file
    monkeypatch.setattr(xio, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    assert verify_manifest(d)
    assert calls == []  # verified at write time, nothing changed since
    (d / "config.json").write_text('{"a": 2}')
    assert not verify_manifest(d)
    assert calls  # re-hashed


def test_manifest_survives_renaming_the_folder(tmp_path):
    d = _folder(tmp_path)
    write_manifest(d)
    moved = tmp_path / "elsewhere"
    d.rename(moved)
    assert verify_manifest(moved)


def _hold_lock(path, q):
    with file_lock(path):
        q.put("locked")
        time.sleep(0.5)
    q.put("released")


def test_file_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "x.lock"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_hold_lock, args=(str(lock), q))
    p.start()
    assert q.get(timeout=30) == "locked"
    with pytest.raises(BlockingIOError):
        with file_lock(lock, wait=False):
            pass
    t0 = time.monotonic()
    with file_lock(lock):
        assert q.get(timeout=5) == "released"
    assert time.monotonic() - t0 > 0.05
    p.join(10)


def test_atomic_folder_replaced_whole_by_concurrent_writers(tmp_path):
    target = tmp_path / "out"
    errors = []
    barrier = threading.Barrier(4)

    def writer(i):
        try:
            with atomic_path(target) as tmp:
                tmp.mkdir()
                for name in ("a.txt", "b.txt", "c.txt"):
                    (tmp / name).write_text(str(i))
                barrier.wait(timeout=10)  # all four finish at the same moment
        except BaseException as e:  # pragma: no cover - the failure being tested
            errors.append(e)

    for _ in range(5):
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        values = {(target / n).read_text() for n in ("a.txt", "b.txt", "c.txt")}
        assert len(values) == 1
        assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt", "c.txt"]
        assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no leftovers beside it


def test_atomic_folder_replaces_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("new")
    assert (target / "x").read_text() == "new"
