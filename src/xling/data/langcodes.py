"""Language codes: everything becomes ISO 639-3 + ISO 15924 script (``deu_Latn``).

The FLORES-200 convention is used throughout xling, so ``de``, ``deu``,
``deu_Latn``, ``de-DE`` and ``de_CH`` all normalise to ``deu_Latn``. A region
is dropped (``pt_BR`` -> ``por_Latn``); a script is kept when given and
otherwise filled in with the language's likeliest script (``sr`` ->
``srp_Cyrl``, ``sr_Latn`` -> ``srp_Latn``, ``zh_TW`` -> ``zho_Hant``).

Region variants therefore collapse onto one code; readers that meet several
variants of a language must decide which one to keep (see
:mod:`xling.data.django_corpus`).

Three-letter codes that are valid ISO 639-3 individual languages are kept as
they are even where the ``langcodes`` package would fold them into another
language (FLORES uses ``prs_Arab`` for Dari and ``tgl_Latn`` for Tagalog,
which ``langcodes`` rewrites to ``fa-AF`` and ``fil``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from xling.errors import XlingError

# Tags that are syntactically languages but name no language at all.
_NOT_LANGUAGES = {"und", "mul", "zxx", "mis"}
_INFERRED_SCRIPT_FIXES = {"Kore": "Hang"}
_TAG_RE = re.compile(r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$")


def _langcodes():
    try:
        import langcodes
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise XlingError("the 'langcodes' package is needed to read language codes (pip install langcodes)") from exc
    return langcodes


def _unknown(code) -> XlingError:
    """``unknown language code 'jp'``, with a suggestion where one is clear (:func:`suggest_lang`)."""
    hint = suggest_lang(code) if isinstance(code, str) else None
    return XlingError(f"unknown language code {code!r}" + (f"; did you mean {hint}?" if hint else ""))


def suggest_lang(code: str) -> str | None:
    """What an unknown language code was probably meant to be, as ``'ja' (Japanese; 'jp' is Japan's country
    code)``, or None: a two-letter country code is taken for the likeliest language of that country (CLDR
    likely subtags: ``jp`` -> ``ja``, ``cn`` -> ``zh``, ``gr`` -> ``el``); a language name, even misspelt a
    little, for its code (``german`` -> ``de``), as the ``langcodes`` package finds it."""
    raw = code.strip()
    try:
        lc = _langcodes()
        if len(raw) == 2 and raw.isalpha():
            region = lc.Language.get(f"und-{raw.upper()}")
            place = region.territory_name("en")
            if place and not place.startswith(("Unknown", "Private")):
                lang = region.maximize().language
                if lang and lang != raw.lower():
                    return f"'{lang}' ({lc.Language.get(lang).language_name('en')}; '{raw}' is the country code of {place})"
        if len(raw) > 3 and raw.replace(" ", "").isalpha():
            found = lc.find(raw)
            if found.language:
                return f"'{found.language}' ({found.language_name('en')})"
    except (ImportError, LookupError, ValueError, XlingError):
        return None
    return None


@lru_cache(maxsize=4096)
def normalize_lang(code: str) -> str:
    """Normalise a language code to ``<ISO 639-3>_<Script>``, e.g. ``de-CH`` -> ``deu_Latn``.

    Accepts ISO 639-1/2/3 codes, BCP-47 tags with ``-`` or ``_`` separators,
    optional script and region subtags, and FLORES-200 codes (which come back
    unchanged). Raises :class:`XlingError` ``unknown language code '<code>'``
    for anything that does not name a known language.
    """
    if not isinstance(code, str):
        raise _unknown(code)
    raw = code.strip()
    if not raw or not _TAG_RE.match(raw):
        raise _unknown(code)
    lc = _langcodes()
    tag = raw.replace("_", "-")
    try:
        lang = lc.Language.get(tag)
    except (ValueError, LookupError) as exc:
        raise _unknown(code) from exc
    if not lang.language or lang.language in _NOT_LANGUAGES or not lang.is_valid():
        raise _unknown(code)
    try:
        alpha3 = lc.Language.get(lang.language).to_alpha3()
        alpha3_b = lc.Language.get(lang.language).to_alpha3(variant="B")
    except (ValueError, LookupError) as exc:
        raise _unknown(code) from exc

    base = tag.split("-")[0].lower()
    if len(base) == 3 and base not in (alpha3, alpha3_b):
        # langcodes folded a distinct 3-letter language into another one
        # (prs -> fa-AF, tgl -> fil); keep the code the user wrote.
        alpha3 = base

    script = lang.script
    if not script:
        try:
            script = lang.maximize().script
        except (ValueError, LookupError):  # pragma: no cover - defensive
            script = None
        # CLDR's likely script for Korean is Kore (Hangul + Han); FLORES and
        # most corpora write kor_Hang.
        script = _INFERRED_SCRIPT_FIXES.get(script, script)
    if not script:
        raise XlingError(f"unknown language code {code!r}: no script known for it")
    return f"{alpha3}_{script}"


@lru_cache(maxsize=4096)
def lang_name(code: str) -> str:
    """English name of a language code, e.g. ``deu_Latn`` -> ``German``.

    The script is named only when it is not the language's usual one
    (``srp_Latn`` -> ``Serbian (Latin)``, ``zho_Hant`` -> ``Chinese
    (Traditional)``). Falls back to the code itself when the name data
    (``language_data``) is not installed or knows no name.
    """
    try:
        norm = normalize_lang(code)
        base, script = norm.split("_")
        lc = _langcodes()
        lang = lc.Language.get(base)
        # Prefer the name of the code as written (prs -> Dari, not Persian).
        name = lc.Language.make(language=base).language_name("en")
        if not name or name.startswith("Unknown language"):
            name = lang.language_name("en")
        default_script = lang.maximize().script
        default_script = _INFERRED_SCRIPT_FIXES.get(default_script, default_script)
        if script != default_script:
            full = lc.Language.get(f"{base}-{script}").display_name("en")
            if full and "Unknown" not in full:
                name = full
    except (ImportError, LookupError, ValueError, XlingError):
        return code
    if not name or name.startswith("Unknown language"):
        return code
    return name


def short_lang_name(code: str) -> str:
    """:func:`lang_name` for reports and terminal tables: without the ISO 639-3 qualifier
    "(individual language)" (``swh_Latn`` -> ``Swahili``, not ``Swahili (individual language)``), so a
    name never has to be cut to fit a column; a script or variant in parentheses is kept."""
    return lang_name(code).replace(" (individual language)", "")


@lru_cache(maxsize=4096)
def _macro_key(norm: str) -> str:
    """``<macrolanguage alpha3>_<script>``: arb_Arab and ara_Arab share ``ara_Arab``."""
    base, script = norm.split("_")
    lc = _langcodes()
    try:
        macro = lc.standardize_tag(base, macro=True)
        return f"{lc.Language.get(macro).to_alpha3()}_{script}"
    except (ValueError, LookupError):
        return norm


def same_language(a: str, b: str) -> bool:
    """Whether two codes name the same language in the same script.

    Region variants are the same language (``de-CH`` == ``deu``), and so are a
    macrolanguage and its main member (``ar`` == ``arb_Arab``, ``zh_Hans`` ==
    ``cmn_Hans``, ``ms`` == ``zsm_Latn``); different scripts are not
    (``sr`` != ``sr_Latn``, ``zh_Hans`` != ``zh_Hant``). Unknown codes raise
    :class:`XlingError`.
    """
    na, nb = normalize_lang(a), normalize_lang(b)
    if na == nb:
        return True
    if na.split("_")[1] != nb.split("_")[1]:
        return False
    return _macro_key(na) == _macro_key(nb)


def match_lang(code: str, available) -> str | None:
    """The language of ``available`` (normalised codes a corpus, task or module has) that ``code`` names.

    xling's one rule for region variants, scripts and macrolanguages, used by every corpus, task, module
    and results join: an exact match first; else the one language with the same ISO 639-3 code (another or
    no script); else the one language that is the same per :func:`same_language`, i.e. a macrolanguage and
    its main individual language match when only one of them is present (``sw``/``swa_Latn`` finds the
    Bible's ``swh_Latn``, ``swh`` finds Django's ``swa_Latn``, ``ar`` finds ``arb_Arab``). None when nothing
    or more than one language matches. Unknown codes raise :class:`XlingError`.
    """
    norm = normalize_lang(code)
    have = list(dict.fromkeys(available))
    if norm in have:
        return norm
    base = norm.split("_")[0]
    same = [k for k in have if k.split("_")[0] == base]
    if same:
        return same[0] if len(same) == 1 else None
    macro = []
    for k in have:
        try:
            if same_language(k, norm):
                macro.append(k)
        except XlingError:  # a key that is not a language code (never matched)
            continue
    return macro[0] if len(macro) == 1 else None


__all__ = ["normalize_lang", "lang_name", "match_lang", "suggest_lang", "short_lang_name", "same_language"]
