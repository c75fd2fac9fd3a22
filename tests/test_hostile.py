"""Hostile input: one ``xling: error:`` line naming the file (and line), exit 2, never a traceback.

Also Ctrl-C at any moment (exit 130, one line), and ``--model`` checks that fail
before anything slow.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xling.cli import main


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one ``xling: error:`` line and no traceback."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xling: error: "), err
    assert "Traceback" not in err
    return lines[0]


DEEP = "[" * 100_000 + "]" * 100_000
BIG = "9" * 5000
GOOD_ROW = '{"eng": "a cat", "deu": "eine Katze"}'


# ----------------------------------------------------------------------------- parallel corpora


@pytest.mark.parametrize("name, data, expect", [
    ("surrogate.jsonl", (GOOD_ROW + '\n{"eng": "x \\ud800 y", "deu": "b"}\n').encode(), [":2:", "surrogate", "\\ud800"]),
    ("surrogate-key.jsonl", (GOOD_ROW + '\n{"eng": "x", "\\udfff": "b"}\n').encode(), [":2:", "surrogate"]),
    ("deep.jsonl", (GOOD_ROW + "\n" + DEEP + "\n").encode(), [":2:", "nested too deeply"]),
    ("deep-value.jsonl", (GOOD_ROW + '\n{"eng": ' + DEEP + "}\n").encode(), [":2:", "nested too deeply"]),
    ("bigint.jsonl", (GOOD_ROW + '\n{"eng": ' + BIG + ', "deu": "b"}\n').encode(), [":2:", "5000 digits"]),
    ("binary.tsv", b"eng\tdeu\na\tb\n\x00\x01\x02\tc\n", [":3:", "NUL"]),
    ("utf16.tsv", "eng\tdeu\na\tb\n".encode("utf-16-le"), [":1:", "NUL", "UTF-16"]),
    ("utf16-bom.tsv", "eng\tdeu\na\tb\n".encode("utf-16"), ["UTF-16", "UTF-8"]),
    ("binary.jsonl", b"\x7fELF\x02\x01\x01\x00\x00\x00\n", [":1:", "NUL"]),
])
def test_hostile_corpus_file(tmp_path, capsys, name, data, expect):
    path = tmp_path / name
    path.write_bytes(data)
    line = cli_error(capsys, ["corpus", "--data", path])
    assert str(path) in line
    for piece in expect:
        assert piece in line


def test_valid_surrogate_pair_is_text(tmp_path, capsys):
    path = tmp_path / "emoji.jsonl"
    path.write_text(GOOD_ROW + '\n{"eng": "smile \\ud83d\\ude00", "deu": "b"}\n', encoding="utf-8")
    assert main(["corpus", "--data", str(path), "--show", "2"]) == 0
    assert "smile \U0001F600" in capsys.readouterr().out


def test_binary_plain_text_file(tmp_path, capsys):
    (tmp_path / "en.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "de.txt").write_bytes("eins\nzwei\n".encode("utf-16-le"))
    line = cli_error(capsys, ["corpus", "--data", f"eng={tmp_path / 'en.txt'},deu={tmp_path / 'de.txt'}"])
    assert f"{tmp_path / 'de.txt'}:1:" in line and "NUL" in line


# ----------------------------------------------------------------------------- task files and specs


def _row(**kw) -> str:
    return json.dumps({"text": "hello there", "label": "a", "lang": "en", "split": "test", **kw})


@pytest.mark.parametrize("name, text, expect", [
    ("deep.jsonl", _row() + "\n" + '{"text": "x", "label": ' + DEEP + "}\n", [":2:", "nested too deeply"]),
    ("bigint.jsonl", _row() + "\n" + '{"text": "x", "lang": "en", "split": "test", "label": ' + BIG + "}\n",
     [":2:", "5000 digits"]),
    ("surrogate.jsonl", _row() + "\n" + _row(text="bad \udc80 text") + "\n",
     [":2:", "surrogate"]),
    ("header-cr.csv", "te\rxt,label,lang,split\nhello,a,en,test\n", [":1:", "malformed CSV", "line break"]),
    ("field-cr.tsv", "text\tlabel\tlang\tsplit\nhel\rlo\ta\ten\ttest\n", [":2:", "malformed TSV"]),
    ("open-quote.csv", "text,label,lang,split\nok,a,en,test\n\"hello,a,en,test\nbye,b,en,test\n",
     [":3:", "runs on to line 4", "never closed"]),
])
def test_hostile_task_file(tmp_path, capsys, name, text, expect):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    line = cli_error(capsys, ["task", "--task", path])
    assert str(path) in line
    for piece in expect:
        assert piece in line


@pytest.mark.parametrize("data", [b"text,label\n\x00\x00,a\n", "text,label\nhi,a\n".encode("utf-16-le")])
def test_binary_task_file(tmp_path, capsys, data):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    line = cli_error(capsys, ["task", "--task", path])
    assert f"{path}:" in line and "NUL" in line


@pytest.fixture
def task_rows(tmp_path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text(_row() + "\n" + _row(text="another one", label="b") + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("spec, expect", [
    ('{\n  "path": "rows.jsonl",\n  "labels": ' + DEEP + "\n}", ["nested too deeply"]),
    ('{\n  "path": "rows.jsonl",\n\n  "seed": ' + BIG + "\n}", [":4:", "5000 digits"]),
    ('{\n  "path": "rows.jsonl",\n  "name": "bad \\udbff"\n}', [":3:", "surrogate"]),
    ('{"files": 5}', ["'files' must be a list"]),
    ('{"path": "rows.jsonl", "labels": 7}', ["'labels' must be a list of strings"]),
    ('{"path": "rows.jsonl", "text": 5}', ["'text' must be a string"]),
    ('{"path": "rows.jsonl", "strict_labels": "yes"}', ["'strict_labels' must be true or false"]),
    ('{"path": "rows.jsonl", "type": ["classification"]}', ["'type' must be a string"]),
    ('{"files": [{"path": 3}]}', ["files[0].path must be a string"]),
    ('{"files": ["rows.jsonl"]}', ["files[0] must be an object"]),
    ('{"files": [{"path": "rows.jsonl", "langs": "en"}]}', ["files[0]: unknown key 'langs'"]),
    ('{"name": "nothing"}', ["names no data"]),
    ('{"files": []}', ["names no data"]),
    ('{"format": "xling-task/1", "name": "t", "type": "classification", "labels": ["a"]}', ["without 'data'"]),
    ('{"format": "xling-task/1", "name": "t", "type": "classification", "labels": ["a"], "data": {"test": '
     '{"eng_Latn": [{"text": "x", "label": "0"}]}}}', ["field 'label' must be int"]),
    ('{"format": "xling-task/1", "name": "t", "type": "classification", "labels": ["a"], "data": {"test": '
     '{"eng_Latn": [{"txt": "x"}]}}}', ["unknown field 'txt'"]),
    ('[1, 2]', ["expected a JSON object"]),
])
def test_hostile_task_spec(tmp_path, capsys, task_rows, spec, expect):
    path = tmp_path / "spec.json"
    path.write_text(spec, encoding="utf-8")
    line = cli_error(capsys, ["task", "--task", path])
    assert str(path) in line and "task-option" not in line
    for piece in expect:
        assert piece in line


def test_task_spec_path_shorthand_and_undecodable_spec(tmp_path, capsys, task_rows):
    ok = tmp_path / "ok.json"
    ok.write_text('{"path": "rows.jsonl"}', encoding="utf-8")
    assert main(["task", "--task", str(ok)]) == 0
    assert "labels: a, b" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"path": "rows.jsonl",\n "name": "\xff\xfe"}')
    line = cli_error(capsys, ["task", "--task", bad])
    assert f"{bad}:2:" in line and "UTF-8" in line


def test_task_options_are_checked_by_name_and_type(capsys):
    line = cli_error(capsys, ["task", "--task-option", "trainsize=10"])
    assert "no option 'trainsize'" in line and "train_size" in line
    line = cli_error(capsys, ["task", "--task-option", "train_size=many"])
    assert "train_size must be an integer" in line


# ----------------------------------------------------------------------------- the results store


def _damaged(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (run_id TEXT)")
    con.executemany("INSERT INTO runs VALUES (?)", [("x" * 200,) for _ in range(500)])
    con.commit()
    con.close()
    data = bytearray(path.read_bytes())
    data[150:len(data) - 10] = b"\x17" * (len(data) - 160)
    path.write_bytes(bytes(data))
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"not a database " * 100)
    return path


def _foreign(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER, name TEXT)")
    con.commit()
    con.close()
    return path


def _other_app(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("make, expect", [
    (_garbage, "damaged or not an SQLite file"),
    (_damaged, "damaged or not an SQLite file"),
    (_foreign, "not written by xling (its table runs lacks column 'run_id')"),
    (_other_app, "not written by xling (it holds tables songs)"),
])
def test_unusable_store(tmp_path, capsys, make, expect):
    store = make(tmp_path / "results.sqlite")
    before = store.read_bytes()
    line = cli_error(capsys, ["predict", "--store", store])
    assert str(store) in line and expect in line and "--store none" in line
    # align checks the store before it reads the corpus (which here does not even exist)
    line = cli_error(capsys, ["align", "--data", tmp_path / "missing.tsv", "--store", store, "--quiet"])
    assert str(store) in line and expect in line
    assert store.read_bytes() == before  # nothing added to someone else's file


# ----------------------------------------------------------------------------- --model checks


def test_eval_checks_model_before_task(tmp_path, capsys):
    broken_task = tmp_path / "task.json"
    broken_task.write_text('{"path": "nowhere.jsonl"}', encoding="utf-8")
    line = cli_error(capsys, ["eval", "--model", tmp_path / "no-model", "--task", broken_task, "--store", "none"])
    assert "trained model not found" in line
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": ', encoding="utf-8")
    line = cli_error(capsys, ["eval", "--model", folder, "--task", broken_task, "--store", "none"])
    assert f"{folder}/config.json" in line and "cannot be read" in line
    (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    line = cli_error(capsys, ["eval", "--model", folder, "--task", broken_task, "--store", "none"])
    assert "not a task model" in line


@pytest.mark.parametrize("mark", ["xling_module.json", "adapter_config.json", "xling_sft.json"])
def test_module_folder_where_a_model_is_expected(tmp_path, capsys, mark):
    module = tmp_path / "de-module"
    module.mkdir()
    (module / mark).write_text("{}", encoding="utf-8")
    (tmp_path / "en.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "de.txt").write_text("eins\nzwei\n", encoding="utf-8")
    data = f"eng={tmp_path / 'en.txt'},deu={tmp_path / 'de.txt'}"
    for argv in (["align", "--model", module, "--data", data, "--store", "none", "--quiet", "--out", tmp_path / "o"],
                 ["vocab", "trim", "--model", module, "--langs", "de", "--out", tmp_path / "trimmed", "--corpus", data,
                  "--store", "none", "--quiet"]):
        line = cli_error(capsys, argv)
        assert f"{module} is a module ({mark})" in line
        assert "xling eval" in line and "xling compose" in line
    line = cli_error(capsys, ["eval", "--model", module, "--store", "none"])
    assert "module without a task head" in line


# ----------------------------------------------------------------------------- Ctrl-C


def _entry_command() -> list[str]:
    script = Path(sys.executable).with_name("xling")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "xling._entry"]


def test_console_script_is_the_interrupt_safe_entry():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["xling"] == "xling._entry:main"


def _signal_setup(tmp_path):
    """A corpus big enough to keep a command busy, the subprocess environment, and the interpreter's own
    start-up time: it cannot be intercepted by any package, so it is measured on this machine, under its
    present load, and signals are sent after it."""
    corpus = tmp_path / "big.jsonl"
    with corpus.open("w", encoding="utf-8") as f:
        for i in range(150_000):
            f.write(f'{{"eng": "sentence {i}", "deu": "Satz {i}"}}\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("XLING_DEBUG", None)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import re, sys"], check=True, env=env)
    return corpus, env, 2 * (time.perf_counter() - t)


def test_ctrl_c_at_any_moment(tmp_path):
    """SIGINT during start-up, imports and the run itself: exit 130, one line, no traceback."""
    corpus, env, startup = _signal_setup(tmp_path)
    cases = [(startup + 0.05, "corpus"), (startup + 0.4, "align"), (startup + 1.0, "corpus")]
    for delay, command in cases:
        argv = [command, "--data", str(corpus)] + (["--store", "none", "--out", str(tmp_path / "o")]
                                                  if command == "align" else [])
        proc = subprocess.Popen(_entry_command() + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        err = err.decode()
        assert proc.returncode == 130, (delay, command, err)
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == (
            "xling: interrupted (finished languages are cached; run again to resume)" if command == "align"
            else "xling: interrupted"), err


def test_sigterm_is_a_clean_exit_143(tmp_path):
    """``timeout`` and job schedulers send SIGTERM: the same clean way out as Ctrl-C (the output folder being
    written is removed), exit 143, one line, no traceback."""
    corpus, env, startup = _signal_setup(tmp_path)
    proc = subprocess.Popen(_entry_command() + ["align", "--data", str(corpus), "--store", "none", "--out",
                                                str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    time.sleep(startup + 1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("xling: interrupted"), err
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name], list(tmp_path.iterdir())


def test_interrupt_wording_in_process(monkeypatch, capsys):
    import xling.cli as cli
    import xling.cli.align as align_cli

    def interrupted(args):
        raise KeyboardInterrupt

    for command, resumes in (("metrics", False), ("align", True)):
        monkeypatch.setattr(align_cli, "cmd_metrics" if command == "metrics" else "cmd_align", interrupted)
        assert cli.main([command]) == 130
        err = capsys.readouterr().err.strip()
        assert err == ("xling: interrupted (finished languages are cached; run again to resume)" if resumes
                       else "xling: interrupted")


# ----------------------------------------------------------------------------- reports never run code from data


HOSTILE = "\"'><img src=x onerror=alert(1)><script>alert(2)</script><!--"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;"

#: Every tag and attribute the report templates themselves write.
TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "code", "div", "table", "tr",
                 "th", "td", "svg", "text", "rect", "line", "circle", "polyline", "polygon", "g", "script"}
TEMPLATE_ATTRS = {"lang", "charset", "class", "xmlns", "width", "height", "role", "aria-label", "x", "y", "font-size",
                  "font-weight", "text-anchor", "fill", "stroke", "stroke-dasharray", "x1", "y1", "x2", "y2", "cx", "cy",
                  "r", "points", "transform", "stroke-width", "fill-opacity", "data-s"}


def h(field: str) -> str:
    return f"{field}{HOSTILE}"


def assert_inert(report: str, fields: list[str]) -> None:
    """No markup but the template's; every hostile field is shown, escaped."""
    from html.parser import HTMLParser

    found: list[tuple[str, list[str]]] = []
    comments: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, [a for a, _ in attrs]))

        handle_startendtag = handle_starttag

        def handle_comment(self, data):
            comments.append(data)

    parser = Collect(convert_charrefs=True)
    parser.feed(report)
    parser.close()
    tags = {t for t, _ in found}
    attrs = {a for _, names in found for a in names}
    assert tags <= TEMPLATE_TAGS, tags - TEMPLATE_TAGS
    assert attrs <= TEMPLATE_ATTRS, attrs - TEMPLATE_ATTRS
    from xling.harness.html import SCRIPT_TAG

    assert report.count("<script") == report.count(SCRIPT_TAG) <= 1  # the template's own script, at most once
    rest = report.replace(SCRIPT_TAG, "")
    assert not comments and "<script" not in rest.lower() and "<img" not in rest.lower()
    for field in fields:
        assert f"{field}&quot;&#x27;&gt;{ESCAPED}" in report, field


