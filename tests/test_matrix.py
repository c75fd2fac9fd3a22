"""xling matrix: the source x target transfer matrix on a tiny model and a synthetic parallel task."""

import csv
import json

import numpy as np
import pytest
import torch

import tiny_models
from xling.errors import XlingError
from xling.methods.matrix import pair_alignment, token_overlap
from xling.methods.stats import cell_bootstrap
from xling.tasks.core import Example, Task

DOG = {"eng": "dog", "deu": "hund", "fra": "chien", "rus": "собака"}
CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}


def _parallel_task(name="tiny-dog-4"):
    """A parallel 2-class task in 4 languages (does the sentence mention a dog?), train/dev/test in each."""
    data = {"train": {}, "dev": {}, "test": {}}
    for k, code in CODES.items():
        exs = [Example(text=s, label=int(DOG[k] in s.split()), id=str(i)) for i, s in enumerate(tiny_models.PARALLEL[k])]
        data["train"][code] = exs * 3
        data["dev"][code] = exs
        data["test"][code] = exs
    return Task(name, "classification", ["no", "yes"], data)


def test_token_overlap_is_langranks_formula():
    assert token_overlap({1, 2, 3}, {2, 3, 4, 5}) == pytest.approx(2 / 7)
    assert token_overlap(set(), set()) == 0.0
    assert token_overlap({1}, {1}) == 0.5


def test_cell_bootstrap_is_paired_and_matches_a_direct_resample():
    rng = np.random.default_rng(1)
    ref = rng.random(50) < 0.6
    better = ref.copy()
    better[:10] = True  # never worse than the reference, item by item
    out = cell_bootstrap({"eng": {"x": ref}, "deu": {"x": better}}, "eng", n_boot=500, seed=3)
    assert out["deu"]["x"]["accuracy"] == pytest.approx(better.mean())
    assert out["deu"]["x"]["diff"] == pytest.approx(better.mean() - ref.mean())
    assert out["deu"]["x"]["diff_lo"] >= 0  # paired: every resample has deu >= eng
    assert "diff" not in out["eng"]["x"]
    # the same percentile bootstrap done by hand
    idx = np.random.default_rng(3).integers(0, 50, (500, 50))
    boots = ref[idx].mean(axis=1)
    assert out["eng"]["x"]["lo"] == pytest.approx(np.quantile(boots, 0.025))
    assert out["eng"]["x"]["hi"] == pytest.approx(np.quantile(boots, 0.975))


def test_pair_alignment_directions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 6, 4, generator=g)
    b = a.clone()
    b[:, 0] = b[:, 1]  # sentence 0 of b duplicates sentence 1: b->a retrieval ties at 0 and 1
    r = pair_alignment(a, b)
    assert r["retrieval_a2b"] == pytest.approx([4 / 6, 4 / 6])  # a0 and a1 both find a tie: strict misses
    assert len(r["mexa"]) == 2 and r["mexa"][0] <= min(r["retrieval_a2b"][0], r["retrieval_b2a"][0])
    with pytest.raises(XlingError, match="parallel"):
        pair_alignment(a, b[:, :5])


