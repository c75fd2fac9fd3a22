"""Prompted generation: batched greedy decoding with the KV cache, its stop rules, the bible-mt task, chrF/BLEU
through sacrebleu, language fidelity through lingua, and the outputs of ``xling eval`` on a generation task.

Tiny random decoders (tests/tiny_models.py) and a synthetic Bible corpus; nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest
import torch

import tiny_models
from xling.cli import main
from xling.data.bible import BOOK_CODES
from xling.data.corpus import ParallelCorpus
from xling.engine.generate import encode_prompts, greedy_generate
from xling.errors import XlingError

sacrebleu = pytest.importorskip("sacrebleu")
lingua = pytest.importorskip("lingua")

PROMPTS = ["the cat sees", "one big red house and the dog", "der hund", "le chat voit le chien et la maison rouge",
           "два и три", "the", "a blue cat and two dog runs in the green house", "猫 狗", "drei rot hund und"]
LANG_OF = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}

@pytest.fixture
def tiny_model_dirs(tiny_model_dirs, tiny_causal_dirs):
    """Here the tiny decoders are scored or generated from: saved with their LM heads (an untied head missing from a
    folder is refused, never initialised at random)."""
    return {**tiny_model_dirs, **tiny_causal_dirs}



@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """(model, tokenizer) per tiny decoder family, loaded once (the LM head is random: one object per test run)."""
    from transformers import AutoTokenizer

    from xling.tasks.zeroshot import load_causal_lm

    root = tmp_path_factory.mktemp("gen-models")
    out = {}
    for kind in ("llama", "gpt2", "gemma3"):
        folder = tiny_models.save(kind, root / kind, head=True)
        torch.manual_seed(0)
        out[kind] = (load_causal_lm(folder, torch.float32, torch.device("cpu")), AutoTokenizer.from_pretrained(folder))
    return out


def _hf_greedy(model, tok, prompt_ids, max_new_tokens):
    x = torch.tensor([prompt_ids])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                       pad_token_id=pad)
    return g[0, len(prompt_ids):].tolist()


# ----------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_batched_greedy_equals_one_at_a_time_generate(decoders, kind, one_thread):
    model, tok = decoders[kind]
    n = 10
    runs = {bs: greedy_generate(model, tok, PROMPTS, max_new_tokens=n, stop=(), batch_size=bs) for bs in (1, 4, 16)}
    eos = set([tok.eos_token_id] if tok.eos_token_id is not None else []) | (
        {model.generation_config.eos_token_id} if isinstance(model.generation_config.eos_token_id, int) else set())
    for i, ids in enumerate(encode_prompts(tok, PROMPTS)):
        ours = runs[1][i]
        for bs in (4, 16):  # batching (and which prompts share a batch) changes nothing
            assert runs[bs][i].token_ids == ours.token_ids and runs[bs][i].text == ours.text
        ref = _hf_greedy(model, tok, ids, n)  # one prompt at a time, transformers' own greedy loop
        assert ref[:len(ours.token_ids)] == ours.token_ids
        if ours.reason == "length":
            assert len(ours.token_ids) == n
        else:
            assert ours.reason == "eos" and ref[len(ours.token_ids)] in eos
        assert ours.text == tok.decode(ours.token_ids, skip_special_tokens=True)
        assert ours.prompt_tokens == len(ids)


def test_cache_that_cannot_drop_rows_gives_the_same_outputs(decoders, monkeypatch, one_thread):
    from transformers.cache_utils import Cache

    model, tok = decoders["llama"]
    stop = ["dog"]
    pruned = greedy_generate(model, tok, PROMPTS, max_new_tokens=8, stop=stop, batch_size=16)
    monkeypatch.setattr(Cache, "batch_select_indices", None)  # finished rows then keep stepping on padding
    kept = greedy_generate(model, tok, PROMPTS, max_new_tokens=8, stop=stop, batch_size=16)
    assert [(g.text, g.token_ids, g.reason) for g in kept] == [(g.text, g.token_ids, g.reason) for g in pruned]


def test_generation_stops_at_the_stop_rules(decoders, one_thread):
    model, tok = decoders["gemma3"]
    free = greedy_generate(model, tok, PROMPTS, max_new_tokens=12, stop=(), batch_size=4)
    # a stop string: the third generated word of each prompt whose output has one
    cases = [(i, tok.decode(g.token_ids[2:3])) for i, g in enumerate(free) if len(g.token_ids) >= 3]
    assert cases
    for i, word in cases:
        got = greedy_generate(model, tok, [PROMPTS[i]], max_new_tokens=12, stop=[word], batch_size=1)[0]
        full = free[i].text
        assert got.reason == "stop"
        assert got.text == full[:full.index(word)] and word not in got.text
        assert got.token_ids == free[i].token_ids[:len(got.token_ids)]
        # it stopped at the first step whose text contained the stop string, not later
        assert word in tok.decode(got.token_ids) and word not in tok.decode(got.token_ids[:-1])
    # max_new_tokens
    short = greedy_generate(model, tok, PROMPTS, max_new_tokens=3, stop=(), batch_size=3)
    assert all(g.reason == "length" and len(g.token_ids) == 3 and g.token_ids == f.token_ids[:3]
               for g, f in zip(short, free) if f.reason == "length")
    # end of sequence: the model's generation config names the first token prompt 0 would produce
    first = free[0].token_ids[0]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = first
    try:
        ended = greedy_generate(model, tok, PROMPTS, max_new_tokens=12, stop=(), batch_size=16)
    finally:
        model.generation_config.eos_token_id = saved
    assert ended[0].reason == "eos" and ended[0].token_ids == [] and ended[0].text == ""
    for g, f in zip(ended, free):  # every row ends at its first `first`, the others run on unchanged
        cut = f.token_ids.index(first) if first in f.token_ids else None
        assert g.token_ids == (f.token_ids[:cut] if cut is not None else f.token_ids)


def test_long_prompts_keep_first_and_last_tokens(decoders, capsys):
    model, tok = decoders["llama"]
    ids = encode_prompts(tok, ["the cat sees the dog and the red house"], max_prompt_tokens=4)[0]
    full = encode_prompts(tok, ["the cat sees the dog and the red house"])[0]
    assert ids == full[:1] + full[-3:] and full[0] == tok.bos_token_id
    g = greedy_generate(model, tok, ["the cat sees the dog and the red house", "a"], max_new_tokens=2,
                        max_prompt_tokens=4)
    assert g[0].prompt_tokens == 4
    assert capsys.readouterr().err.strip() == "xling: note: 1 prompt longer than 4 tokens kept its first token and " \
                                              "last 3 (--max-length)"


DEMOS = "the cat sees the dog and one big red house and two small dog runs in the green house is big"
SHARED = [DEMOS + " " + s for s in ("der hund", "le chat voit", "два и три кот", "a",
                                    "the blue cat and the red dog", "猫 狗 房子")]


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_shared_prefix_is_computed_once_and_changes_nothing(decoders, kind, one_thread):
    from xling.engine.generate import shared_prefix

    model, tok = decoders[kind]
    enc = encode_prompts(tok, SHARED)
    p = shared_prefix(enc, model, 8)
    if kind == "gemma3":  # a sliding window (4 tokens) shorter than the sequence: never shared
        assert p == 0
    else:
        assert p == len(encode_prompts(tok, [DEMOS])[0]) and p >= 16
    shared = greedy_generate(model, tok, SHARED, max_new_tokens=8, stop=(), batch_size=6)
    plain = greedy_generate(model, tok, SHARED, max_new_tokens=8, stop=(), batch_size=6, share_prefix=False)
    for g, h, ids in zip(shared, plain, enc):
        assert g.token_ids == h.token_ids
        ref = _hf_greedy(model, tok, ids, 8)
        assert ref[:len(g.token_ids)] == g.token_ids


def test_engine_errors(decoders):
    model, tok = decoders["llama"]
    with pytest.raises(XlingError, match="max_new_tokens"):
        greedy_generate(model, tok, ["the"], max_new_tokens=0)
    with pytest.raises(XlingError, match="batch_size"):
        greedy_generate(model, tok, ["the"], batch_size=0)


# ----------------------------------------------------------------------------- metrics (pure)


def test_scores_equal_sacrebleu_with_signatures_and_intervals():
    from xling.methods.generation import generation_scores, sentence_chrf

    hyps = ["Im Anfang schuf Gott den Himmel.", "Und die Erde war wüst und leer", "", "Gott sprach: Es werde Licht"]
    refs = ["Im Anfang schuf Gott den Himmel und die Erde.", "Und die Erde war wüst und leer.",
            "Und es war Finsternis.", "Und Gott sprach: Es werde Licht! Und es ward Licht."]
    sc = generation_scores(hyps, refs, target_lang="deu_Latn", n_boot=300)
    got = {r["metric"]: r for r in sc["rows"]}
    assert got["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
    assert got["chrf++"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score, abs=1e-9)
    assert got["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert sc["sentence_chrf"] == pytest.approx([sacrebleu.sentence_chrf(h, [r]).score for h, r in zip(hyps, refs)])
    for m in ("chrf", "chrf++", "bleu"):
        assert got[m]["low"] <= got[m]["value"] <= got[m]["high"] and got[m]["n"] == 4
    assert "nrefs:1" in sc["signatures"]["chrf"] and "nw:2" in sc["signatures"]["chrf++"]
    assert "tok:13a" in sc["signatures"]["bleu"]
    # Chinese: BLEU with sacrebleu's zh tokenizer, named in the signature
    zh = generation_scores(["起初神创造天地"], ["起初，神创造天地。"], target_lang="zho_Hans", n_boot=0)
    assert {r["metric"]: r for r in zh["rows"]}["bleu"]["value"] == pytest.approx(
        sacrebleu.corpus_bleu(["起初神创造天地"], [["起初，神创造天地。"]], tokenize="zh").score)
    assert "tok:zh" in zh["signatures"]["bleu"]
    # no detector outputs: fidelity is empty (NaN), correct is the chrF condition alone
    assert math.isnan(got["off_target_rate"]["value"]) and got["off_target_rate"]["n"] == 0
    assert sc["correct"] == [int(c >= 50.0) for c in sentence_chrf(hyps, refs)]


def test_fidelity_rates_by_hand():
    from xling.methods.generation import generation_scores

    hyps = ["a", "b", "c", "d", "e"]
    detected = ["deu", "eng", None, "deu", "fra"]
    lines = [["deu"], ["eng"], [], ["deu", "eng"], ["fra", None]]
    sc = generation_scores(hyps, hyps, detected=detected, lines_detected=lines, expected="deu", n_boot=500)
    got = {r["metric"]: r for r in sc["rows"]}
    assert got["off_target_rate"]["value"] == pytest.approx(2 / 4) and got["off_target_rate"]["n"] == 4
    assert got["line_pass_rate"]["value"] == pytest.approx(1 / 4) and got["line_pass_rate"]["n"] == 4
    assert sc["correct"] == [1, 0, 0, 1, 0]  # hypotheses equal their references: chrF 100, so on-target decides
    assert got["accuracy"]["value"] == pytest.approx(2 / 5)
    assert 0 <= got["off_target_rate"]["low"] <= 0.5 <= got["off_target_rate"]["high"] <= 1


# ----------------------------------------------------------------------------- the bible-mt task


def _fake_bible(langs=None, quiet=False):
    """A parallel 'Bible' of 3 books x 20 chapters x 3 verses in English, German, French and Russian."""
    keys = {"eng_Latn": "eng", "deu_Latn": "deu", "fra_Latn": "fra", "rus_Cyrl": "rus"}
    ids, sents = [], {lang: [] for lang in keys}
    for b in (1, 2, 40):
        for c in range(1, 21):
            for v in range(1, 4):
                i = len(ids)
                ids.append(f"{BOOK_CODES[b - 1]} {c}:{v}")
                for lang, k in keys.items():
                    p = tiny_models.PARALLEL[k]
                    sents[lang].append(f"{p[i % 8]} {p[(i // 8) % 8]} {p[(i // 3) % 8]} {i}")
    return ParallelCorpus("bible", sents, {"ids": ids, "source": "synthetic", "translations": {}})


@pytest.fixture
def fake_bible(monkeypatch):
    import xling.tasks.bible_mt as bible_mt

    monkeypatch.setattr(bible_mt, "bible_corpus", _fake_bible)
    return bible_mt


def test_bible_mt_demonstrations_are_fixed_train_verses_never_test(fake_bible):
    from xling.tasks.bible import _chapter
    from xling.tasks.generation import generation_units
    from xling.tasks.registry import load_task

    task = load_task("bible-mt", test_size=12, train_size=4)
    assert task.type == "generation" and task.meta["translation"]["pivot"] == "eng_Latn"
    train = [e.id for e in task.data["train"]["eng_Latn"]]
    test = [e.id for e in task.data["test"]["eng_Latn"]]
    assert len(train) == 4 and len(test) == 12
    assert not set(train) & set(test) and not {_chapter(v) for v in train} & {_chapter(v) for v in test}
    for lang in task.langs("test"):  # parallel: the same verses in every language
        assert [e.id for e in task.data["test"][lang]] == test
    units = generation_units(task, ["deu_Latn", "rus_Cyrl"], shots=3)
    assert [(lang, d) for lang, d, _ in units] == [("deu_Latn", "en-x"), ("deu_Latn", "x-en"),
                                                    ("rus_Cyrl", "en-x"), ("rus_Cyrl", "x-en")]
    eng = {e.id: e.text for e in task.data["train"]["eng_Latn"]}
    deu = {e.id: e.text for e in task.data["train"]["deu_Latn"]}
    test_texts = {e.text for split in ("test",) for exs in task.data[split].values() for e in exs}
    for lang, direction, items in units:
        assert len(items) == 12
        prompts = {it.prompt.split("\n\n")[:3].__repr__() for it in items}
        assert len(prompts) == 1  # the same demonstrations for every item
        for it in items:
            blocks = it.prompt.split("\n\n")
            assert len(blocks) == 4 and blocks[-1].endswith(":")
            assert not any(t in "\n\n".join(blocks[:3]) for t in test_texts)  # no test verse in a demonstration
    first = units[0][2][0]
    assert first.prompt.split("\n\n")[0] == f"English: {eng[train[0]]}\nGerman: {deu[train[0]]}"
    assert first.prompt.endswith(f"English: {first.source}\nGerman:")
    back = units[1][2][0]
    assert back.prompt.split("\n\n")[0] == f"German: {deu[train[0]]}\nEnglish: {eng[train[0]]}"
    assert back.target_lang == "eng_Latn" and back.reference == task.data["test"]["eng_Latn"][0].text
    # the same options give the same task
    assert load_task("bible-mt", test_size=12, train_size=4).fingerprint() == task.fingerprint()
    with pytest.raises(XlingError, match="test_size"):
        load_task("bible-mt", test_size=0)


# ----------------------------------------------------------------------------- xling eval on a generation task


def _rows(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def _jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture
def bible_run(fake_bible, tiny_model_dirs, tmp_path, one_thread):
    from xling.recipes.eval.run import evaluate

    store = tmp_path / "r.sqlite"
    res = evaluate(model=str(tiny_model_dirs["llama"]), task="bible-mt", task_options={"test_size": 8},
                   langs=["de", "fr", "ru"], shots=2, max_new_tokens=6, batch_size=4, n_boot=200,
                   out=tmp_path / "gen", store=store, progress=False)
    return res, tmp_path / "gen", store


def test_eval_generation_outputs_and_store(bible_run):
    from xling.harness.store import ResultsStore

    res, out, store = bible_run
    assert res.kind == "generation" and res.task == "bible-mt"
    gens = _jsonl(out / "generations.jsonl")
    assert len(gens) == 3 * 2 * 8
    assert list(gens[0])[:5] == ["id", "lang", "direction", "hypothesis", "reference"]
    assert {(g["lang"], g["direction"]) for g in gens} == {(lg, d) for lg in ("deu_Latn", "fra_Latn", "rus_Cyrl")
                                                          for d in ("en-x", "x-en")}
    rows = _rows(out / "generation_scores.csv")
    assert list(rows[0]) == ["lang", "direction", "metric", "value", "low", "high", "n"]
    assert {r["metric"] for r in rows} == {"chrf", "chrf++", "bleu", "off_target_rate", "line_pass_rate", "accuracy"}
    for r in rows:
        assert float(r["low"]) <= float(r["value"]) + 1e-9 and float(r["value"]) <= float(r["high"]) + 1e-9
    run = json.loads((out / "run.json").read_text())
    assert run["signatures"]["deu_Latn:en-x"]["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    html = (out / "report.html").read_text()
    assert "chrF and off-target rate per language and direction" in html and "en-x" in html
    st = ResultsStore(store)
    rid = st.runs("eval")[-1]["run_id"]
    keys = {r["lang"] for r in st.task_scores(rid)}
    assert keys == {f"{lg}:{d}" for lg in ("deu_Latn", "fra_Latn", "rus_Cyrl") for d in ("en-x", "x-en")}
    preds = {p["lang"]: p for p in st.predictions(rid)}
    for g in gens:
        p = preds[f"{g['lang']}:{g['direction']}"]
        k = p["item_ids"].index(g["id"])
        assert p["correct"][k] == g["correct"] and p["predictions"][k] == ("pass" if g["correct"] else "fail")
    # consistency and compare read the run
    assert main(["consistency", rid, "--store", str(store), "--out", str(out.parent / "cons"), "--n-boot", "50"]) == 0
    assert len(_rows(out.parent / "cons" / "consistency.csv")) == 6 * 5


def test_chrf_and_bleu_equal_sacrebleu_on_the_saved_outputs(bible_run):
    from xling.methods.generation import bleu_tokenizer

    _, out, _ = bible_run
    gens = _jsonl(out / "generations.jsonl")
    scores = {(r["lang"], r["direction"], r["metric"]): float(r["value"]) for r in _rows(out / "generation_scores.csv")}
    for (lang, direction) in {(g["lang"], g["direction"]) for g in gens}:
        part = [g for g in gens if g["lang"] == lang and g["direction"] == direction]
        hyps, refs = [g["hypothesis"] for g in part], [g["reference"] for g in part]
        target = lang if direction == "en-x" else "eng_Latn"
        assert scores[(lang, direction, "chrf")] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, rel=1e-5)
        assert scores[(lang, direction, "chrf++")] == pytest.approx(
            sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score, rel=1e-5)
        assert scores[(lang, direction, "bleu")] == pytest.approx(
            sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tokenizer(target)).score, rel=1e-5, abs=1e-9)
        for g in part:
            assert g["sentence_chrf"] == pytest.approx(sacrebleu.sentence_chrf(g["hypothesis"], [g["reference"]]).score,
                                                       abs=1e-3)


def test_off_target_rate_equals_a_direct_lingua_run(bible_run):
    from lingua import IsoCode639_3, LanguageDetectorBuilder

    _, out, _ = bible_run
    gens = _jsonl(out / "generations.jsonl")
    scores = {(r["lang"], r["direction"], r["metric"]): r["value"] for r in _rows(out / "generation_scores.csv")}
    codes = {"deu_Latn": "DEU", "fra_Latn": "FRA", "rus_Cyrl": "RUS", "eng_Latn": "ENG"}
    detector = LanguageDetectorBuilder.from_iso_codes_639_3(*[getattr(IsoCode639_3, c) for c in codes.values()]).build()
    rates = []
    for (lang, direction) in sorted({(g["lang"], g["direction"]) for g in gens}):
        part = [g for g in gens if g["lang"] == lang and g["direction"] == direction]
        want = getattr(IsoCode639_3, codes[lang if direction == "en-x" else "eng_Latn"])
        found = [detector.detect_language_of(g["hypothesis"]) for g in part]
        known = [x for x in found if x is not None]
        off = sum(x.iso_code_639_3 != want for x in known) / len(known)
        assert float(scores[(lang, direction, "off_target_rate")]) == pytest.approx(off, abs=1e-6)
        assert float(scores[(lang, direction, "line_pass_rate")]) == pytest.approx(1 - off, abs=1e-6)  # one line each
        rates.append(off)
    assert 0 < sum(rates) < len(rates)  # random tiny models: some outputs on target, some not


def test_rerun_reads_the_generation_cache(bible_run, tiny_model_dirs, tmp_path, monkeypatch, one_thread):
    import xling.engine.generate as engine
    from xling.recipes.eval.run import evaluate

    res, _, _ = bible_run

    def boom(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(engine, "greedy_generate", boom)
    again = evaluate(model=str(tiny_model_dirs["llama"]), task="bible-mt", task_options={"test_size": 8},
                     langs=["de", "fr", "ru"], shots=2, max_new_tokens=6, batch_size=2, n_boot=200, out=None,
                     store=None, progress=False)
    assert again.timings["sets_from_cache"] == 6 and again.records == res.records


def test_compare_pairs_two_generation_runs_over_items(fake_bible, tiny_model_dirs, tmp_path, one_thread):
    from xling.recipes.compare.run import compare_runs
    from xling.recipes.eval.run import evaluate

    store = tmp_path / "r.sqlite"
    ids = []
    for shots in (0, 2):
        ids.append(evaluate(model=str(tiny_model_dirs["gpt2"]), task="bible-mt", task_options={"test_size": 6},
                            langs=["de", "ru"], shots=shots, max_new_tokens=5, n_boot=50, out=None, store=store,
                            progress=False).run_id)
    cmp = compare_runs(store, ids, metric="accuracy", bootstrap=100)
    assert cmp.kind == "task" and set(cmp.langs) == {"deu_Latn:en-x", "deu_Latn:x-en", "rus_Cyrl:en-x",
                                                     "rus_Cyrl:x-en"}
    assert "paired bootstrap over items" in cmp.diffs[0]["method"]
    assert compare_runs(store, ids).metric == "chrf"  # the generation runs' main metric


# ----------------------------------------------------------------------------- task files, errors


def _task_file(tmp_path, lang2="deu", extra=()):
    rows = []
    for k in ("eng", lang2):  # "say it in <lang>": the English sentence in, the sentence in the row's language out
        for i in range(8):
            rows.append({"id": f"q{i}", "lang": k, "split": "train" if i < 2 else "test",
                         "text": f"Say: {tiny_models.PARALLEL['eng'][i]}\nAnswer:",
                         "target": tiny_models.PARALLEL[k][i]})
    rows += list(extra)
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_generation_task_file_end_to_end(tiny_model_dirs, tmp_path, capsys, one_thread):
    from xling.tasks.generation import generation_units, is_generation_task
    from xling.tasks.registry import load_task

    path = _task_file(tmp_path)
    assert is_generation_task(str(path)) and not is_generation_task("libreoffice-topic")
    task = load_task(path)
    assert task.type == "generation" and task.labels == []
    (lang, direction, items), = generation_units(task, ["deu_Latn"], shots=2)
    assert direction == "gen" and len(items) == 6
    demo = task.data["train"]["deu_Latn"]
    assert items[0].prompt.split("\n\n")[:2] == [f"{d.text} {d.target}" for d in demo]
    assert items[0].prompt.endswith(task.data["test"]["deu_Latn"][0].text)
    out = tmp_path / "o"
    rc = main(["eval", "--model", str(tiny_model_dirs["gemma3"]), "--task", str(path), "--shots", "1",
               "--max-new-tokens", "4", "--stop", "dog,\\n", "--n-boot", "50", "--out", str(out), "--store", "none",
               "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "deu_Latn" in text and "generation_scores.csv" in text
    gens = _jsonl(out / "generations.jsonl")
    assert {g["direction"] for g in gens} == {"gen"} and all("dog" not in g["hypothesis"] for g in gens)
    assert {g["lang"] for g in gens} == {"eng_Latn", "deu_Latn"}


def test_language_lingua_does_not_know_has_empty_fidelity_and_one_note(tiny_model_dirs, tmp_path, one_thread):
    from xling.recipes.eval.run import evaluate

    extra = [{"id": f"f{i}", "lang": "fao", "split": "test", "text": "Say: a cat", "target": "ein ketta"}
             for i in range(3)]
    path = _task_file(tmp_path, extra=extra)
    res = evaluate(model=str(tiny_model_dirs["llama"]), task=str(path), langs=["fao"], shots=0, max_new_tokens=3,
                   n_boot=20, out=tmp_path / "o", store=None, progress=False)
    assert len(res.notes) == 1 and "fao_Latn" in res.notes[0] and "lingua does not know" in res.notes[0]
    rows = {r["metric"]: r for r in _rows(tmp_path / "o" / "generation_scores.csv")}
    assert rows["off_target_rate"]["value"] == "" and rows["line_pass_rate"]["value"] == ""
    assert rows["chrf"]["value"] != ""


def test_missing_extra_is_one_line_before_any_model_loads(monkeypatch, tmp_path, capsys):
    import xling.tasks.bible_mt as bible_mt

    def never(*a, **k):
        raise AssertionError("the task was built")

    monkeypatch.setattr(bible_mt, "bible_corpus", never)
    monkeypatch.setitem(sys.modules, "lingua", None)
    rc = main(["eval", "--task", "bible-mt", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"),
               "--store", "none", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "needs the 'generation' extra: pip install 'xling[generation]'" in err[0]
    assert "sacrebleu>=2.4 and lingua-language-detector>=2.0" in err[0]


def test_generation_errors_are_one_line(tiny_model_dirs, tmp_path, capsys):
    path = _task_file(tmp_path)
    rc = main(["eval", "--model", str(tiny_model_dirs["bert"]), "--task", str(path), "--out", str(tmp_path / "o"),
               "--store", "none", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs a decoder LLM" in err[0]
    rc = main(["eval", "--model", str(tiny_model_dirs["llama"]), "--task", str(path), "--split", "train",
               "--out", str(tmp_path / "o"), "--store", "none", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "demonstrations come from the train split" in err[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"lang": "en", "split": "test", "text": "x", "target": ""}) + "\n", encoding="utf-8")
    rc = main(["eval", "--model", str(tiny_model_dirs["llama"]), "--task", str(bad), "--out", str(tmp_path / "o"),
               "--store", "none", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{bad}:1" in err[0] and "target" in err[0]


def test_stop_flag_parses_escapes():
    from xling.recipes.eval.config import stop_strings

    assert stop_strings("\\n,###,a\\tb,\\\\n") == ["\n", "###", "a\tb", "\\n"]
    with pytest.raises(XlingError, match="--stop"):
        stop_strings(",")


def test_generation_says_an_estimate_before_generating(fake_bible, tiny_model_dirs, tmp_path, one_thread, capsys):
    from xling.recipes.eval.run import evaluate

    evaluate(model=str(tiny_model_dirs["llama"]), task="bible-mt", task_options={"test_size": 2}, langs=["de"],
             shots=1, max_new_tokens=3, batch_size=4, n_boot=20, out=tmp_path / "g", store=None, progress=True)
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("xling: estimate: eval (generation)"))
    assert "1 language x 4 items" in line and "at most 3 new tokens each" in line
    assert err.index("xling: estimate:") < err.index("generating")
