"""Training on the source language: the loop, heads, LoRA, determinism, zero-shot scoring."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from xling.errors import XlingError
from xling.harness.training import train_task
from xling.methods.train import TrainConfig, build_task_model, fit, linear_schedule, lora_targets
from xling.modules.trained import load_trained
from xling.tasks import Example, Task
from xling.tasks.encode import bucketed, encode, length_sorted, predict

EN = {"animal": ["cat", "dog"], "color": ["red", "blue", "green"]}
TR = {"deu": {"cat": "katze", "dog": "hund", "red": "rot", "blue": "blau", "green": "grün", "the": "die", "and": "und",
              "one": "eins", "two": "zwei", "big": "haus"},
      "fra": {"cat": "chat", "dog": "chien", "red": "rouge", "blue": "bleu", "green": "vert", "the": "le", "and": "et",
              "one": "un", "two": "deux", "big": "maison"}}
FILLER = ["the", "and", "one", "two", "big"]


def tiny_task(n_train: int = 48, n_dev: int = 16, n_test: int = 16, seed: int = 0) -> Task:
    """A separable two-class task in the tiny models' vocabulary; test in eng, deu, fra."""
    rng = random.Random(seed)
    labels = sorted(EN)
    data: dict = {"train": {"eng_Latn": []}, "dev": {"eng_Latn": []}, "test": {"eng_Latn": [], "deu_Latn": [], "fra_Latn": []}}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        for i in range(n):
            lab = labels[i % 2]
            words = [rng.choice(EN[lab]) for _ in range(rng.randint(1, 3))] + [rng.choice(FILLER) for _ in range(rng.randint(0, 3))]
            rng.shuffle(words)
            data[split]["eng_Latn"].append(Example(text=" ".join(words), label=labels.index(lab), id=f"{split}{i}"))
            if split == "test":
                for lg, m in TR.items():
                    data[split][f"{lg}_Latn"].append(
                        Example(text=" ".join(m[w] for w in words), label=labels.index(lab), id=f"{split}{i}"))
    return Task("tiny", "classification", labels, data)


def write_tiny_jsonl(path: Path, task: Task) -> Path:
    rows = []
    for split, table in task.data.items():
        for lang, exs in table.items():
            for e in exs:
                rows.append({"text": e.text, "label": task.labels[e.label], "lang": lang, "split": split, "id": e.id})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


# tiny random models learn fast only with trainable embeddings (the default freezes them)
FAST = dict(lr=1e-2, batch_size=8, patience=0, progress=False, freeze_embeddings=False)


# ----------------------------------------------------------------------------- the loop


class _Lin(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.w = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        class Out:
            pass

        o = Out()
        o.loss = ((self.w(x).squeeze(-1) - y) ** 2).mean()
        return o


def _lin_batches(bs):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [{"x": x[i : i + bs], "y": y[i : i + bs]} for i in range(0, 16, bs)]


def test_gradient_accumulation_matches_bigger_batches():
    a, b = _Lin(), _Lin()
    cfg = dict(epochs=3, lr=0.05, warmup_ratio=0.0, weight_decay=0.0, progress=False, max_grad_norm=0.0)
    fit(a, _lin_batches(8), None, TrainConfig(batch_size=8, **cfg))
    fit(b, _lin_batches(4), None, TrainConfig(batch_size=4, grad_accum=2, **cfg))
    assert torch.allclose(a.w.weight, b.w.weight, atol=1e-6)


def test_early_stopping_restores_best_weights():
    model = _Lin()
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.95, 0.99])
    snapshots = []

    def dev(m):
        snapshots.append(m.w.weight.detach().clone())
        return next(scores)

    res = fit(model, _lin_batches(4), dev, TrainConfig(epochs=6, lr=0.01, patience=2, progress=False))
    assert res.stopped_early and len(res.curve) == 4  # 0.7 and 0.6 are the two evaluations without improvement
    assert res.best_dev == 0.9 and res.best_epoch == 2
    assert torch.equal(model.w.weight, snapshots[1])


