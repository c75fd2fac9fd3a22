"""The harness: what every recipe shares.

Config to command-line flags, outputs (CSV, folder writes, run records), the content cache, the
HTML kit (:mod:`xling.harness.html`), the results store (:mod:`xling.harness.store`), the executors
(:mod:`xling.harness.executor`), seeds, the sources of text, and the training that writes model and
module folders (:mod:`xling.harness.training`). It imports the library below it and never a recipe.
"""
