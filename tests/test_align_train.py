"""Middle-layer alignment training (Liu & Niehues 2025) and MAD-X 2.0 composition."""

from __future__ import annotations

import math

import pytest
import torch

from test_train import TR, tiny_task
from xling.errors import XlingError
from xling.methods.align_loss import (LayerTap, info_nce, mean_pool, middle_band, normalize_text, overlapping,
                                      pick_align_layer, pooled_layer)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_info_nce_equals_a_hand_computed_loss():
    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    tau = 0.1

    def cos(x, y):
        return sum(p * q for p, q in zip(x, y)) / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))

    A, B = a.tolist(), b.tolist()
    S = [[cos(A[i], B[j]) / tau for j in range(4)] for i in range(4)]

    def ce(rows):
        return sum(-rows[i][i] + math.log(sum(math.exp(v) for v in rows[i])) for i in range(4)) / 4

    St = [[S[j][i] for j in range(4)] for i in range(4)]
    expected = 0.5 * (ce(S) + ce(St))
    assert float(info_nce(a, b, tau)) == pytest.approx(expected, rel=1e-5)
    assert float(info_nce(a, b, tau, symmetric=False)) == pytest.approx(ce(S), rel=1e-5)
    # perfectly aligned, well separated pairs: loss near 0; invariant to the vectors' norms
    e = torch.eye(4) * 5
    assert float(info_nce(e, e * 3, 0.01)) < 1e-6
    assert float(info_nce(a * 7, b, tau)) == pytest.approx(float(info_nce(a, b, tau)), rel=1e-5)
    with pytest.raises(XlingError):
        info_nce(a, b[:3])
    with pytest.raises(XlingError, match="temperature"):
        info_nce(a, b, 0.0)


@pytest.mark.parametrize("arch", ["bert", "xlmr", "llama", "gpt2", "gemma3"])
def test_layer_tap_equals_output_hidden_states_and_stops_early(tiny_model_dirs, arch):
    from transformers import AutoModel, AutoTokenizer

    from xling.models.layers import find_blocks

    path = tiny_model_dirs[arch]
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    batch = tok(["a b c d", "x y"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True).hidden_states
    blocks = find_blocks(model)
    ran = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(blocks.modules)]
    try:
        for layer in range(0, len(blocks) + 1):
            ran.clear()
            tap = LayerTap(model, layer)
            with torch.no_grad():
                h = tap(batch["input_ids"], batch["attention_mask"])
            last = len(blocks) if layer == len(blocks) else layer
            if layer < len(blocks):  # the last hidden state may carry the final norm in transformers' tuple
                assert torch.allclose(h, ref[layer], atol=1e-5), (arch, layer)
            assert ran == list(range(last)), (arch, layer, ran)  # no block above the tapped one ran
    finally:
        for hd in handles:
            hd.remove()
    with pytest.raises(XlingError, match="out of range"):
        LayerTap(model, len(blocks) + 1)


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_pick_align_layer_rule():
    assert middle_band(12) == (3, 9) and middle_band(18) == (5, 13) and middle_band(32) == (8, 24)
    scores = {0: 0.99, 1: 0.9, 3: 0.2, 6: 0.5, 7: 0.7, 9: 0.6, 12: 0.95}
    assert pick_align_layer(scores, 12) == 7          # best inside the band; 0, 1, 12 are outside it
    assert pick_align_layer({5: 0.5, 7: 0.5}, 12) == 5  # tie: nearest L/2 = 6, then the lower
    assert pick_align_layer({}, 12) == 6
    assert pick_align_layer({6: float("nan")}, 18) == 9


def test_overlap_is_found_after_normalisation():
    pairs = [("The cat.", "Die Katze."), ("A dog", "Ein Hund"), ("one", "eins")]
    assert overlapping(pairs, ["the  CAT", "x"]) == [0]
    assert overlapping(pairs, ["Ein Hund!"]) == [1]
    assert normalize_text("Ｆｕｌｌ-width,  text") == "full width text"


