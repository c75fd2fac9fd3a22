"""``xling lens``: the latent language of a decoder, layer by layer (Wendler et al. 2024).

The recipe is in :mod:`xling.recipes.lens.run`; its public names are reachable from this package too
(lazily, so importing a sibling module such as the report does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.lens.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.lens' has no attribute {name!r}") from None
