"""Logit lens, feed-forward activation hooks, LAPE selection and neuron ablation on tiny random decoders.

Every check is against an independent computation: the lens against the final norm and unembedding
applied by hand to ``output_hidden_states``; the hooks against the MLP recomputed from its weights;
the selection against a plain loop implementation of the authors' procedure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from xling.engine.lens import logit_lens
from xling.engine.neurons import ActivationCounter, NeuronAblation, find_activations
from xling.errors import XlingError
from xling.methods.neurons import jaccard_matrix, lape_entropy, select_lape
from xling.models.heads import find_lens_head

V, D, L = 50, 32, 3


def causal(kind: str, tied: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=48, max_position_embeddings=64, tie_word_embeddings=tied)
        m = LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = Qwen2Config(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=48, max_position_embeddings=64, tie_word_embeddings=tied)
        m = Qwen2ForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=64, tie_word_embeddings=tied)
        m = GPT2LMHeadModel(cfg)
    elif kind == "gemma3":
        cfg = Gemma3TextConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=4,
                               num_key_value_heads=1, head_dim=8, intermediate_size=48, max_position_embeddings=64,
                               sliding_window=4, layer_types=["sliding_attention"] * (L - 1) + ["full_attention"],
                               query_pre_attn_scalar=8, final_logit_softcapping=3.0, tie_word_embeddings=tied)
        m = Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(kind)
    # random norms, so a wrong norm cannot pass by being the identity
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1 and "norm" in name or name.endswith(("ln_f.weight", "ln_f.bias")):
                p.add_(0.3 * torch.randn_like(p))
    return m.eval()


KINDS = [("llama", True), ("llama", False), ("gpt2", True), ("gemma3", True), ("gemma3", False), ("qwen2", False)]


def direct_lens(model, prompt, head_norm, unembed, softcap):
    """Independent: one prompt, full output_hidden_states, read out by hand at the last position."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt]), output_hidden_states=True)
        rows = []
        for layer, h in enumerate(out.hidden_states):
            x = h[0, -1]
            if layer < len(out.hidden_states) - 1:
                x = head_norm(x)
            z = x @ unembed.weight.T
            if getattr(unembed, "bias", None) is not None:
                z = z + unembed.bias
            if softcap:
                z = torch.tanh(z / softcap) * softcap
            rows.append(torch.softmax(z.double(), dim=-1))
        return torch.stack(rows), out.logits[0, -1]


@pytest.mark.parametrize("kind,tied", KINDS)
def test_lens_equals_direct_computation_at_every_layer(kind, tied):
    model = causal(kind, tied)
    head = find_lens_head(model)
    assert head.norm is not None
    if kind == "gemma3":
        assert head.softcap == 3.0
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, V, (int(n),), generator=g).tolist() for n in (5, 9, 3, 12, 7)]
    target = [[3, 4], [7], [1, 2, 3], [9], [10, 11]]
    english = [[5], [8, 9], [4], [0], [12]]
    res = logit_lens(model, prompts, {"target": target, "english": english}, batch_size=2)
    assert res.entropy.shape == (5, L + 1)
    for i, p in enumerate(prompts):
        probs, logits = direct_lens(model, p, head.norm, head.unembed, head.softcap)
        # the last layer's lens is the model's own next-token distribution
        torch.testing.assert_close(probs[-1], torch.softmax(logits.double(), -1), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.answers["target"][i].double(), probs[:, target[i]].sum(-1), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.answers["english"][i].double(), probs[:, english[i]].sum(-1), atol=1e-5, rtol=1e-4)
        ent = -(probs * probs.log()).sum(-1)
        torch.testing.assert_close(res.entropy[i].double(), ent, atol=1e-4, rtol=1e-4)
        assert torch.equal(res.top_id[i], probs.argmax(-1))
        torch.testing.assert_close(res.top_prob[i].double(), probs.max(-1).values, atol=1e-5, rtol=1e-4)


