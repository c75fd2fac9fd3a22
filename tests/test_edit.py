"""Knowledge editing (xling.methods.edit): exact reset, an edit that takes, and a locality check that catches
an edit that changes everything."""

from __future__ import annotations

import pytest
import torch

import tiny_models
from test_lens_neurons import causal
from xling.errors import XlingError
from xling.methods.edit import EditSettings, FactEditor, edit_rates, middle_layers, mlp_output_projections
from xling.tasks.zeroshot import label_loglik

@pytest.fixture
def tiny_model_dirs(tiny_model_dirs, tiny_causal_dirs):
    """Here the tiny decoders are scored or generated from: saved with their LM heads (an untied head missing from a
    folder is refused, never initialised at random)."""
    return {**tiny_model_dirs, **tiny_causal_dirs}



class _Tok:
    """A whitespace tokenizer over a fixed word list (ids 2..), BOS 1: enough for prompts and answers."""

    bos_token_id, pad_token_id, eos_token_id = 1, 0, 0

    def __init__(self, vocab_size):
        self.words = {w: i + 2 for i, w in enumerate(tiny_models.WORDS[: vocab_size - 2])}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.words[w] for w in text.split()]}


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_projections_are_found_structurally(kind):
    model = causal(kind)
    names = mlp_output_projections(model)
    assert len(names) == 3
    for n in names:
        m = model.get_submodule(n)
        assert (m.in_features if hasattr(m, "in_features") else m.weight.shape[0]) == 48 or kind == "gpt2"
    assert mlp_output_projections(model, [1]) == names[1:2]
    with pytest.raises(XlingError, match="out of range"):
        mlp_output_projections(model, [7])


def test_middle_layers():
    assert middle_layers(1) == [0]
    assert middle_layers(3) == [1]
    assert middle_layers(18) == list(range(6, 12))
    assert middle_layers(30) == list(range(10, 20))


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_reset_is_exactly_the_unedited_model(kind):
    model = causal(kind)
    x = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        before = model(input_ids=x).logits.clone()
    editor = FactEditor(model, _Tok(50), EditSettings(layers=[0, 1, 2], steps=3))
    editor.edit("the cat sees", "dog", seed=1)
    with torch.no_grad():
        changed = model(input_ids=x).logits
    assert not torch.equal(changed, before)
    editor.reset(5)
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, before)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_an_edit_changes_the_edited_fact_and_locality_measures_the_rest(kind):
    model = causal(kind)
    tok = _Tok(50)
    prompt, choices = "the cat sees", ["dog", "house", "red", "blue"]
    unrelated = [("one two", ["three", "and"]), ("der hund", ["sieht", "rot"]), ("le chat", ["voit", "bleu"])]

    def predict(items):
        scores = label_loglik(model, tok, [p for p, _ in items], [c for _, c in items], normalize="sum", batch_size=4)
        return [max(range(len(s)), key=lambda j: (s[j], -j)) for s in scores]

    base = predict([(prompt, choices)] + unrelated)
    new = next(j for j in range(4) if j != base[0])
    editor = FactEditor(model, tok, EditSettings(rank=1, steps=30, lr=0.05))
    info = editor.edit(prompt, choices[new], seed=0)
    assert info["nll_after"] < info["nll_before"]
    after = predict([(prompt, choices)] + unrelated)
    rates = edit_rates(base, after, [new, -1, -1, -1])
    assert rates["success"] == 1.0 and rates["base"] == 0.0 and rates["n_other"] == 3
    # a destructive edit (every layer, a huge step size) is caught: predictions of unrelated items move
    editor2 = FactEditor(causal(kind), tok, EditSettings(rank=4, steps=60, lr=2.0, layers=[0, 1, 2], stop_nll=0))
    model = editor2.model
    # unrelated items that offer the new answer as a choice: an edit that says it everywhere changes them
    offered = [(p, [c[0], choices[new]]) for p, c in unrelated] + [(p, [c[1], choices[new]]) for p, c in unrelated]
    base2 = predict([(prompt, choices)] + offered)
    editor2.edit(prompt, choices[new], seed=0)
    rates2 = edit_rates(base2, predict([(prompt, choices)] + offered), [new] + [-1] * len(offered))
    assert rates2["locality"] < 1.0


