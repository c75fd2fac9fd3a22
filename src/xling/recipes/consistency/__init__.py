"""``xling consistency``: do a run's answers agree across languages, and does knowing an item in one language
carry over to another?

The recipe is in :mod:`xling.recipes.consistency.run`; its public names are reachable from this package too
(lazily, so importing the config does not load the statistics).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.consistency.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.consistency' has no attribute {name!r}") from None
