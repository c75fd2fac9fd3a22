"""``xling knowledge``: do a decoder's facts carry across languages? (the CLDR fact probe, :mod:`xling.data.facts`).

The recipe is in :mod:`xling.recipes.knowledge.run`; its public names are reachable from this package too
(lazily, so importing the config does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.knowledge.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.knowledge' has no attribute {name!r}") from None
