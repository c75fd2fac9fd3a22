"""Corpus readers: FLORES folders, TSV, JSONL, plain text files, load_corpus."""

import json

import pytest

from xling.data import readers
from xling.data.corpus import ParallelCorpus
from xling.data.readers import (
    PROVIDERS,
    load_corpus,
    parse_text_spec,
    read_flores,
    read_jsonl,
    read_lines,
    read_text_files,
    read_tsv,
    register_provider,
)
from xling.errors import XlingError


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture(scope="session")
def _django_cache(tmp_path_factory):
    """One cache for the session (test_django_corpus.py uses the same folder): one build."""
    path = tmp_path_factory.getbasetemp() / "shared-django-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def django_cache(_django_cache, monkeypatch):
    """Share one built django corpus between the tests of this module."""
    monkeypatch.setenv("XLING_CACHE", str(_django_cache))
    return _django_cache


# ---------------------------------------------------------------- FLORES


def test_flores_folder(tmp_path):
    write(tmp_path / "eng_Latn.devtest", "Hello world.\nGood morning.\n")
    write(tmp_path / "deu_Latn.devtest", "Hallo Welt.\nGuten Morgen.\n")
    write(tmp_path / "README", "not a language file\n")
    c = read_flores(tmp_path)
    assert c.langs == ["deu_Latn", "eng_Latn"]
    assert c.sentences["deu_Latn"] == ["Hallo Welt.", "Guten Morgen."]
    assert c.meta["split"] == "devtest"
    assert c.meta["dropped_empty"] == 0
    assert c.name == tmp_path.name


def test_flores_txt_and_short_codes(tmp_path):
    write(tmp_path / "en.txt", "one sentence\ntwo sentences\n")
    write(tmp_path / "fr.txt", "une phrase\ndeux phrases\n")
    c = load_corpus(tmp_path)
    assert c.langs == ["eng_Latn", "fra_Latn"]
    assert len(c) == 2


def test_flores_codes_kept(tmp_path):
    for code in ("arb_Arab", "zsm_Latn", "swh_Latn", "eng_Latn"):
        write(tmp_path / f"{code}.dev", "a\nb\n")
    assert read_flores(tmp_path).langs == ["arb_Arab", "eng_Latn", "swh_Latn", "zsm_Latn"]


def test_flores_several_splits(tmp_path):
    for split, n in (("dev", 3), ("devtest", 2)):
        write(tmp_path / f"eng_Latn.{split}", "x\n" * n)
        write(tmp_path / f"fra_Latn.{split}", "y\n" * n)
    assert len(read_flores(tmp_path)) == 2  # devtest preferred
    assert len(read_flores(tmp_path, split="dev")) == 3
    assert len(load_corpus(tmp_path, split="dev")) == 3
    with pytest.raises(XlingError, match="no split 'test'.*dev, devtest"):
        read_flores(tmp_path, split="test")


def test_flores_release_layout(tmp_path):
    for split, n in (("dev", 4), ("devtest", 3)):
        write(tmp_path / split / f"eng_Latn.{split}", "x\n" * n)
        write(tmp_path / split / f"deu_Latn.{split}", "y\n" * n)
    assert len(read_flores(tmp_path)) == 3
    assert len(read_flores(tmp_path, split="dev")) == 4


def test_flores_ambiguous_split(tmp_path):
    for split in ("foo", "bar"):
        write(tmp_path / f"eng_Latn.{split}", "x\n")
        write(tmp_path / f"deu_Latn.{split}", "y\n")
    with pytest.raises(XlingError, match="several splits"):
        read_flores(tmp_path)


def test_flores_line_mismatch_names_files_and_counts(tmp_path):
    write(tmp_path / "eng_Latn.devtest", "a\nb\nc\n")
    write(tmp_path / "deu_Latn.devtest", "a\nb\n")
    with pytest.raises(XlingError) as err:
        read_flores(tmp_path)
    msg = str(err.value)
    assert "eng_Latn.devtest" in msg and "deu_Latn.devtest" in msg
    assert "3" in msg and "2" in msg


