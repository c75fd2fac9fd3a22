"""Cross-lingual in-context learning (``xling eval --demos``): demonstration selection never uses a test item,
retrieval equals a hand cosine top-k, source demonstrations are the same for every language, prompts hold exactly k
demonstrations, paired differences equal a hand computation, and the CLI writes its files and store runs."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from xling.cli import main
from xling.errors import XlingError
from xling.tasks import Example, Task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    """A tiny Llama saved with its LM head (scoring and generation need one)."""
    import tiny_models

    return str(tiny_models.save("llama", tmp_path_factory.mktemp("icl-models") / "llama", head=True))

EN = {"animal": ["cat", "dog"], "color": ["red", "blue", "green"]}
TR = {"deu": {"cat": "katze", "dog": "hund", "red": "rot", "blue": "blau", "green": "grün", "the": "die", "and": "und",
              "one": "eins", "two": "zwei", "big": "haus"},
      "fra": {"cat": "chat", "dog": "chien", "red": "rouge", "blue": "bleu", "green": "vert", "the": "le", "and": "et",
              "one": "un", "two": "deux", "big": "maison"}}
FILLER = ["the", "and", "one", "two", "big"]


def parallel_task(n_train: int = 10, n_test: int = 6, leak: bool = True) -> Task:
    """Two classes, train and test parallel in eng, deu, fra; with ``leak``, a train item carries a test item's id
    and another a test item's text (neither may ever be a demonstration)."""
    rng = random.Random(0)
    labels = sorted(EN)
    data = {s: {"eng_Latn": [], "deu_Latn": [], "fra_Latn": []} for s in ("train", "test")}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            lab = labels[i % 2]
            words = [rng.choice(EN[lab]) for _ in range(2)] + [rng.choice(FILLER) for _ in range(i % 3 + 1)]
            rng.shuffle(words)
            words.append(FILLER[i % len(FILLER)])
            data[split]["eng_Latn"].append(Example(text=" ".join(words), label=labels.index(lab), id=f"{split}{i}"))
            for lg, m in TR.items():
                data[split][f"{lg}_Latn"].append(Example(text=" ".join(m[w] for w in words), label=labels.index(lab),
                                                         id=f"{split}{i}"))
    if leak:
        for lang, exs in data["train"].items():
            exs[0] = Example(text=exs[0].text, label=exs[0].label, id="test0")          # a test id
            exs[1] = Example(text=data["test"][lang][1].text, label=exs[1].label, id="train1")  # a test text
    return Task("tiny-icl", "classification", labels, data)


def test_demo_sources_are_one_list():
    from xling.methods.icl import DEMO_SOURCES
    from xling.recipes.eval.config import DEMO_SOURCES as FLAG_CHOICES

    assert FLAG_CHOICES == DEMO_SOURCES


def test_selection_never_uses_a_test_item_and_source_is_the_same_everywhere():
    from xling.recipes.eval.icl import DemoSelector

    task = parallel_task()
    tests = task.data["test"]
    test_ids = {e.id for exs in tests.values() for e in exs}
    sel = DemoSelector(task, "eng_Latn", 4, 0, test_ids, [e.text for exs in tests.values() for e in exs])
    pool_ids = [i for i, _ in sel.source_pool]
    assert "test0" not in pool_ids and "train1" not in pool_ids and len(pool_ids) == 8
    assert sel.left_out["eng_Latn"] == 2
    src = [i for i, _ in sel.source()]
    assert len(src) == 4 and not set(src) & test_ids
    for lang in ("deu_Latn", "fra_Latn"):  # target = the same items, in the test language
        chosen, note = sel.target(lang)
        assert note is None and [i for i, _ in chosen] == src
        assert all(it.text == next(e.text for e in task.data["train"][lang] if e.id == i) for i, it in chosen)
    texts = [e.text for exs in tests.values() for e in exs]
    again = DemoSelector(task, "eng_Latn", 4, 0, test_ids, texts)  # the seed fixes the items
    assert [i for i, _ in again.source()] == src
    other = DemoSelector(task, "eng_Latn", 4, 1, test_ids, texts)  # another seed: other items, never a test one
    assert not {i for i, _ in other.source()} & test_ids and "train1" not in {i for i, _ in other.source()}
    with pytest.raises(XlingError, match="are test items"):
        sel.check([("test3", None)])
    with pytest.raises(XlingError, match="has only 8 demonstrations"):
        DemoSelector(task, "eng_Latn", 9, 0, test_ids, [e.text for exs in tests.values() for e in exs])