def test_align_report_escapes_everything():
    from types import SimpleNamespace

    from xling.recipes.align.run import AlignResult
    from xling.harness.html import render_align_report

    langs = [h("lang1"), h("lang2")]
    rows = [{"model": h("model"), "corpus": h("corpus"), "lang": lang, "layer": layer, "pooling": h("pooling"),
             "metric": metric, "value": 0.1 * layer + 0.3 * i}
            for i, lang in enumerate(langs) for layer in (0, 1, 2) for metric in (h("metric"), "cka")]
    result = AlignResult(rows=rows, config=SimpleNamespace(metrics=[h("metric"), "cka"]), run_id=h("run"),
                         model=h("model"), corpus=h("corpus"), pivot=h("pivot"), langs=langs, n_sentences=3,
                         layers=[0, 1, 2], pooling=h("pooling"), timings={h("timing"): 1.0},
                         meta={"prefix": h("prefix")})
    assert_inert(render_align_report(result), ["lang1", "lang2", "model", "corpus", "pivot", "pooling", "metric",
                                               "run", "timing", "prefix"])


def test_eval_report_escapes_everything():
    from xling.recipes.eval.run import EvalResult, render_eval_report

    langs = [h("source"), h("tgt1"), h("tgt2"), h("tgt3")]
    rows = [{"model": h("model"), "task": h("task"), "lang": lang, "split": h("split"), "metric": metric,
             "value": 0.2 + 0.1 * i + (0.05 if metric == h("metric") else 0)}
            for i, lang in enumerate(langs) for metric in (h("metric"), h("metric2"))]
    result = EvalResult(
        rows=rows, run_id=h("run"), model=h("model"), base_model=h("base"), task=h("task"), task_type=h("type"),
        split=h("split"), source=langs[0], langs=langs, n_examples={lang: 5 for lang in langs},
        main_metric=h("metric"), timings={h("timing"): 1},
        meta={"model_fingerprint": h("fingerprint"), "task_fingerprint": h("taskfp"), "settings": {"t": h("template")},
              "train_info": {"method": h("method"), "language": h("trainlang")}, "dev_curve": [{h("curve"): h("step")}],
              "labels": [h("label")]})
    alignment = {"run_id": h("alignrun"), "corpus": h("aligncorpus"), "metric": h("alignmetric"),
                 "values": {lang: 0.3 + 0.1 * i for i, lang in enumerate(langs)}}
    report = render_eval_report(result, alignment)
    assert_inert(report, ["source", "tgt1", "tgt2", "tgt3", "model", "base", "task", "type", "split", "metric",
                          "metric2", "run", "timing", "fingerprint", "taskfp", "method", "trainlang", "curve", "step",
                          "alignrun", "aligncorpus", "alignmetric"])


