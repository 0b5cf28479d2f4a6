"""The record format written by the guest workload helper (C), byte for byte.

Pure functions: build the record the guest would write, and check what a
capture holds. Record ``i`` of a layout with record size ``B`` and ``R``
records per 4096-byte page lives at file offset

    (i // R) * 4096 + (i % R) * B

and is, little endian:

    [0, 8)      magic b"PMEMREC1"
    [8, 16)     u64 seq = i
    [16, 24)    u64 file offset of this record
    [24, 28)    u32 record size B
    [28, 32)    u32 0 (reserved)
    [32, B-8)   fill: byte at record index j is (i*131 + j) & 0xff
    [B-8, B)    u64 FNV-1a-64 over bytes [0, B-8)

Every field depends on ``i`` so that a record landing at the wrong place, a
stale page, or a torn write all read as corrupt rather than intact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

PAGE_SIZE = 4096
MAGIC = b"PMEMREC1"
HEADER = struct.Struct("<8sQQII")  # magic, seq, offset, size, reserved
HEADER_SIZE = HEADER.size  # 32
CHECKSUM = struct.Struct("<Q")
MIN_RECORD_SIZE = 64
FILL_MULTIPLIER = 131

FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bit: the guest helper's checksum."""
    h = FNV_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


@dataclass(frozen=True)
class RecordLayout:
    """How records sit in the file: size B and records per page R."""

    record_size: int
    records_per_page: int = 1

    def __post_init__(self) -> None:
        b, r = self.record_size, self.records_per_page
        if b % 8 or not MIN_RECORD_SIZE <= b <= PAGE_SIZE:
            raise ValueError(f"record_size must be a multiple of 8 in "
                             f"{MIN_RECORD_SIZE}..{PAGE_SIZE}, got {b}")
        if r < 1 or r * b > PAGE_SIZE:
            raise ValueError(f"records_per_page must be 1..{PAGE_SIZE // b} "
                             f"for record_size {b}, got {r}")

    @classmethod
    def packed(cls, record_size: int) -> RecordLayout:
        """As many records per page as fit."""
        return cls(record_size, max(1, PAGE_SIZE // record_size))

    def offset(self, i: int) -> int:
        """File offset of record ``i``."""
        if i < 0:
            raise ValueError(f"record index must be >= 0, got {i}")
        page, slot = divmod(i, self.records_per_page)
        return page * PAGE_SIZE + slot * self.record_size

    def end(self, i: int) -> int:
        """File offset just past record ``i``: the file must be at least this long."""
        return self.offset(i) + self.record_size

    def records_in(self, file_size: int) -> int:
        """Number of leading records that fit completely in a file of this size."""
        full_pages, rest = divmod(max(0, file_size), PAGE_SIZE)
        return (full_pages * self.records_per_page
                + min(self.records_per_page, rest // self.record_size))


class RecordState(str, Enum):
    INTACT = "intact"
    MISSING = "missing"    # every byte zero: never reached the media
    CORRUPT = "corrupt"    # anything else that is not the expected record
    SHORT = "short"        # the file ends before the record does


@dataclass(frozen=True)
class RecordCheck:
    """State of one record plus why (empty reason when intact)."""

    index: int
    state: RecordState
    reason: str = ""


def _fill(i: int, size: int) -> bytes:
    start = (i * FILL_MULTIPLIER + HEADER_SIZE) & 0xFF
    count = size - HEADER_SIZE - CHECKSUM.size
    # The pattern is a 0..255 ramp starting at `start`; slice a repeated ramp.
    ramp = bytes(range(256)) * (count // 256 + 2)
    return ramp[start:start + count]


def build_record(i: int, layout: RecordLayout) -> bytes:
    """The exact bytes the guest helper writes for record ``i``."""
    body = (HEADER.pack(MAGIC, i, layout.offset(i), layout.record_size, 0)
            + _fill(i, layout.record_size))
    return body + CHECKSUM.pack(fnv1a64(body))


def inspect_record(data: bytes, i: int, layout: RecordLayout) -> RecordCheck:
    """Check record ``i`` in ``data`` (the whole file as captured), with a reason."""
    start, size = layout.offset(i), layout.record_size
    raw = data[start:start + size]
    if len(raw) < size:
        return RecordCheck(i, RecordState.SHORT,
                           f"file is {len(data)} bytes; record spans "
                           f"{start}..{start + size}")
    if raw.count(0) == size:
        return RecordCheck(i, RecordState.MISSING, "all bytes zero")
    problems = _field_problems(raw, i, layout)
    if problems and _is_record(raw, layout):
        # A whole, valid record of another index: a misdirected write or a
        # stale page, worth naming as such.
        seq = HEADER.unpack_from(raw)[1]
        problems.insert(0, f"holds intact record {seq} (written at the wrong offset)")
    if problems:
        return RecordCheck(i, RecordState.CORRUPT, "; ".join(problems))
    return RecordCheck(i, RecordState.INTACT)


def check_record(data: bytes, i: int, layout: RecordLayout) -> RecordState:
    """State of record ``i`` in ``data`` (the whole file as captured)."""
    return inspect_record(data, i, layout).state


def _is_record(raw: bytes, layout: RecordLayout) -> bool:
    """Whether ``raw`` is exactly the record its own seq field names."""
    magic, seq = HEADER.unpack_from(raw)[:2]
    if magic != MAGIC or layout.offset(seq) > _MASK64:
        return False  # a garbage seq whose offset would not fit the u64 field
    return raw == build_record(seq, layout)


def _field_problems(raw: bytes, i: int, layout: RecordLayout) -> list[str]:
    """Every field of ``raw`` that differs from record ``i``'s; empty if intact."""
    size = layout.record_size
    magic, seq, offset, rsize, reserved = HEADER.unpack_from(raw)
    problems: list[str] = []
    if magic != MAGIC:
        problems.append(f"bad magic {magic!r}")
    if seq != i:
        problems.append(f"seq {seq} (expected {i})")
    if offset != layout.offset(i):
        problems.append(f"offset field {offset} (expected {layout.offset(i)})")
    if rsize != size:
        problems.append(f"size field {rsize} (expected {size})")
    if reserved != 0:
        problems.append(f"reserved field {reserved:#x} (expected 0)")
    fill = raw[HEADER_SIZE:size - CHECKSUM.size]
    expected_fill = _fill(i, size)
    if fill != expected_fill:
        bad = [j for j, (a, b) in enumerate(zip(fill, expected_fill)) if a != b]
        problems.append(f"fill mismatch at {len(bad)} byte(s), first at record "
                        f"byte {HEADER_SIZE + bad[0]}")
    (stored,) = CHECKSUM.unpack_from(raw, size - CHECKSUM.size)
    computed = fnv1a64(raw[:size - CHECKSUM.size])
    if stored != computed:
        problems.append(f"checksum {stored:#018x} != computed {computed:#018x}")
    return problems
