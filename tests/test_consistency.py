"""Cross-lingual consistency: the metrics against hand computations, the bootstrap against a direct resample,
predictions in the results store (round trip, damage, older stores) and ``xling consistency`` end to end on a
run made by ``xling eval`` on a tiny model."""

from __future__ import annotations

import csv
import math
import random
import sqlite3

import numpy as np
import pytest

from xling.errors import XlingError
from xling.methods.consistency import COLUMNS, consistency_rows, kappa_at_chance, pair_stats

pytestmark = pytest.mark.usefixtures("one_thread")

nan = float("nan")

@pytest.fixture
def tiny_model_dirs(tiny_model_dirs, tiny_causal_dirs):
    """Here the tiny decoders are scored or generated from: saved with their LM heads (an untied head missing from a
    folder is refused, never initialised at random)."""
    return {**tiny_model_dirs, **tiny_causal_dirs}



def same(a, b) -> bool:
    return (a != a and b != b) or a == pytest.approx(b)


def kappa_by_table(pa, pb) -> float:
    """Cohen's kappa from the confusion table (an independent computation): (p_o - p_e) / (1 - p_e)."""
    labels = sorted(set(pa) | set(pb))
    m = np.zeros((len(labels), len(labels)))
    for x, y in zip(pa, pb):
        m[labels.index(x), labels.index(y)] += 1
    m /= m.sum()
    po, pe = np.trace(m), float(m.sum(axis=1) @ m.sum(axis=0))
    return (po - pe) / (1 - pe) if pe < 1 else nan


# ----------------------------------------------------------------------------- pair_stats by hand


def test_pair_stats_by_hand():
    # a: x y x x, b: x y y x -> 3 of 4 agree; marginals a (x 3/4, y 1/4), b (x 1/2, y 1/2): p_e = 3/8 + 1/8 = 1/2
    got = pair_stats(["x", "y", "x", "x"], ["x", "y", "y", "x"], [1, 1, 0, 1], [1, 0, 0, 1])
    assert got == {"n": 4, "agreement": 0.75, "kappa": pytest.approx(0.5), "both_correct": 0.5,
                   "kt_a_to_b": pytest.approx(2 / 3)}
    # reversed: KT(b -> a) = both / right in b = 2 / 2; the symmetric statistics do not change
    back = pair_stats(["x", "y", "y", "x"], ["x", "y", "x", "x"], [1, 0, 0, 1], [1, 1, 0, 1])
    assert back["kt_a_to_b"] == 1.0 and back["kappa"] == pytest.approx(0.5) and back["agreement"] == 0.75


def test_kappa_over_the_union_of_labels_matches_the_confusion_table():
    rng = random.Random(3)
    for _ in range(40):
        n = rng.randint(2, 30)
        pa = [rng.choice("abc") for _ in range(n)]
        pb = [rng.choice("abcd") for _ in range(n)]  # "d" only in b: still in the union
        assert same(pair_stats(pa, pb, [0] * n, [0] * n)["kappa"], kappa_by_table(pa, pb))
    # below chance: systematic disagreement gives a negative kappa (p_o 0, p_e 1/2 -> -1)
    assert pair_stats(["a", "b"] * 3, ["b", "a"] * 3, [0] * 6, [0] * 6)["kappa"] == pytest.approx(-1.0)


def test_ties_and_degenerate_marginals():
    # both always give one and the same answer: p_e = 1, kappa undefined (NaN), agreement 1
    got = pair_stats(["y"] * 5, ["y"] * 5, [1] * 5, [1] * 5)
    assert got["agreement"] == 1.0 and math.isnan(got["kappa"]) and got["kt_a_to_b"] == 1.0
    # each language constant but different answers: p_e = 0, kappa = (0 - 0) / 1 = 0
    assert pair_stats(["y"] * 4, ["n"] * 4, [1] * 4, [0] * 4)["kappa"] == 0.0
    # a tie in the marginals (2 x, 2 y in each) and perfect agreement: kappa 1
    assert pair_stats(list("xyxy"), list("xyxy"), [1, 0, 1, 0], [1, 0, 1, 0])["kappa"] == pytest.approx(1.0)
    # labels of any hashable type (multiple-choice indices as text, generated answers)
    assert pair_stats(["0", "2"], ["0", "1"], [1, 0], [1, 1])["agreement"] == 0.5