def test_edit_rates_by_hand_and_errors():
    r = edit_rates([0, 1, 2, 0, 1], [2, 1, 2, 1, 1], [2, 0, -1, -1, -1])
    assert r["success"] == 0.5 and r["base"] == 0.0 and r["locality"] == pytest.approx(2 / 3)
    assert edit_rates([0], [0], [-1])["success"] is None
    with pytest.raises(XlingError):
        edit_rates([0], [0, 1], [1])
    with pytest.raises(XlingError):
        EditSettings(rank=0)


def test_edit_end_to_end(tiny_model_dirs, tmp_path, one_thread):
    import csv
    import json

    from xling.cli import main

    out, store = tmp_path / "edit", tmp_path / "store.sqlite"
    args = ["edit", "--model", str(tiny_model_dirs["llama"]), "--lang", "en,ru", "--langs", "de", "--relations",
            "currency", "--edits", "3", "--locality", "2", "--steps", "3", "--lr", "0.05", "--bootstrap", "50",
            "--out", str(out), "--store", str(store), "--quiet"]
    assert main(args) == 0
    edits = list(csv.DictReader(open(out / "edits.csv", encoding="utf-8")))
    loc = list(csv.DictReader(open(out / "locality.csv", encoding="utf-8")))
    summary = list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    langs = {"eng_Latn", "rus_Cyrl", "deu_Latn"}
    assert len(edits) == 2 * 3 * 3 and {r["lang"] for r in edits} == langs  # 2 edit langs x 3 facts x 3 langs
    assert len(loc) == 2 * 3 * 2 * 3
    facts = run["meta"]["facts"]
    assert len(facts) == 3 and all(f.startswith("currency:") for f in facts)
    for r in edits:
        assert int(r["success"]) == (r["pred_after"] == r["new_answer"])
        assert int(r["base"]) == (r["pred_before"] == r["new_answer"])
        assert r["new_answer"] != r["old_answer"]
    # the unedited predictions of a fact are the same whichever language it is edited in
    before = {}
    for r in edits:
        assert before.setdefault((r["item_id"], r["lang"]), r["pred_before"]) == r["pred_before"]
    for r in loc:
        assert int(r["unchanged"]) == (r["pred_before"] == r["pred_after"])
        assert r["item_id"] != r["edited_item"]
    # summary rates recount the per-edit rows
    for s in summary:
        if s["what"] == "efficacy":
            sel = [r for r in edits if r["edit_lang"] == s["edit_lang"] and r["lang"] == s["edit_lang"]]
            assert float(s["rate"]) == pytest.approx(sum(int(r["success"]) for r in sel) / len(sel))
        if s["what"] == "locality" and s["lang"] == "all":
            sel = [r for r in loc if r["edit_lang"] == s["edit_lang"]]
            assert float(s["rate"]) == pytest.approx(sum(int(r["unchanged"]) for r in sel) / len(sel))
    groups = {(s["edit_lang"], s["group"]) for s in summary if s["lang"] == "all" and s["what"] == "propagation"}
    assert ("eng_Latn", "same script") in groups and ("eng_Latn", "other script") in groups
    assert "<script>alert" not in (out / "report.html").read_text(encoding="utf-8")


def test_edit_refuses_an_encoder_in_one_line(tiny_model_dirs, capsys):
    from xling.cli import main

    rc = main(["edit", "--model", str(tiny_model_dirs["bert"]), "--langs", "de", "--relations", "currency",
               "--edits", "1", "--out", "none", "--store", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "encoder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
