"""Help text and defaults that tell the truth: help examples run, ignored options are said,
error metrics are summarised as errors, a language selection that changes the corpus says so."""

from __future__ import annotations

import re
import warnings

import pytest

from xling.cli import _metric_options, build_parser, main
from xling.errors import XlingError
from xling.methods.metrics import validate_options
from xling.recipes.align.run import DEFAULT_METRICS, AlignConfig, AlignResult, IgnoredOptionWarning, format_summary


def _align_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["align"]


def _metric_option_examples(text: str) -> list[str]:
    tokens = re.split(r",?\s+|[()]", text)  # examples are separated by ", "
    return [t for t in tokens if re.fullmatch(r"[a-z_0-9]+\.[a-z_]+=\S+", t)]


def test_every_metric_option_example_in_align_help_runs():
    align = _align_parser()
    help_text = next(a.help for a in align._actions if "--metric-option" in a.option_strings)
    examples = _metric_option_examples(help_text)
    assert len(examples) >= 3, examples
    printed = " ".join(align.format_help().split())
    for example in examples:
        assert example in printed
        options = _metric_options([example])
        validate_options(list(DEFAULT_METRICS), options)  # raises XlingError on an unknown option or bad value


def test_validate_options_checks_values_before_any_data():
    with pytest.raises(XlingError, match=r"metric 'anc': unknown option 'signed'"):
        validate_options(["anc"], _metric_options(["anc.signed=true"]))
    with pytest.raises(XlingError, match=r"option 'candidates' must be one of all, knn, got 'nearest'"):
        AlignConfig(metric_options={"xsim": {"candidates": "nearest"}})
    validate_options(["xsim"], {"xsim": {"candidates": "all", "k": 8}})


def test_cli_bad_option_value_fails_before_reading_the_corpus(tmp_path, capsys):
    rc = main(["align", "--data", str(tmp_path / "missing.tsv"), "--metric-option", "xsim.candidates=nearest",
               "--store", "none", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "option 'candidates' must be one of all, knn" in err[0]


def test_option_for_an_unselected_metric_warns_once():
    with pytest.warns(IgnoredOptionWarning) as record:
        AlignConfig(metrics=["mexa", "cka"], metric_options={"xsim": {"k": 8}})
    assert [str(w.message) for w in record] == [
        "metric option xsim.k=8 is ignored: metric xsim is not selected (metrics: mexa, cka)"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AlignConfig(metrics=["xsim"], metric_options={"xsim": {"k": 8}})  # selected: no warning


def test_cli_option_for_an_unselected_metric_prints_one_warning_line(tmp_path, capsys):
    rc = main(["align", "--data", str(tmp_path / "missing.tsv"), "--metrics", "mexa", "--metric-option", "xsim.k=8",
               "--store", "none", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2  # the missing corpus; the warning comes first, on one line
    assert err[0] == "xling: warning: metric option xsim.k=8 is ignored: metric xsim is not selected (metrics: mexa)"
    assert err[1].startswith("xling: error: corpus not found")


def _result(metric: str, values: dict[str, dict[int, float]]) -> AlignResult:
    rows = [{"model": "m", "corpus": "c", "lang": lang, "layer": layer, "pooling": "mean", "metric": metric,
             "value": v} for lang, by_layer in values.items() for layer, v in by_layer.items()]
    return AlignResult(rows=rows, config=AlignConfig(metrics=["xsim"]), run_id="r", model="m", corpus="c",
                       pivot="eng_Latn", langs=list(values), n_sentences=10, layers=[0, 1, 2], pooling="mean",
                       timings={})


def test_summary_of_an_error_metric_shows_its_minimum():
    res = _result("xsim_err_p2l", {"deu_Latn": {0: 0.5, 1: 0.1, 2: 0.3}, "fra_Latn": {0: 0.2, 1: 0.05, 2: 0.01}})
    text = format_summary(res)
    head, _, first, second = text.splitlines()[:4]
    assert "xsim_err_p2l min" in head and "max" not in head
    assert first.startswith("fra_Latn") and second.startswith("deu_Latn")  # best (lowest mean error) first
    assert first.split()[3:5] == ["0.010", "2"]  # the minimum and its layer
    assert second.split()[3:5] == ["0.100", "1"]
    assert "best layer by mean xsim_err_p2l (an error: lower is better): 1" in text
    # a higher-is-better metric keeps max
    mexa = format_summary(_result("mexa", {"deu_Latn": {0: 0.5, 1: 0.9, 2: 0.3}}))
    assert "mexa max" in mexa.splitlines()[0] and " 0.900 " in mexa.splitlines()[2] + " "


# ---------------------------------------------------------------- corpus selections


def test_django_selection_outside_the_defaults_is_reported():
    from xling.data.django_corpus import default_languages, django_corpus
    from xling.data.selection import selection_note

    default = django_corpus()
    assert selection_note(default) is None
    assert "deu_Latn" in default.meta["other_langs"] and "deu_Latn" not in default.langs
    picked = django_corpus(langs=["de", "fr", "sw", "hi", "eu"])
    note = selection_note(picked)
    assert note is not None and "\n" not in note
    common = len(set(picked.meta["ids"]) & set(default.meta["ids"]))
    assert (f"{len(picked)} sentences translated in all 6 languages, {common} of them among the {len(default)} "
            f"of the default {len(default.langs)}-language selection") in note
    # cut to the first rows as align does: the default is cut the same way
    cut = picked.select(None, 20)
    assert "20 sentences" in selection_note(cut, 20) and "among the 20 of the default" in selection_note(cut, 20)
    # naming exactly the default languages is the default corpus: nothing to say
    same = django_corpus(langs=default_languages()[1:])
    assert same.meta["ids"] == default.meta["ids"] and selection_note(same) is None


def test_cli_corpus_says_what_a_selection_yields(capsys):
    assert main(["corpus", "--langs", "de,sw"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(r"django: 3 languages x \d+ sentences$", out[0])
    assert out[1].startswith("note: corpus django: this language selection changes the sentence set: ")
    assert main(["corpus"]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "also available with --langs" in out and "swa_Latn" in out


def test_cli_align_says_when_the_selection_changed_the_sentences(tmp_path, tiny_model_dirs, capsys, one_thread):
    args = ["align", "--model", str(tiny_model_dirs["bert"]), "--data", "django", "--langs", "de",
            "--max-sentences", "4", "--layers", "1", "--metrics", "mexa", "--store", "none", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    captured = capsys.readouterr()
    note = [line for line in captured.err.splitlines() if line.startswith("xling: note: ")]
    assert len(note) == 1 and "4 sentences translated in all 2 languages" in note[0]
    assert "of them among the 4 of the default 28-language selection" in note[0]
    assert "note: corpus django: this language selection changes the sentence set" in captured.out  # summary too
