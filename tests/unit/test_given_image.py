"""`pmemlab check`: what a given file is, told from its bytes; bad input is a verdict and one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cli import cli
from lab.crash.given_image import (BadImage, ImageCheck, ImageFormat, inspect_image, parse_indices)
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.vm.boot import MachineShape

MIB = 1 << 20


def capture(path: Path, size: int = 64 * MIB, fs: bytes | None = b"ext4", dataoff: int = 2 * MIB,
            signature: bytes = b"NVDIMM_PFN_INFO\0") -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        f.seek(4096)
        f.write(signature + b"\0" * 40 + struct.pack("<Q", dataoff))
        if fs == b"ext4":
            f.seek(dataoff + 1080)
            f.write(b"\x53\xef")
        elif fs == b"xfs":
            f.seek(dataoff)
            f.write(b"XFSB")
    return path


def raw(path: Path, fs: str, size: int = 3 * MIB + 5) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        if fs == "ext4":
            f.seek(1080)
            f.write(b"\x53\xef")
        else:
            f.write(b"XFSB")
    return path


def test_a_kept_capture(tmp_path: Path) -> None:
    given = inspect_image(capture(tmp_path / "c.img"), Filesystem.EXT4)
    assert (given.format, given.fs_found, given.data_offset, given.nvdimm_size) == \
        (ImageFormat.CAPTURE, Filesystem.EXT4, 2 * MIB, 64 * MIB)
    check = ImageCheck(given, Filesystem.EXT4)
    assert check.dax is DaxMode.ALWAYS and check.shape.nvdimm_size == 64 * MIB


def test_a_raw_image_rides_a_default_sized_raw_namespace(tmp_path: Path) -> None:
    given = inspect_image(raw(tmp_path / "r.img", "xfs"), Filesystem.XFS)
    assert (given.format, given.fs_found) == (ImageFormat.RAW_FS, Filesystem.XFS)
    assert given.nvdimm_size == MachineShape().nvdimm_size
    check = ImageCheck(given, Filesystem.XFS)
    assert check.dax is DaxMode.NEVER  # a raw namespace has no DAX
    big = inspect_image(raw(tmp_path / "big.img", "ext4", size=(1 << 30) + 1), Filesystem.EXT4)
    assert big.nvdimm_size == (1 << 30) + 2 * MIB


@pytest.mark.parametrize(("make", "fs", "reason"), [
    (lambda p: capture(p, fs=b"xfs"), "ext4", "the capture holds xfs, not ext4 (pass --fs xfs)"),
    (lambda p: raw(p, "ext4"), "xfs", "the raw-fs holds ext4, not xfs (pass --fs ext4)"),
    (lambda p: capture(p, size=64 * MIB + 4096), "ext4", "a kept capture is a whole NVDIMM backing file, a multiple "
     "of 2 MiB and at least 64 MiB; this one is 67112960 bytes"),
    (lambda p: capture(p, fs=None, dataoff=1 << 40), "ext4", "its fsdax info block gives data offset 1099511627776, outside"),
    (lambda p: capture(p, signature=b"NVDIMM_DAX_INFO\0"), "ext4", "a devdax namespace"),
    (lambda p: p.write_bytes(b"hello" * 1000), "ext4", "neither a kept capture (no fsdax info block at 4 KiB) nor "
     "an ext4/XFS image"),
    (lambda p: p.write_bytes(b""), "xfs", "neither a kept capture"),
    (lambda p: p.mkdir(), "xfs", "not a regular file"),
    (lambda p: None, "xfs", "cannot read it: No such file or directory"),
])
def test_bad_input_is_one_line(tmp_path: Path, make, fs: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "given.img"
    make(path)
    with pytest.raises(BadImage) as caught:
        inspect_image(path, Filesystem(fs))
    assert str(caught.value).startswith(f"{path}: ") and reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_durable_indices() -> None:
    assert parse_indices("0-3,7, 9-10") == [0, 1, 2, 3, 7, 9, 10]
    assert parse_indices("5") == [5] and parse_indices("") == []
    for bad in ("3-1", "a", "1-", "-2"):
        with pytest.raises(ConfigError, match="--durable"):
            parse_indices(bad)


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "300")
    return CliRunner()


def test_cli_bad_input_is_a_verdict_before_any_machine(runner: CliRunner, tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"x" * 9000)
    result = runner.invoke(cli, ["check", str(junk), "--fs", "ext4"])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"INFRA-ERROR: {junk}: neither a kept capture")
    result = runner.invoke(cli, ["check", str(junk), "--fs", "xfs", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["verdict"] == "INFRA-ERROR"


def test_cli_layout_and_durable_go_together(runner: CliRunner, tmp_path: Path) -> None:
    given = capture(tmp_path / "c.img")
    result = runner.invoke(cli, ["check", str(given), "--fs", "ext4", "--layout", "mapsync"])
    assert result.exit_code == 2 and "--layout and --durable go together" in result.output
    result = runner.invoke(cli, ["check", str(given), "--fs", "ext4", "--layout", "mapsync", "--records", "10",
                                 "--durable", "0-10"])
    assert result.exit_code == 2 and "record 10 is beyond --records 10" in result.output