def test_schedule_and_config_errors():
    f = linear_schedule(10, 2)
    assert [round(f(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    with pytest.raises(XlingError, match="unknown training method"):
        TrainConfig(method="qlora")
    with pytest.raises(XlingError, match="batch-size must be at least 1"):
        TrainConfig(batch_size=0)
    assert TrainConfig(method="lora").lr == 5e-4 and TrainConfig().lr == 5e-5


def test_bucketing_orders():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4]
    assert length_sorted(lengths, 3) == [[2, 6, 4], [0, 7, 3], [5, 1]]
    b = bucketed(lengths, 2, seed=0, bucket=2)
    assert sorted(i for batch in b for i in batch) == list(range(8))
    assert bucketed(lengths, 2, seed=0, bucket=2) == b and bucketed(lengths, 2, seed=1, bucket=2) != b


# ----------------------------------------------------------------------------- real (tiny) models


def test_training_learns_and_is_deterministic(tiny_model_dirs, tmp_path):
    task = tiny_task()
    out1 = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "m1", epochs=4, seed=3, **FAST)
    info = json.loads((out1 / "xling_train.json").read_text())
    losses = [p["train_loss"] for p in info["curve"]]
    assert losses[-1] < losses[0] * 0.5
    assert info["best_dev"] == 1.0
    assert info["base_fingerprint"] and info["train_data_hash"] and info["hparams"]["seed"] == 3
    out2 = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "m2", epochs=4, seed=3, **FAST)
    from safetensors.torch import load_file

    w1, w2 = load_file(str(out1 / "model.safetensors")), load_file(str(out2 / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert json.loads((out2 / "xling_train.json").read_text())["curve"] == info["curve"]
    out3 = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "m3", epochs=1, seed=4, **FAST)
    w3 = load_file(str(out3 / "model.safetensors"))
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)
    # the saved folder is a standard transformers model that predicts the source language well
    tm = load_trained(out1)
    preds = predict(tm.model, tm.tokenizer, "classification", task.examples("test", "eng_Latn"))
    acc = sum(p == e.label for p, e in zip(preds, task.examples("test", "eng_Latn"))) / 16
    assert acc >= 0.9
    assert tm.labels == task.labels and tm.model.config.id2label[0] == "animal"


def test_lora_adapter_folder(tiny_model_dirs, tmp_path):
    task = tiny_task()
    out = train_task(str(tiny_model_dirs["xlmr"]), task, method="lora", out=tmp_path / "lora", epochs=2,
                     lr=1e-2, batch_size=8, patience=0, progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "xling_train.json"} <= names
    info = json.loads((out / "xling_train.json").read_text())
    assert info["trainable_parameters"] < info["total_parameters"] / 2
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert all(".layer." in t for t in cfg["target_modules"])  # only linears inside the blocks
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert all("lora_" in k for k in f.keys())  # plain LoRA: the head is beside it
    a = load_trained(out)
    b = load_trained(out)
    exs = task.examples("test", "deu_Latn")
    assert predict(a.model, a.tokenizer, "classification", exs) == predict(b.model, b.tokenizer, "classification", exs)
    # stacking: an existing LoRA merged under a new training
    out2 = train_task(str(tiny_model_dirs["xlmr"]), task, method="lora", out=tmp_path / "stack", epochs=1,
                      adapters=[out], lr=1e-2, batch_size=8, patience=0, progress=False)
    assert json.loads((out2 / "xling_train.json").read_text())["adapters_merged"] == [str(out)]
    load_trained(out2)


def test_a_task_module_without_its_checksums_is_never_written(tiny_model_dirs, tmp_path, monkeypatch, capsys):
    """A failure to write xling_module.json (the weight checksums) fails the training: no folder, one line."""
    import errno

    import xling.modules.trained as trained
    from xling.cli import main

    def no_space(folder, meta, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder) / "xling_module.json"))

    monkeypatch.setattr(trained, "write_meta", no_space)
    task = tiny_task(n_train=8, n_dev=4, n_test=4)
    with pytest.raises(XlingError, match="cannot write .*m: the disk is full"):
        train_task(str(tiny_model_dirs["bert"]), task, method="lora", out=tmp_path / "m", epochs=1, **FAST)
    assert not (tmp_path / "m").exists()
    data = write_tiny_jsonl(tmp_path / "tiny.jsonl", task)
    capsys.readouterr()
    rc = main(["train", "--model", str(tiny_model_dirs["bert"]), "--task", str(data), "--method", "lora",
               "--epochs", "1", "--quiet", "--out", str(tmp_path / "cli")])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("xling: error: cannot write") and err.count("\n") == 1
    assert "wrote" not in out and not (tmp_path / "cli").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["tiny.jsonl"]


def test_lora_targets_structural(tiny_model_dirs):
    for kind, block in (("gpt2", "transformer.h."), ("llama", "model.layers."), ("bert", "bert.encoder.layer.")):
        m = build_task_model(tiny_model_dirs[kind], "classification", ["a", "b"])
        targets = lora_targets(m)
        assert targets and all(t.startswith(block) for t in targets)


