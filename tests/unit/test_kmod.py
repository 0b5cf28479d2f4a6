from __future__ import annotations

import pytest

from lab.errors import ImageError
from lab.image.kmod import ModuleIndex, module_name

DEP = """\
kernel/drivers/acpi/nfit/nfit.ko: kernel/drivers/nvdimm/libnvdimm.ko
kernel/drivers/nvdimm/nd_pmem.ko: kernel/drivers/nvdimm/nd_btt.ko kernel/drivers/nvdimm/libnvdimm.ko
kernel/drivers/nvdimm/nd_btt.ko: kernel/drivers/nvdimm/libnvdimm.ko
kernel/drivers/nvdimm/libnvdimm.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
"""
BUILTIN = "kernel/drivers/char/virtio_console.ko\nkernel/fs/dax.ko\n"


def index() -> ModuleIndex:
    return ModuleIndex.parse(DEP, BUILTIN)


def test_module_name_normalises_dashes_and_suffixes() -> None:
    assert module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz") == "crc32c_intel"
    assert module_name("a/b/nd_pmem.ko") == "nd_pmem"


def test_dependencies_come_first_and_once() -> None:
    got = index().resolve(["nd_pmem", "nfit"])
    assert got == [
        "kernel/drivers/nvdimm/libnvdimm.ko",
        "kernel/drivers/nvdimm/nd_btt.ko",
        "kernel/drivers/nvdimm/nd_pmem.ko",
        "kernel/drivers/acpi/nfit/nfit.ko",
    ]


def test_dash_or_underscore_names_both_resolve() -> None:
    assert index().resolve(["crc32c-intel"]) == ["kernel/arch/x86/crypto/crc32c-intel.ko.xz"]


def test_builtin_needs_no_file() -> None:
    assert index().resolve(["virtio_console"]) == []
    assert index().load_order(["virtio_console", "ext4"]) == ["ext4"]


def test_unknown_module_is_refused_by_name() -> None:
    with pytest.raises(ImageError, match="'nosuch'"):
        index().resolve(["nosuch"])


def test_cycle_is_reported() -> None:
    cyclic = ModuleIndex.parse("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(ImageError, match="cycle"):
        cyclic.resolve(["a"])


def test_malformed_line_names_the_line() -> None:
    with pytest.raises(ImageError, match="line 2"):
        ModuleIndex.parse("a.ko:\ngarbage\n")