def test_matrix_on_a_tiny_model(tiny_model_dirs, tmp_path, one_thread):
    from xling.methods.probe import fit_logreg
    from xling.recipes.matrix.run import MatrixConfig, transfer_matrix
    from xling.harness.store import ResultsStore

    task = _parallel_task()
    folder = str(tiny_model_dirs["xlmr"])
    res = transfer_matrix(MatrixConfig(model=folder, task=task, out=tmp_path / "out", store=tmp_path / "r.sqlite",
                                       progress=False, l2=(0.1, 1.0), n_boot=200))
    langs = sorted(CODES.values())
    assert res.sources == langs and res.targets == langs and res.reference == "eng_Latn"
    # the cell equals an independent fit at the chosen layer and l2 on the same cached features
    from xling.engine.embed import EmbedConfig, embed_sentences
    from xling.models.loading import load_model

    lm = load_model(folder, device="cpu")
    p = res.probes["deu_Latn"]
    assert p["dev_accuracy"] == max(g["dev_accuracy"] for g in p["grid"]) and len(p["grid"]) == 2 * len(res.layers)
    emb = lambda exs: embed_sentences(lm, [e.text for e in exs], EmbedConfig(layers=(p["layer"],), max_length=128))[0]  # noqa
    clf = fit_logreg(emb(task.examples("train", "deu_Latn")),
                     torch.tensor([e.label for e in task.examples("train", "deu_Latn")]), 2, l2=p["l2"])
    gold = np.array([e.label for e in task.examples("test", "fra_Latn")])
    assert res.score("deu_Latn", "fra_Latn") == pytest.approx(float(
        (clf.predict(emb(task.examples("test", "fra_Latn"))).numpy() == gold).mean()))
    c = res.cells["deu_Latn"]["fra_Latn"]
    assert c["lo"] <= c["accuracy"] <= c["hi"]
    assert c["diff"] == pytest.approx(c["accuracy"] - res.score("eng_Latn", "fra_Latn"))
    # features: MEXA/retrieval best over layers, both pivots; overlap; sizes
    f = res.features["deu_Latn"]["fra_Latn"]
    assert f["mexa"] == pytest.approx(max(res.alignment["deu_Latn"]["fra_Latn"]["mexa"]))
    assert res.alignment["deu_Latn"]["fra_Latn"]["retrieval_src2tgt"] == res.alignment["fra_Latn"]["deu_Latn"]["retrieval_tgt2src"]
    assert f["source_train_examples"] == 24 and f["source_train_tokens"] > 0
    assert "mexa" not in res.features["deu_Latn"]["deu_Latn"]  # no alignment of a language with itself
    assert 0 <= f["token_overlap"] <= 0.5
    # outputs
    rows = list(csv.DictReader(open(tmp_path / "out" / "matrix.csv")))
    assert len(rows) == 16 and {"source", "target", "accuracy", "diff_lo"} <= set(rows[0])
    assert json.loads((tmp_path / "out" / "run.json").read_text())["matrix_id"] == res.matrix_id
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html and "Best source per target" in html
    store = ResultsStore(tmp_path / "r.sqlite")
    runs = store.runs("matrix")
    assert len(runs) == 4 and {r["config"]["source"] for r in runs} == set(langs)
    deu = next(r for r in runs if r["config"]["source"] == "deu_Latn")
    scores = {r["lang"]: r["value"] for r in store.task_scores(deu["run_id"]) if r["metric"] == "accuracy"}
    assert scores["fra_Latn"] == pytest.approx(res.score("deu_Latn", "fra_Latn"))
    assert deu["config"]["features"]["fra_Latn"]["token_overlap"] == pytest.approx(f["token_overlap"])
    assert {r["metric"] for r in store.alignment(deu["run_id"])} == {"mexa", "retrieval_src2tgt", "retrieval_tgt2src"}
    # each item's prediction per source and target: predictions.csv (condition = source) and the source's store run
    pred = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv", encoding="utf-8")))
    assert list(pred[0]) == ["condition", "item_id", "lang", "prediction", "label", "correct"]
    assert len(pred) == 4 * sum(len(task.examples("test", t)) for t in langs)
    mine = [r for r in pred if r["condition"] == "deu_Latn" and r["lang"] == "fra_Latn"]
    assert [r["item_id"] for r in mine] == [e.id for e in task.examples("test", "fra_Latn")]
    assert sum(int(r["correct"]) for r in mine) / len(mine) == pytest.approx(res.score("deu_Latn", "fra_Latn"))
    stored = {r["lang"]: r for r in store.predictions(deu["run_id"])}
    assert set(stored) == set(langs) and stored["fra_Latn"]["predictions"] == [r["prediction"] for r in mine]
    # a second run reads every embedding from the cache and gives the same matrix
    again = transfer_matrix(MatrixConfig(model=folder, task=task, out=None, store=None, progress=False,
                                         l2=(0.1, 1.0), n_boot=200))
    assert again.timings["cached_sets"] == again.timings["of_sets"]
    assert again.cells == res.cells


def test_matrix_one_layer_for_all_and_subsets(tiny_model_dirs, one_thread):
    from xling.recipes.matrix.run import MatrixConfig, transfer_matrix

    res = transfer_matrix(MatrixConfig(model=str(tiny_model_dirs["bert"]), task=_parallel_task(), sources=["en", "de"],
                                       targets=["fr", "ru"], layer=-1, l2=(1.0,), out=None, store=None, progress=False,
                                       n_boot=50))
    assert res.sources == ["eng_Latn", "deu_Latn"] and res.targets == ["fra_Latn", "rus_Cyrl"]
    assert {p["layer"] for p in res.probes.values()} == {res.layers[-1]}
    assert res.meta["layer_choice"] == "fixed hidden state -1"


