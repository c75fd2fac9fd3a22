"""Evaluation on every language: invariance, resume, outputs, the transfer gap, CLI, errors."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
import torch

from test_train import tiny_task, write_tiny_jsonl
from xling.cli import main
from xling.errors import XlingError
from xling.harness.training import train_task
from xling.modules.trained import load_trained
from xling.recipes.eval import run as ev
from xling.recipes.eval.run import EvalConfig, evaluate, transfer_gap
from xling.tasks.encode import encode, pad_id, predict_logits


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def tiny_model_dirs(tiny_model_dirs, tiny_causal_dirs):
    """Here the tiny decoders are scored or generated from: saved with their LM heads (an untied head missing from a
    folder is refused, never initialised at random)."""
    return {**tiny_model_dirs, **tiny_causal_dirs}



@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    """A tiny BERT fine-tuned on the tiny task (shared by the tests of this module)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    task = tiny_task()
    out = train_task(str(tiny_model_dirs["bert"]), task, out=root / "model", epochs=4, lr=1e-2, batch_size=8,
                     patience=0, progress=False, freeze_embeddings=False)
    return out, task


def test_predictions_do_not_depend_on_batch_size(trained):
    out, task = trained
    tm = load_trained(out)
    exs = [e for lang in task.langs("test") for e in task.examples("test", lang)]
    enc = encode(tm.tokenizer, "classification", exs, 128)
    ref = predict_logits(tm.model, enc, pad_id(tm.tokenizer), batch_size=1)
    for bs in (3, 7, 64):
        got = predict_logits(tm.model, enc, pad_id(tm.tokenizer), batch_size=bs)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref, got))
    cfg = dict(model=str(out), out=None, store=None, progress=False, cache=False)
    r1 = evaluate(EvalConfig(batch_size=1, **cfg), task=task)
    r64 = evaluate(EvalConfig(batch_size=64, **cfg), task=task)
    assert r1.rows == r64.rows


def test_outputs_gap_and_store(trained, tmp_path):
    out, task = trained
    store = tmp_path / "r.sqlite"
    res = evaluate(model=str(out), task=task, out=tmp_path / "eval", store=store, progress=False)
    assert res.source == "eng_Latn" and res.langs[0] == "eng_Latn"
    acc = res.scores("accuracy")
    # the gap, computed independently
    assert res.gap()["gap"] == pytest.approx(acc["eng_Latn"] - (acc["deu_Latn"] + acc["fra_Latn"]) / 2)
    assert transfer_gap({"a": 0.9, "b": 0.5, "c": 0.7}, "a") == pytest.approx(
        {"source": 0.9, "mean_target": 0.6, "gap": 0.3, "n_targets": 2})
    # accuracy is right: recompute from the saved model
    from xling.tasks.encode import predict

    tm = load_trained(out)
    exs = task.examples("test", "fra_Latn")
    preds = predict(tm.model, tm.tokenizer, "classification", exs)
    assert acc["fra_Latn"] == pytest.approx(sum(p == e.label for p, e in zip(preds, exs)) / len(exs))
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"scores.csv", "per_language.csv", "report.html", "run.json"} <= files
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "transfer gap" in html and "<svg" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    with open(tmp_path / "eval" / "per_language.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["lang"] for r in rows} == {"eng_Latn", "deu_Latn", "fra_Latn"} and "macro_f1" in rows[0]
    con = sqlite3.connect(store)
    n = con.execute("SELECT COUNT(*) FROM task_scores WHERE run_id=?", (res.run_id,)).fetchone()[0]
    assert n == 6  # 3 languages x (accuracy, macro_f1)
    assert con.execute("SELECT command FROM runs").fetchone()[0] == "eval"
    run = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert run["transfer_gap"]["gap"] == pytest.approx(res.gap()["gap"])


def test_report_shows_alignment_of_the_base_model(trained, tiny_model_dirs, tmp_path):
    from xling.recipes.align.run import align
    from xling.tasks.provider import task_corpus

    out, task = trained
    store = tmp_path / "r.sqlite"
    align(model=str(tiny_model_dirs["bert"]), corpus=task_corpus(task), metrics=["mexa"], store=store, out=None,
          progress=False, max_sentences=None)
    # a third language so that a correlation can be shown
    task.data["test"]["rus_Latn"] = task.data["test"]["fra_Latn"]
    try:
        res = evaluate(model=str(out), task=task, out=tmp_path / "eval", store=store, progress=False)
    finally:
        del task.data["test"]["rus_Latn"]
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Alignment vs accuracy" in html
    assert res.base_model == str(tiny_model_dirs["bert"])


def test_resume_after_interruption(trained, monkeypatch):
    out, task = trained
    calls = []
    real = ev._Model.predict

    def flaky(self, examples, progress):
        calls.append(len(examples))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, examples, progress)

    monkeypatch.setattr(ev._Model, "predict", flaky)
    cfg = EvalConfig(model=str(out), out=None, store=None, progress=False)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg, task=task)
    assert len(calls) == 2
    res = evaluate(cfg, task=task)  # resumes: the first language is cached
    assert len(calls) == 4 and res.timings["languages_from_cache"] == 1
    monkeypatch.setattr(ev._Model, "predict", real)
    again = evaluate(cfg, task=task)
    assert again.timings["languages_from_cache"] == 3 and not again.timings["model_loaded"]
    assert again.rows == res.rows


