"""The CLDR fact probe (xling.data.facts), its task (facts), the known-in-English statistic and xling knowledge."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch

from xling.cli import main
from xling.data import facts as F
from xling.data.facts import build_fact_probe, build_facts, leaks, probe_fingerprint, relation_table
from xling.errors import XlingError

LANGS = ["en", "de", "swh", "ja", "ru"]


@pytest.fixture(scope="module")
def probe():
    return build_fact_probe(LANGS, max_per_relation=12)


# ----------------------------------------------------------------------------- the build


def test_build_is_deterministic(probe):
    again = build_fact_probe(LANGS, max_per_relation=12)
    assert again.facts == probe.facts and again.items == probe.items and again.dropped == probe.dropped
    assert probe_fingerprint(again) == probe_fingerprint(probe)
    # another seed: other distractors and positions, the same subjects when the whole relation is taken
    a, b = build_facts(seed=0), build_facts(seed=1)
    assert [f.id for f in a] == [f.id for f in b]
    assert [f.choices for f in a] != [f.choices for f in b]
    assert all(f.choices[f.answer] == g.choices[g.answer] for f, g in zip(a, b))


def test_build_is_parallel(probe):
    facts = {f.id: f for f in probe.facts}
    assert len(facts) == len(probe.facts) == 3 * 12  # ids unique; 12 per relation
    for lang, items in probe.items.items():
        order = [f.id for f in probe.facts if f.id in {it.id for it in items}]
        assert [it.id for it in items] == order  # fact order in every language
        for it in items:
            f = facts[it.id]
            assert (it.relation, it.subject_code, it.choice_codes, it.answer) == (f.relation, f.subject, f.choices,
                                                                                f.answer)
            assert len(set(it.choices)) == len(it.choices) == 4
    # everything the English items have is the same item elsewhere (only names differ)
    en = {it.id: it for it in probe.items["eng_Latn"]}
    for lang in probe.langs:
        for it in probe.items[lang]:
            assert it.answer == en[it.id].answer and it.choice_codes == en[it.id].choice_codes
    # the answer is not always in the same place
    assert len({f.answer for f in probe.facts}) > 1


def test_distractors_are_of_the_same_type_and_never_right():
    facts = build_facts(choices=4, shots=0)
    for rel in F.RELATIONS:
        table = relation_table(rel)
        pool = {a for a, _ in table.values()}
        for f in (f for f in facts if f.relation == rel):
            answer, right = table[f.subject]
            assert f.choices[f.answer] == answer
            others = [c for j, c in enumerate(f.choices) if j != f.answer]
            assert set(others) <= pool and not set(others) & right


def test_distractor_rule_as_documented():
    """The module doc's rule, recomputed here: candidates by sha256 of seed, fact id and code; answer position."""
    f = next(f for f in build_facts(["currency"], seed=7) if f.id == "currency:JP")
    pool = sorted({a for a, _ in relation_table("currency").values()} - {"JPY"})
    h = lambda s: hashlib.sha256(("xling-facts:" + s).encode()).hexdigest()
    cands = sorted(pool, key=lambda c: h(f"7:currency:JP:{c}"))[:3]
    pos = int(h("7:currency:JP:position"), 16) % 4
    assert f.choices == tuple(cands[:pos] + ["JPY"] + cands[pos:]) and f.answer == pos


def test_hand_facts():
    cont = F.continent_of()
    assert (cont["JP"], cont["BR"], cont["DE"], cont["KE"], cont["AU"]) == ("142", "019", "150", "002", "009")
    assert relation_table("currency")["JP"][0] == "JPY" and "PA" not in relation_table("currency")  # two tenders
    assert relation_table("language")["BR"][0] == "pt"
    assert {"de", "fr", "it"} <= relation_table("language")["CH"][1]  # every official language is right


def test_leak_flag():
    assert leaks("Japan", "Japanese Yen") and leaks("JAPAN", "japanese") and leaks("Japani", "Kijapani")
    assert leaks("Ｊａｐａｎ", "Japanese")  # NFKC: full-width letters
    assert not leaks("France", "French") and not leaks("Deutschland", "Deutsch") and not leaks("", "x")


