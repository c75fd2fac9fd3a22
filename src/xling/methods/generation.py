"""Scores of generated text against references, and its language fidelity, each with a bootstrap interval.

Pure functions: texts and language-identifier outputs in, numbers out (the harness runs the model and the
identifier, :mod:`xling.harness.generation`).

**Overlap with the reference**, through ``sacrebleu`` (Post 2018, "A Call for Clarity in Reporting BLEU Scores")
and its metric objects, so every number comes with sacrebleu's signature:

* ``chrf``: chrF (Popovic 2015), character 6-grams, beta 2, on sacrebleu's 0-100 scale;
* ``chrf++``: chrF++ (Popovic 2017), chrF plus word 1- and 2-grams;
* ``bleu``: BLEU (Papineni et al. 2002), corpus level, sacrebleu's defaults except the tokenizer for targets
  written without spaces between words (:func:`bleu_tokenizer`: ``zh`` for Chinese, ``char`` for Japanese; the
  signature records it). chrF needs no tokenizer and is the main metric.

**Language fidelity** (Marchisio et al. 2024, "Understanding and Mitigating Language Confusion in Large Language
Models"), from the detected language of each output (``None``: nothing detected, e.g. an empty output or
digits only):

* ``off_target_rate``: share of outputs whose detected language is not the expected one, over the outputs with a
  detected language (undetected outputs are left out of the denominator; ``n`` counts the ones in);
* ``line_pass_rate``: the line-level pass rate (LPR): share of outputs every non-empty line of which is detected
  as the expected language (lines with no detected language are ignored; an output none of whose lines has a
  detected language is left out). For one-line outputs (a translation stopped at the first newline) it equals
  ``1 - off_target_rate``; the two differ for multi-line generations.

**Per item** (for ``xling consistency`` and ``xling compare``): ``correct`` is 1 when the output is on target
(its detected language is the expected one) AND its sentence-level chrF is at least ``correct_chrf``
(:data:`CORRECT_CHRF`, 50 on the 0-100 scale: a usable translation; a copy of the source or an answer in the
wrong language scores far lower). ``accuracy`` is the share of correct items. Where the identifier does not know
the expected language, fidelity is empty and ``correct`` is the chrF condition alone.

**Intervals**: a 95% percentile bootstrap over items (Koehn 2004, "Statistical Significance Tests for Machine
Translation Evaluation"): one seeded draw of items (:class:`xling.methods.stats.Resampler`) serves every metric of a
set; corpus metrics are recomputed from the resampled sums of sacrebleu's own per-segment statistics (as sacrebleu's
paired bootstrap does), rates from the resampled items.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: The metrics of one set of generations, in report order.
METRICS = ("chrf", "chrf++", "bleu", "off_target_rate", "line_pass_rate", "accuracy")
#: The sentence chrF (0-100) at or above which an on-target output counts as correct.
CORRECT_CHRF = 50.0


def bleu_tokenizer(lang: str | None) -> str:
    """sacrebleu's tokenizer for BLEU in ``lang`` (``deu_Latn`` style): ``zh`` for Chinese, ``char`` for
    Japanese (no word spaces; sacrebleu's ``ja-mecab`` needs MeCab), else the default ``13a``."""
    base = (lang or "").split("_")[0]
    if base in ("zho", "cmn", "yue", "wuu"):
        return "zh"
    if base == "jpn":
        return "char"
    return "13a"


def metric_objects(target_lang: str | None = None) -> dict:
    """The sacrebleu metric objects of :data:`METRICS`' overlap metrics for outputs in ``target_lang``."""
    from sacrebleu.metrics import BLEU, CHRF

    return {"chrf": CHRF(), "chrf++": CHRF(word_order=2), "bleu": BLEU(tokenize=bleu_tokenizer(target_lang))}


def segment_stats(metric, hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """sacrebleu's per-segment sufficient statistics, ``(n, k)``; summed over rows they give the corpus score."""
    stats = metric._extract_corpus_statistics(list(hyps), [list(refs)])
    return np.asarray(stats, dtype=np.float64).reshape(len(hyps), -1)


def score_from_stats(metric, summed) -> float:
    """The corpus score of summed per-segment statistics (sacrebleu's own computation)."""
    return float(metric._compute_score_from_stats(np.asarray(summed, dtype=np.float64)).score)


def signature(metric) -> str:
    """sacrebleu's signature of a metric object that has scored something (``nrefs:1|case:mixed|...``)."""
    return str(metric.get_signature())


def sentence_chrf(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Sentence-level chrF (0-100) of each output against its reference (= ``CHRF().sentence_score``)."""
    metric = metric_objects()["chrf"]
    stats = segment_stats(metric, hyps, refs)
    return [score_from_stats(metric, row) for row in stats]


def fidelity(detected: Sequence[str | None], lines_detected: Sequence[Sequence[str | None]],
             expected: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per item: off target (1.0/0.0, NaN when nothing was detected) and line-level pass (1.0/0.0, NaN when no
    line has a detected language). All NaN when ``expected`` is None (a language the identifier does not know)."""
    n = len(detected)
    off, line = np.full(n, np.nan), np.full(n, np.nan)
    if expected is None:
        return off, line
    for i, (d, lines) in enumerate(zip(detected, lines_detected)):
        if d is not None:
            off[i] = float(d != expected)
        known = [x for x in lines if x is not None]
        if known:
            line[i] = float(all(x == expected for x in known))
    return off, line


def _rate(values: np.ndarray, idx=None):
    """NaN-skipping mean of ``values`` (per item), or of each resample ``values[idx]`` (rows)."""
    v = values if idx is None else values[idx]
    ok = ~np.isnan(v)
    count = ok.sum(axis=-1)
    total = np.where(ok, v, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def generation_scores(
    hyps: Sequence[str], refs: Sequence[str], *, target_lang: str | None = None,
    detected: Sequence[str | None] | None = None, lines_detected: Sequence[Sequence[str | None]] | None = None,
    expected: str | None = None, correct_chrf: float = CORRECT_CHRF, n_boot: int = 1000, seed: int = 0,
) -> dict:
    """Every metric of one set of generations (one language and direction) with its 95% bootstrap interval.

    ``detected`` / ``lines_detected``: the identifier's language of each output and of each of its non-empty
    lines, in the code space of ``expected`` (None: not detected). Without ``detected`` or with ``expected``
    None, the fidelity metrics are NaN. Returns ``{"rows": [{"metric", "value", "low", "high", "n"}],
    "sentence_chrf": [...], "correct": [0/1 ...], "signatures": {metric: sacrebleu signature}}``.
    """
    from xling.methods.stats import Resampler, defined_interval

    hyps, refs = [str(h) for h in hyps], [str(r) for r in refs]
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} outputs for {len(refs)} references")
    n = len(hyps)
    if detected is None:
        detected, lines_detected = [None] * n, [[] for _ in range(n)]
    elif lines_detected is None:
        lines_detected = [[d] for d in detected]
    if len(detected) != n or len(lines_detected) != n:
        raise ValueError("one detected language (and one list of line languages) per output is needed")
    objs = metric_objects(target_lang)
    stats = {name: segment_stats(m, hyps, refs) for name, m in objs.items()} if n else {}
    chrf_sent = [score_from_stats(objs["chrf"], row) for row in stats["chrf"]] if n else []
    off, line = fidelity(detected, lines_detected, expected)
    known = expected is not None
    correct = [int(c >= correct_chrf and (not known or o == 0.0)) for c, o in zip(chrf_sent, off)]
    idx = Resampler(seed).draw(n, n_boot) if n and n_boot > 0 else None
    rows = []
    for name in METRICS:
        if name in objs:
            if not n:
                value, boot, count = float("nan"), None, 0
            else:
                value = score_from_stats(objs[name], stats[name].sum(axis=0))
                boot = None if idx is None else [score_from_stats(objs[name], s) for s in stats[name][idx].sum(axis=1)]
                count = n
        else:
            per = {"off_target_rate": off, "line_pass_rate": line,
                   "accuracy": np.asarray(correct, dtype=np.float64)}[name]
            value = float(_rate(per)) if n else float("nan")
            boot = None if idx is None else _rate(per, idx)
            count = int((~np.isnan(per)).sum()) if n else 0
        lo, hi = defined_interval(boot) if boot is not None and count else (float("nan"), float("nan"))
        rows.append({"metric": name, "value": value, "low": lo, "high": hi, "n": count})
    sigs = {name: signature(m) for name, m in objs.items()} if n else {}
    return {"rows": rows, "sentence_chrf": chrf_sent, "correct": correct, "signatures": sigs}


__all__ = ["CORRECT_CHRF", "METRICS", "bleu_tokenizer", "fidelity", "generation_scores", "metric_objects",
           "score_from_stats", "segment_stats", "sentence_chrf", "signature"]
