"""Parallel corpora: one aligned list of sentences per language.

Every reader returns a :class:`ParallelCorpus`. Language codes are normalised
with :func:`xling.data.langcodes.normalize_lang` (ISO 639-3 + script, e.g.
``deu_Latn``), so ``de``, ``deu``, ``de-DE`` and ``deu_Latn`` name the same
language everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from xling.errors import XlingError


#: ``meta`` entries that are lists aligned with the rows; sliced with them.
ROW_META = ("ids", "labels", "books", "divisions")


@dataclass(frozen=True)
class ParallelCorpus:
    """Aligned sentences: ``sentences[lang][i]`` translates ``sentences[other][i]``."""

    name: str
    sentences: dict[str, list[str]]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.sentences:
            raise XlingError(f"corpus {self.name}: no languages")
        lengths = {lang: len(s) for lang, s in self.sentences.items()}
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(lengths.items()))
            raise XlingError(f"corpus {self.name}: languages have different sentence counts ({detail})")
        if next(iter(lengths.values())) == 0:
            raise XlingError(f"corpus {self.name}: empty (no sentences)")

    @property
    def langs(self) -> list[str]:
        return sorted(self.sentences)

    def __len__(self) -> int:
        return len(next(iter(self.sentences.values())))

    def select(self, langs: list[str] | None = None, max_sentences: int | None = None) -> "ParallelCorpus":
        """Restrict to ``langs`` (already normalised) and the first ``max_sentences`` rows."""
        from xling.data.langcodes import normalize_lang

        if langs is None:
            chosen = self.langs
        else:
            chosen = []
            for code in langs:
                norm = normalize_lang(code)
                match = self.resolve(norm)
                if match is None:
                    raise XlingError(
                        f"language {code} ({norm}) is not in corpus {self.name}; it has: {', '.join(self.langs)}"
                    )
                if match not in chosen:
                    chosen.append(match)
        n = len(self) if max_sentences is None else min(len(self), int(max_sentences))
        meta = {k: (v[:n] if k in ROW_META and isinstance(v, list) else v) for k, v in self.meta.items()}
        return ParallelCorpus(self.name, {k: list(self.sentences[k][:n]) for k in chosen}, meta)

    def resolve(self, norm: str) -> str | None:
        """The corpus language matching a normalised code.

        Exact match first; then a unique language with the same base code (a
        missing or different script); then a unique language that is the same
        per :func:`~xling.data.langcodes.same_language` (``ara`` finds ``arb_Arab``).
        """
        from xling.data.langcodes import match_lang

        return match_lang(norm, self.sentences)

    def fingerprint(self) -> str:
        """A content hash: same sentences in the same languages, same fingerprint."""
        h = hashlib.sha256()
        for lang in self.langs:
            h.update(lang.encode())
            h.update(json.dumps(self.sentences[lang], ensure_ascii=False).encode())
        return h.hexdigest()[:16]
