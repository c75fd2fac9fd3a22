"""The built-in Firefox corpus (``--data firefox``): about 100 locales of Firefox's UI messages.

Source: the Debian packages ``firefox-esr-l10n-<locale>``, each one Firefox ESR
language pack (an XPI, i.e. a zip) of Fluent ``.ftl`` and Java-style
``.properties`` files, about 11,000 messages per locale. They are downloaded
with ``apt-get download`` and unpacked with ``dpkg -x`` into
``cache_dir("debian")`` (:func:`xling.data.debian.fetch_package`: one
process at a time per package, nothing half-unpacked is ever visible), then
parsed once per locale and cached as JSON in ``cache_dir("corpora")``, keyed by
the package version and :data:`PARSER_VERSION`.

Messages are parallel by id (``<file path without the locale>:<message
id>[.<attribute>]``) against the English reference, the ``en-GB`` pack
(:data:`REFERENCE`; Debian has no ``en-US`` pack, Firefox's source language).

Cleaning:

* Fluent (:func:`parse_ftl`): comments, terms (``-brand-name = ...``) and junk
  are skipped; a message gives its value and each text attribute (``.label``,
  ``.tooltiptext``, ``.title``, ``.placeholder``, ``.aria-label``, ...) as
  separate units; ``.accesskey``/``.key``/``.commandkey`` and ``.style`` are
  dropped. In a pattern (:func:`clean_fluent`), variables and function calls
  (``{ $count }``, ``{ NUMBER($n) }``) are removed, string and number
  literals (``{ "-" }``) are kept as text, and a pattern with a selector
  (``{ $n -> [one] ... *[other] ... }``) or a reference to a message or term
  (``{ -brand-short-name }``, ``{ other-id }``) is dropped whole: its plain text
  is not a sentence of the language.
* ``.properties`` (:func:`parse_properties`): ``key = value`` with comments,
  line continuations and ``\\uXXXX`` escapes; printf placeholders (``%S``,
  ``%1$S``, ``%d``, ``%ld``, ``%%``) are removed; a value with a PluralForm
  placeholder (``#1``) or an entity reference (``&brandShortName;``) is dropped.
* then :func:`xling.data.po.clean_message` (markup, entities,
  whitespace) and, for English, :func:`~xling.data.po.english_ok`
  (at least 10 characters and 2 words); a translation identical to the English
  text (an untranslated fallback) is dropped for that locale, and the rows are
  deduplicated on the English side, in a fixed hash order.

Language selection: the locales normalise to ISO 639-3 + script codes
(``pt-br``, ``pt-pt`` -> ``por_Latn``); one locale per language
(:data:`PREFERRED` names it where several fold together). Without ``--langs``
the corpus takes every language whose pack has at least
:data:`DEFAULT_MIN_MESSAGES` usable translated messages, and keeps the
messages translated in all of them; ``meta["usable_messages"]`` holds each
language's own count.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Callable, Sequence

from xling.data.corpus import ParallelCorpus
from xling.data.debian import apt_packages, fetch_package
from xling.data.langcodes import normalize_lang
from xling.data.po import clean_message, english_ok
from xling.errors import XlingError
from xling.io import atomic_write_text, cache_dir, file_lock, lock_for

#: Bump when parsing or cleaning changes: it is part of the cache key.
PARSER_VERSION = 1

PIVOT = "eng_Latn"
PACKAGE_PREFIX = "firefox-esr-l10n-"
REFERENCE = "en-gb"

#: Default selection: languages with at least this many usable translated messages.
DEFAULT_MIN_MESSAGES = 4000

#: Where several locales normalise to one language, the one used.
PREFERRED = {"spa_Latn": "es-es", "por_Latn": "pt-pt", "cat_Latn": "ca", "eng_Latn": REFERENCE}

#: Locales of Debian 12's firefox-esr-l10n-* packages, for systems without apt-cache.
KNOWN_LOCALES = (
    "ach af an ar ast az be bg bn br bs ca ca-valencia cak cs cy da de dsb el en-ca en-gb eo es-ar es-cl "
    "es-es es-mx et eu fa ff fi fr fur fy-nl ga-ie gd gl gn gu-in he hi-in hr hsb hu hy-am ia id is it ja ka "
    "kab kk km kn ko lij lt lv mk mr ms my nb-no ne-np nl nn-no oc pa-in pl pt-br pt-pt rm ro ru sat sc sco si "
    "sk skr sl son sq sr sv-se szl ta te tg th tl tr trs uk ur uz vi xh zh-cn zh-tw"
).split()

# --------------------------------------------------------------------------
# Fluent
# --------------------------------------------------------------------------

_FTL_ENTRY = re.compile(r"^(-?[A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]?(.*)$")
_FTL_ATTR = re.compile(r"^[ \t]+\.([A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]?(.*)$")
_SKIP_ATTRS = re.compile(r"(?i)(access|command)?key$|^style$|^width$|^height$")


def parse_ftl(text: str) -> dict[str, str]:
    """Raw patterns of a Fluent file: ``{"id": value, "id.attr": attribute}`` (terms skipped).

    Multiline patterns (indented continuation lines, blank lines inside) are
    joined with newlines; comments and junk end the current entry.
    """
    out: dict[str, str] = {}
    current: str | None = None  # "id" or "id.attr" receiving continuation lines
    entry: str | None = None
    lines: list[str] = []

    def flush():
        if current is not None and not current.startswith("-"):
            value = "\n".join(lines).strip()
            if value:
                out[current] = value

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current is not None:
                lines.append("")
            continue
        if line[0] not in " \t":
            flush()
            current, entry, lines = None, None, []
            m = _FTL_ENTRY.match(line)
            if m:  # comments (#) and junk leave current None
                entry = current = m.group(1)
                lines = [m.group(2)]
            continue
        if entry is None:
            continue
        m = _FTL_ATTR.match(line)
        if m:
            flush()
            current, lines = f"{entry}.{m.group(1)}", [m.group(2)]
            continue
        if current is not None:
            lines.append(line.strip())
    flush()
    return out


class _Dropped(Exception):
    pass


def _placeables(pattern: str) -> list[tuple[int, int]]:
    """(start, end) spans of the top-level ``{ ... }`` placeables (nesting and string literals respected)."""
    spans, depth, start, i, in_str = [], 0, 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
        i += 1
    if depth or in_str:
        raise _Dropped("unbalanced braces")
    return spans


_STRING = re.compile(r'^"((?:[^"\\]|\\.)*)"$')
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_VARIABLE = re.compile(r"^\$[A-Za-z][A-Za-z0-9_-]*$")
_FUNCTION = re.compile(r"^[A-Z][A-Z0-9_-]*\s*\(")
_REFERENCE = re.compile(r"-?[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)?")


def _unescape_fluent(s: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{6}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] in "uU" and len(m.group(1)) > 1 else m.group(1),
                  s)


def clean_fluent(pattern: str) -> str | None:
    """Plain text of a Fluent pattern, or ``None`` when it has a selector or a message/term reference."""
    try:
        spans = _placeables(pattern)
        parts, last = [], 0
        for a, b in spans:
            parts.append(pattern[last:a])
            inner = pattern[a + 1 : b - 1].strip()
            if "->" in inner:
                raise _Dropped("selector")
            m = _STRING.match(inner)
            if m:
                parts.append(_unescape_fluent(m.group(1)))
            elif _NUMBER.match(inner):
                parts.append(inner)
            elif _VARIABLE.match(inner) or _FUNCTION.match(inner):
                if re.search(r"(?<![$\w])-[A-Za-z]", inner.split("(", 1)[-1]):
                    raise _Dropped("term reference in a call")
                parts.append(" ")
            elif inner.startswith("{") or _REFERENCE.fullmatch(inner):
                raise _Dropped("reference")
            else:
                raise _Dropped("unknown placeable")
            last = b
        parts.append(pattern[last:])
    except _Dropped:
        return None
    return " ".join("".join(parts).split())


# --------------------------------------------------------------------------
# .properties
# --------------------------------------------------------------------------


def parse_properties(text: str) -> dict[str, str]:
    """``key -> value`` of a Java-style ``.properties`` file (comments, continuations, escapes)."""
    out: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.lstrip() if pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        m = re.match(r"((?:[^\\=:\s]|\\.)+)\s*[=:\s]\s*(.*)$", line, re.S)
        if not m:
            continue
        key = _unescape_props(m.group(1))
        out[key] = _unescape_props(m.group(2))
    return out


def _unescape_props(s: str) -> str:
    def repl(m: re.Match) -> str:
        c = m.group(1)
        if c.startswith("u"):
            return chr(int(c[1:], 16))
        return {"n": "\n", "t": "\t", "r": "\r", "f": "\f"}.get(c, c)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", repl, s)


_PRINTF = re.compile(r"%(?:\d+\$)?[-+ 0#]*\d*(?:\.\d+)?(?:ll|l|h)?[sSdiufgxXc@]")
_PLURAL = re.compile(r"#\d")
_ENTITY_REF = re.compile(r"&[A-Za-z][\w.-]*;")


def clean_property(value: str) -> str | None:
    """Plain text of a ``.properties`` value, or ``None`` (PluralForm ``#1`` or ``&entity;`` reference)."""
    import html

    if _PLURAL.search(value):
        return None
    if any(html.unescape(e) == e for e in _ENTITY_REF.findall(value)):  # not an HTML entity: a DTD reference
        return None
    s = "\x00".join(_PRINTF.sub(" ", part) for part in value.split("%%")).replace("\x00", "%")
    return " ".join(s.split())


# --------------------------------------------------------------------------
# language packs
# --------------------------------------------------------------------------


def _unit_path(name: str, locale: str) -> str:
    """A pack member's path without its locale folders (``localization/de/a.ftl`` -> ``localization/a.ftl``)."""
    tags = {locale.lower(), locale.lower().replace("_", "-")}
    return "/".join(p for p in name.split("/") if p.lower() not in tags)


def read_xpi(path: str | Path, locale: str) -> dict[str, str]:
    """Cleaned messages ``{unit id: text}`` of one language pack (dropped messages left out)."""
    out: dict[str, str] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise XlingError(f"{path}: not a readable language pack ({exc})") from None
    with zf:
        for name in sorted(zf.namelist()):
            if not name.endswith((".ftl", ".properties")):
                continue
            try:
                text = zf.read(name).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise XlingError(f"{path}: {name} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise XlingError(f"{path}: {name} cannot be read ({exc})") from None
            where = _unit_path(name, locale)
            if name.endswith(".ftl"):
                items = ((k, clean_fluent(v)) for k, v in parse_ftl(text).items()
                         if "." not in k or not _SKIP_ATTRS.search(k.rsplit(".", 1)[1]))
            else:
                items = ((k, clean_property(v)) for k, v in parse_properties(text).items()
                         if not _SKIP_ATTRS.search(k.rsplit(".", 1)[-1]))
            for key, value in items:
                if value is None:
                    continue
                value = clean_message(value)
                if value and any(c.isalpha() for c in value):
                    out[f"{where}:{key}"] = value
    return out


def _apt_names() -> list[str]:
    names = [n[len(PACKAGE_PREFIX):] for n in apt_packages(PACKAGE_PREFIX)]
    return sorted(n for n in names if n != "all") or list(KNOWN_LOCALES)


def locales() -> dict[str, str]:
    """``normalised language -> locale`` of the available packs, one locale per language (English: en-GB)."""
    out: dict[str, str] = {}
    for loc in sorted(_apt_names(), key=lambda s: (s.count("-"), s)):
        try:
            lang = normalize_lang(loc)
        except XlingError:
            continue
        if lang == PIVOT and loc != REFERENCE:
            continue
        if PREFERRED.get(lang) == loc:
            out[lang] = loc
        else:
            out.setdefault(lang, loc)
    if PIVOT not in out:
        out[PIVOT] = REFERENCE
    return out


def _fetch(locale: str) -> Path:
    return fetch_package(PACKAGE_PREFIX + locale)


def locale_table(locale: str, fetch: Callable[[str], Path] | None = None,
                 building: Callable[[str], None] | None = None) -> dict[str, str]:
    """Cleaned messages of one locale's pack (downloaded and parsed on first use, then cached).

    ``building(locale)`` is called before a pack is parsed (not when the cache answers)."""
    root = (fetch or _fetch)(locale)
    stamp = root / ".xling-extracted"
    version = stamp.read_text().strip() if stamp.is_file() else "unversioned"
    tag = hashlib.sha256(version.encode()).hexdigest()[:12]
    path = cache_dir("corpora") / f"firefox-{locale}-{tag}-p{PARSER_VERSION}.json"
    with file_lock(lock_for(path)):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("messages"), dict):
                    return data["messages"]
            except (OSError, ValueError):
                pass
        if building is not None:
            building(locale)
        packs = sorted(root.glob("usr/lib/firefox-esr/browser/extensions/langpack-*.xpi"))
        if not packs:
            raise XlingError(f"Debian package {PACKAGE_PREFIX}{locale} holds no language pack (langpack-*.xpi)")
        messages = read_xpi(packs[0], packs[0].name[len("langpack-"):].split("@")[0])
        atomic_write_text(path, json.dumps({"package": version, "messages": messages}, ensure_ascii=False))
    return messages


def usable(english: dict[str, str], table: dict[str, str]) -> set[str]:
    """Units of a locale that are translated (not a copy of the English text) and have usable English."""
    return {k for k, v in table.items() if k in english and v != english[k] and english_ok(english[k])}


def firefox_corpus(
    langs: Sequence[str] | None = None, max_sentences: int | None = None, *,
    min_messages: int = DEFAULT_MIN_MESSAGES, fetch: Callable[[str], Path] | None = None, quiet: bool = False,
) -> ParallelCorpus:
    """The Firefox corpus: English + ``langs`` (default: every language with >= ``min_messages`` usable messages)."""
    import sys

    available = locales()
    shown = []

    def building(locale: str) -> None:
        if not quiet:
            print(f"\rxling: firefox corpus: parsing the {locale} language pack (once)", end="", file=sys.stderr,
                  flush=True)
            shown.append(locale)

    english = locale_table(REFERENCE, fetch, building)
    if langs is None:
        chosen = [lang for lang in sorted(available) if lang != PIVOT]
    else:
        chosen = []
        for code in langs:
            from xling.data.langcodes import match_lang

            norm = normalize_lang(code)
            match = match_lang(norm, available)
            if match is None:
                raise XlingError(f"language {code} ({norm}) has no Firefox language pack; "
                                 f"available: {', '.join(sorted(available))}")
            if match != PIVOT and match not in chosen:
                chosen.append(match)
    tables: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}
    for lang in chosen:
        tables[lang] = locale_table(available[lang], fetch, building)
        counts[lang] = len(usable(english, tables[lang]))
    if shown:
        print(file=sys.stderr)
    if langs is None:
        small = sorted(k for k in chosen if counts[k] < min_messages)
        chosen = [k for k in chosen if counts[k] >= min_messages]
    shared = {k for k in english}
    for lang in chosen:
        shared &= usable(english, tables[lang])
    seen: set[str] = set()
    rows = []
    for key in sorted((k for k in shared if english_ok(english[k])),
                      key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest()):
        if english[key] not in seen:
            seen.add(english[key])
            rows.append(key)
    if max_sentences is not None:
        rows = rows[: int(max_sentences)]
    if not rows:
        raise XlingError(f"the firefox corpus has no message translated in all of: {', '.join([PIVOT, *chosen])}")
    sentences = {PIVOT: [english[k] for k in rows]}
    for lang in chosen:
        sentences[lang] = [tables[lang][k] for k in rows]
    meta = {
        "source": f"Debian {PACKAGE_PREFIX}* language packs",
        "locales": {lang: available[lang] for lang in [PIVOT, *chosen]},
        "usable_messages": {PIVOT: sum(1 for v in english.values() if english_ok(v)), **counts},
        "ids": rows,
        "dropped_empty": 0,
    }
    if langs is None:
        meta["other_langs"] = small
    return ParallelCorpus("firefox", sentences, meta)


__all__ = ["parse_ftl", "clean_fluent", "parse_properties", "clean_property", "read_xpi", "locales",
           "locale_table", "firefox_corpus", "PARSER_VERSION", "REFERENCE"]
