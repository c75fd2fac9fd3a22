"""``xling modules list|show``: the module store's contents (options in :mod:`xling.recipes.modules.config`)."""
