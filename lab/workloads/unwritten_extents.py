"""unwritten-extents: DAX must never expose stale blocks, before or after a power cut.

The guest helper (images/guest/unwritten.c) first fills free space with a
recognisable pattern (every 64-bit word "PMSTALE!"), deletes that file and
waits until its blocks are free again, so a block handed out without zeroing
shows the pattern. It then fallocates `blocks` blocks (unwritten extents,
fsync'd), checks they read zeros through read(2) and a (MAP_SYNC) mapping,
and for each block i stores a 128-byte record into part of page i through
the mapping, flushes it, checks the rest of the page reads zeros, and sends
"ACK i". The host cuts the power after ACK k.

Findings: before the cut, any stale or nonzero byte the helper saw; after
recovery, for every block: the old pattern is a VIOLATION naming the block;
otherwise it must hold its record (or, not yet acknowledged, zeros or a torn
record), and every acknowledged block must hold its record in full (MAP_SYNC:
the conversion of the unwritten extent was durable before the store's page
was mapped writeable). If none of the file's blocks were the fill file's
(FIEMAP), the stale-data check saw nothing: INFRA-ERROR, not a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

NAME = "unwritten-extents"
RECORD = 128
FILL_WORD = b"PMSTALE!"  # unwritten.c's FILL_WORD in memory order
REC_MAGIC = b"UNWREC01"
WORKLOAD_FILE = "unwritten.dat"
FILL_FILE = "stale-fill.dat"
START_MARK = "checked"  # for time-offset crash points: after the fallocate checks
LIST_MAX = 32


class UnwrittenParams(BaseModel):
    """The keys a scenario's [workload] / [matrix] may set for this kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fallocated blocks, one record (and ACK) each. ext4 serves files of up to 16 blocks from per-CPU
    # preallocations made before the fill (measured: none of their blocks held the pattern), so below
    # 17 blocks the stale-data check is blind there and the run says so (stale-fill: INFRA-ERROR).
    blocks: int = Field(default=64, ge=1, le=1 << 18)
    # The stale pattern written into free space first. 256 MiB takes ~0.8 s under TCG and (on a fresh
    # 1 GiB filesystem) the file's blocks all come from it; 0 turns the stale-data check off.
    fill_mib: int = Field(default=256, ge=0, le=1 << 20)
    map_sync: bool = True  # MAP_SHARED_VALIDATE|MAP_SYNC (acknowledged blocks must survive) vs MAP_SHARED

    def argv(self, path: str, fill_path: str) -> list[str]:
        argv = ["unwritten", "--file", path, "--fill", fill_path, "--blocks", str(self.blocks),
                "--fill-mib", str(self.fill_mib)]
        return argv if self.map_sync else [*argv, "--no-map-sync"]


@dataclass(frozen=True)
class UnwrittenCheck(CutCheck):
    params: UnwrittenParams

    KIND: ClassVar[str] = NAME
    START_MARK: ClassVar[str] = START_MARK
    PARAMS: ClassVar[type[BaseModel]] = UnwrittenParams

    def __post_init__(self) -> None:
        if self.crash.after_ack is not None and self.crash.after_ack >= self.params.blocks:
            raise ConfigError(f"{NAME}: crash after ACK {self.crash.after_ack} is never reached: the workload "
                              f"acknowledges blocks 0..{self.params.blocks - 1}")


def make_check(spec: CheckSpec) -> UnwrittenCheck:
    if spec.crash is None:
        raise ConfigError(f"{NAME} cuts the power mid-workload: give a [crash] section (e.g. after_ack)")
    return UnwrittenCheck(spec.fs, spec.dax, params_as(UnwrittenParams, spec.params), spec.crash, shape=spec.shape,
                          seed=spec.seed)


def check_from_dict(data: dict[str, Any]) -> UnwrittenCheck:
    return UnwrittenCheck.from_dict(data)


# -- the record layout (mirrors unwritten.c) -----------------------------------------------

def record_offset(i: int) -> int:
    """Where record i sits inside page i."""
    return 64 * ((i * 7) % 60)


def record(i: int) -> bytes:
    head = REC_MAGIC + i.to_bytes(8, "little") + (i * PAGE + record_offset(i)).to_bytes(8, "little")
    return head + bytes(((i * 131 + j) & 0x7F) | 0x80 for j in range(24, RECORD))


def expected_page(i: int) -> bytes:
    off = record_offset(i)
    return bytes(off) + record(i) + bytes(PAGE - off - RECORD)


def has_fill(data: bytes) -> bool:
    """Does any 8-byte-aligned word hold the stale pattern?"""
    start = data.find(FILL_WORD)
    while start >= 0:
        if start % 8 == 0:
            return True
        start = data.find(FILL_WORD, start + 1)
    return False