def test_leak_flag_in_the_probe():
    p = build_fact_probe(["en", "swh"], relations=["currency", "language", "continent"])
    get = {(it.lang, it.id): it for items in p.items.values() for it in items}
    assert get[("eng_Latn", "currency:JP")].leak and get[("eng_Latn", "currency:JP")].answer_text == "Japanese Yen"
    assert get[("swh_Latn", "language:JP")].leak and get[("swh_Latn", "language:JP")].answer_text == "Kijapani"
    assert not get[("eng_Latn", "continent:JP")].leak
    assert not get[("eng_Latn", "language:FR")].leak  # France -> French: not contained, not flagged
    for it in get.values():
        assert it.leak == leaks(it.subject, it.answer_text)


def test_prompt_and_demonstrations(probe):
    facts = {f.id: f for f in probe.facts}
    en = {it.id: it for it in probe.items["eng_Latn"]}
    for it in en.values():
        f = facts[it.id]
        lines = it.prompt.split("\n")
        assert lines[-1] == f"{it.subject}:" and len(lines) == len(f.demos) + 1
        assert len(f.demos) == 3 or f.relation == "continent"  # few continents are outside a fact's choices
        for d, line in zip(f.demos, lines):
            demo = facts[d]
            assert demo.relation == f.relation and demo.choices[demo.answer] not in f.choices
            assert line == f"{en[d].subject}: {en[d].answer_text}"
    bare = build_fact_probe(["en"], relations=["continent"], shots=0, max_per_relation=3)
    assert all(it.prompt == f"{it.subject}:" for it in bare.items["eng_Latn"])


def test_missing_name_drops_the_item_in_that_language_only(monkeypatch):
    real = F._name
    monkeypatch.setattr(F, "_name", lambda loc, kind, code: None if (loc, code) == ("sw", "JPY") else
                        real(loc, kind, code))
    p = build_fact_probe(["en", "swh"], relations=["currency"])
    uses = {f.id for f in p.facts if "JPY" in f.choices or any(
        next(g for g in p.facts if g.id == d).choices[next(g for g in p.facts if g.id == d).answer] == "JPY"
        for d in f.demos)}
    assert "currency:JP" in uses
    sw = {it.id for it in p.items["swh_Latn"]}
    assert not sw & uses and len(p.items["eng_Latn"]) == len(p.facts)
    assert p.n_dropped("swh_Latn") == len(p.facts) - len(sw) >= len(uses)
    assert {d["reason"] for d in p.dropped} <= {F.MISSING, F.DUPLICATE}
    assert any(d["reason"] == F.MISSING and d["lang"] == "swh_Latn" for d in p.dropped)


def test_duplicate_choice_names_drop(monkeypatch):
    real = F._name
    monkeypatch.setattr(F, "_name", lambda loc, kind, code: "Same" if loc == "de" and kind == "currencies" else
                        real(loc, kind, code))
    p = build_fact_probe(["en", "de"], relations=["currency"], shots=0, max_per_relation=5)
    assert p.items["deu_Latn"] == [] and p.n_dropped("deu_Latn") == 5
    assert p.dropped == [{"lang": "deu_Latn", "relation": "currency", "reason": F.DUPLICATE, "n": 5}]


def test_bad_input_is_one_line():
    with pytest.raises(XlingError, match="no CLDR locale data"):
        build_fact_probe(["en", "ace"])
    with pytest.raises(XlingError, match="unknown fact relation"):
        build_facts(["capital"])
    with pytest.raises(XlingError, match="needs at least 6"):
        build_facts(["continent"], choices=6)


def test_facts_task_is_parallel_multiple_choice():
    from xling.tasks.registry import load_task

    task = load_task("facts", langs="en,ja", max_per_relation="3", shots="1")
    assert task.type == "multiple-choice" and task.labels == ["0", "1", "2", "3"]
    en, ja = task.data["test"]["eng_Latn"], task.data["test"]["jpn_Jpan"]
    assert [e.id for e in en] == [e.id for e in ja] and [e.label for e in en] == [e.label for e in ja]
    p = build_fact_probe(["en", "ja"], max_per_relation=3, shots=1)
    assert [e.text for e in ja] == [it.prompt for it in p.items["jpn_Jpan"]]


