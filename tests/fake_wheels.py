"""Fake PyPI wheels for offline tests of :mod:`xling.data.wheels` and what reads through it.

:func:`make_wheel` writes ``<name>-<version>-py3-none-any.whl`` (a zip with the
given data members, ``METADATA``, ``WHEEL`` and a ``RECORD`` listing each file's
``sha256=<urlsafe base64, no padding>`` and size, as pip writes them) and returns
the pinned :class:`~xling.data.wheels.Wheel` for it (with the file's real sha256).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from xling.data.wheels import Wheel


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_wheel(folder: str | Path, name: str, version: str, members: dict[str, bytes], *,
               record_override: dict[str, bytes] | None = None) -> Wheel:
    """Write a wheel holding ``members`` into ``folder``; return its pinned :class:`Wheel`.

    ``record_override`` (member -> bytes) makes RECORD list the hash of other
    bytes than the member holds (a tampered wheel).
    """
    wheel = Wheel(name, version, "0" * 64)
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files = dict(members)
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: xling-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = []
    for member, data in files.items():
        hashed = (record_override or {}).get(member, data)
        rows.append(f"{member},{record_hash(hashed)},{len(data)}")
    rows.append(f"{dist}/RECORD,,")
    path = Path(folder) / wheel.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(rows) + "\n")
    return Wheel(name, version, file_sha256(path))
