"""The ``predict`` recipe: per-language task scores predicted from alignment (MEXA-style).

The recipe is in :mod:`xling.recipes.predict.run`; its public names are reachable from this package too
(lazily, so importing a sibling module such as the report does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.predict.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.predict' has no attribute {name!r}") from None
