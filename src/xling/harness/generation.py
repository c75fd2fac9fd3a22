"""Prompted generation's outputs, shared by ``xling eval`` on generation tasks: the language identifier, the
generation cache, the files, the results store's rows and the report.

* :class:`LanguageIdentifier`: a ``lingua`` detector (``lingua-language-detector``, offline models; Stahl,
  "Lingua") built once from the languages of a run plus English, xling's codes (``deu_Latn``) mapped to lingua's
  ISO 639-3 codes (a macrolanguage where lingua has no individual language: ``swh`` -> ``swa``, ``arb`` ->
  ``ara``, ``pes`` -> ``fas``). Languages lingua does not know get no fidelity metrics (one note names them).
* :class:`GenerationCache`: each (model, prompts, settings) set's generations, so an interrupted run resumes.
* :class:`GenerationResult` and its outputs under ``OUT``: ``generations.jsonl`` (one item a line: ``id, lang,
  direction, hypothesis, reference``, then ``source, target_lang, detected, sentence_chrf, correct, stop``),
  ``generation_scores.csv`` (tidy: ``lang, direction, metric, value, low, high, n``; chrF on sacrebleu's 0-100
  scale), ``predictions.csv`` (:mod:`xling.harness.consistency`), ``run.json`` (with sacrebleu's signatures) and
  ``report.html`` (chrF and the off-target rate per language and direction);
* the results store: an ``eval`` run with ``task_scores`` (``lang`` is :func:`xling.tasks.generation.unit_key`:
  ``deu_Latn:en-x``), ``item_scores`` (``correct`` as defined in :mod:`xling.methods.generation`) and
  ``predictions`` (each item's outcome, ``pass`` or ``fail``: :func:`prediction_record`), read by
  ``xling consistency`` and ``xling compare``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from xling.cache import ContentCache, JsonCodec, content_key
from xling.errors import XlingError

GEN_CACHE_VERSION = 1
#: Columns of ``generation_scores.csv``.
SCORE_COLUMNS = ["lang", "direction", "metric", "value", "low", "high", "n"]
#: Fields of each line of ``generations.jsonl``, in order.
GENERATION_FIELDS = ["id", "lang", "direction", "hypothesis", "reference", "source", "target_lang", "detected",
                     "sentence_chrf", "correct", "stop"]
#: The language lingua is always built with (the pivot of translations, and the usual confusion target).
ALWAYS = "eng_Latn"


# ----------------------------------------------------------------------------- the language identifier


def lingua_languages() -> set[str]:
    """ISO 639-3 codes (lower case) of every language the installed lingua knows."""
    from xling.deps import require

    lingua = require("lingua", "language identification")
    return {lang.iso_code_639_3.name.lower() for lang in lingua.Language.all()}


def lingua_code(lang: str, known: set[str]) -> str | None:
    """lingua's ISO 639-3 code for xling's ``lang`` (``deu_Latn`` -> ``deu``): the language itself, else its
    macrolanguage (``swh`` -> ``swa``); None when lingua knows neither."""
    from xling.data.langcodes import _macro_key, normalize_lang

    try:
        norm = normalize_lang(lang)
    except XlingError:
        return None
    base = norm.split("_")[0]
    if base in known:
        return base
    macro = _macro_key(norm).split("_")[0]
    return macro if macro in known else None


class LanguageIdentifier:
    """lingua's detector over ``langs`` plus English, built once; detections come back as lingua's ISO 639-3
    codes (the code space of :meth:`expected`), None where nothing is detected."""

    def __init__(self, langs: Sequence[str]):
        from xling.deps import require

        lingua = require("lingua", "language identification")
        if not hasattr(lingua, "LanguageDetectorBuilder"):
            raise XlingError(f"the installed 'lingua' module ({getattr(lingua, '__file__', '?')}) is not "
                             f"lingua-language-detector: pip install 'lingua-language-detector>=2.0'")
        known = lingua_languages()
        self.codes = {lang: lingua_code(lang, known) for lang in dict.fromkeys([*langs, ALWAYS])}
        self.unknown = [lang for lang, c in self.codes.items() if c is None]
        isos = sorted({c for c in self.codes.values() if c})
        self.isos = isos
        self.detector = lingua.LanguageDetectorBuilder.from_iso_codes_639_3(
            *[lingua.IsoCode639_3.from_str(c) for c in isos]).build()

    def expected(self, lang: str) -> str | None:
        """The code a correct output in ``lang`` is detected as (None: lingua does not know ``lang``)."""
        return self.codes.get(lang)

    def detect(self, texts: Sequence[str]) -> list[str | None]:
        """The detected language of each text (None: none detected, e.g. no letters)."""
        if not texts:
            return []
        found = self.detector.detect_languages_in_parallel_of([str(t) for t in texts])
        return [None if x is None else x.iso_code_639_3.name.lower() for x in found]

    def detect_lines(self, texts: Sequence[str]) -> list[list[str | None]]:
        """The detected language of each non-empty line of each text."""
        lines = [[ln for ln in str(t).splitlines() if ln.strip()] for t in texts]
        flat = self.detect([ln for ls in lines for ln in ls])
        out, i = [], 0
        for ls in lines:
            out.append(flat[i:i + len(ls)])
            i += len(ls)
        return out

    def describe(self) -> str:
        return f"lingua-language-detector over {', '.join(self.isos)} (ISO 639-3)"


# ----------------------------------------------------------------------------- cache


class GenerationCache(ContentCache):
    """Generations per (model, task, language, direction, prompts, settings): ``{text, reason, tokens}`` per item,
    JSON files under the cache folder ``generations`` (:class:`~xling.cache.JsonCodec`, checksummed)."""

    def __init__(self, root: str | Path | None = None):
        from xling.io import cache_dir

        super().__init__(root if root is not None else cache_dir("generations"),
                         JsonCodec("generations", "generation list"), GEN_CACHE_VERSION, name="generation")

    @staticmethod
    def key(spec: dict) -> str:
        return content_key({"v": GEN_CACHE_VERSION, **spec})


def generations_problem(n: int, value) -> str | None:
    """Why a cached value cannot be ``n`` items' generations, or None."""
    if not isinstance(value, list) or len(value) != n:
        return f"holds {len(value) if isinstance(value, list) else 'no'} generations for {n} items"
    for i, g in enumerate(value):
        if not isinstance(g, dict) or not isinstance(g.get("text"), str) or g.get("reason") not in ("eos", "stop",
                                                                                                   "length"):
            return f"has an unreadable generation for item {i}"
    return None


