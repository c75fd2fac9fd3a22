"""The ``xling`` command line: a thin layer over the Python API.

Each subcommand parses flags into the API's config dataclass and calls it. User
mistakes (:class:`~xling.errors.XlingError`) print one line, ``xling: error:
...``, and exit with status 2; no traceback. ``XLING_DEBUG=1`` shows tracebacks.

One module per command group holds all of its ``argparse`` and its thin
``cmd_*`` handlers (flags -> config -> recipe call -> print); the recipes are in
:mod:`xling.recipes`:

* :mod:`xling.cli.align` -- ``align``, ``models``, ``metrics``, ``corpus``
* :mod:`xling.cli.runs` -- ``runs``, ``compare``
* :mod:`xling.cli.consistency` -- ``consistency``
* :mod:`xling.cli.vocab` -- ``vocab trim|extend|compare``
* :mod:`xling.cli.modules` -- ``compose``, ``modules list|show``, ``train-module``
* :mod:`xling.cli.eval` -- ``train``, ``eval``, ``task``, ``predict``
* :mod:`xling.cli.probe` -- ``probe``
* :mod:`xling.cli.matrix` -- ``matrix``, ``rank``
* :mod:`xling.cli.transfer` -- ``transfer``
* :mod:`xling.cli.lens` -- ``lens``
* :mod:`xling.cli.neurons` -- ``neurons``
* :mod:`xling.cli.langid` -- ``langid``
* :mod:`xling.cli.knowledge` -- ``knowledge``
* :mod:`xling.cli.common` -- flag helpers shared by the groups
"""

from __future__ import annotations

import argparse
import os
import sys

from xling.cli.align import cmd_align, cmd_corpus, cmd_metrics, cmd_models  # noqa: F401 - older imports
from xling.cli.common import add_model_flags as _add_model_flags  # noqa: F401 - older imports
from xling.cli.common import csv_list as _csv_list  # noqa: F401 - older imports
from xling.cli.common import metric_options as _metric_options  # noqa: F401 - older imports
from xling.cli.runs import cmd_compare, cmd_runs  # noqa: F401 - older imports
from xling.errors import XlingError
from xling.options import option_value  # noqa: F401 - re-exported for older imports


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors echo the user's arguments with control characters escaped."""

    def error(self, message):
        from xling.textsafe import term

        super().error(term(message))


def build_parser() -> argparse.ArgumentParser:
    from xling import __version__
    from xling.cli import align, knowledge, langid, lens, matrix, modules, neurons, probe, runs, transfer, vocab
    from xling.cli import consistency as consistency_cmds
    from xling.cli import edit as edit_cmds
    from xling.cli import eval as eval_cmds

    parser = _Parser(prog="xling", description="Cross-lingual transfer of language models.")
    parser.add_argument("--version", action="version", version=f"xling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    align.add_align_parser(sub)
    align.add_models_parser(sub)
    runs.add_runs_parser(sub)
    runs.add_compare_parser(sub)
    consistency_cmds.add_consistency_parser(sub)  # xling consistency (a run's answers across languages)
    align.add_metrics_parser(sub)
    align.add_corpus_parser(sub)
    vocab.add_vocab_parser(sub)  # xling vocab trim|extend|compare
    modules.add_compose_parsers(sub)  # xling compose, xling modules list|show
    eval_cmds.add_eval_parsers(sub)  # xling train, eval, task, predict
    modules.add_train_module_parser(sub)  # xling train-module
    probe.add_probe_parser(sub)  # xling probe (linear probe on frozen features)
    matrix.add_matrix_parser(sub)  # xling matrix (source x target transfer matrix)
    matrix.add_rank_parser(sub)  # xling rank (which source language to transfer from)
    transfer.add_transfer_parser(sub)  # xling transfer (the modular transfer experiment)
    lens.add_lens_parser(sub)  # xling lens (the logit lens of a decoder)
    neurons.add_neurons_parser(sub)  # xling neurons (language-specific neurons, LAPE)
    langid.add_langid_parser(sub)  # xling langid (language identity per layer)
    knowledge.add_knowledge_parser(sub)  # xling knowledge (the CLDR fact probe across languages)
    edit_cmds.add_edit_parser(sub)  # xling edit (cross-lingual knowledge editing)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; what it prints to stdout goes through :class:`xling.textsafe.SafeStream`."""
    from xling.textsafe import SafeStream

    stdout = sys.stdout
    sys.stdout = SafeStream(stdout)  # no name or sentence can put a terminal escape on the user's screen
    try:
        return _main(argv)
    finally:
        if isinstance(sys.stdout, SafeStream):
            sys.stdout = stdout


def _main(argv: list[str] | None) -> int:
    from xling.errors import interrupted_message
    from xling.textsafe import term

    try:
        for arg in sys.argv[1:] if argv is None else argv:
            try:
                str(arg).encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes in argv arrive as lone surrogates
                raise XlingError(f"command-line argument {ascii(arg)} is not valid UTF-8 text") from None
        parser = build_parser()  # imports the subcommands (torch, transformers): Ctrl-C may land here
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        from xling.cli.common import apply_placement_flags

        apply_placement_flags(args)  # --device-map / --load-in-*: refused here, before any work, if unusable
        return args.func(args)
    except XlingError as exc:
        if os.environ.get("XLING_DEBUG"):
            raise
        print(f"xling: error: {term(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a quota, a read-only or unwritable folder: one line, exit 2
        from xling.io import write_error_line

        line = write_error_line(exc)
        if line is None or os.environ.get("XLING_DEBUG"):
            raise
        print(f"xling: error: {term(line)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