def _pairs(n=48, seed=11):
    other = tiny_task(n_train=n, n_dev=0, n_test=0, seed=seed)
    out = []
    for e in other.data["train"]["eng_Latn"]:
        out.append((e.text, " ".join(TR["deu"][w] for w in e.text.split())))
    return list(dict.fromkeys(out))


def _held_out_alignment(model_dir_or_model, tok, pairs, layer):
    """Mean true-pair cosine minus mean other-pair cosine at ``layer`` (higher: better aligned)."""
    model = model_dir_or_model
    model.eval()
    tap = LayerTap(model, layer)
    enc = [tok([p[k] for p in pairs], return_tensors="pt", padding=True) for k in (0, 1)]
    with torch.no_grad():
        a, b = (torch.nn.functional.normalize(pooled_layer(tap, {"input_ids": e["input_ids"],
                                                                 "attention_mask": e["attention_mask"]}), dim=-1)
                for e in enc)
    s = a @ b.T
    n = len(pairs)
    return float(s.diag().mean() - (s.sum() - s.diag().sum()) / (n * n - n))


@pytest.mark.parametrize("arch,method", [("bert", "full"), ("llama", "lora")])
def test_training_with_alignment_raises_held_out_alignment(tiny_model_dirs, tmp_path, arch, method):
    """Same task training with and without the loss: held-out pairs end up better aligned with it."""
    from transformers import AutoTokenizer

    from xling.harness.training import train_task
    from xling.modules.trained import load_trained

    path = tiny_model_dirs[arch]
    task = tiny_task(n_train=32, n_dev=8, n_test=8)
    pairs = _pairs(60, seed=11)
    held = [p for p in _pairs(40, seed=23) if p not in set(pairs)][:16]
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    # (alternating steps at a LoRA learning rate of 2e-2 oscillate on this tiny model; 5e-3 converges)
    common = dict(epochs=3 if method == "full" else 6, lr=1e-2 if method == "full" else 5e-3, batch_size=8,
                  patience=0, progress=False,
                  freeze_embeddings=False, align_layer=2, align_weight=1.0)
    scores = {}
    for name, kw in (("plain", {}), ("align", {"align_pairs": pairs})):
        out = train_task(str(path), task, method=method, out=tmp_path / name, **common, **kw)
        tm = load_trained(out, device="cpu")
        scores[name] = _held_out_alignment(tm.model, tok, held, 2)
        if name == "align":
            import json

            info = json.loads((out / "xling_train.json").read_text())
            assert info["alignment"]["layer"] == 2 and info["alignment"]["steps"] == info["steps"]
            assert info["alignment"]["pairs"] == len(pairs)
    assert scores["align"] > scores["plain"] + 0.05, scores


def test_sum_mode_and_weight_zero(tiny_model_dirs, tmp_path):
    import json

    from xling.harness.training import train_task

    task = tiny_task(n_train=16, n_dev=4, n_test=4)
    out = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "s", epochs=1, batch_size=8, progress=False,
                     align_pairs=_pairs(), align_layer=1, align_mode="sum", align_weight=0.5)
    a = json.loads((out / "xling_train.json").read_text())["alignment"]
    assert a["mode"] == "sum" and a["steps"] == 2 and a["final_loss"] > 0
    with pytest.raises(XlingError, match="alignment mode"):
        train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "x", align_mode="both")


def test_overlapping_pairs_are_refused_or_dropped():
    from xling.methods.train import check_align_pairs

    task = tiny_task(n_train=8, n_dev=4, n_test=8)
    test_text = task.data["test"]["deu_Latn"][0].text
    pairs = [("hello there", "hallo da"), ("x", test_text)]
    with pytest.raises(XlingError, match="1 of 2 parallel pairs contain a dev or test item"):
        check_align_pairs(pairs, task)
    assert check_align_pairs(pairs, task, drop_overlap=True) == [("hello there", "hallo da")]


