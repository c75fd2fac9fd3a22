"""``xling neurons``: language-specific neurons by LAPE (recipe: :func:`xling.recipes.neurons.run.neurons`)."""

from __future__ import annotations


def add_neurons_parser(sub) -> None:
    """``xling neurons``: the flags are the fields of :class:`xling.recipes.neurons.config.NeuronsConfig`."""
    from xling.harness.config import add_command
    from xling.recipes.neurons.config import DEFAULT_LANGS, NeuronsConfig

    add_command(sub, "neurons", NeuronsConfig, cmd_neurons, defaults={"langs": list(DEFAULT_LANGS)},
                help="language-specific feed-forward neurons (LAPE) and what switching them off does",
                description="Count positive feed-forward activations per neuron and language (Tang et al. 2024), "
                            "select language-specific neurons by LAPE as the authors' code does, and with --ablate "
                            "measure the perplexity change of every language when one language's neurons are "
                            "switched off, against random neurons of the same number per layer.")


def cmd_neurons(cfg) -> int:
    from xling.recipes.neurons.run import format_summary, neurons

    result = neurons(cfg)
    print(format_summary(result))
    print(f"wrote {cfg.out}/activations.safetensors, neurons.json, correlations.csv, report.html")
    return 0