def test_lens_batch_size_invariance():
    model = causal("llama", False)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, V, (int(n),), generator=g).tolist() for n in (4, 11, 6, 2, 8, 8)]
    ans = {"t": [[i] for i in range(6)]}
    a = logit_lens(model, prompts, ans, batch_size=1)
    b = logit_lens(model, prompts, ans, batch_size=6)
    torch.testing.assert_close(a.answers["t"], b.answers["t"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.entropy, b.entropy, atol=1e-5, rtol=1e-5)


def test_lens_refuses_encoders_and_bad_ids():
    bert = BertModel(BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=48))
    with pytest.raises(XlingError, match="LM head"):
        find_lens_head(bert)
    model = causal("llama")
    with pytest.raises(XlingError, match="outside the vocabulary"):
        logit_lens(model, [[1, 2]], {"t": [[V]]})
    with pytest.raises(XlingError, match="no token ids"):
        logit_lens(model, [[1, 2]], {"t": [[]]})


def test_lens_verify_catches_a_wrong_norm():
    model = causal("llama", False)
    head = find_lens_head(model)
    head.norm = model.model.layers[0].input_layernorm  # a norm, but not the final one
    with pytest.raises(XlingError, match="final norm"):
        head.verify(model, torch.tensor([[1, 2, 3]]))


# ------------------------------------------------------------------ activation hooks


def manual_mlp_activation(model, kind, layer, x_in):
    """The activation recomputed from the MLP's weights for the MLP's input ``x_in``."""
    if kind == "gpt2":
        mlp = model.transformer.h[layer].mlp
        return mlp.act(mlp.c_fc(x_in))
    mlp = model.model.layers[layer].mlp
    return mlp.act_fn(mlp.gate_proj(x_in))


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_hooks_see_the_mlp_activation(kind):
    model = causal(kind)
    blocks, acts, d_ff = find_activations(model)
    assert len(acts) == L and d_ff == (48 if kind != "gpt2" else 4 * D)
    mlp_inputs, seen = {}, {}
    mlps = [b.mlp for b in blocks.modules]
    hs = [m.register_forward_pre_hook(lambda mod, inp, i=i: mlp_inputs.__setitem__(i, inp[0])) for i, m in enumerate(mlps)]
    hs += [a.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out)) for i, a in enumerate(acts)]
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 7, 9]]))
    for h in hs:
        h.remove()
    for layer in range(L):
        with torch.no_grad():
            ref = manual_mlp_activation(model, kind, layer, mlp_inputs[layer])
        torch.testing.assert_close(seen[layer], ref)


def test_counter_counts_positive_activations_without_padding():
    model = causal("llama")
    _, acts, d_ff = find_activations(model)
    counter = ActivationCounter(model)
    ids = torch.tensor([[1, 5, 7, 9], [4, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    seen = {}
    hs = [a.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out)) for i, a in enumerate(acts)]
    with counter.attach(model):
        counter.run(model, ids, mask)
    for h in hs:
        h.remove()
    assert counter.n == 6
    for layer in range(L):
        expect = ((seen[layer] > 0) & mask.bool().unsqueeze(-1)).sum(dim=(0, 1))
        assert torch.equal(counter.over_zero[layer], expect)
    # padding does not change the counts of the real tokens
    c2 = ActivationCounter(model)
    with c2.attach(model):
        c2.run(model, ids[:1], mask[:1])
        c2.run(model, ids[1:, :2], mask[1:, :2])
    assert c2.n == 6 and torch.equal(c2.over_zero, counter.over_zero)


def test_ablation_empty_set_is_identity_and_zeroes_exactly_the_set():
    model = causal("gemma3")
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with NeuronAblation(model, {}):
            same = model(input_ids=ids).logits
        with NeuronAblation(model, {0: [], 2: []}):
            same2 = model(input_ids=ids).logits
    assert torch.equal(base, same) and torch.equal(base, same2)
    _, acts, _ = find_activations(model)
    seen = {}
    hs = [a.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out)) for i, a in enumerate(acts)]
    with torch.no_grad():
        model(input_ids=ids)
        before = {k: v.clone() for k, v in seen.items()}
        with NeuronAblation(model, {1: [0, 5, 47]}):
            after_logits = model(input_ids=ids).logits
    # hooks registered before the ablation see the activation before the ablation's hook runs; read the
    # ablated activation through a hook registered after it
    with NeuronAblation(model, {1: [0, 5, 47]}):
        got = {}
        h2 = acts[1].register_forward_hook(lambda mod, inp, out: got.__setitem__("a", out))
        with torch.no_grad():
            model(input_ids=ids)
        h2.remove()
    for h in hs:
        h.remove()
    a = got["a"]
    assert torch.all(a[..., [0, 5, 47]] == 0)
    keep = [i for i in range(48) if i not in (0, 5, 47)]
    torch.testing.assert_close(a[..., keep], before[1][..., keep])  # layer 1 input unchanged by a layer-1 ablation
    assert not torch.equal(after_logits, base)
    with pytest.raises(XlingError, match="outside"):
        with NeuronAblation(model, {0: [48]}):
            pass


