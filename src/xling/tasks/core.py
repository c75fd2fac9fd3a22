"""Task data: labelled examples per split and language, for zero-shot cross-lingual transfer.

A :class:`Task` holds ``data[split][lang] -> list[Example]`` for one of three
task types:

* ``classification``: one text (``text``) or a text pair (``text`` + ``text_pair``)
  with one label out of :attr:`Task.labels`;
* ``token-classification``: a list of words (``tokens``) with one tag per word
  (``tags``, indices into :attr:`Task.labels`, BIO scheme: ``B-PER``, ``I-PER``, ``O``);
* ``multiple-choice``: a context (``text``, optionally ``text_pair``) and a list
  of ``choices``; the label is the index of the right choice;
* ``generation``: an input (``text``) and the reference output (``target``), scored by
  prompted generation with a decoder (:mod:`xling.tasks.generation`); no labels. A
  translation task (``meta["translation"]``, the built-in ``bible-mt``) holds parallel
  texts instead (``text`` only; rows with the same ``id`` are translations).

The usual protocol (XTREME, Hu et al. 2020) trains on the source language
(:attr:`Task.source_lang`, English by default) and evaluates on every language
of the test split. Languages are normalised codes (``deu_Latn``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from xling.errors import XlingError

TASK_TYPES = ("classification", "token-classification", "multiple-choice", "generation")
SPLITS = ("train", "dev", "test")


@dataclass
class Example:
    """One labelled example; which fields are set depends on the task type."""

    text: str | None = None
    text_pair: str | None = None
    tokens: list[str] | None = None
    tags: list[int] | None = None
    choices: list[str] | None = None
    label: int | None = None
    id: str | None = None
    target: str | None = None  # generation: the reference output

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, obj: dict) -> "Example":
        return cls(**obj)

    def length_hint(self) -> int:
        """A cheap length proxy (characters) for sorting before tokenization."""
        if self.tokens is not None:
            return sum(len(t) + 1 for t in self.tokens)
        n = len(self.text or "") + len(self.text_pair or "")
        if self.choices:
            n += max(len(c) for c in self.choices)
        return n


@dataclass
class Task:
    """Labelled examples per split and language.

    ``labels``: class names (classification), tag names (token classification),
    or choice names ``["0", "1", ...]`` (multiple choice, informative only).
    ``data[split][lang]``: the examples. ``meta``: where it came from.
    """

    name: str
    type: str
    labels: list[str]
    data: dict[str, dict[str, list[Example]]]
    source_lang: str = "eng_Latn"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.type not in TASK_TYPES:
            raise XlingError(f"task {self.name}: unknown type {self.type!r} (use {', '.join(TASK_TYPES)})")

    # -------------------------------------------------------------- access

    @property
    def splits(self) -> list[str]:
        order = [s for s in SPLITS if s in self.data] + sorted(s for s in self.data if s not in SPLITS)
        return [s for s in order if self.data[s]]

    def langs(self, split: str = "test") -> list[str]:
        return sorted(self.data.get(split, {}))

    def capped(self, sizes: dict[str, int | None]) -> "Task":
        """This task with at most ``sizes[split]`` examples (the first ones) per language of each split named
        (``--train-size``/``--dev-size``/``--test-size``); other splits unchanged. A new Task (content-hashed
        fingerprint, so caches tell the two apart)."""
        import dataclasses

        data = {split: {lg: (exs[:sizes[split]] if sizes.get(split) else exs) for lg, exs in table.items()}
                for split, table in self.data.items()}
        return dataclasses.replace(self, data=data, meta=dict(self.meta))

    def examples(self, split: str, lang: str) -> list[Example]:
        table = self.data.get(split)
        if not table:
            have = ", ".join(s for s in self.data if self.data[s]) or "none"
            raise XlingError(f"task {self.name} has no {split} split (it has: {have})")
        if lang not in table:
            raise XlingError(f"task {self.name} has no {split} data for {lang}; it has: {', '.join(sorted(table))}")
        return table[lang]

    def resolve_lang(self, code: str, split: str = "test") -> str:
        """The task language matching any spelling of ``code`` (``de`` -> ``deu_Latn``)."""
        from xling.data.langcodes import match_lang, normalize_lang

        norm = normalize_lang(code)
        have = self.data.get(split, {})
        match = match_lang(norm, have)  # xling's one rule (macrolanguages included), see match_lang
        if match is not None:
            return match
        raise XlingError(
            f"language {code} ({norm}) is not in the {split} split of task {self.name}; it has: {', '.join(sorted(have))}"
        )

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    # -------------------------------------------------------------- identity

    def fingerprint(self, split: str | None = None, lang: str | None = None) -> str:
        """A content hash of the task (or of one split/language): type, labels, examples."""
        h = hashlib.sha256(json.dumps([self.type, self.labels], ensure_ascii=False).encode())
        for s in sorted(self.data):
            if split is not None and s != split:
                continue
            for lg in sorted(self.data[s]):
                if lang is not None and lg != lang:
                    continue
                h.update(f"{s}/{lg}".encode())
                h.update(examples_hash(self.data[s][lg]).encode())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        parts = []
        for s in self.data:
            langs = self.data[s]
            if not langs:
                continue
            sizes = sorted({len(v) for v in langs.values()})
            size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            parts.append(f"{s}: {len(langs)} language{'s' if len(langs) != 1 else ''} x {size}")
        return f"{self.name} ({self.type}, {len(self.labels)} labels; " + "; ".join(parts) + ")"

    # -------------------------------------------------------------- (de)serialisation

    def to_json(self) -> dict:
        return {
            "format": "xling-task/1", "name": self.name, "type": self.type, "labels": self.labels,
            "source_lang": self.source_lang, "meta": self.meta,
            "data": {s: {lg: [e.to_json() for e in ex] for lg, ex in t.items()} for s, t in self.data.items()},
        }

    @classmethod
    def from_json(cls, obj: dict, where: str = "task file") -> "Task":
        if not isinstance(obj, dict) or obj.get("format") != "xling-task/1":
            raise XlingError(f"{where}: not an xling task file (format xling-task/1 expected)")
        _check_task_json(obj, where)
        data = {s: {lg: [Example.from_json(e) for e in ex] for lg, ex in t.items()} for s, t in obj["data"].items()}
        return cls(obj["name"], obj["type"], list(obj["labels"]), data, obj.get("source_lang", "eng_Latn"),
                   obj.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        from xling.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Task":
        from xling.data.readers import parse_json, read_text

        if not Path(path).is_file():
            raise XlingError(f"task file not found: {path}")
        return cls.from_json(parse_json(read_text(path), path), where=str(path))


#: Fields of a saved example and the JSON types they accept.
_EXAMPLE_TYPES = {"text": str, "text_pair": str, "tokens": list, "tags": list, "choices": list, "label": int, "id": str,
                  "target": str}


def _check_task_json(obj: dict, where: str) -> None:
    """The shape of an ``xling-task/1`` file, checked before use: one line naming what is wrong."""
    for key, kind in (("name", str), ("type", str), ("labels", list), ("data", dict)):
        if key not in obj:
            raise XlingError(f"{where}: xling task file without {key!r}")
        if not isinstance(obj[key], kind):
            raise XlingError(f"{where}: {key!r} must be a {'JSON object' if kind is dict else kind.__name__}")
    if not all(isinstance(x, str) for x in obj["labels"]):
        raise XlingError(f"{where}: 'labels' must be a list of strings")
    if not isinstance(obj.get("source_lang", ""), str) or not isinstance(obj.get("meta", {}), dict):
        raise XlingError(f"{where}: 'source_lang' must be a string and 'meta' an object")
    for split, table in obj["data"].items():
        if not isinstance(table, dict):
            raise XlingError(f"{where}: data[{split!r}] must map languages to lists of examples")
        for lang, examples in table.items():
            if not isinstance(examples, list):
                raise XlingError(f"{where}: data[{split!r}][{lang!r}] must be a list of examples")
            for i, e in enumerate(examples):
                at = f"{where}: data[{split!r}][{lang!r}][{i}]"
                if not isinstance(e, dict):
                    raise XlingError(f"{at} must be an object")
                for k, v in e.items():
                    kind = _EXAMPLE_TYPES.get(k)
                    if kind is None:
                        raise XlingError(f"{at}: unknown field {k!r}")
                    if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
                        raise XlingError(f"{at}: field {k!r} must be {kind.__name__}, got {type(v).__name__}")


def examples_hash(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


__all__ = ["Task", "Example", "TASK_TYPES", "SPLITS", "examples_hash"]