# -- judging (pure: unit-tested without QEMU) ------------------------------------------------

@dataclass
class BlockReport:
    """Each recovered block's class: written (its record), zeros, torn (part of its record),
    stale (the fill pattern), corrupt (anything else), missing (beyond EOF)."""

    classes: dict[str, list[int]] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)  # acknowledged, but not written in full

    def add(self, cls: str, block: int) -> None:
        self.classes.setdefault(cls, []).append(block)

    def of(self, cls: str) -> list[int]:
        return self.classes.get(cls, [])

    def counts(self) -> dict[str, int]:
        return {cls: len(blocks) for cls, blocks in sorted(self.classes.items())}


def classify_block(page: bytes, i: int) -> str:
    if len(page) < PAGE:
        return "missing"
    if has_fill(page):
        return "stale"
    if page == expected_page(i):
        return "written"
    if page.count(0) == PAGE:
        return "zeros"
    off = record_offset(i)
    if page[:off].count(0) == off and page[off + RECORD:].count(0) == PAGE - off - RECORD:
        rec, got = record(i), page[off:off + RECORD]
        if all(got[k:k + 8] in (rec[k:k + 8], bytes(8)) for k in range(0, RECORD, 8)):
            return "torn"  # a record stored word by word, cut part way
    return "corrupt"


def judge_blocks(data: bytes, blocks: int, durable: list[int]) -> BlockReport:
    report = BlockReport()
    for i in range(blocks):
        cls = classify_block(data[i * PAGE:(i + 1) * PAGE], i)
        report.add(cls, i)
        if i in durable and cls != "written":
            report.lost.append(i)
    return report


def recovery_findings(size: int | None, data: bytes | None, read_ok: bool, params: UnwrittenParams,
                      durable: list[int], err: str = "") -> tuple[list[Finding], dict[str, Any]]:
    """Every block: its record or zeros, never the old pattern; every acknowledged block: its record."""
    expected_size = params.blocks * PAGE
    if size is None:
        return [Finding("stale-data", Verdict.VIOLATION,
                        f"{WORKLOAD_FILE} is missing after recovery although it was fsync'd after fallocate")], {}
    if not read_ok or data is None or len(data) != size:
        got = "nothing" if data is None else f"{len(data)} bytes"
        return [Finding("stale-data", Verdict.VIOLATION,
                        f"{WORKLOAD_FILE} ({size} bytes) does not read back in full: got {got}"
                        + (f" ({err.strip()})" if err.strip() else ""))], {"size": size}
    report = judge_blocks(data, params.blocks, durable)
    metrics: dict[str, Any] = {"size": size, "blocks": report.counts(), "durable": len(durable),
                               "lost": report.lost[:LIST_MAX]}
    findings: list[Finding] = []
    if size != expected_size:
        findings.append(Finding("stale-data", Verdict.VIOLATION,
                                f"{WORKLOAD_FILE} has size {size} after recovery; fallocate + fsync made it "
                                f"{expected_size}", {"size": size, "expected": expected_size}))
    stale, corrupt = report.of("stale"), report.of("corrupt")
    if stale:
        findings.append(Finding("stale-data", Verdict.VIOLATION,
                                f"{len(stale)} block(s) expose the old data of a deleted file (blocks "
                                f"{stale[:8]}): an unwritten or new block was not zeroed",
                                {"stale_blocks": stale[:LIST_MAX]}))
    if corrupt:
        findings.append(Finding("stale-data", Verdict.VIOLATION,
                                f"{len(corrupt)} block(s) hold neither their record nor zeros (blocks {corrupt[:8]})",
                                {"corrupt_blocks": corrupt[:LIST_MAX]}))
    if not stale and not corrupt and size == expected_size:
        findings.append(Finding("stale-data", Verdict.PASS,
                                f"all {params.blocks} blocks hold their record or zeros, none the old pattern",
                                {"blocks": report.counts()}))
    if report.lost:
        findings.append(Finding("persistence", Verdict.VIOLATION,
                                f"{len(report.lost)} of {len(durable)} acknowledged block(s) lost their record "
                                f"(blocks {report.lost[:8]})",
                                {"lost": report.lost[:LIST_MAX], "map_sync": params.map_sync}))
    else:
        findings.append(Finding("persistence", Verdict.PASS,
                                f"all {len(durable)} acknowledged block(s) hold their record",
                                {"durable": len(durable)}))
    return findings, metrics