# ------------------------------------------------------------------ LAPE selection


def plain_lape(n, over_zero, top_rate, filter_rate, bar_ratio):
    """The published procedure written as plain loops (numpy), ties by position."""
    Lr, F, K = over_zero.shape
    p = over_zero / n[None, None, :]
    flat = sorted(p.flatten().tolist())
    N = len(flat)
    kth = lambda rate: flat[min(max(round(N * rate), 1), N) - 1]
    fbar, abar = kth(filter_rate), kth(bar_ratio)
    ent = np.zeros((Lr, F))
    for l in range(Lr):
        for i in range(F):
            s = p[l, i].sum()
            e = 0.0
            if s > 0:
                for k in range(K):
                    q = p[l, i, k] / s
                    if q > 0:
                        e -= q * math.log(q)
            if not any(p[l, i, k] > fbar for k in range(K)):
                e = math.inf
            ent[l, i] = e
    cells = sorted(((ent[l, i], l * F + i) for l in range(Lr) for i in range(F)))
    keep = [c for _, c in cells[: round(Lr * F * top_rate)]]
    out = [[[] for _ in range(Lr)] for _ in range(K)]
    for c in keep:
        l, i = divmod(c, F)
        for k in range(K):
            if p[l, i, k] > abar:
                out[k][l].append(i)
    return [[sorted(x) for x in lang] for lang in out]


def test_lape_selection_matches_plain_procedure_with_ties_and_an_empty_language():
    rng = np.random.default_rng(0)
    Lr, F, K = 4, 25, 3
    n = np.array([1000.0, 800.0, 1200.0])
    over = rng.integers(0, 200, size=(Lr, F, K)).astype(float)
    # language-specific neurons for languages 0 and 1; language 2 never dominates
    over[0, 3] = [900, 5, 10]
    over[3, 7] = [5, 700, 12]
    over[3, 8] = [5, 700, 12]  # an exact tie with (3, 7)
    over[1, 2] = [950, 0, 0]
    over[2, 2] = [0, 0, 0]  # never fires
    for rates in [(0.04, 0.95, 0.95), (0.1, 0.9, 0.8), (0.01, 0.95, 0.95)]:
        sel = select_lape(torch.tensor(n), torch.tensor(over), top_rate=rates[0], filter_rate=rates[1],
                          activation_bar_ratio=rates[2])
        ref = plain_lape(n, over, *rates)
        assert sel.neurons == ref, rates
    sel = select_lape(torch.tensor(n), torch.tensor(over), top_rate=0.04)
    assert sel.neurons[0][0] == [3] and 7 in sel.neurons[1][3] and 8 in sel.neurons[1][3]
    assert all(len(x) == 0 for x in sel.neurons[2])  # the language with no selected neuron is present, empty
    assert sel.counts().shape == (K, Lr)


