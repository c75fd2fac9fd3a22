"""Task specs: which fields of a JSONL/CSV/TSV file (or a saved HF dataset) hold what.

A spec is a small JSON object (or the :class:`TaskSpec` dataclass)::

    {
      "name": "my-nli",
      "type": "classification",            # or token-classification, multiple-choice
      "text": ["premise", "hypothesis"],   # one field, or two for a text pair
      "label": "label",
      "labels": ["entailment", "neutral", "contradiction"],   # optional: inferred
      "lang": "lang",                      # field holding the language (per row) ...
      "split": "split",                    # ... and the split (per row)
      "source_lang": "en",
      "files": [
        {"path": "train.en.jsonl", "split": "train", "lang": "en"},   # ... or per file
        {"path": "test.jsonl", "split": "test"}
      ]
    }

Relative paths are read from the spec's folder. Token classification reads
``tokens`` and ``tags`` (lists in JSONL; space-separated in CSV/TSV); multiple
choice reads ``choices`` (a list field, or a list of column names) and a label
that is the index (``0``, ``"2"``) or letter (``"B"``) of the right choice.
Generation (``"type": "generation"``) reads the input from ``text`` and the
reference output from ``target``; the row's language is the language the output
should be in, and the train split's rows serve as the k-shot demonstrations
(:mod:`xling.tasks.generation`).

Validation raises :class:`~xling.errors.XlingError` naming the file and line:
an unknown label, an empty text, a missing language or split, a tag count that
does not match the words; and, with ``strict_labels`` (default), a label set
(for tagging: the set of entity types) that differs between the languages of
one split. Without ``labels`` the label
set is the sorted set seen in the source language's train split (or in all
the data when there is no train split).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

from xling.errors import XlingError
from xling.tasks.core import TASK_TYPES, Example, Task

FORMATS = ("jsonl", "csv", "tsv", "hf")


@dataclass
class TaskSpec:
    """Where the fields of a task's files are; see the module docstring."""

    name: str = "task"
    type: str = "classification"
    text: str | list[str] = "text"
    text_pair: str | None = None
    tokens: str = "tokens"
    tags: str = "tags"
    choices: str | list[str] = "choices"
    label: str = "label"
    target: str = "target"
    labels: list[str] | None = None
    lang: str | None = "lang"
    split: str | None = "split"
    id: str | None = "id"
    source_lang: str = "eng_Latn"
    strict_labels: bool = True
    files: list[dict] = field(default_factory=list)
    base: str | None = None

    def __post_init__(self):
        from xling.data.langcodes import normalize_lang

        if self.type not in TASK_TYPES:
            raise XlingError(f"task spec {self.name}: unknown type {self.type!r} (use {', '.join(TASK_TYPES)})")
        if isinstance(self.text, str):
            self.text = [self.text]
        if self.text_pair:
            self.text = [*self.text, self.text_pair]
        if self.type == "classification" and not 1 <= len(self.text) <= 2:
            raise XlingError(f"task spec {self.name}: 'text' must name one field or two (a text pair)")
        if self.type == "generation" and len(self.text) != 1:
            raise XlingError(f"task spec {self.name}: a generation task's 'text' must name one field (the input)")
        if not self.files:
            raise XlingError(f"task spec {self.name}: no files")
        for f in self.files:
            if not isinstance(f, dict) or "path" not in f:
                raise XlingError(f"task spec {self.name}: each entry of 'files' needs a 'path'")
        self.source_lang = normalize_lang(self.source_lang)

    @classmethod
    def from_dict(cls, obj: dict, base: str | Path | None = None, where: str = "task spec") -> "TaskSpec":
        if not isinstance(obj, dict):
            raise XlingError(f"{where}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(obj) - known - {"format", "path"})
        if extra:
            raise XlingError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known | {'path'}))})")
        _check_spec_types(obj, where)
        obj = dict(obj)
        if "path" in obj and "files" not in obj:
            obj["files"] = [{"path": obj.pop("path")}]
        obj.pop("format", None)
        if not obj.get("files"):
            raise XlingError(f"{where}: the spec names no data: give 'files' (a list of {{\"path\": ...}}) or 'path'")
        if base is not None and "base" not in obj:
            obj["base"] = str(base)
        return cls(**obj)

    @classmethod
    def from_file(cls, path: str | Path) -> "TaskSpec":
        from xling.data.readers import parse_json, read_text

        path = Path(path)
        if not path.is_file():
            raise XlingError(f"task spec not found: {path}")
        obj = parse_json(read_text(path), path)
        if isinstance(obj, dict):
            obj.setdefault("name", path.stem)
        return cls.from_dict(obj, base=path.parent, where=str(path))


