"""The ``align`` recipe: per-layer cross-lingual alignment of a model on parallel text.

The computation, its outputs and its record are the alignment engine that several recipes share,
:mod:`xling.harness.alignment`; this recipe is that engine behind ``xling align`` (one model or
several, ``--models``), with its report (:func:`xling.harness.html.render_align_report`).
"""

from __future__ import annotations

from xling.harness.alignment import (DEFAULT_MAX_SENTENCES, DEFAULT_METRICS, DEFAULT_OUT, AlignConfig,  # noqa: F401
                                     AlignResult, IgnoredOptionWarning, align, align_models, best_layer,
                                     format_summary, run_record, save_to_store, sentences_digest, summarize,
                                     unused_option_messages, write_outputs)

__all__ = ["AlignConfig", "AlignResult", "align", "align_models", "format_summary", "write_outputs"]
