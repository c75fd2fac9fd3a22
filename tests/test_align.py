"""The align recipe and the CLI, end to end on tiny models."""

import csv
import json
import sqlite3

import pytest

import tiny_models
from xling.cli import main
from xling.data.corpus import ParallelCorpus
from xling.errors import XlingError
from xling.models.loading import from_objects
from xling.recipes.align.run import align
from xling.harness.store import ResultsStore

CODES = {"eng": "eng_Latn", "deu": "deu_Latn", "fra": "fra_Latn", "rus": "rus_Cyrl"}


@pytest.fixture()
def flores_dir(tmp_path):
    d = tmp_path / "flores"
    d.mkdir()
    for k, sents in tiny_models.PARALLEL.items():
        (d / f"{CODES[k]}.devtest").write_text("\n".join(sents) + "\n", encoding="utf-8")
    return d


def _corpus():
    return ParallelCorpus("tiny", {CODES[k]: v for k, v in tiny_models.PARALLEL.items()})


def test_align_api_rows_and_outputs(tmp_path):
    model, tok = tiny_models.build("xlmr")
    lm = from_objects(model, tok, "tiny-xlmr")
    res = align(lm=lm, corpus=_corpus(), out=tmp_path / "out", store=tmp_path / "r.sqlite", progress=False)
    assert res.langs == ["deu_Latn", "fra_Latn", "rus_Cyrl"]
    assert res.layers == [0, 1, 2, 3]
    metrics = set(res.metrics())
    assert {"mexa", "retrieval_p2l@1", "retrieval_l2p@1", "xsim_err_p2l", "bitext_f1", "cka", "anc"} <= metrics
    # one row per (lang, layer, metric output)
    assert len(res.rows) == len(res.langs) * len(res.layers) * len(metrics)
    for r in res.rows:
        assert set(r) == {"model", "corpus", "lang", "layer", "pooling", "metric", "value"}
    with open(tmp_path / "out" / "alignment.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(res.rows)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html and "deu_Latn" in html
    # self-contained: no scripts but the template's own inline one, no stylesheets, images or links to fetch
    from xling.harness.html import SCRIPT_TAG

    html = html.replace(SCRIPT_TAG, "")
    for needle in ("<script", "<link", "src=", "href=", "url("):
        assert needle not in html
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["run_id"] == res.run_id and run["n_sentences"] == 8
    store = ResultsStore(tmp_path / "r.sqlite")
    assert [r["run_id"] for r in store.runs("align")] == [res.run_id]
    assert len(store.alignment(res.run_id)) == len(res.rows)


def test_align_identical_languages_are_perfectly_aligned(tmp_path):
    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "tiny-bert")
    eng = tiny_models.PARALLEL["eng"]
    corpus = ParallelCorpus("copy", {"eng_Latn": eng, "deu_Latn": list(eng)})
    res = align(lm=lm, corpus=corpus, out=None, store=None, progress=False)
    for metric in ("mexa", "retrieval_p2l@1", "cka", "bitext_f1"):
        assert all(abs(v - 1.0) < 1e-5 for v in res.values(metric)["deu_Latn"].values()), metric


def test_align_layers_and_languages_selection():
    model, tok = tiny_models.build("llama")
    lm = from_objects(model, tok, "tiny-llama")
    res = align(lm=lm, corpus=_corpus(), langs=["de", "ru"], layers="1-2", metrics=["mexa", "cka"],
                out=None, store=None, progress=False)
    assert res.langs == ["deu_Latn", "rus_Cyrl"]
    assert res.layers == [1, 2]
    assert res.pooling == "weighted-mean"
    assert {r["metric"] for r in res.rows} == {"mexa", "cka"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"langs": ["swh"]}, "language swh"),
        ({"langs": ["xx"]}, "unknown language code"),
        ({"pivot": "hin"}, "pivot language hin_Deva is not in corpus"),
        ({"layers": "9"}, "out of range"),
        ({"metrics": ["nope"]}, "unknown metric"),
        ({"langs": ["eng"]}, "at least one language besides the pivot"),
    ],
)
def test_align_errors(kwargs, message, tmp_path):
    model, tok = tiny_models.build("bert")
    lm = from_objects(model, tok, "tiny-bert")
    with pytest.raises(XlingError, match=message):
        align(lm=lm, corpus=_corpus(), out=tmp_path / "out", store=tmp_path / "s.sqlite", progress=False, **kwargs)
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.sqlite").exists()


