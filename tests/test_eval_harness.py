"""``xling eval --harness``: lm-evaluation-harness tasks on a model xling loads, items into the results store.

A tiny random Llama (with its LM head saved, so every load is the same model) and a fake Bible (the corpus
reader of ``bible-genre`` patched to return a small synthetic parallel corpus in the tiny vocabulary): the local
harness task is written from xling's data, so nothing is fetched. The per-sample answers the harness logs must be
the items the store holds, and its accuracy must be xling's own zero-shot scorer's on the same prompts (the
harness's ``acc`` is the argmax of summed log-likelihoods: xling's ``normalize="sum"``).

lm-eval (the ``harness`` extra) pulls in datasets, pyarrow, scikit-learn and more (about 350 MB): it is not part
of the ``test`` extra, so these tests skip where it is not installed (``pip install -e '.[harness]'``).
"""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest

import tiny_models
from xling.errors import XlingError

VERBALIZERS = {"law": "cat", "history": "dog", "poetry": "house", "prophets": "red", "gospels": "blue",
               "letters": "green"}
TASK_OPTIONS = {"train_size": 6, "dev_size": 4, "test_size": 6}
WORDS = {"eng_Latn": "the a cat dog house sees runs big small red blue green one two three and".split(),
         "deu_Latn": "der die das katze hund haus sieht rot blau grün eins zwei drei und".split(),
         "fra_Latn": "le la chat chien maison voit rouge bleu vert un deux trois et".split()}
DIVISIONS = ("law", "history", "poetry", "prophets", "gospels", "letters")


def _fake_corpus(langs=None, quiet=False, **_):
    """6 divisions x 8 chapters x 2 verses, parallel in English, German and French (words of the tiny vocab)."""
    from xling.data.corpus import ParallelCorpus

    ids, divisions = [], []
    for d, div in enumerate(DIVISIONS):
        for chapter in range(1, 9):
            for verse in (1, 2):
                ids.append(f"B{d} {chapter}:{verse}")
                divisions.append(div)
    sentences = {}
    for lang, words in WORDS.items():
        if langs is not None and lang != "eng_Latn" and lang not in langs:
            continue
        sentences[lang] = [" ".join(words[(i * 7 + k * (d + 3)) % len(words)] for k in range(5 + i % 3))
                           for i, d in enumerate(range(len(ids)))]
    return ParallelCorpus("bible", sentences, {"ids": ids, "divisions": divisions, "source": "fake bible",
                                               "translations": {}})


@pytest.fixture
def fake_bible(monkeypatch):
    import xling.tasks.bible as bible
    import xling.tasks.bible_mt as bible_mt

    monkeypatch.setattr(bible, "bible_corpus", _fake_corpus)
    monkeypatch.setattr(bible_mt, "bible_corpus", _fake_corpus)


