"""``xling langid``: language identity per layer beside MEXA (recipe: :func:`xling.recipes.langid.run.langid`)."""

from __future__ import annotations


def add_langid_parser(sub) -> None:
    """``xling langid``: the flags are the fields of :class:`xling.recipes.langid.config.LangIdConfig`."""
    from xling.harness.config import add_command
    from xling.recipes.langid.config import LangIdConfig

    add_command(sub, "langid", LangIdConfig, cmd_langid,
                help="where language identity lives: a linear language-ID probe per layer, beside MEXA",
                description="Embed the corpus as xling align does (same cache), fit a multinomial logistic "
                            "regression predicting each sentence's language from every hidden state on half of the "
                            "sentence ids, report held-out accuracy with a 95% Wilson interval against chance, and "
                            "MEXA against the pivot from the same embeddings.")


def cmd_langid(cfg) -> int:
    from xling.recipes.langid.run import format_summary, langid

    result = langid(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/langid.csv, run.json, report.html")
    return 0
