"""Pooled embeddings saved for users' own analysis (``xling align --save-embeddings DIR``).

Stable format ``xling-embeddings/1``. ``DIR`` holds:

* ``<lang>.safetensors`` per language (``eng_Latn.safetensors``, ...): one tensor
  ``embeddings`` of shape ``(layers, sentences, dim)``, float32; ``embeddings[i, j]``
  is the pooled state of sentence j at hidden state ``index["layers"][i]``
  (0 = the embedding output); row j is the same parallel sentence in every language;
* ``index.json``::

    {"format": "xling-embeddings/1", "model": ..., "model_fingerprint": ...,
     "corpus": ..., "corpus_fingerprint": ..., "pooling": "mean", "layers": [0, ..., 12],
     "dim": 384, "dtype": "float32", "n_sentences": n, "pivot": "eng_Latn",
     "sentence_ids": [...],                       # the corpus's row ids (or "0", "1", ...)
     "languages": {"eng_Latn": {"file": "eng_Latn.safetensors", "sha256": <file hash>,
                                "sentence_sha256": [<sha256 of each sentence's UTF-8 text>, ...]}, ...}}

The folder is written whole or not at all (a temporary folder renamed into
place, under an output lock). :func:`read_saved_embeddings` checks the format,
each file's sha256 and shape.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path

from xling.errors import XlingError

FORMAT = "xling-embeddings/1"


class EmbeddingWriter:
    """Collect one language at a time into a temporary folder; :meth:`finish` writes the index and publishes it."""

    def __init__(self, folder: str | Path, header: dict, sentence_ids: list[str], *, overwrite: bool = False):
        from xling.io import output_folder

        self.folder = Path(folder)
        self._stack = ExitStack()
        # refuses a file, the cache, or a user's non-empty folder (unless overwrite); holds the output lock
        self.tmp = self._stack.enter_context(output_folder(self.folder, command="align --save-embeddings",
                                                           overwrite=overwrite, flag="--save-embeddings"))
        self.tmp.mkdir()
        self.index = {"format": FORMAT, **header, "sentence_ids": [str(x) for x in sentence_ids], "languages": {}}

    def add(self, lang: str, embeddings, sentences: list[str]) -> None:
        from safetensors.torch import save_file

        from xling.io import sha256_file

        name = f"{lang}.safetensors"
        save_file({"embeddings": embeddings.float().contiguous()}, str(self.tmp / name))
        self.index["languages"][lang] = {
            "file": name, "sha256": sha256_file(self.tmp / name),
            "sentence_sha256": [hashlib.sha256(s.encode("utf-8")).hexdigest() for s in sentences],
        }

    def finish(self) -> Path:
        (self.tmp / "index.json").write_text(json.dumps(self.index, indent=1, ensure_ascii=False), encoding="utf-8")
        self._stack.close()  # renames the folder into place, then releases the lock
        return self.folder

    def abort(self, exc: BaseException) -> None:
        self._stack.__exit__(type(exc), exc, exc.__traceback__)


def read_saved_embeddings(folder: str | Path, langs: list[str] | None = None) -> tuple[dict, dict]:
    """``(index, {lang: (layers, n, dim) tensor})`` from a ``--save-embeddings`` folder, checked."""
    from safetensors.torch import load_file

    from xling.io import sha256_file

    folder = Path(folder)
    path = folder / "index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XlingError(f"{path}: not found (not a --save-embeddings folder)") from None
    except (OSError, ValueError) as exc:
        raise XlingError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise XlingError(f"{path}: not an {FORMAT} index")
    out = {}
    for lang, entry in index["languages"].items():
        if langs is not None and lang not in langs:
            continue
        f = folder / entry["file"]
        if not f.is_file() or sha256_file(f) != entry["sha256"]:
            raise XlingError(f"{f}: missing or changed since it was written (sha256 differs from {path.name})")
        emb = load_file(str(f))["embeddings"]
        want = (len(index["layers"]), index["n_sentences"], index["dim"])
        if tuple(emb.shape) != want:
            raise XlingError(f"{f}: shape {tuple(emb.shape)}, {path.name} says {want}")
        out[lang] = emb
    return index, out


__all__ = ["FORMAT", "EmbeddingWriter", "read_saved_embeddings"]
