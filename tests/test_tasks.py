"""Task data: specs, readers, validation errors, registry, metrics, the libreoffice-topic split."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from xling.errors import XlingError
from xling.tasks import Example, Task, TaskSpec, load_task, load_task_spec, register_task
from xling.tasks import libreoffice as lot
from xling.tasks.metrics import accuracy, entity_f1, entity_scores, macro_f1, spans, task_metrics
from xling.tasks.provider import task_corpus


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def cls_rows():
    return [
        {"text": "the cat", "label": "animal", "lang": "en", "split": "train", "id": "a"},
        {"text": "red house", "label": "color", "lang": "en", "split": "train", "id": "b"},
        {"text": "the dog", "label": "animal", "lang": "en", "split": "test", "id": "c"},
        {"text": "blue house", "label": "color", "lang": "en", "split": "test", "id": "d"},
        {"text": "der hund", "label": "animal", "lang": "de", "split": "test", "id": "c"},
        {"text": "blau haus", "label": "color", "lang": "de", "split": "test", "id": "d"},
    ]


# ----------------------------------------------------------------------------- reading


def test_jsonl_default_fields(tmp_path):
    t = load_task(write_jsonl(tmp_path / "t.jsonl", cls_rows()))
    assert t.type == "classification" and t.labels == ["animal", "color"]
    assert t.langs("test") == ["deu_Latn", "eng_Latn"] and t.langs("train") == ["eng_Latn"]
    assert [e.label for e in t.examples("test", "deu_Latn")] == [0, 1]
    assert t.source_lang == "eng_Latn"
    assert t.fingerprint() == load_task(tmp_path / "t.jsonl").fingerprint()


def test_spec_with_per_file_lang_and_split_csv_tsv(tmp_path):
    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["premise", "hypothesis", "gold"])
        w.writerow(["a cat, sleeping", "an animal", "yes"])
        w.writerow(["a red house", "a dog", "no"])
    (tmp_path / "test.tsv").write_text("premise\thypothesis\tgold\nle chat\tun animal\tyes\nla maison\tun chien\tno\n",
                                       encoding="utf-8")
    spec = {"name": "nli", "text": ["premise", "hypothesis"], "label": "gold", "labels": ["yes", "no"],
            "files": [{"path": "train.csv", "split": "train", "lang": "en"},
                      {"path": "test.tsv", "split": "test", "lang": "fr"}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    t = load_task(tmp_path / "spec.json")
    assert t.name == "nli" and t.labels == ["yes", "no"]
    e = t.examples("train", "eng_Latn")[0]
    assert (e.text, e.text_pair, e.label) == ("a cat, sleeping", "an animal", 0)
    assert t.examples("test", "fra_Latn")[1].label == 1


def test_token_classification_and_multiple_choice(tmp_path):
    rows = [{"tokens": ["Anna", "sees", "New", "York"], "tags": ["B-PER", "O", "B-LOC", "I-LOC"], "lang": "en", "split": "train"},
            {"tokens": ["Anna", "sieht", "Berlin"], "tags": ["B-PER", "O", "B-LOC"], "lang": "de", "split": "train"}]
    t = load_task(write_jsonl(tmp_path / "ner.jsonl", rows))
    assert t.type == "token-classification"
    assert t.labels[0] == "O" and set(t.labels) == {"O", "B-PER", "B-LOC", "I-LOC"}
    assert [t.labels[i] for i in t.examples("train", "eng_Latn")[0].tags] == ["B-PER", "O", "B-LOC", "I-LOC"]
    mc = [{"text": "Where do cats live?", "choices": ["house", "sea"], "label": "A", "lang": "en", "split": "test"},
          {"text": "Wo?", "choices": ["Haus", "Meer", "Berg"], "label": 2, "lang": "de", "split": "test"}]
    t2 = load_task(write_jsonl(tmp_path / "mc.jsonl", mc))
    assert t2.type == "multiple-choice"
    assert [e.label for e in t2.examples("test", "eng_Latn")] == [0]
    assert t2.examples("test", "deu_Latn")[0].label == 2


def test_task_json_roundtrip(tmp_path):
    t = load_task(write_jsonl(tmp_path / "t.jsonl", cls_rows()))
    t.save(tmp_path / "task.json")
    t2 = load_task(tmp_path / "task.json")
    assert t2.fingerprint() == t.fingerprint() and t2.labels == t.labels


# ----------------------------------------------------------------------------- validation errors


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r[4].update(label="plant"), r"t\.jsonl:5: unknown label 'plant'"),
    (lambda r: r[2].update(text="   "), r"t\.jsonl:3: empty text in field 'text'"),
    (lambda r: r[1].pop("lang"), r"t\.jsonl:2: no language"),
    (lambda r: r[1].update(lang="xx-nonsense"), r"t\.jsonl:2: unknown language code"),
    (lambda r: r[0].pop("split"), r"t\.jsonl:1: no split"),
    (lambda r: r[5].update(label="animal"), r"label set of deu_Latn in the test split differs from eng_Latn \(lacks color\)"),
])
def test_validation_errors_name_file_and_line(tmp_path, mutate, message):
    rows = cls_rows()
    mutate(rows)
    with pytest.raises(XlingError, match=message):
        load_task(write_jsonl(tmp_path / "t.jsonl", rows))


def test_more_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x", "lang": "en", "split": "train"}\n{oops\n')
    with pytest.raises(XlingError, match=r"bad\.jsonl:2: invalid JSON"):
        load_task(tmp_path / "bad.jsonl")
    with pytest.raises(XlingError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(XlingError, match="4 words but 3 tags"):
        load_task(write_jsonl(tmp_path / "n.jsonl", [{"tokens": ["a", "b", "c", "d"], "tags": ["O", "O", "O"],
                                                       "lang": "en", "split": "train"}]))
    spec = {"files": [{"path": "missing.jsonl"}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    with pytest.raises(XlingError, match="task file not found"):
        load_task(tmp_path / "s.json")
    (tmp_path / "s2.json").write_text(json.dumps({"files": [{"path": "x.jsonl"}], "colour": 1}))
    with pytest.raises(XlingError, match="unknown key 'colour'"):
        load_task(tmp_path / "s2.json")
    rows = cls_rows()
    rows[5]["label"] = "animal"
    spec = TaskSpec(files=[{"path": str(write_jsonl(tmp_path / "t.jsonl", rows))}], strict_labels=False)
    assert load_task_spec(spec).labels == ["animal", "color"]  # allowed when not strict


def test_hf_dataset_without_datasets(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    (tmp_path / "ds").mkdir()
    with pytest.raises(XlingError, match=r"ds: reading a saved Hugging Face dataset needs the 'datasets' extra: "
                                         r"pip install 'datasets>=2\.14'"):
        load_task(tmp_path / "ds")


def test_hf_dataset_load_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]),
                                  "lang": datasets.Value("string")})
    import pyarrow as pa

    def ds(text, label, fp):  # explicit fingerprints: no dill hashing needed
        table = pa.table({"text": text, "label": label, "lang": ["en"] * len(text)})
        return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fp)

    dd = datasets.DatasetDict({"train": ds(["good", "bad"], [1, 0], "f1"), "validation": ds(["fine", "awful"], [1, 0], "f2")})
    dd.save_to_disk(str(tmp_path / "ds"))
    t = load_task(tmp_path / "ds")
    assert t.labels == ["neg", "pos"] and t.splits == ["train", "dev"]
    assert [e.label for e in t.examples("train", "eng_Latn")] == [1, 0]


def test_register_task_and_provider(tmp_path):
    from xling.harness.sources import load_text_source as load_corpus

    t = load_task(write_jsonl(tmp_path / "t.jsonl", cls_rows()))
    register_task("tiny-test-task", lambda: t)
    assert load_task("tiny-test-task") is t
    corpus = load_corpus("task:tiny-test-task")
    assert corpus.langs == ["deu_Latn", "eng_Latn"]
    assert corpus.sentences["deu_Latn"] == ["der hund", "blau haus"]
    assert corpus.meta["labels"] == ["animal", "color"] and corpus.meta["ids"] == ["c", "d"]
    sub = task_corpus(t, ["de"], max_sentences=1)
    assert len(sub) == 1 and sub.langs == ["deu_Latn", "eng_Latn"]


# ----------------------------------------------------------------------------- metrics


def test_accuracy_and_macro_f1_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for trial in range(20):
        n = rng.randint(1, 60)
        k = rng.randint(2, 6)
        gold = [rng.randrange(k) for _ in range(n)]
        pred = [rng.randrange(k) if rng.random() < 0.6 else g for g in gold]
        assert accuracy(gold, pred) == pytest.approx(sk.accuracy_score(gold, pred))
        assert macro_f1(gold, pred) == pytest.approx(sk.f1_score(gold, pred, average="macro", zero_division=0))


def _conlleval_chunks(tags):
    """An independent chunker in the style of conlleval's startOfChunk/endOfChunk."""
    def split(t):
        return ("O", "") if t == "O" else tuple(t.split("-", 1))

    chunks, start = [], None
    prev_tag, prev_type = "O", ""
    for i, t in enumerate(list(tags) + ["O"]):
        tag, typ = split(t)
        end = (prev_tag in ("B", "I") and (tag == "B" or tag == "O" or typ != prev_type))
        begin = (tag == "B") or (tag == "I" and (prev_tag == "O" or prev_type != typ))
        if end and start is not None:
            chunks.append((start, i, prev_type))
            start = None
        if begin:
            start = i
        prev_tag, prev_type = tag, typ
    return chunks