# ----------------------------------------------------------------------------- known in English, known elsewhere


def test_known_elsewhere_matches_pair_stats_and_a_hand_count():
    from xling.methods.consistency import pair_stats
    from xling.methods.knowledge import known_elsewhere

    correct = {"en": {"a": 1, "b": 1, "c": 0, "d": 1, "e": 0},
               "de": {"a": 1, "b": 0, "c": 1, "d": 1, "e": 0},
               "ja": {"a": 0, "b": 1, "c": 1, "e": 1}}  # d not asked in ja
    rows = {r["group"]: r for r in known_elsewhere(correct, "en", {"de": ["de"], "ja": ["ja"], "both": ["de", "ja"]},
                                                   n_boot=200)}
    ids = sorted(correct["de"])
    kt = pair_stats(ids, ids, [correct["en"][i] for i in ids], [correct["de"][i] for i in ids])["kt_a_to_b"]
    assert rows["de"]["p_known"] == pytest.approx(kt) == pytest.approx(2 / 3)
    assert rows["ja"]["p_known"] == pytest.approx(1 / 2)  # a, b known in en and asked in ja; b right there
    # pooled: (2 + 1) right in both over (3 + 2) known in English; accuracy (3 + 3) / (5 + 4)
    assert rows["both"]["p_known"] == pytest.approx(3 / 5) and rows["both"]["accuracy"] == pytest.approx(6 / 9)
    assert rows["both"]["n_pairs"] == 9 and rows["both"]["known_in_pivot"] == 5
    assert rows["both"]["p_known_low"] <= 3 / 5 <= rows["both"]["p_known_high"]
    skipped = known_elsewhere(correct, "en", {"de": ["de"]}, skip={"de": {"a"}}, n_boot=0)[0]
    assert skipped["p_known"] == pytest.approx(1 / 2) and skipped["p_known_low"] != skipped["p_known_low"]  # NaN
    none = known_elsewhere({"en": {"a": 0}, "de": {"a": 1}}, "en", {"de": ["de"]}, n_boot=50)[0]
    assert none["p_known"] != none["p_known"]  # nothing known in English: undefined, not 0


# ----------------------------------------------------------------------------- the command

E2E_LANGS = ["en", "de", "ru"]


