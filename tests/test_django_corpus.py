"""The built-in Django corpus: .po parsing, cleaning, language choice, caching."""

import json
import re

import pytest

from xling.data import django_corpus as dc
from xling.data.django_corpus import django_corpus
from xling.data.po import clean_message, parse_po, parse_po_text
from xling.errors import XlingError

PO = r'''# Translators:
# Someone <someone@example.org>, 2024
msgid ""
msgstr ""
"Project-Id-Version: test\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

#: file.py:1
msgid "Simple message here"
msgstr "Einfache Nachricht hier"

msgctxt "month name"
msgid "May"
msgstr "Mai"

msgctxt "verb"
msgid "May"
msgstr "Darf"

msgid ""
"A long message "
"on two lines"
msgstr ""
"Eine lange Nachricht "
"auf zwei Zeilen"

msgid "Tab\tquote\" backslash\\ newline\n octal\101 hex\x42"
msgstr "T\tq\" b\\ n\n o\101 h\x42"

msgid "%(count)s item selected"
msgid_plural "%(count)s items selected"
msgstr[0] "%(count)s Element ausgewählt"
msgstr[1] "%(count)s Elemente ausgewählt"

#, fuzzy, python-format
msgid "Fuzzy one"
msgstr "Unscharf"

#, python-format
msgid "Not fuzzy"
msgstr "Nicht unscharf"

msgid "Untranslated"
msgstr ""

#~ msgid "Obsolete message"
#~ msgstr "Veraltete Nachricht"
'''


def entries_by_key():
    return {e.key: e for e in parse_po_text(PO, "test.po")}


def test_po_basic_and_header_skipped():
    entries = entries_by_key()
    assert ("", "") not in entries
    assert entries[("", "Simple message here")].translation == "Einfache Nachricht hier"


def test_po_msgctxt_keeps_entries_apart():
    entries = entries_by_key()
    assert entries[("month name", "May")].translation == "Mai"
    assert entries[("verb", "May")].translation == "Darf"


def test_po_multiline():
    e = entries_by_key()[("", "A long message on two lines")]
    assert e.translation == "Eine lange Nachricht auf zwei Zeilen"


def test_po_escapes():
    keys = [k for k in entries_by_key() if k[1].startswith("Tab")]
    assert keys == [("", 'Tab\tquote" backslash\\ newline\n octalA hexB')]
    assert entries_by_key()[keys[0]].translation == 'T\tq" b\\ n\n oA hB'


def test_po_plural():
    e = entries_by_key()[("", "%(count)s item selected")]
    assert e.msgid_plural == "%(count)s items selected"
    assert e.msgstr == ["%(count)s Element ausgewählt", "%(count)s Elemente ausgewählt"]
    assert e.translation == e.msgstr[0]


def test_po_flags_and_obsolete():
    entries = entries_by_key()
    assert entries[("", "Fuzzy one")].fuzzy
    assert "python-format" in entries[("", "Fuzzy one")].flags
    assert not entries[("", "Not fuzzy")].fuzzy
    assert entries[("", "Untranslated")].translation == ""
    assert not any("Obsolete" in k[1] for k in entries)


def test_po_line_numbers():
    e = entries_by_key()[("", "Simple message here")]
    assert PO.splitlines()[e.line - 1].startswith("msgid")


@pytest.mark.parametrize(
    "body, line, pattern",
    [
        ('msgid "a"\nmsgstr "b\n', 2, "expected a quoted string"),
        ('msgid "a"\nmsgstr "b" "c"\n', 2, "unescaped quote"),
        ('"orphan"\n', 1, "continuation outside an entry"),
        ('msgid "a"\nbogus "b"\n', 2, "cannot parse line"),
        ('msgstr "b"\n', 1, "msgstr without msgid"),
        ('msgid "a"\nmsgstr "b\\q"\n', 2, "unknown escape"),
        ('msgid "a"\nmsgstr "b\\"\n', 2, "unescaped quote|lone backslash|quoted string"),
        ('msgid "a"\nmsgid_plural "as"\nmsgstr[0] "x"\nmsgstr[2] "y"\n', 1, "msgstr indices"),
        ('msgid "a"\n\nmsgid "b"\nmsgstr "c"\n', 1, "without msgstr"),
    ],
)
def test_po_malformed_names_file_and_line(body, line, pattern):
    with pytest.raises(XlingError) as err:
        parse_po_text(body, "bad.po")
    assert f"bad.po:{line}:" in str(err.value)
    assert re.search(pattern, str(err.value))


