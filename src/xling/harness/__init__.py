"""The harness: what every recipe shares.

Config to command-line flags, outputs (CSV, folder writes, run records), the content cache, the
HTML kit (:mod:`xling.harness.html`), the results store (:mod:`xling.harness.store`), the executors
(:mod:`xling.harness.executor`), seeds, and the sources of text. It imports the library below it
and never a recipe.
"""
