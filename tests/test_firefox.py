"""The Firefox corpus: Fluent and .properties parsing, cleaning, and the corpus from fake language packs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import xling.data.firefox as ff
from xling.data.firefox import clean_fluent, clean_property, parse_ftl, parse_properties, read_xpi
from xling.data.readers import load_corpus
from xling.errors import XlingError

# --------------------------------------------------------------------------------------
# Fluent
# --------------------------------------------------------------------------------------

FTL = """\
# This Source Code Form is subject to the terms of the Mozilla Public License.

## Section comment
-brand-short-name = Firefox
simple = Open a new window
with-attrs =
    .label = Save the page as a file
    .accesskey = S
    .tooltiptext = Save this page to your computer
multi =
    First line of a long message
    that goes on here.

    And a paragraph after a blank line.
# a comment ends the entry
uses-var = Downloading { $file } now please
uses-term = { -brand-short-name } is updating itself
uses-message = See { simple } for help
selector =
    { $count ->
        [one] One tab is open
       *[other] { $count } tabs are open
    }
literal = Press { "[" }Enter{ "]" } to continue
function = Saved at { DATETIME($date, hour: "numeric") } today
markup = Read the <a data-l10n-name="link">privacy notice</a> first
junk line without equals
after-junk = Still parsed fine here
"""


def test_parse_ftl_values_attributes_terms_and_multiline():
    got = parse_ftl(FTL)
    assert "-brand-short-name" not in got  # terms are not messages
    assert got["simple"] == "Open a new window"
    assert "with-attrs" not in got  # no value of its own
    assert got["with-attrs.label"] == "Save the page as a file"
    assert got["with-attrs.accesskey"] == "S"
    assert got["multi"] == "First line of a long message\nthat goes on here.\n\nAnd a paragraph after a blank line."
    assert got["after-junk"] == "Still parsed fine here"
    assert not any(k.startswith("junk") for k in got)


@pytest.mark.parametrize("pattern, text", [
    ("Downloading { $file } now please", "Downloading now please"),
    ("{ -brand-short-name } is updating itself", None),
    ("See { simple } for help", None),
    ("See { simple.label } for help", None),
    ("{ $count ->\n[one] One tab\n*[other] { $count } tabs\n}", None),
    ('Press { "[" }Enter{ "]" } to continue', "Press [Enter] to continue"),
    ('Quote { "\\"" } and { "\\u00E9" }', 'Quote " and é'),
    ('Saved at { DATETIME($date, hour: "numeric") } today', "Saved at today"),
    ("Call { NUMBER($n) } and { PLATFORM() }", "Call and"),
    ("Broken { $x", None),
    ("Version { 3 } here", "Version 3 here"),
])
def test_clean_fluent(pattern, text):
    assert clean_fluent(pattern) == text


# --------------------------------------------------------------------------------------
# .properties
# --------------------------------------------------------------------------------------

PROPS = """\
# comment
! another comment
title = Shield Studies
enabledList = %S may install and run studies from time to time.
pref = This study sets %1$S to %2$S.
percent = %d%% done, %ld left
plural = #1 tab;#1 tabs
brand = Restart &brandShortName; now
html = Tom &amp; Jerry are here
escaped = Caf\\u00e9 menu\\tand more
long = First part \\
    continues here
colon: Key with a colon separator
spaced   Whitespace separator works
key.accesskey = K
"""


def test_parse_properties():
    got = parse_properties(PROPS)
    assert got["title"] == "Shield Studies"
    assert got["escaped"] == "Café menu\tand more"
    assert got["long"] == "First part continues here"
    assert got["colon"] == "Key with a colon separator"
    assert got["spaced"] == "Whitespace separator works"
    assert "comment" not in " ".join(got)


@pytest.mark.parametrize("value, text", [
    ("%S may install and run studies.", "may install and run studies."),
    ("This study sets %1$S to %2$S.", "This study sets to ."),
    ("%d%% done, %ld left", "% done, left"),
    ("#1 tab;#1 tabs", None),
    ("Restart &brandShortName; now", None),
    ("Tom &amp; Jerry", "Tom &amp; Jerry"),  # HTML entities are left to clean_message
])
def test_clean_property(value, text):
    assert clean_property(value) == text


# --------------------------------------------------------------------------------------
# Language packs and the corpus
# --------------------------------------------------------------------------------------

ENGLISH = {
    "browser/main.ftl": FTL,
    "global/strings.properties": PROPS + "same = This text stays in English\nfallback = Never translated here\n",
}
GERMAN = {
    "browser/main.ftl": """\
-brand-short-name = Firefox
simple = Ein neues Fenster öffnen
with-attrs =
    .label = Seite als Datei speichern
    .accesskey = p
    .tooltiptext = Seite auf Ihrem Rechner speichern
