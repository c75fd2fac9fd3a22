"""Debian packages as a data source: which exist (``apt-cache``) and their files (``apt-get download``, ``dpkg -x``).

The LibreOffice and Firefox corpora and the FreeDict word pairs come as
Debian packages; :func:`fetch_package` downloads one into
``cache_dir("debian", "debs")`` and unpacks it under
``cache_dir("debian", "root")``, once, safe under concurrent first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from xling.errors import XlingError
from xling.io import atomic_path, cache_dir, file_lock, lock_for


def require_tool(name: str) -> str:
    """The path of a Debian tool (``apt-get``, ``dpkg``); :class:`XlingError` when it is missing."""
    path = shutil.which(name)
    if not path:
        raise XlingError(
            f"{name} not found: the LibreOffice corpus downloads Debian packages and needs apt-get and dpkg "
            "(a Debian or Ubuntu system)"
        )
    return path


@lru_cache(maxsize=4)
def apt_packages(prefix: str) -> tuple[str, ...]:
    """Package names starting with ``prefix`` known to apt (empty if apt-cache is unavailable)."""
    exe = shutil.which("apt-cache")
    if not exe:
        return ()
    try:
        res = subprocess.run([exe, "pkgnames", prefix], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(sorted(n.strip() for n in res.stdout.split() if n.strip()))


def fetch_package(pkg: str) -> Path:
    """Download (``apt-get download``) and unpack (``dpkg -x``) a package; its root folder.

    Cached: the ``.deb`` in ``cache_dir("debian", "debs")``, the files under
    ``cache_dir("debian", "root") / pkg``. Raises :class:`XlingError` when
    apt-get or dpkg is missing or the package does not exist.

    Safe under concurrent first use: one process at a time fetches a package (a
    file lock), the ``.deb`` is downloaded into a private folder and renamed into
    the cache, and the tree is unpacked into a temporary folder renamed into place,
    so no reader sees a partial download or a half-unpacked tree.
    """
    debs = cache_dir("debian", "debs")
    root = cache_dir("debian", "root") / pkg
    with file_lock(lock_for(root)):
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            apt = require_tool("apt-get")
            with tempfile.TemporaryDirectory(prefix=f".{pkg}.", dir=debs) as tmp:
                res = subprocess.run([apt, "download", pkg], cwd=tmp, capture_output=True, text=True)
                got = sorted(Path(tmp).glob(f"{pkg}_*.deb"))
                if res.returncode != 0 or not got:
                    err = " ".join((res.stderr or res.stdout or "").split())
                    if "Unable to locate" in err or "has no installation candidate" in err or "No packages found" in err:
                        raise XlingError(f"Debian package {pkg} not found (is the language available? run apt-get update)")
                    raise XlingError(f"apt-get download {pkg} failed: {err[:300]}")
                for f in got:
                    os.replace(f, debs / f.name)
            have = sorted(debs.glob(f"{pkg}_*.deb"))
        deb = have[-1]
        stamp = root / ".xling-extracted"
        if not (stamp.is_file() and stamp.read_text().strip() == deb.name):
            dpkg = require_tool("dpkg")
            with atomic_path(root) as tmp:
                tmp.mkdir()
                res = subprocess.run([dpkg, "-x", str(deb), str(tmp)], capture_output=True, text=True)
                if res.returncode != 0:
                    raise XlingError(f"dpkg -x {deb.name} failed: {' '.join(res.stderr.split())[:300]}")
                (tmp / stamp.name).write_text(deb.name + "\n")
    return root


__all__ = ["apt_packages", "fetch_package", "require_tool"]
