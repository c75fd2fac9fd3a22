"""xling transfer: the modular transfer experiment on a tiny model and task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_train import TR, tiny_task
from xling.errors import XlingError
from xling.methods.stats import paired_bootstrap
from xling.recipes.transfer.run import CONDITIONS, TransferConfig, format_table, run_transfer


pytestmark = pytest.mark.usefixtures("one_thread")


def _texts(root: Path) -> str:
    """Monolingual text per language of the tiny task (its test sentences are not in it)."""
    task = tiny_task(n_train=40, n_dev=0, n_test=0, seed=7)
    en = [e.text for e in task.data["train"]["eng_Latn"]]
    root.mkdir(parents=True, exist_ok=True)
    (root / "eng_Latn.txt").write_text("\n".join(en), encoding="utf-8")
    for lg, m in TR.items():
        (root / f"{lg}_Latn.txt").write_text("\n".join(" ".join(m[w] for w in s.split()) for s in en), encoding="utf-8")
    return str(root / "{lang}.txt")


def translated_task(n_train=32, n_dev=8, n_test=24, seed=0):
    """The tiny task with gold translations of train and dev in deu/fra (translate-train possible)."""
    from xling.tasks.core import Example

    task = tiny_task(n_train=n_train, n_dev=n_dev, n_test=n_test, seed=seed)
    for split in ("train", "dev"):
        for lg, m in TR.items():
            task.data[split][f"{lg}_Latn"] = [Example(text=" ".join(m[w] for w in e.text.split()), label=e.label,
                                                      id=e.id) for e in task.data[split]["eng_Latn"]]
    return task


def _pairs_file(root: Path) -> str:
    """A parallel TSV (eng, deu, fra) of other sentences of the tiny vocabulary, for the alignment loss."""
    other = tiny_task(n_train=60, n_dev=0, n_test=0, seed=11)
    lines = ["eng\tdeu\tfra"]
    for e in other.data["train"]["eng_Latn"]:
        ws = e.text.split()
        lines.append("\t".join([e.text, *(" ".join(TR[lg][w] for w in ws) for lg in ("deu", "fra"))]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(root / "pairs.tsv")


@pytest.fixture(scope="module")
def experiment(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    task = translated_task()
    cfg = TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de", "fr"], text=_texts(root / "text"),
                         lang_steps=3, lang_batch_size=8, task_epochs=1, task_lr=1e-2, bootstrap=200,
                         lambdas=[0.5, 1.0], align_data=_pairs_file(root / "pairs"), align_layer=2,
                         align_drop_overlap=True, out=root / "out", store=root / "results.sqlite", progress=False)
    return cfg, task, run_transfer(cfg, task=task)


def test_every_condition_is_scored_on_every_target(experiment):
    cfg, task, res = experiment
    assert res.source == "eng_Latn" and res.targets == ["deu_Latn", "fra_Latn"]
    assert res.conditions == [c for c in CONDITIONS if c != "translate-test"]  # that one needs --translate-test
    for c in (CONDITIONS[n] for n in res.conditions):
        for t in res.targets:
            assert 0.0 <= res.score(c.name, t) <= 1.0
        if not c.per_target:
            assert 0.0 <= res.score(c.name, "eng_Latn") <= 1.0
        else:
            with pytest.raises(KeyError):
                res.score(c.name, "eng_Latn")
    assert set(res.modules) == {"lang:eng_Latn", "lang:deu_Latn", "lang:fra_Latn", "task", "task@src", "task+align",
                                "tt:deu_Latn", "tt:fra_Latn"}
    assert res.modules["task+align"]["alignment"]["layer"] == 2 and res.modules["task+align"]["alignment"]["steps"] > 0
    out = Path(cfg.out)
    for f in ("transfer.csv", "summary.csv", "report.html", "run.json"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    assert "layer-swap" in html and "German" in html
    table = format_table(res)
    assert "mean tgt" in table and "stack" in table
    summary = {s["condition"]: s for s in res.summary}
    assert summary["task"]["delta"] == 0.0 and summary["task"]["delta_lo"] is None
    ceiling = res.mean("translate-train") - res.mean("task")
    for s in res.summary[1:]:
        assert s["delta_lo"] <= s["delta"] <= s["delta_hi"]
        assert s["delta"] == pytest.approx(res.mean(s["condition"]) - res.mean("task"), abs=1e-9)
        if ceiling > 0:
            assert s["gap_closed"] == pytest.approx(s["delta"] / ceiling, abs=1e-6)
        else:
            assert s["gap_closed"] is None
    for r in res.rows:
        if r["role"] == "target" and r["condition"] != "task":
            assert r["delta_lo"] <= r["delta"] <= r["delta_hi"]
            assert r["delta"] == pytest.approx(r["accuracy"] - res.score("task", r["lang"]), abs=1e-6)
    chosen = {(c["condition"], c["lang"]) for c in res.choices}
    assert chosen == {(c, t) for c in ("add", "add-swap", "layer-swap") for t in res.targets}
    for c in res.choices:
        assert c["split"] == "dev:eng_Latn" and len(c["candidates"]) == 2
    from xling.harness.store import ResultsStore

    runs = ResultsStore(cfg.store).runs("transfer")
    assert runs and runs[-1]["run_id"] == res.run_id
    # each test item's prediction per condition and language: predictions.csv and the store, read by consistency
    import csv

    pred = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert list(pred[0]) == ["condition", "item_id", "lang", "prediction", "label", "correct"]
    for c in ("task", "stack"):
        for t in res.targets:
            mine = [r for r in pred if r["condition"] == c and r["lang"] == t]
            assert [r["item_id"] for r in mine] == [e.id for e in task.examples("test", t)]
            assert sum(int(r["correct"]) for r in mine) / len(mine) == pytest.approx(res.score(c, t))
    from xling.harness.consistency import load_run_predictions

    got = load_run_predictions(cfg.store, res.run_id, "task")
    assert set(got.records) == {res.source, *res.targets} and set(got.conditions) == set(res.conditions)


def test_in_memory_compositions_equal_compose_then_eval(experiment, tmp_path):
    """stack / add / layer-swap / baselines, as run in memory, equal `xling compose` (a LoRA
    carrying the task head) followed by `xling eval` on that folder; src-lang equals plain
    `xling eval` of the MAD-X task module (which re-applies the language module it was trained on)."""
    from xling.modules.apply import compose_to_lora
    from xling.recipes.eval.run import evaluate

    cfg, task, res = experiment
    m = {role: Path(info["path"]) for role, info in res.modules.items()}
    lang = "deu_Latn"
    pick = {(c["condition"], c["lang"]): c["chosen"] for c in res.choices}
    lam = pick[("add-swap", lang)]
    b, t, w = pick[("layer-swap", lang)]
    cases = {
        "stack": ("stack", [m["task@src"], m["lang:deu_Latn"]], None, None),
        "madx2": ("madx2", [m["task@src"], m["lang:deu_Latn"]], None, None),
        "add-swap": ("add", [m["task"], m["lang:deu_Latn"], m["lang:eng_Latn"]], [1.0, lam, -lam], None),
        "layer-swap": ("layer_swap", [m["task"], m["lang:deu_Latn"]], None, {"bottom": b, "top": t, "transition": w}),
        "src-lang": ("stack", [m["task@src"], m["lang:eng_Latn"]], None, None),
        "lang-expert": ("add", [m["task"], m["lang:deu_Latn"]], [0.0, 1.0], None),
        "translate-train": ("add", [m["tt:deu_Latn"]], None, None),
        "align": ("add", [m["task+align"]], None, None),
    }
    for name, (method, inputs, weights, options) in cases.items():
        out = compose_to_lora(inputs, method, weights, options, out=tmp_path / name, num_layers=3)
        assert out.overall_error < 1e-5
        assert (tmp_path / name / "head.safetensors").is_file()
        ev = evaluate(model=str(tmp_path / name), task=task, langs=[lang], out=None, store=None, cache=False,
                      progress=False)
        assert ev.score(lang, "accuracy") == pytest.approx(res.score(name, lang)), name
    direct = evaluate(model=str(m["task@src"]), task=task, langs=[lang], out=None, store=None, cache=False,
                      progress=False)
    assert direct.score(lang, "accuracy") == pytest.approx(res.score("src-lang", lang))
    from xling.modules.apply import compose_to_merged

    merged = compose_to_merged([m["task@src"], m["lang:deu_Latn"]], "stack", base=cfg.model, out=tmp_path / "merged")
    assert any("task head" in n for n in merged.notes)
    ev = evaluate(model=str(tmp_path / "merged"), task=task, langs=[lang], out=None, store=None, cache=False,
                  progress=False)
    assert ev.score(lang, "accuracy") == pytest.approx(res.score("stack", lang))


def test_composition_with_head_keeps_logits_exact(experiment, tmp_path):
    """The logits of compose->eval equal a dense reference: base + head, LoRA deltas added by hand."""
    from safetensors.torch import load_file

    from xling.methods.train import build_task_model
    from xling.modules.trained import load_trained
    from xling.modules.apply import compose_to_lora
    from xling.modules.lora import LoraModule

    cfg, task, res = experiment
    m = {role: Path(info["path"]) for role, info in res.modules.items()}
    out = compose_to_lora([m["task"], m["lang:fra_Latn"]], "add", [1.0, 0.5], out=tmp_path / "c")
    assert out.overall_error < 1e-6
    tm = load_trained(tmp_path / "c", device="cpu")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model)
    ref = build_task_model(cfg.model, "classification", task.labels, tok)
    ref.load_state_dict(load_file(str(m["task"] / "head.safetensors")), strict=False)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for coef, folder in ((1.0, m["task"]), (0.5, m["lang:fra_Latn"])):
            mod = LoraModule(folder)
            for name in mod.targets:
                key = name + ".weight" if name + ".weight" in params else "bert." + name + ".weight"
                params[key] += coef * mod.delta(name)
    batch = tok(["a b c", "x y"], return_tensors="pt", padding=True)
    ref.eval(), tm.model.eval()
    with torch.no_grad():
        assert torch.allclose(tm.model(**batch).logits, ref(**batch).logits, atol=1e-5)


def test_second_run_reuses_modules_and_predictions(experiment):
    cfg, task, res = experiment
    again = run_transfer(cfg, task=task)
    assert all(info["reused"] for info in again.modules.values())
    assert again.rows == res.rows
    assert again.timings["modules_trained"] == 0
    assert res.timings["predicted"] == res.timings["examples"] > 0
    # (each test has its own XLING_CACHE: the fixture's predictions are not visible here)
    resumed = run_transfer(cfg, task=task)
    assert resumed.timings["predicted"] == 0 and resumed.rows == res.rows
    import shutil

    copy = Path(cfg.out).parent / "modules-copy"
    shutil.copytree(Path(cfg.out) / "modules", copy)
    changed = TransferConfig(**{**cfg.__dict__, "lang_steps": 4, "conditions": ["stack"], "modules_dir": copy,
                                "out": Path(cfg.out).parent / "out-changed"})
    third = run_transfer(changed, task=task)
    assert set(third.modules) == {"lang:eng_Latn", "lang:deu_Latn", "lang:fra_Latn", "task@src"}
    assert not any(info["reused"] for info in third.modules.values())  # task@src sits on a retrained module
    assert third.conditions == ["stack"] and {r["condition"] for r in third.rows} == {"stack"}


def test_choices_on_dev_never_see_test(experiment, tmp_path):
    """Permuting the test labels (and texts) changes test scores, never the choices made on dev."""
    import random

    cfg, task, res = experiment
    shuffled = translated_task()
    rng = random.Random(5)
    for lang, exs in shuffled.data["test"].items():
        for e in exs:
            e.label = rng.randrange(len(shuffled.labels))
            e.text = e.text + " " + rng.choice(["the", "and", "one"])
    other = run_transfer(TransferConfig(**{**cfg.__dict__, "out": tmp_path / "o", "store": None,
                                           "modules_dir": Path(cfg.out) / "modules"}), task=shuffled)
    assert [(c["condition"], c["lang"], c["chosen"], c["candidates"]) for c in other.choices] == \
        [(c["condition"], c["lang"], c["chosen"], c["candidates"]) for c in res.choices]
    assert other.rows != res.rows


def test_select_on_target_dev_uses_each_targets_dev(experiment, tmp_path):
    cfg, task, res = experiment
    other = run_transfer(TransferConfig(**{**cfg.__dict__, "out": tmp_path / "o", "store": None, "bootstrap": 0,
                                           "select_on": "target-dev", "conditions": ["task", "add"],
                                           "modules_dir": Path(cfg.out) / "modules"}), task=task)
    assert {c["lang"]: c["split"] for c in other.choices} == {t: f"dev:{t}" for t in res.targets}


def test_default_conditions_skip_what_the_task_cannot_support(tiny_model_dirs, tmp_path):
    task = tiny_task(n_train=16, n_dev=4, n_test=8)
    res = run_transfer(TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de"],
                                      text=_texts(tmp_path / "text"), lang_steps=2, lang_batch_size=8,
                                      conditions=None, bootstrap=0, out=tmp_path / "o", store=None,
                                      progress=False, lambdas=[1.0], swap=(1, 1, 0)), task=task)
    assert "translate-train" not in res.conditions and "align" not in res.conditions
    assert any("translate-train skipped" in n for n in res.notes)
    with pytest.raises(XlingError, match="translate-train needs gold translations"):
        run_transfer(TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de"],
                                    conditions=["task", "translate-train"], out=tmp_path / "o2", store=None,
                                    progress=False), task=task)


def test_bootstrap_study_gap_closed_matches_direct_ratio():
    from xling.methods.stats import bootstrap_study

    task = [[1, 0, 0, 0], [0, 0, 1, 0]]
    method = [[1, 1, 0, 0], [0, 0, 1, 1]]
    ceil = [[1, 1, 1, 0], [1, 1, 1, 0]]
    st = bootstrap_study({"task": task, "m": method, "tt": ceil}, "task", "tt", 400, seed=3)
    d = ((2 / 4 - 1 / 4) + (2 / 4 - 1 / 4)) / 2
    g = ((3 / 4 - 1 / 4) + (3 / 4 - 1 / 4)) / 2
    assert st["m"]["delta"] == pytest.approx(d) and st["m"]["gap_closed"] == pytest.approx(d / g)
    assert st["tt"]["gap_closed"] == pytest.approx(1.0)
    assert st["m"]["lang_delta"] == pytest.approx([0.25, 0.25])
    assert st["task"]["delta_lo"] is None and st["task"]["gap_closed"] is None


def test_paired_bootstrap_matches_direct_difference():
    a = [[1, 0, 1, 1], [0, 0, 1]]
    b = [[1, 1, 0, 1], [0, 1, 1]]
    d, lo, hi = paired_bootstrap(a, b, 500, seed=1)
    assert d == pytest.approx(((3 / 4 - 3 / 4) + (1 / 3 - 2 / 3)) / 2)
    assert lo <= d <= hi
    assert paired_bootstrap(a, a, 100)[1:] == (0.0, 0.0)


def test_bad_configs_are_one_line_errors(tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main

    with pytest.raises(XlingError, match="unknown condition"):
        TransferConfig(conditions=["stack", "magic"])
    with pytest.raises(XlingError, match="--swap"):
        TransferConfig(swap=(1, -1, 0))
    task = tiny_task(n_train=8, n_dev=4, n_test=4)
    with pytest.raises(XlingError, match="source language"):
        run_transfer(TransferConfig(model=str(tiny_model_dirs["bert"]), langs=["en"], out=tmp_path / "o",
                                    store=None, progress=False), task=task)
    rc = main(["transfer", "--swap", "a,b", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--swap" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_task_module_stuck_at_chance_is_retrained_at_half_the_lr(tiny_model_dirs, tmp_path, monkeypatch, capsys):
    import json

    import xling.harness.training as mt

    real = mt.train_task_module
    calls = []

    def fake(*args, **kw):
        calls.append(kw["lr"])
        out = real(*args, **kw)
        f = Path(out) / "xling_train.json"  # the first training "diverged": its best dev accuracy is chance
        info = json.loads(f.read_text())
        info["best_dev"] = 0.5 if len(calls) == 1 else 1.0
        f.write_text(json.dumps(info))
        return out

    monkeypatch.setattr(mt, "train_task_module", fake)
    task = tiny_task(n_train=16, n_dev=4, n_test=8)
    res = run_transfer(TransferConfig(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de"],
                                      conditions=["task"], task_lr=1e-2, bootstrap=0, out=tmp_path / "o",
                                      store=None, progress=False), task=task)
    assert calls == [1e-2, 5e-3]
    assert res.modules["task"]["lr"] == 5e-3
    assert "at chance" in capsys.readouterr().err