def test_matrix_errors(tiny_model_dirs, tmp_path):
    from xling.recipes.matrix.run import MatrixConfig, transfer_matrix

    folder = str(tiny_model_dirs["bert"])
    with pytest.raises(XlingError, match="--method"):
        MatrixConfig(method="adapter")
    with pytest.raises(XlingError, match="--layer"):
        MatrixConfig(layer="middle")
    with pytest.raises(XlingError, match="is not in the train split"):
        transfer_matrix(MatrixConfig(model=folder, task=_parallel_task(), sources=["eng", "xho"], out=None,
                                     store=None, progress=False))
    one = _parallel_task()
    one.data["train"] = {"eng_Latn": one.data["train"]["eng_Latn"]}
    with pytest.raises(XlingError, match="training data in 1 language only"):
        transfer_matrix(MatrixConfig(model=folder, task=one, out=None, store=None, progress=False))
    with pytest.raises(XlingError, match="--layer 99"):
        transfer_matrix(MatrixConfig(model=folder, task=_parallel_task(), layer=99, out=None, store=None,
                                     progress=False))


def test_matrix_cli(tiny_model_dirs, tmp_path, capsys, one_thread):
    from xling.cli import main

    task = _parallel_task()
    path = task.save(tmp_path / "task.json")
    rc = main(["matrix", "--model", str(tiny_model_dirs["bert"]), "--task", str(path), "--l2", "1", "--n-boot", "50",
               "--out", str(tmp_path / "m"), "--store", str(tmp_path / "r.sqlite"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "src\\tgt" in out and "best source is not eng_Latn" in out
    rc = main(["matrix", "--model", str(tiny_model_dirs["bert"]), "--task", str(path), "--targets", "zz-notalang",
               "--store", "none", "--out", str(tmp_path / "m2"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("xling: error:") and len(err.strip().splitlines()) == 1


def test_matrix_lora_on_a_tiny_model(tiny_model_dirs, tmp_path, one_thread):
    from xling.recipes.matrix.run import MatrixConfig, transfer_matrix

    res = transfer_matrix(MatrixConfig(model=str(tiny_model_dirs["bert"]), task=_parallel_task(), method="lora",
                                       sources=["en", "de"], targets=["en", "de", "fr"], epochs=1, out=tmp_path / "m",
                                       store=None, progress=False, n_boot=50))
    assert set(res.cells) == {"eng_Latn", "deu_Latn"} and set(res.cells["deu_Latn"]) == {"eng_Latn", "deu_Latn", "fra_Latn"}
    folders = {p["model_folder"] for p in res.probes.values()}
    assert len(folders) == 2 and all((tmp_path / "m" / "models").exists() for _ in folders)
    # the cell is what xling eval's predictions of that fine-tuned model give
    from xling.recipes.eval.run import evaluate

    deu = res.probes["deu_Latn"]["model_folder"]
    ev = evaluate(model=deu, task=_parallel_task(), langs=["fr"], out=None, store=None, progress=False)
    assert ev.score("fra_Latn") == pytest.approx(res.score("deu_Latn", "fra_Latn"))
    again = transfer_matrix(MatrixConfig(model=str(tiny_model_dirs["bert"]), task=_parallel_task(), method="lora",
                                         sources=["en", "de"], targets=["fr"], epochs=1, out=tmp_path / "m",
                                         store=None, progress=False, n_boot=50))
    assert all(p["reused"] for p in again.probes.values())
    assert again.score("deu_Latn", "fra_Latn") == res.score("deu_Latn", "fra_Latn")


def test_matrix_report_escapes_everything():
    from xling.recipes.matrix.run import MatrixResult, render_matrix_report

    bad = '<script>alert("x")</script>'
    cell = {"accuracy": 0.5, "lo": 0.4, "hi": 0.6, "macro_f1": 0.5}
    res = MatrixResult(matrix_id=bad, model=bad, task=bad, method="probe", reference=bad, sources=[bad, "eng_Latn"],
                       targets=[bad, "fra_Latn"], cells={s: {t: dict(cell) for t in [bad, "fra_Latn"]}
                                                         for s in [bad, "eng_Latn"]},
                       features={}, alignment={}, probes={bad: {"layer": bad}, "eng_Latn": {"layer": 1}}, layers=[0],
                       n_test={}, timings={"x": bad}, meta={"layer_choice": bad})
    html = render_matrix_report(res)
    assert "<script" not in html and "&lt;script&gt;" in html
