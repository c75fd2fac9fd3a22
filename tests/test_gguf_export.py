"""``xling vocab export --format gguf`` (xling.modules.gguf_export) on tiny random decoders built here.

Three decoders cover the layouts: a Llama with a byte-level BPE tokenizer and tied
embeddings (SmolLM2 style, embedding padded past the vocabulary), a Llama with a
SentencePiece BPE tokenizer with byte fallback and an untied head (Llama 2 style),
and a Gemma 3 text decoder (tied, sliding-window and global layers, q/k norms, norm
weights stored as ``1 + w``). Each is exported, read back with transformers' own GGUF
reader (``from_pretrained(folder, gguf_file=...)``, an independent implementation of
the format), and compared with the source:

* F32: every weight equal (the q/k permutation and the Gemma norm offset undone by the
  reader), logits equal within 1e-5;
* F16: logits within ``F16_TOL`` of the largest logit (the weights rounded to 11
  significant bits; measured 1e-3 to 3e-3 on these models);
* the tokenizer the reader rebuilds from the GGUF metadata encodes sample text in three
  scripts (Latin, Cyrillic, Devanagari, plus characters the training text never had)
  to the same ids, special tokens included.

Error paths: an unsupported architecture, an existing target, a non-.gguf target,
a configuration llama.cpp cannot express, a missing ``gguf`` package.
"""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import torch

from xling.cli import main
from xling.errors import XlingError

pytest.importorskip("gguf")

#: F16 logits may differ from the F32 source by this share of the largest |logit|.
F16_TOL = 1e-2

LATIN = "the cat sees a small dog near the red house and two birds sing over the river every day".split()
CYRILLIC = "кошка видит маленькую собаку возле красного дома и две птицы поют над рекой каждый день".split()
DEVANAGARI = "बिल्ली लाल घर के पास एक छोटे कुत्ते को देखती है और दो पक्षी हर दिन नदी पर गाते हैं".split()
SAMPLES = [
    "the cat sees a small dog",
    "кошка видит маленькую собаку возле дома",
    "बिल्ली लाल घर के पास",
    "Mixed: the dog и собака, नदी! 42 times €",  # digits, punctuation and € are not in the training text
    "two  spaces and a\ttab, then a longer sentence: the cat sees a small dog near the red house",
]
# Not among the samples: a text that starts with a space. SentencePiece and llama.cpp put the "▁" prefix before
# it all the same ("  a" -> "▁▁▁a", as the Llama 2 tokenizer here does), while transformers' GGUF reader rebuilds
# a Metaspace(prepend_scheme="first") tokenizer that adds none there ("▁▁a"): a difference of that reader.


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
            for words in (LATIN, CYRILLIC, DEVANAGARI) for _ in range(n)]


TRAIN = _sentences(60, 0)


