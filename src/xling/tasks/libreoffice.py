"""``libreoffice-topic``: which LibreOffice application does a help paragraph document?

A real, offline, highly multilingual topic-classification task built from the
LibreOffice help shipped in Debian (``libreoffice-help-<lang>``, read through
:mod:`xling.data.libreoffice`). Every help page lives under the folder of the
application it documents, and every paragraph keeps its source id across
languages, so one English label set labels the same paragraph in about 30
languages: a parallel test set in the style of XNLI/PAWS-X (XTREME, Hu et al.
2020), with train and dev data in English only (zero-shot cross-lingual transfer).

Classes (help folder -> label): ``swriter`` -> writer, ``scalc`` -> calc,
``simpress`` and ``sdraw`` -> impress-draw (Draw has only about 250 usable
paragraphs, and the two applications share the drawing layer, most dialogs and
much of their help), ``smath`` -> math, ``sbasic`` -> basic, ``schart`` ->
chart. ``shared`` (about 45% of all paragraphs: generic dialogs, options, file
formats) is not topical and is dropped. ``sdatabase`` (Base) is dropped too:
its help is untranslated (falls back to English) in most languages (Debian 12:
no Base paragraph of the test pool is translated in all of the 12 best covered
languages), so it cannot be part of a parallel test set.

Construction, deterministic for a given ``seed`` and set of Debian packages:

1. English paragraphs of a mapped application with at least ``min_chars``
   characters and ``min_words`` words (headings and captions are too short to
   say anything).
2. Near-duplicates: English texts are normalised (case, digits, punctuation,
   spaces). A normalised text found under two applications is ambiguous and
   dropped; otherwise only its first paragraph is kept.
3. Groups: paragraphs sharing a source id (``par_id3154480``, reused when the
   help authors copy a paragraph) are joined into one group (union-find), and
   every group goes wholly to one split, chosen by a seeded hash of the group.
   So neither a translation of a test paragraph nor a copy of it with another
   page, nor the same English text, is ever in the training data
   (:func:`check_no_leakage`).
4. A translation counts only when it is present, not identical to English,
   at least ``min_chars // 3`` characters long, and not mostly English (over
   80% of its words are words of the English paragraph: an untranslated
   fallback with a translated prefix, say).
5. Languages, greedily in order of coverage of the test pool: a language is
   added when the pool rows translated in it and in every language already
   added still hold at least ``min_class_rows`` rows of every class. The test
   rows are that intersection: a parallel test set, every language is scored
   on the same paragraphs. (Debian 12: 27 of the 30 languages; Dzongkha,
   Finnish and Hindi help are too sparsely translated.)
6. Sizes: ``train_size`` English training examples, ``dev_size`` English dev
   examples and ``test_size`` test rows per language, drawn class-balanced
   (round-robin over classes in seeded-hash order) as far as each class allows.

The built task is cached as JSON in ``cache_dir("tasks")``, keyed by the
options and the Debian package versions.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from typing import Sequence

from xling.errors import XlingError
from xling.tasks.core import Example, Task

BUILDER_VERSION = 2
NAME = "libreoffice-topic"

#: Help folder under ``text/`` -> class label.
CLASS_MAP = {
    "swriter": "writer",
    "scalc": "calc",
    "simpress": "impress-draw",
    "sdraw": "impress-draw",
    "smath": "math",
    "sbasic": "basic",
    "schart": "chart",
}
LABELS = ["basic", "calc", "chart", "impress-draw", "math", "writer"]
PIVOT = "eng_Latn"

_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """Lowercase, digits -> 0, punctuation dropped, spaces collapsed: the near-duplicate key."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\d+", "0", text)
    text = "".join(c if c.isalnum() or c.isspace() else " " for c in text)
    return " ".join(text.split())


def _h(*parts) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def mostly_english(translation: str, english: str, threshold: float = 0.8) -> bool:
    """Whether over ``threshold`` of the translation's words are words of the English text."""
    words = _WORD.findall(translation.lower())
    if len(words) < 3:
        return False
    en = set(_WORD.findall(english.lower()))
    return sum(w in en for w in words) / len(words) > threshold


