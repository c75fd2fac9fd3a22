"""Typological distances between languages from URIEL (through URIEL+).

URIEL (Littell et al. 2017, "URIEL and lang2vec: Representing languages as
typological, geographical, and phylogenetic vectors") gives each language
vectors of syntactic, phonological and phoneme-inventory features (from WALS,
SSWL, PHOIBLE, Ethnologue), its position in the Glottolog family tree, and its
location; LangRank (Lin et al. 2019) used six distances between two such
vectors to rank transfer languages. URIEL+ (Khan et al. 2025, "URIEL+: Enhancing
Linguistic Inclusion and Usability in a Typological and Multilingual Knowledge
Base") packages the same database with its distance code: here the PyPI package
``urielplus`` (the ``typology`` extra), used as shipped: the original URIEL
tables, no database integrations (URIEL+'s optional integrations and
imputations run for tens of minutes and gigabytes) and **no imputation**. A
distance is the angular distance between the two languages' vectors restricted
to the features both languages have values for (URIEL+'s ``new_distance``);
when they share fewer than :data:`MIN_SHARED_FEATURES` (Kazakh has two phonological
features, both equal to English's and German's, which URIEL+ turns into a distance
of 0), the distance is missing (``None`` here, NaN in the ranker) and reported as
such, never filled in. lang2vec 1.1.2, the older package,
imports ``pkg_resources``, which setuptools 81+ no longer ships, so it is not used.

Computed distances are cached per language pair in ``$XLING_CACHE/uriel``
(genetic distances cost about 0.1 s a pair).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Iterable, Sequence

from xling.errors import XlingError

#: The six URIEL distances of LangRank, by their URIEL+ names.
KINDS = ("syntactic", "phonological", "inventory", "genetic", "geographic", "featural")
VERSION = "urielplus-1.3.2-original-uriel-angular-min5"
#: Fewer shared features than this and an angular distance means nothing (one or two equal features give 0).
MIN_SHARED_FEATURES = 5
_PREFIX = {"syntactic": "S_", "phonological": "P_", "inventory": "INV_"}

_URIEL = None


def uriel_code(lang: str) -> str:
    """The ISO 639-3 code URIEL uses for an xling language (``deu_Latn`` -> ``deu``)."""
    from xling.data.langcodes import normalize_lang

    return normalize_lang(lang).split("_")[0]


@contextmanager
def _quiet():
    """URIEL+ logs every distance at INFO on the root logger: hold that back while it runs."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def _uriel():
    global _URIEL
    if _URIEL is None:
        from xling.deps import require

        require("urielplus", "URIEL typological distances")
        with _quiet():
            from urielplus import urielplus

            _URIEL = urielplus.URIELPlus()
    return _URIEL


def known_languages() -> set[str]:
    """ISO 639-3 codes URIEL has (any data at all)."""
    return {str(x) for x in _uriel().langs[0]}


def check_languages(langs: Iterable[str]) -> dict[str, str]:
    """xling language -> URIEL code; a language URIEL does not know is a one-line error."""
    out = {}
    known = None
    for lang in langs:
        code = uriel_code(lang)
        if known is None:
            known = known_languages()
        if code not in known:
            raise XlingError(f"language {lang} ({code}) is not in URIEL: no typological distances for it")
        out[lang] = code
    return out


def _cache_file():
    from xling.io import cache_dir

    return cache_dir("uriel") / f"{VERSION}.json"


def _read_cache() -> dict:
    from xling.data.files import parse_json

    path = _cache_file()
    if not path.is_file():
        return {}
    try:
        obj = parse_json(path.read_text(encoding="utf-8"), path)
    except (XlingError, OSError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def shared_features(kind: str, a: str, b: str) -> int:
    """How many features of ``kind`` both URIEL languages ``a`` and ``b`` have a value for (URIEL+'s own rule:
    a feature counts unless every source has -1 for it)."""
    import numpy as np

    u = _uriel()
    idx = u.map_new_distance_to_loaded_features(kind)
    feats, data, langs = u.feats[idx], u.data[idx], u.langs[idx]
    prefix = _PREFIX.get(kind, "")
    have = []
    for code in (a, b):
        row = data[np.where(langs == code)[0][0]]
        have.append({i for i, f in enumerate(feats) if str(f).startswith(prefix) and not np.all(row[i] == -1.0)})
    return len(have[0] & have[1])


def distances(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, float | None]]:
    """URIEL distances of each (a, b) pair of xling languages: ``{kind: distance in [0, 1] or None}``.

    Symmetric; a language with itself is 0. Unknown languages raise
    :class:`XlingError` before anything is computed.
    """
    from xling.io import atomic_write_text, file_lock, lock_for

    codes = check_languages({x for p in pairs for x in p})
    cache = _read_cache()
    out: dict[tuple[str, str], dict[str, float | None]] = {}
    new = False
    for a, b in pairs:
        ca, cb = sorted((codes[a], codes[b]))
        key = f"{ca}|{cb}"
        if key not in cache or not isinstance(cache[key], dict) or set(cache[key]) != set(KINDS):
            row = {}
            for kind in KINDS:
                if ca == cb:
                    row[kind] = 0.0
                    continue
                with _quiet():
                    if shared_features(kind, ca, cb) < MIN_SHARED_FEATURES:
                        row[kind] = None  # too few shared features: missing, and no imputation either
                        continue
                    try:
                        row[kind] = float(_uriel().new_distance(kind, ca, cb))
                    except ValueError:  # "No shared ... features": no distance, and no imputation either
                        row[kind] = None
            cache[key] = row
            new = True
        out[(a, b)] = dict(cache[key])
    if new:
        path = _cache_file()
        with file_lock(lock_for(path)):
            merged = {**_read_cache(), **cache}
            atomic_write_text(path, json.dumps(merged, sort_keys=True))
    return out


__all__ = ["KINDS", "MIN_SHARED_FEATURES", "shared_features", "uriel_code", "known_languages", "check_languages", "distances"]
