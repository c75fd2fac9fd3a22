"""LibreOffice help pages and interface strings from Debian packages.

**Help** (``libreoffice-help-<lang>``): each package holds the offline help
as compiled HTML pages, ``usr/share/libreoffice/help/<locale>/text/<app>/...
/<page>.html`` (about 2,560 pages per language in Debian 12, LibreOffice
7.4), generated from the same ``.xhp`` sources for every language. Every
paragraph and heading keeps its source id (``<p id="par_id3154480">``,
``<h2 id="hd_id3157557">``), so two languages align by ``(page, id)``. The
application is the folder under ``text/`` (``swriter``, ``scalc``,
``simpress``, ``sdraw``, ``smath``, ``sbasic``, ``schart``, ``sdatabase``,
``shared``, ...) and is kept per row in ``corpus.meta["labels"]``; the
``page#id`` keys are in ``corpus.meta["ids"]``.

Extraction (:func:`parse_help_page`) keeps only the page's own paragraphs:
content embedded from another page (``<div class="embedded">``) is skipped
(it is read from its home page), as are code listings, bookmarks, icon
images and the platform alternatives of ``switchinline`` (only the default
text, e.g. ``Tools - Options`` rather than the macOS ``LibreOffice -
Preferences``, is kept). Source ``.xhp`` files (``<paragraph id=...>``) are
read the same way. A paragraph identical to English is an untranslated
fallback and counts as missing; rows are deduplicated on English.

**Interface strings** (``libreoffice-l10n-<lang>``): gettext ``.mo`` catalogs
``usr/lib/libreoffice/program/resource/<locale>/LC_MESSAGES/<module>.mo``
whose ``msgid`` is the English text; they are aligned by
``(msgctxt, msgid)`` like the Django corpus, with the module (``sw``,
``sc``, ``cui``...) as label. English has no package: it is the msgid.

Packages are fetched (:func:`xling.data.debian.fetch_package`) with ``apt-get download`` into
``cache_dir("debian", "debs")`` and unpacked with ``dpkg -x`` under
``cache_dir("debian", "root")``; parsed languages are cached as JSON in
``cache_dir("corpora")``.
"""

from __future__ import annotations

import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from typing import Sequence

from xling.data.corpus import ParallelCorpus
from xling.data.debian import apt_packages as _apt_packages  # a name of this module: tests substitute it
from xling.data.debian import fetch_package, require_tool
from xling.data.langcodes import normalize_lang
from xling.data.po import clean_message
from xling.errors import XlingError
from xling.io import atomic_write_text, cache_dir

#: Bump when help/ui parsing changes: part of the cache key.
PARSER_VERSION = 3

PIVOT = "eng_Latn"

#: Debian 12 (bookworm) help packages, used when apt-cache cannot be asked.
KNOWN_HELP_PACKAGES = (
    "ca cs da de dz el en-gb en-us es et eu fi fr gl hi hu id it ja km ko nl om pl pt pt-br ru sl sv tr vi "
    "zh-cn zh-tw"
).split()

#: Packages that only link to another language's files (Debian 12: Slovak help is Czech).
_NO_OWN_CONTENT = {"libreoffice-help-sk"}

#: Languages of ``libreoffice_help_corpus(langs=None)``: well translated and diverse.
DEFAULT_HELP_LANGS = ("de", "fr", "es", "it", "nl", "pl", "ru", "el", "tr", "ja", "zh_CN", "ko", "vi", "id")

_PARA_ID = re.compile(r"^(par|hd|tit)_")
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
# Elements whose text is never part of a paragraph.
_SKIP_TAGS = {
    "script",
    "style",
    "caseinline",
    "case",
    "bookmark",
    "bookmark_value",
    "comment",
    "alt",
    "embedvar",
    "pre",
    "code",
}
_SKIP_CLASSES = {"embedded", "bascode", "pycode", "code", "bug", "debug", "relatedtopics", "howtoget"}
_PARA_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "paragraph", "title"}


# --------------------------------------------------------------------------
# help page parsing
# --------------------------------------------------------------------------


