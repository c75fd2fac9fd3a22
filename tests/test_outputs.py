"""Output folders (issue 19): a command never deletes a user's files, and a failed write leaves the old outputs whole.

* a non-empty folder without xling's record (``.xling-output.json``) is refused in one line, untouched,
  unless ``--overwrite``; a file is never replaced by a folder; the cache folder, a folder inside it and
  its parents are never an output;
* the new folder is built aside and swapped in whole: a full disk mid-write leaves the earlier folder
  byte for byte, one line, exit 2;
* temporaries of a process killed with ``kill -9`` are removed by the next write into the same folder;
* a full disk or an unusable cache folder is one line (or a note for a cache entry), never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tiny_models
from xling.cli import main

CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}
CORPUS = ["habari ya asubuhi rafiki yangu", "ninapenda kusoma vitabu vingi", "mvua inanyesha leo jioni",
          "watoto wanacheza mpira uwanjani", "chakula hiki ni kitamu sana", "tutaonana kesho asubuhi"]


def one_error_line(capsys, argv) -> str:
    """Run the CLI: exit 2, exactly one ``xling: error:`` line, no traceback."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xling: error: "), err
    assert "Traceback" not in err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def users_folder(path: Path) -> Path:
    path.mkdir()
    (path / "chapter1.tex").write_text("my thesis, three years of work\n", encoding="utf-8")
    (path / "figures").mkdir()
    (path / "figures" / "plot.svg").write_text("<svg/>", encoding="utf-8")
    return path


@pytest.fixture
def flores_dir(tmp_path):
    d = tmp_path / "flores"
    d.mkdir()
    for k, sents in tiny_models.PARALLEL.items():
        (d / f"{CODES[k]}.devtest").write_text("\n".join(sents) + "\n", encoding="utf-8")
    return d


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "swh.txt"
    p.write_text("\n".join(CORPUS), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def lora_module(tiny_model_dirs, tmp_path_factory):
    from xling.harness.training import train_language_module

    return train_language_module(str(tiny_model_dirs["gpt2"]), "swh", CORPUS,
                                 tmp_path_factory.mktemp("lora") / "lang", steps=1)


def _align_args(tiny_model_dirs, flores_dir, out):
    return ["align", "--model", tiny_model_dirs["bert"], "--data", flores_dir, "--langs", "de", "--out", out,
            "--store", "none", "--quiet", "--batch-size", "3", "--metrics", "mexa"]


def _train_module_args(tiny_model_dirs, text_file, out):
    return ["train-module", "--kind", "language", "--lang", "swh", "--text", text_file, "--model",
            tiny_model_dirs["gpt2"], "--out", out, "--steps", "1", "--quiet"]


def _train_args(tiny_model_dirs, tmp_path, out):
    from test_train import tiny_task, write_tiny_jsonl

    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", tiny_task(n_train=8, n_dev=4, n_test=4))
    return ["train", "--task", data, "--model", tiny_model_dirs["bert"], "--epochs", "1", "--out", out, "--quiet"]


# ----------------------------------------------------------------------------- a user's folder is refused


@pytest.mark.parametrize("command", ["align", "train-module", "train", "compose", "vocab-trim", "eval",
                                     "align-save-embeddings"])
def test_users_folder_is_refused_and_untouched(command, tiny_model_dirs, flores_dir, text_file, tmp_path, capsys,
                                               request):
    thesis = users_folder(tmp_path / "thesis")
    before = snapshot(thesis)
    if command == "align":
        argv = _align_args(tiny_model_dirs, flores_dir, thesis)
    elif command == "align-save-embeddings":
        argv = _align_args(tiny_model_dirs, flores_dir, tmp_path / "o") + ["--save-embeddings", thesis]
    elif command == "train-module":
        argv = _train_module_args(tiny_model_dirs, text_file, thesis)
    elif command == "train":
        argv = _train_args(tiny_model_dirs, tmp_path, thesis)
    elif command == "compose":
        argv = ["compose", request.getfixturevalue("lora_module"), "--method", "add", "--out", thesis]
    elif command == "eval":
        argv = ["eval", "--model", tmp_path / "no-such-model", "--task", "x.jsonl", "--out", thesis, "--quiet"]
    else:  # a missing model: the --out check comes first, before the model or corpus is read
        argv = ["vocab", "trim", "--model", tmp_path / "no-such-model", "--langs", "en", "--corpus", text_file,
                "--out", thesis, "--store", "none", "--quiet"]
    line = one_error_line(capsys, argv)
    assert str(thesis) in line and "did not write" in line and "--overwrite" in line
    assert snapshot(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".thesis")) == []


def test_overwrite_replaces_a_users_folder_and_reruns_need_no_flag(tiny_model_dirs, text_file, tmp_path, capsys):
    notes = users_folder(tmp_path / "notes")
    argv = _train_module_args(tiny_model_dirs, text_file, notes)
    assert main([str(a) for a in argv + ["--overwrite"]]) == 0
    assert not (notes / "chapter1.tex").exists() and (notes / "xling_module.json").is_file()
    record = json.loads((notes / ".xling-output.json").read_text())
    assert record["written_by"] == "xling" and record["command"] == "train-module"
    # the folder is xling's now: a rerun replaces it without --overwrite
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()


