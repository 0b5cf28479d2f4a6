"""The kernel an image is built around: Debian's package or the user's own."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ImageError
from lab.image import debian
from lab.image.kconfig import check_config


@dataclass(frozen=True)
class KernelFiles:
    vmlinuz: Path
    version: str  # the release string, as in /lib/modules/VERSION
    moddir: Path | None  # .../lib/modules/VERSION, None for a kernel without modules
    config: Path | None
    identity: str  # what makes this kernel this kernel, for the image id
    source: str  # "debian:PKG=VER" or "user:PATH"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bzimage_version(path: Path) -> str:
    """The release string from a bzImage's setup header (boot protocol >= 2.00)."""
    data = path.read_bytes()[:0x10000]
    if len(data) < 0x210 or data[0x202:0x206] != b"HdrS":
        raise ImageError(f"{path} is not a bzImage (no 'HdrS' setup header)")
    (offset,) = struct.unpack_from("<H", data, 0x20E)
    start = 0x200 + offset
    text = data[start:start + 256].split(b"\0", 1)[0].decode(errors="replace")
    if not text:
        raise ImageError(f"{path}: the setup header carries no version string")
    return text.split()[0]


def debian_kernel(meta_package: str, cache: Path) -> KernelFiles:
    """Resolve, fetch and unpack Debian's kernel (each step done once)."""
    kernel = debian.resolve_kernel(meta_package)
    deb = debian.download(kernel, cache / "downloads")
    tree = debian.unpack(deb, cache / "kernels", kernel.key)
    vmlinuz = next((tree / "boot").glob("vmlinuz-*"), None)
    if vmlinuz is None:
        raise ImageError(f"{deb.name} holds no boot/vmlinuz-*")
    version = vmlinuz.name[len("vmlinuz-"):]
    config = tree / "boot" / f"config-{version}"
    return KernelFiles(vmlinuz, version, tree / "lib" / "modules" / version,
                       config if config.is_file() else None,
                       identity=f"debian:{kernel.key}", source=f"debian:{kernel.package}={kernel.version}")


def user_kernel(bzimage: Path, modules: Path | None, config: Path | None) -> KernelFiles:
    """A kernel from a bug report: bzImage, optional modules tree and config."""
    if not bzimage.is_file():
        raise ImageError(f"--kernel {bzimage}: no such file")
    version = bzimage_version(bzimage)
    moddir = None
    if modules is not None:
        for candidate in (modules / "lib" / "modules" / version, modules / version, modules):
            if (candidate / "modules.dep").is_file() or (candidate / "modules.order").is_file():
                moddir = candidate
                break
        if moddir is None:
            raise ImageError(f"--modules {modules}: no modules tree for {version} "
                             f"(expected lib/modules/{version}/ as 'make modules_install INSTALL_MOD_PATH=' makes)")
    if config is None:
        # Where a kernel build tree or modules_install leaves it.
        places: list[Path | None] = [
            bzimage.parent / ".config",
            bzimage.parents[3] / ".config" if len(bzimage.parents) > 3 else None,  # arch/x86/boot/bzImage
            bzimage.parent / f"config-{version}",
            moddir / "build" / ".config" if moddir else None,
        ]
        for place in places:
            if place is not None and place.is_file():
                config = place
                break
    identity = hashlib.sha256()
    identity.update(file_sha256(bzimage).encode())
    if config is not None:
        identity.update(file_sha256(config).encode())
    if moddir is not None:
        for path in sorted(moddir.rglob("*.ko*")):
            stat = path.stat()
            identity.update(f"{path.relative_to(moddir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return KernelFiles(bzimage, version, moddir, config, identity=f"user:{identity.hexdigest()}",
                       source=f"user:{bzimage}")


def check_kernel(kernel: KernelFiles) -> dict[str, str] | None:
    """Refuse a kernel lacking what the lab needs; None when no config is available."""
    if kernel.config is None:
        return None
    return check_config(kernel.config)