def test_zero_shot_decoder(tiny_model_dirs, tmp_path):
    task = tiny_task(n_train=2, n_dev=2, n_test=5)
    res = evaluate(model=str(tiny_model_dirs["llama"]), task=task, zero_shot=True, out=None, store=None,
                   progress=False, batch_size=4)
    assert set(res.scores()) == {"eng_Latn", "deu_Latn", "fra_Latn"}
    with pytest.raises(XlingError, match="needs a decoder"):
        evaluate(model=str(tiny_model_dirs["bert"]), task=task, zero_shot=True, out=None, store=None, progress=False)


def test_eval_errors(trained, tmp_path):
    out, task = trained
    with pytest.raises(XlingError, match="trained model not found"):
        evaluate(model=str(tmp_path / "nope"), task=task, out=None, store=None, progress=False)
    other = tiny_task()
    other.labels = ["x", "y"]
    with pytest.raises(XlingError, match="trained with labels"):
        evaluate(model=str(out), task=other, out=None, store=None, progress=False)
    with pytest.raises(XlingError, match="not in the test split"):
        evaluate(model=str(out), task=task, langs=["rus"], out=None, store=None, progress=False)
    with pytest.raises(XlingError, match="batch-size must be at least 1"):
        EvalConfig(batch_size=0)


def test_cli_train_eval_end_to_end(tiny_model_dirs, tmp_path, capsys):
    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", tiny_task())
    model = tmp_path / "m"
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--out", str(model),
               "--epochs", "3", "--lr", "1e-2", "--batch-size", "8", "--train-embeddings", "--threads", "1", "--quiet"])
    assert rc == 0 and (model / "xling_train.json").is_file()
    rc = main(["eval", "--model", str(model), "--task", str(data), "--out", str(tmp_path / "ev"),
               "--store", str(tmp_path / "r.sqlite"), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "transfer gap" in text and "deu_Latn" in text
    assert (tmp_path / "ev" / "report.html").is_file()
    rc = main(["task", "--task", str(data), "--show", "1"])
    assert rc == 0 and "labels: animal, color" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["task", "--task", "nope"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("xling: error: unknown task 'nope'") and err.count("\n") == 1
    # eval checks --model before it loads the task (a task build may take many minutes)
    rc = main(["eval", "--model", str(tmp_path / "none"), "--task", "nope", "--store", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("xling: error: trained model not found") and err.count("\n") == 1
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x", "lang": "en"}\n')
    rc = main(["train", "--task", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "t.jsonl:1: no split" in err
    rc = main(["train", "--task", "libreoffice-topic", "--task-option", "bogus=1", "--quiet"])
    assert rc == 2 and "task libreoffice-topic has no option 'bogus'" in capsys.readouterr().err