def test_decoder_classification_head_and_frozen_embeddings(tiny_model_dirs, tmp_path):
    from safetensors.torch import load_file

    task = tiny_task(n_train=16, n_dev=8, n_test=8)
    out = train_task(str(tiny_model_dirs["gpt2"]), task, out=tmp_path / "g", epochs=1, lr=5e-3, batch_size=8,
                     progress=False)
    before = load_file(str(tiny_model_dirs["gpt2"] / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    emb = [k for k in after if k.endswith("wte.weight")][0]
    assert torch.equal(after[emb], before["wte.weight"])  # default: input embeddings frozen
    assert not torch.equal(after["transformer.h.0.attn.c_attn.weight"], before["h.0.attn.c_attn.weight"])
    tm = load_trained(out)
    preds = predict(tm.model, tm.tokenizer, "classification", task.examples("test", "fra_Latn"), batch_size=3)
    assert len(preds) == 8 and set(preds) <= {0, 1}


def test_token_classification_and_multiple_choice(tiny_model_dirs, tmp_path):
    rng = random.Random(0)
    labels = ["O", "B-ANI", "I-ANI"]
    exs = []
    for i in range(24):
        words = [rng.choice(["cat", "dog", "the", "red", "one", "big"]) for _ in range(rng.randint(2, 6))]
        tags = [1 if w in ("cat", "dog") else 0 for w in words]
        exs.append(Example(tokens=words, tags=tags, id=str(i)))
    task = Task("ner", "token-classification", labels, {"train": {"eng_Latn": exs}, "dev": {"eng_Latn": exs[:8]},
                                                        "test": {"eng_Latn": exs[:8]}})
    out = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "ner", epochs=3, **FAST)
    tm = load_trained(out)
    preds = predict(tm.model, tm.tokenizer, task.type, exs[:8], max_length=6)
    assert [len(p) for p in preds] == [len(e.tokens) for e in exs[:8]]  # one tag per word, cut words -> O
    enc = encode(tm.tokenizer, task.type, exs[:1], 128)[0]
    assert enc.first_subword[0] == 1 and enc.label[0] == -100  # [CLS] ignored, first word at position 1

    mc = [Example(text="the cat", choices=["cat", "red", "one"], label=0, id="0"),
          Example(text="red", choices=["dog", "red", "two"], label=1, id="1")] * 6
    mtask = Task("mc", "multiple-choice", ["0", "1", "2"], {"train": {"eng_Latn": mc}, "test": {"eng_Latn": mc}})
    out = train_task(str(tiny_model_dirs["bert"]), mtask, out=tmp_path / "mc", epochs=2, **FAST)
    tm = load_trained(out)
    preds = predict(tm.model, tm.tokenizer, "multiple-choice", mc)
    assert len(preds) == 12 and set(preds) <= {0, 1, 2}


def test_zero_shot_loglik_matches_direct_computation(tiny_model_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xling.tasks.zeroshot import label_loglik, zero_shot_predict

    for kind in ("llama", "gpt2", "gemma3"):
        folder = tiny_model_dirs[kind]
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        prompts = ["the cat sees", "one big red house and the small dog", "two"]
        conts = [["dog", "red house"], ["cat", "blue"], ["three", "one two three"]]
        got = label_loglik(model, tok, prompts, conts, normalize="sum", batch_size=2)
        got1 = label_loglik(model, tok, prompts, conts, normalize="sum", batch_size=1)
        bos = tok.bos_token_id
        for i, (p, cs) in enumerate(zip(prompts, conts)):
            for j, c in enumerate(cs):
                pid = ([bos] if bos is not None else []) + tok(p, add_special_tokens=False)["input_ids"]
                cid = tok(" " + c, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([pid + cid])
                with torch.no_grad():
                    logp = torch.log_softmax(model(ids).logits[0].float(), -1)
                ref = sum(logp[len(pid) + t - 1, cid[t]].item() for t in range(len(cid)))
                assert got[i][j] == pytest.approx(ref, abs=1e-4)
                assert got1[i][j] == pytest.approx(ref, abs=1e-4)
        task = tiny_task(n_train=2, n_dev=2, n_test=6)
        preds = zero_shot_predict(model, tok, "classification", task.labels, task.examples("test", "eng_Latn"))
        assert len(preds) == 6 and set(preds) <= {0, 1}


def test_train_errors(tiny_model_dirs, tmp_path):
    task = tiny_task(n_train=4, n_dev=2, n_test=2)
    with pytest.raises(XlingError, match="not in the train split of task tiny"):
        train_task(str(tiny_model_dirs["bert"]), task, lang="de", out=tmp_path / "x", progress=False)
    with pytest.raises(XlingError, match="no task given"):
        train_task(str(tiny_model_dirs["bert"]), None, out=tmp_path / "x")
    with pytest.raises(XlingError, match="model not found"):
        train_task(str(tmp_path / "missing"), task, out=tmp_path / "x", progress=False)
    with pytest.raises(XlingError, match="trained model not found"):
        load_trained(tmp_path / "nothing")
    with pytest.raises(XlingError, match="not a task model"):
        load_trained(tiny_model_dirs["bert"])


def test_gemma3_decoder_lora_task_model_round_trip(tiny_model_dirs, tmp_path):
    """A Gemma-3 decoder (the built-in gemma-3-270m's architecture) takes a LoRA task head, saves and reloads."""
    task = tiny_task(n_train=16, n_dev=8, n_test=8)
    m = build_task_model(tiny_model_dirs["gemma3"], "classification", task.labels)
    assert type(m).__name__ == "Gemma3TextForSequenceClassification"
    assert lora_targets(m) and all(t.startswith("model.layers.") for t in lora_targets(m))
    out = train_task(str(tiny_model_dirs["gemma3"]), task, method="lora", out=tmp_path / "g", epochs=1, lr=1e-2,
                     batch_size=8, patience=0, progress=False)
    tm = load_trained(out)
    exs = task.examples("test", "fra_Latn")
    preds = predict(tm.model, tm.tokenizer, "classification", exs, batch_size=3)
    assert preds == predict(tm.model, tm.tokenizer, "classification", exs, batch_size=8)  # batch invariant
    assert len(preds) == 8 and set(preds) <= {0, 1}
