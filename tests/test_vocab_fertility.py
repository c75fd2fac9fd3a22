"""``xling vocab fertility``: tokens per word and per character, parity against English, byte fallback rate.

Three tiny tokenizers built here with ``tokenizers`` (byte-level BPE, SentencePiece-style BPE with byte
fallback, Unigram with byte fallback) have vocabularies small enough to segment by hand: every expected count
below is worked out in the comments, not by running a tokenizer.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from xling.cli import main

TEXTS = {
    "eng": ["cat cat", "a cat", "cat"],
    "deu": ["Katze süß", "eine Katze", "Katze"],
    "zho": ["猫猫", "猫", "猫"],
}
#: Hand counts per row: (tokens, byte tokens). Words (str.split) and non-space characters follow.
WORDS = {"eng": [2, 2, 1], "deu": [2, 2, 1], "zho": [1, 1, 1]}
CHARS = {"eng": [6, 4, 3], "deu": [8, 9, 5], "zho": [2, 1, 1]}
HAND = {
    # ByteLevel splits words with their leading space ("Ġcat"); merges build only "cat" and "Ġcat";
    # ü and ß are 2 bytes, 猫 is 3 bytes (E7 8C AB), and a lone byte of a multi-byte character is a byte token.
    "bytelevel": {
        "eng": [(2, 0), (2, 0), (1, 0)],      # cat|Ġcat ; a|Ġcat ; cat
        "deu": [(11, 4), (10, 0), (5, 0)],    # K a t z e | Ġ s Ã ¼ Ã Ł ; e i n e | Ġ K a t z e ; K a t z e
        "zho": [(6, 6), (3, 3), (3, 3)],      # six bytes ; three ; three
    },
    # spaces become "▁", no pre-tokenizer; merges build "ca" and "cat"; ß and 猫 are not pieces: their
    # UTF-8 bytes become <0xNN> pieces.
    "spm-bpe": {
        "eng": [(3, 0), (3, 0), (1, 0)],      # cat ▁ cat ; a ▁ cat ; cat
        "deu": [(10, 2), (10, 0), (5, 0)],    # K a t z e ▁ s ü <0xC3> <0x9F> ; e i n e ▁ K a t z e ; K a t z e
        "zho": [(6, 6), (3, 3), (3, 3)],
    },
    # whole-word pieces win (score -1 against -2 for the pieces "▁s" and "ü"); ß is not covered: 2 bytes
    "unigram": {
        "eng": [(2, 0), (2, 0), (1, 0)],      # ▁cat ▁cat ; ▁a ▁cat ; ▁cat
        "deu": [(5, 2), (2, 0), (1, 0)],      # ▁Katze ▁s ü <0xC3> <0x9F> ; ▁eine ▁Katze ; ▁Katze
        "zho": [(2, 0), (1, 0), (1, 0)],      # ▁猫 猫 ; ▁猫 ; ▁猫
    },
}
LANG = {"eng": "eng_Latn", "deu": "deu_Latn", "zho": "zho_Hans"}


# ----------------------------------------------------------------------------- tiny tokenizers
def _save(tok, folder: Path, weights_trap: bool = False, **special) -> Path:
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(folder)
    if weights_trap:  # a model whose weights cannot be read: fertility must not try
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                        "vocab_size": 10, "hidden_size": 8,
                                                        "num_attention_heads": 2}), encoding="utf-8")
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    return folder


def tok_bytelevel():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    for t in ("ca", "cat", "Ġcat"):
        vocab[t] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("c", "a"), ("ca", "t"), ("Ġ", "cat")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


def tok_spm_bpe():
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    from xling.methods.vocab.tokenizer import BYTE_PIECES

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *BYTE_PIECES, "▁"])}
    for t in [*"acteinkszuK", "ü", "ca", "cat"]:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("c", "a"), ("ca", "t")], unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok


def tok_unigram(byte_fallback: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from xling.methods.vocab.tokenizer import BYTE_PIECES

    pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(b, -20.0) for b in BYTE_PIECES]
    pieces += [("▁cat", -1.0), ("▁a", -1.0), ("▁Katze", -1.0), ("▁eine", -1.0), ("▁猫", -1.0), ("猫", -1.0),
               ("▁s", -2.0), ("ü", -2.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=byte_fallback))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fertility-tokenizers")
    return {
        "bytelevel": _save(tok_bytelevel(), root / "bytelevel", eos_token="<|endoftext|>"),
        "spm-bpe": _save(tok_spm_bpe(), root / "spm-bpe", weights_trap=True, bos_token="<bos>", eos_token="<eos>",
                         unk_token="<unk>", pad_token="<pad>"),
        "unigram": _save(tok_unigram(), root / "unigram", unk_token="<unk>", bos_token="<s>", eos_token="</s>"),
    }


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("fertility-data")
    parts = []
    for lang, texts in TEXTS.items():
        (root / f"{lang}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        parts.append(f"{lang}={root / f'{lang}.txt'}")
    return ",".join(parts)


# ----------------------------------------------------------------------------- the hand counts
def test_tokenizers_segment_as_counted_by_hand(tokenizer_dirs):
    """The fixtures themselves: each text gives the hand-counted number of tokens."""
    from transformers import AutoTokenizer

    for kind, folder in tokenizer_dirs.items():
        tok = AutoTokenizer.from_pretrained(folder)
        for lang, texts in TEXTS.items():
            got = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
            assert got == [n for n, _ in HAND[kind][lang]], (kind, lang, [tok.tokenize(t) for t in texts])


def _expected(kind: str, lang: str) -> dict:
    tokens = sum(n for n, _ in HAND[kind][lang])
    english = sum(n for n, _ in HAND[kind]["eng"])
    return {"tokens_per_word": None if lang == "zho" else tokens / sum(WORDS[lang]),
            "tokens_per_char": tokens / sum(CHARS[lang]), "parity_vs_english": tokens / english,
            "byte_fallback_rate": sum(b for _, b in HAND[kind][lang]) / tokens, "tokens": tokens}


def test_cli_fertility_equals_the_hand_count(tokenizer_dirs, data_spec, tmp_path, capsys):
    out = tmp_path / "fert"
    models = ",".join(str(tokenizer_dirs[k]) for k in ("bytelevel", "spm-bpe", "unigram"))
    assert main(["vocab", "fertility", "--model", models, "--data", data_spec, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "tokens/word is left empty for zho_Hans" in printed
    with open(out / "fertility.csv", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames[:6] == ["model", "lang", "tokens_per_word", "tokens_per_char", "parity_vs_english",
                                     "byte_fallback_rate"]
    assert len(rows) == 9
    for kind in ("bytelevel", "spm-bpe", "unigram"):
        for lang in TEXTS:
            (row,) = [r for r in rows if r["model"] == str(tokenizer_dirs[kind]) and r["lang"] == LANG[lang]]
            want = _expected(kind, lang)
            assert int(row["tokens"]) == want["tokens"], (kind, lang)
            for key in ("tokens_per_char", "parity_vs_english", "byte_fallback_rate"):
                assert float(row[key]) == pytest.approx(want[key], rel=1e-5), (kind, lang, key)
            if want["tokens_per_word"] is None:
                assert row["tokens_per_word"] == ""  # written without spaces: no words to count
            else:
                assert float(row["tokens_per_word"]) == pytest.approx(want["tokens_per_word"], rel=1e-5)
            lo, hi, p = float(row["parity_low"]), float(row["parity_high"]), float(row["parity_vs_english"])
            assert lo <= p <= hi
            if lang == "eng":
                assert lo == hi == p == 1.0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and "tokens relative to English" in html
    assert "Petrov" in html and "whitespace not counted" in html


def test_no_weights_are_read(tokenizer_dirs, data_spec, tmp_path):
    """The spm-bpe folder holds an unreadable model.safetensors: the tokenizer alone is loaded."""
    from xling.recipes.vocab.fertility import fertility

    res = fertility(models=[str(tokenizer_dirs["spm-bpe"])], data=data_spec, out=None, progress=False)
    assert {r["lang"] for r in res.rows} == set(LANG.values())


def test_hub_ids_fetch_tokenizer_files_only(monkeypatch, tmp_path):
    import huggingface_hub

    from xling.models.loading import tokenizer_folder

    seen = []

    def fake(name, revision=None, allow_patterns=None, local_files_only=False):
        seen.append(list(allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert tokenizer_folder("someone/some-model") == tmp_path
    assert seen and all("*.safetensors" not in p for p in seen) and "tokenizer*" in seen[0]


def test_languages_without_spaces_in_the_bible():
    from xling.data.bible import TRANSLATIONS
    from xling.methods.vocab.fertility import writes_spaces

    assert sorted(lang for lang in TRANSLATIONS if not writes_spaces(lang)) == ["jpn_Jpan", "zho_Hans"]


def test_byte_level_decoder_is_the_bytelevel_alphabet():
    from tokenizers import pre_tokenizers

    from xling.methods.vocab.fertility import byte_level_decoder

    dec = byte_level_decoder()
    assert set(dec) == set(pre_tokenizers.ByteLevel.alphabet()) and sorted(dec.values()) == list(range(256))
    assert dec["Ġ"] == 0x20 and dec["Ċ"] == 0x0A and dec["A"] == 0x41 and dec["Ã"] == 0xC3


def test_byte_tokens_by_family():
    """Byte-level: exactly the vocabulary entries that are not whole UTF-8 text; SentencePiece: the <0xNN>."""
    import json as _json

    from xling.methods.vocab.fertility import byte_token_ids

    bl = _json.loads(tok_bytelevel().to_str())
    ids = byte_token_ids(bl)
    inv = {i: t for t, i in bl["model"]["vocab"].items()}
    assert len(ids) == 128  # the bytes 0x80..0xFF: continuation and lead bytes alone
    assert {inv[i] for i in ids} >= {"Ã", "¼"} and "Ġcat" not in {inv[i] for i in ids}
    spm = _json.loads(tok_spm_bpe().to_str())
    assert len(byte_token_ids(spm)) == 256
    assert byte_token_ids(_json.loads(tok_unigram(byte_fallback=False).to_str())) == set()


def test_unknown_rate_without_byte_fallback():
    """Unigram without byte fallback: ß is one <unk>, and no token is a byte token."""
    from xling.methods.vocab.corpus import encode
    from xling.methods.vocab.fertility import count_language, fertility_row

    tok = tok_unigram(byte_fallback=False)
    texts = TEXTS["deu"]
    c = count_language(texts, encode(tok, texts), set(), unk_id=0)
    assert c.tokens.tolist() == [4, 2, 1] and c.unk_tokens.tolist() == [1, 0, 0]
    row = fertility_row(c, None)
    assert row["unk_rate"] == pytest.approx(1 / 7) and row["byte_fallback_rate"] == 0
    assert row["parity_vs_english"] is None and row["parity_low"] is None


def test_corpus_without_english_and_unknown_language(tokenizer_dirs, tmp_path, capsys):
    deu, fra = tmp_path / "deu.txt", tmp_path / "fra.txt"
    deu.write_text("Katze\n", encoding="utf-8")
    fra.write_text("chat\n", encoding="utf-8")
    data, out = f"deu={deu},fra={fra}", tmp_path / "o"
    model = str(tokenizer_dirs["unigram"])
    assert main(["vocab", "fertility", "--model", model, "--data", data, "--out", str(out), "--quiet"]) == 0
    assert "no English" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "fertility.csv", encoding="utf-8")))
    # "▁chat": no piece covers it, so byte fallback: 3 bytes for "▁" and 4 for "chat"
    assert [(r["lang"], r["parity_vs_english"], r["tokens"]) for r in rows] == [("deu_Latn", "", "1"),
                                                                                ("fra_Latn", "", "7")]
    rc = main(["vocab", "fertility", "--model", model, "--data", data, "--langs", "ru", "--out",
               str(tmp_path / "o2"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "rus" in err and len(err.splitlines()) == 1 and not (tmp_path / "o2").exists()