def test_entity_f1_against_independent_chunker():
    rng = random.Random(1)
    tagset = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold, pred = [], []
    for _ in range(200):
        n = rng.randint(1, 9)
        g = [rng.choice(tagset) for _ in range(n)]
        p = [t if rng.random() < 0.7 else rng.choice(tagset) for t in g]
        gold.append(g)
        pred.append(p)
    tp = n_g = n_p = 0
    for g, p in zip(gold, pred):
        cg, cp = set(_conlleval_chunks(g)), set(_conlleval_chunks(p))
        assert spans(g) == cg
        tp += len(cg & cp)
        n_g += len(cg)
        n_p += len(cp)
    prec, rec = tp / n_p, tp / n_g
    assert entity_f1(gold, pred) == pytest.approx(2 * prec * rec / (prec + rec))


def test_entity_f1_examples():
    assert spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"]) == {(0, 2, "PER"), (3, 5, "LOC"), (5, 6, "LOC")}
    s = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])  # boundary error: no credit
    assert s == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    m = task_metrics("token-classification", ["O", "B-X", "I-X"], [[1, 2, 0]], [[1, 2, 0]])
    assert m["entity_f1"] == 1.0 and m["token_accuracy"] == 1.0


# ----------------------------------------------------------------------------- libreoffice-topic construction


