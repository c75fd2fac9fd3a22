"""``xling neurons`` overlap against URIEL distance and stored MEXA; ``xling lens`` with stored MEXA per layer.

Each number is checked against scipy/numpy on the same inputs, read back from the run's own outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from test_lens_neurons import PAIRS, _texts, tiny_causal_dir  # noqa: F401 - the fixture

from xling.harness.store import ResultsStore

LANGS = ["eng_Latn", "deu_Latn", "fra_Latn"]


def _fake_distances(missing=()):
    """Distances from a fixed table; pairs in ``missing`` have none (``None``) of the six kinds."""
    from xling.data.typology import KINDS

    base = {frozenset(("eng_Latn", "deu_Latn")): 0.3, frozenset(("eng_Latn", "fra_Latn")): 0.5,
            frozenset(("deu_Latn", "fra_Latn")): 0.8}

    def distances(pairs):
        out = {}
        for a, b in pairs:
            key = frozenset((a, b))
            out[(a, b)] = {k: None if key in missing else base[key] + 0.01 * i for i, k in enumerate(KINDS)}
        return out

    return distances


def _add_align(store, model, corpus, mexa, hidden=4, run_id="a1"):
    """An align run written straight to the store: ``mexa[lang][layer]``."""
    rows = [{"model": model, "corpus": corpus, "lang": lang, "layer": layer, "pooling": "mean", "metric": "mexa",
             "value": v} for lang, per in mexa.items() for layer, v in enumerate(per)]
    ResultsStore(store).add_run({"run_id": run_id, "command": "align", "model": model, "corpus": corpus,
                                 "config": {"pivot": "eng_Latn", "langs": list(mexa), "num_hidden_states": hidden},
                                 "started": "2026-01-01T00:00:00"}, alignment=rows)


def _run_neurons(model_dir, tmp_path, store, langs="en,de,fr", out_name="n"):
    from xling.cli import main

    out = tmp_path / out_name
    rc = main(["neurons", "--model", str(model_dir), "--langs", langs, "--data", _texts(tmp_path), "--held-out", "10",
               "--max-tokens", "400", "--top-rate", "0.2", "--out", str(out), "--quiet", "--batch-size", "4",
               "--store", str(store)])
    assert rc == 0
    return out


def _jaccard(out):
    return {(r["lang_a"], r["lang_b"]): float(r["jaccard"]) for r in csv.DictReader(open(out / "overlap.csv", encoding="utf-8"))}


def _correlations(out):
    return {r["what"]: r for r in csv.DictReader(open(out / "correlations.csv", encoding="utf-8"))}


def test_neurons_correlations_equal_scipy_on_the_same_numbers(tiny_causal_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    from xling.data import typology

    monkeypatch.setattr(typology, "distances", _fake_distances())
    store = tmp_path / "r.sqlite"
    mexa = {"eng_Latn": [1, 1, 1, 1], "deu_Latn": [0.1, 0.5, 0.9, 0.4], "fra_Latn": [0.2, 0.3, 0.6, 0.5]}
    # the corpus of the fake files is named after them (e+g+...); the align run is on the same text
    from xling.data.readers import load_corpus

    corpus_name = load_corpus(_texts(tmp_path)).name
    _add_align(store, str(tiny_causal_dir), corpus_name, mexa)
    out = _run_neurons(tiny_causal_dir, tmp_path, store)
    jac = _jaccard(out)
    cor = _correlations(out)
    # URIEL: every unordered pair once, off the diagonal
    pairs = [("eng_Latn", "deu_Latn"), ("eng_Latn", "fra_Latn"), ("deu_Latn", "fra_Latn")]
    x = [jac[p] for p in pairs]
    dist = _fake_distances()(pairs)
    syn = [row for what, row in cor.items() if "URIEL syntactic" in what]
    assert len(syn) == 1 and int(syn[0]["n"]) == 3
    y = [dist[p]["syntactic"] for p in pairs]
    assert np.std(x) > 0  # the tiny model's sets differ (seeded), so the correlation is defined
    assert float(syn[0]["pearson"]) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-5)  # CSV: 6 significant digits
    assert float(syn[0]["spearman"]) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-5)
    # MEXA: best layer of the mean over languages is 2; Jaccard with English against each language's MEXA there
    m = [row for what, row in cor.items() if "MEXA" in what]
    assert len(m) == 1 and "layer 2" in m[0]["what"] and "a1" in m[0]["what"] and int(m[0]["n"]) == 2
    xm = [jac[("eng_Latn", "deu_Latn")], jac[("eng_Latn", "fra_Latn")]]
    assert xm[0] != xm[1]
    assert float(m[0]["pearson"]) == pytest.approx(np.corrcoef(xm, [0.9, 0.6])[0, 1], abs=1e-5)
    assert float(m[0]["spearman"]) == pytest.approx(stats.spearmanr(xm, [0.9, 0.6])[0], abs=1e-5)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "n = 3 pairs: descriptive" in html and "n = 2 languages: descriptive" in html


def test_neurons_correlation_matches_scipy_with_varying_overlap(monkeypatch):
    """The link computation itself, on a given Jaccard matrix (so the overlap surely varies)."""
    from xling.data import typology
    from xling.recipes.neurons.run import NeuronsConfig, overlap_links

    langs = ["eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans"]
    rng = np.random.default_rng(1)
    jac = rng.uniform(0, 1, (5, 5))
    jac = (jac + jac.T) / 2
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    d = {frozenset((langs[i], langs[j])): float(rng.uniform(0, 1)) for i, j in pairs}
    missing = frozenset(("deu_Latn", "rus_Cyrl"))
    monkeypatch.setattr(typology, "distances", lambda ps: {
        (a, b): {k: None if frozenset((a, b)) == missing else d[frozenset((a, b))] for k in typology.KINDS} for a, b in ps})
    rows, notes = overlap_links(NeuronsConfig(store=None, bootstrap=200), langs, jac)
    gen = [r for r in rows if "genetic" in r["what"]][0]
    keep = [(i, j) for i, j in pairs if frozenset((langs[i], langs[j])) != missing]
    x = [jac[i, j] for i, j in keep]
    y = [d[frozenset((langs[i], langs[j]))] for i, j in keep]
    # the pair without a distance is dropped, not zeroed
    assert gen["n"] == 9 and gen["missing"] == 1
    assert gen["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert gen["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert gen["ci_low"] <= gen["pearson"] <= gen["ci_high"]
    zeroed = stats.pearsonr([jac[i, j] for i, j in pairs],
                            [0.0 if frozenset((langs[i], langs[j])) == missing else d[frozenset((langs[i], langs[j]))]
                             for i, j in pairs])[0]
    assert gen["pearson"] != pytest.approx(zeroed, abs=1e-6)
    assert notes == []


def test_neurons_without_an_align_run_says_which_command_adds_it(tiny_causal_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    from xling.data import typology

    monkeypatch.setattr(typology, "distances", _fake_distances(missing={frozenset(("deu_Latn", "fra_Latn"))}))
    store = tmp_path / "empty.sqlite"
    out = _run_neurons(tiny_causal_dir, tmp_path, store)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "MEXA" in x]
    assert len(lines) == 1 and lines[0].startswith("xling: note:") and "xling align --model" in lines[0]
    cor = _correlations(out)
    assert not [w for w in cor if "MEXA" in w]
    assert all(int(r["n"]) == 2 for w, r in cor.items() if "URIEL" in w)  # the pair without a distance dropped
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "xling align --model" in html and "1 without a value dropped" in html


def test_neurons_without_urielplus_is_one_note(tiny_causal_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    import xling.deps

    real = xling.deps.available
    monkeypatch.setattr(xling.deps, "available", lambda m: False if m == "urielplus" else real(m))
    out = _run_neurons(tiny_causal_dir, tmp_path, "none")
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if "typology" in x] == [
        "xling: note: neurons: no URIEL correlation: the typological distances need the 'typology' extra "
        "(pip install 'xling[typology]')"]
    assert (out / "correlations.csv").read_text(encoding="utf-8").splitlines()[0].split(",") == [
        "what", "n", "pearson", "ci_low", "ci_high", "spearman"]


def test_lens_report_shows_stored_mexa_per_layer(tiny_causal_dir, tmp_path):  # noqa: F811
    from xling.cli import main

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(PAIRS, encoding="utf-8")
    store = tmp_path / "r.sqlite"
    args = ["lens", "--model", str(tiny_causal_dir), "--langs", "de", "--source", "fr", "--pairs", str(pairs),
            "--shots", "2", "--max-prompts", "3", "--quiet", "--store", str(store)]
    assert main([*args, "--out", str(tmp_path / "l0")]) == 0
    html0 = (tmp_path / "l0" / "report.html").read_text(encoding="utf-8")
    assert "<h2>MEXA per layer" not in html0 and "xling align --model" in html0
    # 3 blocks -> 4 hidden states; mean over languages (0.2, 0.45, 0.75, 0.5): peak at hidden state 2
    _add_align(store, str(tiny_causal_dir), "bible:mexa", {"deu_Latn": [0.1, 0.5, 0.9, 0.4], "fra_Latn": [0.3, 0.4, 0.6, 0.6]})
    assert main([*args, "--out", str(tmp_path / "l1")]) == 0
    html = (tmp_path / "l1" / "report.html").read_text(encoding="utf-8")
    assert "MEXA per layer (align run a1 on bible:mexa)" in html
    assert "peaks at hidden state 2 (0.750)" in html
    for v in ("0.200", "0.450", "0.750", "0.500"):
        assert f"<td>{v}</td>" in html or f">{v}<" in html
