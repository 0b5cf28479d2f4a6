"""Page-fault latency statistics: power-of-two histograms, summaries, cells, MAP_SYNC/plain ratios.

The reference is the cover letter of the synchronous page fault series
("[PATCH 0/19 v3] dax, ext4, xfs: Synchronous page faults", Jan Kara,
2017-10-11): the latency of the first store to each of 512 pages of a DAX
mapping on a ramdisk, real hardware, file preallocated or empty, with and
without a background file copy, with and without MAP_SYNC. Its histograms
count whole microseconds in power-of-two buckets ("8 - 15 us: 508"); this
module buckets the same way, so a lab cell and a published cell read alike.

Pure and free of the report and workload layers: the fault-latency kind
summarizes its samples with it, lab/report/latency.py renders what it
computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

KIND = "fault-latency"
SOURCE = ("Jan Kara, \"[PATCH 0/19 v3] dax, ext4, xfs: Synchronous page faults\", linux-fsdevel, "
          "2017-10-11: 512 pages, ramdisk, real hardware")

# How the measured file is set up before mapping (images/guest/faultlat.c --setup):
# empty: ftruncate, every first store allocates a block; fallocate: unwritten extents, every first
# store converts one; written: zeros written through write(2), a first store needs no metadata.
FileMode = Literal["empty", "fallocate", "written"]
FILE_MODES: tuple[FileMode, ...] = get_args(FileMode)
# The cover letter's preallocated file cost the same with MAP_SYNC as without: its blocks were written.
PREALLOCATED: tuple[FileMode, ...] = ("fallocate", "written")


def file_mode_of(params: Mapping[str, Any]) -> FileMode:
    """The file mode of stored params; records made before `file` existed have `prealloc` (a bool:
    fallocate or empty)."""
    mode = params.get("file")
    if mode is None:
        return "fallocate" if params.get("prealloc") else "empty"
    if mode not in FILE_MODES:
        raise ValueError(f"unknown file mode {mode!r}; known: {', '.join(FILE_MODES)}")
    return mode  # type: ignore[no-any-return]


# -- buckets and summaries -------------------------------------------------------------------

@dataclass(frozen=True)
class Bucket:
    lo: int  # whole microseconds, inclusive
    hi: int
    count: int

    def text(self) -> str:
        return f"{self.lo} - {self.hi} us: {self.count}"

    def to_dict(self) -> dict[str, int]:
        return {"lo": self.lo, "hi": self.hi, "count": self.count}


def bucket_bounds(us: int) -> tuple[int, int]:
    """The power-of-two bucket of a whole-microsecond value: 0-1, 2-3, 4-7, 8-15, ..."""
    if us < 0:
        raise ValueError(f"a latency cannot be negative: {us}")
    if us < 2:
        return 0, 1
    lo = 1 << (us.bit_length() - 1)
    return lo, 2 * lo - 1


def whole_us(ns: int) -> int:
    """Nanoseconds to whole microseconds, truncated (as the cover letter's integer µs)."""
    return max(0, int(ns)) // 1000


def histogram(samples_ns: Iterable[int]) -> list[Bucket]:
    """Non-empty power-of-two buckets, lowest first."""
    counts: dict[tuple[int, int], int] = {}
    for ns in samples_ns:
        bounds = bucket_bounds(whole_us(ns))
        counts[bounds] = counts.get(bounds, 0) + 1
    return [Bucket(lo, hi, n) for (lo, hi), n in sorted(counts.items())]


@dataclass(frozen=True)
class Summary:
    count: int
    min_us: float
    avg_us: float
    max_us: float
    p50_us: float | None = None  # the median: robust against an emulated machine's outliers (not published)

    def to_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "min_us": self.min_us, "avg_us": self.avg_us, "max_us": self.max_us,
                "p50_us": self.p50_us}

    def text(self) -> str:
        """The cover letter's line: whole microseconds."""
        return f"min={round(self.min_us)} avg={round(self.avg_us)} max={round(self.max_us)}"


def summarize(samples_ns: Sequence[int]) -> Summary:
    if not samples_ns:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples_ns)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return Summary(len(ordered), round(ordered[0] / 1000, 3), round(sum(ordered) / len(ordered) / 1000, 3),
                   round(ordered[-1] / 1000, 3), round(median / 1000, 3))


# -- cells -----------------------------------------------------------------------------------

_FILE_LABELS: dict[FileMode, str] = {"written": "preallocated (written)", "fallocate": "preallocated (fallocate)",
                                     "empty": "empty"}


@dataclass(frozen=True)
class CellKey:
    fs: str
    file: FileMode
    background: bool
    map_sync: bool

    @property
    def pair(self) -> tuple[str, FileMode, bool]:
        """What MAP_SYNC is compared against plain within."""
        return self.fs, self.file, self.background

    def label(self) -> str:
        """Spelled as the cover letter spells its cells (the preallocation named)."""
        return (f"File {_FILE_LABELS[self.file]}, "
                f"{'background load' if self.background else 'no background load'}, "
                f"{'MAP_SYNC' if self.map_sync else 'no MAP_SYNC'}")

    def sort_key(self) -> tuple[str, int, bool, bool]:
        """Preallocated first, as in the cover letter: written, fallocate, empty."""
        return self.fs, -FILE_MODES.index(self.file), self.background, self.map_sync


