"""Per-item results in the results store, and paired intervals over items in ``xling compare``."""

from __future__ import annotations

import csv
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from test_train import tiny_task
from xling.errors import XlingError

pytestmark = pytest.mark.usefixtures("one_thread")

SRC, TARGETS = "eng_Latn", ["deu_Latn", "fra_Latn"]


def direct_paired(a: list[list[int]], b: list[list[int]], reps: int, seed: int):
    """``mean over languages of mean(b) - mean(a)`` and its paired 95% interval, computed here with numpy."""
    rng = np.random.default_rng(seed)
    point = np.mean([np.mean(y) - np.mean(x) for x, y in zip(a, b)])
    boot = np.zeros((reps, len(a)))
    per = []
    for j, (x, y) in enumerate(zip(a, b)):
        x, y = np.asarray(x, float), np.asarray(y, float)
        idx = rng.integers(0, len(x), size=(reps, len(x)))
        boot[:, j] = y[idx].mean(axis=1) - x[idx].mean(axis=1)
        per.append(tuple(np.percentile(boot[:, j], [2.5, 97.5])))
    lo, hi = np.percentile(boot.mean(axis=1), [2.5, 97.5])
    return float(point), float(lo), float(hi), per


def synthetic_eval(run_id: str, model: str, correct: dict[str, list[int]], ids: dict[str, str] | None = None):
    """An eval result with per-item correctness (accuracy = its mean), as the eval recipe makes it."""
    from xling.recipes.eval.run import EvalResult
    from xling.harness.store import items_hash

    rows = [{"model": model, "task": "t", "lang": lang, "split": "test", "metric": m,
             "value": sum(c) / len(c) if m == "accuracy" else 0.5} for lang, c in correct.items()
            for m in ("accuracy", "macro_f1")]
    hashes = {lang: items_hash([f"{(ids or {}).get(lang, lang)}-{i}" for i in range(len(c))])
              for lang, c in correct.items()}
    return EvalResult(rows=rows, run_id=run_id, model=model, base_model="b", task="t", task_type="classification",
                      split="test", source=SRC, langs=list(correct), n_examples={k: len(v) for k, v in correct.items()},
                      main_metric="accuracy", timings={}, meta={}, correct=correct, ids_hash=hashes)


RNG = np.random.default_rng(42)
A = {lang: [int(x) for x in RNG.random(n) < p] for lang, n, p in ((SRC, 30, 0.9), ("deu_Latn", 40, 0.6),
                                                                  ("fra_Latn", 25, 0.5))}
B = {lang: [int(x) for x in RNG.random(len(v)) < 0.75] for lang, v in A.items()}


# ----------------------------------------------------------------------------- the store


def test_store_round_trip_of_items(tmp_path):
    from xling.harness.store import ResultsStore, item_row, items_hash

    store = ResultsStore(tmp_path / "r.sqlite")
    run = {"run_id": "r1", "command": "eval", "model": "m"}
    rows = [item_row("m", "t", "deu_Latn", "test", items_hash(["a", "b", "c"]), [1, 0, 1]),
            {"model": "m", "task": "t", "lang": "fra_Latn", "split": "test", "ids_hash": "h", "correct": "0011"}]
    store.add_run(run, items=rows)
    got = store.items("r1")
    assert [(r["lang"], r["n"], r["correct"]) for r in got] == [("deu_Latn", 3, "101"), ("fra_Latn", 4, "0011")]
    assert got[0]["ids_hash"] == items_hash(["a", "b", "c"]) != items_hash(["b", "a", "c"])
    assert len(items_hash(["a"])) == 16
    store.add_run(run, items=rows[:1])  # a run written again replaces its rows
    assert [r["lang"] for r in store.items("r1")] == ["deu_Latn"]
    assert store.items("nope") == []
    with pytest.raises(ValueError):
        item_row("m", "t", "deu_Latn", "test", "h", "012")
    # a hand-edited row is an unusable store, in one line
    con = sqlite3.connect(store.path)
    con.execute("UPDATE item_scores SET correct = '1x1'")
    con.commit()
    con.close()
    with pytest.raises(XlingError, match="unreadable item scores"):
        store.items("r1")


def test_eval_save_to_store_writes_one_item_row_per_language(tmp_path):
    from xling.recipes.eval.run import save_to_store
    from xling.harness.store import ResultsStore

    save_to_store(synthetic_eval("e1", "m1", A), tmp_path / "r.sqlite")
    got = {r["lang"]: r for r in ResultsStore(tmp_path / "r.sqlite").items("e1")}
    assert set(got) == set(A) and all(got[k]["correct"] == "".join(map(str, A[k])) for k in A)


def old_store(path):
    """Two eval runs in a store as written before ``item_scores`` existed."""
    from xling.recipes.eval.run import save_to_store

    save_to_store(synthetic_eval("e1", "m1", A), path)
    save_to_store(synthetic_eval("e2", "m2", B), path)
    con = sqlite3.connect(path)
    con.execute("DROP INDEX item_run")
    con.execute("DROP TABLE item_scores")
    con.commit()
    con.close()
    return path


