"""``--seeds 0,1,2``: run one recipe once per seed and report the spread across seeds.

A bootstrap interval over test items says how much the score would move with
other test examples; it says nothing about how much it moves with another
training seed (initialisation, data order, training subset), which on small data
is often larger. :func:`run_seeds` runs a recipe per seed, each into its own
``OUT/seed-<s>`` folder, and :func:`spread` aggregates the rows the runs return:
per group (e.g. language), the value of each seed, the mean and the sample
standard deviation across seeds (:func:`xling.methods.stats.mean_sd`), next to
the mean of the bootstrap bounds where the rows have them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from xling.errors import XlingError

SEEDS_CSV = "seeds.csv"


def parse_seeds(value: str | Sequence[int] | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (distinct, in order); None stays None (one run with ``--seed``)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        seeds = [int(str(x).strip()) for x in items if str(x).strip()]
    except ValueError:
        raise XlingError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {value!r}") from None
    if not seeds:
        raise XlingError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {value!r}")
    if len(set(seeds)) != len(seeds):
        raise XlingError(f"--seeds lists a seed twice: {value!r}")
    if any(s < 0 for s in seeds):
        raise XlingError(f"--seeds must be >= 0, got {value!r}")
    return seeds


def seed_out(out: str | Path, seed: int) -> Path:
    """Where the run of ``seed`` writes: ``OUT/seed-<seed>``."""
    return Path(out) / f"seed-{seed}"


def run_seeds(seeds: Sequence[int], recipe: Callable[[int, Path | None], Any], out: str | Path | None,
              progress: bool = True) -> list[tuple[int, Any]]:
    """``[(seed, recipe(seed, OUT/seed-<seed>))]`` for every seed, in order (``out`` None: no folder)."""
    done = []
    for i, s in enumerate(seeds):
        if progress:
            print(f"[seeds] seed {s} ({i + 1} of {len(seeds)})", file=sys.stderr, flush=True)
        done.append((s, recipe(s, None if out is None else seed_out(out, s))))
    return done


def spread(per_seed: Sequence[tuple[int, Sequence[dict]]], keys: Sequence[str], values: Sequence[str],
           bounds: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Aggregate per-seed rows: one row per distinct ``keys`` combination (first-seen order).

    For each ``v`` in ``values``: ``v`` (the mean over seeds), ``v_sd`` (sample sd,
    None with one seed), ``v_min``, ``v_max`` and ``v_per_seed`` (``{seed: value}``);
    ``seeds`` (how many seeds have the row). ``bounds`` ``{v: (lo_field, hi_field)}``:
    the mean over seeds of each seed's interval bounds, as ``v_lo`` / ``v_hi``.
    """
    from xling.methods.stats import mean_sd

    groups: dict[tuple, dict] = {}
    for seed, rows in per_seed:
        for r in rows:
            k = tuple(r.get(x) for x in keys)
            g = groups.setdefault(k, {"key": k, "vals": {v: {} for v in values}, "bounds": {}})
            for v in values:
                if isinstance(r.get(v), (int, float)) and not isinstance(r.get(v), bool):
                    g["vals"][v][seed] = float(r[v])
            for v, (lo, hi) in (bounds or {}).items():
                if r.get(lo) is not None and r.get(hi) is not None:
                    g["bounds"].setdefault(v, []).append((float(r[lo]), float(r[hi])))
    out = []
    for g in groups.values():
        row: dict[str, Any] = dict(zip(keys, g["key"]))
        n = 0
        for v in values:
            per = g["vals"][v]
            n = max(n, len(per))
            if not per:
                row.update({v: None, f"{v}_sd": None, f"{v}_min": None, f"{v}_max": None, f"{v}_per_seed": {}})
                continue
            m, sd = mean_sd(list(per.values()))
            row.update({v: round(m, 6), f"{v}_sd": None if sd is None else round(sd, 6),
                        f"{v}_min": round(min(per.values()), 6), f"{v}_max": round(max(per.values()), 6),
                        f"{v}_per_seed": {s: round(x, 6) for s, x in per.items()}})
            if v in g["bounds"]:
                b = g["bounds"][v]
                row[f"{v}_lo"] = round(sum(x for x, _ in b) / len(b), 6)
                row[f"{v}_hi"] = round(sum(y for _, y in b) / len(b), 6)
        row["seeds"] = n
        out.append(row)
    return out


def format_spread(rows: Sequence[dict], keys: Sequence[str], value: str, seeds: Sequence[int],
                  title: str = "", ci: str = "mean 95% bootstrap CI") -> str:
    """Plain text: per row the keys, each seed's ``value``, then ``mean ± sd`` (and the mean CI, labelled ``ci``)."""
    head = "  ".join(f"{k:<12}" for k in keys) + "".join(f"{'seed ' + str(s):>10}" for s in seeds) + \
        f"{'mean':>9}{'± sd':>8}"
    has_ci = any(r.get(f"{value}_lo") is not None for r in rows)
    if has_ci:
        head += "   " + ci
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for r in rows:
        per = r.get(f"{value}_per_seed") or {}
        cells = "".join(f"{per[s]:>10.3f}" if s in per else f"{'-':>10}" for s in seeds)
        m, sd = r.get(value), r.get(f"{value}_sd")
        line = "  ".join(f"{str(r.get(k)):<12}" for k in keys) + cells + \
            (f"{m:>9.3f}" if m is not None else f"{'-':>9}") + (f"{sd:>8.3f}" if sd is not None else f"{'-':>8}")
        if has_ci and r.get(f"{value}_lo") is not None:
            line += f"   [{r[f'{value}_lo']:.3f}, {r[f'{value}_hi']:.3f}]"
        lines.append(line)
    return "\n".join(lines)


def write_spread(out: str | Path, rows: Sequence[dict], keys: Sequence[str], values: Sequence[str],
                 seeds: Sequence[int], extra: dict | None = None) -> Path:
    """``OUT/seeds.csv`` (one row per group: keys, each seed's value, mean, sd, min, max) and ``OUT/seeds.json``."""
    import csv
    import io

    from xling.io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cols = list(keys)
    for v in values:
        cols += [f"{v}_seed{s}" for s in seeds] + [v, f"{v}_sd", f"{v}_min", f"{v}_max"]
        if any(f"{v}_lo" in r for r in rows):
            cols += [f"{v}_lo", f"{v}_hi"]
    cols.append("seeds")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        flat = {k: v for k, v in r.items() if not k.endswith("_per_seed")}
        for v in values:
            for s, x in (r.get(f"{v}_per_seed") or {}).items():
                flat[f"{v}_seed{s}"] = x
        w.writerow({k: (f"{x:.6g}" if isinstance(x, float) else x) for k, x in flat.items()})
    path = out / SEEDS_CSV
    atomic_write_text(path, buf.getvalue())
    atomic_write_text(out / "seeds.json", json.dumps({"seeds": list(seeds), "keys": list(keys),
                                                      "values": list(values), "rows": list(rows), **(extra or {})},
                                                     indent=2, default=str) + "\n")
    return path


__all__ = ["parse_seeds", "seed_out", "run_seeds", "spread", "format_spread", "write_spread", "SEEDS_CSV"]
