"""Vocabulary specialisation: trim a model to the languages it serves, extend it with new tokens.

* :mod:`~xling.methods.vocab.trim` -- vocabulary trimming (Ushio, Zhou and
  Camacho-Collados 2023, "An Efficient Multilingual Language Model Compression
  through Vocabulary Trimming", vocabtrimmer);
* :mod:`~xling.methods.vocab.extend` -- adding tokens with mean, random, FOCUS
  (Dobler and de Melo 2023, "FOCUS: Effective Embedding Initialization for
  Monolingual Specialization of Multilingual Models", EMNLP 2023) or WECHSEL
  (Minixhofer, Paischer and Rekabsaz 2022, "WECHSEL: Effective initialization of
  subword embeddings for cross-lingual transfer of monolingual language models",
  NAACL 2022) initialisation;
* :mod:`~xling.methods.vocab.tokenizer` -- the tokenizer JSON surgery (Unigram,
  byte-level BPE, SentencePiece BPE, WordPiece, WordLevel);
* :mod:`~xling.methods.vocab.model` -- the embedding surgery (tied and untied,
  output biases);
* :mod:`~xling.methods.vocab.compare` -- comparing two trimmed copies;
* :mod:`~xling.methods.vocab.fertility` -- tokenizer fairness: tokens per word and per
  character, parity against English, byte fallback rate (Petrov, La Malfa, Torr and Bibi
  2023, "Language Model Tokenizers Introduce Unfairness Between Languages", NeurIPS 2023);
* :mod:`~xling.methods.vocab.lm` -- a causal LM before and after a vocabulary change:
  held-out perplexity (and why trimming keeps it up to the kept probability mass), tokens/s;
* :mod:`~xling.methods.vocab.transplant` -- a whole new vocabulary (another model's tokenizer, or one trained
  here by :mod:`~xling.methods.vocab.train_tokenizer`): tokens matched across tokenizer families, new rows by
  orthogonal matching pursuit over shared-token anchors (mergekit tokensurgeon's idea) or FOCUS;
* :mod:`~xling.methods.vocab.adapt` -- the short causal-LM adaptation of the embeddings after such a change.

The recipes that read models and corpora and write folders are in
:mod:`xling.recipes.vocab.run`.
"""
