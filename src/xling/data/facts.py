"""A parallel multilingual fact probe built offline from CLDR: the same facts, asked in every language.

Facts about countries and territories whose every name comes from the Unicode CLDR as the PyPI package
``babel`` ships it (``Locale.territories``, ``.languages``, ``.currencies``), so the 22 languages of the
built-in Bible corpus (:data:`xling.data.bible.TRANSLATIONS`, the default) and any other language with CLDR
locale data get the same items with names written by CLDR's translators, not by xling. Nothing is downloaded.

Relations (:data:`RELATIONS`), each a territory code -> an answer code:

* ``language``: the territory's primary official language, the first of
  ``babel.languages.get_official_languages(T, de_facto=True)`` (CLDR orders them by the number of speakers;
  script variants such as ``sr_Latn`` fold into their language). Subjects: territories with an official language.
* ``currency``: the territory's legal tender on :data:`CURRENCY_DATE` (a fixed day, so the build does not change
  with the calendar), ``babel.numbers.get_territory_currencies(T, start_date=D, end_date=D, tender=True)``.
  Subjects: territories with exactly one such currency (Panama's balboa and dollar are left out).
* ``continent``: the UN M49 continent (:data:`CONTINENTS`: Africa, Americas, Asia, Europe, Oceania) that contains the
  territory, following CLDR's ``territoryContainment`` (the copy of CLDR's ``supplementalData.xml`` that the
  ``language_data`` package ships: babel does not carry containment), groups marked ``grouping`` or ``deprecated``
  not followed. The continents' names are babel's localised territory names of ``002``, ``019``, ``142``, ``150``,
  ``009``.

Subjects are the two-letter territory codes that English CLDR names, sorted by code; a fact's id is
``<relation>:<territory code>`` (``currency:JP``), the same in every language (parallel).

Choices (``choices`` per fact, default 4, chance 1/4): the answer and ``choices - 1`` distractors of the same type,
drawn from the relation's answer pool (every code that is some subject's answer) minus every code that is right for
this subject (all its official languages; its currency; its continent). The rule, seeded by ``seed``: candidates
sorted by ``sha256("xling-facts:<seed>:<fact id>:<code>")``, the first ``choices - 1`` taken; the answer then goes
to position ``int(sha256("xling-facts:<seed>:<fact id>:position"), 16) % choices``. Both use codes only, so choice
order and the answer index are the same in every language.

Prompt (per language, from localised CLDR strings only, no hand-translated words): ``shots`` demonstration lines
``<subject>: <answer>`` of other facts of the same relation, then ``<subject>:``; each choice is scored as the
continuation ``" <choice>"`` (:func:`xling.tasks.zeroshot.label_loglik`). The demonstrations of a fact are the next
facts of its relation in id order (cyclically) whose answers are none of this fact's choices: they show the format
and the relation but favour no choice by copying.

Leaks: an item is flagged ``leak`` when its answer's text contains its subject's text, both NFKC-normalised,
case-folded and with runs of white space made one space (``Japan`` in ``Japanese yen``; Swahili ``Japani`` in
``Kijapani``). The rule is literal: derived forms that do not contain the whole name (``France`` -> ``French``,
``Deutschland`` -> ``Deutsch``) are not flagged. A leaked item can be answered by string matching alone, so
accuracies are reported with and without them.

Missing names: an item whose subject, any choice, or any demonstration has no name in a language's CLDR data (the
key absent, empty, or the bare code) is dropped in that language and counted (reason ``missing name``); so is an
item two of whose choices have the same name there (``duplicate choice names``). The other languages keep it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import unicodedata
from functools import lru_cache
from typing import Sequence

from xling.errors import XlingError

RELATIONS = ("language", "currency", "continent")
#: The day whose legal tender is the ``currency`` answer.
CURRENCY_DATE = datetime.date(2024, 1, 1)
#: UN M49 continents (CLDR territory codes): Africa, Americas, Asia, Europe, Oceania.
CONTINENTS = ("002", "019", "142", "150", "009")
DEFAULT_CHOICES = 4
DEFAULT_SHOTS = 3
PIVOT = "eng_Latn"
MISSING = "missing name"
DUPLICATE = "duplicate choice names"
#: What kind of CLDR name the answer codes of each relation are.
ANSWER_KIND = {"language": "languages", "currency": "currencies", "continent": "territories"}


@dataclasses.dataclass(frozen=True)
class Fact:
    """One fact, language-independent: codes only."""

    id: str
    relation: str
    subject: str                 # territory code, e.g. "JP"
    choices: tuple[str, ...]     # answer codes, e.g. ("KRW", "JPY", "EUR", "BRL")
    answer: int                  # index of the right choice
    demos: tuple[str, ...] = ()  # ids of the demonstration facts


@dataclasses.dataclass(frozen=True)
class FactItem:
    """One fact asked in one language."""

    id: str
    relation: str
    lang: str
    subject: str
    choices: tuple[str, ...]
    answer: int
    leak: bool
    prompt: str
    subject_code: str
    choice_codes: tuple[str, ...]

    @property
    def answer_text(self) -> str:
        return self.choices[self.answer]


@dataclasses.dataclass
class FactProbe:
    """The probe: the facts, their items per language (fact order), and what was dropped where."""

    langs: list[str]
    facts: list[Fact]
    items: dict[str, list[FactItem]]
    dropped: list[dict]          # {"lang", "relation", "reason", "n"}
    meta: dict

    def n_dropped(self, lang: str, relation: str | None = None) -> int:
        return sum(r["n"] for r in self.dropped if r["lang"] == lang and relation in (None, r["relation"]))


def _babel():
    try:
        import babel
        from babel import Locale, languages, numbers
    except ImportError:  # pragma: no cover - a declared dependency
        raise XlingError("the fact probe needs the 'babel' package (pip install 'babel>=2.12')") from None
    return babel, Locale, languages, numbers


def fold(text: str) -> str:
    """The leak rule's form of a name: NFKC, case-folded, runs of white space as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def leaks(subject: str, answer: str) -> bool:
    """Whether ``answer`` contains ``subject`` (:func:`fold`ed): the item is answerable by string matching."""
    s = fold(subject)
    return bool(s) and s in fold(answer)