class _HelpParser(HTMLParser):
    """Collect ``(id, text)`` of a help page's own paragraphs (HTML or .xhp)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, skips its content)
        self.skip_depth = 0
        self.para: tuple[str, int] | None = None  # (id, stack depth)
        self.buf: list[str] = []
        self.out: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in _VOID:
            if tag == "br" and self.para is not None and not self.skip_depth:
                self.buf.append(" ")
            return
        classes = set((a.get("class") or "").split())
        skip = (
            tag in _SKIP_TAGS
            or bool(classes & _SKIP_CLASSES)
            or ("hidden" in a and not (a.get("id") or "").startswith("default"))
        )
        self.stack.append((tag, skip))
        if skip:
            self.skip_depth += 1
        elif tag in _PARA_TAGS and self.para is None and not self.skip_depth:
            pid = a.get("id") or ""
            if _PARA_ID.match(pid):
                self.para = (pid, len(self.stack))
                self.buf = []

    def handle_startendtag(self, tag, attrs):
        if tag == "br" and self.para is not None and not self.skip_depth:
            self.buf.append(" ")

    def handle_endtag(self, tag):
        if tag in _VOID or not any(t == tag for t, _ in self.stack):
            return  # stray end tag
        while self.stack:
            open_tag, skip = self.stack.pop()
            if skip:
                self.skip_depth -= 1
            if self.para is not None and len(self.stack) < self.para[1]:
                text = " ".join("".join(self.buf).split())
                if text:
                    self.out.append((self.para[0], text))
                self.para = None
                self.buf = []
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self.para is not None and not self.skip_depth:
            self.buf.append(data)


def parse_help_page(text: str) -> list[tuple[str, str]]:
    """The ``(paragraph id, text)`` pairs of one help page, in document order.

    Works on the compiled HTML pages and on ``.xhp`` sources; see the module
    docstring for what is skipped. Whitespace is collapsed.
    """
    parser = _HelpParser()
    parser.feed(text)
    parser.close()
    return parser.out


def help_label(relpath: str) -> str:
    """The application of a help page path: ``text/scalc/01/x.html`` -> ``scalc``."""
    parts = relpath.replace("\\", "/").split("/")
    if len(parts) >= 3 and parts[0] == "text":
        return parts[1]
    return parts[0] if len(parts) > 1 else "shared"


def read_help_tree(root: str | Path) -> dict[str, str]:
    """All paragraphs under one language's help folder: ``"page#id" -> text``.

    ``root`` is ``.../help/<locale>`` (or any folder holding a ``text/``
    tree of ``.html`` or ``.xhp`` pages). Pages are read in sorted order;
    an id repeated within a page gets a ``~2``, ``~3``... suffix.
    """
    root = Path(root)
    base = root / "text" if (root / "text").is_dir() else root
    pages = sorted(p for p in base.rglob("*") if p.suffix in (".html", ".xhp") and p.is_file())
    out: dict[str, str] = {}
    for page in pages:
        rel = page.relative_to(root).with_suffix("").as_posix()
        seen: dict[str, int] = {}
        try:
            text = page.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise XlingError(f"{page}: not valid UTF-8 ({exc.reason})") from None
        for pid, para in parse_help_page(text):
            seen[pid] = seen.get(pid, 0) + 1
            key = f"{rel}#{pid}" if seen[pid] == 1 else f"{rel}#{pid}~{seen[pid]}"
            out[key] = para
    return out


def align_help(
    tables: dict[str, dict[str, str]], min_chars: int = 10, min_words: int = 2
) -> ParallelCorpus:
    """Align per-language ``"page#id" -> text`` tables (``eng_Latn`` among them).

    A row is kept when every language has the paragraph, no translation is
    identical to English (untranslated fallback), and the English side has
    at least ``min_chars`` characters and ``min_words`` words. Rows are
    deduplicated on English, in sorted key order.
    """
    if PIVOT not in tables:
        raise XlingError("LibreOffice help: English (en-US) pages are needed as the pivot")
    english = tables[PIVOT]
    others = [lang for lang in sorted(tables) if lang != PIVOT]
    seen: set[str] = set()
    ids: list[str] = []
    dropped_identical = 0
    for key in sorted(english, key=_help_sort_key):
        en = english[key]
        if len(en) < min_chars or len(en.split()) < min_words or en in seen:
            continue
        texts = [tables[lang].get(key) for lang in others]
        if any(t is None for t in texts):
            continue
        if any(t == en for t in texts):
            dropped_identical += 1
            continue
        seen.add(en)
        ids.append(key)
    if not ids:
        raise XlingError(f"LibreOffice help: no paragraph translated in all of {', '.join(sorted(tables))}")
    sentences = {lang: [tables[lang][k] for k in ids] for lang in sorted(tables)}
    meta = {
        "ids": ids,
        "labels": [help_label(k.split("#")[0]) for k in ids],
        "dropped_identical": dropped_identical,
        "dropped_empty": 0,
    }
    return ParallelCorpus("libreoffice-help", sentences, meta)


def _help_sort_key(key: str):
    page, _, pid = key.partition("#")
    return (page, pid)


# --------------------------------------------------------------------------
# gettext .mo catalogs (interface strings)
# --------------------------------------------------------------------------


def parse_mo(data: bytes, name: str = "<mo>") -> dict[str, str]:
    """Parse a gettext ``.mo`` file: ``"msgctxt\\x04msgid" -> msgstr`` (singular forms).

    The header entry and empty translations are left out. A plural entry
    maps its singular ``msgid`` to ``msgstr[0]``.
    """
    if len(data) < 28:
        raise XlingError(f"{name}: not a gettext .mo file (too short)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        end = "<"
    elif magic == 0xDE120495:
        end = ">"
    else:
        raise XlingError(f"{name}: not a gettext .mo file (bad magic)")
    _rev, count, orig_at, trans_at = struct.unpack(end + "4I", data[4:20])
    out: dict[str, str] = {}
    try:
        for i in range(count):
            olen, ooff = struct.unpack(end + "2I", data[orig_at + 8 * i : orig_at + 8 * i + 8])
            tlen, toff = struct.unpack(end + "2I", data[trans_at + 8 * i : trans_at + 8 * i + 8])
            msgid = data[ooff : ooff + olen].decode("utf-8")
            msgstr = data[toff : toff + tlen].decode("utf-8")
            if not msgid or msgid.endswith("\x04"):
                continue  # header
            singular = msgid.split("\x00")[0]
            trans = msgstr.split("\x00")[0]
            if trans:
                out[singular] = trans
    except (struct.error, UnicodeDecodeError) as exc:
        raise XlingError(f"{name}: corrupt .mo file ({exc})") from None
    return out


_UI_PLACEHOLDERS = (
    re.compile(r"\$\([A-Za-z0-9_]+\)"),  # $(ARG1)
    re.compile(r"%[A-Z][A-Z0-9_ ]*%"),  # %SAVE IN SELECTION%, %TITLE%
    re.compile(r"%[A-Za-z][A-Za-z0-9_]*"),  # %NUMBER, %name, %n
    re.compile(r"%\d+"),  # %1
    re.compile(r"\$[A-Z][A-Z0-9_]*\$"),  # $FILENAME$
    re.compile(r"#[A-Z][A-Z0-9_]+#?"),  # #NAME
)
_MNEMONIC_CJK = re.compile(r"\(\s*[_~]\w\s*\)")  # (_U) after a CJK label
_MNEMONIC = re.compile(r"(?<![_\w])~(?=\w)|(?<=\w)~(?=\w)|(?<!_)_(?=\w)")


def clean_ui(text: str) -> str:
    """Clean a LibreOffice UI string.

    Removes accelerator marks (``~Save``, GTK ``_Save``, ``Än_dern``,
    CJK ``(_S)``), replaces ``%PRODUCTNAME`` with ``LibreOffice``, and drops
    placeholders (``%1``, ``$(ARG1)``, ``%NAME``, ``%SAVE IN SELECTION%``)
    and markup like :func:`~xling.data.po.clean_message`.
    """
    s = text.replace("%PRODUCTNAME", "LibreOffice").replace("%PRODUCTVERSION", "")
    s = _MNEMONIC_CJK.sub("", s)
    s = _MNEMONIC.sub("", s).replace("~", "")
    return clean_message(s, _UI_PLACEHOLDERS)


# --------------------------------------------------------------------------
# Debian packages (fetched by xling.data.debian)
# --------------------------------------------------------------------------


def _packages(kind: str) -> dict[str, str]:
    """``normalised language -> Debian package`` for ``kind`` ``help`` or ``l10n``.

    Region variants that fold onto one language keep the plain one
    (``pt`` over ``pt-br``; ``en-us`` for English).
    """
    prefix = f"libreoffice-{kind}-"
    names = [n for n in _apt_packages(prefix) if n != prefix + "common" and n not in _NO_OWN_CONTENT]
    if not names and kind == "help":
        names = [prefix + s for s in KNOWN_HELP_PACKAGES]
    out: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (n.count("-"), n)):
        suffix = name[len(prefix) :]
        if suffix in ("common",) or suffix.startswith("en-") and suffix != "en-us":
            continue
        try:
            lang = normalize_lang(suffix)
        except XlingError:
            continue
        out.setdefault(lang, name)
    return out


def available_help_languages() -> list[str]:
    """Normalised codes of the languages with a ``libreoffice-help-*`` package (English included)."""
    return sorted(_packages("help"))


def available_ui_languages() -> list[str]:
    """Normalised codes of the languages with a ``libreoffice-l10n-*`` package, plus English."""
    return sorted({PIVOT, *_packages("l10n")})


def _locale_dir(folder: Path, pkg: str, exclude: tuple[str, ...] = ()) -> Path:
    """The language folder of a package: the one named like its suffix (``pt-br`` -> ``pt-BR``).

    Some packages hold variants too (``libreoffice-help-ca`` has ``ca`` and
    ``ca-valencia``); the folder matching the package name wins, else the
    only folder there is.
    """
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    suffix = pkg.split("-", 2)[-1].lower()
    for sub in entries:
        if sub.name.lower().replace("_", "-") == suffix and sub.is_symlink():
            # libreoffice-help-sk only links help/sk -> cs: no pages of its own
            raise XlingError(
                f"Debian package {pkg} has no pages of its own ({folder.name}/{sub.name} links to {sub.readlink()})"
            )
    subs = [p for p in entries if p.is_dir() and not p.is_symlink() and p.name not in exclude]
    for sub in subs:
        if sub.name.lower().replace("_", "-") == suffix:
            return sub
    if len(subs) == 1:
        return subs[0]
    raise XlingError(f"unexpected layout of Debian package {pkg}: no language folder for it in {folder}")


def _cached_json(name: str, build):
    path = cache_dir("corpora") / name
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    data = build()
    atomic_write_text(path, json.dumps(data, ensure_ascii=False))
    return data


def _resolve_langs(langs: Sequence[str] | None, packages: dict[str, str], default: Sequence[str], what: str) -> list[str]:
    chosen: list[str] = []
    for code in default if langs is None else langs:
        from xling.data.langcodes import match_lang

        norm = normalize_lang(code)
        match = match_lang(norm, packages)
        if match is None:
            if langs is None:
                continue  # a default language this system does not offer
            raise XlingError(
                f"language {code} ({norm}) has no {what} package; available: {', '.join(sorted(packages))}"
            )
        if match != PIVOT and match not in chosen:
            chosen.append(match)
    return chosen


def help_table(lang: str) -> dict[str, str]:
    """``"page#id" -> paragraph`` for one normalised language (downloads on first use)."""
    packages = _packages("help")
    if lang not in packages:
        raise XlingError(f"no LibreOffice help package for {lang}; available: {', '.join(sorted(packages))}")
    pkg = packages[lang]
    root = fetch_package(pkg)
    deb = (root / ".xling-extracted").read_text().strip()

    def build():
        locale_dir = _locale_dir(root / "usr/share/libreoffice/help", pkg, exclude=("media",))
        return read_help_tree(locale_dir)

    return _cached_json(f"lo-help-{Path(deb).stem}-p{PARSER_VERSION}.json", build)


def libreoffice_help_corpus(
    langs: Sequence[str] | None = None,
    max_sentences: int | None = None,
    apps: Sequence[str] | None = None,
    min_chars: int = 10,
) -> ParallelCorpus:
    """Parallel LibreOffice help paragraphs, English plus ``langs``.

    ``langs=None`` uses :data:`DEFAULT_HELP_LANGS` (those with a package).
    ``apps`` keeps only some applications (labels such as ``swriter``,
    ``scalc``, ``shared``). Downloads about 2-3 MB per language on first use.
    """
    packages = _packages("help")
    chosen = _resolve_langs(langs, packages, DEFAULT_HELP_LANGS, "LibreOffice help")
    tables = {PIVOT: help_table(PIVOT)}
    for lang in chosen:
        tables[lang] = help_table(lang)
    if apps is not None:
        wanted = set(apps)
        tables = {
            lang: {k: v for k, v in t.items() if help_label(k.split("#")[0]) in wanted} for lang, t in tables.items()
        }
    corpus = align_help(tables, min_chars=min_chars)
    corpus.meta["source"] = "debian " + ", ".join(packages[lang] for lang in [PIVOT, *chosen])
    if max_sentences is not None:
        n = int(max_sentences)
        corpus = ParallelCorpus(
            corpus.name,
            {k: v[:n] for k, v in corpus.sentences.items()},
            {**corpus.meta, "ids": corpus.meta["ids"][:n], "labels": corpus.meta["labels"][:n]},
        )
    return corpus


def ui_table(lang: str) -> dict[str, list[str]]:
    """``"ctxt\\x04msgid" -> [english, translation, module]`` (cleaned) for one language."""
    packages = _packages("l10n")
    if lang not in packages:
        raise XlingError(f"no LibreOffice l10n package for {lang}; available: {', '.join(sorted(packages))}")
    pkg = packages[lang]
    root = fetch_package(pkg)
    deb = (root / ".xling-extracted").read_text().strip()

    def build():
        locale_dir = _locale_dir(root / "usr/lib/libreoffice/program/resource", pkg)
        out: dict[str, list[str]] = {}
        for mo in sorted((locale_dir / "LC_MESSAGES").glob("*.mo")):
            for key, trans in parse_mo(mo.read_bytes(), str(mo)).items():
                if key in out:
                    continue
                english = clean_ui(key.split("\x04")[-1])
                cleaned = clean_ui(trans)
                if english and cleaned and cleaned != english:
                    out[key] = [english, cleaned, mo.stem]
        return out

    return _cached_json(f"lo-ui-{Path(deb).stem}-p{PARSER_VERSION}.json", build)


def libreoffice_ui_corpus(
    langs: Sequence[str] | None = None, max_sentences: int | None = None, min_chars: int = 10
) -> ParallelCorpus:
    """Parallel LibreOffice interface strings (English msgid plus ``langs``), module as label."""
    packages = _packages("l10n")
    if not packages:
        require_tool("apt-get")
        raise XlingError("no libreoffice-l10n-* packages known to apt (run apt-get update)")
    chosen = _resolve_langs(langs, packages, DEFAULT_HELP_LANGS, "LibreOffice l10n")
    if not chosen:
        raise XlingError("LibreOffice UI corpus: name at least one language besides English")
    tables = {lang: ui_table(lang) for lang in chosen}
    first = tables[chosen[0]]
    ids, seen = [], set()
    for key in sorted(first):
        english = first[key][0]
        if len(english) < min_chars or len(english.split()) < 2 or english in seen:
            continue
        if all(key in tables[lang] for lang in chosen):
            seen.add(english)
            ids.append(key)
    if max_sentences is not None:
        ids = ids[: int(max_sentences)]
    if not ids:
        raise XlingError(f"LibreOffice UI: no string translated in all of {', '.join(chosen)}")
    sentences = {PIVOT: [first[k][0] for k in ids]}
    for lang in chosen:
        sentences[lang] = [tables[lang][k][1] for k in ids]
    meta = {
        "source": "debian " + ", ".join(packages[lang] for lang in chosen),
        "ids": [k.replace("\x04", "|") for k in ids],
        "labels": [first[k][2] for k in ids],
        "dropped_empty": 0,
    }
    return ParallelCorpus("libreoffice-ui", sentences, meta)


__all__ = [
    "available_help_languages",
    "available_ui_languages",
    "libreoffice_help_corpus",
    "libreoffice_ui_corpus",
    "parse_help_page",
    "read_help_tree",
    "align_help",
    "help_label",
    "parse_mo",
    "clean_ui",
]
