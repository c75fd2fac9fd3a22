"""Tensor-by-tensor access to model folders, and a streaming safetensors writer.

:class:`ModelWeights` reads a model folder's safetensors (one file or a sharded
index) from their headers: names, shapes and dtypes at once, each tensor's bytes
only when asked for, with a plain ``readinto`` into a fresh tensor (no memory
map, so resident memory is exactly the tensors alive). :class:`ShardWriter`
knows every output tensor's shape and dtype up front (a merge mirrors its base),
so it writes each shard's header first and then each tensor's bytes as soon as
the tensor is computed: nothing is buffered, and a merge holds only the few
tensors being combined, whatever the model's size.

The safetensors layout: an 8-byte little-endian header length ``n``, ``n`` bytes
of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
padded with spaces), then the tensors' bytes, contiguous, little-endian.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Sequence

import torch

from xling.errors import XlingError
from xling.methods.compose import all_finite

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
INDEX_FILE = "model.safetensors.index.json"

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _code, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                     ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        _ST_DTYPES[_code] = getattr(torch, _attr)
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 << 20


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """(tensor entries, byte offset of the data section) of a safetensors file, validated."""
    if sys.byteorder != "little":  # safetensors data is little-endian; raw reads assume the same
        raise XlingError("reading safetensors tensor by tensor needs a little-endian machine")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise XlingError(f"{path} is not a safetensors file (too short)")
        n = struct.unpack("<Q", raw)[0]
        if n > min(_MAX_HEADER, size - 8):
            raise XlingError(f"{path} is not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise XlingError(f"{path} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise XlingError(f"{path} is not a safetensors file (header is not a JSON object)")
    header.pop("__metadata__", None)
    data = 8 + n
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise XlingError(f"{path}: malformed header entry for {name}") from None
        if dtype not in _ST_DTYPES:
            raise XlingError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        nbytes = _numel(shape) * torch.empty(0, dtype=_ST_DTYPES[dtype]).element_size()
        if end - begin != nbytes or begin < 0 or data + end > size:
            raise XlingError(f"{path}: tensor {name} has inconsistent offsets (truncated or corrupt file)")
    return header, data


def resolve_model_folder(name: str | Path) -> Path:
    """A local model folder for ``name`` (see :func:`xling.models.loading.model_folder`)."""
    from xling.models.loading import model_folder

    return Path(model_folder(str(name)))


class ModelWeights:
    """Lazy view of the safetensors weights of a model folder (context manager)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise XlingError(f"model folder not found: {self.folder}")
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise XlingError(f"{index} is not a valid safetensors index ({exc})") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
            weight_map = None
        if not files:
            raise XlingError(f"{self.folder} has no .safetensors weights (xling never loads pickled weights)")
        self._entries: dict[str, tuple[str, int, int, tuple[int, ...], str]] = {}
        for f in files:
            path = self.folder / f
            if not path.is_file():
                raise XlingError(f"{self.folder}: weight file {f} is missing")
            header, data = read_header(path)
            for k, info in header.items():
                if weight_map is not None and weight_map.get(k) != f:
                    continue
                if k in self._entries:
                    raise XlingError(f"{self.folder}: tensor {k} appears in two weight files")
                begin, end = info["data_offsets"]
                self._entries[k] = (f, data + begin, end - begin, tuple(info["shape"]), info["dtype"])
        if weight_map is not None:
            missing = [k for k in weight_map if k not in self._entries]
            if missing:
                raise XlingError(f"{self.folder}: tensor {missing[0]} listed in the index is missing")
        self._handles: dict[str, object] = {}

    def __enter__(self) -> "ModelWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][3]

    def dtype(self, name: str) -> torch.dtype:
        return _ST_DTYPES[self._entries[name][4]]

    def plan(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(name, shape, dtype) of every tensor, in file order: the layout of a merged copy."""
        return [(k, e[3], _ST_DTYPES[e[4]]) for k, e in self._entries.items()]

    def get(self, name: str, *, check_finite: bool = False) -> torch.Tensor:
        """Read one tensor into fresh memory."""
        try:
            f, offset, nbytes, shape, code = self._entries[name]
        except KeyError:
            raise XlingError(f"{self.folder}: no tensor {name}") from None
        fh = self._handles.get(f)
        if fh is None:
            fh = self._handles[f] = open(self.folder / f, "rb")
        buf = torch.empty(nbytes, dtype=torch.uint8)
        fh.seek(offset)
        if nbytes and fh.readinto(memoryview(buf.numpy())) != nbytes:
            raise XlingError(f"{self.folder}/{f}: tensor {name} is truncated")
        t = buf.view(_ST_DTYPES[code]).reshape(shape)
        if check_finite and not all_finite(t):
            raise XlingError(f"{self.folder}: tensor {name} has NaN or inf values")
        return t


class ShardWriter:
    """Write a model whose tensors (names, shapes, dtypes, order) are known up front, shard by shard.

    ``plan``: ``[(name, shape, dtype), ...]``; :meth:`add` must then be called
    with those tensors in that order. A shard holds consecutive tensors up to
    ``max_shard_bytes`` (a larger tensor gets a shard of its own). One shard is
    written as ``model.safetensors``; several as ``model-0000i-of-0000N.safetensors``
    with ``model.safetensors.index.json``. Nothing is buffered in memory.
    """

    def __init__(self, folder: str | Path, plan: Sequence[tuple[str, Sequence[int], torch.dtype]],
                 max_shard_bytes: int = 2 << 30):
        if max_shard_bytes < 1:
            raise XlingError(f"shard size must be positive, got {max_shard_bytes}")
        if not plan:
            raise XlingError("nothing to write: the model has no tensors")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        shards: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = [[]]
        size = 0
        for name, shape, dtype in plan:
            if dtype not in _ST_CODES:
                raise XlingError(f"cannot write tensor {name} of dtype {dtype}")
            nbytes = _numel(shape) * torch.empty(0, dtype=dtype).element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, tuple(int(d) for d in shape), dtype, nbytes))
            size += nbytes
        n = len(shards)
        self.files = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors"
                                                           for i in range(1, n + 1)]
        self._shards = shards
        self._queue = [(i, *entry) for i, shard in enumerate(shards) for entry in shard]
        self.total_bytes = sum(entry[4] for entry in self._queue)
        self._pos = 0
        self._fh = None
        self._current = -1

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_shard(self, i: int) -> None:
        self.close()
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype, nbytes in self._shards[i]:
            header[name] = {"dtype": _ST_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._fh = open(self.folder / self.files[i], "wb")
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)
        self._current = i

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self._pos >= len(self._queue):
            raise ValueError(f"tensor {name} is not in the plan (all tensors written)")
        shard, want, shape, dtype, nbytes = self._queue[self._pos]
        if name != want or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise ValueError(f"expected {want} {shape} {dtype}, got {name} {tuple(tensor.shape)} {tensor.dtype}")
        if shard != self._current:
            self._open_shard(shard)
        if nbytes:
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            self._fh.write(memoryview(data.numpy()))
        self._pos += 1

    def finish(self) -> list[str]:
        """Close the last shard and write the index (several shards); returns the file names."""
        if self._pos != len(self._queue):
            raise ValueError(f"{len(self._queue) - self._pos} planned tensors were not written")
        self.close()
        if len(self.files) > 1:
            weight_map = {name: self.files[i] for i, shard in enumerate(self._shards) for name, *_ in shard}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return list(self.files)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def parse_size(value: str | int) -> int:
    """``"2GB"``, ``"500MB"``, ``"1GiB"`` or a byte count."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise XlingError(f"invalid size '{value}' (use e.g. 2GB, 500MB or a byte count)")
    num, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    base = 1024 if binary else 1000
    return int(num * base ** " KMGT".index(unit or " "))


def copy_model_files(src: Path, dst: Path) -> None:
    """Copy a model folder's non-weight files (config, tokenizer, generation config) into ``dst``."""
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name.endswith(WEIGHT_SUFFIXES) or p.name.endswith(".index.json"):
            continue
        if p.name.startswith(".") or p.name in ("xling_module.json", "xling_merge.json"):
            continue
        shutil.copy2(p, dst / p.name)


def block_path_of(folder: str | Path) -> tuple[str, int]:
    """(dotted path of the transformer block list, number of blocks) of a model folder.

    Built on the meta device (no memory, no weights) and located with
    :func:`xling.models.layers.find_blocks`, so any architecture transformers knows works.
    """
    from transformers import AutoConfig, AutoModel

    from xling.models.layers import find_blocks, num_layers

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise XlingError(f"model folder {folder}: cannot read its config ({str(exc).splitlines()[0]})") from None
    n = num_layers(config)
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except Exception as exc:
        raise XlingError(f"model folder {folder}: cannot build {config.model_type} to find its layers "
                         f"({type(exc).__name__})") from None
    return find_blocks(model, n).path, n


def infer_block_path(names: list[str]) -> str | None:
    """Guess the block list path from tensor/module names: the commonest prefix before ``.<int>.``."""
    counts: dict[str, int] = {}
    for name in names:
        m = re.search(r"^(.*?)\.\d+(?:\.|$)", name)
        if m:
            prefix = m.group(1)
            counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: kv[1])[0]