def _fast(tok, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def tok_byte_level():
    """SmolLM2 / GPT-2 style: byte-level BPE, ``<|endoftext|>`` special, no BOS added."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return _fast(tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def tok_qwen2():
    """Qwen2 style: NFC, the Qwen2 split regex, then byte-level BPE without its own regex."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    from xling.modules.gguf_export import _SPLIT_PRE

    regex = next(r for r, name in _SPLIT_PRE.items() if name == "qwen2")
    tok = Tokenizer(BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return _fast(tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _spm_bpe(specials: list[str], normalizer, bos: str):
    """SentencePiece BPE with ``<0x00>``..``<0xFF>`` byte fallback, trained on ``▁``-split words."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    from xling.methods.vocab.tokenizer import BYTE_PIECES

    unk = next(s for s in specials if "unk" in s)
    tok = Tokenizer(BPE(unk_token=unk, fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=700, special_tokens=specials + list(BYTE_PIECES),
                                                       show_progress=False))
    tj = json.loads(tok.to_str())
    tj["added_tokens"] = [a for a in tj["added_tokens"] if a["content"] in specials]
    tj["model"]["byte_fallback"] = True
    tj["pre_tokenizer"] = None  # at run time the whole text is one piece, as in SentencePiece
    tok = Tokenizer.from_str(json.dumps(tj))
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def tok_llama2():
    """Llama 2 style: ``▁`` prefix on the text, BOS added."""
    from tokenizers import normalizers

    tok = _spm_bpe(["<unk>", "<s>", "</s>"], normalizers.Sequence([normalizers.Prepend("▁"),
                                                                    normalizers.Replace(" ", "▁")]), "<s>")
    from tokenizers import decoders

    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])  # the prefix ▁ is no space of the text
    return _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tok_gemma():
    """Gemma style: spaces to ``▁`` with no prefix, ``<pad> <eos> <bos> <unk>`` first, BOS added."""
    from tokenizers import normalizers

    tok = _spm_bpe(["<pad>", "<eos>", "<bos>", "<unk>"], normalizers.Replace(" ", "▁"), "<bos>")
    return _fast(tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")


def _randomise(model, gemma: bool) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # not the identity, so that a wrong offset or a missed norm shows
                p.copy_((0.0 if gemma else 1.0) + 0.2 * torch.randn_like(p))


def build(kind: str, folder, seed: int = 0):
    """Save a tiny random decoder ``kind`` (llama-bpe, llama-spm, qwen2, gemma3) with its tokenizer into ``folder``."""
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    torch.manual_seed(seed)
    if kind == "llama-bpe":
        tok = tok_byte_level()
        rows = -(-len(tok) // 64) * 64  # padded past the vocabulary, as SmolLM2's 49,152 rows
        cfg = LlamaConfig(vocab_size=rows, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                          rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=True, initializer_range=0.2,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          architectures=["LlamaForCausalLM"])
        model = LlamaForCausalLM(cfg)
    elif kind == "llama-spm":
        tok = tok_llama2()
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, intermediate_size=96, max_position_embeddings=128,
                          rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.2,
                          bos_token_id=1, eos_token_id=2, architectures=["LlamaForCausalLM"])
        model = LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        tok = tok_qwen2()
        cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                          rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, initializer_range=0.2,
                          eos_token_id=tok.eos_token_id, architectures=["Qwen2ForCausalLM"])
        model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # q/k/v biases, which the qwen2 architecture has and llama's would lose
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.copy_(torch.randn_like(proj.bias))
    elif kind == "gemma3":
        tok = tok_gemma()
        # head_dim 256 = query_pre_attn_scalar, as in Gemma 3 270M: llama.cpp scales attention by 1/sqrt(head_dim),
        # transformers' GGUF reader keeps the config's default query_pre_attn_scalar (256)
        cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=6, num_attention_heads=2,
                               num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, intermediate_size=128,
                               max_position_embeddings=128, sliding_window=4, rope_theta=200000.0,
                               initializer_range=0.2, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                               architectures=["Gemma3ForCausalLM"])
        model = Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(kind)
    _randomise(model, gemma=kind == "gemma3")
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


KINDS = ("llama-bpe", "llama-spm", "qwen2", "gemma3")


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-export")
    return {k: build(k, root / k, seed=i) for i, k in enumerate(KINDS)}


@pytest.fixture(scope="module")
def exported(decoders, tmp_path_factory):
    """(kind, type) -> the .gguf written by the command line."""
    root = tmp_path_factory.mktemp("gguf-files")
    out = {}
    for kind, folder in decoders.items():
        for ftype in ("f32", "f16"):
            path = root / kind / f"{kind}-{ftype}.gguf"
            assert main(["vocab", "export", "--format", "gguf", "--model", str(folder), "--out", str(path),
                         "--type", ftype, "--quiet"]) == 0
            out[kind, ftype] = path
    return out


def _source(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(folder))


def _read_back(path):
    """transformers' own GGUF reader: (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tok


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("kind", KINDS)
def test_f32_round_trip_same_weights_logits_and_ids(kind, decoders, exported, one_thread):
    src, src_tok = _source(decoders[kind])
    model, tok = _read_back(exported[kind, "f32"])
    assert type(model).__name__ == type(src).__name__
    sd, back = src.state_dict(), model.state_dict()
    assert set(back) == set(sd)
    for name, t in sd.items():  # exact, but Gemma's norms went through 1 + w in float32
        tol = 1e-6 if kind == "gemma3" and "norm" in name else 0.0
        assert torch.allclose(back[name], t, rtol=0, atol=tol), name
    for text in SAMPLES:
        ids = src_tok(text).input_ids
        assert tok(text).input_ids == ids, text
        assert tok.decode(ids, skip_special_tokens=True) == src_tok.decode(ids, skip_special_tokens=True)
        a, b = _logits(src, ids), _logits(model, ids)
        assert a.abs().max() > 0.5  # logits of order 1: the tolerance below is meaningful
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (text, float((a - b).abs().max()))
    if kind == "gemma3":
        assert len(src_tok(SAMPLES[-1]).input_ids) > 2 * src.config.sliding_window  # the window mattered


@pytest.mark.parametrize("kind", KINDS)
def test_f16_round_trip_close(kind, decoders, exported, one_thread):
    import gguf

    src, src_tok = _source(decoders[kind])
    model, tok = _read_back(exported[kind, "f16"])
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(exported[kind, "f16"])).tensors}
    for name, tt in types.items():  # matrices F16, vectors (norms, biases) F32 as llama.cpp expects
        vector = "norm" in name or name.endswith(".bias")
        assert tt == (gguf.GGMLQuantizationType.F32 if vector else gguf.GGMLQuantizationType.F16), name
    worst = 0.0
    for text in SAMPLES:
        ids = src_tok(text).input_ids
        assert tok(text).input_ids == ids
        a, b = _logits(src, ids), _logits(model, ids)
        rel = float((a - b).abs().max() / a.abs().max())
        worst = max(worst, rel)
    assert 0 < worst < F16_TOL, worst
    assert exported[kind, "f16"].stat().st_size < 0.75 * exported[kind, "f32"].stat().st_size


def _fields(path) -> dict:
    import gguf

    r = gguf.GGUFReader(str(path))
    out = {}
    for key, f in r.fields.items():
        if not f.types or key.startswith("GGUF."):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            vals = [f.parts[i] for i in f.data]
            if f.types[-1] == gguf.GGUFValueType.STRING:
                out[key] = [bytes(v).decode("utf-8") for v in vals]
            else:
                out[key] = [v.tolist()[0] for v in vals]
        elif f.types[0] == gguf.GGUFValueType.STRING:
            out[key] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            out[key] = f.parts[f.data[0]].tolist()[0]
    return out


def test_metadata_is_what_llama_cpp_reads(decoders, exported):
    import gguf

    m = _fields(exported["llama-bpe", "f16"])
    assert m["general.architecture"] == "llama" and m["general.file_type"] == 1
    assert (m["llama.block_count"], m["llama.embedding_length"], m["llama.feed_forward_length"]) == (2, 64, 128)
    assert (m["llama.attention.head_count"], m["llama.attention.head_count_kv"]) == (4, 2)
    assert m["llama.rope.freq_base"] == 50000.0 and m["llama.rope.dimension_count"] == 16
    assert m["llama.context_length"] == 128 and m["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "gpt-2"
    assert m["tokenizer.ggml.add_bos_token"] is False and "tokenizer.ggml.scores" not in m
    tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == m["llama.vocab_size"] == 448  # padded rows
    assert tokens[0] == "<|endoftext|>" and types[0] == 3 and m["tokenizer.ggml.eos_token_id"] == 0
    assert tokens[-1] == "[PAD447]" and types[-1] == 5
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(str(exported["llama-bpe", "f16"])).tensors}

    m = _fields(exported["llama-spm", "f32"])
    assert m["general.file_type"] == 0 and m["tokenizer.ggml.model"] == "llama"
    assert m["tokenizer.ggml.add_bos_token"] is True and m["tokenizer.ggml.add_space_prefix"] is True
    tokens, types, scores = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"], m["tokenizer.ggml.scores"]
    assert types[:3] == [2, 3, 3] and tokens[3] == "<0x00>" and types[3] == 6 and types[3 + 255] == 6
    assert (m["tokenizer.ggml.unknown_token_id"], m["tokenizer.ggml.bos_token_id"]) == (0, 1)
    # llama.cpp's SentencePiece tokenizer merges the best-scoring pair first: scores follow the merge order
    merges = m["tokenizer.ggml.merges"]
    index = {t: i for i, t in enumerate(tokens)}
    ranks = [scores[index[a + b]] for a, b in (mg.split(" ") for mg in merges[:50])]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] == 0.0

    m = _fields(exported["gemma3", "f32"])
    assert m["general.architecture"] == "gemma3"
    assert (m["gemma3.attention.key_length"], m["gemma3.attention.value_length"]) == (256, 256)
    assert m["gemma3.attention.sliding_window"] == 4 and m["gemma3.rope.freq_base"] == 200000.0
    assert m["tokenizer.ggml.add_space_prefix"] is False and m["tokenizer.ggml.padding_token_id"] == 0
    r = gguf.GGUFReader(str(exported["gemma3", "f32"]))
    src, _ = _source(decoders["gemma3"])
    norm = next(t for t in r.tensors if t.name == "blk.0.attn_q_norm.weight")
    assert np.allclose(np.asarray(norm.data), src.model.layers[0].self_attn.q_norm.weight.detach().numpy() + 1)


