"""xling: cross-lingual transfer of language models.

The Python API that the ``xling`` command line wraps:

>>> import xling
>>> result = xling.align()                      # built-in model and corpus
>>> result.summary()                            # per-language MEXA, best layer, ...

Layers, low to high: ``xling.data`` (corpora, language codes), ``xling.models``
(loading, layer access), ``xling.engine`` (batched hidden states), ``xling.tasks``,
then ``xling.methods`` (metrics, composition, statistics) and ``xling.modules`` (formats),
``xling.harness`` (config, outputs, cache, store, executors, HTML), ``xling.recipes`` (one
package per command), ``xling.cli`` (the command
line). No module imports a higher layer (``tests/test_layers.py``).
"""

from xling.errors import XlingError

__version__ = "0.1.0"

__all__ = ["XlingError", "align", "load_model", "load_corpus", "__version__"]


def __getattr__(name):  # lazy: importing xling stays cheap (no torch until needed)
    if name == "align":
        from xling.recipes.align.run import align

        return align
    if name == "load_model":
        from xling.models.loading import load_model

        return load_model
    if name == "load_corpus":
        from xling.harness.sources import load_text_source

        return load_text_source
    raise AttributeError(name)