def test_retrieval_equals_a_hand_cosine_top_k():
    from xling.methods.icl import top_k_similar

    g = torch.Generator().manual_seed(0)
    queries, pool = torch.randn(5, 7, generator=g), torch.randn(11, 7, generator=g)
    pool[3] = pool[8]  # a tie (the same row): the lower index first
    got = top_k_similar(queries, pool, 4).tolist()
    for qi, q in enumerate(queries.tolist()):
        sims = []
        for pj, p in enumerate(pool.tolist()):
            dot = sum(a * b for a, b in zip(q, p))
            sims.append((-(dot / (sum(a * a for a in q) ** 0.5 * sum(b * b for b in p) ** 0.5)), pj))
        hand = [j for _, j in sorted(sims, key=lambda t: (round(t[0], 12), t[1]))][:4]
        assert got[qi] == hand
    with pytest.raises(XlingError, match="only 11"):
        top_k_similar(queries, pool, 12)


def test_retrieved_demos_are_the_nearest_by_the_encoder(tiny_model_dirs):
    from xling.models.loading import load_model
    from xling.recipes.eval.icl import DemoSelector, embed_texts

    task = parallel_task()
    tests = task.data["test"]
    test_ids = {e.id for exs in tests.values() for e in exs}
    sel = DemoSelector(task, "eng_Latn", 3, 0, test_ids, [e.text for exs in tests.values() for e in exs])
    enc = load_model(str(tiny_model_dirs["bert"]), quiet=True)
    pool_texts = [it.text for _, it in sel.source_pool]
    queries = [e.text for e in tests["deu_Latn"]]
    pe, qe = embed_texts(enc, pool_texts, prefix="", batch_size=4), embed_texts(enc, queries, prefix="", batch_size=4)
    got = sel.retrieved(qe, pe)
    pn, qn = pe / pe.norm(dim=1, keepdim=True), qe / qe.norm(dim=1, keepdim=True)
    for i, chosen in enumerate(got):
        sims = (qn[i] @ pn.T).tolist()
        best = sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:3]
        assert [x for x, _ in chosen] == [sel.source_pool[j][0] for j in reversed(best)]  # most similar last
        assert not {x for x, _ in chosen} & test_ids