@dataclass
class Cell:
    key: CellKey
    summary: Summary | None
    buckets: list[Bucket]
    runs: int = 1
    accelerator: str = ""
    verdicts: list[str] = field(default_factory=list)  # of the runs that did not measure

    @property
    def measured(self) -> bool:
        return self.summary is not None


@dataclass(frozen=True)
class Published:
    summary: Summary
    buckets: tuple[Bucket, ...]


def _pub(mn: int, avg: int, mx: int, *buckets: tuple[int, int, int]) -> Published:
    return Published(Summary(sum(b[2] for b in buckets), mn, avg, mx), tuple(Bucket(*b) for b in buckets))


# (preallocated, background, map_sync) -> the cover letter's cell. It has no preallocated
# file with background load.
PUBLISHED: dict[tuple[bool, bool, bool], Published] = {
    (True, False, False): _pub(9, 10, 46, (8, 15, 508), (16, 31, 3), (32, 63, 1)),
    (True, False, True): _pub(9, 10, 47, (8, 15, 508), (16, 31, 2), (32, 63, 2)),
    (False, False, False): _pub(21, 22, 70, (16, 31, 506), (32, 63, 5), (64, 127, 1)),
    (False, False, True): _pub(40, 124, 242, (32, 63, 1), (64, 127, 333), (128, 255, 178)),
    (False, True, False): _pub(21, 23, 67, (16, 31, 507), (32, 63, 4), (64, 127, 1)),
    (False, True, True): _pub(94, 112, 181, (64, 127, 489), (128, 255, 23)),
}


def published(key: CellKey) -> Published | None:
    """The cover letter's cell for this one: both preallocated modes face its preallocated row."""
    return PUBLISHED.get((key.file in PREALLOCATED, key.background, key.map_sync))


def published_ratio(preallocated: bool, background: bool) -> float | None:
    sync, plain = PUBLISHED.get((preallocated, background, True)), PUBLISHED.get((preallocated, background, False))
    if sync is None or plain is None:
        return None
    return round(sync.summary.avg_us / plain.summary.avg_us, 2)


def cell_key_of(result: Mapping[str, Any]) -> CellKey:
    """The cell of one stored fault-latency result (WorkloadResult.to_dict())."""
    check = result.get("check") or {}
    params = check.get("params") or {}
    return CellKey(str(check.get("fs")), file_mode_of(params), bool(params.get("background_copy")),
                   bool(params.get("map_sync")))


def cells_from_results(results: Iterable[Mapping[str, Any]]) -> list[Cell]:
    """One Cell per (fs, file, background, MAP_SYNC); repeats pool their samples."""
    samples: dict[CellKey, list[int]] = {}
    runs: dict[CellKey, int] = {}
    accel: dict[CellKey, str] = {}
    failed: dict[CellKey, list[str]] = {}
    for result in results:
        if result.get("kind") not in (None, KIND):
            continue
        key = cell_key_of(result)
        metrics = result.get("metrics") or {}
        got = metrics.get("samples_ns")
        if result.get("verdict") == "PASS" and got:
            samples.setdefault(key, []).extend(int(ns) for ns in got)
            runs[key] = runs.get(key, 0) + 1
            accel[key] = str(result.get("accelerator") or "")
        else:
            failed.setdefault(key, []).append(str(result.get("verdict") or "unfinished"))
    cells = []
    for key in sorted(set(samples) | set(failed), key=CellKey.sort_key):
        got = samples.get(key)
        cells.append(Cell(key, summarize(got) if got else None, histogram(got) if got else [],
                          runs.get(key, 0), accel.get(key, ""), failed.get(key, [])))
    return cells


# -- MAP_SYNC against plain ------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    fs: str
    file: FileMode
    background: bool
    plain_avg_us: float
    sync_avg_us: float
    published: float | None
    plain_p50_us: float | None = None
    sync_p50_us: float | None = None

    @property
    def ratio(self) -> float:
        return round(self.sync_avg_us / self.plain_avg_us, 2) if self.plain_avg_us > 0 else float("inf")

    @property
    def p50_ratio(self) -> float | None:
        if not self.plain_p50_us or self.sync_p50_us is None:
            return None
        return round(self.sync_p50_us / self.plain_p50_us, 2)

    @property
    def extra_us(self) -> float:
        return round(self.sync_avg_us - self.plain_avg_us, 1)


def ratios(cells: Iterable[Cell]) -> list[Ratio]:
    """MAP_SYNC avg / plain avg for every (fs, file, background) with both measured."""
    by_key = {c.key: c for c in cells if c.summary is not None}
    out = []
    for key in sorted(by_key, key=CellKey.sort_key):
        if not key.map_sync:
            continue
        plain = by_key.get(CellKey(key.fs, key.file, key.background, False))
        if plain is None or plain.summary is None:
            continue
        sync = by_key[key].summary
        assert sync is not None
        out.append(Ratio(key.fs, key.file, key.background, plain.summary.avg_us, sync.avg_us,
                         published_ratio(key.file in PREALLOCATED, key.background), plain.summary.p50_us,
                         sync.p50_us))
    return out