def _fake_help(n_pages: int = 60, seed: int = 0):
    """Synthetic help tables: apps x pages x paragraphs, some copied ids and duplicate texts."""
    rng = random.Random(seed)
    apps = ["swriter", "scalc", "simpress", "sdraw", "smath", "sbasic", "schart", "shared", "sdatabase"]
    en, de, fr = {}, {}, {}
    for p in range(n_pages):
        app = apps[p % len(apps)]
        for j in range(6):
            pid = f"par_id{p}{j}"
            if j == 5 and p > 10:
                pid = f"par_id{p - 9}0"  # an id reused on another page (a copied paragraph)
            words = " ".join(rng.choice(["cell", "slide", "formula", "macro", "page", "chart", "table", "frame"])
                             for _ in range(8))
            text = f"In {app} paragraph {p} {j} you can use {words}."
            if j == 4:
                text = f"Press the OK button to close this dialog in {app}."  # duplicated English text
            key = f"text/{app}/01/page{p}#{pid}"
            en[key] = text
            de[key] = " ".join("de" + w for w in text.split())
            if rng.random() < 0.9:
                fr[key] = " ".join("fr" + w for w in text.split())
            else:
                fr[key] = text  # untranslated fallback
    return {"eng_Latn": en, "deu_Latn": de, "fra_Latn": fr}


