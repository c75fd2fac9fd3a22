"""The ``train-module`` recipe: train a language module (LoRA or LT-SFT) or a task module (LoRA).

The recipe is in :mod:`xling.recipes.train_module.run`; its public names are reachable from this package too
(lazily, so importing the package does not load the model stack).
"""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    run = importlib.import_module("xling.recipes.train_module.run")
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'xling.recipes.train_module' has no attribute {name!r}") from None
