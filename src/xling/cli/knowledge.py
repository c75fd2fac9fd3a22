"""``xling knowledge``: a parallel fact probe across languages (recipe: :func:`xling.recipes.knowledge.run.knowledge`).

The flags are the fields of :class:`xling.recipes.knowledge.config.KnowledgeConfig`; this module only prints.
"""

from __future__ import annotations


def add_knowledge_parser(sub) -> None:
    from xling.harness.config import add_command
    from xling.recipes.knowledge.config import KnowledgeConfig

    add_command(sub, "knowledge", KnowledgeConfig, cmd_knowledge,
                help="which facts a decoder knows in which languages, and whether facts known in English are known "
                     "elsewhere (a CLDR fact probe)",
                description="Parallel multiple-choice facts built offline from the Unicode CLDR (babel): a country's "
                            "official language, currency and continent, named in each language by CLDR, each choice "
                            "scored by its log-likelihood. Writes knowledge.csv, accuracy.csv, predictions.csv, "
                            "consistency.csv, known_in_english.csv, dropped.csv, run.json and report.html.")


def cmd_knowledge(cfg) -> int:
    from xling.recipes.knowledge.run import format_summary, knowledge

    result = knowledge(cfg)
    print(format_summary(result))
    if cfg.store is not None:
        print(f"run {result.run_id} (xling consistency {result.run_id} reads it again)")
    if cfg.out is not None:
        print(f"wrote {cfg.out}/knowledge.csv, accuracy.csv, predictions.csv, consistency.csv, report.html")
    return 0