def test_train_refuses_users_folder_before_loading_anything_and_overwrite_proceeds(tiny_model_dirs, tmp_path,
                                                                                   capsys):
    notes = users_folder(tmp_path / "notes")
    argv = _train_args(tiny_model_dirs, tmp_path, notes)
    before = snapshot(notes)
    assert "did not write" in one_error_line(capsys, argv)
    assert snapshot(notes) == before
    assert main([str(a) for a in argv + ["--overwrite"]]) == 0
    assert not (notes / "chapter1.tex").exists() and (notes / "xling_train.json").is_file()
    from xling.modules.trained import read_train_info

    assert read_train_info(notes) is not None  # the record file does not disturb the trained folder


def test_an_empty_folder_is_fine(tiny_model_dirs, flores_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    assert main([str(a) for a in _align_args(tiny_model_dirs, flores_dir, tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "alignment.csv").is_file()


# ----------------------------------------------------------------------------- the cache, files


def test_the_cache_folder_its_insides_and_parents_are_never_an_output(tiny_model_dirs, flores_dir, tmp_path,
                                                                      capsys, monkeypatch):
    cache = tmp_path / "home" / "cache" / "xling"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "weights.bin").write_bytes(b"\x00" * 64)
    monkeypatch.setenv("XLING_CACHE", str(cache))
    before = snapshot(cache)
    for out in (cache, cache / "models", cache / "new-sub", tmp_path / "home"):
        for extra in ([], ["--overwrite"]):
            line = one_error_line(capsys, _align_args(tiny_model_dirs, flores_dir, out) + extra)
            assert "xling cache folder" in line, line
    before.pop("locks", None)
    assert {k: v for k, v in snapshot(cache).items() if not k.startswith("locks/")} == before


def test_a_file_is_never_replaced_by_a_folder(tiny_model_dirs, flores_dir, tmp_path, capsys):
    f = tmp_path / "embeddings.txt"
    f.write_text("keep me", encoding="utf-8")
    for extra in ([], ["--overwrite"]):
        line = one_error_line(capsys, _align_args(tiny_model_dirs, flores_dir, tmp_path / "o")
                              + ["--save-embeddings", f] + extra)
        assert "--save-embeddings" in line and "is a file" in line
        assert f.read_text(encoding="utf-8") == "keep me"
    assert not (tmp_path / "o").exists()  # refused before the run, so nothing else was written either
    line = one_error_line(capsys, ["train-module", "--kind", "language", "--lang", "swh", "--text", f,
                                   "--model", tiny_model_dirs["gpt2"], "--out", f, "--overwrite"])
    assert "is a file" in line and f.read_text(encoding="utf-8") == "keep me"


def test_compare_out_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "compare.html"
    f.write_text("mine", encoding="utf-8")
    line = one_error_line(capsys, ["compare", "aaaa", "bbbb", "--store", tmp_path / "none.sqlite", "--out", f])
    assert str(f) in line and "is a file" in line and f.read_text() == "mine"


def test_out_under_a_read_only_parent_is_refused_before_the_work(tmp_path, capsys, tiny_model_dirs, flores_dir):
    parent = tmp_path / "ro"
    parent.mkdir()
    (parent / "file").write_text("x")
    line = one_error_line(capsys, _align_args(tiny_model_dirs, flores_dir, parent / "file" / "out"))
    assert "is a file, not a folder" in line or "cannot be created" in line


# ----------------------------------------------------------------------------- failed writes


def test_full_disk_mid_write_leaves_the_old_folder_whole(tiny_model_dirs, flores_dir, tmp_path, capsys,
                                                          monkeypatch):
    out = tmp_path / "o"
    argv = [str(a) for a in _align_args(tiny_model_dirs, flores_dir, out)]
    assert main(argv) == 0
    capsys.readouterr()
    (out / "alignment.csv").write_text("old alignment marker\n")  # so that a new file would differ
    before = snapshot(out)
    import xling.io

    real, written = xling.io.atomic_write_text, []

    def full_disk(target, text):
        if len(written) >= 2:  # alignment.csv and summary.csv land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        written.append(target)
        real(target, text)

    monkeypatch.setattr(xling.io, "atomic_write_text", full_disk)
    line = one_error_line(capsys, argv)
    assert "disk is full" in line and str(out) in line
    assert len(written) == 2
    assert snapshot(out) == before  # byte for byte: no new alignment.csv beside the old report
    assert [p.name for p in tmp_path.iterdir() if ".xling-tmp-" in p.name] == []


def test_full_disk_outside_an_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """Any write that meets a full disk (here the results store's folder) is one line, exit 2."""
    import xling.cli

    def boom(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "somewhere"))

    parser = xling.cli.build_parser
    monkeypatch.setattr(xling.cli, "build_parser", lambda: _with_func(parser(), boom))
    line = one_error_line(capsys, ["metrics"])
    assert str(tmp_path / "somewhere") in line and "disk is full" in line


def _with_func(parser, func):
    real = parser.parse_args

    def parse_args(argv=None):
        args = real(argv)
        args.func = func
        return args

    parser.parse_args = parse_args
    return parser


def test_a_cache_entry_that_cannot_be_written_is_a_note(tiny_model_dirs, flores_dir, tmp_path, capsys,
                                                        monkeypatch):
    from safetensors import torch as st

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "entry")

    monkeypatch.setattr(st, "save_file", full)
    assert main([str(a) for a in _align_args(tiny_model_dirs, flores_dir, tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "xling: note: cache entry" in err and "disk is full" in err and "Traceback" not in err
    assert err.count("xling: note: cache entry") == 1
    assert (tmp_path / "o" / "alignment.csv").is_file()


def test_cache_path_that_is_a_file_is_one_line(tiny_model_dirs, flores_dir, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cachefile"
    cache.write_text("not a folder")
    monkeypatch.setenv("XLING_CACHE", str(cache))
    line = one_error_line(capsys, _align_args(tiny_model_dirs, flores_dir, tmp_path / "o"))
    assert "cache folder" in line and str(cache) in line and "XLING_CACHE" in line


def test_cache_dir_unwritable_parent_is_a_one_line_error(tmp_path, monkeypatch):
    from xling.errors import XlingError
    from xling.io import cache_dir

    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "c"))
    import pathlib

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)
    with pytest.raises(XlingError, match="permission denied; set XLING_CACHE"):
        cache_dir("embeddings")


# ----------------------------------------------------------------------------- kill -9


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_kill_9_leaves_a_temporary_that_the_next_write_removes(tmp_path, tiny_model_dirs, text_file):
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from xling.io import atomic_path
        with atomic_path(Path({str(tmp_path / "m")!r})) as tmp:
            tmp.mkdir()
            (tmp / "adapter_model.safetensors").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    rc = subprocess.run([sys.executable, "-c", script]).returncode
    assert rc == -9
    stale = [p for p in tmp_path.iterdir() if ".xling-tmp-" in p.name]
    assert len(stale) == 1 and stale[0].is_dir()
    host = stale[0].name.split(".xling-tmp-")[1].split("-")[0]
    # not xling's, another host's, or a live process's: left alone
    keep = [tmp_path / ".m.keep", tmp_path / f".m.xling-tmp-{host}-{os.getpid()}-live.tmp",
            tmp_path / f".m.xling-tmp-00000000-{_dead_pid()}-other.tmp", tmp_path / "xling-tmp-notours.tmp"]
    for k in keep:
        k.mkdir()
    dead_file = tmp_path / f".n.xling-tmp-{host}-{_dead_pid()}-abc.old"
    dead_file.write_text("x")
    argv = _train_module_args(tiny_model_dirs, text_file, tmp_path / "m")
    assert main([str(a) for a in argv]) == 0
    assert not stale[0].exists() and not dead_file.exists()
    assert all(k.exists() for k in keep)
    assert (tmp_path / "m" / "xling_module.json").is_file()


def test_temporaries_name_their_host_and_pid(tmp_path):
    from xling.io import _host_tag, atomic_path

    with atomic_path(tmp_path / "x") as tmp:
        assert tmp.name.startswith(f".x.xling-tmp-{_host_tag()}-{os.getpid()}-")
        tmp.write_text("1")
    assert (tmp_path / "x").read_text() == "1"
    assert socket.gethostname()  # the host tag is a hash of it


# ----------------------------------------------------------------------------- the API


def test_check_output_target_rules(tmp_path, monkeypatch):
    from xling.errors import XlingError
    from xling.io import check_output_target, mark_output, output_folder

    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    assert check_output_target(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    mine = users_folder(tmp_path / "mine")
    with pytest.raises(XlingError, match="did not write"):
        check_output_target(mine)
    check_output_target(mine, overwrite=True)
    ours = tmp_path / "ours"
    mark_output(ours, "align")
    (ours / "report.html").write_text("old")
    check_output_target(ours)
    monkeypatch.chdir(mine)
    monkeypatch.setenv("XLING_CACHE", str(Path(os.sep, "nonexistent-xling-test-cache")))
    with pytest.raises(XlingError, match="working folder"):
        check_output_target(".", overwrite=True)
    with pytest.raises(XlingError, match="working folder"):
        check_output_target(tmp_path, overwrite=True)
    # the swap: an exception inside leaves the old folder, success replaces it whole
    with pytest.raises(RuntimeError):
        with output_folder(ours, command="align") as tmp:
            tmp.mkdir()
            (tmp / "report.html").write_text("new")
            raise RuntimeError("boom")
    assert (ours / "report.html").read_text() == "old"
    with output_folder(ours, command="align") as tmp:
        tmp.mkdir()
        (tmp / "run.json").write_text("{}")
    assert sorted(p.name for p in ours.iterdir()) == [".xling-output.json", "run.json"]
