"""Corpus readers: every ``--data`` spec becomes a :class:`ParallelCorpus`.

:func:`load_corpus` is the single entry point. It understands

* ``None`` or ``"django"``: the built-in corpus (:mod:`xling.data.django_corpus`);
* a provider name from :data:`PROVIDERS` (``"libreoffice"``,
  ``"libreoffice-help"``, ``"libreoffice-ui"``); adding a provider is one
  function decorated with :func:`register_provider`. A bare name always
  means the provider: write ``./django`` for a folder called ``django``
  (task corpora, ``task:NAME``, are read one layer up:
  :func:`xling.harness.sources.load_text_source`);
* a folder in FLORES-200 layout (:func:`read_flores`): one file per language,
  ``<code>.<split>`` or ``<code>.txt``, or one sub-folder per split;
* an aligned ``.tsv`` file with a header row of language codes
  (:func:`read_tsv`), or a ``.jsonl`` file with one ``{code: sentence}``
  object per line (:func:`read_jsonl`);
* plain text files, one sentence per line: ``"eng=a.txt,deu=b.txt"``
  (:func:`read_text_files`).

All readers decode UTF-8 (a BOM is stripped; undecodable bytes name the file
and line), normalise language codes with
:func:`~xling.data.langcodes.normalize_lang`, check that every language has
the same number of lines, and drop rows where any language has an empty
sentence, counting them in ``corpus.meta["dropped_empty"]``. Row-aligned
metadata (``meta["ids"]``, ``meta["labels"]``) stays aligned with the
sentences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from xling.data.corpus import ParallelCorpus
from xling.data.files import json_objects, parse_json, read_lines, read_text
from xling.data.langcodes import normalize_lang
from xling.errors import XlingError
from xling.registry import Registry

#: Columns / keys that carry row metadata instead of a language.
_META_COLUMNS = {"id": "ids", "label": "labels"}

#: Preferred split names for FLORES-style folders, best first.
SPLIT_PREFERENCE = ("devtest", "dev", "test", "valid", "validation", "train")

Provider = Callable[[Sequence[str] | None, int | None], ParallelCorpus]

#: Built-in corpora by name (any case): ``name -> f(langs, max_sentences) -> ParallelCorpus``.
PROVIDERS = Registry(kind="corpus", ignore_case=True)


def register_provider(*names: str) -> Callable[[Provider], Provider]:
    """Decorator: make ``f(langs, max_sentences)`` loadable as ``--data <name>`` (the other names are aliases)."""
    return PROVIDERS.register(names[0], aliases=names[1:])


@register_provider("django", "builtin", "default")
def _django(langs, max_sentences):
    from xling.data.django_corpus import django_corpus

    return django_corpus(langs=list(langs) if langs is not None else None, max_sentences=max_sentences)


@register_provider("libreoffice", "libreoffice-help")
def _libreoffice_help(langs, max_sentences):
    from xling.data.libreoffice import libreoffice_help_corpus

    return libreoffice_help_corpus(langs=list(langs) if langs is not None else None, max_sentences=max_sentences)


@register_provider("firefox")
def _firefox(langs, max_sentences):
    from xling.data.firefox import firefox_corpus

    return firefox_corpus(langs=list(langs) if langs is not None else None, max_sentences=max_sentences)


@register_provider("bible")
def _bible(langs, max_sentences):
    from xling.data.bible import bible_corpus

    return bible_corpus(langs=list(langs) if langs is not None else None, max_sentences=max_sentences)


@register_provider("bible:mexa")
def _bible_mexa(langs, max_sentences):
    from xling.data.bible import bible_corpus

    return bible_corpus(langs=list(langs) if langs is not None else None, max_sentences=max_sentences, sample="mexa")


@register_provider("libreoffice-ui")
def _libreoffice_ui(langs, max_sentences):
    from xling.data.libreoffice import libreoffice_ui_corpus

    return libreoffice_ui_corpus(langs=list(langs) if langs is not None else None, max_sentences=max_sentences)


def _norm_header(code: str, where: str) -> str:
    try:
        return normalize_lang(code)
    except XlingError:
        raise XlingError(f"{where}: unknown language code {code.strip()!r}") from None


def build_corpus(
    name: str,
    columns: dict[str, list[str]],
    meta: dict | None = None,
    row_meta: dict[str, list] | None = None,
    what: str | None = None,
) -> ParallelCorpus:
    """Make a corpus from equal-length columns, dropping rows with an empty sentence.

    ``row_meta`` lists (e.g. ``ids``, ``labels``) are filtered alongside the
    sentences and stored in ``meta``. Sentences are stripped of surrounding
    whitespace. ``what`` names the source in the error for an empty result.
    """
    meta = dict(meta or {})
    row_meta = dict(row_meta or {})
    langs = list(columns)
    n = len(columns[langs[0]]) if langs else 0
    keep = []
    dropped = 0
    stripped = {lang: [s.strip() for s in col] for lang, col in columns.items()}
    for i in range(n):
        if all(stripped[lang][i] for lang in langs):
            keep.append(i)
        else:
            dropped += 1
    meta["dropped_empty"] = meta.get("dropped_empty", 0) + dropped
    if not keep:
        source = what or name
        detail = f" after dropping {dropped} rows with an empty sentence" if dropped else ""
        raise XlingError(f"corpus {source} is empty: no sentences{detail}")
    sentences = {lang: [stripped[lang][i] for i in keep] for lang in langs}
    for key, values in row_meta.items():
        meta[key] = [values[i] for i in keep]
    return ParallelCorpus(name, sentences, meta)


def restrict(corpus: ParallelCorpus, langs: Sequence[str] | None, max_sentences: int | None) -> ParallelCorpus:
    """:meth:`ParallelCorpus.select`, keeping row-aligned metadata aligned."""
    if langs is None and max_sentences is None:
        return corpus
    return corpus.select(list(langs) if langs is not None else None, max_sentences)


# --------------------------------------------------------------------------
# FLORES-200 folders
# --------------------------------------------------------------------------


def _flores_files(folder: Path) -> dict[str, dict[str, Path]]:
    """``split -> {normalised lang: file}`` for the language files directly in ``folder``."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        stem, dot, split = path.name.partition(".")
        if not dot or not split or "." in split:
            continue
        try:
            lang = normalize_lang(stem)
        except XlingError:
            continue  # README.txt, metadata files, ...
        table = found.setdefault(split, {})
        if lang in table:
            raise XlingError(f"{folder}: {table[lang].name} and {path.name} are both {lang}")
        table[lang] = path
    return found