def test_paired_differences_equal_a_hand_computation():
    from xling.methods.icl import paired_accuracy_difference, paired_corpus_difference

    a = [1, 1, 0, 1, 0, 1, 1, 0, 1, 1]
    b = [0, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    d = paired_accuracy_difference(a, b, n_boot=500, seed=0)
    assert d["value"] == pytest.approx(np.mean(a) - np.mean(b)) and d["n"] == 10
    idx = np.random.default_rng(0).integers(0, 10, (500, 10))
    boot = np.asarray(a, float)[idx].mean(1) - np.asarray(b, float)[idx].mean(1)
    assert (d["low"], d["high"]) == pytest.approx((np.quantile(boot, 0.025), np.quantile(boot, 0.975)))
    # a corpus metric (a ratio of sums): recomputed from the same resampled items for both
    sa, sb = np.array([[1, 2], [3, 4], [0, 5], [2, 2]], float), np.array([[0, 2], [1, 4], [1, 5], [2, 2]], float)
    c = paired_corpus_difference(sa, sb, lambda s: s[0] / s[1], n_boot=300, seed=1)
    assert c["value"] == pytest.approx(6 / 13 - 4 / 13)
    idx = np.random.default_rng(1).integers(0, 4, (300, 4))
    boot = [sa[i].sum(0)[0] / sa[i].sum(0)[1] - sb[i].sum(0)[0] / sb[i].sum(0)[1] for i in idx]
    assert (c["low"], c["high"]) == pytest.approx((np.quantile(boot, 0.025), np.quantile(boot, 0.975)))


def _task_file(tmp_path, task) -> str:
    rows = [{"text": e.text, "label": task.labels[e.label], "lang": lang, "split": split, "id": e.id}
            for split, table in task.data.items() for lang, exs in table.items() for e in exs]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _csv(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def test_cli_end_to_end_writes_csvs_and_store_runs(decoder, tiny_model_dirs, tmp_path, monkeypatch, capsys):
    import xling.tasks.zeroshot as zs
    from xling.harness.store import ResultsStore

    seen = []
    real = zs.label_loglik

    def spy(model, tok, prompts, conts, *a, **kw):
        seen.extend(prompts)
        return real(model, tok, prompts, conts, *a, **kw)

    monkeypatch.setattr(zs, "label_loglik", spy)
    task = parallel_task()
    path, out, store = _task_file(tmp_path, task), tmp_path / "icl", tmp_path / "r.sqlite"
    args = ["eval", "--model", decoder, "--task", path, "--demos", "source,target,retrieved",
            "--shots", "3", "--demo-encoder", str(tiny_model_dirs["bert"]), "--n-boot", "50", "--batch-size", "8",
            "--out", str(out), "--store", str(store), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "target-source" in printed and "runs: source" in printed
    langs = {"eng_Latn", "deu_Latn", "fra_Latn"}
    rows = _csv(out / "icl.csv")
    assert {(r["lang"], r["demos"]) for r in rows} == \
        {(lg, s) for lg in langs for s in ("source", "target", "retrieved", "vote")}
    assert all(r["metric"] == "accuracy" and r["n"] == "6" and float(r["low"]) <= float(r["value"]) <= float(r["high"])
               for r in rows)
    diffs = _csv(out / "icl_differences.csv")
    assert {(r["lang"], r["comparison"]) for r in diffs} == \
        {(lg, c) for lg in langs for c in ("target-source", "retrieved-source", "retrieved-target", "retrieved-vote")}
    # the differences are those of the per-item predictions written next to them; the vote's, recomputed by hand
    # from the demonstrations file: each test item's majority label among its retrieved demonstrations
    preds = _csv(out / "predictions.csv")
    demos = [json.loads(line) for line in open(out / "demonstrations.jsonl", encoding="utf-8")]
    train_label = {e.id: e.label for exs in task.data["train"].values() for e in exs}
    gold = {(lang, e.id): e.label for lang, exs in task.data["test"].items() for e in exs}

    def vote_by_hand(ids):
        labs = [train_label[i] for i in ids]
        top = max(labs.count(x) for x in labs)
        return [x for x in labs if labs.count(x) == top][-1]  # a tie: the most similar (last) of the tied

    def acc(src, lang):
        if src == "vote":
            items = [int(vote_by_hand(d["demo_ids"]) == gold[(lang, d["item_id"])]) for d in demos
                     if d["demos"] == "retrieved" and d["lang"] == lang]
        else:
            items = [int(p["correct"]) for p in preds if p["condition"] == src and p["lang"] == lang]
        return sum(items) / len(items)

    for r in diffs:
        assert float(r["value"]) == pytest.approx(acc(r["a"], r["lang"]) - acc(r["b"], r["lang"]), abs=1e-5)
    for r in rows:
        assert float(r["value"]) == pytest.approx(acc(r["demos"], r["lang"]), abs=1e-5)
    assert "vote" in printed and "no language model" in printed
    # in English, target demonstrations are the source ones
    eng = {r["comparison"]: r for r in diffs if r["lang"] == "eng_Latn"}
    assert float(eng["target-source"]["value"]) == 0
    # every prompt holds exactly k demonstrations (k + 1 blocks), none a test item
    assert len(seen) == 3 * 3 * 6
    assert all(len(p.split("\n\n")) == 4 and p.endswith("Topic:") for p in seen)
    test_texts = {e.text for exs in task.data["test"].values() for e in exs}
    assert not any(t in "\n\n".join(p.split("\n\n")[:3]) for p in seen for t in test_texts)
    test_ids = {e.id for exs in task.data["test"].values() for e in exs}
    assert all(len(d["demo_ids"]) == 3 and not set(d["demo_ids"]) & test_ids for d in demos)
    src = {d["lang"]: d["demo_ids"] for d in demos if d["demos"] == "source"}
    assert len({tuple(v) for v in src.values()}) == 1  # the same source demonstrations for every language
    assert sum(d["demos"] == "retrieved" for d in demos) == 3 * 6
    # one eval run per source, with per-item predictions: consistency reads each
    runs = ResultsStore(store).runs("eval")
    assert len(runs) == 3 and sorted(r["config"]["config"]["demos"][0] for r in runs) == ["retrieved", "source",
                                                                                            "target"]
    assert main(["consistency", runs[0]["run_id"], "--store", str(store), "--out", str(tmp_path / "cons")]) == 0
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "In-context learning" in report and "<script" not in report.split("</h1>")[1][:2000]


def test_bad_input_is_one_line_exit_2(decoder, tmp_path, capsys):
    path = _task_file(tmp_path, parallel_task())
    base = ["eval", "--model", decoder, "--task", path, "--out", "none", "--store", "none",
            "--quiet"]
    assert main(base + ["--demos", "source,bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--demos" in err[0] and "bogus" in err[0]
    assert main(base + ["--demos", "source", "--shots", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shots 50" in err[0] and "has only 8" in err[0]


def test_generation_translation_demos(decoder, tiny_model_dirs, tmp_path, monkeypatch):
    from test_generation import _fake_bible

    import xling.tasks.bible_mt as bible_mt
    from xling.recipes.eval.run import evaluate

    import xling.engine.generate as eg

    monkeypatch.setattr(bible_mt, "bible_corpus", _fake_bible)
    seen, real = [], eg.greedy_generate

    def spy(model, tok, prompts, **k):
        seen.extend(prompts)
        return real(model, tok, prompts, **k)

    monkeypatch.setattr(eg, "greedy_generate", spy)
    kw = dict(model=decoder, task="bible-mt", task_options={"test_size": 4, "train_size": 6},
              langs=["de"], shots=2, max_new_tokens=3, batch_size=4, n_boot=50, progress=False, store=None)
    with pytest.raises(XlingError, match="--demo-source-lang"):
        evaluate(demos=["source", "target"], out=None, **kw)
    res = evaluate(demos=["source", "target", "retrieved"], demo_source_lang="fr",
                   demo_encoder=str(tiny_model_dirs["bert"]), out=tmp_path / "mt", **kw)
    assert res.kind == "icl" and res.task_type == "generation"
    assert set(res.results) == {"source", "target", "retrieved"}
    # 3 sources x 2 directions x 4 verses, each prompt k = 2 demonstration blocks and the query; source and
    # retrieved demonstrations pair English with French, target ones with German, the query is English/German
    assert len(seen) == 3 * 2 * 4 and all(len(p.split("\n\n")) == 3 for p in seen)
    demo_langs = [{line.split(":")[0] for b in p.split("\n\n")[:2] for line in b.split("\n")} for p in seen]
    assert sorted(map(sorted, demo_langs)).count(["English", "French"]) == 2 * 2 * 4
    assert sorted(map(sorted, demo_langs)).count(["English", "German"]) == 2 * 4
    assert all(p.split("\n\n")[-1].split("\n")[-1] in ("German:", "English:") for p in seen)
    rows = _csv(tmp_path / "mt" / "icl.csv")
    assert {(r["lang"], r["direction"], r["demos"]) for r in rows if r["metric"] == "chrf"} == \
        {("deu_Latn", d, s) for d in ("en-x", "x-en") for s in ("source", "target", "retrieved")}
    diffs = _csv(tmp_path / "mt" / "icl_differences.csv")
    assert {(r["direction"], r["metric"], r["comparison"]) for r in diffs} == \
        {(d, m, c) for d in ("en-x", "x-en") for m in ("chrf", "accuracy")
         for c in ("target-source", "retrieved-source", "retrieved-target")}
    demos = [json.loads(line) for line in open(tmp_path / "mt" / "demonstrations.jsonl", encoding="utf-8")]
    task = bible_mt.bible_mt(test_size=4, train_size=6)
    test_ids = {e.id for e in task.data["test"]["eng_Latn"]}
    assert all(len(d["demo_ids"]) == 2 and not set(d["demo_ids"]) & test_ids for d in demos)
    gens = [json.loads(line) for line in open(tmp_path / "mt" / "generations.jsonl", encoding="utf-8")]
    assert len(gens) == 3 * 2 * 4 and {g["demos"] for g in gens} == {"source", "target", "retrieved"}


def test_dominant_class_note_counts_by_hand():
    from xling.harness.scores import dominant_class_note

    labels = ["law", "poetry", "history"]
    preds = [0] * 18 + [1, 2]
    gold = [0] * 5 + [1] * 10 + [2] * 5
    note = dominant_class_note("classification", labels, preds, gold)
    assert "'law' for 18 of 20 items (90%)" in note and "5 of 20 gold labels" in note
    assert dominant_class_note("classification", labels, [0] * 17 + [1, 2, 1], gold) is None  # 85%: below the bar
    assert dominant_class_note("classification", labels, [0] * 20, gold) is None  # all: one_class_warning's case
    assert dominant_class_note("classification", labels, [0] * 8 + [1], gold[:9]) is None  # too few items
    assert "choice 2 for 19 of 20" in dominant_class_note("multiple-choice", ["a", "b", "c"], [2] * 19 + [0])


def test_a_model_that_predicts_one_label_is_said(decoder, tmp_path, monkeypatch, capsys):
    """Identical accuracies for every language and source are what a constant prediction gives: the summary says
    which label it is, per language and source."""
    import xling.tasks.zeroshot as zs

    def first_label(model, tok, prompts, conts, *a, **kw):
        return [[0.0] + [-1.0] * (len(c) - 1) for c in conts]

    monkeypatch.setattr(zs, "label_loglik", first_label)
    task = parallel_task()
    path, out = _task_file(tmp_path, task), tmp_path / "icl"
    assert main(["eval", "--model", decoder, "--task", path, "--demos", "source,target", "--shots", "2",
                 "--n-boot", "20", "--out", str(out), "--store", "none", "--quiet"]) == 0
    printed = capsys.readouterr().out
    notes = [line for line in printed.splitlines() if line.startswith("note:") and "for every item" in line]
    assert len(notes) == 2  # one line per source, the languages grouped
    assert all(f"answers {task.labels[0]!r} for every item in eng_Latn, deu_Latn, fra_Latn" in line
               for line in notes)


def test_fixed_demonstrations_are_label_balanced_by_hand():
    """One item of each label in turn, labels in the order they first appear in the seeded order; without labels
    the first k of that order."""
    from xling.methods.icl import demo_order, fixed_demos

    ids = [f"v{i}" for i in range(12)]
    labels = ["a"] * 8 + ["b"] * 3 + ["c"]
    order = demo_order(ids, 3)
    seen, queues = [], {}
    for i in order:
        queues.setdefault(labels[i], []).append(i)
        if labels[i] not in seen:
            seen.append(labels[i])
    hand = []
    while len(hand) < 7:
        for lab in seen:
            if queues[lab] and len(hand) < 7:
                hand.append(queues[lab].pop(0))
    got = fixed_demos(ids, 7, 3, labels)
    assert got == hand and {labels[i] for i in got[:3]} == {"a", "b", "c"}
    assert sorted(labels[i] for i in got) == ["a", "a", "a", "b", "b", "b", "c"]
    assert fixed_demos(ids, 7, 3) == order[:7]
    with pytest.raises(XlingError, match="labels for"):
        fixed_demos(ids, 2, 0, labels[:5])


def test_selector_balances_classification_unless_told_not_to():
    from xling.recipes.eval.icl import DemoSelector

    task = parallel_task(n_train=20)
    tests = task.data["test"]
    test_ids = {e.id for exs in tests.values() for e in exs}
    texts = [e.text for exs in tests.values() for e in exs]
    for seed in range(6):
        sel = DemoSelector(task, "eng_Latn", 2, seed, test_ids, texts)
        assert len({it.label for _, it in sel.source()}) == 2  # two demonstrations, both labels
    plain = [DemoSelector(task, "eng_Latn", 2, seed, test_ids, texts, balance=False) for seed in range(12)]
    assert any(len({it.label for _, it in s.source()}) == 1 for s in plain)  # unbalanced: some seeds draw one label


def test_label_vote_by_hand():
    from xling.errors import XlingError
    from xling.methods.icl import label_vote

    assert label_vote([2, 1, 1, 0]) == 1                 # the majority
    assert label_vote([2, 1, 0, 1, 2]) == 2              # 1 and 2 tie: 2 is the most similar (last) of the tied
    assert label_vote([0, 1, 2, 3]) == 3                 # all tie: the nearest demonstration's label
    assert label_vote(["a"]) == "a"
    with pytest.raises(XlingError):
        label_vote([])