def test_flores_duplicate_language(tmp_path):
    write(tmp_path / "de.txt", "a\n")
    write(tmp_path / "deu_Latn.txt", "a\n")
    with pytest.raises(XlingError, match="de.txt and deu_Latn.txt are both deu_Latn"):
        read_flores(tmp_path)


def test_flores_no_language_files(tmp_path):
    write(tmp_path / "notes.md", "hi\n")
    with pytest.raises(XlingError, match="no language files"):
        read_flores(tmp_path)


def test_flores_unicode_separator_does_not_split(tmp_path):
    write(tmp_path / "eng_Latn.txt", "one\u2028still one\ntwo\r\n")
    write(tmp_path / "deu_Latn.txt", "eins\ntwo\n")
    c = read_flores(tmp_path)
    assert c.sentences["eng_Latn"] == ["one\u2028still one", "two"]


# ---------------------------------------------------------------- empty lines, encoding


def test_empty_lines_dropped_and_counted(tmp_path):
    write(tmp_path / "eng_Latn.txt", "a\n\nc\nd\n")
    write(tmp_path / "deu_Latn.txt", "A\nB\n  \nD\n")
    c = read_flores(tmp_path)
    assert c.sentences["eng_Latn"] == ["a", "d"]
    assert c.sentences["deu_Latn"] == ["A", "D"]
    assert c.meta["dropped_empty"] == 2


def test_all_empty_is_an_error(tmp_path):
    write(tmp_path / "eng_Latn.txt", "a\n\n")
    write(tmp_path / "deu_Latn.txt", "\nb\n")
    with pytest.raises(XlingError, match="empty.*2 rows"):
        read_flores(tmp_path)


def test_empty_files_error(tmp_path):
    write(tmp_path / "eng_Latn.txt", "")
    write(tmp_path / "deu_Latn.txt", "")
    with pytest.raises(XlingError, match="empty"):
        read_flores(tmp_path)


def test_bom_stripped(tmp_path):
    write(tmp_path / "eng_Latn.txt", b"\xef\xbb\xbfHello\nWorld\n")
    write(tmp_path / "deu_Latn.txt", "Hallo\nWelt\n")
    assert read_flores(tmp_path).sentences["eng_Latn"][0] == "Hello"


def test_bad_utf8_names_file_and_line(tmp_path):
    write(tmp_path / "eng_Latn.txt", "ok\nok\n")
    bad = write(tmp_path / "deu_Latn.txt", b"gut\nschlecht \xff\n")
    with pytest.raises(XlingError) as err:
        read_flores(tmp_path)
    assert f"{bad}:2" in str(err.value)
    assert "UTF-8" in str(err.value)


def test_read_lines_crlf(tmp_path):
    p = write(tmp_path / "x.txt", "a\r\nb\r\n")
    assert read_lines(p) == ["a", "b"]
    p = write(tmp_path / "y.txt", "a\nb")
    assert read_lines(p) == ["a", "b"]


# ---------------------------------------------------------------- TSV


def test_tsv(tmp_path):
    p = write(tmp_path / "c.tsv", "en\tde\tfr_FR\nHello\tHallo\tBonjour\nYes\tJa\tOui\n")
    c = load_corpus(p)
    assert c.langs == ["deu_Latn", "eng_Latn", "fra_Latn"]
    assert c.sentences["fra_Latn"] == ["Bonjour", "Oui"]
    assert c.name == "c"
    assert c.meta["format"] == "tsv"


def test_tsv_id_and_label_columns(tmp_path):
    p = write(tmp_path / "c.tsv", "id\teng\tdeu\tlabel\n1\tHello\tHallo\tgreet\n2\tYes\t\tanswer\n3\tNo\tNein\tanswer\n")
    c = read_tsv(p)
    assert c.langs == ["deu_Latn", "eng_Latn"]
    assert c.meta["ids"] == ["1", "3"]
    assert c.meta["labels"] == ["greet", "answer"]
    assert c.meta["dropped_empty"] == 1
    cut = load_corpus(p, max_sentences=1)
    assert cut.meta["ids"] == ["1"] and cut.meta["labels"] == ["greet"] and len(cut) == 1