def test_cli_train_with_alignment(tiny_model_dirs, tmp_path, capsys):
    import json

    from test_train import write_tiny_jsonl
    from xling.cli import main

    task = tiny_task(n_train=16, n_dev=4, n_test=8)
    data = write_tiny_jsonl(tmp_path / "task.jsonl", task)
    lines = ["eng\tdeu"] + [f"{a}\t{b}" for a, b in _pairs()]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--epochs", "1", "--quiet",
            "--align-data", str(tmp_path / "pairs.tsv"), "--align-langs", "de", "--align-layer", "auto"]
    rc = main(args + ["--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "contain a dev or test item" in err and "--align-drop-overlap" in err
    assert not (tmp_path / "m").exists()
    rc = main(args + ["--out", str(tmp_path / "m"), "--align-drop-overlap"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "m" / "xling_train.json").read_text())
    lo, hi = middle_band(3)
    assert lo <= info["alignment"]["layer"] <= hi
    assert info["alignment"]["layer_rule"]["rule"].startswith("auto")
    rc = main(args[:-1] + ["seven", "--out", str(tmp_path / "m2"), "--align-drop-overlap"])
    assert rc == 2 and "--align-layer" in capsys.readouterr().err


def _lora_pair(tiny_model_dirs, tmp_path):
    from xling.harness.training import train_language_module

    sents = [" ".join(TR["deu"][w] for w in e.text.split())
             for e in tiny_task(n_train=24, n_dev=0, n_test=0, seed=3).data["train"]["eng_Latn"]]
    lang = train_language_module(str(tiny_model_dirs["bert"]), "deu", sents, tmp_path / "lang", steps=2,
                                 batch_size=8, progress=False)
    from xling.harness.training import train_task_module

    task = train_task_module(str(tiny_model_dirs["bert"]), tiny_task(n_train=16, n_dev=4, n_test=4),
                             tmp_path / "task", epochs=1, batch_size=8, lr=1e-2)
    return task, lang


def test_madx2_composition_is_stack_without_the_last_language_layer(tiny_model_dirs, tmp_path):
    from transformers import AutoTokenizer

    from xling.methods.compose import block_index
    from xling.methods.train import build_task_model
    from xling.models.layers import find_blocks
    from xling.modules.apply import compose_into
    from xling.modules.lora import LoraModule

    task_dir, lang_dir = _lora_pair(tiny_model_dirs, tmp_path)
    labels = ["a", "b"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dirs["bert"])

    def composed(method):
        m = build_task_model(tiny_model_dirs["bert"], "classification", labels, tok)
        compose_into(m, [task_dir, lang_dir], method)
        return dict(m.named_parameters())

    base = dict(build_task_model(tiny_model_dirs["bert"], "classification", labels, tok).named_parameters())
    stack, madx2 = composed("stack"), composed("madx2")
    path = find_blocks(build_task_model(tiny_model_dirs["bert"], "classification", labels, tok)).path
    L = 3
    tmod, lmod = LoraModule(task_dir), LoraModule(lang_dir)
    checked = {"last": 0, "other": 0}
    for name in tmod.targets:
        key = next(k for k in base if k.endswith(name.removeprefix("bert.") + ".weight"))
        layer = block_index(key, path)
        lname = next((n for n in lmod.targets if key.endswith(n.removeprefix("bert.") + ".weight")), None)
        if layer == L - 1:
            expected = base[key] + tmod.delta(name)
            checked["last"] += 1
        else:
            expected = stack[key]
            checked["other"] += 1
            if lname is not None:
                assert not torch.allclose(madx2[key], base[key] + tmod.delta(name), atol=1e-7)
        assert torch.allclose(madx2[key], expected, atol=1e-6), key
    assert checked["last"] > 0 and checked["other"] > 0