@pytest.fixture
def fake_help(monkeypatch):
    from xling.data import libreoffice as lo

    tables = _fake_help()
    monkeypatch.setattr(lo, "_packages", lambda kind: {k: f"libreoffice-help-{k[:2]}" for k in tables})
    monkeypatch.setattr(lo, "help_table", lambda lang: tables[lang])
    return tables


def test_libreoffice_topic_split_has_no_leakage(fake_help):
    t = lot.libreoffice_topic(train_size=100, dev_size=20, test_size=40, min_chars=20, min_words=4,
                              min_class_rows=1, quiet=True)
    assert t.labels == lot.LABELS and t.langs("test") == ["deu_Latn", "eng_Latn", "fra_Latn"]
    lot.check_no_leakage(t)
    # independently: no bare paragraph id and no normalised English text in two splits
    where: dict[str, str] = {}
    en = fake_help["eng_Latn"]
    for split, table in t.data.items():
        for e in table["eng_Latn"]:
            for key in (e.id.partition("#")[2].split("~")[0], lot.normalize_text(en[e.id])):
                assert where.setdefault(key, split) == split, (key, split)
    # the test set is parallel and never holds an untranslated fallback
    ids = [e.id for e in t.examples("test", "eng_Latn")]
    assert [e.id for e in t.examples("test", "fra_Latn")] == ids
    assert all(e.text != en[e.id] for e in t.examples("test", "fra_Latn"))
    # shared and sdatabase are not classes; every label is the page's application
    for e in t.examples("train", "eng_Latn"):
        assert lot.CLASS_MAP[e.id.split("/")[1]] == t.labels[e.label]
    # deterministic; another seed gives another split
    t2 = lot.libreoffice_topic(train_size=100, dev_size=20, test_size=40, min_chars=20, min_words=4,
                               min_class_rows=1, quiet=True, cache=False)
    assert t2.fingerprint() == t.fingerprint()
    t3 = lot.libreoffice_topic(train_size=100, dev_size=20, test_size=40, min_chars=20, min_words=4,
                               min_class_rows=1, quiet=True, cache=False, seed=1)
    assert t3.fingerprint() != t.fingerprint()


def test_leakage_check_catches_a_leak():
    e = Example(text="A long enough paragraph about cells.", label=0, id="text/scalc/01/a#par_id1")
    e2 = Example(text="Another one.", label=0, id="text/scalc/01/b#par_id1")
    t = Task("x", "classification", ["calc"], {"train": {"eng_Latn": [e]}, "test": {"eng_Latn": [e2]}})
    with pytest.raises(XlingError, match="par_id1"):
        lot.check_no_leakage(t)


def test_group_keys_and_balanced_sample():
    groups = lot.group_keys(["p/a#par_1", "p/b#par_1", "p/c#par_2", "p/d#par_2~2"])
    assert groups["p/a#par_1"] == groups["p/b#par_1"] != groups["p/c#par_2"] == groups["p/d#par_2~2"]
    labels = {f"k{i}": ("a" if i < 90 else "b") for i in range(100)}
    s = lot.balanced_sample(list(labels), labels, 20, seed=0, salt="x")
    assert sum(labels[k] == "b" for k in s) == 10
    assert lot.mostly_english("Klicken Sie OK", "Click OK") is False
    assert lot.mostly_english("Click the OK button now", "Click the OK button now please") is True


@pytest.mark.slow
def test_real_libreoffice_topic():
    t = load_task("libreoffice-topic", quiet=True)
    lot.check_no_leakage(t)
    targets = [lang for lang in t.langs("test") if lang != "eng_Latn"]
    assert len(targets) >= 20
    assert len(t.examples("train", "eng_Latn")) == 2000
    ids = [e.id for e in t.examples("test", "eng_Latn")]
    for lang in targets:
        assert [e.id for e in t.examples("test", lang)] == ids


