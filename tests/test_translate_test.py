"""xling transfer --translate-test: the translate-test condition on a tiny encoder task and a tiny random decoder."""

from __future__ import annotations

import copy
import csv
import json
import sys
from pathlib import Path

import pytest

from test_train import tiny_task, write_tiny_jsonl
from test_transfer import translated_task
from xling.cli import main
from xling.errors import XlingError
from xling.recipes.transfer.run import TransferConfig, run_transfer

pytest.importorskip("sacrebleu")
pytest.importorskip("lingua")
pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tiny_model_dirs, tiny_causal_dirs, root: Path, **kw) -> TransferConfig:
    base = dict(model=str(tiny_model_dirs["bert"]), task="tiny", langs=["de", "fr"], conditions=["task"],
                translate_test=str(tiny_causal_dirs["llama"]), translate_shots=2, translate_demos="task",
                translate_max_new_tokens=4, task_epochs=1, task_lr=1e-2, bootstrap=200, out=root / "out",
                store=root / "results.sqlite", progress=False)
    return TransferConfig(**{**base, **kw})


class _Counting:
    """greedy_generate, counting its calls and keeping every prompt it was given."""

    def __init__(self, monkeypatch):
        import xling.engine.generate as gen

        self.calls, self.prompts, real = 0, [], gen.greedy_generate

        def counted(model, tok, prompts, **kw):
            self.calls += 1
            self.prompts += list(prompts)
            return real(model, tok, prompts, **kw)

        monkeypatch.setattr(gen, "greedy_generate", counted)


@pytest.fixture(scope="module")
def run(tiny_model_dirs, tiny_causal_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("tt")
    task = translated_task(n_train=96)  # enough to learn the English task (a module not constant on translations)
    cfg = _cfg(tiny_model_dirs, tiny_causal_dirs, root, task_epochs=4, task_lr=5e-3, task_batch_size=8, r=16)
    return cfg, task, run_transfer(cfg, task=task)


def _translations(cfg) -> list[dict]:
    text = (Path(cfg.out) / "translations.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_condition_equals_scoring_the_translations_with_the_english_module(run):
    """translate-test's predictions are the task module's predictions on the saved translations, computed apart
    (xling eval on the task module's folder, on a task whose target test texts are the translations)."""
    from xling.recipes.eval.run import evaluate
    from xling.tasks.core import Example, Task

    cfg, task, res = run
    assert res.conditions == ["task", "translate-test"]
    recs = _translations(cfg)
    assert {r["lang"] for r in recs} == set(res.targets) and all(r["field"] == "text" for r in recs)
    data = copy.deepcopy(task.data)
    pred = list(csv.DictReader(open(Path(cfg.out) / "predictions.csv", encoding="utf-8")))
    for lang in res.targets:
        by_id = {r["id"]: r for r in recs if r["lang"] == lang}
        test = task.examples("test", lang)
        assert [by_id[e.id]["source"] for e in test] == [e.text for e in test]
        data["test"][lang] = [Example(text=by_id[e.id]["translation"] or "", label=e.label, id=e.id) for e in test]
    direct = evaluate(model=res.modules["task"]["path"], task=Task("tiny", "classification", task.labels, data),
                      langs=[res.source, *res.targets], out=None, store=None, cache=False, progress=False)
    assert len({res.score("translate-test", lang) for lang in res.targets}) > 1  # not one class everywhere
    for lang in res.targets:
        assert res.score("translate-test", lang) == pytest.approx(direct.score(lang, "accuracy"))
        mine = [r for r in pred if r["condition"] == "translate-test" and r["lang"] == lang]
        assert [r["item_id"] for r in mine] == [e.id for e in task.examples("test", lang)]
        assert sum(int(r["correct"]) for r in mine) / len(mine) == pytest.approx(res.score("translate-test", lang))
    # the English module on English text: the task condition's source score is untouched by the translation
    assert res.score("task", res.source) == pytest.approx(direct.score(res.source, "accuracy"))


def test_reported_beside_the_others_with_intervals_and_off_target(run):
    cfg, task, res = run
    out = Path(cfg.out)
    s = {x["condition"]: x for x in res.summary}["translate-test"]
    assert s["reference"] == "task" and s["delta_lo"] <= s["delta"] <= s["delta_hi"]
    assert s["delta"] == pytest.approx(res.mean("translate-test") - res.mean("task"), abs=1e-9)
    assert "at_chance" in s and s["chance_lo"] <= s["chance_hi"]
    q = res.translation["quality"]
    recs = _translations(cfg)
    for lang in res.targets:
        mine = [r for r in recs if r["lang"] == lang]
        known = [r for r in mine if r["detected"] is not None]
        if known:  # the off-target rate by hand: share of detected translations that are not English
            assert q[lang]["off_target"] == pytest.approx(sum(r["detected"] != "eng" for r in known) / len(known))
            assert q[lang]["off_target_lo"] <= q[lang]["off_target"] <= q[lang]["off_target_hi"]
        assert q[lang]["chrf"] is not None  # the task is parallel: chrF against the English test items
    rows = list(csv.DictReader(open(out / "transfer.csv", encoding="utf-8")))
    tt = [r for r in rows if r["condition"] == "translate-test"]
    assert {r["lang"] for r in tt} == set(res.targets) and all(r["delta_lo"] != "" for r in tt)
    assert all(r["translation_chrf"] != "" for r in tt)
    assert "translation_off_target" in list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))[0]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "translate-test: the translations" in html and "off-target" in html
    run_json = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run_json["translation"]["translator"] == cfg.translate_test
    assert set(run_json["translation"]["demos"].values()) == {"task"}
    from xling.recipes.transfer.run import format_table

    assert "translate-test:" in format_table(res) and "off-target" in format_table(res)