#: The JSON types each spec key accepts ("list" = a list of strings).
_SPEC_TYPES = {
    "name": "str", "type": "str", "text": "str|list", "text_pair": "str|null", "tokens": "str", "tags": "str",
    "choices": "str|list", "label": "str", "target": "str", "labels": "list|null", "lang": "str|null", "split": "str|null",
    "id": "str|null", "source_lang": "str", "strict_labels": "bool", "files": "files", "base": "str|null",
    "path": "str", "format": "str|null",
}
_FILE_KEYS = {"path": "str", "lang": "str|null", "split": "str|null", "format": "str|null"}


def _type_ok(value, allowed: str) -> bool:
    for kind in allowed.split("|"):
        if kind == "null" and value is None:
            return True
        if kind == "str" and isinstance(value, str):
            return True
        if kind == "bool" and isinstance(value, bool):
            return True
        if kind == "list" and isinstance(value, list) and all(
                isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in value):
            return True
    return False


def _check_spec_types(obj: dict, where: str) -> None:
    """Each key of a spec has the JSON type it needs: one line naming the file and key otherwise."""
    names = {"str": "a string", "null": "null", "bool": "true or false", "list": "a list of strings"}
    for key, value in obj.items():
        allowed = _SPEC_TYPES.get(key)
        if allowed is None:
            continue
        if allowed == "files":
            if not isinstance(value, list):
                raise XlingError(f"{where}: 'files' must be a list of {{\"path\": ...}} objects, got {type(value).__name__}")
            for i, entry in enumerate(value):
                if not isinstance(entry, dict) or "path" not in entry:
                    raise XlingError(f"{where}: files[{i}] must be an object with a 'path'")
                for k, v in entry.items():
                    if k not in _FILE_KEYS:
                        raise XlingError(f"{where}: files[{i}]: unknown key {k!r} (known: {', '.join(_FILE_KEYS)})")
                    if not _type_ok(v, _FILE_KEYS[k]) or (k == "path" and not v.strip()):
                        want = " or ".join(names[t] for t in _FILE_KEYS[k].split("|"))
                        raise XlingError(f"{where}: files[{i}].{k} must be {want}, got {type(v).__name__}")
            continue
        if not _type_ok(value, allowed):
            want = " or ".join(names[t] for t in allowed.split("|"))
            raise XlingError(f"{where}: key {key!r} must be {want}, got {type(value).__name__}")


# ----------------------------------------------------------------------------- readers