# ----------------------------------------------------------------------------- the result


@dataclass
class GenerationResult:
    """One generation run: per (language, direction) unit its scores and items."""

    run_id: str
    model: str
    task: str
    split: str
    source: str
    langs: list[str]
    units: list[dict]                     # {lang, direction, key, target_lang, n, rows, signatures}
    records: list[dict]                   # generations.jsonl lines
    rows: list[dict]                      # generation_scores.csv rows
    timings: dict
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, dict] = field(default_factory=dict)  # unit key -> prediction record
    kind: str = "generation"
    main_metric: str = "chrf"
    task_type: str = "generation"
    base_model: str | None = None

    def value(self, lang: str, direction: str, metric: str = "chrf") -> float:
        for r in self.rows:
            if r["lang"] == lang and r["direction"] == direction and r["metric"] == metric:
                return r["value"]
        raise KeyError((lang, direction, metric))

    def summary(self) -> str:
        return format_generation_summary(self)


def prediction_record(items: Sequence, correct: Sequence[int]) -> dict:
    """The ``predictions`` record of one unit (:mod:`xling.harness.consistency`): each item's id and its outcome as
    the prediction, ``pass`` (correct: on target with sentence chrF at the threshold or above) or ``fail``, against
    the label ``pass``. So ``xling consistency``'s agreement and kappa say whether the same items succeed in two
    languages or directions (exact output texts, in different languages, would almost never agree), and KT is
    P(pass in b | pass in a). The texts are in ``generations.jsonl`` under the same ids. ``ids_hash`` digests
    (id, source, reference): runs with other prompts or settings on the same items pair in ``xling compare``."""
    from xling.harness.store import items_hash

    ids = [str(it.id) for it in items]
    positional = sum(i.startswith("#") for i in ids)
    return {"item_ids": ids, "predictions": ["pass" if c else "fail" for c in correct],
            "labels": ["pass"] * len(ids), "correct": [int(c) for c in correct],
            "id_source": "task" if not positional else ("position" if positional == len(ids) else "mixed"),
            "ids_hash": items_hash(f"{it.id}\t{it.source}\t{it.reference}" for it in items)}


# ----------------------------------------------------------------------------- outputs


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def generations_jsonl(records: Sequence[dict]) -> str:
    """``generations.jsonl``: one JSON object a line (JSON escapes every control character)."""
    return "".join(json.dumps({k: r.get(k) for k in GENERATION_FIELDS}, ensure_ascii=False) + "\n" for r in records)


def scores_csv(rows: Sequence[dict]) -> str:
    from xling.harness.outputs import rows_to_csv

    return rows_to_csv([{k: (r[k] if k not in ("value", "low", "high") or _finite(r[k]) else "") for k in SCORE_COLUMNS}
                        for r in rows], SCORE_COLUMNS)


