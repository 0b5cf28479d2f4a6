"""ADR crash states from the plugin's dump: which bytes of the NVDIMM a power cut may have kept.

The dump (images/plugin/adrtrace.c) lists every 64-byte line of the NVDIMM with stores that were
not persisted at the cut, in program order, and per line the bytes that persisted stores wrote
since arming (a shadow and its mask). What a line held when it was last persisted is the baseline
(the media captured right after arming: everything before counts as persisted) overlaid with the
shadow; the eADR capture holds every executed store.

States (each a set of line contents written over a copy of the eADR capture):
  adr:drop-all          every unpersisted line at its persisted content
  adr:subset:BITS       <= MAX_ENUMERATED lines: each subset of lines keeps all its pending stores
                        (BITS: one 0/1 per line in address order), the rest dropped
  adr:random:SEED:I     more lines: per line a random in-order prefix of its pending stores (x86
                        persists the stores of one line in order: Px86, Raad et al. POPL'20)
States with equal content are one state (the first id names it).

A campaign judges each state as its own case, named before the run by its position: slot 0 is
adr:drop-all, slot k >= 1 the k-th further distinct state `crash_states` yields for the cut's
dump and seed (`slot_label`: adr:subset-<k>:seed-<s>). The list is deterministic for a given dump
and seed, so a repro that reaches the same dump judges the same state; what content a slot held
(adr:subset:0101, adr:random:<seed>:<i>) is recorded with its result. A slot beyond the distinct
states of a cut has nothing left to judge (every crash image of that cut belongs to another slot).

Which lines: every unpersisted line of the NVDIMM, none filtered out. Restricting them to the lines
an oracle reads (the records region of the workload's file) would not be sound: the same cut also
decides the filesystem's metadata lines (journal/log blocks, the inode's size and extent map, the
allocation bitmaps), which the recovery mount, fsck and the file read all observe; and which media
line holds which file block is known only through that metadata. Equal images are judged once
(the digest dedupe below), which is the reduction that is always sound.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError

LINE = 64
MAGIC = "pmemlab-adrtrace 1"
MAX_ENUMERATED = 4


class DumpError(LabError):
    """The plugin's dump is missing, truncated or malformed: nothing may be judged from it."""


@dataclass(frozen=True)
class PendingStore:
    seq: int
    vcpu: int
    addr: int  # guest-physical
    value: bytes
    flushed: bool  # flushed, waiting for a fence
    pc: int = 0  # the storing instruction's virtual address (symbolise with the guest's /proc/kallsyms)


@dataclass(frozen=True)
class DirtyLine:
    addr: int  # guest-physical, 64-byte aligned
    mask: int  # bit i: byte i written by a persisted store since arming
    shadow: bytes
    stores: tuple[PendingStore, ...]

    def persisted(self, baseline: bytes) -> bytes:
        """The line's content when it was last persisted."""
        return bytes(self.shadow[i] if self.mask >> i & 1 else baseline[i] for i in range(LINE))

    def with_prefix(self, persisted: bytes, count: int) -> bytes:
        """Persisted content plus the first `count` pending stores, in order."""
        line = bytearray(persisted)
        for store in self.stores[:count]:
            off = store.addr - self.addr
            line[off:off + len(store.value)] = store.value
        return bytes(line)


@dataclass
class AdrDump:
    base: int
    size: int
    counts: dict[str, int]
    lines: list[DirtyLine] = field(default_factory=list)

    @property
    def stores(self) -> int:
        return sum(len(line.stores) for line in self.lines)


