"""Numbers that say how far they can be trusted: chance, ceilings, dev ties, retries, seeds (issue 18, item 3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from test_train import FAST, tiny_task, write_tiny_jsonl
from test_transfer import _texts, translated_task
from xling.recipes.transfer.run import TransferConfig, format_table, run_transfer

pytestmark = pytest.mark.usefixtures("one_thread")


def _chance_task():
    """The translated tiny task whose deu test set is one sentence, labelled alternately: every condition scores 0.5."""
    from xling.tasks.core import Example

    task = translated_task(n_train=16, n_dev=8, n_test=8)
    task.data["test"]["deu_Latn"] = [Example(text="die und eins", label=i % 2, id=f"c{i}") for i in range(40)]
    return task


@pytest.fixture(scope="module")
def chance_run(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("honest")
    cfg = TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de"], text=_texts(root / "text"),
                         conditions=["task", "add", "translate-train"], lang_steps=2, lang_batch_size=8,
                         task_epochs=1, task_lr=1e-2, bootstrap=200, lambdas=[1e-6, 0.0], out=root / "out",
                         store=None, progress=False)
    return cfg, run_transfer(cfg, task=_chance_task())


# ----------------------------------------------------------------------------- transfer: chance, ceiling, ties


def test_transfer_at_chance_names_no_best_condition(chance_run, capsys):
    cfg, res = chance_run
    assert all(res.mean(c) == 0.5 for c in res.conditions)
    assert any(w.startswith("every condition is within noise of chance (1/2 = 0.500") and "no best condition" in w
               for w in res.warnings)
    assert all(s["at_chance"] for s in res.summary)
    html = (Path(cfg.out) / "report.html").read_text()
    assert "every condition is within noise of chance" in html and "Best condition" not in html
    assert "warning: every condition is within noise of chance" in format_table(res)
    assert json.loads((Path(cfg.out) / "run.json").read_text())["warnings"] == res.warnings


def test_transfer_ceiling_not_above_reference_warns(chance_run):
    cfg, res = chance_run
    w = [x for x in res.warnings if x.startswith("the ceiling translate-train")]
    assert len(w) == 1 and "not above the reference task" in w[0] and "95% CI" in w[0]
    assert "the ceiling translate-train" in (Path(cfg.out) / "report.html").read_text()


def test_transfer_dev_tie_is_reported_and_broken_by_the_smallest_lambda(chance_run):
    cfg, res = chance_run
    (c,) = [c for c in res.choices if c["condition"] == "add"]
    assert c["candidates"][0]["dev"] == c["candidates"][1]["dev"]  # lambda 1e-6 and 0 predict alike
    assert c["tied"] == [1e-6, 0.0] and c["chosen"] == 0.0  # not the first listed
    assert any("dev tie" in n and "chose 0" in n and "smallest lambda" in n for n in res.notes)
    assert "dev tie" in format_table(res)


def test_pick_on_dev_tie_rules():
    from xling.recipes.transfer.run import pick_on_dev

    assert pick_on_dev([(0.5, 2.0), (0.7, 1.0), (0.7, 0.25), (0.6, 0.5)], "lambda") == (0.25, [1.0, 0.25])
    assert pick_on_dev([(0.5, 2.0), (0.7, 1.0)], "lambda") == (1.0, [1.0])
    # layer swap: fewest layers from the language module (b + t + 2w), then the smaller bottom
    assert pick_on_dev([(0.8, (2, 1, 1)), (0.8, (3, 1, 0)), (0.8, (2, 2, 0)), (0.1, (1, 1, 0))], "swap") == \
        ((2, 2, 0), [(2, 1, 1), (3, 1, 0), (2, 2, 0)])


def test_honesty_warnings_only_when_the_numbers_say_so():
    from xling.methods.stats import bootstrap_study
    from xling.recipes.transfer.run import honesty_warnings

    rng = np.random.default_rng(0)

    def draws(p, n=60):
        return [[int(x) for x in rng.random(n) < p]]

    def run(correct):
        st = bootstrap_study(correct, "task", "tt", 300, seed=1)
        summary = [{"condition": c, "reference": "task", "ceiling": "tt",
                    "mean_target_accuracy": np.mean(correct[c][0]),
                    **{k: st[c][k] for k in ("delta", "delta_lo", "delta_hi")}} for c in correct]
        return honesty_warnings(summary, correct, 2)

    good = run({"task": draws(0.75), "m": draws(0.8), "tt": [[1] * 60]})
    assert good == []
    low = run({"task": draws(0.9), "m": draws(0.8), "tt": draws(0.6)})
    assert len(low) == 1 and low[0].startswith("the ceiling tt")
    flat = run({"task": [[0, 1] * 30], "m": [[1, 0] * 30], "tt": [[1, 1, 0, 0] * 15]})
    assert any(w.startswith("every condition is within noise of chance") for w in flat)


# ----------------------------------------------------------------------------- transfer: the chance-retry


@pytest.mark.parametrize("devs,kept_lr", [((0.5, 0.45, 0.4), 1e-2), ((0.3, 0.5, 0.4), 5e-3)])
def test_chance_retry_keeps_the_best_attempt(tiny_model_dirs, tmp_path, monkeypatch, capsys, devs, kept_lr):
    import xling.harness.training as mt

    real = mt.train_task_module
    calls = []

    def fake(*args, **kw):  # every training "diverges", each with the next dev score of devs
        out = real(*args, **kw)
        f = Path(out) / "xling_train.json"
        info = json.loads(f.read_text())
        info["best_dev"] = devs[len(calls)]
        calls.append(kw["lr"])
        f.write_text(json.dumps(info))
        return out

    monkeypatch.setattr(mt, "train_task_module", fake)
    task = tiny_task(n_train=16, n_dev=4, n_test=8)
    res = run_transfer(TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de"],
                                      conditions=["task"], task_lr=1e-2, bootstrap=0, out=tmp_path / "o",
                                      store=None, progress=False), task=task)
    assert calls == [1e-2, 5e-3, 2.5e-3]
    assert res.modules["task"]["lr"] == kept_lr and res.modules["task"]["best_dev"] == max(devs)
    assert "kept the attempt at learning rate" in capsys.readouterr().err
    assert not list((tmp_path / "o" / "modules").glob(".*"))  # no attempt left behind


# ----------------------------------------------------------------------------- train


def test_train_at_chance_warns_and_records_it(tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main

    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", tiny_task(n_train=16, n_dev=16, n_test=4))
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--epochs", "1",
               "--lr", "1e-9", "--batch-size", "8", "--patience", "0", "--out", str(tmp_path / "m"), "--quiet"])
    assert rc == 0
    info = json.loads((tmp_path / "m" / "xling_train.json").read_text())
    from xling.methods.stats import wilson_interval

    lo, hi = wilson_interval(info["best_dev"] * 16, 16)
    assert lo <= 0.5 <= hi
    assert len(info["warnings"]) == 1 and "within noise of chance (1/2 = 0.500" in info["warnings"][0]
    err = capsys.readouterr().err
    assert err.count("xling: warning:") == 1 and "within noise of chance" in err


def test_train_that_learned_does_not_warn(tiny_model_dirs, tmp_path):
    from xling.harness.training import train_task

    out = train_task(str(tiny_model_dirs["bert"]), tiny_task(), out=tmp_path / "m", epochs=4, seed=3, **FAST)
    info = json.loads((out / "xling_train.json").read_text())
    assert info["best_dev"] == 1.0 and info["warnings"] == []


def test_wilson_interval_matches_the_formula():
    from xling.methods.stats import at_chance, mean_sd, wilson_interval

    z = 1.959963984540054
    p, n = 0.6, 50
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(30, 50) == pytest.approx((c - h, c + h))
    assert at_chance(0.6, 50, 2) and not at_chance(0.6, 500, 2) and not at_chance(0.9, 50, 2)
    assert at_chance(0.3, 30, 3) and not at_chance(0.8, 30, 3)
    assert mean_sd([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1, 2, 4], ddof=1)))


def test_train_seeds_one_model_per_seed_and_the_spread(tiny_model_dirs, tmp_path, capsys):
    from safetensors.torch import load_file

    from xling.cli import main

    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", tiny_task(n_train=16, n_dev=16, n_test=4))
    out = tmp_path / "m"
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--epochs", "1",
               "--lr", "1e-2", "--batch-size", "8", "--patience", "0", "--train-embeddings", "--seeds", "0,1",
               "--out", str(out), "--quiet"])
    assert rc == 0
    devs = {}
    for s in (0, 1):
        info = json.loads((out / f"seed-{s}" / "xling_train.json").read_text())
        assert info["hparams"]["seed"] == s
        devs[s] = info["best_dev"]
    w0, w1 = (load_file(str(out / f"seed-{s}" / "model.safetensors")) for s in (0, 1))
    assert not all(np.array_equal(w0[k].numpy(), w1[k].numpy()) for k in w0)  # the seeds trained differently
    (row,) = list(csv.DictReader((out / "seeds.csv").open()))
    assert float(row["best_dev_seed0"]) == pytest.approx(devs[0])
    assert float(row["best_dev_seed1"]) == pytest.approx(devs[1])
    assert float(row["best_dev"]) == pytest.approx(np.mean(list(devs.values())))
    assert float(row["best_dev_sd"]) == pytest.approx(np.std(list(devs.values()), ddof=1), abs=1e-6)
    printed = capsys.readouterr().out
    assert "seed 0" in printed and "seed 1" in printed and "± sd" in printed
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--seeds", "0,x",
               "--out", str(tmp_path / "bad")])
    assert rc == 2 and "--seeds" in capsys.readouterr().err and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- probe


def test_probe_seeds_resample_the_training_set_and_report_the_spread(tiny_model_dirs, tmp_path, capsys):
    from test_probe import _tiny_task

    from xling.cli import main
    from xling.recipes.probe.run import ProbeConfig, probe, training_sample

    task = _tiny_task()
    data = write_tiny_jsonl(tmp_path / "dog.jsonl", task)
    out = tmp_path / "p"
    rc = main(["probe", "--model", str(tiny_model_dirs["gemma3"]), "--task", str(data), "--l2", "0.1,1",
               "--seeds", "0,1", "--out", str(out), "--store", "none", "--quiet"])
    assert rc == 0
    runs = {s: json.loads((out / f"seed-{s}" / "run.json").read_text()) for s in (0, 1)}
    assert runs[0]["probe"]["seed"] == 0 and runs[0]["probe"]["sample"] == "bootstrap"
    assert runs[0]["probe"]["sample_hash"] != runs[1]["probe"]["sample_hash"]  # another training sample per seed
    n = len(task.examples("train", "eng_Latn"))
    assert runs[0]["probe"]["distinct_train"] == len(set(training_sample(n, None, 0).tolist())) < n
    rows = {r["lang"]: r for r in csv.DictReader((out / "seeds.csv").open())}
    assert set(rows) == {"deu_Latn", "eng_Latn", "fra_Latn", "dev:eng_Latn"}
    # the seed's row is what the probe with that seed scores, computed again on its own
    again = probe(ProbeConfig(model=str(tiny_model_dirs["gemma3"]), task=task, l2=(0.1, 1.0), seed=1, out=None,
                              store=None, progress=False))
    for lang in ("deu_Latn", "fra_Latn"):
        accs = [float(rows[lang][f"accuracy_seed{s}"]) for s in (0, 1)]
        assert accs[1] == pytest.approx(again.score(lang))
        assert float(rows[lang]["accuracy"]) == pytest.approx(np.mean(accs))
        assert float(rows[lang]["accuracy_sd"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-6)
        assert float(rows[lang]["accuracy_lo"]) <= float(rows[lang]["accuracy"]) <= float(rows[lang]["accuracy_hi"])
    assert "Wilson" in capsys.readouterr().out
    # a subset per seed with --max-train; no seed: the first examples, as before
    assert len(training_sample(n, 5, 3)) == 5 and training_sample(n, 5, None) is None
    assert not np.array_equal(training_sample(n, 5, 3).numpy(), training_sample(n, 5, 4).numpy())


# ----------------------------------------------------------------------------- transfer and matrix seeds


def test_transfer_seeds_train_every_module_per_seed_and_report_the_spread(tiny_model_dirs, tmp_path):
    from safetensors.torch import load_file

    from xling.recipes.transfer.run import format_seeds, run_transfer_seeds

    cfg = TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de"], text=_texts(tmp_path / "text"),
                         conditions=["task", "add"], lang_steps=2, lang_batch_size=8, task_epochs=1, task_lr=1e-2,
                         bootstrap=100, lambdas=[1.0], out=tmp_path / "out", store=None, progress=False)
    done, rows = run_transfer_seeds(cfg, [0, 1], task=translated_task(n_train=16, n_dev=8, n_test=16))
    assert [s for s, _ in done] == [0, 1] and [r.config["seed"] for _, r in done] == [0, 1]
    for role in ("task", "lang:deu_Latn"):  # every module is trained again, with the seed
        a, b = (Path(r.modules[role]["path"]) for _, r in done)
        assert a.parent.parent.name == "seed-0" and b.parent.parent.name == "seed-1"
        wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
        assert not all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    by = {r["condition"]: r for r in rows}
    for cond in ("task", "add"):
        means = [next(x for x in r.summary if x["condition"] == cond)["mean_target_accuracy"] for _, r in done]
        assert by[cond]["mean_target_accuracy"] == pytest.approx(np.mean(means), abs=1e-6)
        assert by[cond]["mean_target_accuracy_sd"] == pytest.approx(np.std(means, ddof=1), abs=1e-6)
    los = [next(x for x in r.summary if x["condition"] == "add")["delta_lo"] for _, r in done]
    assert by["add"]["delta_lo"] == pytest.approx(np.mean(los), abs=1e-6)
    assert "delta_lo" not in by["task"]  # the reference has no interval
    csv_rows = {r["condition"]: r for r in csv.DictReader((tmp_path / "out" / "seeds.csv").open())}
    assert set(csv_rows) == {"task", "add"} and "delta_sd" in csv_rows["add"]
    text = format_seeds(done, rows)
    assert "seed 0" in text and "seed 1" in text and "mean 95% bootstrap CI" in text


def test_seeds_flag_errors(tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main
    from xling.harness.seeds import parse_seeds

    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds(None) is None
    for bad in ("1,1", "a", "", "-1"):
        with pytest.raises(Exception, match="--seeds"):
            parse_seeds(bad)
    for cmd in ("transfer", "probe"):
        rc = main([cmd, "--seeds", "0,0", "--out", str(tmp_path / cmd)])
        assert rc == 2 and "--seeds" in capsys.readouterr().err and not (tmp_path / cmd).exists()


def test_matrix_seeds_retrain_per_seed_and_report_the_spread(tiny_model_dirs, tmp_path, capsys):
    from test_matrix import _parallel_task

    from xling.cli import main

    data = write_tiny_jsonl(tmp_path / "par.jsonl", _parallel_task())
    out = tmp_path / "mx"
    rc = main(["matrix", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--method", "lora",
               "--sources", "en", "--targets", "en,de", "--epochs", "1", "--n-boot", "50", "--seeds", "0,1",
               "--out", str(out), "--store", "none", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    cells = {s: {(r["source"], r["target"]): r for r in csv.DictReader((out / f"seed-{s}" / "matrix.csv").open())}
             for s in (0, 1)}
    rows = list(csv.DictReader((out / "seeds.csv").open()))
    assert {(r["source"], r["target"]) for r in rows} == set(cells[0])
    for r in rows:
        accs = [float(cells[s][(r["source"], r["target"])]["accuracy"]) for s in (0, 1)]
        assert float(r["accuracy"]) == pytest.approx(np.mean(accs), abs=1e-5)
        assert float(r["accuracy_sd"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-5)
    assert "seed 1" in capsys.readouterr().out
    rc = main(["matrix", "--seeds", "0,1", "--out", str(tmp_path / "p")])
    assert rc == 2 and "--seeds needs --method lora or full" in capsys.readouterr().err
