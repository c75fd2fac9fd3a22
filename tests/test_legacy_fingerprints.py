"""Modules written by an older xling (legacy base fingerprints) still compose and apply; strict loading of
trained task folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny_models
from xling.errors import XlingError

CORPUS = ["the cat sees the dog", "the dog sees the cat", "one big red house", "the small dog runs"] * 8
NOTE = "written by an older xling"


def legacy_fp(folder: Path) -> str:
    """The pre-whole-file fingerprint, written out here independently: sha256 of the sorted-JSON config, then per
    safetensors file (by name) its name and size as text, its first MiB and, above 2 MiB, its last MiB."""
    from transformers import AutoConfig

    h = hashlib.sha256(json.dumps(AutoConfig.from_pretrained(folder).to_dict(), sort_keys=True, default=str).encode())
    for f in sorted(p for p in Path(folder).iterdir() if p.name.endswith(".safetensors")):
        data = f.read_bytes()
        h.update(f"{f.name}{len(data)}".encode())
        h.update(data[: 1 << 20])
        if len(data) > 2 << 20:
            h.update(data[-(1 << 20):])
    return h.hexdigest()[:16]


def set_recorded(folder: Path, fp: str, name: str = "xling_module.json") -> None:
    p = folder / name
    rec = json.loads(p.read_text(encoding="utf-8"))
    rec["base_fingerprint"] = fp
    p.write_text(json.dumps(rec, indent=2), encoding="utf-8")


@pytest.fixture(autouse=True)
def _fresh_notes():
    from xling.models import fingerprint

    fingerprint._LEGACY_NOTED.clear()


def test_legacy_fingerprint_equals_independent_reimplementation(tiny_model_dirs, tmp_path):
    from transformers import AutoConfig

    from xling.models.fingerprint import legacy_model_fingerprint
    from xling.modules import base_fingerprint

    bert = tiny_model_dirs["bert"]
    assert legacy_model_fingerprint(bert, AutoConfig.from_pretrained(bert)) == legacy_fp(bert)
    assert legacy_fp(bert) != base_fingerprint(bert)  # the new fingerprint differs: this is what broke old modules
    # a weights file above 2 MiB: first and last MiB only, so a change in the middle is invisible to it
    big = tmp_path / "big"
    tiny_models.save("bert", big)
    save_file({"extra.weight": torch.arange(3 * (1 << 18), dtype=torch.float32)}, str(big / "zz.safetensors"))
    fp = legacy_model_fingerprint(big, AutoConfig.from_pretrained(big))
    assert fp == legacy_fp(big)
    raw = bytearray((big / "zz.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (big / "zz.safetensors").write_bytes(bytes(raw))
    assert legacy_model_fingerprint(big, AutoConfig.from_pretrained(big)) == fp == legacy_fp(big)


@pytest.fixture(scope="module")
def modules(tiny_model_dirs, tmp_path_factory):
    """A language module written by the current code, and a copy whose record holds the legacy fingerprint."""
    import shutil

    from xling.harness.training import train_language_module

    root = tmp_path_factory.mktemp("legacy-modules")
    bert = str(tiny_model_dirs["bert"])
    new = train_language_module(bert, "deu", CORPUS, root / "new", steps=1, batch_size=8)
    old = root / "old"
    shutil.copytree(new, old)
    set_recorded(old, legacy_fp(Path(bert)))
    return new, old


def test_compose_accepts_a_legacy_module_with_one_note(modules, tiny_model_dirs, tmp_path, capsys):
    from xling.modules import base_fingerprint, compose_to_lora, compose_to_merged

    new, old = modules
    bert = tiny_model_dirs["bert"]
    out = compose_to_merged([old], base=bert, out=tmp_path / "merged")
    assert out.tensors_changed > 0
    ref = compose_to_merged([new], base=bert, out=tmp_path / "merged-new")
    for f in ("model.safetensors",):
        a, b = load_file(str(tmp_path / "merged" / f)), load_file(str(tmp_path / "merged-new" / f))
        assert all(torch.equal(a[k], b[k]) for k in a)
    err = capsys.readouterr().err
    assert err.count(NOTE) == 1 and "legacy fingerprint" in err and "old" in err
    # a legacy module beside a new one: checked each against the base; the output records the new fingerprint
    lo = compose_to_lora([old, new], base=bert, out=tmp_path / "lo")
    assert json.loads((lo.out / "xling_module.json").read_text())["base_fingerprint"] == base_fingerprint(bert)
    # without a base the two records cannot be told apart: refused, with the way out
    with pytest.raises(XlingError, match="pass --base"):
        compose_to_lora([old, new], out=tmp_path / "nobase")
    assert not (tmp_path / "nobase").exists()


def test_cli_compose_legacy_module_note_and_exit_0(modules, tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main

    _, old = modules
    rc = main(["compose", str(old), "--base", str(tiny_model_dirs["bert"]), "--as", "merged",
               "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 0 and (tmp_path / "m" / "config.json").is_file()
    notes = [line for line in err.splitlines() if NOTE in line]
    assert len(notes) == 1 and notes[0].startswith("xling: note: ")


def test_legacy_fingerprint_of_another_base_is_still_refused(modules, tiny_model_dirs, tmp_path, capsys):
    import shutil

    from xling.cli import main
    from xling.modules import compose_to_merged

    new, _ = modules
    other = tiny_models.save("bert", tmp_path / "other-base", seed=5)
    stale = tmp_path / "stale"
    shutil.copytree(new, stale)
    set_recorded(stale, legacy_fp(other))  # an old module of another base
    with pytest.raises(XlingError, match="refusing to apply it to another base"):
        compose_to_merged([stale], base=tiny_model_dirs["bert"], out=tmp_path / "m")
    rc = main(["compose", str(stale), "--base", str(tiny_model_dirs["bert"]), "--as", "merged",
               "--out", str(tmp_path / "m2")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("xling: error: ") and NOTE not in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m2").exists()
    # and the new module on the other base is refused too (nothing matches by accident)
    with pytest.raises(XlingError, match="another base"):
        compose_to_merged([new], base=other, out=tmp_path / "m3")


def test_task_module_on_a_legacy_language_module_and_a_legacy_trained_folder(modules, tiny_model_dirs, tmp_path,
                                                                              capsys):
    from test_train import tiny_task

    from xling.harness.training import train_task_module
    from xling.modules.trained import load_trained

    _, old = modules
    bert = str(tiny_model_dirs["bert"])
    task = train_task_module(bert, tiny_task(n_train=8, n_dev=4, n_test=4), tmp_path / "task", language_module=old,
                             epochs=1, lr=1e-2, batch_size=8, patience=0)
    err = capsys.readouterr().err
    assert err.count(NOTE) == 1 and "language module" in err
    ref = load_trained(task, device="cpu")
    # the trained folder as an older xling wrote it: legacy base fingerprint in xling_train.json and the module record
    set_recorded(task, legacy_fp(Path(bert)), "xling_train.json")
    set_recorded(task, legacy_fp(Path(bert)))
    got = load_trained(task, device="cpu")
    assert NOTE in capsys.readouterr().err
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        assert torch.equal(ref.model(input_ids=ids).logits, got.model(input_ids=ids).logits)
    set_recorded(task, "0" * 16, "xling_train.json")
    with pytest.raises(XlingError, match="not the one trained on"):
        load_trained(task, device="cpu")


# -- strict loading of trained task folders ------------------------------------------------------------------


FAST = dict(lr=1e-2, batch_size=8, patience=0, progress=False, freeze_embeddings=False)


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    """A fully fine-tuned task folder, a LoRA task folder and the task's JSONL."""
    from test_train import tiny_task, write_tiny_jsonl

    from xling.harness.training import train_task

    root = tmp_path_factory.mktemp("trained")
    task = tiny_task(n_train=16, n_dev=8, n_test=8)
    full = train_task(str(tiny_model_dirs["bert"]), task, out=root / "full", epochs=1, **FAST)
    lora = train_task(str(tiny_model_dirs["bert"]), task, method="lora", out=root / "lora", epochs=1, **FAST)
    return full, lora, write_tiny_jsonl(root / "tiny.jsonl", task)