def test_predict_report_escapes_everything():
    from xling.recipes.predict.run import PredictConfig, predict, render_predict_report

    langs = [h(f"lang{i}") for i in range(6)]
    alignment = {lang: {0: 0.1 * i, 1: 0.2 * i + 0.01 * (i % 2)} for i, lang in enumerate(langs)}
    scores = {lang: 0.3 + 0.08 * i + 0.01 * (i % 3) for i, lang in enumerate(langs[:5])}
    cfg = PredictConfig(out=None, store=None, n_boot=20, metric=h("metric"), align_metric=h("alignmetric"))
    result = predict(cfg, alignment=alignment, scores=scores)
    result.sources[h("source")] = h("sourcevalue")
    assert_inert(render_predict_report(result), [*[f"lang{i}" for i in range(6)], "metric", "alignmetric", "source"])


def test_transfer_report_escapes_everything():
    from types import SimpleNamespace

    from xling.recipes.transfer.run import TransferResult, render_report

    m = h("metric")
    conditions = [h("cond1"), h("cond2")]
    langs = [h("source"), h("target")]
    rows = [{"lang": lang, "condition": c, m: 0.5 + 0.1 * i, "n": 4} for i, c in enumerate(conditions) for lang in langs]
    summary = [{"condition": c, "description": h("what"), "method": h("method"), "reference": h("reference"),
                "delta": 0.1, "delta_lo": 0.0, "delta_hi": 0.2, f"source_{m}": 0.6, f"mean_target_{m}": 0.5}
               for c in conditions]
    modules = {h("lang:module"): {"path": h("folder"), "reused": False, "seconds": 1.0, "loss_before": h("loss"),
                                   "loss_after": 1.0, "sentences": 3, "dw_norm": 0.5}}
    result = TransferResult(rows=rows, summary=summary, source=langs[0], targets=langs[1:], conditions=conditions,
                            modules=modules, metric=m, run_id=h("run"),
                            timings={"modules_s": h("t1"), "modules_trained": 1, "eval_s": 2, "predicted": 3,
                                     "examples": 4, "total_s": 5},
                            config={"model": h("model"), "r": h("rank"), "alpha": 16, "add_lambda": 1.0,
                                    "swap": [1, 2, 3], "bootstrap": 10})
    report = render_report(result, SimpleNamespace(name=h("task")))
    assert_inert(report, ["metric", "cond1", "cond2", "source", "target", "what", "method", "reference",
                          "lang:module", "folder", "loss", "model", "rank", "task", "t1"])


