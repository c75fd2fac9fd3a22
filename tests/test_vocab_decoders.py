"""``xling vocab trim`` on decoders: tiny random Gemma 3 (tied, scaled embeddings, Gemma-style BPE with byte
fallback), Llama (untied head, Unigram with byte fallback), SmolLM2-style Llama (tied, byte-level BPE) and GPT-2
(tied, byte-level BPE), with tokenizers built here by ``tokenizers``.

On text the kept vocabulary covers, the trimmed model's logits equal the original's kept columns, the trimmed
perplexity equals the original's renormalised over the kept tokens, tied heads stay tied, untied heads stay
separate, Gemma's embedding scale and every special token survive, and the written folder reloads to the same model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from xling.cli import main

EN = ("the cat sees a dog in the big red house and two small birds sing near the river while "
      "people walk home after work every day because weather is nice").split()
PT = ("o gato vê um cão na casa grande vermelha e dois pássaros pequenos cantam perto do rio "
      "enquanto as pessoas caminham para casa depois do trabalho todos os dias porque tempo está bom").split()


def sentences(words, n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        out.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", ""]))
    return out


TRAIN = sentences(EN, 300, 1) + sentences(PT, 300, 2)
EN_CORPUS = sentences(EN, 100, 3)
KINDS = ("gemma3", "llama-unigram", "smollm2", "gpt2")
TIED = {"gemma3": True, "llama-unigram": False, "smollm2": True, "gpt2": True}
FAMILY = {"gemma3": "sentencepiece-bpe", "llama-unigram": "unigram", "smollm2": "byte-level-bpe",
          "gpt2": "byte-level-bpe"}


# ----------------------------------------------------------------------------- tokenizers
def _byte_pieces():
    from xling.methods.vocab.tokenizer import BYTE_PIECES

    return list(BYTE_PIECES)


def tok_gemma():
    """Gemma's layout: specials first, byte pieces, placeholder and turn tokens, spaces as "▁" by a normaliser,
    no pre-tokenisation (merges may cross words), BPE with byte fallback, <bos> prepended."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<unused0>",
                "<unused1>"]
    tok = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=700, special_tokens=specials + _byte_pieces(),
                                                       show_progress=False))
    tj = json.loads(tok.to_str())
    tj["added_tokens"] = [a for a in tj["added_tokens"] if a["content"] in specials]
    tj["model"]["byte_fallback"] = True
    tj["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                           "invert": False}
    tj["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    tok = Tokenizer.from_str(json.dumps(tj))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok, dict(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                     additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])


def tok_unigram():
    """SentencePiece Unigram with byte fallback (``▁`` by Metaspace), <s> prepended."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import Unigram

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(TRAIN, trainers.UnigramTrainer(vocab_size=320, special_tokens=specials + _byte_pieces(),
                                                           unk_token="<unk>", show_progress=False))
    tj = json.loads(tok.to_str())
    tj["added_tokens"] = [a for a in tj["added_tokens"] if a["content"] in specials]
    tj["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(tj))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok, dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tok_bytelevel(specials):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def build(kind: str, folder: Path) -> Path:
    """A tiny random decoder of ``kind`` with its tokenizer, saved (safetensors) into ``folder``."""
    import transformers as T

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    gen = None
    if kind == "gemma3":
        tok, special = tok_gemma()
        cfg = T.Gemma3TextConfig(vocab_size=tok.get_vocab_size(), num_key_value_heads=1, head_dim=8,
                                 max_position_embeddings=320, sliding_window=4,
                                 layer_types=["sliding_attention", "full_attention"], pad_token_id=0, eos_token_id=1,
                                 bos_token_id=2, query_pre_attn_scalar=8, tie_word_embeddings=True,
                                 architectures=["Gemma3ForCausalLM"], **small)
        model = T.Gemma3ForCausalLM(cfg)
        gen = T.GenerationConfig(bos_token_id=2, eos_token_id=[1, tok.token_to_id("<end_of_turn>")], pad_token_id=0)
    elif kind == "llama-unigram":
        tok, special = tok_unigram()
        cfg = T.LlamaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=320, num_key_value_heads=2,
                            bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                            architectures=["LlamaForCausalLM"], **small)
        model = T.LlamaForCausalLM(cfg)
    elif kind == "smollm2":
        tok = tok_bytelevel(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        special = dict(bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
                       pad_token="<|im_end|>")
        cfg = T.LlamaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=320, num_key_value_heads=2,
                            bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                            architectures=["LlamaForCausalLM"], **small)
        model = T.LlamaForCausalLM(cfg)
    elif kind == "gpt2":
        tok = tok_bytelevel(["<|endoftext|>"])
        special = dict(eos_token="<|endoftext|>", bos_token="<|endoftext|>")
        cfg = T.GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=320,
                           bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])
        model = T.GPT2LMHeadModel(cfg)
    else:
        raise ValueError(kind)
    model.eval()
    if gen is not None:
        model.generation_config = gen
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    T.PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(folder)
    if kind == "gemma3":  # the built-in Gemma folder carries its terms: a trimmed copy must carry them too
        (folder / "GEMMA_TERMS.html").write_text("<p>terms</p>", encoding="utf-8")
        (folder / "NOTICE.md").write_text("notice", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def decoder_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-decoders")
    return {k: build(k, root / k) for k in KINDS}


@pytest.fixture(scope="module")
def en_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab-decoder-corpus") / "en.txt"
    path.write_text("\n".join(EN_CORPUS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trimmed(decoder_dirs, en_file, tmp_path_factory):
    """Each decoder trimmed to English once (the report and the folder), shared by the tests below."""
    from xling.recipes.vocab.run import TrimConfig, trim

    root = tmp_path_factory.mktemp("vocab-decoders-trimmed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster on one thread (and the machine is shared)
    out = {}
    try:
        for kind in KINDS:
            rep = trim(TrimConfig(model=str(decoder_dirs[kind]), langs=["en"], corpus=str(en_file), out=root / kind,
                                  store=None, progress=False, check_sentences=4, heldout=20))
            out[kind] = (root / kind, rep)
    finally:
        torch.set_num_threads(threads)
    return out


def load(folder: Path):
    from transformers import AutoConfig, AutoTokenizer

    from xling.methods.vocab.model import model_class

    model = model_class(AutoConfig.from_pretrained(folder)).from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def kept_ids(folder: Path) -> np.ndarray:
    meta = json.loads((folder / "xling_vocab.json").read_text())
    return np.concatenate([np.arange(a, b) for a, b in meta["id_map"]["kept_old_id_ranges"]])


# ----------------------------------------------------------------------------- identity on covered text
@pytest.mark.parametrize("kind", KINDS)
def test_trim_identity_on_covered_text(kind, decoder_dirs, trimmed):
    """Reloaded from disk: same tokens under the map, logits equal to the original's kept columns (<= 1e-5), and
    the trimmed NLL equals the original's renormalised over the kept tokens (computed here by hand)."""
    out, rep = trimmed[kind]
    assert rep["tokenizer_family"] == FAMILY[kind]
    old_model, old_tok = load(decoder_dirs[kind])
    new_model, new_tok = load(out)
    keep = kept_ids(out)
    cols = torch.as_tensor(keep)
    old_to_new = np.full(len(old_tok), -1)
    old_to_new[keep] = np.arange(len(keep))
    assert new_model.config.vocab_size == len(keep) == len(new_tok) < len(old_tok)
    checked = 0
    with torch.no_grad():
        for text in EN_CORPUS:
            a = old_tok(text)["input_ids"]
            if (old_to_new[a] < 0).any():
                continue
            b = new_tok(text)["input_ids"]
            assert list(old_to_new[a]) == b, text
            assert new_tok.decode(b) == old_tok.decode(a)
            la = old_model(input_ids=torch.tensor([a])).logits[0]
            lb = new_model(input_ids=torch.tensor([b])).logits[0]
            assert (la[:, cols] - lb).abs().max() <= 1e-5
            # the renormalised NLL, by hand: log-softmax over the kept columns only, targets at their new ids
            renorm = -torch.log_softmax(la[:-1, cols], -1)[torch.arange(len(b) - 1), torch.tensor(b[1:])].sum()
            after = -torch.log_softmax(lb[:-1], -1)[torch.arange(len(b) - 1), torch.tensor(b[1:])].sum()
            full = -torch.log_softmax(la[:-1], -1)[torch.arange(len(a) - 1), torch.tensor(a[1:])].sum()
            assert abs(float(renorm - after)) <= 1e-4 and float(after) <= float(full) + 1e-6
            checked += 1
    assert checked >= 8
    # tied heads stay one tensor, untied heads stay two
    tied = new_model.get_output_embeddings().weight.data_ptr() == new_model.get_input_embeddings().weight.data_ptr()
    assert tied == TIED[kind]
    assert new_model.get_output_embeddings().weight.shape[0] == len(keep)
    if not TIED[kind]:
        assert torch.equal(new_model.get_output_embeddings().weight,
                           old_model.get_output_embeddings().weight[cols])
    # special tokens: the same strings, config and generation ids through the map
    assert new_tok.all_special_tokens == old_tok.all_special_tokens
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        old_id = getattr(old_model.config, attr, None)
        if isinstance(old_id, int):
            assert getattr(new_model.config, attr) == old_to_new[old_id]
    old_eos = old_model.generation_config.eos_token_id
    if isinstance(old_eos, list):
        assert new_model.generation_config.eos_token_id == [int(old_to_new[i]) for i in old_eos]


@pytest.mark.parametrize("kind", KINDS)
def test_report_perplexity_speed_and_load(kind, trimmed):
    _, rep = trimmed[kind]
    par = rep["parity"]
    assert par["ids_equal_under_map"] == par["sentences"] == 4
    assert par["max_abs_diff_logits"] <= 1e-5 and par["reloaded_max_abs_diff"] == 0.0
    pp = rep["perplexity"]
    assert pp["heldout_sentences"] == 20  # held out of the count
    cov = pp["covered"]
    assert cov["sentences"] >= 3 and cov["max_abs_diff_nll"] <= 1e-4
    assert cov["perplexity_after"] == pytest.approx(cov["perplexity_before_renormalised"], rel=1e-5)
    assert cov["perplexity_after"] <= cov["perplexity_before"] and cov["mean_neg_log_kept_mass"] >= 0
    # the identity: log PPL_before - log PPL_after = mean -log P(kept) per token
    assert np.log(cov["perplexity_before"]) - np.log(cov["perplexity_after"]) == pytest.approx(
        cov["mean_neg_log_kept_mass"], abs=1e-4)
    lo, hi = pp["all"]["delta_bits_per_char_ci"]
    assert lo <= pp["all"]["delta_bits_per_char"] <= hi
    for side in ("before", "after"):
        assert rep["model_speed"][side]["forward"]["tokens_per_second"] > 0
        assert rep["model_speed"][side]["generate"]["new_tokens"] == 4 * 32
        assert rep["load_seconds"][side]["model"] > 0
    assert rep["parameters"]["after"]["total"] < rep["parameters"]["before"]["total"]
    assert rep["file_bytes"]["after"]["weights"] < rep["file_bytes"]["before"]["weights"]
    meta = json.loads((trimmed[kind][0] / "xling_vocab.json").read_text())
    assert meta["heldout_sentences"] == {"eng_Latn": 20}


def test_gemma_embedding_scale_and_terms(decoder_dirs, trimmed):
    """Gemma multiplies embeddings by sqrt(hidden) inside its embedding module: the trimmed rows come out scaled
    exactly as before; the Gemma terms and notice travel with the derivative."""
    out, _ = trimmed["gemma3"]
    old_model, _ = load(decoder_dirs["gemma3"])
    new_model, _ = load(out)
    keep = torch.as_tensor(kept_ids(out))
    oe, ne = old_model.get_input_embeddings(), new_model.get_input_embeddings()
    assert float(ne.embed_scale) == float(oe.embed_scale) == pytest.approx(32 ** 0.5)
    with torch.no_grad():
        assert torch.equal(ne(torch.arange(len(keep))), oe(keep))
    assert ne.padding_idx == 0 and new_model.config.pad_token_id == 0
    assert (out / "GEMMA_TERMS.html").read_text() == "<p>terms</p>" and (out / "NOTICE.md").is_file()
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "TokenizersBackend"
    tj = json.loads((out / "tokenizer.json").read_text())
    assert {"<start_of_turn>", "<end_of_turn>", "<unused0>", "<unused1>"} <= {a["content"] for a in tj["added_tokens"]}
    assert tj["pre_tokenizer"]["type"] == "Split" and tj["model"]["byte_fallback"] is True


def test_trim_updates_in_memory_vocab_attributes():
    """Decoder classes copy vocab_size and padding_idx out of the config; trimming in memory updates them."""
    import transformers as T

    from xling.methods.vocab.model import trim_model_

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, pad_token_id=7, tie_word_embeddings=False)
    model = T.LlamaForCausalLM(cfg).eval()
    keep = torch.tensor([0, 1, 2, 7, 10, 20, 30])
    trim_model_(model, keep)
    assert model.config.vocab_size == 7 and model.get_input_embeddings().num_embeddings == 7
    assert model.get_output_embeddings().out_features == 7
    for module in model.modules():
        if "vocab_size" in vars(module):
            assert module.vocab_size == 7, type(module).__name__
        if "padding_idx" in vars(module) and isinstance(module.padding_idx, int):
            assert module.padding_idx == 3, type(module).__name__  # old id 7 is the fourth kept id


def test_sequence_nll_identity_by_hand():
    """sequence_nll on a random logit table: full, renormalised and kept-mass terms against direct sums."""
    from types import SimpleNamespace

    from xling.methods.vocab.lm import sequence_nll

    torch.manual_seed(1)
    table = torch.randn(10, 10)

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(table.clone())

        def forward(self, input_ids):
            return SimpleNamespace(logits=self.w[input_ids])  # next-token logits depend on the current token

    ids, cols = [3, 1, 4, 1, 5], torch.tensor([1, 3, 4, 5, 9])
    r = sequence_nll(Toy(), ids, cols)
    nll = kept = mass = 0.0
    for cur, nxt in zip(ids[:-1], ids[1:]):
        z = table[cur]
        nll -= float(z[nxt] - torch.logsumexp(z, 0))
        kept -= float(z[nxt] - torch.logsumexp(z[cols], 0))
        mass -= float(torch.logsumexp(z[cols], 0) - torch.logsumexp(z, 0))
    assert r["n"] == 4
    assert r["nll"] == pytest.approx(nll, abs=1e-5) and r["nll_kept"] == pytest.approx(kept, abs=1e-5)
    assert r["neg_log_kept_mass"] == pytest.approx(mass, abs=1e-5) and r["nll"] == pytest.approx(kept + mass, abs=1e-5)
    with pytest.raises(ValueError):
        sequence_nll(Toy(), [3, 2], cols)  # 2 is not kept


def test_builtin_decoder_names_resolve(decoder_dirs, en_file, tmp_path, monkeypatch, capsys):
    """``--model gemma-3-270m`` goes through the built-in resolver like every other command (here it hands back
    the tiny Gemma folder instead of fetching the real one)."""
    import xling.models.loading as loading

    asked = []

    def fake(name, *, quiet=False):
        asked.append(name)
        return decoder_dirs["gemma3"]

    monkeypatch.setattr(loading, "resolve_builtin_model", fake)
    out = tmp_path / "g"
    assert main(["vocab", "trim", "--model", "gemma-3-270m", "--langs", "en", "--corpus", str(en_file), "--out",
                 str(out), "--store", "none", "--check-sentences", "2", "--heldout", "0", "--quiet"]) == 0
    assert asked and asked[0] == "gemma-3-270m"
    printed = capsys.readouterr().out
    assert "load time" in printed and "perplexity" not in printed  # --heldout 0: no held-out measurements
    meta = json.loads((out / "xling_vocab.json").read_text())
    assert meta["source_model"] == "gemma-3-270m" and meta["heldout_sentences"] == {}


def test_checkpoint_without_its_lm_head_is_not_scored(tmp_path):
    """A bare decoder saved under a ...ForCausalLM name loads with a random head: no perplexity from it."""
    import transformers as T

    from xling.modules.vocab_folder import load_model_and_tokenizer
    from xling.recipes.vocab.decoder import head_missing, is_causal_lm

    tok = tok_bytelevel(["<|endoftext|>"])
    cfg = T.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, tie_word_embeddings=False)
    T.LlamaModel(cfg).save_pretrained(tmp_path)
    T.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    conf = json.loads((tmp_path / "config.json").read_text())
    conf["architectures"] = ["LlamaForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(conf))
    _, model, _ = load_model_and_tokenizer(str(tmp_path))
    assert type(model).__name__ == "LlamaForCausalLM" and head_missing(model) and not is_causal_lm(model)


def test_heldout_pass_says_an_estimate_and_shows_progress(decoder_dirs, en_file, tmp_path, capsys):
    """A decoder trim with held-out sentences: one estimate line, then a progress bar, for the original and the
    trimmed model, before their perplexities are printed."""
    out = tmp_path / "g"
    assert main(["vocab", "trim", "--model", str(decoder_dirs["gemma3"]), "--langs", "en", "--corpus", str(en_file),
                 "--out", str(out), "--store", "none", "--check-sentences", "2", "--heldout", "3"]) == 0
    err = capsys.readouterr().err
    for label in ("original", "trimmed"):
        est = err.index(f"xling: estimate: vocab trim: held-out perplexity and speed ({label})")
        assert est < err.index(f"perplexity ({label})", est + 1)
