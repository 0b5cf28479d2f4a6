"""The MAP_SYNC power-cut check, end to end.

boot -> pmem setup -> mapsync workload (ACK per record) -> crash point ->
freeze -> capture -> destroy -> recovery boot on the capture -> mount
(journal/log replay) -> read the file -> unmount -> fsck -> oracles -> verdict.

A lab failure anywhere becomes INFRA-ERROR, a passed deadline HANG, a kernel
problem on either console KERNEL-BUG; result.json is written on every path.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab.crash.capture import Capture
from lab.crash.cut_flow import MOUNT_TIMEOUT_S, CrashTrigger, mount_recovered, save_events, wait_for_crash_point
from lab.crash.phases import PhaseTimer
from lab.crash.point import CrashPoint
from lab.crash.powercut import CutResult, capture_media, freeze_and_close
from lab.errors import AgentTimeout, GuestError, LabError
from lab.guest import pmem
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.oracles.fsck import run_fsck
from lab.oracles.kernel_log import check_consoles
from lab.oracles.persistence import check_persistence
from lab.runs import write_json
from lab.verdict import Verdict, combine
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape, lab_spec, ready_timeout
from lab.vm.machine import Machine
from lab.vm.media import create_sparse
from lab.workloads.base import RunHooks, json_lines, shape_dict
from lab.workloads.mapsync import WORKLOAD_FILE, MapsyncParams

WORKLOAD_TIMEOUT_S = 300.0
EXPECTED_NON_DAX_ERRNO = "EOPNOTSUPP"  # mmap(2): MAP_SYNC on a file that does not support it


@dataclass(frozen=True)
class MapsyncCheck:
    """Everything that defines one power-cut check: pure data."""

    fs: Filesystem
    workload: MapsyncParams
    crash: CrashPoint
    dax: DaxMode = DaxMode.ALWAYS
    shape: MachineShape = MachineShape()
    keep_capture: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"fs": self.fs.value, "dax": self.dax.value, "workload": self.workload.to_dict(),
                "crash": self.crash.to_dict(), **shape_dict(self.shape)}


@dataclass
class CheckResult:
    verdict: Verdict
    check: MapsyncCheck
    run_dir: Path
    image_id: str
    kernel_version: str
    accelerator: str
    mmap: dict[str, Any] = field(default_factory=dict)
    cut: CutResult | None = None
    captures: list[Capture] = field(default_factory=list)
    survived: int | None = None
    lost: list[int] = field(default_factory=list)
    corrupt: list[dict[str, Any]] = field(default_factory=list)
    fsck_clean: bool | None = None
    kernel_problems: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    status: str = "complete"

    @property
    def acked(self) -> int:
        return len(self.cut.durable) if self.cut else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value, "status": self.status, "error": self.error,
            "fs": self.check.fs.value, "dax": self.check.dax.value, "map_sync": self.check.workload.map_sync,
            "prealloc": self.check.workload.prealloc, "records": self.check.workload.records,
            "crash_point": self.check.crash.to_dict(), "crash_point_text": self.check.crash.describe(),
            "acked": self.acked, "durable": self.cut.durable if self.cut else [],
            "acked_after_freeze": self.cut.acked_after_freeze if self.cut else [],
            "freeze_latency_s": self.cut.freeze_latency_s if self.cut else None,
            "survived": self.survived, "lost": self.lost, "corrupt": self.corrupt,
            "fsck_clean": self.fsck_clean, "kernel_problems": self.kernel_problems, "mmap": self.mmap,
            "captures": [{"path": str(c.path), "method": c.method, "seconds": round(c.seconds, 4),
                          "data_bytes": c.data_bytes, "size": c.size} for c in self.captures],
            "findings": [f.to_dict() for f in self.findings], "timings": self.timings,
            "image_id": self.image_id, "kernel_version": self.kernel_version, "accelerator": self.accelerator,
            "check": self.check.to_dict(), "run_dir": str(self.run_dir),
        }


def _mmap_outcome(stdout: bytes) -> dict[str, Any]:
    """The mapsync helper's {"event":"mmap",...} line, if it printed one."""
    return next((data for data in json_lines(stdout) if data.get("event") == "mmap"), {})


