"""Links from one recipe's results to stored alignment and typology (not a recipe itself).

Used by ``xling neurons`` (does the overlap of two languages' neuron sets follow their URIEL
distance, and their MEXA alignment with English?) and ``xling lens`` (MEXA per layer next to the
logit-lens curves); :func:`corpus_family` also by the task scores (:mod:`xling.harness.scores`).
MEXA: Kargaran et al. 2024, "MEXA: Multilingual Evaluation of English-Centric LLMs via Cross-Lingual
Alignment"; URIEL: Littell et al. 2017 (:mod:`xling.data.typology`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

#: Fewer points than this and a correlation is only descriptive.
DESCRIPTIVE_BELOW = 10


def corpus_family(name: str | None) -> str:
    """The text collection a corpus or task comes from: ``bible:mexa``, ``bible-genre:align`` and
    ``task:bible-genre`` are all ``bible``; ``libreoffice-ui`` and ``libreoffice-topic`` are ``libreoffice``."""
    name = str(name or "").lower()
    if name.startswith("task:"):
        name = name[5:]
    return name.split(":")[0].split("-")[0]


def align_runs(store_path: str | Path | None, model: str) -> list[dict]:
    """The results store's align runs of ``model`` (oldest first); none without a store file."""
    from xling.models.builtin import same_model
    from xling.harness.store import ResultsStore

    if store_path is None or not Path(store_path).is_file():
        return []
    return [r for r in ResultsStore(store_path).runs("align") if same_model(r.get("model"), model)]


def mexa_table(store_path: str | Path, run: dict) -> dict[str, dict[int, float]]:
    """``{lang: {layer: MEXA}}`` of an align run (language codes normalized)."""
    from xling.data.langcodes import normalize_lang
    from xling.harness.store import ResultsStore

    out: dict[str, dict[int, float]] = {}
    for r in ResultsStore(store_path).alignment(run["run_id"]):
        if r["metric"] == "mexa" and r["value"] is not None and r["value"] == r["value"]:
            out.setdefault(normalize_lang(r["lang"]), {})[int(r["layer"])] = float(r["value"])
    return out


def mean_by_layer(table: dict[str, dict[int, float]]) -> dict[int, float]:
    """Mean over languages of MEXA at each layer (layers every language has)."""
    layers = set.intersection(*(set(v) for v in table.values())) if table else set()
    return {k: sum(v[k] for v in table.values()) / len(table) for k in sorted(layers)}


def correlation(what: str, x: Sequence[float], y: Sequence[float], reps: int = 1000, seed: int = 0) -> dict:
    """Pearson and Spearman of paired values (pairs with a missing value dropped, counted in ``missing``),
    with a 95% percentile bootstrap interval of Pearson over the points."""
    from xling.methods.stats import bootstrap_ci, pearson, spearman

    keep = [(float(a), float(b)) for a, b in zip(x, y)
            if a is not None and b is not None and not math.isnan(float(a)) and not math.isnan(float(b))]
    xs, ys = [a for a, _ in keep], [b for _, b in keep]
    lo, hi = bootstrap_ci(xs, ys, pearson, n_boot=reps, seed=seed)
    return {"what": what, "n": len(keep), "pearson": pearson(xs, ys), "ci_low": lo, "ci_high": hi,
            "spearman": spearman(xs, ys) if len(keep) >= 2 else float("nan"), "missing": len(x) - len(keep)}


def describe(row: dict, unit: str = "pairs") -> str:
    """One line: ``what: Pearson r [lo, hi], Spearman rho (n = k pairs[: descriptive])``."""
    f = lambda v: "-" if v != v else f"{v:+.2f}"  # noqa: E731
    tail = f"n = {row['n']} {unit}" + (": descriptive" if row["n"] < DESCRIPTIVE_BELOW else "")
    if row.get("missing"):
        tail += f"; {row['missing']} without a value dropped"
    return (f"{row['what']}: Pearson {f(row['pearson'])} [95% bootstrap {f(row['ci_low'])}, {f(row['ci_high'])}], "
            f"Spearman {f(row['spearman'])} ({tail})")


__all__ = ["DESCRIPTIVE_BELOW", "align_runs", "corpus_family", "correlation", "describe", "mean_by_layer", "mexa_table"]