def test_old_store_opens_and_compare_falls_back(tmp_path, capsys):
    from xling.cli import main
    from xling.recipes.compare.run import compare_runs
    from xling.harness.store import ResultsStore

    path = old_store(tmp_path / "old.sqlite")
    store = ResultsStore(path)
    assert [r["run_id"] for r in store.runs()] == ["e1", "e2"] and store.items("e1") == []
    res = compare_runs(path, ["e1", "e2"], bootstrap=300)
    (d,) = res.diffs
    assert d["method"] == "bootstrap over languages" and d["per_lang"] == {}
    assert any("not a paired bootstrap over items: no per-item results in the store" in n for n in res.notes)
    assert main(["compare", "e1", "e2", "--store", str(path), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("intervals: ")]
    assert line == "intervals: 95% percentile bootstrap over languages"
    assert "note: m2 vs m1: bootstrap over languages, not a paired bootstrap over items" in out


# ----------------------------------------------------------------------------- compare


def test_paired_ci_equals_a_direct_computation(tmp_path, capsys):
    from xling.cli import main
    from xling.recipes.compare.run import compare_runs
    from xling.recipes.eval.run import save_to_store

    path = tmp_path / "r.sqlite"
    save_to_store(synthetic_eval("e1", "m1", A), path)
    save_to_store(synthetic_eval("e2", "m2", B), path)
    res = compare_runs(path, ["e1", "e2"], bootstrap=700, seed=5)
    (d,) = res.diffs
    point, lo, hi, per = direct_paired([A[t] for t in TARGETS], [B[t] for t in TARGETS], 700, 5)
    assert d["method"] == "paired bootstrap over items" and d["items"] == 65
    assert d["mean"] == pytest.approx(point, abs=1e-12) and (d["lo"], d["hi"]) == pytest.approx((lo, hi), abs=1e-12)
    for t, (plo, phi) in zip(TARGETS, per):
        assert (d["per_lang"][t]["lo"], d["per_lang"][t]["hi"]) == pytest.approx((plo, phi), abs=1e-12)
    _, slo, shi, _ = direct_paired([A[SRC]], [B[SRC]], 700, 5)  # the source: its own paired interval
    assert (d["per_lang"][SRC]["lo"], d["per_lang"][SRC]["hi"]) == pytest.approx((slo, shi), abs=1e-12)
    assert not any("bootstrap over languages" in n for n in res.notes)
    assert main(["compare", "e1", "e2", "--store", str(path), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "paired bootstrap over items (65 items)" in out and "intervals: 95% paired bootstrap over items" in out
    rows = list(csv.DictReader(open(tmp_path / "c" / "compare.csv")))
    m2 = {r["lang"]: r for r in rows if r["series"] == "m2"}
    assert float(m2["deu_Latn"]["diff_lo"]) == pytest.approx(d["per_lang"]["deu_Latn"]["lo"])
    assert "paired bootstrap over items (40 items)" in m2["deu_Latn"]["diff_ci"]
    assert all(r["diff_lo"] == "" for r in rows if r["series"] == "m1")
    html = (tmp_path / "c" / "compare.html").read_text()
    assert "95% CI (paired, items)" in html and "paired bootstrap over items" in html


def test_mismatched_items_fall_back_with_the_reason(tmp_path):
    from xling.recipes.compare.run import compare_runs
    from xling.recipes.eval.run import save_to_store

    path = tmp_path / "r.sqlite"
    save_to_store(synthetic_eval("e1", "m1", A), path)
    save_to_store(synthetic_eval("e2", "m2", B, ids={"fra_Latn": "other"}), path)
    res = compare_runs(path, ["e1", "e2"], bootstrap=300)
    (d,) = res.diffs
    assert d["method"] == "bootstrap over languages"
    assert d["mean"] == pytest.approx(np.mean([np.mean(B[t]) - np.mean(A[t]) for t in TARGETS]))
    assert any("bootstrap over languages, not a paired bootstrap over items: the runs scored different items "
               "(ids differ) (fra_Latn)" in n for n in res.notes)
    assert set(d["per_lang"]) == {SRC, "deu_Latn"}  # the languages that do pair keep their paired interval
    # macro-F1 is not a mean over items: no pairing, even where the items match
    res = compare_runs(path, ["e1", "e2"], bootstrap=100, metric="macro_f1")
    assert res.diffs[0]["method"] == "bootstrap over languages" and res.diffs[0]["per_lang"] == {}
    assert any("macro_f1 is not a mean over items (deu_Latn)" in n for n in res.notes)


def test_transfer_runs_pair_conditions_like_the_transfer_bootstrap(tmp_path):
    """Items written by the transfer recipe's store writer; compare's paired interval of a condition against the
    first one equals the recipe's own (same draws for the same seed and repetitions)."""
    from xling.recipes.compare.run import compare_runs
    from xling.harness.store import ResultsStore, items_hash
    from xling.methods.stats import bootstrap_study
    from xling.recipes.transfer.run import TransferResult, _write

    path = tmp_path / "r.sqlite"
    conds = {"task": A, "add": B}
    for run_id in ("t1", "t2"):
        rows = [{"lang": lang, "role": "source" if lang == SRC else "target", "condition": c, "n": len(v),
                 "accuracy": sum(v) / len(v), "macro_f1": 0.5} for c, per in conds.items() for lang, v in per.items()]
        items = [{"condition": c, "lang": lang, "ids_hash": items_hash([f"{lang}{i}" for i in range(len(v))]),
                  "correct": v} for c, per in conds.items() for lang, v in per.items()]
        res = TransferResult(rows=rows, summary=[], source=SRC, targets=TARGETS, conditions=list(conds),
                             modules={}, metric="accuracy", run_id=run_id, config={"task": "tiny", "source_lang": SRC},
                             items=items)
        _write(res, SimpleNamespace(out=tmp_path / run_id, store=path, model="m"), SimpleNamespace(name="tiny"))
        conds = {"task": B, "add": A}
    got = ResultsStore(path).items("t1")
    assert {(r["model"], r["lang"]) for r in got} == {(f"transfer:{c}", lang) for c in ("task", "add") for lang in A}
    cmp = compare_runs(path, ["t1", "t2"], bootstrap=400, seed=0)
    assert [s.label for s in cmp.series] == ["task (t1)", "add (t1)", "task (t2)", "add (t2)"]
    assert all(d["method"] == "paired bootstrap over items" for d in cmp.diffs)
    st = bootstrap_study({"task": [A[t] for t in TARGETS], "add": [B[t] for t in TARGETS]}, "task", None, 400, 0)
    d = cmp.diffs[0]
    assert (d["mean"], d["lo"], d["hi"]) == pytest.approx((st["add"]["delta"], st["add"]["delta_lo"],
                                                           st["add"]["delta_hi"]), abs=1e-12)
    assert cmp.diffs[2]["mean"] == 0.0 and (cmp.diffs[2]["lo"], cmp.diffs[2]["hi"]) == (0.0, 0.0)  # t1 task = t2 add


# ----------------------------------------------------------------------------- two real eval runs


@pytest.fixture(scope="module")
def two_models(tiny_model_dirs, tmp_path_factory):
    from xling.harness.training import train_task

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("two")
    task = tiny_task()
    good = train_task(str(tiny_model_dirs["bert"]), task, out=root / "good", epochs=4, lr=1e-2, batch_size=8,
                      patience=0, progress=False, freeze_embeddings=False)
    weak = train_task(str(tiny_model_dirs["bert"]), task, out=root / "weak", epochs=1, lr=1e-3, batch_size=8,
                      patience=0, progress=False, freeze_embeddings=False)
    return task, good, weak


def test_two_eval_runs_on_a_tiny_task(two_models, tmp_path):
    from xling.modules.trained import load_trained
    from xling.recipes.compare.run import compare_runs
    from xling.recipes.eval.run import evaluate
    from xling.harness.store import ResultsStore
    from xling.tasks.encode import predict

    task, good, weak = two_models
    store = tmp_path / "r.sqlite"
    kw = dict(task=task, out=None, store=store, progress=False, cache=False)
    rw, rg = evaluate(model=str(weak), **kw), evaluate(model=str(good), **kw)
    items = {r["lang"]: r for r in ResultsStore(store).items(rw.run_id)}
    assert set(items) == {SRC, *TARGETS} and all(items[k]["n"] == 16 for k in items)
    # the correctness, recomputed independently from the saved models
    correct = {}
    for name, folder in (("weak", weak), ("good", good)):
        tm = load_trained(folder)
        correct[name] = {}
        for lang in [SRC, *TARGETS]:
            exs = task.examples("test", lang)
            preds = predict(tm.model, tm.tokenizer, "classification", exs)
            correct[name][lang] = [int(p == e.label) for p, e in zip(preds, exs)]
    assert rw.correct == correct["weak"]
    assert items["deu_Latn"]["correct"] == "".join(map(str, correct["weak"]["deu_Latn"]))
    res = compare_runs(store, [rw.run_id, rg.run_id], bootstrap=500, seed=3)
    (d,) = res.diffs
    assert d["method"] == "paired bootstrap over items" and d["items"] == 32
    point = np.mean([np.mean(correct["good"][t]) - np.mean(correct["weak"][t]) for t in TARGETS])
    assert d["mean"] == pytest.approx(point, abs=1e-12)
    assert d["mean"] == pytest.approx(np.mean([rg.score(t) - rw.score(t) for t in TARGETS]), abs=1e-12)
    _, lo, hi, _ = direct_paired([correct["weak"][t] for t in TARGETS], [correct["good"][t] for t in TARGETS], 500, 3)
    assert (d["lo"], d["hi"]) == pytest.approx((lo, hi), abs=1e-12) and d["lo"] <= d["mean"] <= d["hi"]
    # the same runs on other items: the ids differ, so compare falls back to languages and says why
    other = tiny_task(seed=1)
    ro = evaluate(model=str(good), **{**kw, "task": other})
    res = compare_runs(store, [rw.run_id, ro.run_id], bootstrap=200)
    assert res.diffs[0]["method"] == "bootstrap over languages"
    assert any("the runs scored different items (ids differ)" in n for n in res.notes)
