"""Campaign summary: per matrix cell, what the cases concluded against what was expected.

The summary is computed from case dicts (as ``ResultsStore.get_campaign()``
returns them), so it works on stored data and on exported JSON alike.
Exit status of a campaign, checked in this order:

    2  a case is unfinished, or ended INFRA-ERROR without INFRA-ERROR being
       expected, or there are no cases at all: the evidence is incomplete,
       so neither "met" nor "not met" can be claimed for the campaign
    1  a case's verdict differs from its expectation
    0  every case met its expectation
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from lab.verdict import Verdict

if TYPE_CHECKING:
    from lab.ui import UI

INFRA = Verdict.INFRA_ERROR.value
SUMMARY_COLUMNS = ["cell", "runs", "verdicts", "expected", "met", "not met", "infra errors", "unfinished"]
# Severity order, least severe first: the order verdict counts are listed in.
_ORDER = sorted(Verdict, key=lambda v: v.severity)
# The design requires every report to state the power-cut model the verdicts rest on.
POWER_CUT_MODEL = (
    "Power-cut model: at the crash point every vCPU is frozen (QMP stop), the NVDIMM backing file is "
    "captured, and the machine is destroyed. Guest RAM (page cache, uncommitted journal transactions, "
    "dirty metadata buffers) is lost, as on a real power loss; the NVDIMM backing file is the persistent "
    "domain. No CPU cache is modelled: every store that reached the emulated NVDIMM is in the capture, "
    "i.e. the semantics of a platform whose caches are in the persistence domain (eADR). Missing cache "
    "flushes are therefore not visible in these results.")


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

    def add(self, case: dict[str, Any]) -> None:
        self.runs += 1
        expect = str(case.get("expect") or "")
        if expect and expect not in self.expected:
            self.expected.append(expect)
        self.infra_retries += int(case.get("infra_retries") or 0)
        verdict = case.get("verdict")
        if case.get("status") != "finished" or verdict is None:
            self.unfinished += 1
            return
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
        if case.get("met_expectation"):
            self.met += 1
        else:
            self.not_met += 1
        if verdict == INFRA:
            self.infra_errors += 1
            if expect != INFRA:
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


def summarize(campaign_id: str, cases: list[dict[str, Any]]) -> CampaignSummary:
    """Cells in the order their first case appears (cases sorted by position)."""
    cells: dict[str, CellSummary] = {}
    total = CellSummary("total")
    for case in sorted(cases, key=lambda c: int(c.get("position") or 0)):
        key = str(case.get("cell_key"))
        cells.setdefault(key, CellSummary(key)).add(case)
        total.add(case)
    return CampaignSummary(campaign_id, list(cells.values()), total)


def _row(cell: CellSummary) -> list[str]:
    met = "yes" if cell.all_met else f"no ({cell.met}/{cell.runs})"
    return [cell.cell_key, str(cell.runs), cell.verdict_text(), "/".join(cell.expected) or "-", met,
            str(cell.not_met), str(cell.infra_errors), str(cell.unfinished)]


def summary_rows(summary: CampaignSummary) -> list[list[str]]:
    """One row per cell, then the totals row; plain text (no markup)."""
    return [_row(c) for c in summary.cells] + [_row(summary.total)]


def render_summary(ui: UI, summary: CampaignSummary) -> None:
    # Cell keys may contain [brackets]: text, not rich markup.
    rows = [[escape(text) for text in row] for row in summary_rows(summary)]
    ui.table(f"campaign {escape(summary.campaign_id)}", SUMMARY_COLUMNS, rows)
    t = summary.total
    status = summary.exit_status
    gaps = [f"{t.unfinished} unfinished"] if t.unfinished else []
    gaps += [f"{t.unexpected_infra_errors} unexpected INFRA-ERROR"] if t.unexpected_infra_errors else []
    meaning = {0: "every case met its expectation",
               1: f"{t.not_met} case(s) did not meet their expectation",
               2: "incomplete evidence: " + (", ".join(gaps) or "no cases")}[status]
    if t.infra_retries:
        ui.info(f"infrastructure retries: {t.infra_retries}")
    ui.info(f"exit status {status}: {meaning}")
    ui.info(f"[dim]{POWER_CUT_MODEL}[/dim]")


def latest_attempt(case: dict[str, Any]) -> dict[str, Any] | None:
    """A case dict's newest attempt: get_campaign() gives latest_attempt, get_case() attempts."""
    latest = case.get("latest_attempt")
    if latest is None and case.get("attempts"):
        latest = case["attempts"][-1]
    return latest


def summary_to_json(summary: CampaignSummary, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Machine-readable summary: exit status, per-cell counts, one entry per case."""
    def cell(c: CellSummary) -> dict[str, Any]:
        return {**asdict(c), "all_met": c.all_met}

    out_cases = []
    for case in sorted(cases, key=lambda c: int(c.get("position") or 0)):
        latest = latest_attempt(case)
        out_cases.append({
            "id": case.get("id"), "cell_key": case.get("cell_key"), "repeat": case.get("repeat"),
            "crash_index": case.get("crash_index"), "seed": case.get("seed"), "expect": case.get("expect"),
            "status": case.get("status"), "verdict": case.get("verdict"),
            "met_expectation": case.get("met_expectation"), "infra_retries": case.get("infra_retries"),
            "attempts": len(case["attempts"]) if "attempts" in case else (latest or {}).get("number", 0),
            "run_dir": (latest or {}).get("run_dir"), "error": (latest or {}).get("error"),
            "findings": (latest or {}).get("findings", []),
        })
    return {"campaign_id": summary.campaign_id, "exit_status": summary.exit_status,
            "cells": [cell(c) for c in summary.cells], "total": cell(summary.total), "cases": out_cases}