@pytest.fixture(scope="module")
def fact_llama(tmp_path_factory):
    """A tiny random Llama with an LM head and a word-level tokenizer that knows the words of the probe's items in
    English, German and Russian (3 facts per relation), so choices tokenize apart and scores differ."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    probe = build_fact_probe(E2E_LANGS, max_per_relation=3)
    pre = pre_tokenizers.Whitespace()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for items in probe.items.values():
        for it in items:
            for text in (it.prompt, *it.choices):
                for w, _ in pre.pre_tokenize_str(text):
                    vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=2, architectures=["LlamaForCausalLM"])
    folder = tmp_path_factory.mktemp("fact-llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


def _direct_score(model, tok, prompt: str, choice: str) -> float:
    """The mean log-probability of the choice's tokens after the prompt, by one plain forward pass."""
    p = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(" " + choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(float(logp[len(p) + t - 1, c[t]]) for t in range(len(c))) / len(c)


def test_knowledge_end_to_end(fact_llama, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xling.harness.consistency import load_run_predictions

    out, store = tmp_path / "kn", tmp_path / "store.sqlite"
    args = ["knowledge", "--model", str(fact_llama), "--langs", "de,ru", "--max-per-relation", "3",
            "--bootstrap", "50", "--out", str(out), "--store", str(store), "--quiet"]
    assert main(args) == 0
    for name in ("knowledge.csv", "accuracy.csv", "predictions.csv", "consistency.csv", "known_in_english.csv",
                 "dropped.csv", "run.json", "report.html"):
        assert (out / name).is_file()
    rows = list(csv.DictReader((out / "knowledge.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["lang"] for r in rows} == {"eng_Latn", "deu_Latn", "rus_Cyrl"}  # English added
    assert len(rows) == 3 * 9
    # scores: parity with an independent forward pass; margin, prediction and correctness follow from them
    probe = build_fact_probe(E2E_LANGS, max_per_relation=3)
    items = {(it.lang, it.id): it for its in probe.items.values() for it in its}
    model = AutoModelForCausalLM.from_pretrained(fact_llama).eval()
    tok = AutoTokenizer.from_pretrained(fact_llama)
    assert len({r["answer_score"] for r in rows}) > len(rows) // 2  # the choices are told apart
    for r in rows:
        it = items[(r["lang"], r["item_id"])]
        s = [_direct_score(model, tok, it.prompt, c) for c in it.choices]
        assert float(r["answer_score"]) == pytest.approx(s[it.answer], abs=1e-4)
        assert float(r["margin"]) == pytest.approx(s[it.answer] - max(x for j, x in enumerate(s) if j != it.answer),
                                                   abs=1e-4)
        assert r["answer"] == it.answer_text and int(r["leak"]) == it.leak
        assert int(r["correct"]) == (r["prediction"] == r["answer"])
    # accuracy.csv counts knowledge.csv
    acc = list(csv.DictReader((out / "accuracy.csv").read_text(encoding="utf-8").splitlines()))
    for a in acc:
        sel = [r for r in rows if r["lang"] == a["lang"] and a["relation"] in ("all", r["relation"])
               and (a["items"] == "all" or (r["leak"] == "1") == (a["items"] == "leak"))]
        assert int(a["n"]) == len(sel) and int(a["correct"]) == sum(int(r["correct"]) for r in sel)
        assert float(a["chance"]) == 0.25
    # predictions.csv: choice indices, parallel ids; the store holds them for xling consistency
    preds = list(csv.DictReader((out / "predictions.csv").read_text(encoding="utf-8").splitlines()))
    assert list(preds[0]) == ["item_id", "lang", "prediction", "label", "correct"] and len(preds) == len(rows)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    back = load_run_predictions(store, run["run_id"])
    assert sorted(back.records) == ["deu_Latn", "eng_Latn", "rus_Cyrl"]
    table = back.table()
    for p in preds:
        assert table[p["lang"]][p["item_id"]] == (p["prediction"], int(p["correct"]))
    assert main(["consistency", run["run_id"], "--store", str(store), "--out", str(tmp_path / "cons")]) == 0
    cons = list(csv.DictReader((out / "consistency.csv").read_text(encoding="utf-8").splitlines()))
    assert len(cons) == 6  # ordered pairs of 3 languages
    known = list(csv.DictReader((out / "known_in_english.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["group"] for r in known} >= {"deu_Latn", "rus_Cyrl", "same script as English", "other scripts"}
    assert "<script>alert" not in (out / "report.html").read_text(encoding="utf-8")


def test_knowledge_refuses_an_encoder(tiny_model_dirs, tmp_path, capsys):
    rc = main(["knowledge", "--model", str(tiny_model_dirs["bert"]), "--langs", "de", "--max-per-relation", "2",
               "--out", "none", "--store", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "encoder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_knowledge_matches_eval_zero_shot(fact_llama, one_thread):
    """``xling eval --zero-shot --task facts --template "{text}"`` scores the same thing: where knowledge's margin is
    clear of ties, eval's correctness is the same."""
    from xling.recipes.eval.run import evaluate
    from xling.recipes.knowledge.run import knowledge
    from xling.tasks.facts import facts_task

    kw = {"langs": ["de"], "max_per_relation": 3}
    res = knowledge(model=str(fact_llama), out=None, store=None, progress=False, bootstrap=0, **kw)
    task = facts_task(langs=["en", "de"], max_per_relation=3)
    ev = evaluate(model=str(fact_llama), task=task, zero_shot=True, template="{text}", out=None,
                  store=None, progress=False, batch_size=16)
    for lang in ("eng_Latn", "deu_Latn"):
        mine = [r for r in res.rows if r["lang"] == lang]
        assert [r["item_id"] for r in mine] == [e.id for e in task.data["test"][lang]]
        for r, c in zip(mine, ev.correct[lang]):
            if abs(r["margin"]) > 1e-4:
                assert r["correct"] == c
    assert sum(abs(r["margin"]) > 1e-4 for r in res.rows) > len(res.rows) // 2