def test_cli_end_to_end(tmp_path, flores_dir, tiny_model_dirs, capsys):
    out, store = tmp_path / "out", tmp_path / "r.sqlite"
    args = ["align", "--model", str(tiny_model_dirs["bert"]), "--data", str(flores_dir), "--langs", "de,fr,ru",
            "--out", str(out), "--store", str(store), "--quiet", "--batch-size", "3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "deu_Latn" in text and "best layer" in text
    for name in ("alignment.csv", "summary.csv", "report.html", "run.json"):
        assert (out / name).is_file()
    first = (out / "alignment.csv").read_text()
    # second run: every language comes from the cache, same numbers
    assert main(args) == 0
    assert (out / "alignment.csv").read_text() == first
    runs = ResultsStore(store).runs("align")
    assert len(runs) == 2 and runs[1]["config"]["timings"]["languages_from_cache"] == 4
    con = sqlite3.connect(store)
    assert con.execute("select count(distinct run_id) from alignment").fetchone()[0] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--langs", "de,xx"], "unknown language code 'xx'"),
        (["--langs", "swh"], "swh"),
        (["--layers", "0,50"], "layer 50 is out of range"),
        (["--metrics", "mexa,foo"], "unknown metric foo"),
        (["--max-sentences", "1"], "at least 2"),
        (["--metric-option", "xsim"], "METRIC.OPTION=VALUE"),
    ],
)
def test_cli_errors_are_one_line(extra, message, tmp_path, flores_dir, tiny_model_dirs, capsys):
    out = tmp_path / "out"
    code = main(["align", "--model", str(tiny_model_dirs["bert"]), "--data", str(flores_dir), "--out", str(out),
                 "--store", str(tmp_path / "s.sqlite"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("xling: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_missing_model_and_data(tmp_path, flores_dir, capsys):
    assert main(["align", "--model", str(tmp_path / "missing"), "--data", str(flores_dir), "--quiet",
                 "--out", str(tmp_path / "o"), "--store", "none"]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["align", "--data", str(tmp_path / "nothing.tsv"), "--quiet", "--out", str(tmp_path / "o"),
                 "--store", "none"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_mismatched_corpus(tmp_path, tiny_model_dirs, capsys):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "b.txt").write_text("eins\nzwei\n")
    code = main(["align", "--model", str(tiny_model_dirs["bert"]), "--data",
                 f"eng={tmp_path / 'a.txt'},deu={tmp_path / 'b.txt'}", "--quiet", "--out", str(tmp_path / "o"),
                 "--store", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "a.txt" in err and "b.txt" in err
    assert not (tmp_path / "o").exists()


def test_cli_metrics_list(capsys):
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    for name in ("mexa", "retrieval", "xsim", "bitext_f1", "cka", "anc"):
        assert name in out


@pytest.mark.slow
def test_builtin_default_end_to_end(tmp_path, monkeypatch):
    """The README's command one, on a few languages to keep it short."""
    monkeypatch.chdir(tmp_path)
    assert main(["align", "--langs", "de,pt,ru,ja,sw", "--max-sentences", "100", "--quiet"]) == 0
    run = json.loads((tmp_path / "xling-out" / "align" / "run.json").read_text())
    assert len(run["langs"]) == 5 and run["n_sentences"] == 100
    # a real multilingual encoder aligns these languages far above chance (1/100)
    assert run["best_layer_mean_mexa"] > 0.5


def test_center_subtracts_each_languages_mean_and_is_labelled(tmp_path):
    """--center: metrics see per-language mean-centred embeddings; rows say so in their pooling."""
    import torch

    from xling.engine.embed import EmbedConfig, embed_sentences
    from xling.methods.metrics import PairEmbeddings, compute_metrics

    model, tok = tiny_models.build("llama")
    lm = from_objects(model, tok, "tiny-llama")
    corpus = _corpus().select(["eng_Latn", "deu_Latn"])
    res = align(lm=lm, corpus=corpus, out=None, store=None, progress=False, center=True, metrics=["mexa", "cka"])
    assert res.pooling == "weighted-mean+center" and {r["pooling"] for r in res.rows} == {"weighted-mean+center"}
    ecfg = EmbedConfig(pooling="weighted-mean")
    X = embed_sentences(lm, corpus.sentences["eng_Latn"], ecfg)
    Y = embed_sentences(lm, corpus.sentences["deu_Latn"], ecfg)
    ref = compute_metrics(PairEmbeddings(X - X.mean(1, keepdim=True), Y - Y.mean(1, keepdim=True)), ["mexa"], {})
    assert [v for v in res.values("mexa")["deu_Latn"].values()] == pytest.approx(ref["mexa"].tolist())
    plain = align(lm=lm, corpus=corpus, out=None, store=None, progress=False, metrics=["mexa"])
    assert plain.pooling == "weighted-mean"
