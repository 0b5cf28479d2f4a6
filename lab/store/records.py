"""What the results store hands out: frozen records built from its rows.

Reports, the CLI and exports read these, never ORM rows or loose dicts. A
record's ``to_dict()`` is its JSON form (the shape ``--json`` prints). The
per-kind payload of an attempt (``result``: a ``CheckResult.to_dict()``) and a
case's own JSON (``case``: a ``lab.cases.Case.to_dict()``) stay mappings: each
workload kind reads its own.

This module imports nothing of the lab: workload kinds and reports may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

JsonMap = Mapping[str, Any]
DEFAULT_WORKLOAD = "mapsync"  # cases stored before kinds existed carry no "workload"


def iso(value: datetime | None) -> str | None:
    """A stored instant as ISO 8601 text; naive values (SQLite) were stored as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


@dataclass(frozen=True)
class FindingRecord:
    oracle: str
    verdict: str
    summary: str
    details: JsonMap = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"oracle": self.oracle, "verdict": self.verdict, "summary": self.summary, "details": self.details}


@dataclass(frozen=True)
class ArtifactRecord:
    kind: str  # result, console, events, fsck, capture
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path}


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    campaign_id: str
    case_id: str
    number: int  # 1 for the first attempt of a case
    status: str
    verdict: str | None
    started_at: datetime | None
    finished_at: datetime | None
    run_dir: str
    error: str | None = None
    result: JsonMap | None = None
    findings: tuple[FindingRecord, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    artifacts: tuple[ArtifactRecord, ...] = ()
    host: str | None = None  # the host (or cluster worker) that ran it

    @property
    def rerun(self) -> bool:
        """A re-run stored after the campaign judged the case (ResultsStore.add_rerun): evidence of
        flakiness, never the case's verdict."""
        return bool(self.result and self.result.get("rerun"))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "campaign_id": self.campaign_id, "case_id": self.case_id, "number": self.number,
                "host": self.host,
                "status": self.status, "verdict": self.verdict, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "run_dir": self.run_dir, "error": self.error,
                "result": self.result, "findings": [f.to_dict() for f in self.findings],
                "timings": dict(self.timings), "artifacts": [a.to_dict() for a in self.artifacts]}


@dataclass(frozen=True)
class CaseRecord:
    id: str
    campaign_id: str
    cell_key: str
    repeat: int
    crash_index: int
    seed: int
    expect: str
    position: int
    status: str
    verdict: str | None = None
    met_expectation: bool | None = None
    infra_retries: int = 0
    cell: JsonMap = field(default_factory=dict)
    case: JsonMap = field(default_factory=dict)  # lab.cases.Case.to_dict(): what `repro` re-runs
    attempts: tuple[AttemptRecord, ...] = ()  # oldest first

    @property
    def finished(self) -> bool:
        return self.status == "finished" and self.verdict is not None

    @property
    def latest(self) -> AttemptRecord | None:
        """The newest attempt the campaign judged (re-runs stored later are not the case's verdict)."""
        judged = [a for a in self.attempts if not a.rerun]
        return judged[-1] if judged else None

    @property
    def reruns(self) -> tuple[AttemptRecord, ...]:
        return tuple(a for a in self.attempts if a.rerun)

    @property
    def workload(self) -> str:
        return str(self.case.get("workload") or DEFAULT_WORKLOAD)

    @property
    def crash_state(self) -> str | None:
        """The ADR crash state the case judged (adr:drop-all, adr:subset-<k>:seed-<s>); None for others."""
        state = self.case.get("crash_state")
        return str(state) if state else None

    @property
    def title(self) -> str:
        """How lists and reports name the case within its campaign."""
        state = f" {self.crash_state}" if self.crash_state else ""
        return f"{self.cell_key} repeat {self.repeat} crash point {self.crash_index}{state}"

    def to_dict(self, *, all_attempts: bool = True) -> dict[str, Any]:
        """all_attempts=False: only the newest (as a campaign listing prints each of its cases)."""
        data: dict[str, Any] = {
            "id": self.id, "campaign_id": self.campaign_id, "cell_key": self.cell_key, "cell": self.cell,
            "repeat": self.repeat, "crash_index": self.crash_index, "crash_state": self.crash_state,
            "seed": self.seed, "expect": self.expect,
            "position": self.position, "status": self.status, "verdict": self.verdict,
            "met_expectation": self.met_expectation, "infra_retries": self.infra_retries, "case": self.case,
            "attempts_count": len(self.attempts)}
        if all_attempts:
            data["attempts"] = [a.to_dict() for a in self.attempts]
        else:
            data["latest_attempt"] = self.latest.to_dict() if self.latest else None
        return data


@dataclass(frozen=True)
class CampaignRecord:
    id: str
    scenario_name: str
    scenario_path: str
    scenario_hash: str
    image_id: str
    kernel_version: str
    accelerator: str
    jobs: int
    status: str
    created_at: datetime | None
    finished_at: datetime | None = None
    scenario_text: str | None = None  # left out of listings
    cases: tuple[CaseRecord, ...] = ()  # position order; empty in listings

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "scenario_name": self.scenario_name, "scenario_path": self.scenario_path,
            "scenario_hash": self.scenario_hash, "image_id": self.image_id, "kernel_version": self.kernel_version,
            "accelerator": self.accelerator, "jobs": self.jobs, "status": self.status,
            "created_at": iso(self.created_at), "finished_at": iso(self.finished_at)}
        if self.scenario_text is not None:
            data["scenario_text"] = self.scenario_text
        data["cases"] = [c.to_dict(all_attempts=False) for c in self.cases]
        return data


@dataclass(frozen=True)
class CampaignListing:
    """One line of `results list`: a campaign without its cases, and how far they got."""

    campaign: CampaignRecord
    cases: int
    finished: int
    met: int

    def to_dict(self) -> dict[str, Any]:
        # "cases" is a count here, as `results list --json` has always printed it.
        return {**self.campaign.to_dict(), "cases": self.cases, "finished": self.finished, "met": self.met}