def test_lape_entropy_and_errors():
    p = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    e = lape_entropy(p)
    assert e[0, 0].item() == pytest.approx(math.log(2)) and e[0, 1].item() == 0 and e[0, 2].item() == 0
    with pytest.raises(XlingError, match="no tokens"):
        select_lape(torch.tensor([0.0, 1.0]), torch.zeros(1, 2, 2))
    with pytest.raises(XlingError, match="between 0"):
        select_lape(torch.tensor([1.0, 1.0]), torch.full((1, 2, 2), 3.0))
    with pytest.raises(XlingError, match="top_rate"):
        select_lape(torch.tensor([1.0, 1.0]), torch.zeros(1, 2, 2), top_rate=0)


def test_jaccard():
    m = jaccard_matrix([{1, 2}, {2, 3}, set()])
    assert m[0, 1].item() == pytest.approx(1 / 3) and m[0, 0].item() == 1 and math.isnan(m[2, 2].item())
    assert m[0, 2].item() == 0


# ------------------------------------------------------------------ xling lens, end to end


PAIRS = ("eng\tdeu\tfra\n" + "\n".join("\t".join(r) for r in [
    ("cat", "katze", "chat"), ("dog", "hund", "chien"), ("house", "haus", "maison"), ("red", "rot", "rouge"),
    ("blue", "blau", "bleu"), ("green", "grün", "vert"), ("one", "eins", "un"), ("two", "zwei", "deux"),
    ("three", "drei", "trois"), ("sees", "sieht", "voit"), ("and", "und", "et")]) + "\n")


@pytest.fixture
def tiny_causal_dir(tmp_path):
    import tiny_models
    from transformers import LlamaForCausalLM

    base, tok = tiny_models.build("llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(base.config).eval()
    folder = tmp_path / "tiny-causal"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def test_lens_cli_end_to_end(tiny_causal_dir, tmp_path, capsys):
    import csv
    import json

    from xling.cli import main

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(PAIRS, encoding="utf-8")
    out = tmp_path / "lens"
    rc = main(["lens", "--model", str(tiny_causal_dir), "--langs", "de", "--source", "fr", "--pairs", str(pairs),
               "--shots", "2", "--max-prompts", "5", "--out", str(out), "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "lens.csv", encoding="utf-8")))
    prompts = [json.loads(x) for x in open(out / "prompts.jsonl", encoding="utf-8")]
    assert len(prompts) == 5 and len(rows) == 5 * 4  # 3 blocks -> 4 hidden states
    assert {"prompt_id", "lang", "layer", "p_target", "p_english", "entropy"} <= set(rows[0])
    # recompute one prompt's last-layer probabilities from the model's own output, from prompts.jsonl alone
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_causal_dir).eval()
    p = prompts[0]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([p["input_ids"]])).logits[0, -1].double(), -1)
    last = [r for r in rows if r["prompt_id"] == p["prompt_id"] and r["layer"] == "3"][0]
    assert float(last["p_target"]) == pytest.approx(probs[p["target_token_ids"]].sum().item(), abs=1e-5)
    assert float(last["p_english"]) == pytest.approx(probs[p["english_token_ids"]].sum().item(), abs=1e-5)
    assert not set(p["target_token_ids"]) & set(p["english_token_ids"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "German" in html or "Deutsch" in html
    assert "English above the target" in html or "No English detour" in html


def test_lens_cli_refuses_an_encoder_in_one_line(tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(PAIRS, encoding="utf-8")
    rc = main(["lens", "--model", str(tiny_model_dirs["bert"]), "--langs", "de", "--pairs", str(pairs),
               "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "encoder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ xling neurons, end to end


def _texts(tmp_path):
    import tiny_models

    rng = np.random.default_rng(0)
    files = {}
    for lang, key in (("eng", "eng"), ("deu", "deu"), ("fra", "fra")):
        words = sorted({w for s in tiny_models.PARALLEL[key] for w in s.split()})
        lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 9)))) for _ in range(40)]
        path = tmp_path / f"{lang}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[lang] = path
    return ",".join(f"{k}={v}" for k, v in files.items())