def test_tsv_wrong_column_count(tmp_path):
    p = write(tmp_path / "c.tsv", "eng\tdeu\nHello\tHallo\nbroken line\n")
    with pytest.raises(XlingError) as err:
        read_tsv(p)
    assert f"{p}:3" in str(err.value)
    assert "expected 2" in str(err.value) and "got 1" in str(err.value)


def test_tsv_unknown_language_in_header(tmp_path):
    p = write(tmp_path / "c.tsv", "eng\tqq\nHello\tHallo\n")
    with pytest.raises(XlingError, match=r"c\.tsv:1: unknown language code 'qq'"):
        read_tsv(p)


def test_tsv_duplicate_language(tmp_path):
    p = write(tmp_path / "c.tsv", "de\tdeu_Latn\nHallo\tHallo\n")
    with pytest.raises(XlingError, match="deu_Latn appears twice"):
        read_tsv(p)


def test_tsv_header_only(tmp_path):
    p = write(tmp_path / "c.tsv", "eng\tdeu\n")
    with pytest.raises(XlingError, match="empty"):
        read_tsv(p)
    p = write(tmp_path / "d.tsv", "\n\n")
    with pytest.raises(XlingError, match="empty file"):
        read_tsv(p)


# ---------------------------------------------------------------- JSONL


def jsonl(path, rows):
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))


def test_jsonl(tmp_path):
    p = jsonl(tmp_path / "c.jsonl", [{"en": "Hello", "de": "Hallo", "id": "a"}, {"en": "Yes", "de": "Ja", "id": "b"}, ""])
    c = load_corpus(p)
    assert c.langs == ["deu_Latn", "eng_Latn"]
    assert c.sentences["eng_Latn"] == ["Hello", "Yes"]
    assert c.meta["ids"] == ["a", "b"]


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ("{not json", "invalid JSON"),
        ('["en", "Hello"]', "expected a JSON object"),
        ({"en": "Hello"}, "missing language key 'de'"),
        ({"en": "Hello", "de": 3}, "value for 'de' is int"),
        ({"en": "Hello", "de": None}, "value for 'de' is NoneType"),
        ({"en": "Hello", "de": "Hallo", "fr": "Salut"}, "unexpected language key 'fr'"),
        ({"en": "Hello", "qq": "x"}, "unknown language code 'qq'"),
    ],
)
def test_jsonl_malformed_names_file_and_line(tmp_path, bad, pattern):
    p = jsonl(tmp_path / "c.jsonl", [{"en": "Hi there", "de": "Hallo da"}, bad])
    with pytest.raises(XlingError) as err:
        read_jsonl(p)
    assert f"{p}:2" in str(err.value)
    assert pattern in str(err.value)


def test_jsonl_empty(tmp_path):
    p = write(tmp_path / "c.jsonl", "\n")
    with pytest.raises(XlingError, match="empty"):
        read_jsonl(p)


# ---------------------------------------------------------------- plain text


def test_text_files_spec(tmp_path):
    a = write(tmp_path / "a.txt", "one\ntwo\n")
    b = write(tmp_path / "b.txt", "eins\nzwei\n")
    c = load_corpus(f"eng={a},deu={b}")
    assert c.langs == ["deu_Latn", "eng_Latn"]
    assert c.sentences["deu_Latn"] == ["eins", "zwei"]
    c2 = read_text_files([("en", a), ("de", b)])
    assert c2.fingerprint() == c.fingerprint()


def test_text_files_three(tmp_path):
    files = [write(tmp_path / f"{x}.txt", "s1\ns2\n") for x in "abc"]
    c = read_text_files(f"eng={files[0]},deu={files[1]},fra={files[2]}")
    assert len(c.langs) == 3


