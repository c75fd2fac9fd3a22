"""Sparse fine-tuning modules (LT-SFT, Ansell et al. 2022): a sparse diff per parameter tensor.

A folder holds ``sparse_diff.safetensors`` with, for each changed parameter ``P``
of the bare base model, ``P.indices`` (flat int64 positions, sorted) and
``P.values`` (the diff at those positions), plus ``xling_sft.json`` (the same
:class:`~xling.modules.meta.ModuleMeta` as LoRA modules, ``extra.type = "lt-sft"``).
Sparse modules compose by addition: ``theta = theta0 + sum_m c_m diff_m``, alone or
together with LoRA modules (``xling compose --as merged``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.modules.meta import ModuleMeta, check_weights, load_json_file

SFT_FILE = "sparse_diff.safetensors"
SFT_META = "xling_sft.json"


def is_sparse_module(folder: str | Path) -> bool:
    return (Path(folder) / SFT_FILE).is_file()


class SparseModule:
    """A sparse module read lazily: the index at once, tensors on demand.

    ``targets`` is empty (no LoRA factors), so LoRA composition code skips it;
    ``tensors`` maps parameter name -> number of entries.
    """

    targets: dict = {}

    def __init__(self, folder: str | Path, name: str | None = None):
        from safetensors import safe_open

        self.path = Path(folder)
        f = self.path / SFT_FILE
        if not f.is_file():
            raise XlingError(f"sparse module {self.path}: no {SFT_FILE}")
        self.meta: ModuleMeta | None = None
        mpath = self.path / SFT_META
        if mpath.is_file():
            self.meta = ModuleMeta.from_dict(load_json_file(mpath), str(mpath))
        check_weights(self.path, self.meta, SFT_META)
        self.name = name or (self.meta.name if self.meta and self.meta.name else self.path.name)
        self.targets = {}
        try:
            self._fh = safe_open(str(f), framework="pt")
        except Exception as exc:
            raise XlingError(f"sparse module {self.path}: cannot read {SFT_FILE} ({type(exc).__name__}: {exc})") from None
        keys = set(self._fh.keys())
        self.tensors: dict[str, int] = {}
        for k in sorted(keys):
            if k.endswith(".indices"):
                p = k[: -len(".indices")]
                if f"{p}.values" not in keys:
                    raise XlingError(f"sparse module {self.path}: {p} has indices but no values")
                n_i = self._fh.get_slice(k).get_shape()
                n_v = self._fh.get_slice(f"{p}.values").get_shape()
                if len(n_i) != 1 or n_i != n_v:
                    raise XlingError(f"sparse module {self.path}: {p} has {n_i} indices but {n_v} values")
                self.tensors[p] = int(n_i[0])
            elif not k.endswith(".values"):
                raise XlingError(f"sparse module {self.path}: unexpected tensor {k}")
            elif f"{k[: -len('.values')]}.indices" not in keys:
                raise XlingError(f"sparse module {self.path}: {k} has no indices")
        if not self.tensors:
            raise XlingError(f"sparse module {self.path} holds no entries")

    def entries(self, name: str, numel: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat indices, float32 values) of one parameter; checked finite and in range."""
        idx = self._fh.get_tensor(f"{name}.indices").long()
        val = self._fh.get_tensor(f"{name}.values")
        if not bool(torch.isfinite(val).all()):
            raise XlingError(f"sparse module {self.path}: {name} has NaN or inf values")
        if numel is not None and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
            raise XlingError(f"sparse module {self.path}: {name} indexes past its {numel} entries (another base?)")
        return idx, val.double() if val.dtype == torch.float64 else val.float()

    def dense(self, name: str, shape) -> torch.Tensor:
        numel = math.prod(shape)
        idx, val = self.entries(name, numel)
        return torch.zeros(numel, dtype=val.dtype).index_add_(0, idx, val).view(*shape)

    @property
    def num_entries(self) -> int:
        return sum(self.tensors.values())

    @property
    def base_fingerprint(self) -> str | None:
        return self.meta.base_fingerprint if self.meta else None

    @property
    def base_model(self) -> str | None:
        return self.meta.base_model if self.meta else None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"SparseModule({self.name!r}, tensors={len(self.tensors)}, entries={self.num_entries})"


def param_key(name: str, keys: set[str]) -> str | None:
    """The weight named ``name`` (bare base name) among ``keys`` (maybe saved with a prefix)."""
    if name in keys:
        return name
    hits = [k for k in keys if k.endswith("." + name)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise XlingError(f"sparse entry {name} matches several weights ({', '.join(sorted(hits)[:3])})")
    return None


def summarize_sparse(folder: str | Path, name: str | None = None, *, with_hash: bool = False) -> dict:
    from xling.io import sha256_file

    m = SparseModule(folder, name)
    row = {
        "name": m.name, "path": str(m.path), "type": "lt-sft",
        "kind": m.meta.kind if m.meta else None,
        "language": m.meta.language if m.meta else None,
        "task": m.meta.task if m.meta else None,
        "base_model": m.base_model, "base_fingerprint": m.base_fingerprint,
        "ranks": [], "targets": len(m.tensors), "params": m.num_entries,
        "meta": m.meta.to_dict() if m.meta else None,
    }
    if with_hash:
        row["sha256"] = sha256_file(m.path / SFT_FILE)
    return row


__all__ = ["SparseModule", "SFT_FILE", "SFT_META", "is_sparse_module", "param_key", "summarize_sparse"]
