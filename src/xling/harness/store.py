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
- ``item_scores(run_id, model, task, lang, split, ids_hash, n, correct)``: per-item
  correctness of classification-style runs, ``correct`` a string of ``0``/``1`` in
  item order and ``ids_hash`` (:func:`items_hash`) a digest of the items in that
  order, so two runs are paired only when they scored the same items. Added later:
  a store written before it gets the (empty) table on first open, and its runs
  simply have no item rows.
- ``predictions(run_id, model, task, lang, split, ids_hash, n, data, sha256)``: each
  item's prediction next to its gold label and correctness, keyed by the item's parallel
  id (:func:`prediction_row`): ``data`` the zlib-compressed canonical JSON of
  ``{"item_ids", "predictions", "labels", "correct", "id_source"}`` and ``sha256`` the
  digest of that JSON, checked on every read (:meth:`ResultsStore.predictions`). Added
  later too: older stores get the empty table on first open; their runs have no
  predictions (``xling consistency`` says what to re-run).
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

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
CREATE TABLE IF NOT EXISTS item_scores (
  run_id TEXT NOT NULL REFERENCES runs(run_id), model TEXT, task TEXT, lang TEXT,
  split TEXT, ids_hash TEXT, n INTEGER, correct TEXT
);
CREATE INDEX IF NOT EXISTS item_run ON item_scores(run_id);
CREATE TABLE IF NOT EXISTS predictions (
  run_id TEXT NOT NULL REFERENCES runs(run_id), model TEXT, task TEXT, lang TEXT,
  split TEXT, ids_hash TEXT, n INTEGER, data BLOB, sha256 TEXT
);
CREATE INDEX IF NOT EXISTS prediction_run ON predictions(run_id);
"""

#: The environment variable that moves the default results store (``--store`` still wins).
STORE_ENV = "XLING_STORE"


def default_store_path() -> Path:
    """The results store every command shares unless told otherwise: ``$XLING_STORE``, else
    ``results.sqlite`` in the user data folder (``platformdirs.user_data_dir("xling")``), so runs made
    in any folder are seen by ``runs``, ``compare`` and ``predict``."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("xling")) / "results.sqlite"


class _DefaultStore(os.PathLike):
    """The default store as a path-like value looked up when used (``XLING_STORE`` may be set later)."""

    def __fspath__(self) -> str:
        return str(default_store_path())

    def __str__(self) -> str:
        return self.__fspath__()

    def __repr__(self) -> str:
        return f"DEFAULT_STORE({self.__fspath__()!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, (str, os.PathLike)) and os.fspath(other) == self.__fspath__()

    def __hash__(self) -> int:
        return hash(self.__fspath__())

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


#: Where every recipe keeps its results unless told otherwise (``--store``): :func:`default_store_path`,
#: resolved each time it is used.
DEFAULT_STORE = _DefaultStore()
STORE_HELP = f"results store (SQLite; default ${STORE_ENV} or results.sqlite in the user data folder); 'none' to skip"

ALIGN_COLUMNS = ("model", "corpus", "lang", "layer", "pooling", "metric", "value")


#: Columns of each table, as :data:`SCHEMA` creates them; a store with other columns is not ours.
TABLE_COLUMNS = {
    "runs": ("run_id", "command", "model", "model_fingerprint", "corpus", "corpus_fingerprint", "config", "started",
             "finished", "xling_version"),
    "alignment": ("run_id", "model", "corpus", "lang", "layer", "pooling", "metric", "value"),
    "task_scores": ("run_id", "model", "task", "lang", "split", "metric", "value"),
    "item_scores": ("run_id", "model", "task", "lang", "split", "ids_hash", "n", "correct"),
    "predictions": ("run_id", "model", "task", "lang", "split", "ids_hash", "n", "data", "sha256"),
}

ITEM_COLUMNS = ("model", "task", "lang", "split", "ids_hash", "n", "correct")


