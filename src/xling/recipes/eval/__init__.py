"""The ``eval`` recipe: zero-shot cross-lingual transfer scores and the transfer gap.

The recipe is in :mod:`xling.recipes.eval.run`; its public names are reachable from this package too
(lazily, so importing a sibling module such as the report does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.eval.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.eval' has no attribute {name!r}") from None
