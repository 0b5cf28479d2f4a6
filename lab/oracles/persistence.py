"""The persistence oracle: every acknowledged record must be intact.

The workload acknowledges record i only after its store (and flush) completed;
the host freezes the machine and stops reading ACKs, so the ACKs it read form
the durable set (see DESIGN.md, "The power-cut model"). After recovery, each
durable record must read back exactly as built by lab.oracles.records.
Records outside the durable set may be missing or torn: nothing was promised
about them. Their survival is counted only to inform (``survived``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.oracles.finding import Finding
from lab.oracles.records import RecordLayout, RecordState, inspect_record
from lab.verdict import Verdict

ORACLE = "persistence"
_LIST_LIMIT = 20  # indices shown in a summary before "(+N more)"


@dataclass
class PersistenceResult:
    """What the capture holds for the durable set (indices refer to records)."""

    layout: RecordLayout
    durable: list[int]
    intact: list[int]                      # durable and intact
    lost: list[int]                        # durable, missing or past end of file
    corrupt: list[dict[str, Any]]          # durable, {"index": i, "reason": str}
    survived: int                          # intact among 0..total_records-1
    total_records: int
    file_size: int
    required_size: int = field(init=False)  # end of the last durable record

    def __post_init__(self) -> None:
        self.required_size = self.layout.end(self.durable[-1]) if self.durable else 0

    @property
    def file_too_short(self) -> bool:
        return self.file_size < self.required_size

    @property
    def ok(self) -> bool:
        return not (self.lost or self.corrupt or self.file_too_short)

    def finding(self) -> Finding:
        return Finding(oracle=ORACLE,
                       verdict=Verdict.PASS if self.ok else Verdict.VIOLATION,
                       summary=self._summary(),
                       details=self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_size": self.layout.record_size,
            "records_per_page": self.layout.records_per_page,
            "durable_count": len(self.durable),
            "durable": format_indices(self.durable, limit=None),  # compact: can be large
            "intact_count": len(self.intact),
            "lost": self.lost,
            "corrupt": self.corrupt,
            "survived": self.survived,
            "total_records": self.total_records,
            "file_size": self.file_size,
            "required_size": self.required_size,
        }

    def _summary(self) -> str:
        n = len(self.durable)
        if not self.durable:
            return (f"no records acknowledged, nothing promised "
                    f"({self.survived} of {self.total_records} records survived)")
        if self.ok:
            return (f"all {n} acknowledged records intact "
                    f"({self.survived} of {self.total_records} records survived)")
        parts: list[str] = []
        if self.lost:
            parts.append(f"{len(self.lost)} of {n} acknowledged records lost: "
                         + format_indices(self.lost))
        if self.corrupt:
            first = self.corrupt[0]
            parts.append(f"{len(self.corrupt)} of {n} acknowledged records corrupt: "
                         + format_indices([c["index"] for c in self.corrupt])
                         + f" (record {first['index']}: {first['reason']})")
        if self.file_too_short:
            parts.append(f"file is {self.file_size} bytes, shorter than the "
                         f"{self.required_size} the acknowledged records need")
        return "; ".join(parts)


def check_persistence(file_bytes: bytes, durable: Iterable[int],
                      layout: RecordLayout,
                      total_records: int | None = None) -> PersistenceResult:
    """Judge a captured file against the set of acknowledged record indices.

    ``total_records``: how many records the workload meant to write, for the
    informational ``survived`` count; by default every record slot that fits
    in the file (or up to the last durable record, if further).
    """
    wanted = sorted(set(durable))
    if wanted and wanted[0] < 0:
        raise ValueError(f"record indices must be >= 0, got {wanted[0]}")
    if total_records is None:
        total_records = max(layout.records_in(len(file_bytes)),
                            wanted[-1] + 1 if wanted else 0)
    elif total_records < 0:
        raise ValueError(f"total_records must be >= 0, got {total_records}")

    intact: list[int] = []
    lost: list[int] = []
    corrupt: list[dict[str, Any]] = []
    for i in wanted:
        check = inspect_record(file_bytes, i, layout)
        if check.state is RecordState.INTACT:
            intact.append(i)
        elif check.state is RecordState.CORRUPT:
            corrupt.append({"index": i, "reason": check.reason})
        else:  # MISSING or SHORT: the record is simply not there
            lost.append(i)

    durable_set = set(wanted)
    survived = len([i for i in intact if i < total_records])
    # Only the records nobody promised still need reading for the count.
    available = min(total_records, layout.records_in(len(file_bytes)))
    survived += sum(1 for i in range(available) if i not in durable_set
                    and inspect_record(file_bytes, i, layout).state is RecordState.INTACT)

    return PersistenceResult(layout=layout, durable=wanted, intact=intact, lost=lost,
                             corrupt=corrupt, survived=survived,
                             total_records=total_records, file_size=len(file_bytes))


def format_indices(indices: Sequence[int], limit: int | None = _LIST_LIMIT) -> str:
    """Compact list for humans: runs of four or more as "a-b", e.g. "0-3, 7, 8".

    ``limit`` caps the number of items (single indices or runs) shown.
    """
    items: list[tuple[str, int]] = []  # (text, how many indices it stands for)
    ordered = sorted(set(indices))
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        if end - start >= 3:
            items.append((f"{ordered[start]}-{ordered[end]}", end - start + 1))
        else:
            items.extend((str(i), 1) for i in ordered[start:end + 1])
        start = end + 1
    shown = items if limit is None else items[:limit]
    text = ", ".join(t for t, _ in shown)
    hidden = sum(n for _, n in items[len(shown):])
    return text + (f", ... (+{hidden} more)" if hidden else "")
