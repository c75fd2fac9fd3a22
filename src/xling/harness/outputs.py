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


__all__ = ["rows_to_csv", "worker_model_name"]
