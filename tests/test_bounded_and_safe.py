"""Issue 19, items 5 and 6: bounded work on any input, outputs that cannot attack their reader.

* a giant line is cut to ``32 x max_length`` characters before the tokenizer sees it (one
  note), with the same token ids and embedding as the uncut text;
* size options of the metrics are checked against the data before any model is loaded;
* every CSV neutralises formula cells (OWASP) and keeps numbers numeric;
* nothing echoed to the terminal carries a control character.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from xling.cli import main
from xling.textsafe import CHARS_PER_TOKEN, cap_texts, cap_words, char_cap, csv_text, csv_uncell, term

HOSTILE = ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1)"]
WORDS = "the cat sees the dog one big red house two and three a blue cat".split()

@pytest.fixture
def tiny_model_dirs(tiny_model_dirs, tiny_causal_dirs):
    """Here the tiny decoders are scored or generated from: saved with their LM heads (an untied head missing from a
    folder is refused, never initialised at random)."""
    return {**tiny_model_dirs, **tiny_causal_dirs}



def _long_text(n_chars: int) -> str:
    """Words of the tiny vocabulary (one token each), ``n_chars`` characters in all."""
    block = " ".join(WORDS) + " "
    return (block * (n_chars // len(block) + 1))[:n_chars]


def _corpus(path, rows: list[tuple[str, str]]) -> None:
    path.write_text("en\tde\n" + "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")


PARALLEL = [("the cat sees the dog", "die katze sieht der hund"), ("one big red house", "eins rot haus"),
            ("the small dog runs", "der hund"), ("two and three", "zwei und drei"), ("a blue cat", "die blau katze"),
            ("the green house is big", "das grün haus")]


def _one_error_line(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xling: error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- item 5: giant lines


def test_capped_and_uncapped_token_ids_agree(tiny_model_dirs):
    """The cap changes nothing when the token cut falls inside it (each tiny-vocab word is one token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dirs["bert"])
    text = _long_text(200_000)
    for L in (4, 32, 60):
        (capped,), n = cap_texts([text], L)
        assert n == 1 and len(capped) == char_cap(L) == CHARS_PER_TOKEN * L
        full = tok(text, truncation=True, max_length=L)["input_ids"]
        assert tok(capped, truncation=True, max_length=L)["input_ids"] == full
        assert len(full) == L
    short = "the cat sees the dog"
    assert cap_texts([short], 4) == ([short], 0)  # a text within the cap is untouched
    words = text.split(" ")
    kept, cut = cap_words(words, 32)
    assert cut and sum(map(len, kept)) + len(kept) - 1 <= char_cap(32)
    assert tok(kept, is_split_into_words=True, truncation=True, max_length=32)["input_ids"] == \
        tok(words, is_split_into_words=True, truncation=True, max_length=32)["input_ids"]


def test_giant_line_is_capped_before_the_tokenizer(tiny_model_dirs, capsys, one_thread):
    from xling.engine.embed import EmbedConfig, embed_sentences
    from xling.models.loading import load_model

    lm = load_model(str(tiny_model_dirs["bert"]), quiet=True)
    seen: list[int] = []
    real = lm.tokenizer

    class Spy:
        def __call__(self, texts, *a, **kw):
            seen.extend(len(t) for t in texts)
            return real(texts, *a, **kw)

        def __getattr__(self, name):
            return getattr(real, name)

    lm.tokenizer = Spy()
    giant = _long_text(5_000_000)
    cfg = EmbedConfig(max_length=32, layers=(0, 1, 3))
    capsys.readouterr()
    emb = embed_sentences(lm, ["the cat sees the dog", giant], cfg)
    err = capsys.readouterr().err
    assert max(seen) <= char_cap(32), max(seen)  # the tokenizer never saw the 5 MB line
    notes = [x for x in err.splitlines() if x.startswith("xling: note:")]
    assert len(notes) == 1 and "1 text longer than 1024 characters" in notes[0], err
    # independent reference: the first 30 words (+ [CLS], [SEP] = 32 tokens), tokenized by the real tokenizer
    lm.tokenizer = real
    ref = embed_sentences(lm, [" ".join(giant.split(" ")[:30])], cfg)
    torch.testing.assert_close(emb[:, 1], ref[:, 0])