def _eval(capsys, folder: Path, data: Path, tmp_path: Path) -> tuple[int, list[str]]:
    from xling.cli import main

    capsys.readouterr()
    out = tmp_path / "ev"
    rc = main(["eval", "--model", str(folder), "--task", str(data), "--langs", "deu", "--out", str(out),
               "--store", "none", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc:
        assert not out.exists()
    return rc, [line for line in err.splitlines() if line.strip()]


def _drop(folder: Path, file: str, key: str) -> None:
    tensors = load_file(str(folder / file))
    del tensors[key]
    save_file(tensors, str(folder / file), metadata={"format": "pt"})


@pytest.mark.parametrize("key", ["bert.encoder.layer.1.attention.self.query.weight", "classifier.weight"])
def test_eval_of_a_trained_folder_that_lost_a_tensor_is_one_line(trained, tmp_path, capsys, key):
    import shutil

    full, _, data = trained
    rc, lines = _eval(capsys, full, data, tmp_path / "sound")
    assert rc == 0
    folder = Path(shutil.copytree(full, tmp_path / "damaged"))
    _drop(folder, "model.safetensors", key)
    rc, lines = _eval(capsys, folder, data, tmp_path)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("xling: error: "), lines
    assert key in lines[0] and "lacks 1 tensor" in lines[0]


def test_trained_folder_with_an_unexpected_tensor_is_an_error(trained, tmp_path):
    import shutil

    from xling.modules.trained import load_trained

    full, _, _ = trained
    folder = Path(shutil.copytree(full, tmp_path / "extra"))
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["bert.encoder.layer.7.output.dense.weight"] = torch.zeros(32, 64)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(XlingError, match=r"(holds 1 tensor|declares 2 layers).*"):
        load_trained(folder, device="cpu")


def test_trained_folder_tokenizer_beyond_the_embeddings_is_one_line(trained, tmp_path, capsys):
    import shutil

    full, _, data = trained
    folder = Path(shutil.copytree(full, tmp_path / "tok"))
    rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    tj = folder / "tokenizer.json"
    tok = json.loads(tj.read_text(encoding="utf-8"))
    tok["model"]["vocab"]["katze"] = rows + 3  # a German test word now maps beyond the matrix
    tj.write_text(json.dumps(tok), encoding="utf-8")
    rc, lines = _eval(capsys, folder, data, tmp_path)
    assert rc == 2 and len(lines) == 1 and f"token id {rows + 3}" in lines[0] and f"{rows} rows" in lines[0], lines


def test_lora_task_folder_whose_head_lost_a_tensor_is_an_error(trained, tmp_path, capsys):
    import shutil

    _, lora, data = trained
    folder = Path(shutil.copytree(lora, tmp_path / "lora"))
    head = load_file(str(folder / "head.safetensors"))
    assert "classifier.weight" in head
    _drop(folder, "head.safetensors", "classifier.weight")
    meta = json.loads((folder / "xling_module.json").read_text())
    meta["checksums"] = None  # as a module written before checksums existed: nothing else catches it
    (folder / "xling_module.json").write_text(json.dumps(meta), encoding="utf-8")
    rc, lines = _eval(capsys, folder, data, tmp_path)
    assert rc == 2 and len(lines) == 1 and "classifier.weight" in lines[0] and "random" in lines[0], lines


def test_language_module_training_on_a_base_that_lost_a_tensor_is_refused(tiny_model_dirs, tmp_path):
    import shutil

    from xling.harness.training import train_language_module

    folder = Path(shutil.copytree(tiny_model_dirs["bert"], tmp_path / "base"))
    _drop(folder, "model.safetensors", "encoder.layer.0.attention.self.key.weight")
    with pytest.raises(XlingError, match=r"lacks 1 tensor.*encoder\.layer\.0\.attention\.self\.key\.weight"):
        train_language_module(str(folder), "deu", CORPUS, tmp_path / "m", steps=1, batch_size=8)
    assert not (tmp_path / "m").exists()
