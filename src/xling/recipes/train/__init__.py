"""The ``train`` recipe: fine-tune a model on a task's source language (full or LoRA), once or once per seed.

The recipe is in :mod:`xling.recipes.train.run`; its public names are reachable from this package too
(lazily, so importing the package does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.train.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.train' has no attribute {name!r}") from None