def test_giant_line_in_align_cli(tmp_path, tiny_model_dirs, capsys, one_thread):
    data = tmp_path / "giant.tsv"
    _corpus(data, [*PARALLEL, (_long_text(5_000_000), "die katze")])
    rc = main(["align", "--model", str(tiny_model_dirs["bert"]), "--data", str(data), "--pivot", "en",
               "--max-length", "32", "--out", str(tmp_path / "out"), "--quiet", "--metrics", "mexa"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "1 text longer than 1024 characters" in err


# ----------------------------------------------------------------------------- item 5: options vs data


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the checks must come first."""
    import xling.models.loading as loading

    def boom(*a, **kw):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(loading, "load_model", boom)


@pytest.mark.parametrize("option, expect", [
    ("retrieval.ks=[" + ",".join(str(k) for k in range(1, 20_001)) + "]", "20000 distinct values; at most 64"),
    ("retrieval.ks=[1,999]", "k=999, more than the 20 sentences"),
    ("retrieval.ks=999", "k=999, more than the 20 sentences"),
    ("xsim.k=21", "k=21, more than the 20 sentences"),
])
def test_size_options_are_checked_against_the_data(tmp_path, tiny_model_dirs, capsys, no_model, option, expect):
    data = tmp_path / "twenty.tsv"
    _corpus(data, [(f"the cat {w}", f"die katze {w}") for w in [*WORDS, *WORDS][:20]])
    line = _one_error_line(capsys, ["align", "--model", tiny_model_dirs["bert"], "--data", data, "--pivot", "en",
                                    "--metrics", "mexa,retrieval,xsim", "--metric-option", option,
                                    "--out", tmp_path / "o", "--quiet"])
    assert expect in line
    assert len(line) < 300


def test_k_equal_to_n_and_defaults_still_run():
    from xling.methods.metrics import validate_options, validate_sizes

    validate_sizes(["retrieval", "xsim"], {"retrieval": {"ks": (1, 20)}, "xsim": {"k": 20}}, 20)
    validate_sizes(["retrieval", "xsim"], {}, 3)  # defaults (ks 1, 5; k 4) on a tiny corpus: as before
    validate_options(["retrieval"], {"retrieval": {"ks": tuple(range(1, 65))}})


def test_lambdas_are_bounded():
    from xling.errors import XlingError
    from xling.recipes.transfer.run import TransferConfig

    with pytest.raises(XlingError, match="at most 64"):
        TransferConfig(lambdas=[i / 1000 for i in range(1000)])


# ----------------------------------------------------------------------------- item 6: CSV


def test_csv_cells_neutralised_numbers_kept():
    from xling.harness.outputs import rows_to_csv

    rows = [{"model": h, "lang": h, "value": -0.5, "n": -2} for h in HOSTILE] + [{"model": "'quoted", "value": 0.25}]
    text = rows_to_csv(rows, ["model", "lang", "value", "n"])
    got = list(csv.DictReader(io.StringIO(text)))
    for h, r in zip(HOSTILE, got):
        assert r["model"] == r["lang"] == "'" + h
        assert r["value"] == "-0.5" and r["n"] == "-2"
        assert csv_uncell(r["model"]) == h
    assert got[-1]["model"] == "''quoted" and csv_uncell(got[-1]["model"]) == "'quoted"
    cells = list(csv.reader(io.StringIO(csv_text([["a\tb", "\rx", "\tt", "plain, with comma", 1.5, None, True]],
                                                  list("abcdefg")))))[1]
    assert cells == ["a\tb", "'\rx", "'\tt", "plain, with comma", "1.5", "", "True"]


def test_csv_cells_carry_no_terminal_escape():
    """A label with ESC / CSI / a bidi override is written escaped, so `cat file.csv` shows it and cannot
    recolour the terminal; tab and line breaks stay data (quoted by the csv module)."""
    text = csv_text([["\x1b[31mred\x1b[0m", "a\u202eb", "x\x9by", "line\nbreak"]], list("abcd"))
    assert "\x1b" not in text and "\u202e" not in text and "\x9b" not in text
    cells = list(csv.reader(io.StringIO(text)))[1]
    assert cells == ["\\x1b[31mred\\x1b[0m", "a\\u202eb", "x\\x9by", "line\nbreak"]


def test_align_csvs_neutralise_names(tmp_path, tiny_model_dirs, capsys, monkeypatch, one_thread):
    """Model names ``+1``, ``-2`` and corpus ``@SUM(1)``: neutralised in models.csv, alignment.csv, summary.csv."""
    import shutil

    monkeypatch.chdir(tmp_path)
    _corpus(tmp_path / "@SUM(1).tsv", PARALLEL)
    for name in ("+1", "-2"):
        shutil.copytree(tiny_model_dirs["bert"], tmp_path / name)
    rc = main(["align", "--model", "+1,-2", "--data", "@SUM(1).tsv", "--pivot", "en", "--metrics", "mexa,retrieval",
               "--out", "out", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "models.csv").read_text())))
    assert {r["model"] for r in rows} == {"'+1", "'-2"}
    for r in rows:
        float(r["best_value"]), float(r["mean_over_layers"]), int(r["best_layer"]), int(r["num_hidden_states"])
    folders = sorted(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert len(folders) == 2
    for folder in folders:
        align_rows = list(csv.DictReader(io.StringIO((folder / "alignment.csv").read_text())))
        assert {r["model"] for r in align_rows} <= {"'+1", "'-2"} and len({r["model"] for r in align_rows}) == 1
        assert {r["corpus"] for r in align_rows} == {"'@SUM(1)"}
        assert all(-1 <= float(r["value"]) <= 1 for r in align_rows)
        summary = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
        assert summary and all(not r["lang"].startswith(("=", "+", "-", "@")) for r in summary)
        for r in summary:
            float(r["mean"]), float(r["best"])


def test_predict_reads_back_neutralised_names(tmp_path):
    from xling.harness.outputs import rows_to_csv
    from xling.recipes.predict.run import alignment_from_csv

    p = tmp_path / "alignment.csv"
    p.write_text(rows_to_csv([{"model": "=evil", "lang": "de", "layer": 1, "metric": "mexa", "value": -0.5},
                              {"model": "=evil", "lang": "fr", "layer": 1, "metric": "mexa", "value": 0.5}],
                             ["model", "lang", "layer", "metric", "value"]))
    assert "'=evil" in p.read_text() and "-0.5" in p.read_text()  # neutralised on disk, numbers as numbers
    values, meta = alignment_from_csv(p)
    assert meta["model"] == "=evil"  # the neutralising quote is xling's own: removed on reading back
    assert sorted(v[1] for v in values.values()) == [-0.5, 0.5]


# ----------------------------------------------------------------------------- item 6: terminal


def test_term_escapes_controls_keeps_unicode():
    assert term("a\x1b[31mb\rc\x9b\x7f\u202e") == "a\\x1b[31mb\\rc\\x9b\\x7f\\u202e"
    assert term("grün 猫 кот 🙂 tab\there") == "grün 猫 кот 🙂 tab\\there"
    assert term("two\nlines", keep="\n") == "two\nlines"


def test_corpus_show_escapes(tmp_path, capsys):
    data = tmp_path / "evil\x1b[2J.tsv"
    _corpus(data, [("the \x1b[31mcat\x1b[0m sees", "die katze"), ("over\rwrite", "zwei")])
    assert main(["corpus", "--data", str(data), "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "the \\x1b[31mcat\\x1b[0m sees" in out and "over\\rwrite" in out
    assert "evil\\x1b[2J" in out  # the corpus name (from the file name) in the header line


def test_task_show_escapes(tmp_path, capsys):
    path = tmp_path / "task.jsonl"
    rows = [{"text": "hello \x1b]0;pwned\x07 there\rX", "label": "a\x1b[1m", "lang": "en", "split": "test"},
            {"text": "plain", "label": "b", "lang": "en", "split": "test"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["task", "--task", str(path), "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "hello \\x1b]0;pwned\\x07 there\\rX" in out


def test_error_lines_escape(tmp_path, capsys):
    line = _one_error_line(capsys, ["align", "--metric-option", "\x1b[31mred\x1b[0m=1"])
    assert "\x1b" not in line and "\\x1b[31mred" in line
    rc = None
    try:
        rc = main(["align", "--bogus\x1b[2J"])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and "\x1b" not in err and "--bogus\\x1b[2J" in err


def test_notes_escape(capsys):
    from xling.io import note

    note("language \x1b[31mxx\x1b[0m")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[31mxx" in err


def test_zero_shot_prompt_capped_keeps_first_and_last_tokens(tiny_model_dirs, capsys, one_thread):
    """A giant prompt: the tokenizer sees at most the cap from each end; the scores are those of the
    prompt's first word plus its last words (what truncating the whole prompt keeps)."""
    from transformers import AutoTokenizer

    from xling.tasks.zeroshot import label_loglik, load_causal_lm

    folder = tiny_model_dirs["llama"]
    tok = AutoTokenizer.from_pretrained(folder)
    model = load_causal_lm(folder, torch.float32, torch.device("cpu"))
    seen: list[int] = []

    class Spy:
        def __call__(self, text, *a, **kw):
            seen.append(len(text) if isinstance(text, str) else max(map(len, text)))
            return tok(text, *a, **kw)

        def __getattr__(self, name):
            return getattr(tok, name)

    giant = "dog " + _long_text(2_000_000)
    words = giant.split()
    ref_prompt = " ".join([words[0], *words[-40:]])
    got = label_loglik(model, Spy(), [giant], [["cat", "red house"]], max_length=32)
    assert max(seen) <= char_cap(32)
    assert "1 text longer than 1024 characters" in capsys.readouterr().err
    ref = label_loglik(model, tok, [ref_prompt], [["cat", "red house"]], max_length=32)
    assert got[0] == pytest.approx(ref[0], abs=1e-6)


def test_task_encoding_caps_giant_texts(tiny_model_dirs, capsys):
    """Classification, text pairs, token classification and multiple choice: the tokenizer sees at
    most the cap, and the ids are those of the first words (an independent reference)."""
    from transformers import AutoTokenizer

    from xling.tasks.core import Example
    from xling.tasks.encode import encode

    tok = AutoTokenizer.from_pretrained(tiny_model_dirs["bert"])
    seen: list[int] = []

    def lengths(x):
        if isinstance(x, str):
            return [len(x)]
        return [n for item in x for n in (lengths(item) if not isinstance(item, str) else [len(item)])]

    class Spy:
        def __call__(self, *a, **kw):
            for arg in a:
                seen.extend(lengths(arg))
            return tok(*a, **kw)

        def __getattr__(self, name):
            return getattr(tok, name)

    giant = _long_text(4_000)  # 8x the cap; uncut, a pair of 40,000 characters took 8.5 GB in the tokenizer
    words = giant.split(" ")
    L = 16
    head = " ".join(words[:L])
    cls = encode(Spy(), "classification", [Example(text=giant, label=0), Example(text="the cat", label=1)], L)
    assert cls[0].input_ids == tok(head, truncation=True, max_length=L)["input_ids"]
    pair = encode(Spy(), "classification", [Example(text=giant, text_pair=giant, label=0)], L)
    assert pair[0].input_ids == tok(head, head, truncation="longest_first", max_length=L)["input_ids"]
    tc = encode(Spy(), "token-classification", [Example(tokens=words, tags=[0] * len(words))], L)
    assert tc[0].input_ids == tok(words[:L], is_split_into_words=True, truncation=True, max_length=L)["input_ids"]
    assert len(tc[0].first_subword) == len(words) and tc[0].first_subword[L] == -1
    mc = encode(Spy(), "multiple-choice", [Example(text=giant, choices=["cat", giant], label=0)], L)
    assert mc[0].input_ids[1] == tok(head, head, truncation="longest_first", max_length=L)["input_ids"]
    assert max(seen) <= char_cap(L)
    notes = [x for x in capsys.readouterr().err.splitlines() if x.startswith("xling: note:")]
    assert len(notes) == 4 and "1 text longer" in notes[0] and "2 texts longer" in notes[1]
