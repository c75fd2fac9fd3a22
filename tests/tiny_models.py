"""Tiny random models with local tokenizers, built in the tests: no downloads.

Five families cover the layouts xling must handle: BERT (WordPiece-style,
absolute positions from 0), XLM-R (SentencePiece-style, positions derived from
input ids), Llama (rotary decoder), GPT-2 (learned-position decoder without a
pad token) and Gemma 3 (rotary decoder with scaled embeddings, sliding-window
and global attention layers, query-key norms: the built-in ``gemma-3-270m``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    Gemma3TextConfig,
    Gemma3TextModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaModel,
)

WORDS = (
    "the a cat dog house sees runs big small red blue green one two three and of to in is "
    "der die das katze hund haus sieht rot blau grün eins zwei drei und "
    "le la chat chien maison voit rouge bleu vert un deux trois et "
    "кот собака дом видит красный синий один два три и "
    "猫 狗 房子 看 红 蓝 一 二 三"
).split()


def _word_tokenizer(specials: list[str], bos: str | None, eos: str | None, pad: str | None, unk: str):
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    if bos and eos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
        )
    elif bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    kw = {"unk_token": unk}
    if bos:
        kw["bos_token"] = bos
    if eos:
        kw["eos_token"] = eos
    if pad:
        kw["pad_token"] = pad
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    return fast, len(vocab)


def build(kind: str, seed: int = 0, layers: int = 3, hidden: int = 32):
    """Return (model, tokenizer) of a tiny random ``kind`` in bert, xlmr, llama, gpt2, gemma3."""
    torch.manual_seed(seed)
    if kind == "bert":
        tok, V = _word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[CLS]", "[SEP]", "[PAD]", "[UNK]")
        tok.cls_token, tok.sep_token = "[CLS]", "[SEP]"
        cfg = BertConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=hidden * 2, max_position_embeddings=64, pad_token_id=0,
                         architectures=["BertModel"])
        model = BertModel(cfg, add_pooling_layer=False)
    elif kind == "xlmr":
        tok, V = _word_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], "<s>", "</s>", "<pad>", "<unk>")
        cfg = XLMRobertaConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                               intermediate_size=hidden * 2, max_position_embeddings=66, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, architectures=["XLMRobertaModel"])
        model = XLMRobertaModel(cfg, add_pooling_layer=False)
    elif kind == "llama":
        tok, V = _word_tokenizer(["<unk>", "<s>", "</s>"], "<s>", None, None, "<unk>")
        cfg = LlamaConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=hidden * 2, max_position_embeddings=64,
                          bos_token_id=1, eos_token_id=2, pad_token_id=None, architectures=["LlamaForCausalLM"])
        model = LlamaModel(cfg)
    elif kind == "gpt2":
        tok, V = _word_tokenizer(["<|endoftext|>", "<unk>"], None, None, None, "<unk>")
        tok.eos_token = "<|endoftext|>"
        cfg = GPT2Config(vocab_size=V, n_embd=hidden, n_layer=layers, n_head=4, n_positions=64,
                         bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])
        model = GPT2Model(cfg)
    elif kind == "gemma3":
        tok, V = _word_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>", None, "<pad>", "<unk>")
        types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
        cfg = Gemma3TextConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                               num_key_value_heads=1, head_dim=hidden // 4, intermediate_size=hidden * 2,
                               max_position_embeddings=64, sliding_window=4, layer_types=types, pad_token_id=0,
                               eos_token_id=1, bos_token_id=2, query_pre_attn_scalar=hidden // 4,
                               architectures=["Gemma3ForCausalLM"])
        model = Gemma3TextModel(cfg)
    else:
        raise ValueError(kind)
    model.eval()
    return model, tok


def with_lm_head(model, seed: int = 0):
    """The causal LM around a tiny decoder ``model`` (same weights), its untied head seeded: a saved decoder folder
    holds every weight, so loading it with its head never initialises anything at random."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed + 1)
    lm = AutoModelForCausalLM.from_config(model.config)
    lm.base_model.load_state_dict(model.state_dict())
    if lm.config.get_text_config().tie_word_embeddings:
        lm.tie_weights()
    return lm.eval()


def save(kind: str, folder: Path, head: bool = False, **kw) -> Path:
    """Save a tiny ``kind`` (base model weights only, as most tests read them); ``head=True`` saves a decoder with
    its LM head (:func:`with_lm_head`), as scoring and generation need."""
    model, tok = build(kind, **kw)
    if head:
        model = with_lm_head(model, kw.get("seed", 0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


PARALLEL = {
    "eng": ["the cat sees the dog", "one big red house", "the small dog runs", "two and three",
            "a blue cat", "the green house is big", "one dog and two cat", "three red dog"],
    "deu": ["die katze sieht der hund", "eins rot haus", "der hund", "zwei und drei",
            "die blau katze", "das grün haus", "eins hund und zwei katze", "drei rot hund"],
    "fra": ["le chat voit le chien", "un rouge maison", "le chien", "deux et trois",
            "la bleu chat", "la vert maison", "un chien et deux chat", "trois rouge chien"],
    "rus": ["кот видит собака", "один красный дом", "собака", "два и три",
            "синий кот", "дом", "один собака и два кот", "три красный собака"],
}