@pytest.fixture(scope="module")
def causal_llama(tmp_path_factory):
    """A tiny random LlamaForCausalLM saved whole (LM head included: the same model at every load)."""
    import torch
    from transformers import LlamaForCausalLM

    base, tok = tiny_models.build("llama")
    torch.manual_seed(1)
    model = LlamaForCausalLM(base.config).eval()
    tok.eos_token = "</s>"  # generation stops there (the config's eos_token_id); the harness decodes it
    folder = tmp_path_factory.mktemp("causal-llama")
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def _csv(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _need_lm_eval():
    return pytest.importorskip("lm_eval", reason="the 'harness' extra (lm-eval) is not installed: "
                                                  "pip install -e '.[harness]'")


def _cfg(model, **kw):
    from xling.recipes.eval.config import EvalConfig

    base = dict(model=str(model), harness=["bible-genre"], task_options=dict(TASK_OPTIONS), verbalizers=VERBALIZERS,
                batch_size=4, progress=False)
    return EvalConfig(**(base | kw))


# ----------------------------------------------------------------------------- pure helpers (no lm-eval needed)


@pytest.mark.parametrize("name,request_,lang,stem", [
    ("xnli_de", "xnli", "deu_Latn", "xnli"),
    ("xnli_de", "", "deu_Latn", "xnli"),
    ("belebele_deu_Latn", "belebele", "deu_Latn", "belebele"),
    ("global_mmlu_de_anatomy", "global_mmlu", "deu_Latn", "global_mmlu_anatomy"),
    ("paws_zh", "paws_x", "zho_Hans", "paws"),
    ("arc_easy", "", None, "arc_easy"),   # 'arc' is a language code (Aramaic), but not at the end of a name
    ("hellaswag", "hellaswag", None, "hellaswag"),
])
def test_language_of_a_harness_task_name(name, request_, lang, stem):
    from xling.harness.lm_harness import split_lang

    assert split_lang(name, request_) == (lang, stem)


def test_sample_answer_multiple_choice_and_generation():
    from xling.harness.lm_harness import sample_answer

    mc = {"target": 2, "arguments": [("q", " a"), ("q", " b"), ("q", " c")],
          "filtered_resps": [(-3.0, False), (-1.0, True), (-1.0, False)]}
    assert sample_answer(mc, "multiple_choice") == ("1", "2", 3)  # the first of equal maxima, as acc counts it
    assert sample_answer(mc, "multiple_choice", ["x", "y", "z"]) == ("y", "z", 3)
    assert sample_answer(dict(mc, target="c"), "multiple_choice") == ("1", "2", 3)  # gold given as the choice text
    gen = {"target": "Paris", "filtered_resps": ["Paris"]}
    assert sample_answer(gen, "generate_until") == ("Paris", "Paris", 0)


def test_export_writes_yaml_and_jsonl(fake_bible, tmp_path):
    import yaml

    from xling.tasks.harness_export import export_harness_task, read_manifest
    from xling.tasks.registry import load_task
    from xling.tasks.zeroshot import verbalize

    task = load_task("bible-genre", **TASK_OPTIONS)
    manifest = export_harness_task(task, tmp_path / "tmp", langs=["de", "en"], final=tmp_path / "final")
    assert manifest["group"] == "xling_bible_genre"
    assert manifest["tasks"] == {"xling_bible_genre_deu_Latn": "deu_Latn", "xling_bible_genre_eng_Latn": "eng_Latn"}
    cfg = yaml.safe_load((tmp_path / "tmp" / "deu_Latn.yaml").read_text(encoding="utf-8"))
    assert cfg["output_type"] == "multiple_choice" and cfg["dataset_path"] == "json"
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "final" / "deu_Latn.jsonl").resolve())
    assert cfg["fewshot_split"] == "dev"  # demonstrations never come from the scored split
    group = yaml.safe_load((tmp_path / "tmp" / "_group.yaml").read_text(encoding="utf-8"))
    assert group["group"] == "xling_bible_genre" and sorted(group["task"]) == sorted(manifest["tasks"])
    docs = [json.loads(x) for x in (tmp_path / "tmp" / "deu_Latn.jsonl").read_text(encoding="utf-8").splitlines()]
    examples = task.data["test"]["deu_Latn"]
    assert [d["id"] for d in docs] == [e.id for e in examples]
    assert [d["label"] for d in docs] == [e.label for e in examples]
    assert docs[0]["query"] == f"Text: {examples[0].text}\nTopic:"
    assert docs[0]["choices"] == [verbalize(x) for x in task.labels]
    assert read_manifest(tmp_path / "tmp")["n_examples"] == {"deu_Latn": 6, "eng_Latn": 6}
    (tmp_path / "tmp" / "xling_harness.json").write_text("{", encoding="utf-8")
    with pytest.raises(XlingError, match="cannot be read"):
        read_manifest(tmp_path / "tmp")


def test_export_refuses_tagging_tasks(tmp_path):
    from xling.tasks.core import Example, Task
    from xling.tasks.harness_export import export_harness_task

    task = Task("ner", "token-classification", ["O", "B-PER"],
                {"test": {"eng_Latn": [Example(tokens=["a"], tags=[0])]}})
    with pytest.raises(XlingError, match="classification, multiple-choice and generation"):
        export_harness_task(task, tmp_path / "x")


def test_missing_extra_is_one_line(monkeypatch, causal_llama, fake_bible):
    from xling.recipes.eval.run import evaluate

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(XlingError, match=r"needs the 'harness' extra: pip install 'lm-eval>=0\.4\.12'"):
        evaluate(_cfg(causal_llama, out=None, store=None))


# ----------------------------------------------------------------------------- end to end (lm-eval installed)


