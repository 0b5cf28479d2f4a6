"""A user's own kernel (bzImage + modules tree + config), as bug reports bring them.

Debian's unpacked kernel stands in for a user's build: the same files a
`make bzImage modules_install INSTALL_MOD_PATH=...` would leave.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import KernelConfigError
from lab.image.builder import build
from lab.image.cache import Image
from lab.image.kernel import user_kernel
from lab.paths import cache_dir, images_dir


def _debian_tree(image: Image) -> Path:
    source = str(image.manifest["kernel_source"])  # debian:PKG=VERSION
    package, _, version = source.removeprefix("debian:").partition("=")
    return cache_dir() / "kernels" / f"{package}_{version}"


def test_user_kernel_builds_its_own_image(image: Image, tmp_path: Path) -> None:
    tree = _debian_tree(image)
    bzimage = tree / "boot" / f"vmlinuz-{image.kernel_version}"
    kernel = user_kernel(bzimage, tree, tree / "boot" / f"config-{image.kernel_version}")
    assert kernel.version == image.kernel_version
    result = build(images_dir() / "debian12-pmem.toml", tmp_path / "cache", kernel=kernel)
    assert result.built and result.image.manifest["kernel_source"].startswith("user:")
    assert result.image.id != image.id  # a different kernel identity is a different image
    again = build(images_dir() / "debian12-pmem.toml", tmp_path / "cache", kernel=kernel)
    assert not again.built and again.image.id == result.image.id  # nothing changed: no work


def test_kernel_without_nfit_is_refused(image: Image, tmp_path: Path) -> None:
    tree = _debian_tree(image)
    config = tmp_path / ".config"
    text = (tree / "boot" / f"config-{image.kernel_version}").read_text()
    config.write_text(text.replace("CONFIG_ACPI_NFIT=m", "# CONFIG_ACPI_NFIT is not set"))
    kernel = user_kernel(tree / "boot" / f"vmlinuz-{image.kernel_version}", tree, config)
    with pytest.raises(KernelConfigError, match="CONFIG_ACPI_NFIT"):
        build(images_dir() / "debian12-pmem.toml", tmp_path / "cache", kernel=kernel)
    assert not (tmp_path / "cache" / "images").exists() or not [
        p for p in (tmp_path / "cache" / "images").iterdir() if not p.name.startswith(".")]
