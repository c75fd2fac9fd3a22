"""``xling lens``: what a decoder predicts at each layer (recipe: :func:`xling.recipes.lens.run.lens`).

The flags are the fields of :class:`xling.recipes.lens.config.LensConfig`; this module only prints.
"""

from __future__ import annotations


def add_lens_parser(sub) -> None:
    from xling.cli.common import add_placement_flags
    from xling.harness.config import add_command
    from xling.recipes.lens.config import LensConfig

    add_command(sub, "lens", LensConfig, cmd_lens, extra=add_placement_flags,
                help="the logit lens: does a decoder pass through English on the way to another language?",
                description="Few-shot word prompts (Wendler et al. 2024) read through the model's own final norm and "
                            "unembedding at every hidden state: the probability of the target-language answer and of "
                            "the English word, the entropy and the top token per layer. Writes lens.csv, "
                            "prompts.jsonl, run.json and report.html.")


def cmd_lens(cfg) -> int:
    from xling.recipes.lens.run import format_summary, lens

    result = lens(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/lens.csv, prompts.jsonl, report.html")
    return 0
