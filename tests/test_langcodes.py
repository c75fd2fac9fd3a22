"""Language code normalisation: ISO 639-3 + script, FLORES codes unchanged."""

import pytest

from xling.data.langcodes import lang_name, normalize_lang, same_language
from xling.errors import XlingError


@pytest.mark.parametrize(
    "code, expected",
    [
        ("de", "deu_Latn"),
        ("deu", "deu_Latn"),
        ("deu_Latn", "deu_Latn"),
        ("de-DE", "deu_Latn"),
        ("de_CH", "deu_Latn"),
        ("ger", "deu_Latn"),  # ISO 639-2/B
        ("DEU_LATN", "deu_Latn"),
        (" de ", "deu_Latn"),
        ("zh_Hans", "zho_Hans"),
        ("zh_Hant", "zho_Hant"),
        ("zh", "zho_Hans"),
        ("zh_TW", "zho_Hant"),
        ("sr_Latn", "srp_Latn"),
        ("sr", "srp_Cyrl"),
        ("pt_BR", "por_Latn"),
        ("es_AR", "spa_Latn"),
        ("en_GB", "eng_Latn"),
        ("ar_DZ", "ara_Arab"),
        ("ko", "kor_Hang"),
        ("ja", "jpn_Jpan"),
        ("iw", "heb_Hebr"),  # deprecated alias
        ("ckb", "ckb_Arab"),
    ],
)
def test_normalize(code, expected):
    assert normalize_lang(code) == expected


@pytest.mark.parametrize(
    "code",
    ["arb_Arab", "zsm_Latn", "swh_Latn", "prs_Arab", "tgl_Latn", "cmn_Hans", "yue_Hant", "kas_Deva", "taq_Tfng",
     "eng_Latn", "kor_Hang", "ace_Arab", "pes_Arab", "npi_Deva"],
)
def test_flores_codes_unchanged(code):
    assert normalize_lang(code) == code


@pytest.mark.parametrize("code", ["xx", "", "  ", "und", "zzz", "deu_Xxxx", "x-foo", "toolongcode", "123", "de__DE", "mul"])
def test_unknown_code(code):
    with pytest.raises(XlingError) as err:
        normalize_lang(code)
    msg = str(err.value)
    assert msg.startswith("unknown language code")
    if code.strip():
        assert repr(code) in msg
    assert "\n" not in msg


def test_unknown_message_exact():
    with pytest.raises(XlingError, match=r"^unknown language code 'xx'$"):
        normalize_lang("xx")


def test_non_string():
    with pytest.raises(XlingError):
        normalize_lang(None)  # type: ignore[arg-type]


def test_region_variants_collapse():
    assert len({normalize_lang(c) for c in ["de", "de_DE", "de_CH", "de-AT"]}) == 1
    assert normalize_lang("sr") != normalize_lang("sr_Latn")
    assert normalize_lang("zh_Hans") != normalize_lang("zh_Hant")


def test_lang_name():
    assert lang_name("de") == "German"
    assert lang_name("deu_Latn") == "German"
    assert lang_name("sr_Latn") == "Serbian (Latin)"
    assert lang_name("sr") == "Serbian"
    assert lang_name("zh_Hant") == "Chinese (Traditional)"
    assert lang_name("ko") == "Korean"
    assert lang_name("prs_Arab") == "Dari"


def test_lang_name_falls_back_to_code():
    assert lang_name("xx") == "xx"


def test_lang_name_without_language_data(monkeypatch):
    import langcodes

    def boom(*a, **k):
        raise ImportError("language_data missing")

    lang_name.cache_clear()
    monkeypatch.setattr(langcodes.Language, "language_name", boom)
    try:
        assert lang_name("fin") == "fin"
    finally:
        lang_name.cache_clear()


def test_same_language():
    assert same_language("de", "deu_Latn")
    assert same_language("de-CH", "deu")
    assert same_language("ar", "arb_Arab")  # macrolanguage and its main member
    assert same_language("zh_Hans", "cmn_Hans")
    assert same_language("ms", "zsm_Latn")
    assert not same_language("sr", "sr_Latn")
    assert not same_language("zh_Hans", "zh_Hant")
    assert not same_language("de", "nl")
    with pytest.raises(XlingError, match="'qq'"):
        same_language("de", "qq")


def test_cached():
    normalize_lang.cache_clear()
    normalize_lang("fr")
    normalize_lang("fr")
    assert normalize_lang.cache_info().hits >= 1
