"""Campaign summary for people and scripts: the terminal table and the JSON document.

The counting itself (``CampaignSummary``, exit status) lives with the store
(``lab.store.summary``); this module only renders it and the stored cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from lab.power_cut import POWER_CUT_MODEL
from lab.store.records import CaseRecord
from lab.store.summary import CampaignSummary, CellSummary

if TYPE_CHECKING:
    from lab.ui import UI

SUMMARY_COLUMNS = ["cell", "runs", "verdicts", "expected", "met", "not met", "infra errors", "unfinished"]


def _row(cell: CellSummary) -> list[str]:
    met = "yes" if cell.all_met else f"no ({cell.met}/{cell.runs})"
    return [cell.cell_key, str(cell.runs), cell.verdict_text(), "/".join(cell.expected) or "-", met,
            str(cell.not_met), str(cell.infra_errors), str(cell.unfinished)]


def summary_rows(summary: CampaignSummary) -> list[list[str]]:
    """One row per cell, then the totals row; plain text (no markup)."""
    return [_row(c) for c in summary.cells] + [_row(summary.total)]


def exit_meaning(summary: CampaignSummary) -> str:
    t = summary.total
    gaps = [f"{t.unfinished} unfinished"] if t.unfinished else []
    gaps += [f"{t.unexpected_infra_errors} unexpected INFRA-ERROR"] if t.unexpected_infra_errors else []
    return {0: "every case met its expectation",
            1: f"{t.not_met} case(s) did not meet their expectation",
            2: "incomplete evidence: " + (", ".join(gaps) or "no cases")}[summary.exit_status]


def render_summary(ui: UI, summary: CampaignSummary) -> None:
    # Cell keys may contain [brackets]: text, not rich markup.
    rows = [[escape(text) for text in row] for row in summary_rows(summary)]
    ui.table(f"campaign {escape(summary.campaign_id)}", SUMMARY_COLUMNS, rows)
    if summary.total.infra_retries:
        ui.info(f"infrastructure retries: {summary.total.infra_retries}")
    ui.info(f"exit status {summary.exit_status}: {exit_meaning(summary)}")
    ui.info(f"[dim]{POWER_CUT_MODEL}[/dim]")


def _case_json(case: CaseRecord) -> dict[str, Any]:
    latest = case.latest
    return {"id": case.id, "cell_key": case.cell_key, "repeat": case.repeat, "crash_index": case.crash_index,
            "crash_state": case.crash_state,
            "seed": case.seed, "expect": case.expect, "status": case.status, "verdict": case.verdict,
            "met_expectation": case.met_expectation, "infra_retries": case.infra_retries,
            "attempts": len(case.attempts), "run_dir": latest.run_dir if latest else None,
            "error": latest.error if latest else None,
            "findings": [f.to_dict() for f in latest.findings] if latest else []}


def summary_to_json(summary: CampaignSummary, cases: Sequence[CaseRecord]) -> dict[str, Any]:
    """Machine-readable summary: exit status, per-cell counts, one entry per case, the power-cut model."""
    def cell(c: CellSummary) -> dict[str, Any]:
        return {**asdict(c), "all_met": c.all_met}

    return {"campaign_id": summary.campaign_id, "exit_status": summary.exit_status,
            "exit_meaning": exit_meaning(summary), "power_cut_model": POWER_CUT_MODEL,
            "cells": [cell(c) for c in summary.cells], "total": cell(summary.total),
            "cases": [_case_json(c) for c in sorted(cases, key=lambda c: c.position)]}