multi = Erste Zeile einer langen Nachricht
uses-var = Lade { $file } jetzt herunter
uses-term = { -brand-short-name } aktualisiert sich
literal = Drücken Sie { "[" }Eingabe{ "]" } zum Fortfahren
markup = Lesen Sie zuerst den <a data-l10n-name="link">Datenschutzhinweis</a>
""",
    "global/strings.properties": "title = Shield-Studien\nenabledList = %S darf Studien installieren und ausführen.\n"
                                 "same = This text stays in English\n",
}
FRENCH = {
    "browser/main.ftl": "simple = Ouvrir une nouvelle fenêtre\nuses-var = Téléchargement de { $file } en cours\n"
                        "with-attrs =\n    .label = Enregistrer la page\n",
    "global/strings.properties": "title = Études Shield\n",
}


def write_pack(root: Path, locale: str, files: dict[str, str], version: str = "140.0") -> Path:
    """A fake unpacked Debian package with a language pack laid out like Firefox's."""
    ext = root / "usr/lib/firefox-esr/browser/extensions"
    ext.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(ext / f"langpack-{locale}@firefox-esr.mozilla.org.xpi", "w") as z:
        for rel, text in files.items():
            if rel.endswith(".ftl"):
                z.writestr(f"localization/{locale}/{rel}", text)
            else:
                z.writestr(f"chrome/{locale}/locale/{locale}/{rel}", text)
        z.writestr("manifest.json", json.dumps({"langpack_id": locale}))
    (root / ".xling-extracted").write_text(f"firefox-esr-l10n-{locale.lower()}_{version}_all.deb\n")
    return root


@pytest.fixture()
def fake_packs(tmp_path, monkeypatch):
    packs = {"en-gb": ("en-GB", ENGLISH), "de": ("de", GERMAN), "fr": ("fr", FRENCH)}
    fetched = []

    def fetch(locale):
        fetched.append(locale)
        tag, files = packs[locale]
        return write_pack(tmp_path / "debs" / locale, tag, files)

    monkeypatch.setattr(ff, "_fetch", fetch)
    monkeypatch.setattr(ff, "_apt_names", lambda: ["de", "en-ca", "en-gb", "fr"])
    return fetched


F = "localization/browser/main.ftl:"
P = "chrome/locale/global/strings.properties:"


def test_read_xpi_units(tmp_path):
    root = write_pack(tmp_path, "de", GERMAN)
    got = read_xpi(next(root.rglob("*.xpi")), "de")
    assert got[F + "simple"] == "Ein neues Fenster öffnen"  # locale folders left out of the id
    assert got[P + "enabledList"] == "darf Studien installieren und ausführen."
    assert got[F + "markup"] == "Lesen Sie zuerst den Datenschutzhinweis"
    assert got[F + "literal"] == "Drücken Sie [Eingabe] zum Fortfahren"
    assert not any(k.endswith("accesskey") for k in got)
    assert F + "uses-term" not in got


def test_corpus_parallel_by_id_without_fallbacks(fake_packs):
    corpus = load_corpus("firefox", langs=["de"])
    assert set(corpus.langs) == {"eng_Latn", "deu_Latn"}
    rows = dict(zip(corpus.meta["ids"], zip(corpus.sentences["eng_Latn"], corpus.sentences["deu_Latn"])))
    assert rows[F + "simple"] == ("Open a new window", "Ein neues Fenster öffnen")
    assert rows[F + "with-attrs.tooltiptext"] == ("Save this page to your computer",
                                                               "Seite auf Ihrem Rechner speichern")
    assert rows[F + "uses-var"] == ("Downloading now please", "Lade jetzt herunter")
    assert P + "same" not in rows  # identical to English: an untranslated fallback
    assert P + "title" in rows
    assert F + "uses-term" not in rows  # a term reference: dropped
    assert rows[F + "multi"][0] == "First line of a long message that goes on here. And a paragraph after a blank line."
    assert corpus.meta["locales"] == {"eng_Latn": "en-gb", "deu_Latn": "de"}
    assert corpus.meta["usable_messages"]["deu_Latn"] == len(rows)


def test_corpus_intersection_default_selection_and_cache(fake_packs, monkeypatch):
    three = load_corpus("firefox", langs=["de", "fr"])
    assert set(three.meta["ids"]) == {F + "simple", F + "uses-var", F + "with-attrs.label", P + "title"}
    monkeypatch.setattr(ff, "DEFAULT_MIN_MESSAGES", 5)
    default = ff.firefox_corpus(min_messages=5, quiet=True)
    assert set(default.langs) == {"eng_Latn", "deu_Latn"} and default.meta["other_langs"] == ["fra_Latn"]
    fetched = len(fake_packs)

    def parse_again(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(ff, "read_xpi", parse_again)
    again = load_corpus("firefox", langs=["de", "fr"], max_sentences=2)  # parsed tables come from the JSON cache
    assert again.meta["ids"] == three.meta["ids"][:2] and len(fake_packs) > fetched


def test_corpus_errors(fake_packs):
    with pytest.raises(XlingError, match="no Firefox language pack.*available: deu_Latn, eng_Latn, fra_Latn"):
        load_corpus("firefox", langs=["sw"])


def test_damaged_pack_is_one_line(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    ext = root / "usr/lib/firefox-esr/browser/extensions"
    ext.mkdir(parents=True)
    (ext / "langpack-de@firefox-esr.mozilla.org.xpi").write_bytes(b"not a zip")
    monkeypatch.setattr(ff, "_fetch", lambda locale: root)
    with pytest.raises(XlingError, match="not a readable language pack") as e:
        ff.locale_table("de")
    assert "\n" not in str(e.value)


def test_cli_corpus_reports_counts(fake_packs, capsys):
    from xling.cli import main

    assert main(["corpus", "--data", "firefox", "--langs", "de,fr"]) == 0
    out = capsys.readouterr().out
    assert "firefox: 3 languages x 4 sentences" in out
    assert "usable messages of its own" in out
