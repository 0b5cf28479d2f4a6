"""Compare two stored campaigns cell by cell: what changed since the baseline.

A cell (a matrix cell, by its stable cell key) is judged in each campaign from its
finished cases:

    met       every case met its expectation
    not met   a crash point (cell, crash index) missed its expectation in every run: its repeats and
              its re-runs (attempts stored by `repro --record`, as `watch` does before calling a regression)
    flaky     none such, but a crash point both met and missed its expectation across repeats or re-runs
    infra     no verdict to judge: an unexpected INFRA-ERROR or an unfinished case, none not met
    absent    the campaign has no case of that cell

and the pair of states is classified with KernelCI's tree-compare words:

    regression     met -> not met              fixed          not met -> met
    new failure    absent/infra -> not met     new pass       infra -> met
    still failing  not met -> not met          unchanged      met -> met
    flaky          candidate flaky             infra          candidate infra
    appeared       absent -> met               disappeared    present -> absent

A failing class matched by a known issue (lab/known_issues.py) becomes "known".
This module reads records only: the CLI and the dashboard render what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lab.known_issues import KnownIssue, KnownIssues
from lab.store.records import CampaignRecord, CaseRecord
from lab.verdict import Verdict

INFRA = Verdict.INFRA_ERROR.value


class CellState(str, Enum):
    MET = "met"
    NOT_MET = "not met"
    FLAKY = "flaky"
    INFRA = "infra"
    ABSENT = "absent"


class Change(str, Enum):
    REGRESSION = "regression"
    NEW_FAILURE = "new failure"
    FLAKY = "flaky"
    INFRA = "infra"
    KNOWN = "known"
    FIXED = "fixed"
    NEW_PASS = "new pass"
    APPEARED = "appeared"
    DISAPPEARED = "disappeared"
    STILL_FAILING = "still failing"
    UNCHANGED = "unchanged"

    @property
    def bad(self) -> bool:
        """A change that fails the comparison (exit status 1)."""
        return self in (Change.REGRESSION, Change.NEW_FAILURE)

    @property
    def changed(self) -> bool:
        return self not in (Change.STILL_FAILING, Change.UNCHANGED)


# Order of the plain-text report: the worst news first.
ORDER = list(Change)
_FAILING = {Change.REGRESSION, Change.NEW_FAILURE, Change.STILL_FAILING, Change.FLAKY}


@dataclass(frozen=True)
class CaseChange:
    """One case of a cell whose outcome differs (or fails) between the two campaigns."""

    case_id: str
    baseline: str | None  # verdict, None where absent or unfinished
    candidate: str | None
    expect: str
    reruns: tuple[str, ...] = ()  # the candidate's re-run verdicts, oldest first

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "baseline": self.baseline, "candidate": self.candidate,
                "expect": self.expect, "reruns": list(self.reruns)}


@dataclass(frozen=True)
class CellComparison:
    cell_key: str
    baseline: CellState
    candidate: CellState
    change: Change
    cases: tuple[CaseChange, ...] = ()  # the cases not met in the candidate, or whose verdict moved
    known: KnownIssue | None = None
    was: Change | None = None  # the class a known issue replaced

    def to_dict(self) -> dict[str, Any]:
        return {"cell_key": self.cell_key, "baseline": self.baseline.value, "candidate": self.candidate.value,
                "change": self.change.value, "was": self.was.value if self.was else None,
                "known": self.known.to_dict() if self.known else None, "cases": [c.to_dict() for c in self.cases]}


@dataclass(frozen=True)
class Comparison:
    baseline: CampaignRecord
    candidate: CampaignRecord
    cells: tuple[CellComparison, ...]
    expired: tuple[KnownIssue, ...] = field(default=())  # known issues whose kernel range has passed

    def by_change(self) -> dict[Change, list[CellComparison]]:
        out: dict[Change, list[CellComparison]] = {c: [] for c in ORDER}
        for cell in self.cells:
            out[cell.change].append(cell)
        return out

    @property
    def exit_status(self) -> int:
        """1: a regression or new failure; 2: no regression, but the candidate lacks evidence; else 0."""
        changes = {c.change for c in self.cells}
        if any(c.bad for c in changes):
            return 1
        return 2 if Change.INFRA in changes or not self.cells else 0

    def to_dict(self) -> dict[str, Any]:
        counts = {change.value: len(cells) for change, cells in self.by_change().items() if cells}
        return {"baseline": _campaign_brief(self.baseline), "candidate": _campaign_brief(self.candidate),
                "counts": counts, "exit_status": self.exit_status, "cells": [c.to_dict() for c in self.cells],
                "expired_known_issues": [k.to_dict() for k in self.expired]}


def _campaign_brief(c: CampaignRecord) -> dict[str, Any]:
    return {"id": c.id, "scenario_name": c.scenario_name, "kernel_version": c.kernel_version,
            "image_id": c.image_id, "created_at": c.created_at.isoformat() if c.created_at else None}


def cell_state(cases: Sequence[CaseRecord]) -> CellState:
    if not cases:
        return CellState.ABSENT
    # (crash index, ADR crash state, expectation) -> met values over repeats
    outcome: dict[tuple[int, str, str], set[bool]] = {}
    no_verdict = False
    for case in cases:
        key = (case.crash_index, case.crash_state or "", case.expect)
        for rerun in case.reruns:  # an INFRA-ERROR re-run is no evidence either way
            if rerun.verdict is not None and (rerun.verdict != INFRA or case.expect == INFRA):
                outcome.setdefault(key, set()).add(rerun.verdict == case.expect)
        if not case.finished or (case.verdict == INFRA and case.expect != INFRA):
            no_verdict = True
            continue
        outcome.setdefault(key, set()).add(bool(case.met_expectation))
    # A crash point that fails every time is a failure even beside a flaky one: flakiness never hides it.
    if any(seen == {False} for seen in outcome.values()):
        return CellState.NOT_MET
    if any(len(seen) == 2 for seen in outcome.values()):
        return CellState.FLAKY
    return CellState.INFRA if no_verdict else CellState.MET


def classify(baseline: CellState, candidate: CellState) -> Change:
    if candidate is CellState.ABSENT:
        return Change.DISAPPEARED
    if candidate is CellState.FLAKY:
        return Change.FLAKY
    if candidate is CellState.INFRA:
        return Change.INFRA
    if candidate is CellState.NOT_MET:
        return {CellState.MET: Change.REGRESSION, CellState.NOT_MET: Change.STILL_FAILING,
                CellState.FLAKY: Change.STILL_FAILING}.get(baseline, Change.NEW_FAILURE)
    # candidate met
    return {CellState.ABSENT: Change.APPEARED, CellState.INFRA: Change.NEW_PASS,
            CellState.MET: Change.UNCHANGED}.get(baseline, Change.FIXED)


def _by_cell(campaign: CampaignRecord) -> dict[str, list[CaseRecord]]:
    cells: dict[str, list[CaseRecord]] = {}
    for case in campaign.cases:
        cells.setdefault(case.cell_key, []).append(case)
    return cells


def _case_changes(base: Iterable[CaseRecord], cand: Iterable[CaseRecord]) -> tuple[CaseChange, ...]:
    before = {c.id: c for c in base}
    out = []
    for case in cand:
        old = before.get(case.id)
        old_verdict = old.verdict if old is not None else None
        if case.met_expectation is not True or old_verdict != case.verdict:
            out.append(CaseChange(case.id, old_verdict, case.verdict, case.expect,
                                  tuple(a.verdict or INFRA for a in case.reruns)))
    return tuple(out)


def compare(baseline: CampaignRecord, candidate: CampaignRecord,
            known: KnownIssues | None = None) -> Comparison:
    """Cells in the candidate's order, then those that disappeared (in the baseline's order)."""
    base_cells, cand_cells = _by_cell(baseline), _by_cell(candidate)
    keys = list(cand_cells) + [k for k in base_cells if k not in cand_cells]
    known = known or KnownIssues(())
    cells = []
    for key in keys:
        base, cand = base_cells.get(key, []), cand_cells.get(key, [])
        before, after = cell_state(base), cell_state(cand)
        change = classify(before, after)
        issue, was = None, None
        if change in _FAILING:
            issue = known.match(candidate.scenario_name, key, candidate.kernel_version,
                                flaky=change is Change.FLAKY)
            if issue is not None:
                change, was = Change.KNOWN, change
        cells.append(CellComparison(key, before, after, change, _case_changes(base, cand), issue, was))
    expired = known.expired(candidate.scenario_name, list(cand_cells), candidate.kernel_version)
    return Comparison(baseline, candidate, tuple(cells), tuple(expired))


def render_text(result: Comparison) -> str:
    """A plain-text summary, ready for email: what changed first, then what did not."""
    b, c = result.baseline, result.candidate
    groups = result.by_change()
    changed = [(ch, cells) for ch, cells in groups.items() if cells and ch.changed]
    lines = []
    if changed:
        lines.append("CHANGED: " + ", ".join(f"{len(cells)} {ch.value}" for ch, cells in changed))
    else:
        lines.append("NO CHANGE since the baseline")
    lines.append(f"  baseline  {b.id}  {b.scenario_name}  kernel {b.kernel_version}")
    lines.append(f"  candidate {c.id}  {c.scenario_name}  kernel {c.kernel_version}")
    for change, cells in changed:
        lines.append("")
        lines.append(f"{change.value.upper()} ({len(cells)})")
        for cell in cells:
            lines.append(f"  {cell.cell_key}: {cell.baseline.value} -> {cell.candidate.value}")
            if cell.known is not None:
                was = cell.was.value if cell.was else "failing"
                lines.append(f"    known issue ({was}): {cell.known.reason}"
                             + (f" <{cell.known.link}>" if cell.known.link else ""))
            for case in cell.cases[:5]:
                reruns = f"; re-runs: {', '.join(case.reruns)}" if case.reruns else ""
                lines.append(f"    case {case.case_id}: {case.baseline or '-'} -> {case.candidate or '-'}"
                             f" (expected {case.expect}{reruns})")
            if len(cell.cases) > 5:
                lines.append(f"    ... and {len(cell.cases) - 5} more cases")
    if result.expired:
        lines.append("")
        lines.append(f"EXPIRED KNOWN ISSUES ({len(result.expired)}): their kernel range is past; drop or extend them")
        for issue in result.expired:
            lines.append(f"  {issue.where}: {issue.reason}")
    still = [(ch, cells) for ch, cells in groups.items() if cells and not ch.changed]
    if still:
        lines.append("")
        lines.append("unchanged: " + ", ".join(f"{len(cells)} {ch.value}" for ch, cells in still))
    return "\n".join(lines) + "\n"