def _contract_finding(check: MapsyncCheck, mmap: dict[str, Any], file_dax: bool | None) -> Finding | None:
    """What mmap must answer: MAP_SYNC on a DAX file succeeds, on a non-DAX file EOPNOTSUPP."""
    if not check.workload.map_sync or not mmap:
        return None
    got = "success" if mmap.get("ok") else str(mmap.get("errno"))
    expected = "success" if file_dax else EXPECTED_NON_DAX_ERRNO
    details = {"expected": expected, "got": got, "file_dax": file_dax}
    if got == expected:
        return Finding("mmap-contract", Verdict.PASS, f"MAP_SYNC mmap on a {'DAX' if file_dax else 'non-DAX'} file: "
                       f"{got}, as mmap(2) defines", details)
    return Finding("mmap-contract", Verdict.VIOLATION, f"MAP_SYNC mmap on a {'DAX' if file_dax else 'non-DAX'} "
                   f"file: expected {expected}, got {got}", details)


class _Run:
    """One execution of a MapsyncCheck; holds what the phases hand each other."""

    def __init__(self, check: MapsyncCheck, image: Image, accel: AccelVerdict, run_dir: Path,
                 hooks: RunHooks) -> None:
        self.check = check
        self.image = image
        self.accel = accel
        self.run_dir = run_dir
        self.hooks = hooks
        self.progress = hooks.progress
        self.timer = PhaseTimer(hooks.on_phase)
        self.result = CheckResult(Verdict.INFRA_ERROR, check, run_dir, image.id, image.kernel_version,
                                  accel.accel.value)
        self.consoles: dict[str, Path] = {}
        self.file_dax: bool | None = None

    def machine(self, name: str, media: Path) -> Machine:
        spec = lab_spec(self.image, name, self.run_dir, [media], self.accel.accel, self.check.shape)
        self.consoles[name] = spec.console_log
        machine = Machine(spec, self.run_dir)
        self.hooks.on_machine(machine)
        return machine

    # -- phase groups ---------------------------------------------------
    def workload_and_cut(self) -> bool:
        """Run the workload to the crash point and cut. False when there is nothing to recover."""
        check, timer = self.check, self.timer
        media = self.run_dir / "nvdimm0.img"
        create_sparse(media, check.shape.nvdimm_size)
        with self.machine("workload", media) as machine:
            with timer.phase("boot"):
                machine.wait_ready(ready_timeout(self.accel.accel))
            with timer.phase("setup"):
                mnt = pmem.setup(machine.agent, check.fs, check.dax)
                self.file_dax = mnt.dax_active
            self.progress(f"workload: {check.workload.records} records, MAP_SYNC "
                          f"{'on' if check.workload.map_sync else 'off'}, cut {check.crash.describe()}")
            with timer.phase("workload"):
                handle = machine.agent.start(check.workload.argv(f"{mnt.mountpoint}/{WORKLOAD_FILE}"),
                                             timeout=WORKLOAD_TIMEOUT_S)
                trigger = wait_for_crash_point(machine, handle, CrashTrigger.from_point(check.crash, "mmap-ok"),
                                               WORKLOAD_TIMEOUT_S, check.crash.describe())
            if trigger is None:  # the workload ended before the crash point
                outcome = handle.wait(timeout=30)
                self.result.mmap = _mmap_outcome(outcome.stdout)
                save_events(machine, self.run_dir)
                if not outcome.ok:
                    if self.result.mmap and not self.result.mmap.get("ok"):
                        return False  # mmap refused: the contract finding judges it
                    raise GuestError(f"the mapsync workload failed before the crash point: {outcome.describe()}")
                trigger = time.monotonic()
            with timer.phase("freeze"):
                cut = freeze_and_close(machine, trigger)
            self.result.cut = cut
            save_events(machine, self.run_dir)
            with timer.phase("capture"):
                self.result.captures = capture_media(machine, self.run_dir / "capture")
            with timer.phase("destroy"):
                machine.destroy()
            if not self.result.mmap:
                self.result.mmap = _mmap_outcome(handle.output()[0])
        media.unlink(missing_ok=True)  # the capture is the evidence; the live file is not needed
        return True

    def recover_and_judge(self) -> list[Finding]:
        check, timer, result = self.check, self.timer, self.result
        assert result.captures
        findings: list[Finding] = []
        with self.machine("recovery", result.captures[0].path) as machine:
            with timer.phase("recovery_boot"):
                machine.wait_ready(ready_timeout(self.accel.accel))
            with timer.phase("recovery_mount"):
                device, mounted = mount_recovered(machine, check.fs, check.dax)
            if mounted.timed_out:
                raise AgentTimeout(f"the recovery mount did not finish within {MOUNT_TIMEOUT_S:.0f} s")
            if not mounted.ok:
                findings.append(Finding("persistence", Verdict.VIOLATION,
                                        f"the recovered filesystem does not mount: {mounted.err_text.strip()}"))
            else:
                with timer.phase("read"):
                    data = self._read_file(machine, f"{pmem.MOUNTPOINT}/{WORKLOAD_FILE}")
                    pmem.umount(machine.agent)
                persistence = check_persistence(data, result.cut.durable if result.cut else [],
                                                check.workload.layout, check.workload.records)
                result.survived, result.lost, result.corrupt = (persistence.survived, persistence.lost,
                                                                persistence.corrupt)
                findings.append(persistence.finding())
            with timer.phase("fsck"):
                fsck_finding, output = run_fsck(machine.agent, check.fs, device)
                (self.run_dir / "fsck.txt").write_text(output)
                result.fsck_clean = fsck_finding.verdict is Verdict.PASS
                findings.append(fsck_finding)
            with timer.phase("shutdown"):
                machine.poweroff(timeout=30)
        return findings

    @staticmethod
    def _read_file(machine: Machine, path: str) -> bytes:
        """The workload file's bytes; empty when the file did not survive at all."""
        exists = machine.run(["test", "-f", path], timeout=10, check=False)
        if not exists.ok:
            return b""
        return machine.run(["cat", path], timeout=120, check=True).stdout