@lru_cache(maxsize=256)
def cldr_locale(lang: str) -> str:
    """The babel locale id of a language code: ``swh_Latn`` -> ``sw``, ``pes_Arab`` -> ``fa``, ``tgl_Latn`` ->
    ``fil``, ``zho_Hant`` -> ``zh_Hant`` (a script other than the language's usual one is kept)."""
    import langcodes

    from xling.data.langcodes import normalize_lang

    _, Locale, _, _ = _babel()
    from babel.core import UnknownLocaleError

    norm = normalize_lang(lang)
    base, script = norm.split("_")
    tag = langcodes.standardize_tag(base, macro=True)
    usual = langcodes.Language.get(tag).maximize().script
    if usual not in (script, "Kore" if script == "Hang" else None):
        tag = f"{tag}_{script}"
    try:
        Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        named = lang if lang == norm else f"{lang} ({norm})"
        raise XlingError(f"no CLDR locale data for language {named} (locale {tag}) in babel: the fact probe "
                         f"cannot name things in it") from None
    return tag.replace("-", "_")


@lru_cache(maxsize=256)
def _names(locale: str, kind: str) -> dict[str, str]:
    _, Locale, _, _ = _babel()
    return dict(getattr(Locale.parse(locale), kind))


def _name(locale: str, kind: str, code: str) -> str | None:
    name = _names(locale, kind).get(code)
    if not isinstance(name, str):
        return None
    name = " ".join(name.split())
    return name if name and name != code else None


