"""``xling transfer --executor ray``: the module trainings as Ray units give the modules and rows of a local run.

The Ray tests start one local Ray (2 CPUs) for the module and are marked slow; they are
skipped when ray is not installed. The error paths (a bad --executor, the missing extra)
need no Ray.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from test_transfer import _texts, translated_task
from xling.cli import main
from xling.errors import XlingError
from xling.recipes.transfer.run import RECIPE_FILE, TransferConfig, module_fingerprint, run_transfer

pytestmark = pytest.mark.usefixtures("one_thread")

INSTALL = ("--executor ray needs the 'ray' extra: pip install 'ray>=2.9' "
           "(or, in the xling checkout, pip install -e '.[ray]')")
ROLES = {"lang:eng_Latn", "lang:deu_Latn", "lang:fra_Latn", "task", "task@src", "tt:deu_Latn", "tt:fra_Latn"}


def _config(model_dir, root: Path, out: Path, **kw) -> TransferConfig:
    return TransferConfig(model=str(model_dir), task="tiny", langs=["de", "fr"],
                          conditions=["task", "stack", "translate-train"], text=_texts(root / "text"), lang_steps=2,
                          lang_batch_size=8, task_epochs=1, task_lr=1e-2, bootstrap=50, out=out, store=None,
                          progress=False, **kw)


# ----------------------------------------------------------------------------- no Ray needed


def test_bad_executor_is_one_line(capsys, tmp_path):
    with pytest.raises(XlingError, match=r"^--executor must be one of local, ray, got 'dask'$"):
        TransferConfig(executor="dask")
    with pytest.raises(XlingError, match=r"^--ray-workers must be at least 1, got 0$"):
        TransferConfig(executor="ray", ray_workers=0)
    rc = main(["transfer", "--executor", "spark", "--store", "none", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [
        "xling: error: --executor must be one of local, ray, got 'spark'"]
    assert not (tmp_path / "o").exists()


def test_missing_ray_is_one_line_before_any_training(monkeypatch, tmp_path, capsys, tiny_model_dirs):
    import xling.harness.training as mt
    import xling.tasks.registry as registry

    monkeypatch.setitem(sys.modules, "ray", None)  # import -> ImportError, as when not installed

    def never(*a, **k):
        raise AssertionError("nothing is read or trained before the executor is checked")

    for name in ("train_language_module", "train_task_module", "read_module_text"):
        monkeypatch.setattr(mt, name, never)
    monkeypatch.setattr(registry, "load_task", never)
    cfg = _config(tiny_model_dirs["bert"], tmp_path, tmp_path / "o", executor="ray")
    with pytest.raises(XlingError) as exc:
        run_transfer(cfg, task=translated_task())
    assert str(exc.value) == INSTALL
    assert not (tmp_path / "o").exists()
    rc = main(["transfer", "--model", str(tiny_model_dirs["bert"]), "--executor", "ray", "--store", "none",
               "--out", str(tmp_path / "o2"), "--quiet"])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [f"xling: error: {INSTALL}"]
    assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tiny_model_dirs, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("transfer-local")
    cfg = _config(tiny_model_dirs["bert"], root, root / "local", cache=False)
    return root, run_transfer(cfg, task=translated_task())


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {f.name: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def _same_modules(a: dict, b: dict, roles) -> None:
    """The modules of two runs hold the same tensors, bit for bit (and so the same fingerprint)."""
    for role in roles:
        ta, tb = _tensors(Path(a[role]["path"])), _tensors(Path(b[role]["path"]))
        assert ta.keys() == tb.keys() and "adapter_model.safetensors" in ta, role
        for name in ta:
            assert ta[name].keys() == tb[name].keys(), (role, name)
            for k in ta[name]:
                assert torch.equal(ta[name][k], tb[name][k]), (role, name, k)
        assert module_fingerprint(Path(a[role]["path"])) == module_fingerprint(Path(b[role]["path"])), role


@pytest.mark.slow
def test_ray_transfer_matches_local_and_reuses_on_rerun(ray_session, local_run, tiny_model_dirs, tmp_path):
    root, local = local_run
    cfg = _config(tiny_model_dirs["bert"], root, tmp_path / "ray", cache=False, executor="ray", ray_workers=2)
    remote = run_transfer(cfg, task=translated_task())  # --no-cache: the predictions are recomputed too
    assert set(remote.modules) == set(local.modules) == ROLES
    assert remote.timings["modules_trained"] == len(ROLES) and not any(m["reused"] for m in remote.modules.values())
    _same_modules(local.modules, remote.modules, ROLES)
    assert remote.rows == local.rows and remote.summary == local.summary and remote.choices == local.choices
    assert list(remote.modules) == list(local.modules)  # the info in the same order
    assert (tmp_path / "ray" / "transfer.csv").read_text() == (Path(local.config["out"]) / "transfer.csv").read_text()
    # a rerun with Ray: every module reused (nothing sent), the same rows
    again = run_transfer(_config(tiny_model_dirs["bert"], root, tmp_path / "ray", executor="ray", ray_workers=2),
                         task=translated_task())
    assert again.timings["modules_trained"] == 0 and all(m["reused"] for m in again.modules.values())
    assert again.rows == local.rows


def _dies_on(make, role: str):
    """``make``'s worker, whose process dies on the unit training ``role`` (every time)."""
    import os

    def build():
        worker = make()

        def work(unit):
            if unit["role"] == role:
                os._exit(1)
            return worker(unit)
        return work
    return build


class _DiesOn:
    """A Ray executor whose worker dies on one unit (the module ``role``)."""

    name = "ray"

    def __init__(self, inner, role: str):
        self.inner, self.role = inner, role

    def describe(self) -> str:
        return self.inner.describe()

    def run(self, jobs, on_result=None):
        for job in jobs:
            job.make = _dies_on(job.make, self.role)
        return self.inner.run(jobs, on_result=on_result)


@pytest.mark.slow
def test_ray_worker_death_names_the_unit_and_rerun_reuses_finished_modules(ray_session, local_run, tiny_model_dirs,
                                                                           tmp_path):
    from xling.harness.executor import RayExecutor

    root, local = local_run
    out = tmp_path / "crash"
    cfg = _config(tiny_model_dirs["bert"], root, out, executor="ray", ray_workers=2)
    with pytest.raises(XlingError) as exc:
        run_transfer(cfg, task=translated_task(), executor=_DiesOn(RayExecutor(workers=2, retries=0), "tt:fra_Latn"))
    msg = str(exc.value)
    assert msg.startswith("transfer: task module tt:fra_Latn: its Ray worker died (") and "\n" not in msg
    assert "rerun to resume" in msg
    # only complete modules carry their recipe mark, and those equal the local run's
    marked = {Path(f).parent.name for f in (out / "modules").glob(f"*/{RECIPE_FILE}")}
    assert "task-tt-fra_Latn" not in marked and marked
    by_folder = {Path(m["path"]).name: role for role, m in local.modules.items()}
    for name in marked:
        assert json.loads((out / "modules" / name / RECIPE_FILE).read_text())["key"] == \
            local.modules[by_folder[name]]["key"]
        _same_modules(local.modules, {by_folder[name]: {"path": out / "modules" / name}}, [by_folder[name]])
    rerun = run_transfer(cfg, task=translated_task())
    reused = {Path(m["path"]).name for m in rerun.modules.values() if m["reused"]}
    assert reused == marked and not rerun.modules["tt:fra_Latn"]["reused"]
    assert rerun.rows == local.rows
    _same_modules(local.modules, rerun.modules, ROLES)
