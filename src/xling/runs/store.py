"""The results store: one SQLite file for every xling command.

One schema holds runs, alignment scores and task scores, so runs can be
compared across models and corpora and reports regenerated without recomputing
anything. Each run is written in a single transaction: a crash leaves either the
whole run or nothing.

Tables
- ``runs(run_id, command, model, model_fingerprint, corpus, corpus_fingerprint,
  config, started, finished, xling_version)``
- ``alignment(run_id, model, corpus, lang, layer, pooling, metric, value)``
- ``task_scores(run_id, model, task, lang, split, metric, value)``
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterable

from xling.errors import XlingError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, command TEXT NOT NULL, model TEXT, model_fingerprint TEXT,
  corpus TEXT, corpus_fingerprint TEXT, config TEXT, started TEXT, finished TEXT, xling_version TEXT
);
CREATE TABLE IF NOT EXISTS alignment (
  run_id TEXT NOT NULL REFERENCES runs(run_id), model TEXT, corpus TEXT, lang TEXT,
  layer INTEGER, pooling TEXT, metric TEXT, value REAL
);
CREATE INDEX IF NOT EXISTS alignment_run ON alignment(run_id);
CREATE INDEX IF NOT EXISTS alignment_lookup ON alignment(model, corpus, metric);
CREATE TABLE IF NOT EXISTS task_scores (
  run_id TEXT NOT NULL REFERENCES runs(run_id), model TEXT, task TEXT, lang TEXT,
  split TEXT, metric TEXT, value REAL
);
CREATE INDEX IF NOT EXISTS task_run ON task_scores(run_id);
"""

#: Where every recipe keeps its results unless told otherwise (``--store``).
DEFAULT_STORE = Path("xling-out") / "results.sqlite"

ALIGN_COLUMNS = ("model", "corpus", "lang", "layer", "pooling", "metric", "value")


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path)
            con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise XlingError(f"results store {self.path} is not a usable SQLite file ({exc})") from None
        return con

    def add_run(self, run: dict, alignment: Iterable[dict] = (), task_scores: Iterable[dict] = ()) -> None:
        """Insert a run and its rows in one transaction (all or nothing)."""
        with closing(self._connect()) as con, con:
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    run["run_id"], run["command"], run.get("model"), run.get("model_fingerprint"),
                    run.get("corpus"), run.get("corpus_fingerprint"), json.dumps(run.get("config", {}), default=str),
                    run.get("started"), run.get("finished"), run.get("xling_version"),
                ),
            )
            con.execute("DELETE FROM alignment WHERE run_id = ?", (run["run_id"],))
            con.executemany(
                "INSERT INTO alignment VALUES (?,?,?,?,?,?,?,?)",
                ((run["run_id"], *(r[c] for c in ALIGN_COLUMNS)) for r in alignment),
            )
            con.execute("DELETE FROM task_scores WHERE run_id = ?", (run["run_id"],))
            con.executemany(
                "INSERT INTO task_scores VALUES (?,?,?,?,?,?,?)",
                ((run["run_id"], r["model"], r["task"], r["lang"], r["split"], r["metric"], r["value"]) for r in task_scores),
            )

    def runs(self, command: str | None = None) -> list[dict]:
        if not self.path.is_file():
            return []
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            q = "SELECT * FROM runs" + (" WHERE command = ?" if command else "") + " ORDER BY started"
            rows = con.execute(q, (command,) if command else ()).fetchall()
        return [dict(r) | {"config": json.loads(r["config"] or "{}")} for r in rows]

    def alignment(self, run_id: str) -> list[dict]:
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT model, corpus, lang, layer, pooling, metric, value FROM alignment WHERE run_id = ? "
                "ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def task_scores(self, run_id: str) -> list[dict]:
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM task_scores WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def latest(self, command: str) -> dict | None:
        runs = self.runs(command)
        return runs[-1] if runs else None