def items_hash(items: Iterable) -> str:
    """A digest of items in order (examples: all their fields, id, text and gold label; else their ``str``)."""
    import hashlib

    keys = [x.to_json() if hasattr(x, "to_json") else str(x) for x in items]
    return hashlib.sha256(json.dumps(keys, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def item_row(model: str, task: str, lang: str, split: str, ids_hash: str, correct) -> dict:
    """One ``item_scores`` row; ``correct``: 0/1 per item (a sequence, or the ``"0110"`` string)."""
    text = correct if isinstance(correct, str) else "".join("1" if int(c) else "0" for c in correct)
    if set(text) - {"0", "1"}:
        raise ValueError(f"item correctness must be 0 or 1, got {text[:20]!r}")
    return {"model": model, "task": task, "lang": lang, "split": split, "ids_hash": ids_hash, "n": len(text),
            "correct": text}


PREDICTION_COLUMNS = ("model", "task", "lang", "split", "ids_hash", "n", "data", "sha256")
#: The lists a prediction row holds, one value per item, in item order.
PREDICTION_LISTS = ("item_ids", "predictions", "labels", "correct")


def _prediction_json(record: dict) -> bytes:
    return json.dumps({k: record[k] for k in (*PREDICTION_LISTS, "id_source")}, ensure_ascii=False,
                      sort_keys=True, separators=(",", ":")).encode("utf-8")


def prediction_row(model: str, task: str, lang: str, split: str, ids_hash: str, record: dict) -> dict:
    """One ``predictions`` row from a record ``{"item_ids", "predictions", "labels", "correct"[, "id_source"]}``
    (lists of equal length: ids and predictions and gold labels as strings, correctness 0/1; ``id_source``:
    ``"task"`` when the ids are the task's own, ``"position"`` or ``"mixed"`` when some are item positions)."""
    import hashlib
    import zlib

    rec = {"item_ids": [str(x) for x in record["item_ids"]], "predictions": [str(x) for x in record["predictions"]],
           "labels": [str(x) for x in record["labels"]], "correct": [int(c) for c in record["correct"]],
           "id_source": str(record.get("id_source") or "task")}
    n = len(rec["item_ids"])
    if any(len(rec[k]) != n for k in PREDICTION_LISTS):
        raise ValueError(f"prediction record of {lang}: lists of different lengths "
                         f"({', '.join(f'{k} {len(rec[k])}' for k in PREDICTION_LISTS)})")
    if set(rec["correct"]) - {0, 1}:
        raise ValueError(f"prediction record of {lang}: correctness must be 0 or 1")
    raw = _prediction_json(rec)
    return {"model": model, "task": task, "lang": lang, "split": split, "ids_hash": ids_hash, "n": n,
            "data": zlib.compress(raw, 9), "sha256": hashlib.sha256(raw).hexdigest()}


_ELSEWHERE = "pass --store with another path, or --store none"


def _why(exc: sqlite3.DatabaseError) -> str:
    if "locked" in str(exc):
        return f"is in use by another process ({exc})"
    return f"is damaged or not an SQLite file ({exc})"


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _unusable(self, why: str) -> XlingError:
        return XlingError(f"results store {self.path} {why}; {_ELSEWHERE}")

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection to the checked store; SQLite errors (a damaged file) become one line."""
        try:
            with closing(self._connect(write)) as con:
                if write:
                    with con:
                        yield con
                else:
                    yield con
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # our own mistake, not the file's
        except sqlite3.DatabaseError as exc:
            raise self._unusable(_why(exc)) from None

    def _connect(self, write: bool = True) -> sqlite3.Connection:
        if self.path.is_dir():
            raise self._unusable("is a folder")
        if not write and not self.path.exists():  # reading a store that is not there: empty, and no file made
            con = sqlite3.connect(":memory:")
            con.executescript(SCHEMA)
            return con
        if self.path.is_file() and self.path.stat().st_size == 0 \
                and self.path.suffix.lower() not in (".sqlite", ".sqlite3", ".db"):
            # an empty file of the user's (notes.txt, data.tsv): SQLite would turn it into a database
            raise self._unusable("is an empty file that is not an SQLite store (name it .sqlite to start one there)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(f"cannot be opened ({exc})") from None
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not tables & set(TABLE_COLUMNS):
                raise self._unusable(f"was not written by xling (it holds tables {', '.join(sorted(tables)[:5])})")
            for table, want in TABLE_COLUMNS.items():
                if table not in tables:
                    continue
                have = tuple(r[1] for r in con.execute(f"PRAGMA table_info({table})"))
                if have != want:
                    missing = [c for c in want if c not in have]
                    detail = f"lacks column {missing[0]!r}" if missing else f"has columns {', '.join(have)}"
                    raise self._unusable(f"was not written by xling (its table {table} {detail})")
            con.executescript(SCHEMA)  # checked first: never add tables to someone else's database
        except sqlite3.DatabaseError as exc:
            con.close()
            raise self._unusable(_why(exc)) from None
        except XlingError:
            con.close()
            raise
        return con

    def check(self) -> None:
        """Fail now, before any work, if the store exists but cannot be used; creates nothing."""
        if os.path.lexists(self.path):
            with self._db():
                pass

    def add_run(self, run: dict, alignment: Iterable[dict] = (), task_scores: Iterable[dict] = (),
                items: Iterable[dict] = (), predictions: Iterable[dict] = ()) -> None:
        """Insert a run and its rows in one transaction (all or nothing); ``items``: :func:`item_row` dicts,
        ``predictions``: :func:`prediction_row` dicts."""
        items = [item_row(r["model"], r["task"], r["lang"], r["split"], r["ids_hash"], r["correct"]) for r in items]
        predictions = list(predictions)
        with self._db(write=True) as con:
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
            con.execute("DELETE FROM item_scores WHERE run_id = ?", (run["run_id"],))
            con.executemany(
                "INSERT INTO item_scores VALUES (?,?,?,?,?,?,?,?)",
                ((run["run_id"], *(r[c] for c in ITEM_COLUMNS)) for r in items),
            )
            con.execute("DELETE FROM predictions WHERE run_id = ?", (run["run_id"],))
            con.executemany(
                "INSERT INTO predictions VALUES (?,?,?,?,?,?,?,?,?)",
                ((run["run_id"], *(r[c] for c in PREDICTION_COLUMNS)) for r in predictions),
            )

    def runs(self, command: str | None = None) -> list[dict]:
        if not self.path.is_file():
            return []
        with self._db() as con:
            con.row_factory = sqlite3.Row
            q = "SELECT * FROM runs" + (" WHERE command = ?" if command else "") + " ORDER BY started"
            rows = con.execute(q, (command,) if command else ()).fetchall()
        out = []
        for r in rows:
            try:
                config = json.loads(r["config"] or "{}")
            except (ValueError, RecursionError):
                raise self._unusable(f"holds run {r['run_id']!r} with an unreadable config") from None
            out.append(dict(r) | {"config": config})
        return out

    def alignment(self, run_id: str) -> list[dict]:
        with self._db() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT model, corpus, lang, layer, pooling, metric, value FROM alignment WHERE run_id = ? "
                "ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def task_scores(self, run_id: str) -> list[dict]:
        with self._db() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM task_scores WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def items(self, run_id: str) -> list[dict]:
        """The run's ``item_scores`` rows (``correct`` as its ``0``/``1`` string); none for runs without them."""
        with self._db() as con:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute(
                "SELECT model, task, lang, split, ids_hash, n, correct FROM item_scores WHERE run_id = ? "
                "ORDER BY rowid", (run_id,)).fetchall()]
        for r in rows:
            text = r["correct"]
            if not isinstance(text, str) or set(text) - {"0", "1"} or r["n"] != len(text):
                raise self._unusable(f"holds run {run_id!r} with unreadable item scores ({r['lang']})")
        return rows

    def predictions(self, run_id: str) -> list[dict]:
        """The run's ``predictions`` rows, decoded: ``model, task, lang, split, ids_hash, n`` and the lists of
        :data:`PREDICTION_LISTS` plus ``id_source``; none for runs without them (older runs). A row whose data does
        not match its sha256 or its item count (an edited or damaged store) is one line naming the run."""
        import hashlib
        import zlib

        with self._db() as con:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute(
                "SELECT model, task, lang, split, ids_hash, n, data, sha256 FROM predictions WHERE run_id = ? "
                "ORDER BY rowid", (run_id,)).fetchall()]
        out = []
        for r in rows:
            bad = self._unusable(f"holds run {run_id!r} with unreadable predictions ({r['lang']})")
            try:
                raw = zlib.decompress(r.pop("data"))
                rec = json.loads(raw.decode("utf-8"))
            except (TypeError, zlib.error, UnicodeDecodeError, ValueError, RecursionError):
                raise bad from None
            if hashlib.sha256(raw).hexdigest() != r.pop("sha256") or not isinstance(rec, dict) or any(
                    not isinstance(rec.get(k), list) or len(rec[k]) != r["n"] for k in PREDICTION_LISTS) \
                    or set(rec["correct"]) - {0, 1}:
                raise bad
            out.append(r | {k: rec[k] for k in PREDICTION_LISTS} | {"id_source": rec.get("id_source") or "task"})
        return out

    def resolve(self, run_id: str) -> dict:
        """The run named by ``run_id`` or an unambiguous prefix of it; one line when unknown or ambiguous."""
        rid = str(run_id).strip()
        runs = self.runs()
        hits = [r for r in runs if r["run_id"] == rid] or [r for r in runs if rid and r["run_id"].startswith(rid)]
        if not hits:
            raise XlingError(f"unknown run id {rid!r} in {self.path} (xling runs --store {self.path} lists them)")
        if len(hits) > 1:
            raise XlingError(f"run id prefix {rid!r} is ambiguous: {', '.join(r['run_id'] for r in hits[:5])}")
        return hits[0]

    def latest(self, command: str) -> dict | None:
        runs = self.runs(command)
        return runs[-1] if runs else None