def test_no_correct_item_in_a_makes_kt_undefined_not_a_crash():
    got = pair_stats(list("abc"), list("abd"), [0, 0, 0], [1, 1, 0])
    assert math.isnan(got["kt_a_to_b"]) and got["both_correct"] == 0.0
    assert pair_stats(list("abd"), list("abc"), [1, 1, 0], [0, 0, 0])["kt_a_to_b"] == 0.0
    empty = pair_stats([], [], [], [])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("agreement", "kappa", "both_correct", "kt_a_to_b"))


def test_pair_stats_refuses_bad_input():
    with pytest.raises(ValueError, match="different lengths"):
        pair_stats(["a"], ["a", "b"], [1], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        pair_stats(["a"], ["a"], [2], [1])


# ----------------------------------------------------------------------------- consistency_rows


def _table(seed=0, n=40, langs=("eng", "deu", "fra")):
    rng = random.Random(seed)
    truth = [rng.choice("pqr") for _ in range(n)]
    out = {}
    for k, lang in enumerate(langs):
        per = {}
        for i in range(n):
            pred = truth[i] if rng.random() < 0.6 + 0.1 * k else rng.choice("pqr")
            per[f"v{i}"] = (pred, int(pred == truth[i]))
        out[lang] = per
    return out


def test_rows_cover_every_ordered_pair_with_their_columns():
    rows = consistency_rows(_table(), n_boot=100)
    assert [(r["lang_a"], r["lang_b"]) for r in rows] == [("eng", "deu"), ("eng", "fra"), ("deu", "eng"),
                                                          ("deu", "fra"), ("fra", "eng"), ("fra", "deu")]
    for r in rows:
        assert list(r) == list(COLUMNS)
        for name, lo, hi in (("agreement", "agreement_low", "agreement_high"), ("kappa", "kappa_low", "kappa_high"),
                             ("both_correct", "both_correct_low", "both_correct_high"),
                             ("kt_a_to_b", "kt_low", "kt_high")):
            assert r[lo] <= r[name] <= r[hi]


def test_missing_items_pairs_use_only_items_present_in_both():
    table = {"a": {"1": ("x", 1), "2": ("y", 1), "3": ("x", 0), "4": ("x", 1), "only-a": ("z", 1)},
             "b": {"4": ("x", 1), "3": ("y", 0), "2": ("y", 0), "1": ("x", 1), "only-b": ("z", 0)},
             "c": {"zz": ("x", 1)}}
    rows = {(r["lang_a"], r["lang_b"]): r for r in consistency_rows(table, n_boot=50)}
    ab = rows[("a", "b")]
    hand = pair_stats(["x", "y", "x", "x"], ["x", "y", "y", "x"], [1, 1, 0, 1], [1, 0, 0, 1])
    assert ab["n"] == 4 and all(same(ab[k], hand[k]) for k in ("agreement", "kappa", "both_correct", "kt_a_to_b"))
    assert rows[("b", "a")]["kt_a_to_b"] == 1.0
    # no shared item: n 0 and every value undefined, no crash
    ac = rows[("a", "c")]
    assert ac["n"] == 0 and all(math.isnan(ac[k]) for k in COLUMNS if k not in ("lang_a", "lang_b", "n"))


def test_bootstrap_equals_a_direct_resample_of_the_pairs_items():
    from xling.methods.stats import Resampler

    table = _table(seed=5, n=25)
    rows = {(r["lang_a"], r["lang_b"]): r for r in consistency_rows(table, n_boot=300, seed=7, level=0.9)}
    ids = sorted(table["deu"])
    pa = [table["deu"][i][0] for i in ids]
    pb = [table["fra"][i][0] for i in ids]
    ca = [table["deu"][i][1] for i in ids]
    cb = [table["fra"][i][1] for i in ids]
    idx = Resampler(7).draw(len(ids), 300)
    boot = {k: [] for k in ("agreement", "kappa", "both_correct", "kt_a_to_b", "kt_back")}
    for row in idx:
        st = pair_stats([pa[i] for i in row], [pb[i] for i in row], [ca[i] for i in row], [cb[i] for i in row])
        for k in ("agreement", "kappa", "both_correct", "kt_a_to_b"):
            boot[k].append(st[k])
        boot["kt_back"].append(pair_stats([pb[i] for i in row], [pa[i] for i in row], [cb[i] for i in row],
                                          [ca[i] for i in row])["kt_a_to_b"])

    def ci(v):
        v = np.asarray(v, float)
        v = v[~np.isnan(v)]
        return np.quantile(v, 0.05), np.quantile(v, 0.95)

    r, back = rows[("deu", "fra")], rows[("fra", "deu")]
    for name, lo, hi in (("agreement", "agreement_low", "agreement_high"), ("kappa", "kappa_low", "kappa_high"),
                         ("both_correct", "both_correct_low", "both_correct_high"), ("kt_a_to_b", "kt_low", "kt_high")):
        assert (r[lo], r[hi]) == pytest.approx(ci(boot[name]))
    assert (back["kt_low"], back["kt_high"]) == pytest.approx(ci(boot["kt_back"]))
    # paired: the symmetric statistics have the same interval both ways
    assert (back["kappa_low"], back["kappa_high"]) == (r["kappa_low"], r["kappa_high"])


def test_rows_do_not_depend_on_item_order_or_other_languages():
    table = _table(seed=2, n=30, langs=("eng", "deu", "fra", "swh"))
    shuffled = {lang: dict(sorted(per.items(), reverse=True)) for lang, per in table.items()}
    assert consistency_rows(table, n_boot=80, seed=1) == consistency_rows(shuffled, n_boot=80, seed=1)
    two = consistency_rows({k: table[k] for k in ("deu", "fra")}, n_boot=80, seed=1)
    full = {(r["lang_a"], r["lang_b"]): r for r in consistency_rows(table, n_boot=80, seed=1)}
    assert two == [full[("deu", "fra")], full[("fra", "deu")]]


def test_small_pairs_get_no_interval_and_undefined_kt_no_interval():
    rows = consistency_rows({"a": {"1": ("x", 0), "2": ("y", 0)}, "b": {"1": ("x", 1), "2": ("x", 1)}}, n_boot=50)
    ab = rows[0]
    assert ab["n"] == 2 and ab["agreement"] == 0.5 and math.isnan(ab["agreement_low"])
    assert math.isnan(ab["kt_a_to_b"]) and math.isnan(ab["kt_low"]) and rows[1]["kt_a_to_b"] == 0.0
    big = consistency_rows({"a": {str(i): ("x", 0) for i in range(10)},
                            "b": {str(i): ("x", i % 2) for i in range(10)}}, n_boot=50)
    assert math.isnan(big[0]["kt_a_to_b"]) and math.isnan(big[0]["kt_low"])  # never right in a: no interval
    assert math.isnan(big[0]["kappa"]) and not kappa_at_chance(big[0])        # one answer everywhere
    assert big[1]["kt_a_to_b"] == 0.0 and big[1]["kt_low"] == 0.0


# ----------------------------------------------------------------------------- records and the store


def test_prediction_record_ids_labels_and_positions():
    from xling.harness.consistency import prediction_record, predictions_csv, predictions_rows
    from xling.tasks.core import Example

    exs = [Example(text="a", label=0, id="q1"), Example(text="b", label=1, id="q2")]
    rec = prediction_record(exs, [1, 1], "classification", ["no", "yes"])
    assert rec["item_ids"] == ["q1", "q2"] and rec["predictions"] == ["yes", "yes"]
    assert rec["labels"] == ["no", "yes"] and rec["correct"] == [0, 1] and rec["id_source"] == "task"
    anon = prediction_record([Example(text="a", label=0), Example(text="b", label=2)], [0, 2], "multiple-choice", [])
    assert anon["item_ids"] == ["#0", "#1"] and anon["predictions"] == ["0", "2"] and anon["id_source"] == "position"
    assert prediction_record([Example(tokens=["a"], tags=[0])], [[0]], "token-classification", ["O"]) is None
    text = predictions_csv(predictions_rows({"deu_Latn": rec}, condition="=cmd"), with_condition=True)
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["condition", "item_id", "lang", "prediction", "label", "correct"]
    assert rows[0]["condition"] == "'=cmd" and rows[1]["correct"] == "1"  # a formula cell is neutralised


def _record(ids, preds, labels):
    return {"item_ids": ids, "predictions": preds, "labels": labels,
            "correct": [int(p == g) for p, g in zip(preds, labels)], "id_source": "task"}


def test_store_round_trip_and_damage(tmp_path):
    from xling.harness.store import ResultsStore, prediction_row

    store = ResultsStore(tmp_path / "r.sqlite")
    rec = _record(["1", "2", "3"], ["ja", "nein", "ja"], ["ja", "ja", "ja"])
    store.add_run({"run_id": "r1", "command": "eval", "model": "m"},
                  predictions=[prediction_row("m", "t", "deu_Latn", "test", "h", rec)])
    (got,) = store.predictions("r1")
    assert {k: got[k] for k in ("lang", "n", "item_ids", "predictions", "labels", "correct")} == {
        "lang": "deu_Latn", "n": 3, "item_ids": ["1", "2", "3"], "predictions": ["ja", "nein", "ja"],
        "labels": ["ja", "ja", "ja"], "correct": [1, 0, 1]}
    assert store.predictions("nope") == []
    with pytest.raises(ValueError, match="different lengths"):
        prediction_row("m", "t", "deu_Latn", "test", "h", {**rec, "labels": ["ja"]})
    # compact: the text is compressed, and an edited row fails its checksum in one line
    con = sqlite3.connect(store.path)
    blob = con.execute("SELECT data FROM predictions").fetchone()[0]
    import zlib

    tampered = zlib.compress(zlib.decompress(blob).replace(b'"nein"', b'"ja!!"'))
    con.execute("UPDATE predictions SET data = ?", (tampered,))
    con.commit()
    con.close()
    with pytest.raises(XlingError, match="unreadable predictions"):
        store.predictions("r1")


def _eval_run(store_path, run_id, records, command="eval", model="m", task="t", config=None):
    from xling.harness.consistency import store_rows
    from xling.harness.store import ResultsStore

    rows = []
    for name, recs in records.items():
        rows += store_rows(name, task, "test", recs)
    ResultsStore(store_path).add_run({"run_id": run_id, "command": command, "model": model, "corpus": f"task:{task}",
                                      "config": config or {"split": "test", "task": task}, "finished": "today"},
                                     predictions=rows)


def test_older_store_without_predictions_gets_one_line(tmp_path, capsys):
    from xling.cli import main

    path = tmp_path / "old.sqlite"
    _eval_run(path, "e1", {"m": {"deu_Latn": _record(["1"], ["a"], ["a"])}},
              config={"split": "test", "config": {"task": "bible-genre", "zero_shot": True}})
    con = sqlite3.connect(path)
    con.execute("DROP INDEX prediction_run")
    con.execute("DROP TABLE predictions")  # as written before predictions were kept
    con.commit()
    con.close()
    assert main(["consistency", "e1", "--store", str(path), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no stored predictions" in err[0]
    assert "xling eval --model m --task bible-genre --zero-shot" in err[0]
    assert not (tmp_path / "c").exists()


def test_transfer_conditions_and_refusals(tmp_path, capsys):
    from xling.cli import main
    from xling.harness.consistency import load_run_predictions

    path = tmp_path / "r.sqlite"
    ids = [str(i) for i in range(6)]
    recs = {lang: _record(ids, list("aabbab"), list("ababab")) for lang in ("eng_Latn", "deu_Latn")}
    _eval_run(path, "tr1", {"transfer:task": recs, "transfer:stack": recs}, command="transfer")
    with pytest.raises(XlingError, match="pass --condition"):
        load_run_predictions(path, "tr1")
    with pytest.raises(XlingError, match="no condition 'nope'"):
        load_run_predictions(path, "tr", "nope")
    got = load_run_predictions(path, "tr", "stack")
    assert got.condition == "stack" and got.conditions == ["task", "stack"] and set(got.records) == set(recs)
    from xling.harness.store import ResultsStore

    ResultsStore(path).add_run({"run_id": "al1", "command": "align", "model": "m"})
    with pytest.raises(XlingError, match="is a align run"):
        load_run_predictions(path, "al1")
    with pytest.raises(XlingError, match="unknown run id"):
        load_run_predictions(path, "zzz")
    assert main(["consistency", "tr1", "--condition", "task", "--store", str(path), "--out", "none"]) == 0
    out = capsys.readouterr().out
    assert "eng_Latn/deu_Latn" in out and "condition task" in out
    assert main(["consistency", "tr1", "--store", str(path), "--out", "none"]) == 2  # several conditions, none named
    assert "pass --condition" in capsys.readouterr().err
    # identical predictions in both languages: agreement 1, kappa 1, KT 1 both ways
    assert main(["consistency", "tr1", "--condition", "stack", "--store", str(path), "--out", str(tmp_path / "c")]) == 0
    for r in csv.DictReader(open(tmp_path / "c" / "consistency.csv", encoding="utf-8")):
        assert (r["n"], r["agreement"], r["kappa"], r["kt_a_to_b"]) == ("6", "1", "1", "1")


def test_duplicate_ids_are_one_line(tmp_path):
    from xling.harness.consistency import load_run_predictions

    path = tmp_path / "r.sqlite"
    _eval_run(path, "d1", {"m": {"eng_Latn": _record(["1", "1"], ["a", "b"], ["a", "a"]),
                                 "deu_Latn": _record(["1", "2"], ["a", "b"], ["a", "a"])}})
    with pytest.raises(XlingError, match="item id '1' appears twice in eng_Latn"):
        load_run_predictions(path, "d1").table()


# ----------------------------------------------------------------------------- end to end on a tiny model


def test_consistency_of_an_eval_run_end_to_end(tiny_model_dirs, tmp_path, capsys):
    from test_train import tiny_task
    from xling.cli import main
    from xling.harness.store import ResultsStore
    from xling.recipes.eval.run import evaluate

    store = tmp_path / "r.sqlite"
    task = tiny_task(n_train=2, n_dev=2, n_test=12)
    res = evaluate(model=str(tiny_model_dirs["llama"]), task=task, zero_shot=True, out=tmp_path / "ev", store=store,
                   progress=False, batch_size=4)
    # predictions.csv: one row per language and item, keyed by the task's ids, correctness as the scores count it
    pred = list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv", encoding="utf-8")))
    assert list(pred[0]) == ["item_id", "lang", "prediction", "label", "correct"] and len(pred) == 3 * 12
    for lang in res.langs:
        mine = [r for r in pred if r["lang"] == lang]
        assert [r["item_id"] for r in mine] == [e.id for e in task.examples("test", lang)]
        assert sum(int(r["correct"]) for r in mine) / 12 == pytest.approx(res.score(lang, "accuracy"))
        assert all(r["prediction"] in task.labels and r["label"] in task.labels for r in mine)
    stored = {r["lang"]: r for r in ResultsStore(store).predictions(res.run_id)}
    assert set(stored) == set(res.langs) and stored["deu_Latn"]["correct"] == res.correct["deu_Latn"]

    out = tmp_path / "cons"
    assert main(["consistency", res.run_id[:8], "--store", str(store), "--out", str(out), "--n-boot", "200"]) == 0
    text = capsys.readouterr().out
    assert "eng_Latn/deu_Latn" in text and "xling align --model" in text  # no align run: the command that adds one
    rows = list(csv.DictReader(open(out / "consistency.csv", encoding="utf-8")))
    assert len(rows) == 6 and list(rows[0])[:7] == ["lang_a", "lang_b", "n", "agreement", "agreement_low",
                                                    "agreement_high", "kappa"]
    by = {}
    for r in pred:
        by.setdefault(r["lang"], {})[r["item_id"]] = (r["prediction"], int(r["correct"]))
    for r in rows:
        a, b = by[r["lang_a"]], by[r["lang_b"]]
        ids = sorted(set(a) & set(b))
        hand = pair_stats([a[i][0] for i in ids], [b[i][0] for i in ids], [a[i][1] for i in ids],
                          [b[i][1] for i in ids])
        assert int(r["n"]) == hand["n"] == 12
        for k in ("agreement", "kappa", "both_correct", "kt_a_to_b"):
            assert (r[k] == "" and math.isnan(hand[k])) or float(r[k]) == pytest.approx(hand[k], abs=1e-5)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and "Cohen" in html and "KT(a → b)" in html

    # with an align run of the same model on the task's text: the correlation with MEXA at the best layer
    model = str(tiny_model_dirs["llama"])
    mexa = {"deu_Latn": [0.2, 0.6], "fra_Latn": [0.3, 0.9]}  # layer 1 is the best (mean 0.75)
    ResultsStore(store).add_run(
        {"run_id": "al-1", "command": "align", "model": model, "corpus": "task:tiny", "config": {"pivot": "eng"},
         "finished": "now"},
        alignment=[{"model": model, "corpus": "task:tiny", "lang": lang, "layer": k, "pooling": "mean",
                    "metric": "mexa", "value": v} for lang, vals in mexa.items() for k, v in enumerate(vals)])
    assert main(["consistency", res.run_id, "--store", str(store), "--out", str(out), "--n-boot", "100"]) == 0
    text = capsys.readouterr().out
    assert "MEXA with eng_Latn" in text and "xling align --model" not in text
    corr = {r["stat"]: r for r in csv.DictReader(open(out / "mexa_correlation.csv", encoding="utf-8"))}
    assert set(corr) == {"agreement", "kappa", "both_correct", "kt_from_pivot", "kt_to_pivot"}
    assert corr["agreement"]["layer"] == "1" and corr["agreement"]["n"] == "2"
    ag = {r["lang_b"]: float(r["agreement"]) for r in rows if r["lang_a"] == "eng_Latn"}
    if ag["deu_Latn"] != ag["fra_Latn"]:  # two points: r is +1 or -1 by the order of the agreements
        assert float(corr["agreement"]["pearson"]) == pytest.approx(1.0 if ag["fra_Latn"] > ag["deu_Latn"] else -1.0)


def test_translation_keys_get_a_mexa_note_not_a_wrong_pivot(tmp_path):
    """A translation run's keys are language:direction; the note says so (not that the pivot is missing)."""
    from xling.harness.consistency import pair_mexa
    from xling.harness.store import ResultsStore

    store = tmp_path / "store"
    ResultsStore(store).add_run(
        {"run_id": "al-1", "command": "align", "model": "m", "corpus": "bible", "config": {"pivot": "eng"},
         "finished": "now"},
        alignment=[{"model": "m", "corpus": "bible", "lang": "deu_Latn", "layer": 0, "pooling": "mean",
                    "metric": "mexa", "value": 0.5}])
    got = pair_mexa(store, "m", "bible-mt", ["deu_Latn:en-x", "swh_Latn:en-x"])
    assert set(got) == {"note"} and "keyed by language and direction (deu_Latn:en-x)" in got["note"]
    assert "pivot (eng" not in got["note"]