# ----------------------------------------------------------------------------- say what went wrong


def test_eval_warns_when_a_language_gets_one_class(tiny_model_dirs, tmp_path, capsys, monkeypatch, one_thread):
    from test_train import tiny_task

    from xling.harness.training import train_task
    from xling.recipes.eval import run as ev

    task = tiny_task(n_train=8, n_dev=4, n_test=6)
    model = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "model", epochs=1, batch_size=8,
                       patience=0, progress=False)

    def predict(self, examples, progress):  # German collapses to one class; the others get the gold labels
        return [0 for _ in examples] if examples is task.data["test"]["deu_Latn"] else [e.label for e in examples]

    monkeypatch.setattr(ev._Model, "predict", predict)
    res = ev.evaluate(model=str(model), task=task, out=tmp_path / "eval", store=None, progress=False, cache=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xling: warning:")]
    assert warnings == [f"xling: warning: deu_Latn: the model predicts {task.labels[0]!r} for all 6 examples "
                        f"(one class everywhere: check the training, e.g. the learning rate or label balance)"]
    assert res.meta["warnings"] == {"deu_Latn": warnings[0].split("deu_Latn: ", 1)[1]}
    assert "<b>Warning</b>, deu_Latn: the model predicts" in (tmp_path / "eval" / "report.html").read_text()
    assert ev.one_class_warning("token-classification", ["O", "B-X"], [[0, 0], [0]]).startswith("the model predicts 'O'")
    assert "choice 1" in ev.one_class_warning("multiple-choice", ["0", "1"], [1, 1, 1])
    assert ev.one_class_warning("classification", ["a", "b"], [0, 1, 0]) is None
    assert ev.one_class_warning("classification", ["a", "b"], [1]) is None  # one example says nothing
    prompted = ev.one_class_warning("classification", ["a", "b"], [1, 1, 1, 1], gold=[0, 1, 1, 0], prompted=True)
    assert prompted == ("the model predicts 'b' for all 4 examples (one label everywhere: the prompt's label bias, "
                        "Zhao et al. 2021; the accuracy is that label's share, not skill); 2 of 4 gold labels are "
                        "that class")
    assert "position bias" in ev.one_class_warning("multiple-choice", ["0", "1"], [0, 0], prompted=True)


def test_eval_warns_when_a_language_gets_mostly_one_class(tiny_model_dirs, tmp_path, capsys, monkeypatch, one_thread):
    from test_train import tiny_task

    from xling.harness.training import train_task
    from xling.recipes.eval import run as ev

    task = tiny_task(n_train=8, n_dev=4, n_test=10)
    model = train_task(str(tiny_model_dirs["bert"]), task, out=tmp_path / "model", epochs=1, batch_size=8,
                       patience=0, progress=False)
    de = task.data["test"]["deu_Latn"]
    other = next(i for i in range(len(task.labels)) if i != 0)
    want = [0] * 9 + [other]  # 9 of 10 answers are class 0: the accuracy counts class 0's share of the gold labels

    def predict(self, examples, progress):
        return list(want) if examples is de else [e.label for e in examples]

    monkeypatch.setattr(ev._Model, "predict", predict)
    ev.evaluate(model=str(model), task=task, out=tmp_path / "eval", store=None, progress=False, cache=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xling: warning:")]
    n0 = sum(e.label == 0 for e in de)
    assert warnings == [f"xling: warning: deu_Latn: the model predicts {task.labels[0]!r} for 9 of 10 items (90%); "
                        f"{n0} of 10 gold labels are that class, so the accuracy mostly counts them"]


@pytest.mark.parametrize("case", ["scores", "alignment"])
def test_predict_explains_an_undefined_correlation(tmp_path, case):
    from xling.recipes.predict.run import PredictConfig, format_summary, predict

    langs = ["deu", "fra", "spa", "ita", "por"]
    if case == "scores":
        alignment = {lang: {0: 0.1 * i, 1: 0.2 * i} for i, lang in enumerate(langs)}
        scores = {lang: 0.5 for lang in langs}
        expect = "Pearson and Spearman undefined: all 5 task scores are equal (0.500)"
    else:
        alignment = {lang: {0: 0.4, 1: 0.4} for lang in langs}
        scores = {lang: 0.3 + 0.1 * i for i, lang in enumerate(langs)}
        expect = "Pearson and Spearman undefined: all 5 languages have the same alignment (0.400"
    res = predict(PredictConfig(out=tmp_path / "p", store=None, n_boot=20), alignment=alignment, scores=scores)
    assert f"note: {expect}" in format_summary(res)
    assert f"<b>Note</b>: {expect}" in (tmp_path / "p" / "report.html").read_text()
    varied = {lang: 0.3 + 0.1 * i + 0.02 * (i % 2) for i, lang in enumerate(langs)}
    ok = predict(PredictConfig(out=None, store=None, n_boot=20),
                 alignment={lang: {0: 0.1 * i, 1: 0.2 * i} for i, lang in enumerate(langs)}, scores=varied)
    assert "note:" not in format_summary(ok)


def test_undecodable_command_line_argument(capsys):
    # bytes that are not UTF-8 reach Python as lone surrogates (os.fsdecode)
    line = cli_error(capsys, ["corpus", "--langs", os.fsdecode(b"de\xff")])
    assert "command-line argument 'de\\udcff' is not valid UTF-8 text" in line


@pytest.mark.parametrize("content, expect", [(DEEP, "nested too deeply"), ("[1, 2]", "expected a JSON object"),
                                             (b"\x00\x01", "NUL")])
def test_hostile_train_info(tmp_path, capsys, content, expect):
    folder = tmp_path / "model"
    folder.mkdir()
    info = folder / "xling_train.json"
    info.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = cli_error(capsys, ["eval", "--model", folder, "--store", "none"])
    assert str(info) in line and expect in line


@pytest.mark.parametrize("name", ["xling_module.json", "adapter_config.json"])
def test_hostile_module_json_is_one_line(tmp_path, name, capsys):
    """Module metadata nested 100,000 deep or with a 5,000-digit integer: one line naming the file."""
    from xling.errors import XlingError
    from xling.modules.lora import LoraModule

    folder = tmp_path / "mod"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"")
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}', encoding="utf-8")
    for bad in ("[" * 100_000 + "]" * 100_000, '{"kind": ' + "9" * 5000 + "}"):
        (folder / name).write_text(bad, encoding="utf-8")
        with pytest.raises(XlingError, match=name.replace(".", r"\.")):
            LoraModule(folder)