def run_headline(store: "ResultsStore", run: dict) -> str:
    """A short headline of a run from its rows: best layer of an align run, mean target score of an eval run."""
    cmd = run["command"]
    if cmd == "align":
        rows = [r for r in store.alignment(run["run_id"]) if r["metric"] == "mexa"]
        if not rows:
            return ""
        per_layer: dict[int, list[float]] = {}
        for r in rows:
            per_layer.setdefault(int(r["layer"]), []).append(float(r["value"]))
        best = max(per_layer, key=lambda k: sum(per_layer[k]) / len(per_layer[k]))
        langs = len({r["lang"] for r in rows})
        return f"{langs} languages; best layer {best}, mean mexa {sum(per_layer[best]) / len(per_layer[best]):.3f}"
    if cmd == "eval":
        conf = run.get("config") or {}
        metric = conf.get("main_metric") or "accuracy"
        src = conf.get("source")
        vals = {r["lang"]: float(r["value"]) for r in store.task_scores(run["run_id"])
                if r["metric"] == metric and r["split"] == conf.get("split", "test")}
        tgt = [v for k, v in vals.items() if k != src]
        head = f"{metric}: " + (f"source {vals[src]:.3f}, " if src in vals else "")
        return head + (f"mean over {len(tgt)} targets {sum(tgt) / len(tgt):.3f}" if tgt else "no target scores")
    return ""


def run_folder_name(model: str) -> str:
    """A model name as one safe folder name (``gemma-3-270m``, ``_tmp_models_x``) for per-model output folders."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")[:60] or "model"