def read_flores(folder: str | os.PathLike, split: str | None = None) -> ParallelCorpus:
    """Read a FLORES-200 style folder: one ``<code>.<split>`` (or ``<code>.txt``) file per language.

    The folder may also hold one sub-folder per split (``dev/``, ``devtest/``,
    as in the FLORES-200 release). ``split`` picks one; without it the only
    split is used, or the first of :data:`SPLIT_PREFERENCE` present.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise XlingError(f"corpus not found: {folder}")
    splits = _flores_files(folder)
    # FLORES-200 release layout: <root>/<split>/<code>.<split>
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for name, table in _flores_files(sub).items():
            key = sub.name if name in (sub.name, "txt") else f"{sub.name}/{name}"
            if key in splits:
                continue
            splits[key] = table
    if not splits:
        raise XlingError(f"{folder}: no language files (expected e.g. eng_Latn.devtest or eng_Latn.txt)")
    if split is None:
        if len(splits) == 1:
            split = next(iter(splits))
        else:
            split = next((s for s in SPLIT_PREFERENCE if s in splits), None)
            if split is None:
                raise XlingError(f"{folder}: several splits ({', '.join(sorted(splits))}); choose one with split=")
    elif split not in splits:
        raise XlingError(f"{folder}: no split {split!r}; it has: {', '.join(sorted(splits))}")
    files = splits[split]
    columns: dict[str, list[str]] = {}
    first: tuple[Path, int] | None = None
    for lang, path in sorted(files.items()):
        lines = read_lines(path)
        if first is None:
            first = (path, len(lines))
        elif len(lines) != first[1]:
            raise XlingError(
                f"{path} has {len(lines)} lines but {first[0]} has {first[1]}: files of one split must align line by line"
            )
        columns[lang] = lines
    return build_corpus(
        folder.name,
        columns,
        {"source": str(folder), "format": "flores", "split": split},
        what=str(folder),
    )


# --------------------------------------------------------------------------
# TSV / JSONL
# --------------------------------------------------------------------------


def read_tsv(path: str | os.PathLike) -> ParallelCorpus:
    """Read an aligned TSV file: a header row of language codes, then one row per sentence.

    Columns named ``id`` or ``label`` are kept as ``meta["ids"]`` /
    ``meta["labels"]``. Fields are split on tabs only (no quoting). Blank
    lines are ignored; a row with the wrong number of fields raises
    :class:`XlingError` naming the file and line.
    """
    path = Path(path)
    lines = read_lines(path)
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise XlingError(f"{path}: empty file (expected a header row of language codes)")
    header = lines[header_at].split("\t")
    langs: list[str | None] = []
    meta_cols: dict[int, str] = {}
    for col, code in enumerate(header):
        where = f"{path}:{header_at + 1}"
        if code.strip().lower() in _META_COLUMNS:
            meta_cols[col] = _META_COLUMNS[code.strip().lower()]
            langs.append(None)
            continue
        lang = _norm_header(code, where)
        if lang in langs:
            raise XlingError(f"{where}: language {lang} appears twice in the header")
        langs.append(lang)
    if not any(langs):
        raise XlingError(f"{path}:{header_at + 1}: header names no language")
    columns: dict[str, list[str]] = {lang: [] for lang in langs if lang}
    row_meta: dict[str, list] = {key: [] for key in meta_cols.values()}
    for lineno, line in enumerate(lines[header_at + 1 :], start=header_at + 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise XlingError(f"{path}:{lineno}: expected {len(header)} tab-separated columns, got {len(fields)}")
        for col, value in enumerate(fields):
            if langs[col]:
                columns[langs[col]].append(value)
            else:
                row_meta[meta_cols[col]].append(value.strip())
    if not next(iter(columns.values())):
        raise XlingError(f"corpus {path} is empty: no sentences after the header")
    return build_corpus(path.stem, columns, {"source": str(path), "format": "tsv"}, row_meta, what=str(path))


def read_jsonl(path: str | os.PathLike) -> ParallelCorpus:
    """Read JSON Lines: one object per line mapping language code -> sentence.

    The first object fixes the languages; every later one must have exactly
    those (keys ``id`` and ``label`` are kept as row metadata). Blank lines
    are ignored. Invalid JSON, a non-object, a missing or unexpected language
    or a non-string sentence raises :class:`XlingError` naming file and line.
    """
    path = Path(path)
    langs: dict[str, str] | None = None  # normalised -> key as written in the first object
    columns: dict[str, list[str]] = {}
    row_meta: dict[str, list] = {}
    for lineno, obj in json_objects(path, "a JSON object mapping language code to sentence"):
        where = f"{path}:{lineno}"
        row: dict[str, str] = {}
        written: dict[str, str] = {}
        meta_row: dict[str, object] = {}
        for key, value in obj.items():
            if key.strip().lower() in _META_COLUMNS:
                meta_row[_META_COLUMNS[key.strip().lower()]] = value
                continue
            lang = _norm_header(key, where)
            if lang in row:
                raise XlingError(f"{where}: language {lang} appears twice ({written[lang]!r} and {key!r})")
            if not isinstance(value, str):
                raise XlingError(f"{where}: value for {key!r} is {type(value).__name__}, expected a string")
            row[lang] = value
            written[lang] = key
        if langs is None:
            if not row:
                raise XlingError(f"{where}: object names no language")
            langs = written
            columns = {lang: [] for lang in langs}
            row_meta = {key: [] for key in meta_row}
        missing = [langs[lang] for lang in langs if lang not in row]
        if missing:
            raise XlingError(f"{where}: missing language key {missing[0]!r}")
        extra = [written[lang] for lang in row if lang not in langs]
        if extra:
            raise XlingError(f"{where}: unexpected language key {extra[0]!r} (the first line has {', '.join(langs.values())})")
        for lang in langs:
            columns[lang].append(row[lang])
        for key in row_meta:
            row_meta[key].append(meta_row.get(key))
    if langs is None:
        raise XlingError(f"corpus {path} is empty: no JSON lines")
    return build_corpus(path.stem, columns, {"source": str(path), "format": "jsonl"}, row_meta, what=str(path))


# --------------------------------------------------------------------------
# plain text files
# --------------------------------------------------------------------------


def parse_text_spec(spec: str) -> list[tuple[str, str]]:
    """``"eng=a.txt,deu=b.txt"`` -> ``[("eng", "a.txt"), ("deu", "b.txt")]``."""
    pairs = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lang, eq, path = part.partition("=")
        if not eq or not lang.strip() or not path.strip():
            raise XlingError(f"bad corpus spec {part!r}: expected LANG=FILE[,LANG=FILE...]")
        pairs.append((lang.strip(), path.strip()))
    if len(pairs) < 2:
        raise XlingError(f"bad corpus spec {spec!r}: need at least two LANG=FILE pairs")
    return pairs


def read_text_files(files: str | Iterable[tuple[str, str | os.PathLike]]) -> ParallelCorpus:
    """Read two or more plain text files, one sentence per line, aligned by line.

    ``files`` is ``"eng=a.txt,deu=b.txt"`` or a list of ``(lang, path)``.
    Line counts must match (the error names both files and counts).
    """
    pairs = parse_text_spec(files) if isinstance(files, str) else [(lang, p) for lang, p in files]
    if len(pairs) < 2:
        raise XlingError("plain text corpus: need at least two LANG=FILE pairs")
    columns: dict[str, list[str]] = {}
    paths: dict[str, Path] = {}
    first: tuple[Path, int] | None = None
    for code, p in pairs:
        path = Path(p)
        try:
            lang = normalize_lang(code)
        except XlingError:
            raise XlingError(f"unknown language code {code!r} (for {path})") from None
        if lang in columns:
            raise XlingError(f"{paths[lang]} and {path} are both {lang}")
        if not path.is_file():
            raise XlingError(f"corpus not found: {path}")
        lines = read_lines(path)
        if first is None:
            first = (path, len(lines))
        elif len(lines) != first[1]:
            raise XlingError(f"{path} has {len(lines)} lines but {first[0]} has {first[1]}: files must align line by line")
        columns[lang] = lines
        paths[lang] = path
    name = "+".join(p.stem for p in paths.values())
    meta = {"source": ",".join(f"{k}={v}" for k, v in paths.items()), "format": "text"}
    return build_corpus(name, columns, meta, what=", ".join(str(p) for p in paths.values()))


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------


def load_corpus(
    spec: str | os.PathLike | None,
    langs: Sequence[str] | None = None,
    max_sentences: int | None = None,
    split: str | None = None,
) -> ParallelCorpus:
    """Load the corpus named by a ``--data`` spec (see the module docstring).

    ``langs`` restricts the corpus to those languages (any spelling
    :func:`normalize_lang` accepts; a missing one is an error; a built-in
    provider keeps its English pivot besides them) and
    ``max_sentences`` keeps the first rows. ``split`` picks a split of a
    FLORES-style folder.
    """
    if max_sentences is not None and int(max_sentences) < 1:
        raise XlingError(f"max_sentences must be at least 1, got {max_sentences}")
    if spec is None:
        spec = "django"
    text = os.fspath(spec)
    key = text.strip().lower() if isinstance(text, str) else ""
    bare_name = isinstance(spec, str) and not any(sep in text for sep in ("/", "\\", os.sep))
    if key.startswith("task:") and key not in PROVIDERS:
        # The data layer imports nothing above it: a task's corpus is read one layer up.
        raise XlingError(f"{text}: task corpora are read by xling.harness.sources.load_text_source "
                         "(xling.load_corpus), not by the data layer")

    if key in PROVIDERS and bare_name:
        # A bare name is a provider even if a folder of that name exists
        # (write ./django for the folder). Providers choose their languages
        # themselves (English pivot included).
        corpus = PROVIDERS[key](langs, max_sentences)
        return restrict(corpus, None, max_sentences)
    if key.startswith("hf:"):
        raise XlingError(f"Hugging Face corpora ({text}) are not supported; download the files and pass a folder or file")
    path = Path(text).expanduser()
    if not path.exists() and "=" in text:
        corpus = read_text_files(text)
    elif not path.exists():
        raise XlingError(f"corpus not found: {path}")
    elif path.is_dir():
        corpus = read_flores(path, split=split)
    elif path.suffix.lower() == ".tsv":
        corpus = read_tsv(path)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        corpus = read_jsonl(path)
    else:
        known = ", ".join(PROVIDERS.names(aliases=True))
        raise XlingError(
            f"{path}: unknown corpus format (expected a folder, .tsv, .jsonl, LANG=FILE,LANG=FILE, or one of: {known})"
        )
    return restrict(corpus, langs, max_sentences)


__all__ = [
    "PROVIDERS",
    "register_provider",
    "load_corpus",
    "read_flores",
    "read_tsv",
    "read_jsonl",
    "read_text_files",
    "parse_text_spec",
    "read_lines",
    "read_text",
    "parse_json",
    "build_corpus",
    "restrict",
]