def pre_cut_findings(stdout: bytes, marks: list[str], params: UnwrittenParams) -> tuple[list[Finding], dict[str, Any]]:
    """What the helper saw before the cut: zeros in the fallocated range and around each record,
    and whether its blocks came from the stale fill at all (else the check was blind)."""
    lines = json_lines(stdout)
    fill = next((d for d in lines if d.get("event") == "fill"), None)
    reuse = next((d for d in lines if d.get("event") == "reuse"), None)
    check = next((d for d in lines if d.get("event") == "check" and d.get("stage") == "fallocate"), None)
    bad = [d for d in lines if d.get("event") == "bad"]
    bad_marks = sorted({int(m[4:]) for m in marks if m.startswith("bad-") and m[4:].isdigit()})
    metrics: dict[str, Any] = {"fill": fill, "reuse": reuse, "fallocate_check": check, "bad": bad[:LIST_MAX],
                               "bad_marks": bad_marks[:LIST_MAX]}
    findings: list[Finding] = []
    if check is None:
        findings.append(Finding("unwritten-read", Verdict.INFRA_ERROR,
                                "the helper reported no check of the fallocated range before the cut"))
    else:
        keys = ("stale_read", "stale_map", "nonzero_read", "nonzero_map")
        seen = {k: check.get(f"{k}_blocks", []) for k in keys if check.get(k)}
        if seen:
            findings.append(Finding("unwritten-read", Verdict.VIOLATION,
                                    "freshly fallocated (unwritten) blocks did not read zeros: "
                                    + ", ".join(f"{k.replace('_', ' via ')} {v[:8]}" for k, v in seen.items()),
                                    {k: check.get(k) for k in keys}))
        else:
            findings.append(Finding("unwritten-read", Verdict.PASS,
                                    f"{params.blocks} fallocated blocks read zeros through read(2) and the mapping"))
    if bad or bad_marks:
        blocks = sorted({int(d["block"]) for d in bad if isinstance(d.get("block"), int)} | set(bad_marks))
        findings.append(Finding("partial-store", Verdict.VIOLATION,
                                f"after a partial-page store, {len(blocks)} block(s) did not read back as the record "
                                f"and zeros (blocks {blocks[:8]})", {"bad": bad[:LIST_MAX], "blocks": blocks}))
    if params.fill_mib:
        reused = reuse.get("reused_blocks") if reuse else None
        if not isinstance(reused, int) or reused == 0:
            findings.append(Finding("stale-fill", Verdict.INFRA_ERROR,
                                    "none of the file's blocks came from the stale fill (FIEMAP): the stale-data "
                                    "check was blind", {"reuse": reuse, "fill": fill}))
        else:
            findings.append(Finding("stale-fill", Verdict.PASS,
                                    f"{reused} of {params.blocks} blocks were the deleted fill file's", {"reuse": reuse}))
    return findings, metrics


# -- running -------------------------------------------------------------------------------

def _plan(check: UnwrittenCheck, triggers: tuple[CrashTrigger, ...]) -> CutPlan:
    def argv(mnt: PmemMount) -> list[str]:
        return check.params.argv(f"{mnt.mountpoint}/{WORKLOAD_FILE}", f"{mnt.mountpoint}/{FILL_FILE}")
    return CutPlan(check.fs, check.dax, argv, triggers, keep_capture=check.keep_capture)


def _pre_cut(check: UnwrittenCheck, pre: PreCut, metrics: dict[str, Any]) -> list[Finding]:
    findings, workload = pre_cut_findings(pre.stdout, pre.marks(), check.params)
    metrics["workload"] = workload
    return findings


def _judge(check: UnwrittenCheck, pre: PreCut, machine: Machine, mountpoint: str,
           metrics: dict[str, Any]) -> list[Finding]:
    recovered = read_recovered(machine, f"{mountpoint}/{WORKLOAD_FILE}")
    findings, recovered_metrics = recovery_findings(recovered.size, recovered.data, recovered.read_ok, check.params,
                                                    pre.durable, recovered.err)
    metrics["recovered"] = recovered_metrics
    return findings


POWER_CUT = PowerCut(plan=_plan, pre_cut=_pre_cut, judge=_judge)


def run(check: UnwrittenCheck, image: Image, accel: AccelVerdict, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    return run_cut_check(NAME, POWER_CUT, check, image, accel, run_dir, hooks)


KIND = WorkloadKind(
    name=NAME,
    purpose="unwritten extents and new DAX blocks read zeros, never a deleted file's data, across a power cut",
    params=UnwrittenParams,
    uses_crash=True,
    make_check=make_check,
    check_from_dict=check_from_dict,
    run=run,
    ack_count=lambda params: int(getattr(params, "blocks")),
    power_cut=POWER_CUT,
)