def test_neurons_cli_end_to_end(tiny_causal_dir, tmp_path):
    import csv
    import json

    from safetensors.torch import load_file

    from xling.cli import main
    from xling.methods.neurons import select_lape

    out = tmp_path / "neurons"
    rc = main(["neurons", "--model", str(tiny_causal_dir), "--langs", "en,de,fr", "--data", _texts(tmp_path),
               "--held-out", "10", "--max-tokens", "400", "--top-rate", "0.1", "--ablate", "--out", str(out), "--quiet",
               "--batch-size", "4"])
    assert rc == 0
    acts = load_file(str(out / "activations.safetensors"))
    langs = ["eng_Latn", "deu_Latn", "fra_Latn"]
    assert {f"{x}.n" for x in langs} | {f"{x}.over_zero" for x in langs} == set(acts)
    assert acts["eng_Latn.over_zero"].shape == (3, 64)
    assert all(0 < int(acts[f"{x}.n"]) <= 400 for x in langs)
    # neurons.json is the selection of the exported statistics (anyone can recompute it)
    chosen = json.loads((out / "neurons.json").read_text())
    sel = select_lape(torch.stack([acts[f"{x}.n"] for x in langs]), torch.stack([acts[f"{x}.over_zero"] for x in langs], -1),
                      top_rate=0.1)
    for k, lang in enumerate(langs):
        assert [chosen[lang][str(layer)] for layer in range(3)] == sel.neurons[k]
    rows = list(csv.DictReader(open(out / "ablation.csv", encoding="utf-8")))
    assert len(rows) == 3 * 3 * 2
    for r in rows:
        assert float(r["ci_low"]) <= float(r["delta_log_ppl"]) <= float(r["ci_high"])
    # ablating nothing changes nothing: a language with no neurons has delta 0 exactly
    for r in rows:
        if int(r["neurons"]) == 0:
            assert float(r["delta_log_ppl"]) == 0.0
    assert "Selected neurons per language" in (out / "report.html").read_text(encoding="utf-8")


