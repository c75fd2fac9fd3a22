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


@lru_cache(maxsize=4096)
def normalize_lang(code: str) -> str:
    """Normalise a language code to ``<ISO 639-3>_<Script>``, e.g. ``de-CH`` -> ``deu_Latn``.

    Accepts ISO 639-1/2/3 codes, BCP-47 tags with ``-`` or ``_`` separators,
    optional script and region subtags, and FLORES-200 codes (which come back
    unchanged). Raises :class:`XlingError` ``unknown language code '<code>'``
    for anything that does not name a known language.
    """
    if not isinstance(code, str):
        raise XlingError(f"unknown language code {code!r}")
    raw = code.strip()
    if not raw or not _TAG_RE.match(raw):
        raise XlingError(f"unknown language code {code!r}")
    lc = _langcodes()
    tag = raw.replace("_", "-")
    try:
        lang = lc.Language.get(tag)
    except (ValueError, LookupError) as exc:
        raise XlingError(f"unknown language code {code!r}") from exc
    if not lang.language or lang.language in _NOT_LANGUAGES or not lang.is_valid():
        raise XlingError(f"unknown language code {code!r}")
    try:
        alpha3 = lc.Language.get(lang.language).to_alpha3()
        alpha3_b = lc.Language.get(lang.language).to_alpha3(variant="B")
    except (ValueError, LookupError) as exc:
        raise XlingError(f"unknown language code {code!r}") from exc

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


__all__ = ["normalize_lang", "lang_name", "same_language"]