def test_pre_tokenizer_names():
    from xling.modules.gguf_export import _SPLIT_PRE, pre_tokenizer_name

    def byte_level(regex):
        return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": regex}

    assert pre_tokenizer_name({"pre_tokenizer": byte_level(True)}) == "gpt-2"
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level(True)]}
    assert pre_tokenizer_name({"pre_tokenizer": smollm}) == "smollm"
    for regex, name in _SPLIT_PRE.items():
        split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
        pre = {"type": "Sequence", "pretokenizers": [split, byte_level(False)]}
        assert pre_tokenizer_name({"pre_tokenizer": pre}) == name
    try:  # the same regexes as the splits transformers' GGUF reader rebuilds for these names
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:
        GGUF_PRE_TOKENIZER_SPLITS = None
    if GGUF_PRE_TOKENIZER_SPLITS is not None:
        assert all(GGUF_PRE_TOKENIZER_SPLITS[name] == regex for regex, name in _SPLIT_PRE.items())
    split = {"type": "Split", "pattern": {"Regex": r"\w+"}, "behavior": "Isolated", "invert": False}
    with pytest.raises(XlingError, match="no llama.cpp equivalent"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level(False)]}})
    with pytest.raises(XlingError, match="no llama.cpp equivalent"):
        pre_tokenizer_name({"pre_tokenizer": {**byte_level(True), "add_prefix_space": True}})


