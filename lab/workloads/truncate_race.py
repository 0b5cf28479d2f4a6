"""truncate-fault-race: DAX page faults racing truncation, with a power cut in the middle.

The guest helper (images/guest/truncrace.c) has writer threads store to
random pages of a MAP_SHARED DAX mapping while the main thread truncates the
file down to a random page boundary and back up, again and again. A store
beyond EOF must raise SIGBUS (caught and counted); after each re-extension,
with the writers parked, every page beyond the truncation point must read
zeros through the mapping and with pread(2) - a nonzero byte is stale data.
The host cuts the power a time offset after the helper's "MARK running".

Findings: before the cut, the helper's own counts (the last progress line and
its "MARK stale" events): any stale page or a SIGBUS inside EOF is a
VIOLATION; a race that made no progress before the cut is INFRA-ERROR (the
check saw nothing). After recovery (lab/crash/cut_flow.py): the filesystem
mounts, the file (fsync'd before the race) exists, its size is a whole number
of pages no larger than the original, it reads back in full; fsck is clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lab.crash.cut_flow import CrashTrigger, CutCheck, CutPlan, PowerCut, PreCut, read_recovered, run_cut_check
from lab.errors import ConfigError
from lab.guest.pmem import PmemMount
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.oracles.records import PAGE_SIZE as PAGE
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.machine import Machine
from lab.workloads.base import CheckSpec, WorkloadKind, json_lines, params_as
from lab.runner.guest_run import RunHooks, WorkloadResult

NAME = "truncate-fault-race"
WORKLOAD_FILE = "truncrace.dat"
START_MARK = "running"
STALE_MARK = "stale"
COUNTS = ("stores", "sigbus", "truncates", "stale", "check_sigbus", "read_errors")


class TruncateRaceParams(BaseModel):
    """The keys a scenario's [workload] / [matrix] may set for this kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pages: int = Field(default=64, ge=2, le=1 << 20)  # the file's full size, in pages
    threads: int = Field(default=2, ge=1, le=64)  # writer threads (the truncating thread is extra)
    seconds: float = Field(default=5.0, gt=0, le=3600, allow_inf_nan=False)  # how long the race runs

    def argv(self, path: str, seed: int) -> list[str]:
        return ["truncrace", "--file", path, "--pages", str(self.pages), "--threads", str(self.threads),
                "--seconds", f"{self.seconds:g}", "--seed", str(seed)]


@dataclass(frozen=True)
class TruncateRaceCheck(CutCheck):
    params: TruncateRaceParams

    KIND: ClassVar[str] = NAME
    START_MARK: ClassVar[str] = START_MARK
    PARAMS: ClassVar[type[BaseModel]] = TruncateRaceParams

    def __post_init__(self) -> None:
        if self.crash.after_seconds is None:
            raise ConfigError(f"{NAME}: the crash point is a time offset after the race starts "
                              f"(strategy time_offsets); got {self.crash.describe()}")


def make_check(spec: CheckSpec) -> TruncateRaceCheck:
    if spec.crash is None:
        raise ConfigError(f"{NAME} cuts the power mid-race: give a [crash] section (strategy time_offsets)")
    params = params_as(TruncateRaceParams, spec.params)
    return TruncateRaceCheck(spec.fs, spec.dax, params, spec.crash, shape=spec.shape, seed=spec.seed)


def check_from_dict(data: dict[str, Any]) -> TruncateRaceCheck:
    return TruncateRaceCheck.from_dict(data)


# -- judging (pure: unit-tested without QEMU) ------------------------------------------------

def last_counts(stdout: bytes) -> dict[str, Any] | None:
    """The helper's last progress (or done) line before the cut: its counts and elapsed time."""
    last: dict[str, Any] | None = None
    for data in json_lines(stdout):
        if data.get("event") in ("progress", "done") and all(isinstance(data.get(k), int) for k in COUNTS):
            last = {k: data[k] for k in (*COUNTS, "elapsed_s") if k in data}
            last["event"] = data["event"]
    return last


def stale_reports(stdout: bytes) -> list[dict[str, Any]]:
    return [d for d in json_lines(stdout) if d.get("event") == "stale"]