def test_items_and_predictions_in_the_store(run):
    from xling.harness.consistency import load_run_predictions
    from xling.harness.store import ResultsStore, items_hash

    cfg, task, res = run
    items = [r for r in ResultsStore(cfg.store).items(res.run_id) if r["model"] == "transfer:translate-test"]
    assert {r["lang"] for r in items} == set(res.targets)
    for r in items:  # the same items (ids hash) as the other conditions: compare pairs them
        assert r["ids_hash"] == items_hash(task.examples("test", r["lang"]))
    got = load_run_predictions(cfg.store, res.run_id, "translate-test")
    assert set(got.records) == set(res.targets)


def test_translations_are_cached_and_prompts_hold_no_test_item(tiny_model_dirs, tiny_causal_dirs, tmp_path,
                                                                monkeypatch):
    from xling.data.overlap import normalize_text

    task = translated_task()
    # a training pair equal to a test item (in both languages) must never become a demonstration
    leak = task.data["test"]["deu_Latn"][0]
    task.data["train"]["eng_Latn"].insert(0, type(leak)(text=task.data["test"]["eng_Latn"][0].text, label=0,
                                                        id="leak"))
    task.data["train"]["deu_Latn"].insert(0, type(leak)(text=leak.text, label=0, id="leak"))
    counter = _Counting(monkeypatch)
    first = run_transfer(_cfg(tiny_model_dirs, tiny_causal_dirs, tmp_path, store=None, bootstrap=0), task=task)
    assert counter.calls == 2  # one generation per target language
    tests = {normalize_text(e.text) for exs in task.data["test"].values() for e in exs}
    n_items = sum(len(task.examples("test", t)) for t in first.targets)
    assert len(counter.prompts) == n_items
    for p in counter.prompts:
        blocks = p.split("\n\n")
        assert len(blocks) == 3  # two demonstrations, then the item
        for block in blocks[:-1]:
            for line in block.splitlines():
                assert normalize_text(line.split(": ", 1)[1]) not in tests, line
    again = run_transfer(_cfg(tiny_model_dirs, tiny_causal_dirs, tmp_path, store=None, bootstrap=0,
                              out=tmp_path / "again"), task=task)
    assert counter.calls == 2 and again.translation["timings"]["languages_generated"] == 0
    assert again.translations == first.translations
    assert again.score("translate-test", "deu_Latn") == first.score("translate-test", "deu_Latn")
    assert again.timings["predicted"] == 0  # the predictions on the (same) translations are cached too


def test_demonstrations_from_the_bible_mt_pool(monkeypatch):
    """auto: the task's training pairs where it has them, else bible-mt's demonstration verses."""
    import xling.tasks.bible_mt as bible_mt
    from test_generation import _fake_bible
    from xling.harness.translate import demonstrations

    monkeypatch.setattr(bible_mt, "bible_corpus", _fake_bible)
    task = tiny_task(n_train=8, n_dev=0, n_test=4)  # no German training text
    demos, origin = demonstrations(task, "eng_Latn", "deu_Latn", 3, "auto")
    assert origin == "bible-mt" and len(demos) == 3
    pool = bible_mt.bible_mt(train_size=35, langs=["eng_Latn", "deu_Latn"], quiet=True)
    train = pool.data["train"]
    pairs = list(zip((e.text for e in train["deu_Latn"]), (e.text for e in train["eng_Latn"])))
    assert demos == pairs[:3]
    with pytest.raises(XlingError, match="--translate-demos task"):
        demonstrations(task, "eng_Latn", "deu_Latn", 3, "task")
    assert demonstrations(task, "eng_Latn", "deu_Latn", 0, "task") == ([], "none")


def test_bad_translator_and_missing_extra_are_one_line(tiny_model_dirs, tiny_causal_dirs, tmp_path, capsys,
                                                        monkeypatch):
    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", tiny_task(n_train=8, n_dev=4, n_test=4))
    args = ["transfer", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--langs", "de",
            "--conditions", "task", "--store", "none", "--quiet"]
    rc = main([*args, "--translate-test", str(tiny_model_dirs["bert"]), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "must be a decoder" in err[0]
    assert not (Path(tmp_path / "a") / "modules" / "task").exists()  # refused before any training
    rc = main([*args[:-5], "--conditions", "task,translate-test", "--store", "none", "--quiet",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--translate-test MODEL" in err[0]
    monkeypatch.setitem(sys.modules, "lingua", None)
    rc = main([*args, "--translate-test", str(tiny_causal_dirs["llama"]), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs the 'generation' extra: pip install 'xling[generation]'" in err[0]