def test_normalizers_llama_cpp_lacks_are_refused():
    from xling.modules.gguf_export import check_normalizer

    space = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    check_normalizer({"normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, space]}}, "llama")
    check_normalizer({"normalizer": {"type": "NFC"}}, "gpt2")
    check_normalizer({"normalizer": None}, "gpt2")
    with pytest.raises(XlingError, match="Lowercase"):
        check_normalizer({"normalizer": {"type": "Sequence", "normalizers": [space, {"type": "Lowercase"}]}}, "llama")
    with pytest.raises(XlingError, match="NFKC"):
        check_normalizer({"normalizer": {"type": "NFKC"}}, "gpt2")


def test_tensor_names_agree_with_gguf_package(decoders):
    """The name table of the writer against the gguf package's own map (transformers name -> GGUF name)."""
    import gguf

    from xling.modules.gguf_export import gguf_tensor_name

    for kind, arch, enum in (("llama-spm", "llama", gguf.MODEL_ARCH.LLAMA), ("qwen2", "qwen2", gguf.MODEL_ARCH.QWEN2),
                             ("gemma3", "gemma3", gguf.MODEL_ARCH.GEMMA3)):
        src, _ = _source(decoders[kind])
        name_map = gguf.get_tensor_name_map(enum, src.config.num_hidden_layers)
        for hf_name in src.state_dict():
            base, suffix = hf_name.rsplit(".", 1)
            assert gguf_tensor_name(hf_name, arch) == f"{name_map.get_name(base)}.{suffix}", hf_name


def test_permutation_interleaves_rotary_pairs():
    """Row 2i / 2i+1 of a head in llama.cpp's order are rows i / i + head_dim/2 of transformers' (by hand)."""
    from xling.modules.gguf_export import permute_rows

    n_head, hd = 3, 8
    w = np.arange(n_head * hd * 2, dtype=np.float32).reshape(n_head * hd, 2)
    p = permute_rows(w, n_head)
    for h in range(n_head):
        for i in range(hd // 2):
            assert (p[h * hd + 2 * i] == w[h * hd + i]).all()
            assert (p[h * hd + 2 * i + 1] == w[h * hd + hd // 2 + i]).all()


def test_existing_target_refused_and_overwrite_replaces(decoders, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"not mine")
    args = ["vocab", "export", "--model", str(decoders["llama-spm"]), "--out", str(out), "--type", "f32", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"not mine"
    assert main(args + ["--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # no temporary left beside it
    assert main(["vocab", "export", "--model", str(decoders["llama-spm"]), "--out", str(tmp_path / "m.bin")]) == 2
    assert ".gguf" in capsys.readouterr().err


def test_failure_while_writing_leaves_no_file(decoders, tmp_path, monkeypatch):
    import gguf

    def boom(self, *a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    out = tmp_path / "m.gguf"
    with pytest.raises(OSError):
        main(["vocab", "export", "--model", str(decoders["llama-spm"]), "--out", str(out), "--quiet"])
    assert list(tmp_path.iterdir()) == []


def test_unsupported_architecture_one_line(tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "bert.gguf"
    assert main(["vocab", "export", "--model", str(tiny_model_dirs["bert"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'bert'" in err and "gemma3_text" in err and "llama" in err
    assert not out.exists()


def test_configs_llama_cpp_cannot_express_are_refused():
    from transformers import Gemma3TextConfig, LlamaConfig

    from xling.modules.gguf_export import check_representable

    with pytest.raises(XlingError, match="rope scaling"):
        check_representable(LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0}), "llama")
    with pytest.raises(XlingError, match="activation"):
        check_representable(LlamaConfig(hidden_act="gelu"), "llama")
    with pytest.raises(XlingError, match="layer pattern"):
        check_representable(Gemma3TextConfig(num_hidden_layers=4, head_dim=256, layer_types=["full_attention"] * 4),
                            "gemma3")
    with pytest.raises(XlingError, match="query_pre_attn_scalar"):
        check_representable(Gemma3TextConfig(head_dim=64, query_pre_attn_scalar=256), "gemma3")
    assert check_representable(Gemma3TextConfig(head_dim=256, query_pre_attn_scalar=256), "gemma3") == []


def test_unsupported_tokenizer_family_one_line():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from xling.modules.gguf_export import tokenizer_fields

    tok = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "a": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(XlingError, match="wordlevel tokenizers are not supported"):
        tokenizer_fields(_fast(tok, unk_token="<unk>"), 2)


def test_missing_gguf_package_one_line(decoders, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    out = tmp_path / "m.gguf"
    assert main(["vocab", "export", "--model", str(decoders["llama-spm"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gguf" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_llama_model_with_a_gemma_style_tokenizer_gets_the_reader_note(decoders, tmp_path, capsys, one_thread):
    """The transplant case (SmolLM2 with Gemma's vocabulary): a llama-architecture file whose SentencePiece
    tokenizer adds no '▁' prefix. The file says so (add_space_prefix false, as llama.cpp reads it); the export notes
    that transformers' GGUF reader ignores that key for llama and tokenizes the first word differently."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tok_gemma()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=96, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    folder = tmp_path / "llama-gemma-tok"
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    path = tmp_path / "x.gguf"
    assert main(["vocab", "export", "--model", str(folder), "--out", str(path), "--type", "f32"]) == 0
    out = capsys.readouterr().out
    assert "note: the tokenizer adds no '▁' before the first word" in out
    assert _fields(path)["tokenizer.ggml.add_space_prefix"] is False
    assert main(["vocab", "export", "--model", str(decoders["llama-spm"]), "--out", str(tmp_path / "y.gguf"),
                 "--type", "f32"]) == 0
    assert "transformers' GGUF reader ignores" not in capsys.readouterr().out


def test_unwritable_target_folder_is_one_line_before_any_work(tmp_path, monkeypatch):
    """A folder the export cannot write to is refused before the model loads, naming the --out path given
    (root ignores permissions, so the failure is simulated where the probe file would be created)."""
    import tempfile

    from xling.errors import XlingError
    from xling.modules.gguf_export import check_target

    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(XlingError, match=r"--out .*model\.gguf cannot be written: .*Permission denied"):
        check_target(tmp_path / "model.gguf")
    assert list(tmp_path.iterdir()) == []