def test_parse_po_file_utf8(tmp_path):
    p = tmp_path / "x.po"
    p.write_bytes(b'\xef\xbb\xbfmsgid "Hello there"\nmsgstr "Gr\xc3\xbc\xc3\x9f dich"\n')
    assert parse_po(p)[0].translation == "Grüß dich"
    p.write_bytes(b'msgid "Hello there"\nmsgstr "Gr\xfc\xdf"\n')
    with pytest.raises(XlingError, match=r"x\.po:2: not valid UTF-8"):
        parse_po(p)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("%(count)s items were deleted.", "items were deleted."),
        ("Select %s to change", "Select to change"),
        ("Ensure this value is at most %(limit_value)d characters (it has %(show_value)d).",
         "Ensure this value is at most characters (it has)."),
        ("100%% sure about %(name)s", "100 sure about"),
        ("Value {0} is not {name}", "Value is not"),
        ("<b>Bold</b> and <a href='x'>link</a>", "Bold and link"),
        ("Line<br>break", "Line break"),
        ("Fish &amp; chips&nbsp;now", "Fish & chips now"),
        ("“%(value)s” is not a valid UUID.", "is not a valid UUID."),
        ("  many   \n spaces\t here ", "many spaces here"),
        ("%(a)s", ""),
        ("Value: %s", "Value"),
        ("Scrios %(verbose_name_plural) roghnaithe", "Scrios roghnaithe"),  # broken placeholder
        ("100% sure, 50 % done", "100% sure, 50 % done"),  # a percent sign is not a directive  # a dangling colon goes too
        ("Wert (%(value)s) «%(v)s»", "Wert"),
    ],
)
def test_clean_message(raw, clean):
    assert clean_message(raw) == clean


def test_english_ok():
    assert dc.english_ok("Save and continue")
    assert not dc.english_ok("Save")
    assert not dc.english_ok("Savecontinue")  # one word
    assert not dc.english_ok("12 34 56 78")


# ---------------------------------------------------------------- the real corpus