def _h(*parts) -> str:
    return hashlib.sha256(("xling-facts:" + ":".join(str(p) for p in parts)).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def continent_of() -> dict[str, str]:
    """``{territory code: continent code}`` from CLDR's territoryContainment (``language_data``'s copy)."""
    import xml.etree.ElementTree as ET
    from importlib import resources

    try:
        path = resources.files("language_data") / "data" / "supplementalData.xml"
        root = ET.fromstring(path.read_bytes())
    except (ImportError, OSError, ET.ParseError) as exc:
        raise XlingError(f"the continent relation needs CLDR's supplementalData.xml from the 'language_data' package "
                         f"({type(exc).__name__}: {exc}); pip install 'language_data>=1.2', or leave the relation out"
                         ) from None
    parent: dict[str, str] = {}
    for g in root.iter("group"):
        if g.get("status") in ("grouping", "deprecated"):
            continue
        for child in (g.get("contains") or "").split():
            parent.setdefault(child, g.get("type"))
    out = {}
    for code in parent:
        if not (len(code) == 2 and code.isalpha()):
            continue
        node, seen = code, set()
        while node in parent and node not in CONTINENTS and node not in seen:
            seen.add(node)
            node = parent[node]
        if node in CONTINENTS:
            out[code] = node
    return out


def _subjects() -> list[str]:
    """Two-letter territory codes with an English CLDR name, sorted."""
    return sorted(c for c in _names("en", "territories")
                  if len(c) == 2 and c.isalpha() and _name("en", "territories", c))


def relation_table(relation: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``{territory: (answer code, every code that is right for it)}`` for one relation."""
    _, _, languages, numbers = _babel()
    out: dict[str, tuple[str, frozenset[str]]] = {}
    if relation == "language":
        for t in _subjects():
            official = languages.get_official_languages(t, de_facto=True)
            langs = list(dict.fromkeys(code.split("_")[0] for code in official))
            if langs and _name("en", "languages", langs[0]):
                out[t] = (langs[0], frozenset(langs))
    elif relation == "currency":
        for t in _subjects():
            cur = numbers.get_territory_currencies(t, start_date=CURRENCY_DATE, end_date=CURRENCY_DATE, tender=True)
            if len(cur) == 1 and _name("en", "currencies", cur[0]):
                out[t] = (cur[0], frozenset(cur))
    elif relation == "continent":
        cont = continent_of()
        for t in _subjects():
            if t in cont:
                out[t] = (cont[t], frozenset([cont[t]]))
    else:
        raise XlingError(f"unknown fact relation {relation!r} (relations: {', '.join(RELATIONS)})")
    return out


def build_facts(relations: Sequence[str] = RELATIONS, choices: int = DEFAULT_CHOICES, shots: int = DEFAULT_SHOTS,
                seed: int = 0, max_per_relation: int | None = None) -> list[Fact]:
    """The language-independent facts (see the module doc), relation by relation, each sorted by subject code.

    ``max_per_relation``: keep that many subjects per relation, the first in ``sha256(seed, relation, code)``
    order (then sorted by code again)."""
    if not isinstance(choices, int) or choices < 2:
        raise XlingError(f"facts: choices must be at least 2, got {choices!r}")
    if not isinstance(shots, int) or shots < 0:
        raise XlingError(f"facts: shots must be 0 or more, got {shots!r}")
    facts: list[Fact] = []
    for rel in dict.fromkeys(relations):
        table = relation_table(rel)
        subjects = sorted(table)
        if max_per_relation is not None:
            subjects = sorted(sorted(subjects, key=lambda c: _h(seed, rel, "subject", c))[:max_per_relation])
        pool = sorted({a for a, _ in table.values()})
        if len(pool) < choices:
            raise XlingError(f"facts: relation {rel} has {len(pool)} possible answers; --choices {choices} needs "
                             f"at least {choices}")
        drafted = []
        for t in subjects:
            fid = f"{rel}:{t}"
            answer, right = table[t]
            cands = sorted((c for c in pool if c not in right), key=lambda c: _h(seed, fid, c))[: choices - 1]
            if len(cands) < choices - 1:
                raise XlingError(f"facts: {fid} has only {len(cands)} distractors; lower --choices")
            pos = int(_h(seed, fid, "position"), 16) % choices
            drafted.append((fid, t, tuple(cands[:pos] + [answer] + cands[pos:]), pos))
        for i, (fid, t, chs, pos) in enumerate(drafted):
            demos = []
            for k in range(1, len(drafted)):
                if len(demos) >= shots:
                    break
                other = drafted[(i + k) % len(drafted)]
                if other[2][other[3]] not in chs:
                    demos.append(other[0])
            facts.append(Fact(fid, rel, t, chs, pos, tuple(demos)))
    return facts


def render(facts: Sequence[Fact], lang: str) -> tuple[list[FactItem], list[dict]]:
    """The items of ``facts`` in ``lang`` and the drop counts ``[{"lang", "relation", "reason", "n"}]``."""
    from xling.data.langcodes import normalize_lang

    norm = normalize_lang(lang)
    loc = cldr_locale(norm)
    by_id = {f.id: f for f in facts}
    items: list[FactItem] = []
    drops: dict[tuple[str, str], int] = {}

    def answer_line(f: Fact) -> tuple[str | None, str | None]:
        return _name(loc, "territories", f.subject), _name(loc, ANSWER_KIND[f.relation], f.choices[f.answer])

    for f in facts:
        subject = _name(loc, "territories", f.subject)
        names = [_name(loc, ANSWER_KIND[f.relation], c) for c in f.choices]
        demo_lines = [answer_line(by_id[d]) for d in f.demos if d in by_id]
        if subject is None or any(n is None for n in names) or any(None in d for d in demo_lines):
            drops[(f.relation, MISSING)] = drops.get((f.relation, MISSING), 0) + 1
            continue
        if len({fold(n) for n in names}) < len(names):
            drops[(f.relation, DUPLICATE)] = drops.get((f.relation, DUPLICATE), 0) + 1
            continue
        prompt = "\n".join([f"{s}: {a}" for s, a in demo_lines] + [f"{subject}:"])
        items.append(FactItem(f.id, f.relation, norm, subject, tuple(names), f.answer,
                              leaks(subject, names[f.answer]), prompt, f.subject, f.choices))
    dropped = [{"lang": norm, "relation": rel, "reason": why, "n": n} for (rel, why), n in sorted(drops.items())]
    return items, dropped


def default_langs() -> list[str]:
    """The 22 languages of the built-in Bible corpus."""
    from xling.data.bible import TRANSLATIONS

    return list(TRANSLATIONS)


def build_fact_probe(langs: Sequence[str] | None = None, relations: Sequence[str] = RELATIONS,
                     choices: int = DEFAULT_CHOICES, shots: int = DEFAULT_SHOTS, seed: int = 0,
                     max_per_relation: int | None = None) -> FactProbe:
    """The fact probe in ``langs`` (default: the 22 Bible languages), deterministic for given arguments and babel
    version (see the module doc)."""
    from xling.data.langcodes import normalize_lang

    _babel()  # one line when babel is missing
    import babel
    import babel.core

    codes = list(dict.fromkeys(normalize_lang(x) for x in (langs or default_langs())))
    for rel in relations:
        if rel not in RELATIONS:
            raise XlingError(f"unknown fact relation {rel!r} (relations: {', '.join(RELATIONS)})")
    locales = {lang: cldr_locale(lang) for lang in codes}  # an unknown locale fails before any work
    facts = build_facts(relations, choices, shots, seed, max_per_relation)
    items, dropped = {}, []
    for lang in codes:
        items[lang], d = render(facts, lang)
        dropped += d
    meta = {"source": f"Unicode CLDR {babel.core.get_cldr_version()} via babel {babel.__version__} (names, official "
                      f"languages, currencies); territory containment from language_data's CLDR supplementalData.xml",
            "relations": list(dict.fromkeys(relations)), "choices": choices, "shots": shots, "seed": seed,
            "max_per_relation": max_per_relation, "currency_date": CURRENCY_DATE.isoformat(), "locales": locales,
            "babel": babel.__version__, "cldr": str(babel.core.get_cldr_version()),
            "template": "<subject>: <answer> per demonstration line, then <subject>: ; choices scored as ' <choice>'",
            "leak_rule": "the answer's text contains the subject's text (NFKC, case-folded, white space collapsed)"}
    return FactProbe(codes, facts, items, dropped, meta)


def probe_fingerprint(probe: FactProbe) -> str:
    """A digest of every item of every language (ids, texts, answers) and the build settings."""
    import json

    blob = json.dumps({"meta": {k: v for k, v in probe.meta.items() if k != "source"},
                       "items": {lang: [dataclasses.asdict(it) for it in its] for lang, its in probe.items.items()}},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


__all__ = ["ANSWER_KIND", "CONTINENTS", "CURRENCY_DATE", "DEFAULT_CHOICES", "DEFAULT_SHOTS", "Fact", "FactItem",
           "FactProbe", "RELATIONS", "build_fact_probe", "build_facts", "cldr_locale", "continent_of", "default_langs",
           "fold", "leaks", "probe_fingerprint", "relation_table", "render"]