def test_text_files_mismatch_names_both(tmp_path):
    a = write(tmp_path / "a.txt", "one\ntwo\nthree\n")
    b = write(tmp_path / "b.txt", "eins\nzwei\n")
    with pytest.raises(XlingError) as err:
        read_text_files(f"eng={a},deu={b}")
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and "3" in msg and "2" in msg


def test_text_files_missing(tmp_path):
    a = write(tmp_path / "a.txt", "one\n")
    with pytest.raises(XlingError, match="corpus not found: .*nope.txt"):
        load_corpus(f"eng={a},deu={tmp_path / 'nope.txt'}")


def test_text_spec_errors(tmp_path):
    with pytest.raises(XlingError, match="at least two"):
        parse_text_spec("eng=a.txt")
    with pytest.raises(XlingError, match="LANG=FILE"):
        parse_text_spec("eng=a.txt,deu")
    a = write(tmp_path / "a.txt", "one\n")
    with pytest.raises(XlingError, match="unknown language code 'qq'"):
        read_text_files(f"eng={a},qq={a}")
    with pytest.raises(XlingError, match="both deu_Latn"):
        read_text_files(f"de={a},deu={a}")


# ---------------------------------------------------------------- load_corpus


def test_missing_path(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(XlingError, match=f"^corpus not found: {missing}$"):
        load_corpus(missing)


def test_unknown_format(tmp_path):
    p = write(tmp_path / "c.csv", "a,b\n")
    with pytest.raises(XlingError, match="unknown corpus format"):
        load_corpus(p)


def test_hf_not_supported():
    with pytest.raises(XlingError, match="not supported"):
        load_corpus("hf:facebook/flores")


def test_langs_and_max_sentences(tmp_path):
    p = write(tmp_path / "c.tsv", "eng\tdeu\tfra\n" + "".join(f"s{i}\tt{i}\tu{i}\n" for i in range(10)))
    c = load_corpus(p, langs=["de", "en"], max_sentences=3)
    assert c.langs == ["deu_Latn", "eng_Latn"]
    assert len(c) == 3
    with pytest.raises(XlingError, match="not in corpus"):
        load_corpus(p, langs=["ja"])
    with pytest.raises(XlingError, match="max_sentences"):
        load_corpus(p, max_sentences=0)


def test_registry_one_function(tmp_path):
    @register_provider("toy-corpus")
    def toy(langs, max_sentences):
        return ParallelCorpus("toy", {"eng_Latn": ["a b", "c d"], "deu_Latn": ["x y", "z w"]}, {"ids": ["1", "2"]})

    try:
        c = load_corpus("toy-corpus", max_sentences=1)
        assert c.name == "toy" and len(c) == 1 and c.meta["ids"] == ["1"]
    finally:
        PROVIDERS.pop("toy-corpus")


def test_builtin_names_registered():
    for name in ("django", "libreoffice", "libreoffice-help", "libreoffice-ui"):
        assert name in PROVIDERS


def test_default_is_django(django_cache):
    c = load_corpus(None)
    assert c.name == "django"
    assert len(c.langs) >= 20 and len(c) >= 200
    assert load_corpus("django").fingerprint() == c.fingerprint()


def test_django_with_langs(django_cache):
    c = load_corpus("django", langs=["de", "ja"], max_sentences=50)
    assert c.langs == ["deu_Latn", "eng_Latn", "jpn_Jpan"]  # English pivot kept
    assert len(c) == 50 and len(c.meta["ids"]) == 50


def test_folder_named_like_a_provider(tmp_path, monkeypatch, django_cache):
    folder = tmp_path / "django"
    write(folder / "eng_Latn.txt", "a\n")
    write(folder / "deu_Latn.txt", "b\n")
    monkeypatch.chdir(tmp_path)
    assert load_corpus("django").meta["source"].startswith("django ")  # the bare name: built-in
    c = load_corpus("./django")  # a path: the folder
    assert c.name == "django" and len(c) == 1 and c.meta["format"] == "flores"


def test_readers_module_docstring():
    assert readers.__doc__ and "load_corpus" in readers.__doc__
