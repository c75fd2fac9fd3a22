"""``xling compare``: runs of the results store side by side (pure logic and rendering, no argparse).

Two kinds of comparison:

* **align runs on one corpus** (two models, a base and a trimmed model, a
  centred and a plain run): per-layer curves of each run at relative depth, each
  language's best layer and mean over layers side by side, and the difference to
  the first run;
* **task runs on one task** (``eval`` runs, and each condition of ``transfer``
  runs): per-language scores side by side and the difference to the first series,
  over the target languages (the source language is left out of the means).

Differences come with a 95% interval, labelled with how it was drawn. Where both
series carry per-item correctness in the store (``item_scores``: eval and transfer
runs of classification and multiple-choice tasks) for the same items in the same
order in every target language, and the metric is accuracy, it is a **paired
bootstrap over items**: per language the same item indices are drawn for both
series, and the overall difference is the mean over languages
(:func:`xling.methods.stats.bootstrap_study`); each language gets its own paired
interval too. Otherwise (older runs, token tasks, other metrics, different items)
it falls back to a percentile **bootstrap over languages**, with a note saying why:
that interval says how much the mean difference depends on which languages were
chosen, not how noisy each language's test set is.

Align runs are compared like with like: on the languages every run has, on the
layers at common relative depths (one model: the hidden states every run scored;
different depths: the relative depths of the shallowest run, each other run at its
nearest layer), and only when they scored the same sentences (the digest their
run record keeps; ``allow_different_data`` compares anyway). A note says what was
left out; runs too old to record their sentences or depth get a note saying what
was assumed.

Runs with nothing in common (an align run and an eval run, align runs on different
corpora, task runs on different tasks), unknown run ids and fewer than two runs are
refused with one line (:class:`~xling.errors.XlingError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xling.errors import XlingError
from xling.methods.stats import bootstrap_mean_diff, bootstrap_study
from xling.recipes.compare.config import DEFAULT_OUT  # noqa: F401

GROUPS = {"align": "align", "eval": "task", "transfer": "task"}
CI_METHOD = "95% percentile bootstrap over languages"
CI_ITEMS = ("95% paired bootstrap over items (per language the same items resampled for both series; the overall "
            "difference is the mean over languages)")
BY_LANGS = "bootstrap over languages"
BY_ITEMS = "paired bootstrap over items"
_MEANS = {BY_ITEMS: "A paired bootstrap over items shows how much the difference depends on the test items drawn.",
          BY_LANGS: "A bootstrap over languages shows how much the mean difference depends on the choice of "
                    "languages, not the test-set noise within each language."}


@dataclass
class Series:
    """One column of the comparison: a run (or one condition of a transfer run)."""

    label: str
    run_id: str
    command: str
    model: str
    values: dict[str, float]                      # lang -> score (align: mean over layers)
    best: dict[str, tuple[int, float]] = field(default_factory=dict)   # align: lang -> (layer, value)
    curve: list[tuple[float, float]] = field(default_factory=list)     # align: (relative depth, mean over langs)
    layers: int = 0
    items: dict[str, dict] = field(default_factory=dict)  # task: lang -> item_scores row (ids_hash, n, correct)


@dataclass
class CompareResult:
    kind: str                 # "align" or "task"
    what: str                 # the shared corpus or task
    metric: str
    series: list[Series]
    langs: list[str]          # languages every series has
    source: str | None
    diffs: list[dict]         # per series after the first: quantity, mean, lo, hi, n, note, method, per_lang
    lower_is_better: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> Series:
        return self.series[0]

    def targets(self) -> list[str]:
        return [lang for lang in self.langs if lang != self.source]


# ----------------------------------------------------------------------------- reading the store


def resolve_runs(store, ids: list[str]) -> list[dict]:
    """Store runs for ids or unambiguous id prefixes, in the order given (duplicates dropped)."""
    ids = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))
    if len(ids) < 2:
        raise XlingError(f"compare needs at least 2 run ids, got {len(ids)} (xling runs lists them)")
    runs = store.runs()
    out, seen = [], set()
    for rid in ids:
        exact = [r for r in runs if r["run_id"] == rid]
        hits = exact or [r for r in runs if r["run_id"].startswith(rid)]
        if not hits:
            raise XlingError(f"unknown run id {rid!r} in {store.path} (xling runs --store {store.path} lists them)")
        if len(hits) > 1:
            raise XlingError(f"run id prefix {rid!r} is ambiguous: {', '.join(r['run_id'] for r in hits[:5])}")
        if hits[0]["run_id"] not in seen:
            seen.add(hits[0]["run_id"])
            out.append(hits[0])
    if len(out) < 2:
        raise XlingError("compare needs at least 2 different runs; the ids given name one run")
    return out


def _task_of(run: dict) -> str:
    if run["command"] == "transfer":
        return str((run.get("config") or {}).get("task") or run.get("corpus") or "?")
    corpus = str(run.get("corpus") or "")
    return corpus[5:] if corpus.startswith("task:") else corpus


def _short(run_id: str) -> str:
    return run_id[:6]


def _same_data(runs: list[dict], allow_different_data: bool) -> list[str]:
    """Refuse align runs that scored different sentences (unless allowed); notes on what could not be checked."""
    confs = [r.get("config") or {} for r in runs]
    digests = [c.get("sentences_digest") for c in confs]
    counts = [c.get("n_sentences") for c in confs]
    said = ", ".join(f"{_short(r['run_id'])}: {n if n else '?'} sentences" for r, n in zip(runs, counts))
    if all(digests):
        differ = len(set(digests)) > 1
    else:  # made before runs recorded which sentences they scored: only the counts can be checked
        differ = len({n for n in counts if n}) > 1
    notes = []
    if differ:
        if not allow_different_data:
            raise XlingError(f"the align runs scored different sentences of the corpus ({said}); their scores are not "
                             "comparable (pass --allow-different-data to compare them anyway)")
        notes.append(f"the runs scored different sentences ({said}); compared anyway (--allow-different-data)")
    elif not all(digests):
        old = [_short(r["run_id"]) for r, d in zip(runs, digests) if not d]
        notes.append(f"run{'s' if len(old) > 1 else ''} {', '.join(old)} recorded no sentence ids (an older xling): "
                     f"assumed to score the same sentences ({said})")
    return notes


def _match_layers(runs: list[dict], layer_sets: list[list[int]], labels: list[str]) -> tuple[list[list[int]], str | None]:
    """The layers each run is compared on (one list per run, aligned point by point) and a note on what was dropped.

    One model (same fingerprint, or the same name where no fingerprint is recorded): the hidden states every run
    has. Different models: the relative depths (layer / (hidden states - 1)) of the run with the fewest layers,
    each other run at its nearest layer.
    """
    prints = [r.get("model_fingerprint") for r in runs]
    names = [r.get("model") for r in runs]
    same_model = bool(len(set(prints)) == 1 and prints[0]) or (not any(prints) and len(set(names)) == 1)
    hidden = {(r.get("config") or {}).get("num_hidden_states") for r in runs} - {None}
    if same_model or (all(ls == layer_sets[0] for ls in layer_sets) and len(hidden) <= 1):
        common = sorted(set.intersection(*(set(ls) for ls in layer_sets)))
        if not common:
            raise XlingError("runs have nothing in common: no hidden state is scored in every run")
        dropped = [f"{lab}: {', '.join(map(str, sorted(set(ls) - set(common))))}"
                   for lab, ls in zip(labels, layer_sets) if set(ls) - set(common)]
        note = (f"compared on the {len(common)} hidden states every run has ({common[0]}..{common[-1]}); left out "
                f"{'; '.join(dropped)}") if dropped else None
        return [list(common) for _ in runs], note
    depths, guessed = [], []
    for r, ls, lab in zip(runs, layer_sets, labels):
        n = (r.get("config") or {}).get("num_hidden_states")
        if not n:
            guessed.append(lab)
        depths.append((int(n) - 1) if n else (max(ls) or 1))
    ref = min(range(len(runs)), key=lambda i: len(layer_sets[i]))
    points = [k / depths[ref] for k in layer_sets[ref]]
    chosen, gap = [], 0.0
    for ls, d in zip(layer_sets, depths):
        pick = [min(ls, key=lambda k: (abs(k / d - p), k)) for p in points]
        gap = max([gap] + [abs(k / d - p) for k, p in zip(pick, points)])
        chosen.append(pick)
    if gap < 1e-9 and all(len(ls) == len(points) for ls in layer_sets):
        return chosen, None
    sizes = " vs ".join(str(d + 1) for d in depths)
    how = "the same relative depth" if gap < 1e-9 else f"each run's nearest layer (largest depth gap {gap:.2f})"
    note = (f"different depths ({sizes} hidden states): compared at the {len(points)} relative depths of "
            f"{labels[ref]}, {how}; other layers left out")
    if guessed:
        note += f" (depth of {', '.join(guessed)} taken as its last scored layer: not recorded)"
    return chosen, note


def _align_series(store, runs: list[dict], metric: str | None,
                  allow_different_data: bool = False) -> tuple[list[Series], str, bool, list[str]]:
    """One series per align run, compared like with like: the same sentences, the languages every run has, the
    layers at common relative depths (:func:`_match_layers`); notes say what was left out."""
    from xling.methods.metrics import lower_is_better as _lower_is_better

    rows_by = {r["run_id"]: store.alignment(r["run_id"]) for r in runs}
    for r in runs:
        if not rows_by[r["run_id"]]:
            raise XlingError(f"align run {r['run_id']} has no alignment rows in the store")
    common = set.intersection(*({x["metric"] for x in rows} for rows in rows_by.values()))
    if metric is None:
        metric = "mexa" if "mexa" in common else (sorted(common)[0] if common else None)
    if metric is None or metric not in common:
        have = ", ".join(sorted(common)) or "none"
        raise XlingError(f"metric {metric!r} is not in every run (metrics all runs have: {have})")
    notes = _same_data(runs, allow_different_data)
    lower = _lower_is_better(metric)
    pick = min if lower else max
    models = [r.get("model") or "?" for r in runs]
    labels = []
    for r in runs:
        label = r.get("model") or "?"
        labels.append(f"{label} ({_short(r['run_id'])})" if models.count(label) > 1 else label)
    pers = []
    for r in runs:
        per: dict[str, dict[int, float]] = {}
        for x in rows_by[r["run_id"]]:
            if x["metric"] == metric:
                per.setdefault(x["lang"], {})[int(x["layer"])] = float(x["value"])
        pers.append(per)
    langs = set.intersection(*(set(p) for p in pers)) or set.union(*(set(p) for p in pers))
    layer_sets = [sorted({k for d in per.values() for k in d}) for per in pers]
    chosen, note = _match_layers(runs, layer_sets, labels)
    if note:
        notes.append(note)
    series = []
    for r, per, layers, sel, label in zip(runs, pers, layer_sets, chosen, labels):
        n = max(layers) or 1
        curve = []
        for layer in layers:  # the whole curve, over the languages every run has
            v = [d[layer] for lang, d in per.items() if lang in langs and layer in d]
            if v:
                curve.append((layer / n, sum(v) / len(v)))
        best, values = {}, {}
        for lang, d in per.items():
            on = {k: d[k] for k in dict.fromkeys(sel) if k in d}
            if not on:
                continue
            b = pick(on, key=lambda k: on[k])
            best[lang] = (b, on[b])
            values[lang] = sum(on.values()) / len(on)
        series.append(Series(label=label, run_id=r["run_id"], command="align", model=r.get("model") or "?",
                             values=values, best=best, curve=curve, layers=len(layers)))
    return series, metric, lower, notes


def _task_series(store, runs: list[dict], metric: str | None) -> tuple[list[Series], str]:
    raw, items = [], []
    for r in runs:
        conf = r.get("config") or {}
        rows = store.task_scores(r["run_id"])
        item_rows = store.items(r["run_id"])
        if r["command"] == "eval":
            split = conf.get("split") or "test"
            raw.append((r, r.get("model") or "?", [x for x in rows if x["split"] == split], conf.get("main_metric")))
            items.append({x["lang"]: x for x in item_rows if x["split"] == split})
        else:
            conds = list(dict.fromkeys(x["model"] for x in rows))
            for c in conds:
                name = c.split(":", 1)[1] if c.startswith("transfer:") else c
                raw.append((r, name, [x for x in rows if x["model"] == c], None))
                items.append({x["lang"]: x for x in item_rows if x["model"] == c and x["split"] == "test"})
    metrics = [set(x["metric"] for x in rows) for _, _, rows, _ in raw]
    if not metrics or not all(metrics):
        raise XlingError("a task run has no scores in the store")
    common = set.intersection(*metrics)
    if metric is None:
        wanted = [m for _, _, _, m in raw if m] + ["accuracy", "entity_f1"]
        metric = next((m for m in wanted if m in common), sorted(common)[0] if common else None)
    if metric is None or metric not in common:
        have = ", ".join(sorted(common)) or "none"
        raise XlingError(f"metric {metric!r} is not in every run (metrics all runs have: {have})")
    labels = [name for _, name, _, _ in raw]
    series = []
    for (r, name, rows, _), its in zip(raw, items):
        label = name if labels.count(name) == 1 else f"{name} ({_short(r['run_id'])})"
        series.append(Series(label=label, run_id=r["run_id"], command=r["command"], model=r.get("model") or "?",
                             values={x["lang"]: float(x["value"]) for x in rows if x["metric"] == metric}, items=its))
    return series, metric


def _correct(s: Series, lang: str) -> list[int]:
    return [int(c) for c in s.items[lang]["correct"]]


def _unpaired(ref: Series, s: Series, lang: str, metric: str) -> str | None:
    """Why ``s`` and ``ref`` cannot be paired over items in ``lang`` (None: they can)."""
    a, b = ref.items.get(lang), s.items.get(lang)
    if a is None or b is None:
        return "no per-item results in the store"
    if a["ids_hash"] != b["ids_hash"] or a["n"] != b["n"]:
        return "the runs scored different items (ids differ)"
    if not a["n"]:
        return "no items"
    if metric != "accuracy":
        return f"{metric} is not a mean over items"
    for x in (ref, s):
        c = x.items[lang]["correct"]
        if abs(c.count("1") / len(c) - x.values[lang]) > 1e-6:
            return f"the per-item results of {x.label} do not match its score"
    return None


def paired_items(ref: Series, s: Series, langs: list[str], reps: int, seed: int) -> dict:
    """Paired bootstrap over items of ``s - ref`` on ``langs`` (every one paired): overall and per language."""
    st = bootstrap_study({"ref": [_correct(ref, lang) for lang in langs], "s": [_correct(s, lang) for lang in langs]},
                         "ref", None, reps, seed)["s"]
    per = {lang: {"delta": st["lang_delta"][j], "lo": st["lang_lo"][j], "hi": st["lang_hi"][j],
                  "n": ref.items[lang]["n"]} for j, lang in enumerate(langs)}
    return {"mean": st["delta"], "lo": st["delta_lo"], "hi": st["delta_hi"], "per_lang": per}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def compare_runs(store_path: str | Path, ids: list[str], metric: str | None = None, bootstrap: int = 2000,
                 seed: int = 0, allow_different_data: bool = False) -> CompareResult:
    """Read the runs ``ids`` (or unique prefixes) from the store and line them up; see the module doc.

    Align runs are compared like with like: on the languages every run has and the layers at common relative
    depths, and refused in one line when they scored different sentences (``allow_different_data`` compares
    them anyway, with a note)."""
    from xling.harness.store import ResultsStore

    path = Path(store_path)
    if not path.is_file():
        raise XlingError(f"results store not found: {path} (run a command first, or pass --store)")
    store = ResultsStore(path)
    runs = resolve_runs(store, ids)
    for r in runs:
        if r["command"] not in GROUPS:
            raise XlingError(f"cannot compare {r['command']} run {r['run_id']}: compare takes align, eval and "
                             "transfer runs")
    groups = {GROUPS[r["command"]] for r in runs}
    if len(groups) > 1:
        a = next(r for r in runs if GROUPS[r["command"]] == "align")
        b = next(r for r in runs if GROUPS[r["command"]] == "task")
        raise XlingError(f"runs {a['run_id']} ({a['command']}) and {b['run_id']} ({b['command']}) have nothing in "
                         "common: an align run scores a corpus, an eval or transfer run a task")
    kind = groups.pop()
    notes: list[str] = []
    source = None
    lower = False
    if kind == "align":
        corpora = list(dict.fromkeys(str(r.get("corpus")) for r in runs))
        if len(corpora) > 1:
            raise XlingError(f"runs have nothing in common: align runs on different corpora ({', '.join(corpora)})")
        what = corpora[0]
        series, metric, lower, same = _align_series(store, runs, metric, allow_different_data)
        notes.extend(same)
        pivots = {str((r.get("config") or {}).get("pivot")) for r in runs}
        if len(pivots) > 1:
            notes.append(f"the runs use different pivots ({', '.join(sorted(pivots))})")
    else:
        tasks = list(dict.fromkeys(_task_of(r) for r in runs))
        if len(tasks) > 1:
            raise XlingError(f"runs have nothing in common: different tasks ({', '.join(tasks)})")
        what = tasks[0]
        series, metric = _task_series(store, runs, metric)
        sources = {s for s in ((r.get("config") or {}).get("source") or (r.get("config") or {}).get("source_lang")
                               for r in runs) if s}
        if len(sources) == 1:
            source = sources.pop()
        elif len(sources) > 1:
            notes.append(f"the runs have different source languages ({', '.join(sorted(sources))}); every language "
                         "counts in the means")
        else:
            notes.append("no run names its source language; every language counts in the means")
    langs = sorted(set.intersection(*(set(s.values) for s in series)))
    if not langs:
        raise XlingError("runs have nothing in common: no language has a score in every run")
    only = sorted(set.union(*(set(s.values) for s in series)) - set(langs))
    if only:
        notes.append(f"{len(only)} language{'s' if len(only) != 1 else ''} not in every run left out: "
                     f"{', '.join(only[:8])}{' ...' if len(only) > 8 else ''}")
    result = CompareResult(kind=kind, what=what, metric=metric, series=series, langs=langs, source=source, diffs=[],
                           lower_is_better=lower, notes=notes)
    targets = result.targets()
    ref = series[0]
    quantities = [("mean over layers", "values"), ("best layer", "best")] if kind == "align" else [(metric, "values")]
    for s in series[1:]:
        for qname, attr in quantities:
            get = (lambda x, lang: x.values[lang]) if attr == "values" else (lambda x, lang: x.best[lang][1])
            d = [get(s, lang) - get(ref, lang) for lang in targets]
            entry = {"series": s.label, "reference": ref.label, "quantity": qname, "n": len(d),
                     "wins": sum(x > 0 for x in d), "losses": sum(x < 0 for x in d), "method": BY_LANGS,
                     "per_lang": {}, "items": 0}
            why = {lang: _unpaired(ref, s, lang, metric) for lang in langs} if kind == "task" else {}
            paired = [lang for lang in targets if why.get(lang) is None] if kind == "task" else []
            p = paired_items(ref, s, paired, bootstrap, seed) if paired else None
            if p is not None:  # per-language paired intervals wherever the items pair (the source too)
                entry["per_lang"] = dict(p["per_lang"])
            if source in why and why[source] is None:
                entry["per_lang"].update(paired_items(ref, s, [source], bootstrap, seed)["per_lang"])
            if p is not None and len(paired) == len(targets):
                mean, lo, hi = p["mean"], p["lo"], p["hi"]
                entry.update(method=BY_ITEMS, items=sum(ref.items[lang]["n"] for lang in targets))
                note = "" if lo is not None else "no bootstrap: no CI"
            else:
                mean, lo, hi = bootstrap_mean_diff(d, bootstrap, seed)
                note = "" if lo is not None else (f"only {_plural(len(d), 'language')}: no CI"
                                                  if len(d) < 2 else "no bootstrap: no CI")
                reasons: dict[str, list[str]] = {}
                for lang in targets:
                    if why.get(lang) is not None:
                        reasons.setdefault(why[lang], []).append(lang)
                if reasons:
                    said = "; ".join(f"{r} ({', '.join(ls[:4])}{' ...' if len(ls) > 4 else ''})"
                                     for r, ls in reasons.items())
                    notes.append(f"{s.label} vs {ref.label}: {BY_LANGS}, not a {BY_ITEMS}: {said}")
            entry.update(mean=mean, lo=lo, hi=hi, note=note)
            result.diffs.append(entry)
    return result


# ----------------------------------------------------------------------------- outputs


def _how(d: dict) -> str:
    m = d.get("method", BY_LANGS)
    return f"{m} ({d['items']} items)" if m == BY_ITEMS else m


def _ci(d: dict) -> str:
    from xling.harness.html import fmt_signed

    if d["lo"] is None:
        return f"{fmt_signed(d['mean'])} ({d['note']})"
    return f"{fmt_signed(d['mean'])} [{fmt_signed(d['lo'])}, {fmt_signed(d['hi'])}]"


def _lang_ci(result: CompareResult, s: Series, lang: str) -> dict | None:
    """The paired per-item interval of ``s - reference`` in ``lang``, if the items pair there."""
    d = next((d for d in result.diffs if d["series"] == s.label), None)
    return (d.get("per_lang") or {}).get(lang) if d is not None and s is not result.reference else None


def methods_line(result: CompareResult) -> str:
    """How the intervals were drawn: one phrase per method in use."""
    used = list(dict.fromkeys(d.get("method", BY_LANGS) for d in result.diffs)) or [BY_LANGS]
    return "; ".join(CI_ITEMS if m == BY_ITEMS else CI_METHOD for m in used)


def csv_rows(result: CompareResult) -> list[dict]:
    """Tidy rows: one per language and series, with the difference to the first series
    (task runs: and its paired per-item 95% interval where the items pair)."""
    from xling.data.langcodes import lang_name

    ref = result.reference
    out = []
    for lang in result.langs:
        for s in result.series:
            row = {"lang": lang, "name": lang_name(lang), "role": "source" if lang == result.source else "target",
                   "series": s.label, "run_id": s.run_id, "command": s.command, "metric": result.metric,
                   "value": s.values[lang], "diff_vs_first": s.values[lang] - ref.values[lang]}
            if result.kind == "align":
                row["value_is"] = "mean over layers"
                row["best_layer"], row["best_value"] = s.best[lang]
            else:
                ci = _lang_ci(result, s, lang)
                row["diff_lo"] = ci["lo"] if ci else None
                row["diff_hi"] = ci["hi"] if ci else None
                row["diff_ci"] = f"95% {BY_ITEMS} ({ci['n']} items)" if ci and ci["lo"] is not None else ""
            out.append(row)
    return out


def format_compare(result: CompareResult) -> str:
    """A terminal table: one line per language, one column per series, then the mean differences."""
    from xling.harness.html import fmt, fmt_signed

    ref = result.reference
    labels = [s.label for s in result.series]
    head = ["lang", *labels, *(f"{s.label[:14]} - {ref.label[:14]}" for s in result.series[1:])]
    lines = []
    for lang in result.langs:
        cells = [lang + (" *" if lang == result.source else "")]
        for s in result.series:
            v = fmt(s.values[lang])
            if result.kind == "align":
                v += f" (L{s.best[lang][0]})"
            cells.append(v)
        cells += [fmt_signed(s.values[lang] - ref.values[lang]) for s in result.series[1:]]
        lines.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    row = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    text = [row(head), row(["-" * w for w in widths])] + [row(r) for r in lines]
    what = "mean over layers (best layer in brackets)" if result.kind == "align" else "score"
    text.append("")
    text.append(f"{result.metric} on {result.what}: {what}" + ("; * = source, left out of the means"
                                                                if result.source else ""))
    for d in result.diffs:
        text.append(f"{d['series']} - {d['reference']} ({d['quantity']}, {d['n']} languages): {_ci(d)}; "
                    f"higher in {d['wins']}, lower in {d['losses']}; {_how(d)}")
        for lang in result.langs:
            ci = (d.get("per_lang") or {}).get(lang)
            if ci is not None and ci["lo"] is not None:
                text.append(f"  {lang}: {fmt_signed(ci['delta'])} [{fmt_signed(ci['lo'])}, {fmt_signed(ci['hi'])}] "
                            f"({ci['n']} items, paired)")
    text.append(f"intervals: {methods_line(result)}")
    text.extend(f"note: {n}" for n in result.notes)
    return "\n".join(text)


def render_compare_report(result: CompareResult) -> str:
    from xling.harness.html import (bar_chart_svg, display_lang, esc, fmt, fmt_signed, headline_html,
                                   line_chart_svg, metric_range, page, plural, table_html)

    ref = result.reference
    m = result.metric
    head = []
    for d in result.diffs:
        if result.kind == "align" and d["quantity"] != "mean over layers":
            continue
        head.append(f"<b>{esc(d['series'])}</b> vs <b>{esc(d['reference'])}</b>: mean difference in {esc(m)}"
                    f"{' (' + esc(d['quantity']) + ')' if result.kind == 'align' else ''} <b>{esc(_ci(d))}</b> over "
                    f"{esc(plural(d['n'], 'language'))} ({esc(_how(d))}); higher in {esc(d['wins'])}, lower in "
                    f"{esc(d['losses'])}.")
    if result.lower_is_better:
        head.append(f"{esc(m)} is an error: lower is better.")
    kind = "alignment runs" if result.kind == "align" else "task runs"
    body = [f"<h1>Comparing {len(result.series)} {kind} on {esc(result.what)}</h1>", headline_html(head),
            f'<p class="muted">Differences are to the first series ({esc(ref.label)}); intervals: '
            f'{esc(methods_line(result))}. '
            + " ".join(_MEANS[m] for m in dict.fromkeys(d.get("method", BY_LANGS) for d in result.diffs))
            + '</p>']
    for n in result.notes:
        body.append(f'<p class="note">Note: {esc(n)}.</p>')
    if result.kind == "align":
        lo, hi = metric_range(m, [y for s in result.series for _, y in s.curve])
        body.append("<h2>Per layer</h2>")
        body.append('<div class="card">' + line_chart_svg(
            f"mean {m} over languages, per layer", {s.label: s.curve for s in result.series}, "relative depth "
            "(0 = embeddings, 1 = last layer)", f"mean {m}", lo=lo, hi=hi) + "</div>")
        summ = [[s.label, s.run_id, s.model, s.layers,
                 max(s.curve, key=lambda p: -p[1] if result.lower_is_better else p[1])[1] if s.curve else None,
                 sum(s.values[lang] for lang in result.langs) / len(result.langs)] for s in result.series]
        body.append(table_html(["series", "run", "model", "hidden states", f"best mean {m}", "mean over layers"],
                               summ, left_cols=3))
    else:
        tg = result.targets()
        items = [(s.label, sum(s.values[lang] for lang in tg) / len(tg)) for s in result.series] if tg else []
        refs = []
        src = result.source
        if src and all(src in s.values for s in result.series):
            refs.append((ref.values[src], f"{ref.label} on the source"))
        body.append("<h2>Mean over target languages</h2>")
        body.append(bar_chart_svg(f"mean target {m}", items, lo=0.0, hi=1.0, highlight={ref.label}, refs=refs))
    body.append("<h2>Differences</h2>")
    body.append(table_html(["series", "vs", "quantity", "languages", "mean difference [95% CI]", "interval",
                            "higher in", "lower in"],
                           [[d["series"], d["reference"], d["quantity"], d["n"], _ci(d), _how(d), d["wins"],
                             d["losses"]] for d in result.diffs], left_cols=3))
    body.append("<h2>Per language</h2>")
    thead = ["language"]
    for s in result.series:
        thead += [f"{s.label}: best (layer)", f"{s.label}: mean"] if result.kind == "align" else [s.label]
    thead += [f"{s.label} - {ref.label}" for s in result.series[1:]]
    with_ci = [s for s in result.series[1:] if any((_lang_ci(result, s, lang) or {}).get("lo") is not None
                                                   for lang in result.langs)]
    thead += [f"{s.label} - {ref.label}: 95% CI (paired, items)" for s in with_ci]
    rows, marks = [], set()
    pick = min if result.lower_is_better else max
    for i, lang in enumerate(result.langs):
        row = [display_lang(lang) + (" — source" if lang == result.source else "")]
        vals = [s.values[lang] for s in result.series]
        for s in result.series:
            if result.kind == "align":
                row += [f"{fmt(s.best[lang][1])} ({s.best[lang][0]})", s.values[lang]]
            else:
                row.append(s.values[lang])
        width = 2 if result.kind == "align" else 1
        marks.add((i, 1 + width * vals.index(pick(vals)) + (width - 1)))
        row += [s.values[lang] - ref.values[lang] for s in result.series[1:]]
        for s in with_ci:
            ci = _lang_ci(result, s, lang)
            row.append(f"[{fmt_signed(ci['lo'])}, {fmt_signed(ci['hi'])}] ({ci['n']} items)"
                       if ci and ci["lo"] is not None else "–")
        rows.append(row)
    body.append(table_html(thead, rows, sortable=True, marks=marks))
    body.append(f'<p class="muted">{"Mean over layers and each run&#x27;s best layer per language. " if result.kind == "align" else ""}'
                'Shaded: the best series for the language. Click a header to sort. All values are in compare.csv.</p>')
    body.append("<h2>Runs</h2>")
    body.append(table_html(["series", "run", "command", "model"],
                           [[s.label, s.run_id, s.command, s.model] for s in result.series], left_cols=4))
    return page(f"xling compare: {result.what}", "".join(body), script=True)


def write_compare(result: CompareResult, out: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """``compare.html`` and ``compare.csv`` in ``out``: the folder built aside and swapped in whole
    (:func:`xling.io.output_folder`: a file, the cache or a user's own folder is refused)."""
    from xling.io import atomic_write_text, output_folder
    from xling.harness.outputs import rows_to_csv

    out = Path(out)
    paths = {"report": out / "compare.html", "csv": out / "compare.csv"}
    rows = csv_rows(result)
    cols = list(rows[0]) if rows else ["lang"]
    with output_folder(out, command="compare", overwrite=overwrite) as tmp:
        tmp.mkdir()
        atomic_write_text(tmp / "compare.csv", rows_to_csv(rows, cols))
        atomic_write_text(tmp / "compare.html", render_compare_report(result))
    return paths


__all__ = ["CompareResult", "Series", "compare_runs", "paired_items", "resolve_runs", "format_compare",
           "render_compare_report", "write_compare", "csv_rows"]
