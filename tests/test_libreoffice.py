"""LibreOffice help / UI provider: parsing and alignment offline, one real download (slow)."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from xling.data import libreoffice as lo
from xling.data.libreoffice import (
    align_help,
    clean_ui,
    help_label,
    parse_help_page,
    parse_mo,
    read_help_tree,
)
from xling.errors import XlingError

DATA = Path(__file__).parent / "data" / "corpus" / "libreoffice"
EN_PAGE = DATA / "help/en-US/text/swriter/01/04020000.html"


# ---------------------------------------------------------------- page parsing


def test_parse_html_page():
    paras = dict(parse_help_page(EN_PAGE.read_text(encoding="utf-8")))
    assert paras["hd_id3154108"] == "Insert Section"
    assert paras["par_id3154480"] == "Inserts a text section at the cursor position in the document."
    assert paras["par_id3152955"] == "You can insert an entire document in a section, or a DDE link."
    # switchinline: the default text (Ctrl), not the macOS one (Command)
    assert paras["par_id211641581251728"] == "Use the shortcut Ctrl + F to quickly open the Find toolbar."
    # <br> is a space, entities are decoded
    assert paras["par_id3150973"] == "Line one line two & more."


def test_parse_html_skips_foreign_and_non_text():
    ids = [pid for pid, _ in parse_help_page(EN_PAGE.read_text(encoding="utf-8"))]
    assert "par_id3149810" not in ids  # embedded from another page (howtoget)
    assert "hd_id3157557" not in ids  # embedded heading
    assert "par_id571641582522939" not in ids  # hidden Calc-only case of a switch
    assert "par_id491585753339474" not in ids  # image only
    assert len(ids) == len(set(ids))
    text = " ".join(t for _, t in parse_help_page(EN_PAGE.read_text(encoding="utf-8")))
    assert "Sub Example" not in text  # code listing
    assert "LibreOffice 7.4 Help" not in text  # page chrome without a paragraph id
    assert "Command" not in text


def test_parse_xhp_source():
    paras = parse_help_page((DATA / "xhp/main0202.xhp").read_text(encoding="utf-8"))
    assert paras == [
        ("hd_id3154263", "Formatting Bar"),
        ("par_id3145782", "The Formatting bar contains several text formatting functions."),
        ("par_id3150001", "Press Ctrl+B to make text bold."),
        ("par_id3150002", "Bold"),
    ]


def test_parse_tolerates_stray_tags():
    html = '<div><p id="par_id1">One <b>two</span> three</p></div></div><p id="par_id2">Four<br/>five</p>'
    assert parse_help_page(html) == [("par_id1", "One two three"), ("par_id2", "Four five")]


def test_help_label():
    assert help_label("text/scalc/01/04060106") == "scalc"
    assert help_label("text/sbasic/shared/03/sf_calc") == "sbasic"
    assert help_label("text/shared/01/05020301") == "shared"


# ---------------------------------------------------------------- alignment


@pytest.fixture
def tables():
    return {
        "eng_Latn": read_help_tree(DATA / "help/en-US"),
        "deu_Latn": read_help_tree(DATA / "help/de"),
    }


def test_read_help_tree_keys(tables):
    en = tables["eng_Latn"]
    assert "text/swriter/01/04020000#par_id3154480" in en
    assert "text/scalc/guide/cellstyle#hd_id3145069" in en
    assert all("#" in k for k in en)


def test_align_help(tables):
    c = align_help(tables)
    assert c.langs == ["deu_Latn", "eng_Latn"]
    en, de = c.sentences["eng_Latn"], c.sentences["deu_Latn"]
    assert len(c.meta["ids"]) == len(c.meta["labels"]) == len(c) == 8
    assert set(c.meta["labels"]) == {"scalc", "swriter"}
    for key, label in zip(c.meta["ids"], c.meta["labels"]):
        assert key.startswith(f"text/{label}/")
    pairs = dict(zip(en, de))
    assert pairs["You can apply a cell style depending on the value of a cell."] == (
        "Sie können abhängig vom Zellwert eine Zellvorlage zuweisen."
    )
    # untranslated fallback (identical to English) is dropped and counted
    assert "This paragraph was never translated." not in en
    assert c.meta["dropped_identical"] == 1
    # English-only paragraph and too-short ones are dropped
    assert "Only English has this paragraph." not in en
    assert "Short" not in en and "Kurz" not in de
    assert pairs["Insert Section"] == "Bereich einfügen"
    # English is deduplicated (the same sentence on two pages is kept once)
    assert len(set(en)) == len(en)
    assert en.count("Inserts a text section at the cursor position in the document.") == 1


def test_align_help_is_ordered(tables):
    c = align_help(tables)
    assert c.meta["ids"] == sorted(c.meta["ids"], key=lambda k: tuple(k.split("#")))


def test_align_help_errors(tables):
    with pytest.raises(XlingError, match="English"):
        align_help({"deu_Latn": tables["deu_Latn"]})
    with pytest.raises(XlingError, match="no paragraph translated"):
        align_help({"eng_Latn": tables["eng_Latn"], "fra_Latn": {}})


# ---------------------------------------------------------------- .mo catalogs


def make_mo(entries: dict) -> bytes:
    """A little-endian gettext .mo file (what msgfmt writes)."""
    keys = sorted(entries)
    ids = strs = b""
    index = []
    for k in keys:
        kb, vb = k.encode(), entries[k].encode()
        index.append((len(kb), len(ids), len(vb), len(strs)))
        ids += kb + b"\0"
        strs += vb + b"\0"
    n = len(keys)
    id_start = 28 + 16 * n
    str_start = id_start + len(ids)
    out = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    out += b"".join(struct.pack("<2I", kl, ko + id_start) for kl, ko, _, _ in index)
    out += b"".join(struct.pack("<2I", vl, vo + str_start) for _, _, vl, vo in index)
    return out + ids + strs


def test_parse_mo():
    data = make_mo(
        {
            "": "Content-Type: text/plain; charset=UTF-8\n",
            "STR_SAVE\x04Save the document": "Dokument speichern",
            "STR_N\x04%1 file\x00%1 files": "%1 Datei\x00%1 Dateien",
            "STR_EMPTY\x04Not translated": "",
        }
    )
    assert parse_mo(data, "x.mo") == {
        "STR_SAVE\x04Save the document": "Dokument speichern",
        "STR_N\x04%1 file": "%1 Datei",
    }


def test_parse_mo_matches_gettext(tmp_path):
    import gettext

    data = make_mo({"": "Content-Type: text/plain; charset=UTF-8\n", "A\x04Hello there": "Hallo da"})
    p = tmp_path / "x.mo"
    p.write_bytes(data)
    with open(p, "rb") as f:
        assert gettext.GNUTranslations(f).pgettext("A", "Hello there") == "Hallo da"


def test_parse_mo_bad():
    with pytest.raises(XlingError, match="x.mo: not a gettext .mo file"):
        parse_mo(b"\0" * 40, "x.mo")
    with pytest.raises(XlingError, match="x.mo: not a gettext .mo file"):
        parse_mo(b"short", "x.mo")


def test_clean_ui():
    assert clean_ui("~Save the %PRODUCTNAME document") == "Save the LibreOffice document"
    assert clean_ui("File $(ARG1) could not be opened: %1") == "File could not be opened"
    assert clean_ui("<b>Bold</b> %NUMBER records found") == "Bold records found"


# ---------------------------------------------------------------- packages (no network)


@pytest.fixture
def fake_apt(monkeypatch):
    names = {
        "libreoffice-help-": ("libreoffice-help-common", "libreoffice-help-de", "libreoffice-help-en-gb",
                              "libreoffice-help-en-us", "libreoffice-help-pt", "libreoffice-help-pt-br",
                              "libreoffice-help-zh-cn", "libreoffice-help-zh-tw"),
        "libreoffice-l10n-": ("libreoffice-l10n-de", "libreoffice-l10n-en-gb"),
    }
    monkeypatch.setattr(lo, "_apt_packages", lambda prefix: names.get(prefix, ()))
    return names


def test_packages_mapping(fake_apt):
    help_pkgs = lo._packages("help")
    assert help_pkgs == {
        "deu_Latn": "libreoffice-help-de",
        "eng_Latn": "libreoffice-help-en-us",
        "por_Latn": "libreoffice-help-pt",
        "zho_Hans": "libreoffice-help-zh-cn",
        "zho_Hant": "libreoffice-help-zh-tw",
    }
    assert lo.available_help_languages() == sorted(help_pkgs)
    assert lo.available_ui_languages() == ["deu_Latn", "eng_Latn"]


def test_packages_fallback_without_apt_cache(monkeypatch):
    monkeypatch.setattr(lo, "_apt_packages", lambda prefix: ())
    langs = lo.available_help_languages()
    assert "eng_Latn" in langs and "deu_Latn" in langs and len(langs) >= 30


def test_missing_apt_get(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(XlingError, match="apt-get not found"):
        lo.fetch_package("libreoffice-help-de")


def test_missing_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package libreoffice-help-xx\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(XlingError, match="Debian package libreoffice-help-xx not found"):
        lo.fetch_package("libreoffice-help-xx")


def test_missing_dpkg(monkeypatch):
    from xling.io import cache_dir

    (cache_dir("debian", "debs") / "libreoffice-help-de_7.4_all.deb").write_bytes(b"not really")
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "dpkg" else f"/usr/bin/{name}")
    with pytest.raises(XlingError, match="dpkg not found"):
        lo.fetch_package("libreoffice-help-de")


def test_locale_dir_choice(tmp_path):
    help_dir = tmp_path / "help"
    for name in ("ca", "ca-valencia", "media", "pt-BR", "cs"):
        (help_dir / name).mkdir(parents=True)
    (help_dir / "sk").symlink_to("cs")
    assert lo._locale_dir(help_dir, "libreoffice-help-ca", exclude=("media",)) == help_dir / "ca"
    assert lo._locale_dir(help_dir, "libreoffice-help-pt-br") == help_dir / "pt-BR"
    with pytest.raises(XlingError, match="libreoffice-help-sk has no pages of its own.*links to cs"):
        lo._locale_dir(help_dir, "libreoffice-help-sk")
    with pytest.raises(XlingError, match="unexpected layout of Debian package libreoffice-help-fi"):
        lo._locale_dir(help_dir, "libreoffice-help-fi")


@pytest.fixture
def fake_packages(fake_apt, monkeypatch, tmp_path):
    """fetch_package unpacks the test fixtures instead of downloading."""
    calls = []

    def fake_fetch(pkg):
        calls.append(pkg)
        locale = {"libreoffice-help-en-us": "en-US", "libreoffice-help-de": "de"}.get(pkg)
        if locale is None:
            raise XlingError(f"Debian package {pkg} not found")
        root = tmp_path / "root" / pkg
        if not root.exists():
            target = root / "usr/share/libreoffice/help" / locale
            shutil.copytree(DATA / "help" / locale, target)
            (root / "usr/share/libreoffice/help/media").mkdir()
            (root / ".xling-extracted").write_text(f"{pkg}_7.4_all.deb\n")
        return root

    monkeypatch.setattr(lo, "fetch_package", fake_fetch)
    return calls


def test_help_corpus_offline(fake_packages):
    c = lo.libreoffice_help_corpus(["de"])
    assert c.langs == ["deu_Latn", "eng_Latn"]
    assert len(c) == 8 and len(c.meta["labels"]) == 8
    assert c.meta["source"] == "debian libreoffice-help-en-us, libreoffice-help-de"
    assert c.name == "libreoffice-help"
    # cached: the second call parses nothing
    again = lo.libreoffice_help_corpus(["deu_Latn"], max_sentences=3)
    assert again.sentences["deu_Latn"] == c.sentences["deu_Latn"][:3]
    assert again.meta["labels"] == c.meta["labels"][:3]
    only_calc = lo.libreoffice_help_corpus(["de"], apps=["scalc"])
    assert set(only_calc.meta["labels"]) == {"scalc"}


def test_help_corpus_via_load_corpus(fake_packages):
    from xling.data.readers import load_corpus

    c = load_corpus("libreoffice-help", langs=["de"], max_sentences=2)
    assert len(c) == 2 and c.langs == ["deu_Latn", "eng_Latn"] and len(c.meta["ids"]) == 2
    assert load_corpus("libreoffice", langs=["de"]).fingerprint() == lo.libreoffice_help_corpus(["de"]).fingerprint()


def test_help_corpus_unknown_language(fake_packages):
    with pytest.raises(XlingError, match="language fi .*no LibreOffice help package.*deu_Latn"):
        lo.libreoffice_help_corpus(["fi"])


def test_help_default_languages_skip_unavailable(fake_packages, monkeypatch):
    monkeypatch.setattr(lo, "DEFAULT_HELP_LANGS", ("de", "fi"))
    c = lo.libreoffice_help_corpus()  # fi has no package here: skipped
    assert c.langs == ["deu_Latn", "eng_Latn"]


# ---------------------------------------------------------------- real packages (network, minutes)


@pytest.mark.slow
def test_real_help_and_ui_download():
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        pytest.skip("needs apt-get and dpkg")
    c = lo.libreoffice_help_corpus(["de"], apps=["smath"])
    assert len(c) > 300
    assert set(c.meta["labels"]) == {"smath"}
    assert all(a != b for a, b in zip(c.sentences["eng_Latn"], c.sentences["deu_Latn"]))
    ui = lo.libreoffice_ui_corpus(["de"])
    assert len(ui) > 1000
    assert not any("~" in s or "%PRODUCTNAME" in s for s in ui.sentences["deu_Latn"])