def pre_cut_findings(stdout: bytes, marks: list[str]) -> tuple[list[Finding], dict[str, Any]]:
    """What the helper saw before the cut: stale pages and SIGBUS inside EOF are violations;
    a race that did not run is a blind check (INFRA-ERROR). Returns (findings, metrics)."""
    counts = last_counts(stdout)
    reports = stale_reports(stdout)
    stale_marks = sum(1 for m in marks if m == STALE_MARK)
    metrics: dict[str, Any] = {"counts": counts, "stale_marks": stale_marks, "stale_reports": reports[:16]}
    if counts is None and not reports and not stale_marks:
        return [Finding("truncate-race", Verdict.INFRA_ERROR,
                        "the race reported no counts before the cut: nothing was checked")], metrics
    stale = max(counts["stale"] if counts else 0, len(reports), stale_marks)
    findings: list[Finding] = []
    if stale:
        pages = sorted({int(r["page"]) for r in reports if isinstance(r.get("page"), int)})
        findings.append(Finding("truncate-race", Verdict.VIOLATION,
                                f"{stale} stale page read(s) after re-extension: pages beyond the truncation "
                                f"point held old data instead of zeros (pages {pages[:8]})",
                                {"stale": stale, "reports": reports[:16]}))
    if counts and counts["check_sigbus"]:
        findings.append(Finding("truncate-race", Verdict.VIOLATION,
                                f"{counts['check_sigbus']} SIGBUS on reads inside EOF (file at full size, "
                                "nothing truncating)", {"check_sigbus": counts["check_sigbus"]}))
    if counts and counts["read_errors"]:
        findings.append(Finding("truncate-race", Verdict.VIOLATION,
                                f"{counts['read_errors']} pread(2) error(s) inside EOF",
                                {"read_errors": counts["read_errors"]}))
    if findings:
        return findings, metrics
    assert counts is not None
    if counts["truncates"] == 0 or counts["stores"] == 0:
        return [Finding("truncate-race", Verdict.INFRA_ERROR,
                        f"the race did not run before the cut ({counts['truncates']} truncates, "
                        f"{counts['stores']} stores): nothing was checked", {"counts": counts})], metrics
    return [Finding("truncate-race", Verdict.PASS,
                    f"{counts['truncates']} truncate cycles, {counts['stores']} stores, {counts['sigbus']} SIGBUS "
                    f"beyond EOF, no stale page (counts at {counts.get('elapsed_s', 0):.2f} s)",
                    {"counts": counts})], metrics


def judge_file(size: int | None, data: bytes | None, read_ok: bool, pages: int, err: str = "") -> Finding:
    """The recovered file: present (it was fsync'd before the race), a whole number of pages no
    larger than the original, and readable in full."""
    if size is None:
        return Finding("recovered-file", Verdict.VIOLATION,
                       f"{WORKLOAD_FILE} is missing after recovery although it was fsync'd before the race")
    details = {"size": size, "pages": pages}
    if size % PAGE or size > pages * PAGE:
        return Finding("recovered-file", Verdict.VIOLATION,
                       f"{WORKLOAD_FILE} has size {size} after recovery, a size the workload never set "
                       f"(it only set whole pages up to {pages * PAGE})", details)
    if not read_ok or data is None or len(data) != size:
        got = "nothing" if data is None else f"{len(data)} bytes"
        return Finding("recovered-file", Verdict.VIOLATION,
                       f"{WORKLOAD_FILE} ({size} bytes) does not read back in full: got {got}"
                       + (f" ({err.strip()})" if err.strip() else ""), details)
    return Finding("recovered-file", Verdict.PASS,
                   f"{WORKLOAD_FILE} recovered with {size // PAGE} of {pages} pages and reads back in full", details)


# -- running -------------------------------------------------------------------------------

def _plan(check: TruncateRaceCheck, triggers: tuple[CrashTrigger, ...]) -> CutPlan:
    def argv(mnt: PmemMount) -> list[str]:
        return check.params.argv(f"{mnt.mountpoint}/{WORKLOAD_FILE}", check.seed)
    return CutPlan(check.fs, check.dax, argv, triggers, workload_timeout=check.params.seconds + 120.0,
                   keep_capture=check.keep_capture)


def _pre_cut(check: TruncateRaceCheck, pre: PreCut, metrics: dict[str, Any]) -> list[Finding]:
    findings, race = pre_cut_findings(pre.stdout, pre.marks())
    metrics["race"] = race
    return findings


def _judge(check: TruncateRaceCheck, pre: PreCut, machine: Machine, mountpoint: str,
           metrics: dict[str, Any]) -> list[Finding]:
    recovered = read_recovered(machine, f"{mountpoint}/{WORKLOAD_FILE}")
    metrics["recovered_size"] = recovered.size
    return [judge_file(recovered.size, recovered.data, recovered.read_ok, check.params.pages, recovered.err)]


POWER_CUT = PowerCut(plan=_plan, pre_cut=_pre_cut, judge=_judge)


def run(check: TruncateRaceCheck, image: Image, accel: AccelVerdict, run_dir: Path,
        hooks: RunHooks) -> WorkloadResult:
    return run_cut_check(NAME, POWER_CUT, check, image, accel, run_dir, hooks)


KIND = WorkloadKind(
    name=NAME,
    purpose="DAX faults racing truncate down/up: SIGBUS beyond EOF, zeros after re-extension, clean fsck after a cut",
    params=TruncateRaceParams,
    uses_crash=True,
    make_check=make_check,
    check_from_dict=check_from_dict,
    run=run,
    ack_count=None,
    power_cut=POWER_CUT,
)
