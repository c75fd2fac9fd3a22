"""Target-language text for vocabulary work: corpora, plain text files and word-frequency lists.

A corpus spec is one or more sources joined by ``+``:

* anything :func:`xling.data.readers.load_corpus` reads (``django``,
  ``libreoffice``, a FLORES folder, ``.tsv``/``.jsonl``), or the caller's
  ``load_corpus`` (the recipes pass :func:`xling.harness.sources.load_text_source`,
  which adds ``task:NAME``): the sentences of the requested languages (a
  provider's English pivot is not used unless English is requested);
* ``LANG=FILE[,LANG=FILE...]``: monolingual plain text files, one sentence a
  line (unlike ``load_corpus`` they need not be parallel);
* ``FILE`` (plain text, any other suffix): sentences of unspecified language;
* ``wordfreq`` or ``wordfreq:N``: the N most frequent words (default
  :data:`WORDFREQ_WORDS`) of each language from the ``wordfreq`` package
  (Speer 2022; offline frequency lists built from Wikipedia, subtitles, news,
  books, web text and Twitter), each counted as if it occurred
  ``frequency x`` :data:`WORDFREQ_CORPUS_WORDS` times in running text. Its
  lists are lower-cased, so every word is counted in two forms, lower case
  (weight :data:`WORDFREQ_LOWER_SHARE`) and capitalised (the rest), each
  after a space as in running text.

Every source keeps its language, so coverage is reported per language.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from xling.errors import XlingError

WORDFREQ_WORDS = 100_000
WORDFREQ_CORPUS_WORDS = 10_000_000
WORDFREQ_LOWER_SHARE = 0.8


@dataclass
class TextSource:
    """Texts of one language from one source; ``weights`` are occurrence counts (None = 1 each)."""

    name: str
    lang: str | None
    texts: list[str]
    weights: np.ndarray | None = None
    kind: str = "sentences"  # or "words"
    meta: dict = field(default_factory=dict)

    def total_weight(self) -> float:
        return float(len(self.texts) if self.weights is None else self.weights.sum())


def _norm(lang: str) -> str:
    from xling.data.langcodes import normalize_lang

    return normalize_lang(lang)


def _wordfreq_code(lang: str) -> str:
    import langcodes

    return langcodes.Language.get(lang.split("_")[0]).language


def wordfreq_source(lang: str, n_words: int = WORDFREQ_WORDS) -> TextSource:
    """The ``n_words`` most frequent words of ``lang`` from ``wordfreq`` (see the module docstring)."""
    from xling.deps import require

    wordfreq = require("wordfreq", "the 'wordfreq' corpus")
    code = _wordfreq_code(lang)
    if code not in wordfreq.available_languages(wordlist="best"):
        raise XlingError(f"wordfreq has no word list for language {lang} ({code})")
    freqs = wordfreq.get_frequency_dict(code, wordlist="best")
    items = [(w, f) for w, f in freqs.items() if w.strip()][:n_words]
    texts, weights = [], []
    for w, f in items:
        count = f * WORDFREQ_CORPUS_WORDS
        cap = w[:1].upper() + w[1:]
        if cap == w:
            texts.append(" " + w)
            weights.append(count)
        else:
            texts += [" " + w, " " + cap]
            weights += [count * WORDFREQ_LOWER_SHARE, count * (1 - WORDFREQ_LOWER_SHARE)]
    return TextSource(
        f"wordfreq:{code}", lang, texts, np.asarray(weights, dtype=np.float64), kind="words",
        meta={"wordfreq_version": getattr(wordfreq, "__version__", "?"), "words": len(items),
              "corpus_words": WORDFREQ_CORPUS_WORDS},
    )


def _read_plain(path: Path) -> list[str]:
    from xling.data.readers import read_lines

    return [s.strip() for s in read_lines(path) if s.strip()]


def load_sources(spec: str, langs: Sequence[str], load_corpus=None) -> list[TextSource]:
    """Read a corpus spec (see the module docstring) into one source per language and part.

    ``load_corpus(spec, langs=...)`` reads the corpus parts (default :func:`xling.data.readers.load_corpus`).
    """
    if load_corpus is None:
        from xling.data.readers import load_corpus

    if not spec or not str(spec).strip():
        raise XlingError("no corpus given")
    langs = [_norm(lang) for lang in langs]
    if not langs:
        raise XlingError("no target languages given (use --langs)")
    parts = [p.strip() for p in str(spec).split("+")]
    if any(p.lower() == "wordfreq" or p.lower().startswith("wordfreq:") for p in parts):
        from xling.deps import require

        require("wordfreq", "the 'wordfreq' corpus")  # before the other parts download or read anything
    sources: list[TextSource] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        low = part.lower()
        path = Path(part).expanduser()
        if low == "wordfreq" or low.startswith("wordfreq:"):
            n = WORDFREQ_WORDS
            if ":" in part:
                try:
                    n = int(part.split(":", 1)[1])
                except ValueError:
                    raise XlingError(f"wordfreq:N expects a number of words, got {part!r}") from None
                if n < 1:
                    raise XlingError(f"wordfreq:N needs N >= 1, got {n}")
            sources += [wordfreq_source(lang, n) for lang in langs]
        elif not path.exists() and "=" in part:
            for item in part.split(","):
                if "=" not in item:
                    raise XlingError(f"corpus item {item!r} is not LANG=FILE")
                code, file = item.split("=", 1)
                lang = _norm(code.strip())
                if lang not in langs:
                    continue
                sources.append(TextSource(f"{Path(file.strip()).name}", lang, _read_plain(Path(file.strip()).expanduser())))
        elif path.is_file() and path.suffix.lower() not in (".tsv", ".jsonl", ".ndjson"):
            lang = langs[0] if len(langs) == 1 else None
            sources.append(TextSource(path.name, lang, _read_plain(path)))
        else:
            corpus = load_corpus(part, langs=langs)
            for lang in langs:
                key = corpus.resolve(lang)
                if key is None:
                    raise XlingError(f"language {lang} is not in corpus {corpus.name}; it has: {', '.join(corpus.langs)}")
                sources.append(TextSource(f"{corpus.name}:{key}", lang, list(corpus.sentences[key])))
    for lang in langs:
        if not any((s.lang in (lang, None)) and s.texts for s in sources):
            raise XlingError(f"language {lang}: the corpus has no text in it (empty corpus)")
    if not any(s.texts for s in sources):
        raise XlingError(f"corpus {spec!r} is empty (no sentences)")
    return [s for s in sources if s.texts]


def fingerprint(sources: Sequence[TextSource]) -> str:
    """A content hash of the texts, their languages and weights."""
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.name}\x00{s.lang}\x00{len(s.texts)}\x00".encode())
        for t in s.texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\n")
        if s.weights is not None:
            h.update(np.ascontiguousarray(s.weights, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def describe(sources: Sequence[TextSource]) -> list[dict]:
    return [
        {"source": s.name, "lang": s.lang, "kind": s.kind, "texts": len(s.texts), "weight": round(s.total_weight(), 3)}
        for s in sources
    ]


def encode(backend, texts: Sequence[str], batch: int = 4096) -> list[list[int]]:
    """Ids of each text (no special tokens) with a ``tokenizers.Tokenizer``, batched."""
    out: list[list[int]] = []
    texts = list(texts)
    for a in range(0, len(texts), batch):
        out += [e.ids for e in backend.encode_batch(texts[a : a + batch], add_special_tokens=False)]
    return out


def count_ids(encodings: Sequence[Sequence[int]], weights: np.ndarray | None, size: int) -> np.ndarray:
    """Weighted occurrence counts of every id (float64, length ``size``)."""
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter((i for e in encodings for i in e), dtype=np.int64, count=int(lengths.sum()))
    w = None if weights is None else np.repeat(np.asarray(weights, dtype=np.float64), lengths)
    counts = np.bincount(flat, weights=w, minlength=size).astype(np.float64)
    if len(counts) > size:
        raise XlingError(f"the tokenizer produced id {len(counts) - 1}, beyond its size {size}")
    return counts


def tokens_per_second(backend, texts: Sequence[str], repeats: int = 2, batch: int = 4096) -> dict:
    """Throughput of ``backend`` on ``texts`` (best of ``repeats`` timed passes)."""
    import time

    texts = list(texts)
    best, n_tokens = float("inf"), 0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        n_tokens = sum(len(e) for e in encode(backend, texts, batch))
        best = min(best, time.perf_counter() - t0)
    best = max(best, 1e-9)
    return {"texts": len(texts), "tokens": int(n_tokens), "seconds": round(best, 4),
            "tokens_per_second": round(n_tokens / best, 1), "texts_per_second": round(len(texts) / best, 1)}
