"""What every recipe writes the same way: CSV tables and the model name a worker loads.

Folder writes (build aside, swap in, the folder's own record) are in :mod:`xling.io`; CSV cells are made
safe by :func:`xling.textsafe.csv_text`.
"""

from __future__ import annotations

from pathlib import Path


def rows_to_csv(rows: list[dict], columns: list[str]) -> str:
    """The CSV of ``rows``: :func:`xling.textsafe.csv_text` (formula cells neutralised, numbers kept)."""
    from xling.textsafe import csv_text

    return csv_text(rows, columns)


def worker_model_name(name: str) -> str:
    """The model name a worker process loads: a local path made absolute (workers may start elsewhere)."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def preflight(cfg, command: str) -> None:
    """Before any work: refuse an ``out`` folder that is not xling's to write (:func:`xling.io.check_output_target`),
    then an unusable results ``store``; a config without one of the two (or with ``None``) skips that check."""
    out = getattr(cfg, "out", None)
    if out is not None:
        from xling.io import check_output_target

        check_output_target(out, overwrite=getattr(cfg, "overwrite", False), command=command)
    store = getattr(cfg, "store", None)
    if store is not None:
        from xling.harness.store import ResultsStore

        ResultsStore(store).check()


__all__ = ["preflight", "rows_to_csv", "worker_model_name"]