def test_neurons_counts_equal_a_direct_count(tiny_causal_dir, tmp_path):
    """The exported over_zero equals counting positive activations sentence by sentence, unbatched."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    from xling.cli import main
    from xling.data.readers import load_corpus

    data = _texts(tmp_path)
    out = tmp_path / "n2"
    assert main(["neurons", "--model", str(tiny_causal_dir), "--langs", "en,de", "--data", data, "--held-out", "10",
                 "--max-tokens", "100000", "--out", str(out), "--quiet", "--batch-size", "3"]) == 0
    acts = load_file(str(out / "activations.safetensors"))
    model = LlamaForCausalLM.from_pretrained(tiny_causal_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    corpus = load_corpus(data)
    for lang in ("eng_Latn", "deu_Latn"):
        want = torch.zeros(3, 64, dtype=torch.long)
        n = 0
        for s in corpus.sentences[lang][10:]:
            ids = tok(s, return_tensors="pt")["input_ids"]
            seen = {}
            hs = [model.model.layers[i].mlp.act_fn.register_forward_hook(lambda m, i_, o, i=i: seen.__setitem__(i, o))
                  for i in range(3)]
            with torch.no_grad():
                model(input_ids=ids)
            for h in hs:
                h.remove()
            for i in range(3):
                want[i] += (seen[i][0] > 0).sum(0)
            n += ids.shape[1]
        assert int(acts[f"{lang}.n"]) == n
        assert torch.equal(acts[f"{lang}.over_zero"], want)


@pytest.mark.parametrize("command", ["lens", "neurons", "langid"])
def test_new_commands_refuse_a_users_folder(command, tiny_causal_dir, tmp_path, capsys):
    from xling.cli import main

    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("mine")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(PAIRS, encoding="utf-8")
    extra = {"lens": ["--pairs", str(pairs), "--langs", "de"], "neurons": ["--langs", "en,de"], "langid": []}[command]
    rc = main([command, "--model", str(tiny_causal_dir), *extra, "--out", str(user), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (user / "chapter1.tex").read_text() == "mine" and sorted(p.name for p in user.iterdir()) == ["chapter1.tex"]


def test_english_detour_needs_a_difference_beyond_noise():
    from xling.recipes.lens.run import english_detour, task_performance

    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        for layer in range(4):
            noise = float(rng.normal(0, 1e-4))
            p_t = 0.5 if layer == 3 else 0.001
            p_e = 0.3 if layer == 2 else 0.001 + noise  # layer 2: English clearly above; elsewhere equal up to noise
            rows.append({"prompt_id": f"p{i}", "lang": "deu_Latn", "layer": layer, "p_target": p_t, "p_english": p_e,
                         "top_is": "target" if layer == 3 else "other"})
    assert english_detour(rows=rows, lang="deu_Latn") == [2]
    # English above the target beyond noise, but with no mass at all: reported apart, never as a detour
    tiny = [{**r, "p_english": r["p_english"] * 0.01} if r["layer"] == 2 else r for r in rows]
    massless = []
    assert english_detour(rows=tiny, lang="deu_Latn", massless=massless) == [] and massless == [2]
    perf = task_performance(rows)
    assert perf["deu_Latn"]["p_target"] == pytest.approx(0.5) and perf["deu_Latn"]["top_is_target"] == 1.0


def test_cloze_sentences_pick_the_shortest_verse_with_exactly_one_occurrence():
    from xling.recipes.lens.run import ClozeSentences

    verses = ["Der Hund sieht die Katze und der Hund bellt laut",      # Hund twice: never chosen for Hund
              "Ein Hund läuft schnell über die Straße heute",            # Hund once
              "Der Hund schläft im Haus am Abend",                       # Hund once, shorter: chosen
              "Hund bellt",                                              # too short (< 5 words)
              "Die HUNDE sind klein und der hundert Weg"]                # no whole-word Hund
    cloze = ClozeSentences(verses, "deu_Latn")
    assert cloze("Hund") == "Der ___ schläft im Haus am Abend"
    assert cloze("hund") == "Der ___ schläft im Haus am Abend"       # case-folded match
    assert cloze("Katze") == "Der Hund sieht die ___ und der Hund bellt laut"
    assert cloze("Vogel") is None
    ja = ClozeSentences(["神は光あれと言われた。すると光があった。", "神は言われた。光あれ、ここに。", "光"], "jpn_Jpan")
    assert ja("光") == "神は言われた。___あれ、ここに。"                  # exactly once, shortest, substring
    assert ja("神") == "神は言われた。光あれ、ここに。".replace("神", "___", 1)
    assert ja("犬") is None


def test_cloze_prompts_blank_the_word_and_count_the_words_without_a_sentence():
    import tiny_models
    from xling.recipes.lens.run import ClozeSentences, _prefix_index, build_prompts

    _, tok = tiny_models.build("llama")
    table = {en: {"eng_Latn": en, "deu_Latn": de} for en, de in [
        ("cat", "katze"), ("dog", "hund"), ("house", "haus"), ("red", "rot"), ("blue", "blau"), ("bird", "vogel")]}
    verses = [f"heute sieht man hier {w} und mehr" for w in ("katze", "hund", "haus", "rot", "blau")]
    prompts, counts = build_prompts(tok, table, "deu_Latn", "fra_Latn", "cloze", max_prompts=10, shots=2, seed=0,
                                    prefix_index=_prefix_index(tok), cloze=ClozeSentences(verses, "deu_Latn"))
    assert counts["no_cloze_sentence"] == 1  # vogel is in no verse
    assert prompts, counts
    for p in prompts:
        assert p["text"].endswith('\n___ = "')
        query = p["text"].split("\n\n")[-1]
        assert p["word"] not in query and "___" in query
        assert query.count("___") == 2  # the blank in the sentence and the answer line
        assert p["text"].count('___ = "') == 3  # two demonstrations and the query


def test_cloze_finds_the_bible_translation_of_a_macrolanguage_code():
    from xling.data.bible import TRANSLATIONS
    from xling.data.langcodes import match_lang, normalize_lang

    # lens normalises "ar" to the macrolanguage; the Bible's Arabic is Standard Arabic (arb)
    assert match_lang(normalize_lang("ar"), TRANSLATIONS) == "arb_Arab"
    assert match_lang(normalize_lang("de"), TRANSLATIONS) == "deu_Latn"