def run_mapsync_check(check: MapsyncCheck, image: Image, accel: AccelVerdict, run_dir: Path,
                      progress: Callable[[str], None] = lambda _: None, hooks: RunHooks | None = None) -> CheckResult:
    """Run one check; always returns a result (and writes result.json), never a silent pass."""
    check.crash.validate_for(check.workload.records)
    run = _Run(check, image, accel, run_dir, hooks or RunHooks(progress=progress))
    result = run.result
    findings: list[Finding] = []
    write_json(run_dir / "result.json", {**result.to_dict(), "status": "running"})
    try:
        if run.workload_and_cut():
            findings += run.recover_and_judge()
    except AgentTimeout as exc:
        findings.append(Finding("deadline", Verdict.HANG, f"{run.timer.current or 'run'}: {exc}"))
        result.error = str(exc)
    except LabError as exc:
        findings.append(Finding("lab", Verdict.INFRA_ERROR, f"{run.timer.current or 'run'}: {exc}"))
        result.error = str(exc)
        result.status = "failed"
    except BaseException as exc:  # Ctrl-C, SIGTERM, a bug in the lab: recorded, then re-raised
        result.status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        _finish(run, findings)
        raise
    _finish(run, findings)
    return result


def _finish(run: _Run, findings: list[Finding]) -> None:
    result = run.result
    contract = _contract_finding(run.check, result.mmap, run.file_dax)
    if contract is not None:
        findings.insert(0, contract)
    kernel_finding, problems = check_consoles(run.consoles)
    result.kernel_problems = problems
    findings.append(kernel_finding)
    result.findings = findings
    result.verdict = combine(f.verdict for f in findings)
    if result.status in ("failed", "interrupted"):
        result.verdict = combine([result.verdict, Verdict.INFRA_ERROR])
    result.timings = {**run.timer.timings, "total": run.timer.total()}
    if not run.check.keep_capture:
        shutil.rmtree(run.run_dir / "capture", ignore_errors=True)
    write_json(run.run_dir / "result.json", result.to_dict())