def _format_of(path: Path, declared: str | None) -> str:
    if declared:
        if declared not in FORMATS:
            raise XlingError(f"{path}: unknown format {declared!r} (use {', '.join(FORMATS)})")
        return declared
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    raise XlingError(f"{path}: unknown task file format (use .jsonl, .csv, .tsv or a saved Hugging Face dataset folder)")


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, dict, str | None]]:
    """``(line, row, hf_split)`` for every record of a file."""
    from xling.data.readers import json_objects, read_text

    if fmt == "hf":
        yield from _hf_rows(path)
        return
    if fmt == "jsonl":
        for lineno, obj in json_objects(path):
            yield lineno, obj, None
        return
    text = read_text(path)
    delim = "," if fmt == "csv" else "\t"
    reader = csv.DictReader(io.StringIO(text), delimiter=delim,
                            quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
    try:
        if not reader.fieldnames:
            raise XlingError(f"{path}: empty file (expected a header row)")
        prev = reader.line_num
        for row in reader:
            start, prev = prev + 1, reader.line_num
            if None in row:
                raise XlingError(f"{path}:{reader.line_num}: more fields than the header has")
            if fmt == "csv" and None in row.values() and any("\n" in (v or "") for v in row.values()):
                # fields missing and a field spanning lines: a quote opened and never closed swallowed the rest
                raise XlingError(f"{path}:{start}: a quoted field runs on to line {reader.line_num} and the row lacks "
                                 f"fields (a quote that is never closed?)")
            if all((v or "").strip() == "" for v in row.values()):
                continue
            yield reader.line_num, row, None
    except csv.Error as exc:
        detail = "a line break inside an unquoted field" if "new-line" in str(exc) else str(exc)
        raise XlingError(f"{path}:{reader.line_num + 1}: malformed {fmt.upper()} ({detail})") from None


def _hf_rows(path: Path) -> Iterator[tuple[int, dict, str | None]]:
    from xling.deps import require

    datasets = require("datasets", f"{path}: reading a saved Hugging Face dataset")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError, version mismatch, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise XlingError(f"{path}: cannot load the saved dataset ({type(exc).__name__}: {first})") from None
    parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    for split, d in parts:
        names = _hf_label_names(d)
        for i, row in enumerate(d, start=1):
            row = dict(row)
            for col, labels in names.items():
                v = row.get(col)
                if isinstance(v, int) and 0 <= v < len(labels):
                    row[col] = labels[v]
                elif isinstance(v, list):
                    row[col] = [labels[x] if isinstance(x, int) and 0 <= x < len(labels) else x for x in v]
            yield i, row, split


def _hf_label_names(d) -> dict[str, list[str]]:
    """Columns of ClassLabel (or sequences of ClassLabel) -> their names."""
    out = {}
    for col, feat in d.features.items():
        names = getattr(feat, "names", None)
        inner = getattr(feat, "feature", None)
        if names is None and inner is not None:
            names = getattr(inner, "names", None)
        if names is None and isinstance(feat, list) and feat:
            names = getattr(feat[0], "names", None)
        if names:
            out[col] = list(names)
    return out


# ----------------------------------------------------------------------------- building


@dataclass
class _Raw:
    where: str  # file:line
    file: str
    split: str
    lang: str
    example: Example
    raw_label: object  # label name(s) before indexing
    raw_tags: list | None = None


def _get(row: dict, key: str, where: str, what: str):
    if key not in row or row[key] is None:
        raise XlingError(f"{where}: missing field {key!r} ({what})")
    return row[key]


def _text(row: dict, key: str, where: str) -> str:
    v = _get(row, key, where, "text")
    if not isinstance(v, str):
        raise XlingError(f"{where}: field {key!r} is {type(v).__name__}, expected text")
    v = v.strip()
    if not v:
        raise XlingError(f"{where}: empty text in field {key!r}")
    return v


def _list_field(row: dict, key: str, where: str, what: str) -> list:
    v = _get(row, key, where, what)
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            try:
                v = json.loads(s)
            except json.JSONDecodeError:
                raise XlingError(f"{where}: field {key!r} is not a valid JSON list") from None
        else:
            v = s.split()
    if not isinstance(v, list):
        raise XlingError(f"{where}: field {key!r} must be a list ({what})")
    return v


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _choice_index(v, n: int, where: str) -> int:
    if isinstance(v, bool):
        v = None
    if isinstance(v, str):
        s = v.strip()
        if s.isdigit():
            v = int(s)
        elif len(s) == 1 and s.upper() in _LETTERS:
            v = _LETTERS.index(s.upper())
        else:
            v = None
    if not isinstance(v, int) or not 0 <= v < n:
        raise XlingError(f"{where}: unknown label {v!r}: expected a choice index 0..{n - 1} or letter")
    return v


def _parse_row(spec: TaskSpec, row: dict, where: str) -> tuple[Example, object, list | None]:
    ex_id = row.get(spec.id) if spec.id else None
    ex_id = None if ex_id in (None, "") else str(ex_id)
    if spec.type == "classification":
        texts = [_text(row, k, where) for k in spec.text]
        label = _get(row, spec.label, where, "label")
        ex = Example(text=texts[0], text_pair=texts[1] if len(texts) > 1 else None, id=ex_id)
        return ex, label, None
    if spec.type == "generation":  # the input and its reference output
        return Example(text=_text(row, spec.text[0], where), target=_text(row, spec.target, where), id=ex_id), None, None
    if spec.type == "token-classification":
        tokens = [str(t) for t in _list_field(row, spec.tokens, where, "words")]
        tags = _list_field(row, spec.tags, where, "one tag per word")
        if not tokens or any(not t.strip() for t in tokens):
            raise XlingError(f"{where}: empty text in field {spec.tokens!r} (no words, or an empty word)")
        if len(tags) != len(tokens):
            raise XlingError(f"{where}: {len(tokens)} words but {len(tags)} tags")
        return Example(tokens=tokens, id=ex_id), None, tags
    # multiple choice
    context = [_text(row, k, where) for k in spec.text if k in row and row[k] not in (None, "")] if spec.text else []
    if isinstance(spec.choices, list):
        choices = [_text(row, k, where) for k in spec.choices]
    else:
        choices = [str(c).strip() for c in _list_field(row, spec.choices, where, "choices")]
        if any(not c for c in choices):
            raise XlingError(f"{where}: empty text in a choice of field {spec.choices!r}")
    if len(choices) < 2:
        raise XlingError(f"{where}: multiple choice needs at least two choices, got {len(choices)}")
    label = _choice_index(_get(row, spec.label, where, "label"), len(choices), where)
    ex = Example(text=context[0] if context else None, text_pair=context[1] if len(context) > 1 else None,
                 choices=choices, label=label, id=ex_id)
    return ex, label, None


def _norm_lang(code, where: str) -> str:
    from xling.data.langcodes import normalize_lang

    if code is None or str(code).strip() == "":
        raise XlingError(f"{where}: no language (no language field in the row and none given for the file)")
    try:
        return normalize_lang(str(code))
    except XlingError:
        raise XlingError(f"{where}: unknown language code {str(code)!r}") from None


_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev", "development": "dev", "eval": "dev"}


def load_task_spec(spec: TaskSpec | dict | str | os.PathLike) -> Task:
    """Read the files a spec names into a validated :class:`Task`."""
    if not isinstance(spec, TaskSpec):
        spec = TaskSpec.from_dict(spec) if isinstance(spec, dict) else TaskSpec.from_file(spec)
    base = Path(spec.base) if spec.base else Path(".")
    raws: list[_Raw] = []
    for entry in spec.files:
        path = Path(entry["path"]).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.exists():
            raise XlingError(f"task file not found: {path}")
        fmt = _format_of(path, entry.get("format"))
        file_lang = entry.get("lang")
        file_split = entry.get("split")
        n_before = len(raws)
        for lineno, row, hf_split in _rows(path, fmt):
            where = f"{path}:{lineno}" if hf_split is None else f"{path}[{hf_split}]:{lineno}"
            lang_v = row.get(spec.lang) if spec.lang and row.get(spec.lang) not in (None, "") else file_lang
            split_v = row.get(spec.split) if spec.split and row.get(spec.split) not in (None, "") else (file_split or hf_split)
            lang = _norm_lang(lang_v, where)
            if split_v is None or str(split_v).strip() == "":
                raise XlingError(f"{where}: no split (no split field in the row and none given for the file)")
            split = _SPLIT_ALIASES.get(str(split_v).strip().lower(), str(split_v).strip().lower())
            ex, label, tags = _parse_row(spec, row, where)
            raws.append(_Raw(where, str(path), split, lang, ex, label, tags))
        if len(raws) == n_before:
            raise XlingError(f"{path}: no examples")
    return _assemble(spec, raws)


def _label_names(spec: TaskSpec, raws: list[_Raw]) -> list[str]:
    if spec.type == "generation":
        return []
    if spec.type == "multiple-choice":
        n = max(len(r.example.choices) for r in raws)
        return [str(i) for i in range(n)]
    if spec.labels is not None:
        labels = [str(x) for x in spec.labels]
        if len(set(labels)) != len(labels):
            raise XlingError(f"task spec {spec.name}: duplicate labels")
        return labels
    pool = [r for r in raws if r.split == "train" and r.lang == spec.source_lang] or raws
    seen: set[str] = set()
    for r in pool:
        if spec.type == "token-classification":
            seen.update(str(t) for t in r.raw_tags)
        else:
            seen.add(str(r.raw_label))
    if spec.type == "token-classification":
        seen.add("O")
        return ["O"] + sorted(seen - {"O"}, key=lambda t: (t[2:], t[:2]))
    return sorted(seen)


def _assemble(spec: TaskSpec, raws: list[_Raw]) -> Task:
    if not raws:
        raise XlingError(f"task {spec.name}: no examples")
    labels = _label_names(spec, raws)
    index = {name: i for i, name in enumerate(labels)}
    origin = "the given labels" if spec.labels is not None else f"the labels of the {spec.source_lang} training data"
    data: dict[str, dict[str, list[Example]]] = {}
    seen: dict[tuple[str, str], set[str]] = {}
    first_file: dict[tuple[str, str], str] = {}
    for r in raws:
        ex = r.example
        if spec.type == "classification":
            name = str(r.raw_label)
            if name not in index:
                raise XlingError(f"{r.where}: unknown label {name!r} (not among {origin}: {', '.join(labels)})")
            ex.label = index[name]
            observed = {name}
        elif spec.type == "token-classification":
            tags = []
            for t in r.raw_tags:
                is_index = isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(labels)
                name = labels[t] if is_index and spec.labels else str(t)
                if name not in index:
                    raise XlingError(f"{r.where}: unknown label {name!r} (not among {origin}: {', '.join(labels)})")
                tags.append(index[name])
            ex.tags = tags
            # compare entity types across languages: a rare I- tag may be absent from a small split
            observed = {labels[t].partition("-")[2] or labels[t] for t in tags} - {"O"}
        else:
            observed = set()
        data.setdefault(r.split, {}).setdefault(r.lang, []).append(ex)
        seen.setdefault((r.split, r.lang), set()).update(observed)
        first_file.setdefault((r.split, r.lang), r.file)
    if spec.strict_labels and spec.type != "multiple-choice":
        for split, table in data.items():
            langs = sorted(table)
            if len(langs) < 2:
                continue
            ref = spec.source_lang if spec.source_lang in table else langs[0]
            for lang in langs:
                a, b = seen[(split, ref)], seen[(split, lang)]
                if a != b:
                    missing, extra = sorted(a - b), sorted(b - a)
                    detail = (f"lacks {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") + (
                        f"has extra {', '.join(extra)}" if extra else "")
                    raise XlingError(
                        f"{first_file[(split, lang)]}: label set of {lang} in the {split} split differs from {ref} "
                        f"({detail}); set strict_labels false to allow it"
                    )
    return Task(spec.name, spec.type, labels, data, spec.source_lang,
                {"spec": {k: v for k, v in spec.__dict__.items() if k != "files"}, "files": spec.files})


__all__ = ["TaskSpec", "load_task_spec", "FORMATS"]