def test_local_harness_task_end_to_end(causal_llama, fake_bible, tmp_path, one_thread):
    """The local bible-genre harness task on a tiny Llama: per-sample answers = stored items = xling's zero-shot."""
    _need_lm_eval()
    from xling.harness.store import ResultsStore
    from xling.recipes.eval.run import evaluate
    from xling.tasks.registry import load_task
    from xling.tasks.zeroshot import label_loglik

    store = tmp_path / "results.sqlite"
    res = evaluate(_cfg(causal_llama, out=tmp_path / "out", store=store))
    assert res.kind == "harness" and len(res.runs) == 1 and not res.skipped
    run = res.runs[0]
    assert run.local and run.task == "bible-genre" and sorted(run.langs) == ["deu_Latn", "eng_Latn", "fra_Latn"]

    # 1. the store holds exactly the harness's per-sample output
    task = load_task("bible-genre", **TASK_OPTIONS)
    db = ResultsStore(store)
    stored = {r["lang"]: r for r in db.predictions(run.run_id)}
    items = {r["lang"]: r for r in db.items(run.run_id)}
    assert set(stored) == set(run.langs) == set(items)
    for leaf, lang in run.leaves.items():
        samples = sorted(res.samples[leaf], key=lambda s: s["doc_id"])
        examples = task.data["test"][lang]
        assert [s["doc"]["id"] for s in samples] == [e.id for e in examples] == stored[lang]["item_ids"]
        argmax = [max(range(len(s["filtered_resps"])), key=lambda j: (s["filtered_resps"][j][0], -j)) for s in samples]
        assert stored[lang]["predictions"] == [task.labels[j] for j in argmax]
        assert stored[lang]["labels"] == [task.labels[e.label] for e in examples]
        assert stored[lang]["correct"] == [int(s["acc"]) for s in samples]
        assert items[lang]["correct"] == "".join(str(int(s["acc"])) for s in samples)

        # 2. the harness's log-likelihoods are xling's zero-shot scorer's (summed) on the same prompts
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(causal_llama, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(causal_llama)
        prompts = [s["doc"]["query"] for s in samples]
        ours = label_loglik(model, tok, prompts, [[VERBALIZERS[x] for x in task.labels]] * len(prompts), "sum",
                            batch_size=4)
        theirs = [[r[0] for r in s["filtered_resps"]] for s in samples]
        assert all(math.isclose(a, b, abs_tol=1e-4) for ra, rb in zip(ours, theirs) for a, b in zip(ra, rb))

    # 3. the accuracy is xling's own zero-shot eval's (normalize="sum"), item by item
    zs = evaluate(model=str(causal_llama), task=task, zero_shot=True, normalize="sum", verbalizers=VERBALIZERS,
                  out=None, store=store, progress=False, batch_size=4)
    for lang in run.langs:
        assert zs.predictions[lang]["predictions"] == stored[lang]["predictions"]
        assert zs.score(lang, "accuracy") == pytest.approx(sum(stored[lang]["correct"]) / 6)
        assert zs.ids_hash[lang] == items[lang]["ids_hash"]  # the same items: xling compare pairs them
    scores = {(r["lang"], r["metric"]): r["value"] for r in db.task_scores(run.run_id)}
    for lang, leaf in ((v, k) for k, v in run.leaves.items()):
        assert scores[(lang, "accuracy")] == pytest.approx(res.results["results"][leaf]["acc,none"])
        assert scores[(lang, "acc_norm")] == pytest.approx(res.results["results"][leaf]["acc_norm,none"])

    # 4. the files: the harness's results dict, the tidy CSV, predictions.csv, the report
    out = tmp_path / "out"
    saved = json.loads((out / "harness_results.json").read_text(encoding="utf-8"))
    assert "samples" not in saved and saved["results"]["xling_bible_genre"]["acc,none"] == pytest.approx(
        res.results["results"]["xling_bible_genre"]["acc,none"])
    rows = _csv(out / "harness_scores.csv")
    assert list(rows[0]) == ["task", "lang", "metric", "filter", "value", "stderr", "n"]
    de = next(r for r in rows if r["task"] == "xling_bible_genre_deu_Latn" and r["metric"] == "acc")
    assert de["lang"] == "deu_Latn" and float(de["value"]) == pytest.approx(scores[("deu_Latn", "accuracy")], rel=1e-5)
    assert float(de["stderr"]) >= 0 and de["n"] == "6"
    preds = _csv(out / "predictions.csv")
    assert len(preds) == 18 and {p["task"] for p in preds} == {"bible-genre"}
    assert "at chance" in (out / "report.html").read_text(encoding="utf-8")
    run_rec = next(r for r in db.runs("eval") if r["run_id"] == run.run_id)
    assert run_rec["corpus"] == "task:bible-genre" and run_rec["config"]["settings"]["mode"] == "harness"

    # a language answered with one label everywhere is said in the run's notes (and only then, at n = 6)
    for lang in run.langs:
        said = [n for n in run.notes if n.startswith(f"{lang}: the model predicts")]
        assert len(said) == int(len(set(stored[lang]["predictions"])) == 1)
        # a prompted model gets the prompting hint (label bias), never a hint about training it did not have
        assert all("Zhao et al. 2021" in n and "check the training" not in n and "gold labels" in n for n in said)

    # 5. xling compare pairs the harness run with the zero-shot eval run over items (same items, same metric)
    from xling.recipes.compare.run import BY_ITEMS, compare_runs

    cmp = compare_runs(store, [zs.run_id, run.run_id], bootstrap=200)
    assert cmp.kind == "task" and cmp.what == "bible-genre" and cmp.metric == "accuracy"
    assert cmp.source == "eng_Latn" and cmp.diffs[0]["method"] == BY_ITEMS and cmp.diffs[0]["mean"] == 0.0


def test_cli_harness_run_consistency_and_export(causal_llama, fake_bible, tmp_path, capsys, one_thread):
    """The command line: a harness run, `xling consistency` on it, an exported folder run as a --harness entry."""
    _need_lm_eval()
    from xling.cli import main

    store = tmp_path / "r.sqlite"
    opts = [x for k, v in TASK_OPTIONS.items() for x in ("--task-option", f"{k}={v}")]
    assert main(["eval", "--harness", "bible-genre", "--model", str(causal_llama), *opts, "--langs", "en,de",
                 "--batch-size", "4", "--store", str(store), "--out", str(tmp_path / "h"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bible-genre: run" in printed and "accuracy" in printed and "eng_Latn" in printed
    run_id = printed.split("bible-genre: run ", 1)[1].split()[0]
    assert main(["consistency", run_id, "--store", str(store), "--out", str(tmp_path / "c"), "--n-boot", "50"]) == 0
    rows = _csv(tmp_path / "c" / "consistency.csv")
    assert {(r["lang_a"], r["lang_b"]) for r in rows} == {("deu_Latn", "eng_Latn"), ("eng_Latn", "deu_Latn")}
    assert all(int(r["n"]) == 6 for r in rows)
    capsys.readouterr()

    # the export command, then the folder as a --harness entry (one demonstration per prompt, from the dev split):
    # the same items
    folder = tmp_path / "exported"
    assert main(["task", "--task", "bible-genre", *opts, "--langs", "en,de", "--export-harness", str(folder)]) == 0
    assert "xling_bible_genre" in capsys.readouterr().out
    assert (folder / "deu_Latn.yaml").is_file() and (folder / ".xling-output.json").is_file()
    assert main(["eval", "--harness", str(folder), "--model", str(causal_llama), "--batch-size", "4",
                 "--harness-fewshot", "1", "--store", str(store), "--out", str(tmp_path / "h2"), "--quiet"]) == 0
    capsys.readouterr()
    first = _csv(tmp_path / "h" / "predictions.csv")
    again = _csv(tmp_path / "h2" / "predictions.csv")
    assert [(r["item_id"], r["lang"], r["label"]) for r in first] == [(r["item_id"], r["lang"], r["label"])
                                                                     for r in again]


def test_translation_task_as_harness_generation(causal_llama, fake_bible, tmp_path, one_thread):
    """bible-mt as local generate_until tasks: the prompts are xling's own generation prompts, the items' correctness
    is sentence chrF >= --correct-chrf of the text the harness generated, and the chrF the store keeps per item is
    sacrebleu's on the same pair."""
    _need_lm_eval()
    from xling.harness.store import ResultsStore
    from xling.methods.generation import sentence_chrf
    from xling.recipes.eval.run import evaluate
    from xling.tasks.generation import generation_units
    from xling.tasks.registry import load_task

    opts = {"test_size": 3, "train_size": 2}
    store = tmp_path / "r.sqlite"
    res = evaluate(_cfg(causal_llama, harness=["bible-mt"], task_options=opts, langs=["de"], shots=1,
                        max_new_tokens=4, correct_chrf=1.0, out=tmp_path / "o", store=store))
    run = res.runs[0]
    assert run.task == "bible-mt" and run.task_type == "generation"
    assert sorted(run.langs) == ["deu_Latn:en-x", "deu_Latn:x-en"]
    task = load_task("bible-mt", **opts)
    units = {f"{lang}:{d}": items for lang, d, items in generation_units(task, ["deu_Latn"], shots=1)}
    stored = {r["lang"]: r for r in ResultsStore(store).predictions(run.run_id)}
    for leaf, unit in run.leaves.items():
        samples = sorted(res.samples[leaf], key=lambda x: x["doc_id"])
        assert [x["doc"]["query"] for x in samples] == [it.prompt for it in units[unit]]
        assert [x["arguments"][0][0] for x in samples] == [it.prompt for it in units[unit]]  # what the model read
        assert stored[unit]["item_ids"] == [it.id for it in units[unit]]
        assert stored[unit]["labels"] == [it.reference for it in units[unit]]
        gens = [x["filtered_resps"][0] for x in samples]
        assert stored[unit]["predictions"] == gens
        assert stored[unit]["correct"] == [int(c >= 1.0) for c in sentence_chrf(gens, stored[unit]["labels"])]
    rows = _csv(tmp_path / "o" / "harness_scores.csv")
    assert {r["metric"] for r in rows} >= {"chrf", "bleu"}


def _offline(monkeypatch):
    """The hub client and datasets read HF_HUB_OFFLINE when first imported (earlier in this session): set it there
    too, so a hub dataset fails at once instead of after the client's retries."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_hub_data_offline_is_one_line_or_skipped(causal_llama, fake_bible, tmp_path, capsys, monkeypatch, one_thread):
    """A harness task on a hub dataset, offline: one line, exit 2; beside a local task: skipped with one line.
    (The user's own YAML in --harness-include: the harness's 15,000-task index is not read.)"""
    _need_lm_eval()
    from xling.cli import main

    _offline(monkeypatch)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "nli.yaml").write_text("task: my_xnli_de\ndataset_path: facebook/xnli\ndataset_name: de\n"
                                   "test_split: test\noutput_type: multiple_choice\ndoc_to_text: premise\n"
                                   "doc_to_choice: [a, b, c]\ndoc_to_target: label\n", encoding="utf-8")
    base = ["eval", "--model", str(causal_llama), "--harness-include", str(mine), "--store", "none",
            "--out", str(tmp_path / "x"), "--quiet"]
    assert main([*base, "--harness", "my_xnli_de"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "my_xnli_de" in err and "needs the network" in err
    assert "Traceback" not in err
    opts = [x for k, v in TASK_OPTIONS.items() for x in ("--task-option", f"{k}={v}")]
    assert main([*base, "--harness", "bible-genre,my_xnli_de", *opts, "--langs", "en"]) == 0
    err = capsys.readouterr().err
    assert len([x for x in err.splitlines() if "my_xnli_de" in x and "skipped" in x]) == 1
    assert (tmp_path / "x" / "harness_scores.csv").is_file()


@pytest.mark.slow
def test_xnli_offline_is_one_line(causal_llama, tmp_path, capsys, monkeypatch):
    """`xling eval --harness xnli` offline: the harness's own task, one line naming the network, exit 2 (reads the
    harness's full task index: some 15 s)."""
    _need_lm_eval()
    from xling.cli import main

    _offline(monkeypatch)
    assert main(["eval", "--harness", "xnli", "--model", str(causal_llama), "--store", "none",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "harness task xnli" in err and "needs the network" in err
    assert main(["eval", "--harness", "no_such_task_xyz", "--model", str(causal_llama), "--store", "none",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a harness task" in err


def test_harness_errors(causal_llama, tiny_model_dirs, fake_bible, tmp_path):
    _need_lm_eval()
    from xling.recipes.eval.run import evaluate

    with pytest.raises(XlingError, match="is an encoder"):
        evaluate(_cfg(tiny_model_dirs["bert"], out=None, store=None))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(XlingError, match="--harness-include"):
        evaluate(_cfg(causal_llama, harness=[str(tmp_path / "plain")], out=None, store=None))
    with pytest.raises(XlingError, match="not in the test split of task bible-genre"):
        evaluate(_cfg(causal_llama, langs=["sw"], out=None, store=None))


def test_no_git_noise_outside_a_checkout(causal_llama, fake_bible, tmp_path, monkeypatch, capfd, one_thread):
    """Run from a folder that is no git checkout: the harness's own ``git describe`` probe must not print
    ``fatal: not a git repository`` on the user's terminal (xling records its own versions)."""
    _need_lm_eval()
    import lm_eval.evaluator as ev

    from xling.recipes.eval.run import evaluate

    before = ev.get_git_commit_hash
    work = tmp_path / "not-a-checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    evaluate(_cfg(causal_llama, out=tmp_path / "out", store=None, max_examples=2))
    err = capfd.readouterr().err
    assert "not a git repository" not in err
    assert ev.get_git_commit_hash is before  # restored


def test_harness_batch_size_is_capped_by_the_logits_memory(causal_llama, fake_bible, tmp_path, capfd, monkeypatch,
                                                            one_thread):
    """HFLM holds a whole batch's float32 logits over the vocabulary: the batch is lowered to fit the budget, with
    one note, and the per-item answers and log-likelihoods are those of the uncapped run."""
    _need_lm_eval()
    from xling.harness import lm_harness
    from xling.recipes.eval.run import evaluate

    # by hand: 3 copies x 128 tokens x 262,144 words x 4 bytes = 384 MiB a prompt; 4 GiB / that = 10
    assert lm_harness.harness_batch_size(32, 262_144) == 10
    assert lm_harness.harness_batch_size(32, 49_152) == 32  # SmolLM2: 72 MiB a prompt, 56 fit
    assert lm_harness.harness_batch_size(32, 10 ** 9) == 1 and lm_harness.harness_batch_size(4, 100) == 4

    full = evaluate(_cfg(causal_llama, out=None, store=None, max_examples=4))
    assert "lowered to" not in capfd.readouterr().err
    monkeypatch.setattr(lm_harness, "LOGITS_BUDGET", 1)  # one prompt a batch
    capped = evaluate(_cfg(causal_llama, out=None, store=None, max_examples=4))
    err = capfd.readouterr().err
    said = [ln for ln in err.splitlines() if "lowered to" in ln]
    assert len(said) == 1 and said[0].startswith("xling: note: --batch-size 4 lowered to 1 for the harness: ")
    # 3 x 4 x 128 x 69 x 4 bytes = 423,936 bytes
    assert "69-word vocabulary (about 0.4 MB at 128 tokens a prompt)" in said[0]
    a, b = full.runs[0], capped.runs[0]
    for lang in a.records:
        assert a.records[lang]["predictions"] == b.records[lang]["predictions"]
    for leaf in a.leaves:
        la = [r for s in sorted(full.samples[leaf], key=lambda s: s["doc_id"]) for r in s["filtered_resps"]]
        lb = [r for s in sorted(capped.samples[leaf], key=lambda s: s["doc_id"]) for r in s["filtered_resps"]]
        assert [x[0] for x in la] == pytest.approx([x[0] for x in lb], abs=1e-4)


@pytest.mark.parametrize("extra, flag", [(["--demos", "source"], "--demos"), (["--task", "sib200"], "--task"),
                                         (["--normalize", "sum"], "--normalize"), (["--executor", "ray"], "--executor")])
def test_options_the_harness_would_drop_are_refused(extra, flag, tmp_path, capsys):
    """Checked from the config alone (no lm-eval needed): an option --harness would ignore is one line, exit 2."""
    from xling.cli import main

    out = tmp_path / "o"
    assert main(["eval", "--harness", "bible-genre", "--model", "nowhere", *extra, "--out", str(out),
                 "--store", "none", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} does not apply with --harness" in err
    assert not out.exists()