_PLACEHOLDER = re.compile(r"%\(|%[sd%]|\{[\w]*\}|<[/a-zA-Z][^>]*>|&[a-zA-Z]+;|&#\d+;|\s{2}|^\s|\s$")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache for the session (test_readers.py uses the same folder): one build."""
    path = tmp_path_factory.getbasetemp() / "shared-django-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _use_shared_cache(shared_cache, monkeypatch):
    monkeypatch.setenv("XLING_CACHE", str(shared_cache))


@pytest.fixture(scope="module")
def default_corpus(shared_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLING_CACHE", str(shared_cache))
        return django_corpus()


def test_default_corpus_size(default_corpus):
    assert len(default_corpus.langs) >= 20
    assert len(default_corpus) >= 200
    assert "eng_Latn" in default_corpus.langs


def test_default_corpus_diverse(default_corpus):
    scripts = {lang.split("_")[1] for lang in default_corpus.langs}
    assert len(scripts) >= 6
    assert {"zho_Hans", "zho_Hant"} <= set(default_corpus.langs) or len(scripts) >= 8


def test_default_corpus_meta(default_corpus):
    import django

    assert default_corpus.meta["source"] == f"django {django.get_version()}"
    assert default_corpus.meta["catalogs"] > 500
    assert len(default_corpus.meta["ids"]) == len(default_corpus)


def test_no_placeholders_or_markup(default_corpus):
    for lang in default_corpus.langs:
        for s in default_corpus.sentences[lang]:
            assert s, lang
            assert not _PLACEHOLDER.search(s), (lang, s)


def test_english_deduplicated_and_translated(default_corpus):
    en = default_corpus.sentences["eng_Latn"]
    assert len(set(en)) == len(en)
    for lang in default_corpus.langs:
        if lang != "eng_Latn":
            same = sum(a == b for a, b in zip(en, default_corpus.sentences[lang]))
            assert same == 0, lang
    assert all(len(s) >= 10 and len(s.split()) >= 2 for s in en)


def test_deterministic(default_corpus, shared_cache):
    again = django_corpus()
    assert again.fingerprint() == default_corpus.fingerprint()
    assert again.sentences["eng_Latn"] == default_corpus.sentences["eng_Latn"]
    # reloaded from the JSON cache (no in-process memo): the same corpus
    dc._MEMO.clear()
    assert django_corpus().fingerprint() == default_corpus.fingerprint()
    cached = json.loads(next(shared_cache.glob("corpora/django-*.json")).read_text(encoding="utf-8"))
    assert cached["keys"] == list(dict.fromkeys(cached["keys"]))


def test_cache_file_keyed_by_versions(default_corpus, shared_cache):
    import django

    files = list((shared_cache / "corpora").glob("django-*.json"))
    assert [f.name for f in files] == [f"django-{django.get_version()}-p{dc.PARSER_VERSION}.json"]


def test_user_langs(default_corpus):
    c = django_corpus(["de", "fr_FR", "ja"])
    assert c.langs == ["deu_Latn", "eng_Latn", "fra_Latn", "jpn_Jpan"]
    assert len(c) >= len(default_corpus)  # fewer languages: a bigger intersection
    assert c.meta["locales"]["deu_Latn"] == ["de"]


def test_scripts_stay_distinct():
    c = django_corpus(["sr", "sr_Latn", "zh_Hans", "zh_Hant"])
    assert c.langs == ["eng_Latn", "srp_Cyrl", "srp_Latn", "zho_Hans", "zho_Hant"]
    assert c.sentences["srp_Cyrl"] != c.sentences["srp_Latn"]
    assert c.meta["locales"]["srp_Latn"] == ["sr_Latn"]


def test_region_variant_not_used_when_base_exists():
    c = django_corpus(["pt_BR", "es_AR"])
    assert c.meta["locales"] == {"por_Latn": ["pt"], "spa_Latn": ["es"]}


def test_unknown_language():
    with pytest.raises(XlingError, match="language xh .*not in the built-in django corpus"):
        django_corpus(["xh"])
    with pytest.raises(XlingError, match="unknown language code 'qq'"):
        django_corpus(["qq"])


def test_max_sentences():
    c = django_corpus(["de"], max_sentences=7)
    assert len(c) == 7 and len(c.meta["ids"]) == 7


def test_available_languages():
    av = dc.available_languages()
    assert av["eng_Latn"] >= max(v for k, v in av.items() if k != "eng_Latn")
    assert len(av) > 80


# ---------------------------------------------------------------- region merging on a fake wheel


def _po(path, pairs):
    path.parent.mkdir(parents=True, exist_ok=True)
    body = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
    for en, tr in pairs:
        body += f'msgid "{en}"\nmsgstr "{tr}"\n\n'
    path.write_text(body, encoding="utf-8")


def test_region_merging_on_fake_tree(tmp_path):
    root = tmp_path / "django"
    msgs = ["First message here", "Second message here", "Third message here"]
    _po(root / "conf/locale/de_CH/LC_MESSAGES/django.po", [(msgs[0], "Erste (CH)")])
    _po(root / "conf/locale/de_AT/LC_MESSAGES/django.po", [(msgs[0], "Erste (AT)"), (msgs[1], "Zweite (AT)")])
    _po(root / "conf/locale/es/LC_MESSAGES/django.po", [(msgs[0], "Primero"), (msgs[2], msgs[2])])
    _po(root / "conf/locale/es_AR/LC_MESSAGES/django.po", [(msgs[1], "Segundo (AR)")])
    _po(root / "conf/locale/en_GB/LC_MESSAGES/django.po", [(msgs[0], "First message, British")])
    data = dc._build(root)
    assert dc._build(root) == data  # deterministic
    assert data["catalogs"] == 5
    # only region variants of German: merged, the most complete first
    assert data["sources"]["deu_Latn"] == ["de_AT", "de_CH"]
    assert data["langs"]["deu_Latn"] == {"\x04" + msgs[0]: "Erste (AT)", "\x04" + msgs[1]: "Zweite (AT)"}
    # plain es exists: es_AR is not used; an identical-to-English translation is dropped
    assert data["sources"]["spa_Latn"] == ["es"]
    assert data["langs"]["spa_Latn"] == {"\x04" + msgs[0]: "Primero"}
    assert "eng_Latn" not in data["langs"]  # English comes from the msgids