def run_record(result: GenerationResult, cfg=None) -> dict:
    return {
        "run_id": result.run_id, "command": "eval", "model": result.model, "base_model": result.base_model,
        "task": result.task, "task_type": "generation", "split": result.split, "source": result.source,
        "langs": result.langs, "units": [{k: u[k] for k in ("lang", "direction", "key", "target_lang", "n")}
                                         for u in result.units],
        "main_metric": result.main_metric, "timings": result.timings, "notes": result.notes,
        "signatures": {u["key"]: u["signatures"] for u in result.units},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()} if cfg else None,
        **result.meta,
    }


def write_generation_outputs(result: GenerationResult, out: Path, cfg=None) -> dict[str, Path]:
    """Every file of a generation run into ``out`` (a folder being built aside: :func:`xling.io.output_folder`)."""
    from xling.harness.consistency import predictions_csv, predictions_rows
    from xling.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = {"generations": out / "generations.jsonl", "scores": out / "generation_scores.csv",
             "predictions": out / "predictions.csv", "run": out / "run.json", "report": out / "report.html"}
    atomic_write_text(paths["generations"], generations_jsonl(result.records))
    atomic_write_text(paths["scores"], scores_csv(result.rows))
    atomic_write_text(paths["predictions"], predictions_csv(predictions_rows(result.predictions)))
    atomic_write_text(paths["run"], json.dumps(run_record(result, cfg), indent=2, default=str))
    atomic_write_text(paths["report"], render_generation_report(result))
    return paths


def save_generation_to_store(result: GenerationResult, path: Path, cfg=None) -> None:
    """The run into the results store: ``task_scores`` per unit and metric, ``item_scores`` and ``predictions``."""
    from xling import __version__
    from xling.harness.consistency import store_rows
    from xling.harness.store import ResultsStore, item_row

    scores = [{"model": result.model, "task": result.task, "lang": u["key"], "split": result.split,
               "metric": r["metric"], "value": float(r["value"])}
              for u in result.units for r in u["rows"] if _finite(r["value"])]
    items = [item_row(result.model, result.task, key, result.split, rec["ids_hash"], rec["correct"])
             for key, rec in result.predictions.items() if rec["item_ids"]]
    ResultsStore(path).add_run(
        {"run_id": result.run_id, "command": "eval", "model": result.model,
         "model_fingerprint": result.meta.get("model_fingerprint"), "corpus": f"task:{result.task}",
         "corpus_fingerprint": result.meta.get("task_fingerprint"), "config": run_record(result, cfg),
         "started": result.meta.get("started"), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "xling_version": __version__},
        task_scores=scores, items=items,
        predictions=store_rows(result.model, result.task, result.split,
                               {k: v for k, v in result.predictions.items() if v["item_ids"]}),
    )


# ----------------------------------------------------------------------------- summary and report


def _ci(r: dict | None, digits: int = 1, scale: float = 1.0) -> str:
    if r is None or not _finite(r["value"]):
        return "-"
    s = f"{r['value'] * scale:.{digits}f}"
    if _finite(r["low"]) and _finite(r["high"]):
        s += f" [{r['low'] * scale:.{digits}f}, {r['high'] * scale:.{digits}f}]"
    return s


def _val(r: dict | None, digits: int = 1, scale: float = 1.0) -> str:
    return f"{r['value'] * scale:.{digits}f}" if r is not None and _finite(r["value"]) else "-"


def _get(unit: dict, metric: str) -> dict | None:
    return next((r for r in unit["rows"] if r["metric"] == metric), None)


def format_generation_summary(result: GenerationResult) -> str:
    """The terminal table: per language and direction, chrF, chrF++ and BLEU (0-100), off-target rate and
    line-level pass rate (%), each with its 95% interval."""
    from xling.textsafe import term

    head = f"{'lang':10s} {'dir':5s} {'n':>4s}  {'chrF':>18s}  {'chrF++':>6s}  {'BLEU':>5s}  {'off-target %':>20s}  " \
           f"{'LPR %':>6s}"
    lines = [f"{result.task} on {term(result.model)} ({result.split} split, greedy, "
             f"{result.meta.get('settings', {}).get('shots', '?')}-shot); 95% bootstrap intervals over items", head]
    for u in result.units:
        lines.append(f"{term(u['lang']):10s} {u['direction']:5s} {u['n']:>4d}  {_ci(_get(u, 'chrf')):>18s}  "
                     f"{_val(_get(u, 'chrf++')):>6s}  {_val(_get(u, 'bleu')):>5s}  "
                     f"{_ci(_get(u, 'off_target_rate'), 1, 100.0):>20s}  "
                     f"{_val(_get(u, 'line_pass_rate'), 1, 100.0):>6s}")
    for note in result.notes:
        lines.append(f"note: {term(note)}")
    return "\n".join(lines)


