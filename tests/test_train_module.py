"""Language and task LoRA modules: MLM/CLM objectives, masking, saving, stacking, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xling.errors import XlingError
from xling.harness.training import train_language_module, train_task_module
from xling.methods.modules_train import LMObjective, _Encoder, build_lm, mask_tokens

CORPUS = ["the cat sees the dog", "the dog sees the cat", "one big red house", "the small dog runs"] * 8


def _tok(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def _batch(folder, objective, base, n=8):
    tok = _tok(folder)
    enc = _Encoder(tok, CORPUS[:n] + ["a"], objective, 32, 16, 0.3, 0, base.get_input_embeddings().weight.shape[0])
    return enc.batches(0)[0]


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_mlm_loss_at_masked_positions_equals_full_logits_reference(tiny_model_dirs, kind):
    base, head, objective, head_kind = build_lm(tiny_model_dirs[kind], is_decoder=False)
    assert (objective, head_kind) == ("mlm", "tied")  # bare encoder folder: tied head, no random layers
    obj = LMObjective(base, head, objective).eval()
    batch = _batch(tiny_model_dirs[kind], "mlm", base)
    loss = obj(**batch).loss
    h = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = h @ base.get_input_embeddings().weight.T
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                            ignore_index=-100)
    assert torch.allclose(loss, ref, atol=1e-5)


def test_mlm_uses_the_checkpoint_head_when_present(tmp_path):
    import tiny_models
    from transformers import BertForMaskedLM

    _, tok = tiny_models.build("bert")
    bare, _ = tiny_models.build("bert")
    cfg = bare.config
    cfg.architectures = ["BertForMaskedLM"]
    full = BertForMaskedLM(cfg).eval()
    full.save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    base, head, objective, head_kind = build_lm(tmp_path / "mlm", is_decoder=False)
    assert head_kind == "checkpoint"
    obj = LMObjective(base, head, objective).eval()
    batch = _batch(tmp_path / "mlm", "mlm", base)
    ref = BertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()(**batch).loss
    assert torch.allclose(obj(**batch).loss, ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_clm_loss_matches_full_logits_reference(tiny_model_dirs, kind):
    base, head, objective, head_kind = build_lm(tiny_model_dirs[kind], is_decoder=True)
    assert objective == "clm" and head_kind == ("checkpoint" if kind == "gpt2" else "tied")
    obj = LMObjective(base, head, objective).eval()
    batch = _batch(tiny_model_dirs[kind], "clm", base)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    h = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = head(h)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                            batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(obj(**batch).loss, ref, atol=1e-5)


def test_masking_spares_special_and_padding_and_is_seeded():
    ids = torch.randint(10, 100, (64, 20))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    special[::2, 12:] = True  # padding
    rand_ids = torch.arange(10, 100)
    out, labels = mask_tokens(ids, special, 3, rand_ids, torch.Generator().manual_seed(1), 0.5)
    assert (labels[special] == -100).all() and torch.equal(out[special], ids[special])
    picked = labels != -100
    assert torch.equal(labels[picked], ids[picked])
    frac_mask = float((out[picked] == 3).float().mean())
    assert 0.7 < frac_mask < 0.9
    assert torch.equal(out[~picked], ids[~picked])
    assert not (out == 3)[~picked].any()
    out2, labels2 = mask_tokens(ids, special, 3, rand_ids, torch.Generator().manual_seed(1), 0.5)
    assert torch.equal(out, out2) and torch.equal(labels, labels2)
    out3, _ = mask_tokens(ids, special, 3, rand_ids, torch.Generator().manual_seed(2), 0.5)
    assert not torch.equal(out, out3)
    # every row with a maskable token gets at least one target, even at a tiny probability
    _, labels4 = mask_tokens(ids, special, 3, rand_ids, torch.Generator().manual_seed(0), 1e-6)
    assert ((labels4 != -100).sum(dim=1) == 1).all()


def _adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def test_language_module_learns_saves_and_is_deterministic(tiny_model_dirs, tmp_path):
    text = tmp_path / "swh.txt"
    text.write_text("\n".join(CORPUS) + "\n\n", encoding="utf-8")
    kw = dict(steps=15, lr=1e-2, batch_size=8, seed=3)
    out = train_language_module(str(tiny_model_dirs["bert"]), "swh", text, tmp_path / "m1", **kw)
    meta = json.loads((out / "xling_module.json").read_text())
    assert meta["kind"] == "language" and meta["language"] == "swh_Latn"
    assert meta["base_fingerprint"] and meta["data_hash"] and meta["metrics"]["steps"] == 15
    assert meta["extra"]["objective"] == "mlm" and meta["extra"]["head"] == "tied+transform"
    assert meta["metrics"]["eval_loss_after"] < meta["metrics"]["eval_loss_before"] - 0.1
    assert meta["metrics"]["final_loss"] is not None
    from peft import PeftModel
    from transformers import AutoModel

    from xling.modules.lora import LoraModule
    from xling.models.loading import load_model

    assert meta["base_fingerprint"] == load_model(str(tiny_model_dirs["bert"]), lazy=True, quiet=True).fingerprint
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dirs["bert"]), str(out))
    assert any("lora_A" in n for n, _ in peft.named_parameters())
    assert LoraModule(out).targets
    out2 = train_language_module(str(tiny_model_dirs["bert"]), "swh", text, tmp_path / "m2", **kw)
    a, b = _adapter_tensors(out), _adapter_tensors(out2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("base_model.model.encoder.layer.") for k in a)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_decoder_language_module(tiny_model_dirs, tmp_path, kind):
    out = train_language_module(str(tiny_model_dirs[kind]), "deu", CORPUS, tmp_path / kind, steps=15, lr=1e-2,
                                batch_size=8)
    meta = json.loads((out / "xling_module.json").read_text())
    assert meta["extra"]["objective"] == "clm" and meta["language"] == "deu_Latn"
    assert meta["metrics"]["eval_loss_after"] < meta["metrics"]["eval_loss_before"]
    from peft import PeftModel
    from transformers import AutoModel

    PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dirs[kind]), str(out))


def test_language_module_errors_write_nothing(tiny_model_dirs, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    model = str(tiny_model_dirs["bert"])
    cases = [
        dict(lang="swh", text=empty),
        dict(lang="xx-notalanguage", text=CORPUS),
        dict(lang="swh", text=tmp_path / "missing.txt"),
        dict(lang="swh", text=CORPUS, steps=0),
    ]
    for kw in cases:
        with pytest.raises(XlingError) as exc:
            train_language_module(model, out=tmp_path / "out", **kw)
        assert "\n" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_task_module_stacked_on_language_module(tiny_model_dirs, tmp_path):
    from test_train import tiny_task

    model = str(tiny_model_dirs["xlmr"])
    lang_mod = train_language_module(model, "eng", CORPUS, tmp_path / "lang", steps=3, batch_size=8)
    out = train_task_module(model, tiny_task(n_train=16, n_dev=8, n_test=4), tmp_path / "task",
                            language_module=lang_mod, epochs=1, lr=1e-2, batch_size=8, patience=0)
    meta = json.loads((out / "xling_module.json").read_text())
    assert meta["kind"] == "task" and meta["task"] == "tiny" and meta["language"] == "eng_Latn"
    assert meta["extra"]["stacked_on"][0]["path"] == str(lang_mod)
    info = json.loads((out / "xling_train.json").read_text())
    assert info["adapters_merged"] == [str(lang_mod)]
    other = train_language_module(str(tiny_model_dirs["bert"]), "eng", CORPUS, tmp_path / "other", steps=1)
    with pytest.raises(XlingError, match="another base"):
        train_task_module(model, tiny_task(n_train=8), tmp_path / "bad", language_module=other, epochs=1)
    assert not (tmp_path / "bad").exists()


def test_cli_train_module(tiny_model_dirs, tmp_path, capsys):
    from xling.cli import main

    text = tmp_path / "t.txt"
    text.write_text("\n".join(CORPUS), encoding="utf-8")
    rc = main(["train-module", "--kind", "language", "--lang", "swh", "--text", str(text), "--model",
               str(tiny_model_dirs["gpt2"]), "--out", str(tmp_path / "m"), "--steps", "2", "--quiet"])
    assert rc == 0 and (tmp_path / "m" / "xling_module.json").is_file()
    empty = tmp_path / "e.txt"
    empty.write_text("", encoding="utf-8")
    rc = main(["train-module", "--kind", "language", "--lang", "swh", "--text", str(empty), "--model",
               str(tiny_model_dirs["gpt2"]), "--out", str(tmp_path / "e"), "--quiet"])
    assert rc == 2 and "no text" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_streaming_topk_equals_global_topk():
    from xling.methods.modules_train import streaming_topk

    g = torch.Generator().manual_seed(0)
    ts = {f"t{i}": torch.randn(s, generator=g) for i, s in enumerate([(7, 5), (100,), (3, 4, 2), (1,)])}
    allv = torch.cat([t.reshape(-1).abs() for t in ts.values()])
    for k in (1, 10, 50, int(allv.numel())):
        got = streaming_topk(ts.items(), k)
        assert sum(v.numel() for v in got.values()) == k
        picked = torch.cat([ts[n].reshape(-1)[i].abs() for n, i in got.items()])
        assert torch.allclose(torch.sort(picked).values, torch.sort(torch.topk(allv, k).values).values)


def test_lt_sft_sparse_module(tiny_model_dirs, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel

    from xling.harness.training import train_sparse_language_module
    from xling.modules.apply import apply_sparse_diff

    out = train_sparse_language_module(str(tiny_model_dirs["bert"]), "swh", CORPUS, tmp_path / "sft", k=300,
                                       phase1_steps=8, phase2_steps=15, lr=1e-2, batch_size=8)
    meta = json.loads((out / "xling_sft.json").read_text())
    assert meta["kind"] == "language" and meta["extra"]["type"] == "lt-sft" and meta["extra"]["entries"] == 300
    assert meta["metrics"]["eval_loss_after"] < meta["metrics"]["eval_loss_before"]
    diff = load_file(str(out / "sparse_diff.safetensors"))
    assert sum(v.numel() for k, v in diff.items() if k.endswith(".indices")) == 300
    base = AutoModel.from_pretrained(tiny_model_dirs["bert"])
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    assert apply_sparse_diff(base, out) == 300
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in base.named_parameters())
    assert 0 < changed <= 300


def test_language_module_trains_only_lora_and_the_saved_module_reproduces_the_trained_loss(tiny_model_dirs, tmp_path):
    """Only the LoRA factors change (the base, embeddings included, stays frozen), so the
    saved module applied to a fresh base gives exactly the loss measured after training."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from xling.methods.modules_train import _EVAL_SENTENCES, LMObjective, _Encoder, build_lm, mean_loss
    folder = tiny_model_dirs["bert"]
    out = train_language_module(str(folder), "swh", CORPUS, tmp_path / "m", steps=10, lr=5e-2, batch_size=8, seed=1)
    meta = json.loads((out / "xling_module.json").read_text())
    base, head, objective, kind = build_lm(Path(folder), False, head_transform=True)
    assert kind == meta["extra"]["head"] == "tied+transform"
    from safetensors.torch import load_file

    head.load_state_dict(load_file(str(out / "lm_head.safetensors")), strict=False)
    assert not torch.equal(head.transform.weight, torch.eye(head.transform.weight.shape[0]))
    emb0 = base.get_input_embeddings().weight.detach().clone()
    tok = AutoTokenizer.from_pretrained(folder)
    data = _Encoder(tok, CORPUS, objective, 128, 8, 0.15, 1, emb0.shape[0])
    fixed = data.fixed(_EVAL_SENTENCES)
    model = LMObjective(PeftModel.from_pretrained(base, str(out)), head, objective)
    assert mean_loss(model, fixed) == pytest.approx(meta["metrics"]["eval_loss_after"], abs=1e-4)
    trainable = [n for n, p in PeftModel.from_pretrained(build_lm(Path(folder), False)[0], str(out),
                                                         is_trainable=True).named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_cli_task_module_compose_and_eval_walkthrough(tiny_model_dirs, tmp_path, capsys):
    """The README's step-by-step path on a tiny model: train-module --kind language / task,
    compose --method stack (a LoRA carrying the task head), eval on the composition."""
    from test_train import tiny_task, write_tiny_jsonl

    from xling.cli import main

    model = str(tiny_model_dirs["bert"])
    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", tiny_task(n_train=24, n_dev=8, n_test=8))
    for lang in ("eng", "deu"):
        (tmp_path / f"{lang}.txt").write_text("\n".join(CORPUS), encoding="utf-8")
        assert main(["train-module", "--kind", "language", "--lang", lang, "--text", str(tmp_path / f"{lang}.txt"),
                     "--model", model, "--out", str(tmp_path / f"lang-{lang}"), "--steps", "2", "--quiet"]) == 0
    rc = main(["train-module", "--kind", "task", "--task", str(data), "--model", model, "--language-module",
               str(tmp_path / "lang-eng"), "--epochs", "1", "--lr", "1e-2", "--out", str(tmp_path / "task"), "--quiet"])
    assert rc == 0
    meta = json.loads((tmp_path / "task" / "xling_module.json").read_text())
    assert meta["kind"] == "task" and meta["extra"]["stacked_on"][0]["language"] == "eng_Latn"
    assert main(["compose", str(tmp_path / "task"), str(tmp_path / "lang-deu"), "--method", "stack",
                 "--out", str(tmp_path / "task-deu")]) == 0
    printed = capsys.readouterr().out
    assert "carries the task head" in printed
    assert (tmp_path / "task-deu" / "head.safetensors").is_file()
    assert main(["eval", "--model", str(tmp_path / "task-deu"), "--task", str(data), "--langs", "deu",
                 "--out", str(tmp_path / "ev"), "--store", "none", "--quiet"]) == 0
    assert (tmp_path / "ev" / "scores.csv").is_file()
    rc = main(["train-module", "--kind", "task", "--task", str(data), "--model", model, "--steps", "3",
               "--out", str(tmp_path / "bad")])
    assert rc == 2 and "--steps" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    rc = main(["train-module", "--kind", "task", "--type", "sft", "--task", str(data), "--model", model,
               "--out", str(tmp_path / "bad")])
    assert rc == 2 and not (tmp_path / "bad").exists()
