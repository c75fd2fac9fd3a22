"""The built-in default corpus: Django's human translations.

The ``django`` wheel (a dependency of xling) ships gettext catalogs
``django/**/locale/<locale>/LC_MESSAGES/django.po`` and ``djangojs.po`` for
about a hundred locales. Every message is an English source string (the
``msgid``) with a human translation (the ``msgstr``), so the catalogs form a
small, clean, many-way parallel corpus that needs no download.

Building it:

* every ``.po`` file is parsed by :func:`~xling.data.po.parse_po` (``msgctxt``, ``msgid``,
  ``msgid_plural``, ``msgstr[n]``, multi-line strings, C escapes; the header
  entry, ``#, fuzzy`` entries, obsolete ``#~`` entries and empty translations
  are skipped);
* a message is keyed by ``(msgctxt, msgid)`` across all catalogs of the wheel
  (the first catalog in sorted path order wins when two disagree); English is
  the ``msgid`` (``msgstr[0]`` for a plural entry);
* placeholders and markup are removed by :func:`~xling.data.po.clean_message` (``%(name)s``,
  ``%s``, ``%%``, ``{name}``, HTML tags and entities), whitespace is collapsed,
  and a message whose English side is shorter than 10 characters or 2 words is
  dropped, as is a translation identical to English (an untranslated copy);
* locales that normalise to the same language are merged only when the plain
  catalog is missing (``de`` is used, ``de_CH`` would only fill in for a
  missing ``de``; ``pt_BR`` is not used since ``pt`` exists); scripts stay
  apart (``zh_Hans``/``zh_Hant``, ``sr``/``sr_Latn``);
* only messages translated in every selected language are kept, deduplicated
  on the English side, in a fixed order;
* without a language list, :func:`default_languages` picks 28 languages
  greedily: many shared messages, new scripts and language families
  favoured, at least 1.25 x ``min_sentences`` shared messages (Django 5.2:
  28 languages, 11 scripts, 252 sentences).

The parsed, cleaned catalogs are cached as JSON in ``cache_dir("corpora")``,
keyed by the Django version and :data:`PARSER_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from xling.data.corpus import ParallelCorpus
from xling.data.langcodes import normalize_lang
from xling.data.po import clean_message, english_ok, parse_po
from xling.errors import XlingError
from xling.io import atomic_write_text, cache_dir

#: Bump when parsing or cleaning changes: it is part of the cache key.
PARSER_VERSION = 7

PIVOT = "eng_Latn"

#: Default number of languages (English included) for the automatic choice.
DEFAULT_NUM_LANGS = 28

_CTX_SEP = "\x04"


# --------------------------------------------------------------------------
# the Django catalogs
# --------------------------------------------------------------------------


def django_root() -> Path:
    """The installed django package folder."""
    try:
        import django
    except ImportError as exc:
        raise XlingError("the built-in corpus needs the 'django' package (pip install 'django>=5.2,<5.3')") from exc
    return Path(django.__file__).resolve().parent


def django_version() -> str:
    import django

    return django.get_version()


def _catalogs(root: Path) -> list[tuple[str, Path]]:
    """``(locale, path)`` of every catalog in the wheel, in a fixed order."""
    found = []
    for path in root.rglob("*.po"):
        parts = path.relative_to(root).parts
        if len(parts) >= 4 and parts[-2] == "LC_MESSAGES" and parts[-4] == "locale":
            found.append((parts[-3], path))
    found.sort(key=lambda lp: (lp[1].relative_to(root).as_posix()))
    return found


def _has_region(locale: str) -> bool:
    import langcodes

    try:
        return langcodes.Language.get(locale.replace("_", "-")).territory is not None
    except (ValueError, LookupError):
        return False


def _build(root: Path) -> dict:
    """Parse and clean every catalog; the JSON-able cached form of the corpus."""
    catalogs = _catalogs(root)
    if not catalogs:
        raise XlingError(f"no .po catalogs found under {root}")
    keys: dict[str, str] = {}  # key -> cleaned English, in first-seen order
    per_locale: dict[str, dict[str, str]] = {}
    for locale, path in catalogs:
        table = per_locale.setdefault(locale, {})
        for entry in parse_po(path):
            if entry.fuzzy or not entry.msgid:
                continue
            key = (entry.msgctxt or "") + _CTX_SEP + entry.msgid
            if key not in keys:
                english = clean_message(entry.msgid)
                keys[key] = english if english_ok(english) else ""
            if not keys[key] or key in table:
                continue
            trans = clean_message(entry.translation)
            if trans and trans != keys[key]:
                table[key] = trans

    # Group locales by normalised language; prefer the plain (region-less) one.
    groups: dict[str, list[str]] = {}
    for locale in sorted(per_locale):
        try:
            lang = normalize_lang(locale)
        except XlingError:
            continue
        if lang == PIVOT:
            continue  # English comes from the msgids
        groups.setdefault(lang, []).append(locale)
    langs: dict[str, dict[str, str]] = {}
    sources: dict[str, list[str]] = {}
    for lang, locales in sorted(groups.items()):
        plain = [loc for loc in locales if not _has_region(loc)]
        if plain:
            chosen = plain[:1]
        else:  # only region variants: merge them, the most complete first
            chosen = sorted(locales, key=lambda loc: (-len(per_locale[loc]), loc))
        merged: dict[str, str] = {}
        for loc in chosen:
            for key, value in per_locale[loc].items():
                merged.setdefault(key, value)
        if merged:
            langs[lang] = merged
            sources[lang] = chosen
    order = [k for k, v in keys.items() if v]
    return {
        "django": django_version(),
        "parser": PARSER_VERSION,
        "catalogs": len(catalogs),
        "keys": order,
        "english": {k: keys[k] for k in order},
        "langs": langs,
        "sources": sources,
    }


_MEMO: dict[str, dict] = {}


def load_catalogs(refresh: bool = False) -> dict:
    """The parsed and cleaned catalogs, from the JSON cache when possible."""
    version = django_version()
    cache = cache_dir("corpora") / f"django-{version}-p{PARSER_VERSION}.json"
    key = str(cache)
    if not refresh and key in _MEMO:
        return _MEMO[key]
    data = None
    if not refresh and cache.exists():
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            if data.get("django") != version or data.get("parser") != PARSER_VERSION:
                data = None
        except (OSError, ValueError):
            data = None
    if data is None:
        t0 = time.perf_counter()
        data = _build(django_root())
        data["build_seconds"] = round(time.perf_counter() - t0, 2)
        atomic_write_text(cache, json.dumps(data, ensure_ascii=False))
    _MEMO[key] = data
    return data


def available_languages(min_messages: int = 1) -> dict[str, int]:
    """Languages of the built-in corpus with their number of usable translations."""
    data = load_catalogs()
    counts = {PIVOT: len(data["keys"])}
    counts.update({lang: len(t) for lang, t in data["langs"].items()})
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v >= min_messages}


def _rows(data: dict, langs: list[str]) -> list[str]:
    """Keys translated in every language of ``langs``, deduplicated on English."""
    tables = [data["langs"][lang] for lang in langs if lang != PIVOT]
    seen: set[str] = set()
    rows = []
    for key in data["keys"]:
        if all(key in t for t in tables):
            english = data["english"][key]
            if english not in seen:
                seen.add(english)
                rows.append(key)
    return rows


# Coarse genealogical groups (Indo-European split by branch) of the languages
# Django translates into: only used to favour diversity in the default choice.
_FAMILIES = {
    "Germanic": "eng deu nld afr dan swe nob nno isl fry ltz",
    "Romance": "fra spa por ita cat glg ron ast",
    "Slavic": "rus ukr bel bul mkd srp hrv bos slv ces slk pol dsb hsb",
    "Baltic": "lit lav",
    "Celtic": "gle gla cym bre",
    "Iranian": "fas tgk ckb oss",
    "Indic": "hin mar nep ben pan urd",
    "Greek": "ell",
    "Armenian": "hye",
    "Albanian": "sqi",
    "Uralic": "fin est hun udm",
    "Turkic": "tur aze uig kir kaz tat uzb tuk",
    "Semitic": "ara heb amh",
    "Kartvelian": "kat",
    "Dravidian": "mal kan tel tam",
    "Sinitic": "zho",
    "Burmese": "mya",
    "Japonic": "jpn",
    "Koreanic": "kor",
    "Austronesian": "ind msa",
    "Tai": "tha",
    "Austroasiatic": "vie khm",
    "Bantu": "swa",
    "Igboid": "ibo",
    "Mongolic": "mon",
    "Basque": "eus",
    "Berber": "kab",
    "Constructed": "epo ido ina",
}
_FAMILY_OF = {code: fam for fam, codes in _FAMILIES.items() for code in codes.split()}

#: Worth of a new script / a new language family, in shared messages.
_SCRIPT_BONUS = 60
_FAMILY_BONUS = 30


def default_languages(
    num_langs: int = DEFAULT_NUM_LANGS, min_sentences: int = 200, data: dict | None = None
) -> list[str]:
    """Choose the default languages: well translated, diverse, enough shared rows.

    Greedy and deterministic. English first; then repeatedly add the language
    that maximises ``shared + bonuses``, where ``shared`` is the number of
    distinct English messages still translated in every chosen language, plus
    a bonus for a script not chosen yet (worth 60 messages) and for a language
    family not chosen yet (worth 30). A language is eligible only while
    ``shared`` stays at or above ``1.25 * min_sentences`` (a margin above the
    guarantee). Stops at ``num_langs`` languages or when none is eligible.
    """
    data = data or load_catalogs()
    floor = int(round(min_sentences * 1.25))
    counts = {lang: len(t) for lang, t in data["langs"].items()}
    pool = sorted(counts, key=lambda k: (-counts[k], k))
    chosen = [PIVOT]
    shared = set(data["keys"])
    scripts = {"Latn"}
    families = {"Germanic"}
    while len(chosen) < num_langs:
        best = None
        for lang in pool:
            keep = shared & data["langs"][lang].keys()
            n = len(_dedup(data, keep))
            if n < floor:
                continue
            base, script = lang.split("_")
            family = _FAMILY_OF.get(base, base)
            score = n + (_SCRIPT_BONUS if script not in scripts else 0) + (_FAMILY_BONUS if family not in families else 0)
            if best is None or score > best[0]:
                best = (score, lang, keep)
        if best is None:
            break
        _, lang, keep = best
        chosen.append(lang)
        pool.remove(lang)
        shared = keep
        base, script = lang.split("_")
        scripts.add(script)
        families.add(_FAMILY_OF.get(base, base))
    return chosen


def _dedup(data: dict, keys: set[str]) -> set[str]:
    english = data["english"]
    return {english[k] for k in keys}


def django_corpus(
    langs: list[str] | None = None, min_sentences: int = 200, max_sentences: int | None = None
) -> ParallelCorpus:
    """The built-in parallel corpus from Django's translations.

    ``langs=None`` chooses the default languages (:func:`default_languages`:
    about 28 languages, all with at least ``min_sentences`` shared messages);
    otherwise every language in ``langs`` (any code :func:`normalize_lang`
    accepts) must be in the catalogs, and the corpus keeps the messages
    translated in all of them. English (``eng_Latn``) is always included.
    Raises :class:`XlingError` for a language Django does not translate into
    or when fewer than one shared message remains.
    """
    data = load_catalogs()
    if langs is None:
        chosen = default_languages(min_sentences=min_sentences, data=data)
    else:
        chosen = [PIVOT]
        for code in langs:
            norm = normalize_lang(code)
            match = _resolve(data, norm)
            if match is None:
                have = ", ".join(sorted([PIVOT, *data["langs"]]))
                raise XlingError(f"language {code} ({norm}) is not in the built-in django corpus; it has: {have}")
            if match not in chosen:
                chosen.append(match)
    rows = _ordered_rows(data, chosen, max_sentences)
    if not rows:
        raise XlingError(f"the built-in django corpus has no message translated in all of: {', '.join(chosen)}")
    sentences = {PIVOT: [data["english"][k] for k in rows]}
    for lang in chosen:
        if lang != PIVOT:
            sentences[lang] = [data["langs"][lang][k] for k in rows]
    meta = {
        "source": f"django {data['django']}",
        "catalogs": data["catalogs"],
        "locales": {lang: data["sources"].get(lang, ["en"]) for lang in sorted(chosen) if lang != PIVOT},
        "ids": _ids(rows),
        "dropped_empty": 0,
    }
    default = chosen if langs is None else default_languages(min_sentences=min_sentences, data=data)
    if langs is not None and set(chosen) != set(default):
        # what the default selection holds, so callers can say the sentence set changed (xling.data.selection)
        meta["default_selection"] = {"langs": len(default), "ids": _ids(_ordered_rows(data, default, max_sentences))}
    if langs is None:
        meta["other_langs"] = sorted(set(data["langs"]) - set(chosen))
    return ParallelCorpus("django", sentences, meta)


def _ordered_rows(data: dict, langs: list[str], max_sentences: int | None) -> list[str]:
    # Catalog order clusters similar messages (dozens of language names first, then
    # form errors, ...), so "the first N sentences" would be an unrepresentative
    # sample. A fixed hash order mixes them and stays deterministic.
    rows = sorted(_rows(data, langs), key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
    return rows if max_sentences is None else rows[: int(max_sentences)]


def _ids(rows: list[str]) -> list[str]:
    return [k.replace(_CTX_SEP, "|") if not k.startswith(_CTX_SEP) else k[1:] for k in rows]


def _resolve(data: dict, norm: str) -> str | None:
    """The corpus language for a normalised code (:func:`~xling.data.langcodes.match_lang`'s rule)."""
    from xling.data.langcodes import match_lang

    return match_lang(norm, [PIVOT, *data["langs"]])


__all__ = [
    "parse_po",
    "clean_message",
    "english_ok",
    "load_catalogs",
    "available_languages",
    "default_languages",
    "django_corpus",
    "PARSER_VERSION",
]
