from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lab.vm.capture import capture_file
from lab.crash.point import CrashPoint
from lab.errors import CaptureError, ConfigError, MediaBusyError
from lab.vm.media import MediaLock, create_sparse

MIB = 1024 * 1024


def test_capture_is_sparse_and_exact(tmp_path: Path) -> None:
    src = tmp_path / "nvdimm0.img"
    create_sparse(src, 64 * MIB)
    with src.open("r+b") as handle:
        handle.seek(5 * MIB)
        handle.write(b"A" * 4096)
        handle.seek(40 * MIB + 17)
        handle.write(b"tail bytes")
    cap = capture_file(src, tmp_path / "capture" / "nvdimm0.img")
    assert cap.path.read_bytes() == src.read_bytes()
    assert cap.size == 64 * MIB
    if cap.method == "sparse-copy":
        assert cap.data_bytes < MIB
        assert os.stat(cap.path).st_blocks * 512 < 4 * MIB


def test_capture_never_overwrites(tmp_path: Path) -> None:
    src = tmp_path / "a.img"
    create_sparse(src, MIB)
    dest = tmp_path / "b.img"
    dest.write_bytes(b"evidence")
    with pytest.raises(CaptureError):
        capture_file(src, dest)
    assert dest.read_bytes() == b"evidence"


def test_disk_full_leaves_no_partial_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a.img"
    create_sparse(src, MIB)
    with src.open("r+b") as handle:
        handle.write(b"x" * 4096)

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lab.vm.capture.fcntl.ioctl", full)
    monkeypatch.setattr("lab.vm.capture.os.copy_file_range", full)
    dest = tmp_path / "cap" / "a.img"
    with pytest.raises(CaptureError, match="No space left on device"):
        capture_file(src, dest)
    assert not dest.exists()


def test_crash_point_validation() -> None:
    with pytest.raises(ConfigError, match="must be below 100"):
        CrashPoint(after_ack=100).validate_for(100)
    with pytest.raises(ConfigError, match="exactly one"):
        CrashPoint()
    with pytest.raises(ConfigError, match=">= 0"):
        CrashPoint(after_ack=-1)
    CrashPoint(after_ack=99).validate_for(100)


def test_random_crash_point_is_seeded() -> None:
    a, b, c = CrashPoint.random_ack(100, 3), CrashPoint.random_ack(100, 3), CrashPoint.random_ack(100, 4)
    assert a == b and a.after_ack is not None and 0 <= a.after_ack < 100
    assert "seed 3" in a.describe()
    assert [CrashPoint.random_ack(100, s).after_ack for s in range(20)] != [a.after_ack] * 20
    assert c.seed == 4


def test_media_lock_is_exclusive(tmp_path: Path) -> None:
    media = tmp_path / "m.img"
    create_sparse(media, MIB)
    with MediaLock(media):
        with pytest.raises(MediaBusyError, match=str(media)):
            MediaLock(media).acquire()
    with MediaLock(media):  # released on exit
        pass
