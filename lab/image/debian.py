"""Debian kernel packages: resolve, download (apt-get download), unpack (dpkg -x).

Nothing is installed on the host: the .deb is unpacked into the cache.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ImageError
from lab.image.libdeps import which


@dataclass(frozen=True)
class DebianKernel:
    package: str  # linux-image-6.1.0-NN-amd64
    version: str  # 6.1.NNN-1

    @property
    def key(self) -> str:
        return f"{self.package}_{self.version}"


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} not found: the image builder needs apt and dpkg (Debian/Ubuntu host)") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def resolve_kernel(meta_package: str) -> DebianKernel:
    """The concrete kernel package a meta package (linux-image-amd64) depends on."""
    deps = _run(["apt-cache", "depends", meta_package])
    match = re.search(r"Depends:\s+(linux-image-\S+)", deps)
    if not match:
        if meta_package.startswith("linux-image-") and re.search(r"\d", meta_package):
            package = meta_package  # already concrete
        else:
            raise ImageError(f"apt-cache knows no kernel behind {meta_package!r}: run 'apt-get update'")
    else:
        package = match.group(1)
    policy = _run(["apt-cache", "policy", package])
    cand = re.search(r"Candidate:\s+(\S+)", policy)
    if not cand or cand.group(1) == "(none)":
        raise ImageError(f"apt has no candidate version of {package}: run 'apt-get update'")
    return DebianKernel(package, cand.group(1))


def download(kernel: DebianKernel, downloads: Path) -> Path:
    """The kernel .deb in the download cache, fetched once."""
    downloads.mkdir(parents=True, exist_ok=True)
    for existing in downloads.glob(f"{kernel.package}_*.deb"):
        if existing.name.startswith(f"{kernel.package}_{kernel.version.replace(':', '%3a')}_"):
            return existing
    tmp = downloads / f".tmp-{kernel.key}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _run(["apt-get", "download", f"{kernel.package}={kernel.version}"], cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise ImageError(f"apt-get download {kernel.package} gave {len(debs)} files, expected one")
        final = downloads / debs[0].name
        debs[0].rename(final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack(deb: Path, kernels: Path, key: str) -> Path:
    """The unpacked package tree (with modules.dep made by depmod), made once."""
    target = kernels / key
    if (target / ".complete").exists():
        return target
    tmp = kernels / f".tmp-{key}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        for moddir in (tmp / "lib" / "modules").iterdir():
            _run([str(which("depmod")), "-b", str(tmp), moddir.name])  # /usr/sbin: not on a user's PATH
        (tmp / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
