"""Campaign summary: per matrix cell, what the cases concluded against what was expected.

Computed from stored case records; reports render it, the CLI takes its exit
status from it. Exit status of a campaign, checked in this order:

    2  a case is unfinished, or ended INFRA-ERROR without INFRA-ERROR being
       expected, or there are no cases at all: the evidence is incomplete,
       so neither "met" nor "not met" can be claimed for the campaign
    1  a case's verdict differs from its expectation
    0  every case met its expectation
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lab.store.records import CaseRecord
from lab.verdict import Verdict

INFRA = Verdict.INFRA_ERROR.value
# Severity order, least severe first: the order verdict counts are listed in.
_ORDER = sorted(Verdict, key=lambda v: v.severity)


@dataclass
class CellSummary:
    cell_key: str
    runs: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    met: int = 0
    not_met: int = 0
    infra_errors: int = 0
    unexpected_infra_errors: int = 0
    infra_retries: int = 0
    unfinished: int = 0

    def add(self, case: CaseRecord) -> None:
        self.runs += 1
        if case.expect and case.expect not in self.expected:
            self.expected.append(case.expect)
        self.infra_retries += case.infra_retries
        if not case.finished or case.verdict is None:
            self.unfinished += 1
            return
        self.verdicts[case.verdict] = self.verdicts.get(case.verdict, 0) + 1
        if case.met_expectation:
            self.met += 1
        else:
            self.not_met += 1
        if case.verdict == INFRA:
            self.infra_errors += 1
            if case.expect != INFRA:
                self.unexpected_infra_errors += 1

    @property
    def all_met(self) -> bool:
        return self.runs > 0 and self.met == self.runs

    def verdict_text(self) -> str:
        """'PASS 3, VIOLATION 1' in severity order; unknown spellings last."""
        known = [v.value for v in _ORDER]
        keys = [k for k in known if k in self.verdicts] + sorted(k for k in self.verdicts if k not in known)
        return ", ".join(f"{k} {self.verdicts[k]}" for k in keys) or "-"


@dataclass
class CampaignSummary:
    campaign_id: str
    cells: list[CellSummary]
    total: CellSummary

    @property
    def exit_status(self) -> int:
        t = self.total
        if t.runs == 0 or t.unfinished or t.unexpected_infra_errors:
            return 2
        return 1 if t.not_met else 0


def summarize(campaign_id: str, cases: Iterable[CaseRecord]) -> CampaignSummary:
    """Cells in the order their first case appears (cases sorted by position)."""
    cells: dict[str, CellSummary] = {}
    total = CellSummary("total")
    for case in sorted(cases, key=lambda c: c.position):
        cells.setdefault(case.cell_key, CellSummary(case.cell_key)).add(case)
        total.add(case)
    return CampaignSummary(campaign_id, list(cells.values()), total)
