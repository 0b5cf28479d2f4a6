from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lab.errors import ConfigError, ImageError, KernelConfigError
from lab.image.kconfig import check_config, missing_options, parse_config
from lab.image.kernel import bzimage_version
from lab.image.libdeps import guest_path, parse_ldd
from lab.image.recipe import load_recipe
from lab.paths import images_dir


def test_shipped_recipe_is_valid() -> None:
    recipe, raw = load_recipe(images_dir() / "debian12-pmem.toml")
    assert recipe.name == "debian12-pmem"
    assert "nd_pmem" in recipe.modules.load
    assert "pmemlab-agent" in recipe.guest.programs
    assert raw.startswith(b"#")


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('name = "x"\n[userland]\nbinaries = []\nbinarys = []\n[guest]\ninit = "i"\n')
    with pytest.raises(ConfigError) as err:
        load_recipe(bad)
    assert f"{bad}: field 'userland.binarys': Extra inputs are not permitted" in str(err.value)


def test_wrong_type_and_missing_section(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('name = "x"\n[userland]\nbinaries = "busybox"\n')
    message = str(pytest.raises(ConfigError, load_recipe, bad).value)
    assert "field 'userland.binaries': Input should be a valid list" in message
    assert "field 'guest': Field required" in message


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)


CONFIG = """\
CONFIG_FS_DAX=y
CONFIG_LIBNVDIMM=m
CONFIG_BLK_DEV_PMEM=m
# CONFIG_ACPI_NFIT is not set
CONFIG_LOCALVERSION="-test"
"""


def test_parse_config() -> None:
    options = parse_config(CONFIG)
    assert options["FS_DAX"] == "y" and options["ACPI_NFIT"] == "n" and options["LOCALVERSION"] == "-test"
    assert missing_options(options) == ["ACPI_NFIT"]


def test_kernel_without_nfit_is_refused_with_reason(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text(CONFIG)
    with pytest.raises(KernelConfigError, match=r"CONFIG_ACPI_NFIT \(discovering QEMU's emulated NVDIMMs"):
        check_config(config)


def test_bzimage_version_from_setup_header(tmp_path: Path) -> None:
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x300)
    text = b"6.12.0-rc1-dax (dev@host) #1 SMP\0"
    data[0x500:0x500 + len(text)] = text
    image = tmp_path / "bzImage"
    image.write_bytes(bytes(data))
    assert bzimage_version(image) == "6.12.0-rc1-dax"


def test_not_a_bzimage(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError, match="not a bzImage"):
        bzimage_version(junk)


def test_ldd_parsing_and_guest_paths() -> None:
    out = ("\tlinux-vdso.so.1 (0x00007ffd)\n"
           "\tlibkmod.so.2 => /lib/x86_64-linux-gnu/libkmod.so.2 (0x00007f01)\n"
           "\t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n")
    libs = parse_ldd(out)
    assert [str(p) for p in libs] == ["/lib/x86_64-linux-gnu/libkmod.so.2", "/lib64/ld-linux-x86-64.so.2"]
    assert guest_path(libs[0]) == "usr/lib/x86_64-linux-gnu/libkmod.so.2"
    assert guest_path(libs[1]) == "usr/lib64/ld-linux-x86-64.so.2"
    with pytest.raises(ImageError, match="missing"):
        parse_ldd("\tlibfoo.so => not found\n")