def test_unlabeled_text_never_holds_dev_or_test_text(monkeypatch):
    """`--text unlabeled:libreoffice-topic`: help paragraphs of the language minus every paragraph
    whose id or text is a dev/test example, minus untranslated fallbacks, each text once."""
    from xling.data import libreoffice as lo
    from xling.harness.training import read_module_text
    from xling.tasks.core import Example, Task
    from xling.tasks.libreoffice import unlabeled_text

    en = {
        "text/swriter/a.xhp#par_id1": "Inserts a table into the current document at the cursor.",
        "text/swriter/a.xhp#par_id2": "Choose Format - Paragraph to change the indents of the text.",
        "text/scalc/b.xhp#par_id3": "Sums the values of the selected cells in the column shown.",
        "text/shared/c.xhp#par_id4": "Opens a dialog where you can choose the file format to use.",
        "text/shared/c.xhp#par_id5": "Closes the window and discards all of the changes you made.",
    }
    de = {
        "text/swriter/a.xhp#par_id1": "Fügt eine Tabelle an der Cursorposition in das Dokument ein.",
        "text/swriter/a.xhp#par_id1~2": "Eine Kopie desselben Absatzes auf einer anderen Seite, auch gesperrt.",
        "text/swriter/a.xhp#par_id2": "Wählen Sie Format - Absatz, um die Einzüge des Textes zu ändern.",
        "text/scalc/b.xhp#par_id3": "Sums the values of the selected cells in the column shown.",       # fallback
        "text/shared/c.xhp#par_id4": "Öffnet einen Dialog, in dem Sie das Dateiformat wählen können.",
        "text/shared/c.xhp#par_id5": "Öffnet einen Dialog, in dem Sie das Dateiformat wählen können.",   # duplicate
        "text/shared/c.xhp#par_id6": "Kurz.",                                                            # too short
        "text/shared/c.xhp#par_id7": "Dieser Absatz steht im Testtext eines anderen Absatzes hier.",
    }
    tables = {"eng_Latn": en, "deu_Latn": de}
    monkeypatch.setattr(lo, "_packages", lambda kind: {"eng_Latn": "libreoffice-help-en-us",
                                                       "deu_Latn": "libreoffice-help-de"})
    monkeypatch.setattr(lo, "help_table", lambda lang: tables[lang])
    held = Example(text=de["text/shared/c.xhp#par_id7"], label=0, id="text/swriter/z.xhp#par_id99")
    task = Task("libreoffice-topic", "classification", ["a", "b"], {
        "train": {"eng_Latn": [Example(text=en["text/swriter/a.xhp#par_id2"], label=0, id="text/swriter/a.xhp#par_id2")]},
        "dev": {"eng_Latn": []},
        "test": {"eng_Latn": [Example(text=en["text/swriter/a.xhp#par_id1"], label=0, id="text/swriter/a.xhp#par_id1")],
                 "deu_Latn": [Example(text=de["text/swriter/a.xhp#par_id1"], label=0, id="text/swriter/a.xhp#par_id1"),
                              held]},
    })
    got = unlabeled_text("de", task)
    assert sorted(got) == sorted([de["text/swriter/a.xhp#par_id2"], de["text/shared/c.xhp#par_id4"]])
    assert unlabeled_text("de", task) == got  # a fixed order
    eng = unlabeled_text("en", task)
    assert en["text/swriter/a.xhp#par_id1"] not in eng and en["text/scalc/b.xhp#par_id3"] in eng
    import xling.tasks.libreoffice as tl

    monkeypatch.setattr(tl, "libreoffice_topic", lambda quiet=True: task)
    assert sorted(read_module_text("unlabeled:libreoffice-topic", "deu", 5)) == sorted(got)
    with pytest.raises(XlingError, match="no unlabeled text source"):
        read_module_text("unlabeled:nope", "deu")
    with pytest.raises(XlingError, match="no LibreOffice help package"):
        unlabeled_text("sw", task)
