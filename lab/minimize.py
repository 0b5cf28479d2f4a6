"""Minimize a failing case: shrink it while its failing verdict recurs.

A step is a candidate case (an earlier crash point, fewer or smaller records, one parameter put
back to its default) run `times` times; it is kept only when every run gives the failing verdict
again, so a flaky failure is never minimized into a pass. The order: the crash point first
(binary search for the earliest ACK that still fails), then each integer parameter (binary
search down to its smallest valid value), then every other parameter back to its default (the
matrix parameters that do not matter). Ctrl-C ends the search; the smallest case found so far
is the result. The search is pure: `Runner` runs one case once and returns its verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pydantic import BaseModel

from lab.cases import Case
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.verdict import Verdict
from lab.workloads.base import CheckSpec
from lab.workloads.catalog import get_kind

Runner = Callable[[Case], Verdict]


@dataclass(frozen=True)
class Step:
    what: str  # "after_ack 10", "records 12", "map_sync -> default"
    verdicts: tuple[str, ...]
    kept: bool
    seconds: float


@dataclass
class Minimized:
    original: Case
    smallest: Case
    target: Verdict
    steps: list[Step] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.original.id, "target": self.target.value, "interrupted": self.interrupted,
                "seconds": round(self.seconds, 2), "runs": sum(len(s.verdicts) for s in self.steps),
                "steps": [{"what": s.what, "verdicts": list(s.verdicts), "kept": s.kept, "seconds": round(s.seconds, 2)}
                          for s in self.steps],
                "smallest": {"params": self.smallest.params.model_dump(mode="json"), "cell": self.smallest.cell,
                             "crash": self.smallest.crash.to_dict() if self.smallest.crash else None}}


def with_changes(case: Case, params: dict[str, Any] | None = None, crash: CrashPoint | None = None) -> Case | None:
    """`case` with some params and/or its crash point changed (a matrix cell follows its params);
    None when the kind refuses the combination (e.g. a crash point beyond the records)."""
    kind = get_kind(case.workload)
    values = {**case.params.model_dump(), **(params or {})}
    try:
        new_params = kind.params.model_validate(values)
        point = crash if crash is not None else case.crash
        check = kind.make_check(CheckSpec(fs=case.check.fs, dax=case.check.dax,  # type: ignore[attr-defined]
                                          params=new_params, crash=point, shape=case.check.shape,
                                          seed=case.seed))
    except (ConfigError, ValueError):
        return None
    cell = {key: (values[key] if key in values else value) for key, value in case.cell.items()}
    return replace(case, params=new_params, check=check, cell=cell)


class Search:
    def __init__(self, case: Case, target: Verdict, times: int, runner: Runner,
                 progress: Callable[[str], None]) -> None:
        self.result = Minimized(case, case, target)
        self.times = times
        self.runner = runner
        self.progress = progress

    @property
    def best(self) -> Case:
        return self.result.smallest

    def fails(self, candidate: Case | None, what: str) -> bool:
        """Run `candidate` `times` times; keep it as the smallest when every run fails the same way."""
        if candidate is None:
            return False
        started = time.monotonic()
        verdicts: list[str] = []
        for _ in range(self.times):
            verdict = self.runner(candidate)
            verdicts.append(verdict.value)
            if verdict is not self.result.target:
                break  # one miss is enough to drop the candidate
        kept = len(verdicts) == self.times and all(v == self.result.target.value for v in verdicts)
        step = Step(what, tuple(verdicts), kept, time.monotonic() - started)
        self.result.steps.append(step)
        self.progress(f"step {len(self.result.steps)}: {what}: {', '.join(verdicts)} -> "
                      f"{'kept' if kept else 'dropped'} ({step.seconds:.1f} s)")
        if kept:
            self.result.smallest = candidate
        return kept

    def smallest_int(self, low: int, high: int, make: Callable[[int], Case | None], name: str) -> None:
        """Binary search for the smallest value in [low, high) that still fails (high is known to fail).
        Where the middle value is not a valid case (a record size that is not a multiple of 8, fewer
        records than the crash point), the nearest valid one is tried instead: never taken as a pass."""
        while low < high:
            mid = (low + high) // 2
            near = _valid_near(mid, low, high, make)
            if near is None:  # nothing valid near the middle: look above the window searched
                low = min(high, mid + NEAR_LIMIT + 1)
                continue
            value, candidate = near
            if self.fails(candidate, f"{name} {value}"):
                high = value
            elif value >= mid:
                low = value + 1
            else:
                # Nothing valid in (mid, mid + NEAR_LIMIT]; a valid value may lie further up.
                low = min(high, mid + NEAR_LIMIT + 1)


NEAR_LIMIT = 256  # how far from the middle to look for a valid value, each way


def _valid_near(mid: int, low: int, high: int, make: Callable[[int], Case | None]) -> tuple[int, Case] | None:
    """The valid case nearest `mid` in [low, high): mid itself, else above it, else below it."""
    for value in [mid, *range(mid + 1, min(high, mid + 1 + NEAR_LIMIT)),
                  *range(mid - 1, max(low, mid - NEAR_LIMIT) - 1, -1)]:
        candidate = make(value)
        if candidate is not None:
            return value, candidate
    return None


def minimize(case: Case, target: Verdict, times: int, runner: Runner,
             progress: Callable[[str], None] = lambda _: None) -> Minimized:
    """Shrink `case` while `target` (its failing verdict) recurs in every one of `times` runs."""
    search = Search(case, target, times, runner, progress)
    started = time.monotonic()
    try:
        _crash_point(search)
        _integers(search)
        _defaults(search)
    except KeyboardInterrupt:
        search.result.interrupted = True
    search.result.seconds = time.monotonic() - started
    return search.result


def _crash_point(search: Search) -> None:
    crash = search.best.crash
    if crash is None or crash.after_ack is None:
        return
    search.smallest_int(0, crash.after_ack, lambda ack: with_changes(search.best, crash=CrashPoint(after_ack=ack)),
                        "crash after ACK")


def _lowest(model: type[BaseModel], name: str) -> int:
    """The smallest value a field's constraints allow (ge / gt), 0 without one."""
    low = 0
    for meta in model.model_fields[name].metadata:
        if getattr(meta, "ge", None) is not None:
            low = max(low, int(meta.ge))
        if getattr(meta, "gt", None) is not None:
            low = max(low, int(meta.gt) + 1)
    return low


def _integers(search: Search) -> None:
    model = type(search.best.params)
    for name, value in search.best.params.model_dump().items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        search.smallest_int(_lowest(model, name), value,
                            lambda v, name=name: with_changes(search.best, params={name: v}), name)  # type: ignore[misc]


def _defaults(search: Search) -> None:
    model = type(search.best.params)
    for name, info in model.model_fields.items():
        current = getattr(search.best.params, name)
        if isinstance(current, int) and not isinstance(current, bool):
            continue  # searched above
        if info.is_required() or current == info.default:
            continue
        search.fails(with_changes(search.best, params={name: info.default}), f"{name} -> {info.default!r} (default)")
