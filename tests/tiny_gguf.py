"""Tiny random GGUF checkpoints written with the ``gguf`` package's ``GGUFWriter``: no downloads.

:func:`write_llama_gguf` writes a 2-layer Llama (hidden 32, 4 heads, 2 key/value
heads) the way llama.cpp's converter does: llama.cpp tensor names, q/k rows
permuted for its rotary layout, a sentencepiece-style (``tokenizer.ggml.model =
"llama"``) vocabulary with scores and token types. :func:`write_gemma3_gguf`
writes a 2-layer Gemma 3 text decoder (norm weights stored as ``w + 1``, tied
embeddings). Both return the transformers model the file was made from, so a
test can check that the GGUF holds exactly those weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LETTERS = list("abcdefghijklmnopqrstuvwxyz")
WORDS = ["the", "cat", "dog", "house", "sees", "and", "red", "blue"]
#: Pieces that let the merges derived from the scores build some whole words.
PIECES = ["▁t", "▁c", "th", "he", "ca", "at", "og", "▁d"]
TEXTS = ["the cat sees a red house", "Dog and blue", " hello  world", "the dog sees the cat and the house"]

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 32, 2, 4, 2, 64, 64


def _vocab(specials: list[str], types: list[int]) -> tuple[list[str], list[float], list[int]]:
    tokens = specials + ["▁"] + LETTERS + PIECES + ["▁" + w for w in WORDS]
    scores = [0.0] * len(specials) + [-float(i) for i in range(len(tokens) - len(specials))]
    token_types = types + [1] * (len(tokens) - len(specials))  # 1 normal, 2 unknown, 3 control
    return tokens, scores, token_types


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` of q/k rows (transformers' GGUF loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write(writer, tensors: dict[str, np.ndarray]) -> None:
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_llama_gguf(path: str | Path, seed: int = 0, dtype=np.float32):
    """Write a tiny llama GGUF to ``path``; return the ``LlamaForCausalLM`` it holds."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, scores, types = _vocab(["<unk>", "<s>", "</s>"], [2, 3, 3])
    cfg = LlamaConfig(
        vocab_size=len(tokens), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, intermediate_size=FFN, max_position_embeddings=CONTEXT, rms_norm_eps=1e-5,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(LAYERS):
        hf, gg = f"model.layers.{i}.", f"blk.{i}."
        names.update({
            hf + "input_layernorm.weight": gg + "attn_norm.weight",
            hf + "self_attn.q_proj.weight": gg + "attn_q.weight",
            hf + "self_attn.k_proj.weight": gg + "attn_k.weight",
            hf + "self_attn.v_proj.weight": gg + "attn_v.weight",
            hf + "self_attn.o_proj.weight": gg + "attn_output.weight",
            hf + "post_attention_layernorm.weight": gg + "ffn_norm.weight",
            hf + "mlp.gate_proj.weight": gg + "ffn_gate.weight",
            hf + "mlp.up_proj.weight": gg + "ffn_up.weight",
            hf + "mlp.down_proj.weight": gg + "ffn_down.weight",
        })
    assert set(names) == set(sd), set(sd) ^ set(names)
    tensors = {}
    for hf_name, gg_name in names.items():
        a = sd[hf_name]
        if ".q_proj." in hf_name:
            a = _permute(a, HEADS)
        elif ".k_proj." in hf_name:
            a = _permute(a, KV_HEADS)
        tensors[gg_name] = a if a.ndim == 1 else a.astype(dtype)  # norms stay F32, as llama.cpp writes them

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    _write(w, tensors)
    return model


def write_gemma3_gguf(path: str | Path, seed: int = 0, dtype=np.float32):
    """Write a tiny gemma3 GGUF to ``path``; return the ``Gemma3ForCausalLM`` it holds."""
    import gguf
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokens, scores, types = _vocab(["<pad>", "<eos>", "<bos>", "<unk>"], [3, 3, 3, 2])
    head_dim = HIDDEN // HEADS
    cfg = Gemma3TextConfig(
        vocab_size=len(tokens), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, head_dim=head_dim, intermediate_size=FFN, max_position_embeddings=CONTEXT,
        sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # zero-centred in transformers; random so that the +1 offset matters
                p.copy_(0.1 * torch.randn_like(p))
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, LAYERS)
    tensors = {}
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight":  # tied to token_embd: llama.cpp writes no output.weight
            continue
        base, suffix = hf_name.rsplit(".", 1)
        gg_name = name_map.get_name(base)
        assert gg_name is not None, hf_name
        a = t.detach().numpy().astype(np.float32)
        if "norm" in hf_name:
            a = a + 1  # llama.cpp stores Gemma's norms as 1 + w
        tensors[f"{gg_name}.{suffix}"] = a if a.ndim == 1 else a.astype(dtype)

    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny-gemma3")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_sliding_window(16)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_bos_token_id(2)
    w.add_unk_token_id(3)
    _write(w, tensors)
    return model