def parse_dump(path: Path, expected: tuple[int, int] | None = None) -> AdrDump:
    """Read a dump; DumpError unless it is whole (its end line, and the counts the plugin replied)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DumpError(f"cannot read the ADR plugin's dump {path}: {exc}") from None
    lines = text.splitlines()
    where = f"ADR dump {path}"
    if not lines or lines[0] != MAGIC:
        raise DumpError(f"{where}: not a {MAGIC!r} dump")
    if not text.endswith("\n") or not lines[-1].startswith("end "):
        raise DumpError(f"{where} is truncated (no end line)")
    try:
        _, base, size = lines[1].split()
        counts = {k: int(v) for k, v in (part.split("=") for part in lines[2].split()[1:])}
        dump = AdrDump(int(base, 16), int(size, 16), counts)
        current: list[PendingStore] | None = None
        header: tuple[int, int, bytes] | None = None
        for row in lines[3:-1]:
            parts = row.split()
            if parts[0] == "line":
                if header is not None and current is not None:
                    dump.lines.append(DirtyLine(header[0], header[1], header[2], tuple(current)))
                header = (int(parts[1], 16), int(parts[2], 16), bytes.fromhex(parts[3]))
                if len(header[2]) != LINE or header[0] % LINE:
                    raise ValueError(f"bad line {row!r}")
                current = []
            elif parts[0] == "s" and current is not None and header is not None:
                store = PendingStore(int(parts[1]), int(parts[2]), int(parts[3], 16), bytes.fromhex(parts[6]),
                                     parts[5] == "f", int(parts[7], 16) if len(parts) > 7 else 0)
                if len(store.value) != int(parts[4]) or not header[0] <= store.addr <= header[0] + LINE - len(store.value):
                    raise ValueError(f"bad store {row!r}")
                current.append(store)
            else:
                raise ValueError(f"unexpected {row!r}")
        if header is not None and current is not None:
            dump.lines.append(DirtyLine(header[0], header[1], header[2], tuple(current)))
        _, n_lines, n_stores = lines[-1].split()
    except (ValueError, IndexError) as exc:
        raise DumpError(f"{where} is malformed: {exc}") from None
    if (len(dump.lines), dump.stores) != (int(n_lines), int(n_stores)):
        raise DumpError(f"{where} is truncated: {len(dump.lines)} lines / {dump.stores} stores, "
                        f"its end line says {n_lines} / {n_stores}")
    if expected is not None and expected != (len(dump.lines), dump.stores):
        raise DumpError(f"{where}: the plugin reported {expected[0]} lines / {expected[1]} stores, the file has "
                        f"{len(dump.lines)} / {dump.stores}")
    dump.lines.sort(key=lambda line: line.addr)
    return dump


@dataclass(frozen=True)
class CrashState:
    id: str  # stable: model, subset, seed
    lines: dict[int, bytes]  # media offset -> 64 bytes to write over the eADR capture
    kept_stores: int  # pending stores this state keeps
    digest: str


def _state(state_id: str, lines: dict[int, bytes], kept: int) -> CrashState:
    digest = hashlib.sha256(b"".join(off.to_bytes(8, "little") + data for off, data in sorted(lines.items())))
    return CrashState(state_id, lines, kept, digest.hexdigest()[:16])


def read_lines(media: Path, base: int, dump: AdrDump) -> dict[int, bytes]:
    """Each dirty line's bytes in `media` (the baseline), by guest-physical address."""
    out: dict[int, bytes] = {}
    with media.open("rb") as f:
        for line in dump.lines:
            data = os.pread(f.fileno(), LINE, line.addr - base)
            out[line.addr] = data.ljust(LINE, b"\0")
    return out


def slot_label(slot: int, seed: int) -> str:
    """The stable name of a campaign case's crash state: model, subset (slot) and seed."""
    return "adr:drop-all" if slot == 0 else f"adr:subset-{slot}:seed-{seed}"


def crash_states(dump: AdrDump, baseline: dict[int, bytes], subsets: int, seed: int) -> list[CrashState]:
    """drop-all first, then up to `subsets` more distinct states (all subsets of lines when there are
    at most MAX_ENUMERATED, else seeded random in-order prefixes per line); deduplicated by content."""
    persisted = {line.addr: line.persisted(baseline[line.addr]) for line in dump.lines}
    offset = {line.addr: line.addr - dump.base for line in dump.lines}
    states = [_state("adr:drop-all", {offset[a]: data for a, data in persisted.items()}, 0)]
    seen = {states[0].digest}

    def add(state_id: str, counts: list[int]) -> None:
        lines = {offset[line.addr]: line.with_prefix(persisted[line.addr], k) for line, k in zip(dump.lines, counts)}
        state = _state(state_id, lines, sum(counts))
        if state.digest not in seen:
            seen.add(state.digest)
            states.append(state)

    n = len(dump.lines)
    if subsets <= 0 or n == 0:
        return states
    if n <= MAX_ENUMERATED:
        for bits in range(1, 1 << n):
            if len(states) > subsets:
                break
            pattern = "".join("1" if bits >> i & 1 else "0" for i in range(n))
            add(f"adr:subset:{pattern}", [len(line.stores) if bits >> i & 1 else 0
                                          for i, line in enumerate(dump.lines)])
        return states
    rng = random.Random(seed)
    for i in range(subsets):
        add(f"adr:random:{seed}:{i}", [rng.randint(0, len(line.stores)) for line in dump.lines])
    return states


def write_state(capture: Path, dest: Path, state: CrashState) -> Path:
    """`dest`: a copy of the eADR capture (made by the caller) with the state's lines written over it."""
    fd = os.open(dest, os.O_WRONLY)
    try:
        for off, data in state.lines.items():
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    return dest