def render_generation_report(result: GenerationResult) -> str:
    """``report.html``: the headline, chrF and the off-target rate per language and direction (with intervals),
    every metric, the prompts' settings and sacrebleu's signatures."""
    from xling.harness.html import display_lang, esc, fmt, headline_html, page, plural, table_html

    body = [f"<h1>Prompted generation: {esc(result.task)}</h1>"]
    chrf = [(u, _get(u, "chrf")) for u in result.units]
    by_dir: dict[str, list[float]] = {}
    for u, r in chrf:
        if r is not None and _finite(r["value"]):
            by_dir.setdefault(u["direction"], []).append(r["value"])
    head = [f"Model <b>{esc(result.model)}</b>, {esc(result.split)} split, greedy decoding, "
            f"{esc(result.meta.get('settings', {}).get('shots', '?'))}-shot prompts; "
            f"{esc(plural(len(result.units), 'language and direction', 'languages and directions'))}."]
    for d, vals in by_dir.items():
        head.append(f"Mean chrF {esc(d)} over {esc(plural(len(vals), 'language'))}: "
                    f"<b>{esc(fmt(sum(vals) / len(vals), 1))}"
                    f"</b> (sacrebleu, 0-100).")
    off = [(u, _get(u, "off_target_rate")) for u in result.units]
    worst = max((x for x in off if x[1] is not None and _finite(x[1]["value"])), key=lambda x: x[1]["value"],
                default=None)
    if worst is not None and worst[1]["value"] > 0:
        head.append(f"Highest off-target rate: {esc(display_lang(worst[0]['lang']))} {esc(worst[0]['direction'])}, "
                    f"<b>{esc(fmt(100 * worst[1]['value'], 1))}%</b> of the outputs in another language.")
    body.append(headline_html(head))
    for note in result.notes:
        body.append(f'<p class="note">{esc(note)}</p>')
    body.append("<h2>chrF and off-target rate per language and direction</h2>")
    rows = []
    for u in result.units:
        c, o = _get(u, "chrf"), _get(u, "off_target_rate")
        rows.append([u["lang"], display_lang(u["lang"]), u["direction"], u["n"], _ci(c), _ci(o, 1, 100.0)])
    body.append(table_html(["lang", "name", "direction", "n", "chrF [95% CI]", "off-target % [95% CI]"], rows,
                           left_cols=3, sortable=True))
    body.append('<p class="muted">95% percentile bootstrap intervals over items. The off-target rate counts outputs '
                'whose detected language is not the expected one, over the outputs with a detected language; there is '
                'no chance level for generation.</p>')
    body.append("<h2>Every metric</h2>")
    names = {"chrf": "chrF", "chrf++": "chrF++", "bleu": "BLEU", "off_target_rate": "off-target %",
             "line_pass_rate": "line-level pass %", "accuracy": "correct %"}
    pct = {"off_target_rate", "line_pass_rate", "accuracy"}
    metrics = [m for m in names if any(_get(u, m) is not None for u in result.units)]
    body.append(table_html(["lang", "direction", *[names[m] for m in metrics]],
                           [[u["lang"], u["direction"],
                             *[_ci(_get(u, m), 1, 100.0 if m in pct else 1.0) for m in metrics]]
                            for u in result.units], left_cols=2, sortable=True))
    settings = result.meta.get("settings") or {}
    body.append(f"<p class=\"muted\">Correct (for xling consistency and compare): on target and sentence chrF &gt;= "
                f"{esc(fmt(settings.get('correct_chrf'), 1))}. Line-level pass rate: Marchisio et al. 2024. Language "
                f"identifier: {esc(result.meta.get('identifier', ''))}.</p>")
    body.append("<h2>Settings and signatures</h2>")
    body.append(table_html(["setting", "value"], [[k, json.dumps(v, ensure_ascii=False)] for k, v in settings.items()],
                           left_cols=2))
    sigs = sorted({(m, s) for u in result.units for m, s in u["signatures"].items()})
    body.append(table_html(["metric", "sacrebleu signature"], [[m, s] for m, s in sigs], left_cols=2))
    return page(f"xling eval: {result.task}", "".join(body), script=True)


__all__ = ["GENERATION_FIELDS", "GenerationCache", "GenerationResult", "LanguageIdentifier", "SCORE_COLUMNS",
           "format_generation_summary", "generations_jsonl", "generations_problem", "lingua_code",
           "prediction_record", "render_generation_report", "run_record", "save_generation_to_store", "scores_csv",
           "write_generation_outputs"]