def test_option_values_that_json_cannot_hold_are_one_line(capsys):
    from xling.cli import main

    for bad in ("9" * 5000, "[" * 100_000):
        assert main(["align", "--metric-option", f"xsim.k={bad}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("xling: error:") and "Traceback" not in err


# ----------------------------------------------------------------------------- flags a user can get wrong


@pytest.mark.parametrize("argv, expect", [
    (["lens", "--langs", ""], "--langs is empty"),
    (["knowledge", "--relations", ",,"], "--relations is empty"),
    (["edit", "--lang", ""], "--lang is empty"),
    (["eval", "--demos", "", "--model", "x"], "--demos is empty"),
    (["neurons", "--bootstrap", "-5"], "--bootstrap must be at least 1, got -5"),
    (["langid", "--train-fraction", "1.5"], "--train-fraction must be between"),
    (["train", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["transfer", "--task-lr", "-1"], "--task-lr must be between"),
    (["probe", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["eval", "--zero-shot", "--template", "{bogus}"], "--template names the field {bogus}"),
    (["vocab", "transplant", "--model", "m", "--tokenizer-from", "t", "--langs", "de"], "--langs names the languages of --data"),
    (["eval", "--zero-shot", "--template", "Text: {text"], "--template is not a prompt template"),
    (["eval", "--zero-shot", "--template", "{text.__class__}"], "--template names the field {text.__class__}"),
])
def test_bad_flag_values_are_one_line_before_any_work(capsys, argv, expect):
    """Empty lists never mean "the default" (which may be hours of work), numbers out of range and prompt
    templates that would fail inside str.format are refused at the edge."""
    assert expect in cli_error(capsys, argv)


def test_list_flags_keep_each_value_once():
    import argparse

    from xling.harness.config import add_flags
    from xling.recipes.lens.config import LensConfig

    parser = argparse.ArgumentParser()
    add_flags(parser, LensConfig)
    ns = parser.parse_args(["--langs", "de,es,de, es"])
    assert ns.langs == ["de", "es"]


@pytest.mark.parametrize("data", [b"eng\tdeu\nwater\tWasser\nfire\t\xff\xfe\n", b"\x8f\x00\x01binary"])
def test_lens_word_pairs_with_bad_bytes_are_one_line(tmp_path, capsys, tiny_causal_dirs, data):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(data)
    line = cli_error(capsys, ["lens", "--model", tiny_causal_dirs["llama"], "--langs", "de", "--pairs", pairs,
                              "--out", tmp_path / "out", "--store", "none"])
    assert str(pairs) in line and ("not valid UTF-8" in line or "NUL byte" in line)
    assert not (tmp_path / "out").exists()


def test_reading_a_store_never_turns_a_users_file_into_a_database(tmp_path, capsys):
    """An empty file of the user's given as --store is refused (SQLite would make it a database), and reading
    a store that does not exist creates nothing."""
    empty = tmp_path / "notes.tsv"
    empty.write_bytes(b"")
    assert "is an empty file that is not an SQLite store" in cli_error(
        capsys, ["consistency", "abc", "--store", empty, "--out", tmp_path / "o"])
    assert empty.read_bytes() == b"" and not (tmp_path / "o").exists()
    assert "is an empty file" in cli_error(capsys, ["runs", "--store", empty])
    assert empty.read_bytes() == b""
    missing = tmp_path / "none-yet.sqlite"
    assert "results store not found" in cli_error(capsys, ["runs", "--store", missing])
    assert not missing.exists()
    assert "results store not found" in cli_error(capsys, ["consistency", "abc", "--store", missing])
    assert not missing.exists()