def _bare_id(key: str) -> str:
    """``text/swriter/01/x#par_id3154480~2`` -> ``par_id3154480``."""
    return key.partition("#")[2].split("~")[0]


def group_keys(keys: Sequence[str]) -> dict[str, str]:
    """``key -> group`` where keys sharing a bare paragraph id are one group (union-find)."""
    parent: dict[str, str] = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    by_id: dict[str, str] = {}
    for k in sorted(keys):
        pid = _bare_id(k)
        if pid in by_id:
            a, b = find(k), find(by_id[pid])
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            by_id[pid] = k
    return {k: find(k) for k in keys}


def assign_splits(groups: dict[str, str], seed: int, test_frac: float = 0.3, dev_frac: float = 0.1) -> dict[str, str]:
    """``key -> split`` by a seeded hash of each key's group (all members share the split)."""
    out = {}
    for k, g in groups.items():
        u = int(_h("split", seed, g)[:12], 16) / float(1 << 48)
        out[k] = "test" if u < test_frac else "dev" if u < test_frac + dev_frac else "train"
    return out


def balanced_sample(keys: Sequence[str], labels: dict[str, str], n: int, seed: int, salt: str) -> list[str]:
    """Up to ``n`` keys, round-robin over classes, each class in seeded-hash order."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        by_class[labels[k]].append(k)
    for c in by_class:
        by_class[c].sort(key=lambda k: _h(salt, seed, k))
    out: list[str] = []
    pos = {c: 0 for c in by_class}
    classes = sorted(by_class)
    while len(out) < n and any(pos[c] < len(by_class[c]) for c in classes):
        for c in classes:
            if len(out) >= n:
                break
            if pos[c] < len(by_class[c]):
                out.append(by_class[c][pos[c]])
                pos[c] += 1
    return sorted(out, key=lambda k: _h("order", seed, k))


def check_no_leakage(task: Task) -> None:
    """Raise if a paragraph id, a group or a (normalised) English text is in two splits."""
    seen: dict[str, str] = {}
    for split, table in task.data.items():
        for lang, examples in table.items():
            for e in examples:
                keys = [("id", _bare_id(e.id))]
                if lang == PIVOT:
                    keys.append(("text", normalize_text(e.text)))
                for key in keys:
                    k = f"{key[0]}:{key[1]}"
                    if seen.setdefault(k, split) != split:
                        raise XlingError(f"task {task.name}: {key[0]} {key[1]!r} is in both {seen[k]} and {split}")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[libreoffice-topic] {msg}", file=sys.stderr, flush=True)


def libreoffice_topic(
    langs: Sequence[str] | None = None,
    train_size: int = 2000,
    dev_size: int = 300,
    test_size: int = 400,
    min_chars: int = 40,
    min_words: int = 6,
    min_class_rows: int = 50,
    seed: int = 0,
    cache: bool = True,
    quiet: bool = False,
) -> Task:
    """Build (or read from the cache) the ``libreoffice-topic`` task; see the module docstring.

    ``langs``: target languages (default: every help language with a Debian
    package, kept as described in step 5); languages named here are all kept
    (the test rows are their intersection). English is the source and always
    included.
    """
    from xling.data.langcodes import normalize_lang
    from xling.data.libreoffice import _packages, help_label, help_table
    from xling.io import atomic_write_text, cache_dir

    for name, v in (("train_size", train_size), ("dev_size", dev_size), ("test_size", test_size)):
        if v < 1:
            raise XlingError(f"{name} must be at least 1, got {v}")
    packages = _packages("help")
    if PIVOT not in packages:
        raise XlingError("libreoffice-topic: no English LibreOffice help package known to apt (run apt-get update)")
    explicit = langs is not None
    if explicit:
        wanted = []
        for code in langs:
            norm = normalize_lang(code)
            match = norm if norm in packages else next((k for k in packages if k.split("_")[0] == norm.split("_")[0]), None)
            if match is None:
                raise XlingError(f"language {code} ({norm}) has no LibreOffice help package; "
                                 f"available: {', '.join(sorted(packages))}")
            if match != PIVOT and match not in wanted:
                wanted.append(match)
    else:
        wanted = [lang for lang in sorted(packages) if lang != PIVOT]
    options = {
        "langs": sorted(wanted) if explicit else None, "train_size": train_size, "dev_size": dev_size,
        "test_size": test_size, "min_chars": min_chars, "min_words": min_words, "min_class_rows": min_class_rows,
        "seed": seed,
    }

    def cached_path():
        debs = {}
        for lang in [PIVOT, *wanted]:
            have = sorted(cache_dir("debian", "debs").glob(f"{packages[lang]}_*.deb"))
            debs[lang] = have[-1].name if have else None
        key = _h(BUILDER_VERSION, json.dumps(options, sort_keys=True), json.dumps(debs, sort_keys=True))[:16]
        return cache_dir("tasks") / f"{NAME}-{key}.json", debs

    path, debs = cached_path()
    if cache and None not in debs.values() and path.is_file():
        try:
            return Task.load(path)
        except XlingError:
            pass

    _log(f"reading LibreOffice help for {len(wanted) + 1} languages (first use downloads the Debian packages)", quiet)
    english = help_table(PIVOT)

    # 1-2. candidate English paragraphs, near-duplicates dropped
    by_norm: dict[str, list[str]] = defaultdict(list)
    label_of: dict[str, str] = {}
    for k, text in english.items():
        app = help_label(k.split("#")[0])
        if app not in CLASS_MAP or len(text) < min_chars or len(text.split()) < min_words:
            continue
        label_of[k] = CLASS_MAP[app]
        by_norm[normalize_text(text)].append(k)
    keys: list[str] = []
    ambiguous = 0
    for norm, ks in by_norm.items():
        if len({label_of[k] for k in ks}) > 1:
            ambiguous += len(ks)
            continue
        keys.append(min(ks))
    keys.sort()
    # 3. group-wise split
    split_of = assign_splits(group_keys(keys), seed)
    pool = {s: [k for k in keys if split_of[k] == s] for s in ("train", "dev", "test")}

    # 4-5. translations and languages
    tables: dict[str, dict[str, str]] = {}
    coverage: dict[str, float] = {}
    min_trans = max(1, min_chars // 3)
    for i, lang in enumerate(wanted, 1):
        _log(f"{lang} ({i}/{len(wanted)})", quiet)
        table = help_table(lang)
        ok = {}
        for k in pool["test"]:
            t = table.get(k)
            if t is None or t == english[k] or len(t.strip()) < min_trans or mostly_english(t, english[k]):
                continue
            ok[k] = t
        tables[lang] = ok
        coverage[lang] = len(ok) / max(1, len(pool["test"]))
    chosen: list[str] = []
    current = set(pool["test"])
    dropped = {}
    for lang in sorted(wanted, key=lambda x: (-coverage[x], x)):
        trial = current & set(tables[lang])
        counts = Counter(label_of[k] for k in trial)
        if explicit or all(counts.get(c, 0) >= min_class_rows for c in LABELS):
            chosen.append(lang)
            current = trial
        else:
            dropped[lang] = {"coverage": round(coverage[lang], 3), "class_rows_left": dict(sorted(counts.items()))}
    chosen.sort()
    if not chosen:
        raise XlingError(f"libreoffice-topic: no language keeps {min_class_rows} test rows per class")
    test_keys = [k for k in pool["test"] if k in current]
    if not test_keys:
        raise XlingError(f"libreoffice-topic: no test paragraph is translated in all of {', '.join(chosen)}")

    # 6. class-balanced samples
    train = balanced_sample(pool["train"], label_of, train_size, seed, "train")
    dev = balanced_sample(pool["dev"], label_of, dev_size, seed, "dev")
    test = balanced_sample(test_keys, label_of, test_size, seed, "test")
    index = {name: i for i, name in enumerate(LABELS)}

    def examples(ks: list[str], table: dict[str, str]) -> list[Example]:
        return [Example(text=table[k], label=index[label_of[k]], id=k) for k in ks]

    data = {
        "train": {PIVOT: examples(train, english)},
        "dev": {PIVOT: examples(dev, english)},
        "test": {PIVOT: examples(test, english), **{lang: examples(test, tables[lang]) for lang in chosen}},
    }
    path, debs = cached_path()  # every package is downloaded now
    meta = {
        "builder_version": BUILDER_VERSION, "options": options, "debian_packages": debs,
        "candidates": len(keys), "ambiguous_dropped": ambiguous,
        "pool_sizes": {s: len(v) for s, v in pool.items()}, "test_rows_in_all_languages": len(test_keys),
        "coverage": {k: round(v, 3) for k, v in coverage.items()}, "languages_dropped": dropped,
        "class_counts": {s: dict(sorted(Counter(label_of[k] for k in ks).items())) for s, ks in
                         (("train", train), ("dev", dev), ("test", test))},
        "source": "Debian libreoffice-help-* packages (LibreOffice help, MPL-2.0)",
    }
    task = Task(NAME, "classification", list(LABELS), data, PIVOT, meta)
    check_no_leakage(task)
    if cache:
        atomic_write_text(path, json.dumps(task.to_json(), ensure_ascii=False))
    _log(task.summary(), quiet)
    return task


def unlabeled_text(lang: str, task: Task | None = None, *, min_chars: int = 20, min_words: int = 3,
                   quiet: bool = True) -> list[str]:
    """Unlabeled in-domain text for a language module: LibreOffice help paragraphs in ``lang``.

    Every help paragraph of the language (all applications, ``shared`` included)
    with at least ``min_chars`` characters and ``min_words`` words, except:
    paragraphs whose id (bare ``par_id``) is the id of a dev or test example of
    ``task`` (default: the built-in ``libreoffice-topic``), paragraphs whose text
    equals a dev/test text of that language, and, for languages other than
    English, untranslated fallbacks (text identical to the English paragraph, or
    mostly English words). Duplicates are kept once, in help-file order. So a
    language module never sees the text it is evaluated on.
    """
    from xling.data.langcodes import normalize_lang
    from xling.data.libreoffice import _packages, help_table

    code = normalize_lang(lang)
    packages = _packages("help")
    match = code if code in packages else next((k for k in packages if k.split("_")[0] == code.split("_")[0]), None)
    if match is None:
        raise XlingError(f"language {lang} ({code}) has no LibreOffice help package; "
                         f"available: {', '.join(sorted(packages))}")
    if task is None:
        task = libreoffice_topic(quiet=quiet)
    held_ids, held_texts = set(), set()
    for split in ("dev", "test"):
        for tlang, examples in task.data.get(split, {}).items():
            for e in examples:
                held_ids.add(_bare_id(e.id))
                if tlang == match:
                    held_texts.add(normalize_text(e.text))
    table = help_table(match)
    english = help_table(PIVOT) if match != PIVOT else table
    out, seen = [], set()
    for k in sorted(table, key=lambda key: _h("unlabeled", key)):
        text = " ".join(table[k].split())
        if len(text) < min_chars or len(text.split()) < min_words or _bare_id(k) in held_ids:
            continue
        norm = normalize_text(text)
        if norm in held_texts or norm in seen:
            continue
        if match != PIVOT:
            en = english.get(k)
            if en is not None and (" ".join(en.split()) == text or mostly_english(text, en)):
                continue
        seen.add(norm)
        out.append(text)
    if not out:
        raise XlingError(f"LibreOffice help for {match}: no unlabeled paragraphs left after removing "
                         f"the {task.name} dev/test text")
    return out


__all__ = ["libreoffice_topic", "unlabeled_text", "LABELS", "CLASS_MAP", "check_no_leakage", "normalize_text", "group_keys",
           "assign_splits", "balanced_sample", "mostly_english"]
