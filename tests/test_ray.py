"""The executors: ``--executor local|ray`` for align and eval give the same results; Ray's failure paths.

The Ray tests start one local Ray (2 CPUs) for the module and are marked slow (Ray's start
and its worker processes take seconds); they are skipped when ray is not installed. The
error paths (a bad --executor, the missing extra) need no Ray.
"""

from __future__ import annotations

import sys

import pytest
import torch

import tiny_models
from xling.cli import main
from xling.data.corpus import ParallelCorpus
from xling.errors import XlingError
from xling.harness.executor import Job, LocalExecutor, RayExecutor, make_executor

CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _corpus():
    return ParallelCorpus("tiny", {CODES[k]: v for k, v in tiny_models.PARALLEL.items()})


# ----------------------------------------------------------------------------- no Ray needed


def test_bad_executor_is_one_line(capsys, tmp_path):
    rc = main(["align", "--executor", "dask", "--store", "none", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == ["xling: error: --executor must be one of local, ray, got 'dask'"]
    rc = main(["eval", "--executor", "spark", "--store", "none", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == ["xling: error: --executor must be one of local, ray, got 'spark'"]
    rc = main(["align", "--executor", "ray", "--ray-workers", "0", "--store", "none", "--quiet"])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [
        "xling: error: --ray-workers must be at least 1, got 0"]
    with pytest.raises(XlingError, match="^--executor must be one of local, ray"):
        make_executor("threads")


def test_missing_ray_extra_is_one_line(monkeypatch, tmp_path, capsys, tiny_model_dirs):
    monkeypatch.setitem(sys.modules, "ray", None)  # import -> ImportError, as when not installed
    with pytest.raises(XlingError) as exc:
        RayExecutor(workers=2).map(str, [1, 2])
    msg = str(exc.value)
    assert msg == ("--executor ray needs the 'ray' extra: pip install 'ray>=2.9' "
                   "(or, in the xling checkout, pip install -e '.[ray]')")
    flores = tmp_path / "flores"
    flores.mkdir()
    for k, sents in tiny_models.PARALLEL.items():
        (flores / f"{CODES[k]}.devtest").write_text("\n".join(sents) + "\n", encoding="utf-8")
    rc = main(["align", "--model", str(tiny_model_dirs["bert"]), "--data", str(flores), "--executor", "ray",
               "--store", "none", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == [f"xling: error: {msg}"]
    assert not (tmp_path / "o").exists()
    # before anything else: eval's --model is not checked, its task not built
    rc = main(["eval", "--model", str(tmp_path / "nope"), "--executor", "ray", "--store", "none", "--quiet"])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [f"xling: error: {msg}"]


def test_local_executor_runs_jobs_in_order():
    made = []

    def make(tag):
        made.append(tag)
        return lambda u: (tag, u * 10)

    import functools

    seen = []
    out = LocalExecutor().run([Job(functools.partial(make, "a"), [1, 2]), Job(functools.partial(make, "b"), [3])],
                              on_result=lambda j, u, v: seen.append((j, u, v)))
    assert out == [[("a", 10), ("a", 20)], [("b", 30)]]
    assert made == ["a", "b"] and seen == [(0, 0, ("a", 10)), (0, 1, ("a", 20)), (1, 0, ("b", 30))]
    assert LocalExecutor().map(abs, [-1, 2, -3]) == [1, 2, 3]


# ----------------------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def _flaky_make(marker, crash_on, always):
    """A worker that kills its own process on unit ``crash_on`` (once, or every time)."""
    import os
    from pathlib import Path

    def make():
        def work(u):
            if u == crash_on and (always or not Path(marker).exists()):
                Path(marker).touch()
                os._exit(1)
            return u * u
        return work
    return make


@pytest.mark.slow
def test_ray_map_order_retry_and_dead_worker(ray_session, tmp_path):
    ex = RayExecutor(workers=2)
    seen = []
    assert ex.run([Job(_flaky_make(str(tmp_path / "m0"), -1, False), list(range(7)))],
                  on_result=lambda j, u, v: seen.append(u)) == [list(x * x for x in range(7))]
    assert seen == list(range(7))  # delivered in unit order
    # a worker that dies once: restarted, the unit retried (max_retries 1)
    got = RayExecutor(workers=2, retries=1).run([Job(_flaky_make(str(tmp_path / "m1"), 3, False), [1, 2, 3, 4])])
    assert got == [[1, 4, 9, 16]] and (tmp_path / "m1").exists()
    # one that always dies: one line naming the unit
    job = Job(_flaky_make(str(tmp_path / "m2"), 3, True), [1, 2, 3, 4], labels=[f"unit {u}" for u in (1, 2, 3, 4)])
    with pytest.raises(XlingError) as exc:
        RayExecutor(workers=2, retries=0).run([job])
    assert str(exc.value).startswith("unit 3: its Ray worker died (") and "\n" not in str(exc.value)
    assert "rerun to resume" in str(exc.value)
    # several jobs, more than the workers: all done, each job's results in order
    jobs = [Job(_flaky_make(str(tmp_path / "m3"), -1, False), list(range(k, k + 3))) for k in (0, 10, 20)]
    assert RayExecutor(workers=2).run(jobs) == [[0, 1, 4], [100, 121, 144], [400, 441, 484]]


@pytest.mark.slow
def test_ray_unit_error_names_the_unit(ray_session):
    def make():
        def work(u):
            if u == "bad":
                raise XlingError("sentence 1 tokenizes to nothing")
            return u
        return work

    with pytest.raises(XlingError, match=r"^align m, language bad: sentence 1 tokenizes to nothing$"):
        RayExecutor(workers=2).run([Job(make, ["ok", "bad"], ["align m, language ok", "align m, language bad"])])

    def make_fails():
        raise XlingError("model m: no .safetensors weights in /x")

    with pytest.raises(XlingError, match=r"^align m, language ok: model m: no .safetensors weights in /x$"):
        RayExecutor(workers=1).run([Job(make_fails, ["ok"], ["align m, language ok"])])


def _same_rows(a, b):
    assert [{k: v for k, v in r.items() if k != "value"} for r in a] == \
        [{k: v for k, v in r.items() if k != "value"} for r in b]
    got = torch.tensor([r["value"] for r in a], dtype=torch.float64)
    want = torch.tensor([r["value"] for r in b], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ray_align_matches_local(ray_session, tiny_model_dirs, tmp_path):
    from xling.recipes.align.run import align
    from xling.harness.store import ResultsStore

    model = str(tiny_model_dirs["xlmr"])
    kw = dict(model=model, corpus=_corpus(), progress=False, metrics=["mexa", "retrieval", "cka", "bitext_f1"])
    local = align(out=tmp_path / "local", store=tmp_path / "l.sqlite", cache=False, **kw)
    remote = align(out=tmp_path / "ray", store=tmp_path / "r.sqlite", cache=False, executor=RayExecutor(workers=2),
                   **kw)  # recomputed on the workers (--no-cache), which write over the entries
    _same_rows(remote.rows, local.rows)
    assert remote.langs == local.langs and remote.layers == local.layers
    assert remote.timings["languages_from_cache"] == 0 and remote.timings["model_loaded"]
    store = ResultsStore(tmp_path / "r.sqlite")
    assert [r["run_id"] for r in store.runs("align")] == [remote.run_id]
    assert len(store.alignment(remote.run_id)) == len(local.rows)
    assert (tmp_path / "ray" / "alignment.csv").read_text() == (tmp_path / "local" / "alignment.csv").read_text()
    # the workers wrote the cache: a rerun (local or Ray) reads every language, loading no weights
    again = align(out=None, store=None, executor=RayExecutor(workers=2), **kw)
    assert again.timings["languages_from_cache"] == 4 and not again.timings["model_loaded"]
    assert again.rows == remote.rows
    cached_local = align(out=None, store=None, **kw)
    assert cached_local.timings["languages_from_cache"] == 4
    _same_rows(cached_local.rows, local.rows)


@pytest.mark.slow
def test_ray_align_resumes_from_the_units_already_cached(ray_session, tiny_model_dirs, tmp_path, monkeypatch):
    from xling.recipes.align.run import align

    kw = dict(model=str(tiny_model_dirs["bert"]), corpus=_corpus(), progress=False, metrics=["mexa"],
              out=None, store=None)
    first = align(langs=["de"], executor=RayExecutor(workers=2), **kw)  # as if the run died after one language
    assert first.timings["languages_from_cache"] == 0
    full = align(executor=RayExecutor(workers=2), **kw)
    assert full.timings["languages_from_cache"] == 2  # the pivot and German
    _same_rows([r for r in full.rows if r["lang"] == "deu_Latn"], first.rows)
    # a model folder given by a relative path: the workers load it by its absolute path, and the cache
    # entries they write are keyed like the local run's
    monkeypatch.chdir(tiny_model_dirs["gpt2"].parent)
    kw["model"] = "gpt2"
    local = align(**kw)
    remote = align(executor=RayExecutor(workers=2), **kw)
    assert local.timings["languages_from_cache"] == 0 and remote.timings["languages_from_cache"] == 4
    assert remote.rows == local.rows and {r["model"] for r in remote.rows} == {"gpt2"}


@pytest.mark.slow
def test_ray_align_models_and_saved_embeddings_match_local(ray_session, tiny_model_dirs, tmp_path):
    from xling.recipes.align.run import align_models
    from xling.harness.saved_embeddings import read_saved_embeddings

    models = [str(tiny_model_dirs["bert"]), str(tiny_model_dirs["llama"])]
    kw = dict(corpus=None, progress=False, metrics=["mexa", "cka"], store=None, cache=False)
    flores = tmp_path / "flores"
    flores.mkdir()
    for k, sents in tiny_models.PARALLEL.items():
        (flores / f"{CODES[k]}.devtest").write_text("\n".join(sents) + "\n", encoding="utf-8")
    kw.pop("corpus")
    local = align_models(models, data=str(flores), out=tmp_path / "local", **kw)
    remote = align_models(models, data=str(flores), out=tmp_path / "ray", executor=RayExecutor(workers=2), **kw)
    for m in models:
        _same_rows(remote[m].rows, local[m].rows)
    assert (tmp_path / "ray" / "models.csv").read_text() == (tmp_path / "local" / "models.csv").read_text()
    from xling.recipes.align.run import align

    for name, ex in (("local", None), ("ray", RayExecutor(workers=2))):
        align(model=models[0], data=str(flores), out=None, save_embeddings=tmp_path / f"emb-{name}", executor=ex, **kw)
    index_l, emb_l = read_saved_embeddings(tmp_path / "emb-local")
    index_r, emb_r = read_saved_embeddings(tmp_path / "emb-ray")
    assert list(index_r["languages"]) == list(index_l["languages"]) == ["eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl"]
    for lang, e in emb_l.items():
        assert torch.allclose(emb_r[lang], e, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    from test_train import tiny_task

    from xling.harness.training import train_task

    torch.set_num_threads(1)
    task = tiny_task(n_train=24, n_dev=8, n_test=12)
    out = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path_factory.mktemp("trained") / "model", epochs=2,
                     lr=1e-2, batch_size=8, patience=0, progress=False, freeze_embeddings=False)
    return out, task


@pytest.mark.slow
def test_ray_eval_matches_local_and_resumes(ray_session, trained, tmp_path):
    from xling.recipes.eval.run import evaluate
    from xling.harness.store import ResultsStore

    out, task = trained
    kw = dict(model=str(out), task=task, progress=False)
    local = evaluate(out=tmp_path / "local", store=tmp_path / "l.sqlite", cache=False, **kw)
    remote = evaluate(out=tmp_path / "ray", store=tmp_path / "r.sqlite", cache=False,
                      executor=RayExecutor(workers=2), **kw)
    assert remote.rows == local.rows and remote.langs == local.langs and remote.n_examples == local.n_examples
    assert remote.timings["languages_from_cache"] == 0 and remote.timings["model_loaded"]
    assert (tmp_path / "ray" / "scores.csv").read_text() == (tmp_path / "local" / "scores.csv").read_text()
    store = ResultsStore(tmp_path / "r.sqlite")
    assert [r["run_id"] for r in store.runs("eval")] == [remote.run_id]
    # every language is cached now (the workers wrote the entries): nothing is sent to Ray, no weights read
    again = evaluate(out=None, store=None, executor=RayExecutor(workers=2), **kw)
    assert again.rows == local.rows and again.timings["languages_from_cache"] == 3
    assert not again.timings["model_loaded"]
    # resume: one language's entry lost (its worker died before writing it): only that one is predicted
    from xling.recipes.eval.run import PredictionCache

    entries = sorted(PredictionCache().root.rglob("*.json"))
    assert len(entries) == 3
    entries[0].unlink()
    resumed = evaluate(out=None, store=None, executor=RayExecutor(workers=2), **kw)
    assert resumed.rows == local.rows and resumed.timings["languages_from_cache"] == 2


@pytest.mark.slow
def test_cli_eval_and_align_with_ray(ray_session, trained, tiny_model_dirs, tmp_path, capsys):
    from test_train import write_tiny_jsonl

    out, task = trained
    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", task)
    common = ["--store", "none", "--quiet"]
    assert main(["eval", "--model", str(out), "--task", str(data), "--out", str(tmp_path / "l")] + common) == 0
    assert main(["eval", "--model", str(out), "--task", str(data), "--out", str(tmp_path / "r"), "--executor", "ray",
                 "--ray-workers", "2"] + common) == 0
    assert (tmp_path / "r" / "scores.csv").read_text() == (tmp_path / "l" / "scores.csv").read_text()
    flores = tmp_path / "flores"
    flores.mkdir()
    for k, sents in tiny_models.PARALLEL.items():
        (flores / f"{CODES[k]}.devtest").write_text("\n".join(sents) + "\n", encoding="utf-8")
    args = ["align", "--model", str(tiny_model_dirs["gpt2"]), "--data", str(flores), "--metrics", "mexa,cka",
            "--no-cache"] + common
    assert main(args + ["--out", str(tmp_path / "al")]) == 0
    assert main(args + ["--out", str(tmp_path / "ar"), "--executor", "ray"]) == 0
    assert (tmp_path / "ar" / "alignment.csv").read_text() == (tmp_path / "al" / "alignment.csv").read_text()
    capsys.readouterr()


@pytest.mark.slow
def test_ray_zero_shot_eval_matches_local(ray_session, tiny_model_dirs):
    from test_train import tiny_task

    from xling.recipes.eval.run import evaluate

    task = tiny_task(n_train=2, n_dev=2, n_test=5)
    kw = dict(model=str(tiny_model_dirs["llama"]), task=task, zero_shot=True, out=None, store=None, progress=False,
              cache=False)
    local = evaluate(**kw)
    remote = evaluate(executor=RayExecutor(workers=2), **kw)
    assert remote.rows == local.rows and remote.timings["model_loaded"]
