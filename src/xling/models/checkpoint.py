"""A model is what its files say, or an error.

transformers loads a checkpoint whose tensors do not match its config with the
missing layers randomly initialised and a warning (which xling silences, since
it also lists heads xling never uses). Here, instead:

- :func:`read_headers` reads the safetensors headers (names, shapes, dtypes; no
  tensor data); a damaged header is one line naming the file;
- :func:`check_config` compares the config with those shapes *before anything
  is allocated*: a config declaring more blocks than any block list of the
  weights holds (say 200,000 beside a 4-layer checkpoint), or a vocabulary size
  that no embedding matrix of the weights has, is refused naming both numbers;
- :func:`check_loading_info` turns transformers' loading report into an error:
  tensors the network needs but the checkpoint lacks (missing), tensors of the
  network's own parts that it does not have (unexpected), and tensors of the
  wrong shape (mismatched) are named. Benign differences pass: a task or LM
  head of the checkpoint that the base model does not have (``lm_head``,
  ``cls``, ``classifier``, ...), and a missing BERT-style ``pooler`` (xling
  reads hidden states, never the pooled output);
- :func:`guard_token_ids` makes an id beyond the embedding matrix one line
  naming both sizes, instead of an ``IndexError`` deep inside the network.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.models.layers import num_layers

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_EMBEDDING_SUFFIXES = ("word_embeddings.weight", "embed_tokens.weight", "wte.weight", "shared.weight",
                       "tok_embeddings.weight")
#: Parts of the base model a checkpoint may lack without changing any hidden state.
_BENIGN_MISSING = ("pooler",)


def read_headers(name: str, folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{tensor name: (shape, file name)}`` of every safetensors file of ``folder`` (headers only)."""
    from safetensors import safe_open

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    out[key] = (tuple(st.get_slice(key).get_shape()), f.name)
        except Exception as exc:  # noqa: BLE001 - safetensors' own error type varies by version
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise XlingError(f"model {name}: {f} is not a readable safetensors file ({first})") from None
    return out


def block_counts(shapes: dict) -> dict[str, int]:
    """``{block-list prefix: number of blocks}`` found in the tensor names (``encoder.layer`` -> 12)."""
    counts: dict[str, int] = {}
    for key in shapes:
        m = _BLOCK.search(key)
        if m is not None:
            prefix = key[: m.start(1)]
            counts[prefix] = max(counts.get(prefix, 0), int(m.group(1)) + 1)
    return counts


def embedding_rows(shapes: dict) -> dict[str, int]:
    """``{tensor name: rows}`` of the token-embedding matrices found in the tensor names."""
    return {k: v[0][0] for k, v in shapes.items() if k.endswith(_EMBEDDING_SUFFIXES) and len(v[0]) == 2}


def check_config(name: str, config, shapes: dict) -> None:
    """Refuse a config whose block count or vocabulary no tensor of the weights supports."""
    blocks = block_counts(shapes)
    declared = num_layers(config)
    if blocks and declared > max(blocks.values()):
        prefix, found = max(blocks.items(), key=lambda kv: kv[1])
        raise XlingError(f"model {name}: config.json declares {declared} layers, but the weights hold "
                         f"{found} ({prefix.rstrip('.') or 'blocks'} 0-{found - 1}); refusing to build the missing "
                         f"layers with random weights")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    rows = embedding_rows(shapes)
    if isinstance(vocab, int) and rows and vocab not in rows.values():
        key, found = next(iter(rows.items()))
        raise XlingError(f"model {name}: config.json declares a vocabulary of {vocab} tokens, but the embedding "
                         f"matrix {key} has {found} rows")


def _few(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_loading_info(name: str, model: torch.nn.Module, info: dict, new_parts=()) -> None:
    """Raise on missing, unexpected (for the network's own parts) or mismatched tensors.

    ``new_parts``: module paths the caller builds new (a task head on a base checkpoint: ``classifier``,
    ``bert.pooler``), whose tensors may be missing from the checkpoint or of another shape there."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    own = {n.split(".", 1)[0] for n, _ in model.named_children()}
    own |= {n.split(".", 1)[0] for n in model.state_dict()}

    def top(key: str) -> str:
        if prefix and key.startswith(prefix + ".") and prefix not in own:
            key = key[len(prefix) + 1:]
        return key.split(".", 1)[0]

    parts = tuple(new_parts)

    def fresh(key: str) -> bool:
        return top(key) in _BENIGN_MISSING or any(key == p or key.startswith(p + ".") for p in parts)

    missing = [k for k in info.get("missing_keys") or () if not fresh(k)]
    unexpected = [k for k in info.get("unexpected_keys") or () if top(k) in own]
    mismatched = []
    for item in info.get("mismatched_keys") or ():
        if isinstance(item, (tuple, list)) and len(item) == 3:
            key, got, want = item
            if fresh(str(key)):
                continue
            mismatched.append(f"{key} {tuple(got)} where the config needs {tuple(want)}")
        else:
            mismatched.append(str(item))
    if missing:
        raise XlingError(f"model {name}: the checkpoint lacks {len(missing)} tensor(s) the network needs: "
                         f"{_few(missing)} (they would be random)")
    if unexpected:
        raise XlingError(f"model {name}: the checkpoint holds {len(unexpected)} tensor(s) the network does not have: "
                         f"{_few(unexpected)} (the config does not describe these weights)")
    if mismatched:
        raise XlingError(f"model {name}: {len(mismatched)} tensor(s) of the wrong shape: {_few(mismatched, 2)}")


def load_checked(name: str, auto_cls, folder, tokenizer=None, *, config=None, new_parts=None, with_info=False,
                 **kwargs):
    """``auto_cls.from_pretrained(folder, ...)`` (safetensors only) with every check above: the config against
    the weights' headers before anything is allocated, a weights file transformers cannot read as one line,
    missing, unexpected or mis-shaped tensors as one line naming them (:func:`check_loading_info`), and,
    with ``tokenizer``, the token id guard. ``new_parts(model)`` names the children built new (a task head).
    A ``ValueError`` of transformers (no such head for this model type) is left to the caller.
    ``with_info``: returns ``(model, transformers' loading report)``."""
    from transformers import AutoConfig

    folder = Path(folder)
    if config is None:
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise XlingError(f"model {name}: cannot read its config ({str(exc).splitlines()[0]})") from None
    check_config(name, config, read_headers(name, folder))
    try:
        model, info = auto_cls.from_pretrained(folder, config=config, use_safetensors=True, output_loading_info=True,
                                               ignore_mismatched_sizes=True, **kwargs)
    except (OSError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise XlingError(f"model {name}: cannot load its weights ({type(exc).__name__}: {first})") from None
    check_loading_info(name, model, info, new_parts(model) if new_parts is not None else ())
    if tokenizer is not None:
        guard_token_ids(name, model, tokenizer)
    return (model, info) if with_info else model


def guard_token_ids(name: str, model: torch.nn.Module, tokenizer) -> None:
    """An id at or beyond the embedding matrix is one line naming both sizes (a forward pre-hook)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    if emb is None or not isinstance(rows, int):
        return
    try:
        size = len(tokenizer)
    except TypeError:
        size = None

    def hook(module, args):
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and ids.numel() and not ids.is_floating_point():
            top = int(ids.max())
            if top >= rows or int(ids.min()) < 0:
                bad = top if top >= rows else int(ids.min())
                raise XlingError(f"model {name}: the tokenizer produced token id {bad}, but the embedding matrix has "
                                 f"{rows} rows (the tokenizer has {size if size is not None else '?'} tokens)")

    emb.register_forward_pre_hook(hook)

