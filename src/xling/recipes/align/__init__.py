"""The ``align`` recipe: per-layer cross-lingual alignment of a model on parallel text.

The recipe is in :mod:`xling.recipes.align.run`; its public names are reachable from this package too
(lazily, so importing a sibling module such as the report does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.align.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.align' has no attribute {name!r}") from None
