"""Stage 1 of ``xling transfer``, the plan: the layer-swap grid, the conditions resolved to module paths,
the keys under which trained modules are reused, and the dev-set choice rule (ties broken towards the least change).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Sequence

from xling.cache import ContentCache, FolderCodec, content_key
from xling.recipes.transfer.config import Condition, TransferConfig

RECIPE_FILE = "xling_transfer.json"
RECIPE_VERSION = 2
#: Conditions that need data a task may not have; dropped from the default set (with a note) when it is missing.
OPTIONAL = ("align", "translate-train")
#: A task module whose best dev accuracy is at most COLLAPSE x chance is retrained (twice at most) at half the lr.
COLLAPSE = 1.25
#: Built-in parallel text for the alignment loss, per task (train-split text only, never dev/test).
DEFAULT_ALIGN_DATA = {"bible-genre": "bible-genre:align"}


def swap_grid(num_layers: int) -> list[tuple[int, int, int]]:
    """``--swap auto`` candidates (bottom, top, transition), scaled to the depth ``L``.

    Bandarkar et al. (2025) swap the bottom 5 and top 2 of 32 layers (about L/6 and
    L/16) with 1-layer transitions; the grid spans bottom in {L/8, L/6, L/4}, top in
    {1, 2} and transition in {0, 1}, rounded, at least 1, deduplicated.
    """
    bottoms = sorted({max(1, round(num_layers * f)) for f in (1 / 8, 1 / 6, 1 / 4)})
    out = []
    for b in bottoms:
        for t in (1, 2):
            for w in (0, 1):
                if b + t + 2 * w <= num_layers:
                    out.append((b, t, w))
    return out or [(1, 1, 0)]


# ----------------------------------------------------------------------------- helpers


def _log(msg: str, on: bool) -> None:
    if on:
        print(f"[transfer] {msg}", file=sys.stderr, flush=True)


def _key(recipe: dict) -> str:
    """A module's key: its recipe (which names ``RECIPE_VERSION``) as canonical JSON, hashed."""
    return content_key(recipe, 20)


def _modules(mdir: Path) -> ContentCache:
    """``OUT/modules`` as the resume cache of this recipe: a folder per module, reused while its marker
    (:data:`RECIPE_FILE`) names the key of the recipe asked for; one whose weights no longer match the
    checksums in its ``xling_module.json`` is retrained (with a note), not used."""
    return ContentCache(mdir, FolderCodec(RECIPE_FILE, ("adapter_model.safetensors",), "xling_module.json"),
                        RECIPE_VERSION, name="module", key_length=20)


def _reusable(folder: Path, key: str) -> bool:
    return _modules(folder.parent).get(key, name=folder.name) is not None


def _mark(folder: Path, key: str, recipe: dict) -> None:
    _modules(folder.parent).put(key, recipe, name=folder.name)


def module_fingerprint(folder: Path) -> str:
    """Content hash of a module folder's weights (adapter + head)."""
    from xling.io import sha256_file

    parts = [sha256_file(folder / "adapter_model.safetensors")]
    head = folder / "head.safetensors"
    if head.is_file():
        parts.append(sha256_file(head))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _resolve_condition(cond: Condition, cfg: TransferConfig, paths: dict[str, Path], tgt: str | None,
                       choice: Any = None):
    """(input paths, weights, options) of ``cond`` for target ``tgt``; ``choice``: its lambda or (b, t, w)."""
    inputs = []
    for role in cond.inputs:
        key = f"lang:{tgt}" if role == "lang:tgt" else f"tt:{tgt}" if role == "tt:tgt" else role
        inputs.append(paths[key])
    weights = None
    if cond.weights is not None:
        lam = float(choice if cond.choice == "lambda" and choice is not None else cfg.lambdas[0])
        weights = [lam if w == "lambda" else -lam if w == "-lambda" else float(w) for w in cond.weights]
    options = {}
    if cond.method == "layer_swap":
        b, t, w = choice if choice is not None else cfg.swap
        options = {"bottom": int(b), "top": int(t), "transition": int(w)}
    return inputs, weights, options


#: How a dev tie is broken: the option that changes the task module least (Occam), stated in the notes.
TIE_RULES = {"lambda": "tie rule: the smallest lambda, the least weight on the language module",
             "swap": "tie rule: the fewest layers taken from the language module (bottom + top + 2 x transition), "
                     "then the smaller bottom"}


def _tie_order(choice: str | None, value) -> tuple:
    if choice == "lambda":
        return (float(value),)
    if choice == "swap":
        b, t, w = value
        return (b + t + 2 * w, b, t, w)
    return ()


def pick_on_dev(scored: Sequence[tuple[float, Any]], choice: str | None) -> tuple[Any, list]:
    """``(chosen, tied)``: the candidate with the best dev score; ``tied``: every candidate with that score.

    A tie is broken by :data:`TIE_RULES` (the gentlest composition: smallest lambda,
    fewest swapped layers), not by the order of the candidates on the command line.
    """
    best = max(v for v, _ in scored)
    tied = [cand for v, cand in scored if v == best]
    return min(tied, key=lambda x: _tie_order(choice, x)), tied


def _fmt_choice(value) -> str:
    if isinstance(value, (tuple, list)):
        return "/".join(str(x) for x in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
