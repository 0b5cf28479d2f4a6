"""The record format, byte for byte, and the record checker."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from lab.oracles.persistence import check_persistence
from lab.oracles.records import (
    FNV_OFFSET_BASIS,
    RecordLayout,
    RecordState,
    build_record,
    check_record,
    fnv1a64,
    inspect_record,
)
from tests.unit.helpers import GuestProgram


def _reference_record(i: int, b: int, r: int) -> bytes:
    """A second, naive implementation straight from the spec."""
    offset = (i // r) * 4096 + (i % r) * b
    out = bytearray(b)
    out[0:8] = b"PMEMREC1"
    out[8:16] = i.to_bytes(8, "little")
    out[16:24] = offset.to_bytes(8, "little")
    out[24:28] = b.to_bytes(4, "little")
    for j in range(32, b - 8):
        out[j] = (i * 131 + j) & 0xFF
    h = 0xCBF29CE484222325
    for byte in out[:b - 8]:
        h ^= byte
        h = (h * 0x100000001B3) % 2**64
    out[b - 8:] = h.to_bytes(8, "little")
    return bytes(out)


def test_fnv1a64_known_vectors() -> None:
    assert fnv1a64(b"") == FNV_OFFSET_BASIS
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


@pytest.mark.parametrize(("b", "r"), [(64, 1), (64, 64), (256, 16), (256, 3), (4096, 1), (1000, 4)])
@pytest.mark.parametrize("i", [0, 1, 2, 5, 63, 64, 255, 256, 1000])
def test_build_matches_reference(i: int, b: int, r: int) -> None:
    layout = RecordLayout(b, r)
    record = build_record(i, layout)
    assert len(record) == b
    assert record == _reference_record(i, b, r)


def test_golden_record_bytes() -> None:
    # Pinned so the guest C helper can be checked against the same bytes.
    record = build_record(3, RecordLayout(64, 2))  # offset 4096 + 64 = 0x1040
    assert record.hex() == (
        "504d454d52454331" "0300000000000000" "4010000000000000" "4000000000000000"
        "a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0"  # (3*131 + 32) & 0xff = 0xa9
        "82c3ec9f23f92958")
    assert struct.unpack_from("<Q", record, 56)[0] == fnv1a64(record[:56])


def test_offsets() -> None:
    layout = RecordLayout(256, 16)
    assert [layout.offset(i) for i in (0, 1, 15, 16, 17)] == [0, 256, 3840, 4096, 4352]
    three = RecordLayout(1000, 3)  # leaves a gap at the end of each page
    assert [three.offset(i) for i in (0, 2, 3, 4)] == [0, 2000, 4096, 5096]
    assert three.end(2) == 3000
    assert three.records_in(4096 + 1999) == 4
    assert three.records_in(0) == 0
    assert RecordLayout.packed(64).records_per_page == 64
    assert RecordLayout.packed(1000).records_per_page == 4
    with pytest.raises(ValueError):
        layout.offset(-1)


@pytest.mark.parametrize(("b", "r"), [(63, 1), (72 - 4, 1), (32, 1), (4104, 1), (64, 0), (2048, 3), (64, 65)])
def test_bad_layouts(b: int, r: int) -> None:
    with pytest.raises(ValueError):
        RecordLayout(b, r)


def _file(layout: RecordLayout, n: int) -> bytearray:
    data = bytearray(layout.offset(n - 1) + layout.record_size)
    for i in range(n):
        data[layout.offset(i):layout.end(i)] = build_record(i, layout)
    return data


LAYOUT = RecordLayout(128, 4)


def test_intact_and_missing() -> None:
    data = _file(LAYOUT, 6)
    assert [check_record(bytes(data), i, LAYOUT) for i in range(6)] == [RecordState.INTACT] * 6
    data[LAYOUT.offset(2):LAYOUT.end(2)] = bytes(128)
    assert check_record(bytes(data), 2, LAYOUT) is RecordState.MISSING
    assert inspect_record(bytes(data), 2, LAYOUT).reason == "all bytes zero"


def test_short() -> None:
    data = bytes(_file(LAYOUT, 6))
    assert check_record(data, 6, LAYOUT) is RecordState.SHORT
    assert check_record(data[:LAYOUT.end(5) - 1], 5, LAYOUT) is RecordState.SHORT
    assert "file is" in inspect_record(data[:10], 5, LAYOUT).reason


@pytest.mark.parametrize(("at", "field"), [
    (0, "bad magic"), (8, "seq"), (16, "offset field"), (24, "size field"),
    (28, "reserved field"), (40, "fill mismatch at 1 byte(s), first at record byte 40"),
    (120, "checksum"),
])
def test_corrupt_names_the_field(at: int, field: str) -> None:
    data = _file(LAYOUT, 3)
    data[LAYOUT.offset(1) + at] ^= 0x01
    check = inspect_record(bytes(data), 1, LAYOUT)
    assert check.state is RecordState.CORRUPT
    assert field in check.reason
    if at < 120:  # any change to the covered bytes also breaks the checksum
        assert "checksum" in check.reason


def test_torn_record_is_corrupt_not_missing() -> None:
    data = _file(LAYOUT, 2)
    data[LAYOUT.offset(1) + 64:LAYOUT.end(1)] = bytes(64)
    assert check_record(bytes(data), 1, LAYOUT) is RecordState.CORRUPT


def test_record_at_wrong_offset_is_named() -> None:
    data = _file(LAYOUT, 8)
    data[LAYOUT.offset(5):LAYOUT.end(5)] = build_record(6, LAYOUT)
    check = inspect_record(bytes(data), 5, LAYOUT)
    assert check.state is RecordState.CORRUPT
    assert check.reason.startswith("holds intact record 6 (written at the wrong offset)")
    assert "seq 6 (expected 5)" in check.reason


def test_garbage_seq_does_not_crash() -> None:
    data = _file(LAYOUT, 2)
    data[LAYOUT.offset(1) + 8:LAYOUT.offset(1) + 16] = b"\xff" * 8
    assert check_record(bytes(data), 1, LAYOUT) is RecordState.CORRUPT


def test_guest_helper_writes_exactly_these_records(guest_program: GuestProgram, tmp_path: Path) -> None:
    # The real guest helper, on a plain file without MAP_SYNC: same bytes.
    exe = guest_program("mapsync")
    events = tmp_path / "events"
    for b, r, n in [(64, 64, 130), (1000, 3, 7), (4096, 1, 3)]:
        target = tmp_path / f"records-{b}-{r}"
        with events.open("w") as ev:
            subprocess.run([str(exe), "--file", str(target), "--records", str(n),
                            "--record-size", str(b), "--records-per-page", str(r),
                            "--no-map-sync", "--flush", "none"],
                           check=True, timeout=30, stdout=subprocess.DEVNULL,
                           env={**os.environ, "PMEMLAB_EVENT_FD": str(ev.fileno())},
                           pass_fds=(ev.fileno(),))
        layout = RecordLayout(b, r)
        data = target.read_bytes()
        for i in range(n):
            assert data[layout.offset(i):layout.end(i)] == build_record(i, layout), (b, r, i)
        assert check_persistence(data, range(n), layout, n).ok
