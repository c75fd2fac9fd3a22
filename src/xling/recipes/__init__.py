"""Recipes: one package per command (its config, its run, its report).

A recipe imports the harness (:mod:`xling.harness`) and the library below it, never another recipe
(``tests/test_layers.py`` checks this). The command line is built from the recipes' configs.
"""
