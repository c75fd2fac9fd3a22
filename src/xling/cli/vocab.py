"""``xling vocab trim|extend|transplant|replace|compare|fertility|export`` (recipes: :mod:`xling.recipes.vocab.run`).

The flags are the fields of the configs in :mod:`xling.recipes.vocab.config`; this module only prints.
"""

from __future__ import annotations


def add_vocab_parser(sub) -> None:
    """The ``xling vocab`` group: ``trim``, ``extend``, ``transplant``, ``replace``, ``compare``, ``fertility``,
    ``export``."""
    from xling.harness.config import add_command
    from xling.recipes.vocab.config import CompareConfig, ExtendConfig, TrimConfig
    from xling.recipes.vocab.config import ExportConfig
    from xling.recipes.vocab.config import FertilityConfig
    from xling.recipes.vocab.config import ReplaceConfig, TransplantConfig

    v = sub.add_parser("vocab", help="trim a model's vocabulary to some languages, or extend it with new tokens",
                       description="Vocabulary specialisation: trim (vocabtrimmer), extend (FOCUS, WECHSEL, mean, "
                                   "random), compare two trimmed copies.")
    vs = v.add_subparsers(dest="vocab_command", metavar="VOCAB_COMMAND")
    v.set_defaults(func=lambda args: (v.print_help(), 2)[1])
    add_command(vs, "trim", TrimConfig, cmd_trim, help="keep only the tokens a target-language corpus uses",
                description="Count token frequencies on the target-language corpus, keep tokens seen at least "
                            "--min-freq times plus special and byte tokens, slice the embeddings, rebuild the "
                            "tokenizer (Ushio et al. 2023).")
    add_command(vs, "extend", ExtendConfig, cmd_extend, help="add new tokens and initialise their embeddings",
                description="Add tokens (a list, or words the tokenizer over-segments in a corpus) and initialise "
                            "them by mean, random, FOCUS or WECHSEL.")
    add_command(vs, "fertility", FertilityConfig, cmd_fertility,
                help="tokens per word and per character, parity against English, byte fallback rate",
                description="Tokenizer fairness (Petrov et al. 2023) on a parallel corpus (default: the Bible's 22 "
                            "languages): tokens per word and per character, tokens relative to English on the same "
                            "rows (with a bootstrap interval) and the share of byte tokens, for each model's "
                            "tokenizer (no weights are read). Writes fertility.csv and report.html.")
    add_command(vs, "compare", CompareConfig, cmd_compare, help="compare two vocabulary-trimmed copies of a model",
                description="Rows kept in each (by token), overlap, and whether shared rows and all other weights "
                            "are identical.")
    add_command(vs, "transplant", TransplantConfig, cmd_new_vocab,
                help="give a model another model's tokenizer, initialising the new embeddings training-free",
                description="Give --model the tokenizer of --tokenizer-from (a model, folder, hub id or "
                            "tokenizer.json). Tokens both vocabularies share keep their vectors; the others are "
                            "initialised by orthogonal matching pursuit over shared-token anchors (omp, mergekit "
                            "tokensurgeon's idea), FOCUS (sparsemax over similar shared tokens), mean or random. With "
                            "--data: fertility and bits per character per language before and after, and with "
                            "--adapt-steps after a short causal-LM adaptation.")
    add_command(vs, "replace", ReplaceConfig, cmd_new_vocab,
                help="replace the vocabulary by one trained on the target text (FOCUS, mean, random)",
                description="Train a byte-level BPE or Unigram tokenizer of --vocab-size on the training part of "
                            "--data, initialise every embedding (FOCUS, mean, random or omp), adapt for "
                            "--adapt-steps causal-LM steps, and compare fertility and bits per character per "
                            "language with the original model and with vocabulary extension.")
    add_command(vs, "export", ExportConfig, cmd_export, help="write a decoder as one GGUF file for llama.cpp",
                description="Write a Llama-family (Llama, SmolLM2, Mistral, Qwen2) or Gemma 3 text decoder with its "
                            "tokenizer as one GGUF file (F16 or F32) that llama.cpp and transformers' GGUF reader "
                            "load.")


def cmd_trim(cfg) -> int:
    from xling.recipes.vocab.run import format_trim, trim

    print(format_trim(trim(cfg)))
    return 0


def cmd_fertility(cfg) -> int:
    from xling.recipes.vocab.fertility import fertility, format_fertility

    print(format_fertility(fertility(cfg)))
    return 0


def cmd_extend(cfg) -> int:
    from xling.recipes.vocab.run import extend, format_extend

    print(format_extend(extend(cfg)))
    return 0


def cmd_compare(cfg) -> int:
    from xling.methods.vocab.compare import format_comparison
    from xling.recipes.vocab.run import compare

    res = compare(cfg.model, cfg.reference, base=cfg.base, out=cfg.out)
    print(format_comparison(res, cfg.model, cfg.reference))
    if cfg.out:
        print(f"wrote {cfg.out}")
    return 0


def cmd_new_vocab(cfg) -> int:
    from xling.recipes.vocab.config import TransplantConfig
    from xling.recipes.vocab.transplant import format_new_vocab, replace, transplant

    run = transplant if isinstance(cfg, TransplantConfig) else replace
    print(format_new_vocab(run(cfg)))
    return 0


def cmd_export(cfg) -> int:
    from xling.recipes.vocab.run import export, format_export

    print(format_export(export(cfg)))
    return 0


__all__ = ["add_vocab_parser", "cmd_compare", "cmd_export", "cmd_extend", "cmd_fertility", "cmd_new_vocab", "cmd_trim"]
