"""A power cut in the middle of a workload, then recovery and a kind's judge: the shared flow.

boot on fresh media -> pmem setup -> start the workload -> crash trigger (ACK k,
MARK m, or a time offset after a MARK) -> freeze -> capture -> destroy ->
recovery boot on the capture -> mount with the same dax mode (journal/log
replay; a mount failure is a VIOLATION) -> the kind's judge(machine,
mountpoint) -> unmount -> fsck -> poweroff.

The shape is the MAP_SYNC check's (lab/crash/mapsync_check.py), made generic
over the workload command and the judge, for kinds run through
lab.workloads.base.GuestRun and run_guarded: those map AgentTimeout to HANG,
LabError to INFRA-ERROR, scan the consoles, and write result.json. What the
flow learns goes into ``run.result.metrics["cut"]`` and ``["recovery"]``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Self

from pydantic import BaseModel

from lab.crash.capture import Capture
from lab.crash.point import CrashPoint
from lab.crash.powercut import CutResult, capture_media, freeze_and_close
from lab.errors import AgentTimeout, ConfigError, GuestError
from lab.guest import pmem
from lab.guest.agent import CommandResult, RunHandle
from lab.guest.events import Event
from lab.guest.pmem import DaxMode, Filesystem, PmemMount
from lab.oracles.finding import Finding
from lab.oracles.fsck import run_fsck
from lab.verdict import Verdict
from lab.vm.boot import MachineShape, ready_timeout
from lab.vm.machine import Machine
from lab.workloads.base import GuestRun, shape_dict, shape_from_dict

WORKLOAD_TIMEOUT_S = 300.0
MOUNT_TIMEOUT_S = 120.0
POLL_S = 0.2

Judge = Callable[[Machine, str], list[Finding]]  # (recovery machine, mountpoint) -> findings


@dataclass(frozen=True)
class CrashTrigger:
    """When to cut: right after the host reads ACK `ack` (or any later one), at MARK `mark`,
    or `seconds` after MARK `mark`."""

    ack: int | None = None
    mark: str | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.ack is None) == (self.mark is None):
            raise ConfigError("crash trigger: give exactly one of ack or mark")
        if self.seconds is not None and self.mark is None:
            raise ConfigError("crash trigger: a time offset counts from a MARK; give mark too")
        if self.ack is not None and self.ack < 0:
            raise ConfigError(f"crash trigger: ack must be >= 0, got {self.ack}")
        if self.seconds is not None and self.seconds < 0:
            raise ConfigError(f"crash trigger: seconds must be >= 0, got {self.seconds}")

    @classmethod
    def from_point(cls, point: CrashPoint, start_mark: str) -> CrashTrigger:
        """A scenario's crash point: after_ack k is ACK k, after_seconds s is s after `start_mark`."""
        if point.after_ack is not None:
            return cls(ack=point.after_ack)
        return cls(mark=start_mark, seconds=point.after_seconds)

    def matches(self, event: Event) -> bool:
        """Is this the event the cut (or its time offset) counts from?"""
        if self.ack is not None:
            return event.ack is not None and event.ack >= self.ack
        return event.kind == "MARK" and event.arg == self.mark

    def describe(self) -> str:
        if self.ack is not None:
            return f"after ACK {self.ack}"
        if self.seconds is None:
            return f"at MARK {self.mark}"
        return f"{self.seconds:g} s after MARK {self.mark}"

    def to_dict(self) -> dict[str, Any]:
        return {"ack": self.ack, "mark": self.mark, "seconds": self.seconds}


@dataclass(frozen=True)
class CutCheck:
    """A power-cut kind's check (pure data): the cell, the crash point, and the run options. A kind
    subclasses it, naming its params model (and the field's type), its name and START_MARK, the MARK
    a time-offset crash point counts from."""

    fs: Filesystem
    dax: DaxMode
    params: BaseModel
    crash: CrashPoint
    shape: MachineShape = MachineShape()
    seed: int = 1
    keep_capture: bool = False

    KIND: ClassVar[str]
    START_MARK: ClassVar[str]
    PARAMS: ClassVar[type[BaseModel]]

    @property
    def trigger(self) -> CrashTrigger:
        return CrashTrigger.from_point(self.crash, self.START_MARK)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "fs": self.fs.value, "dax": self.dax.value, "params": self.params.model_dump(),
                "crash": self.crash.to_dict(), **shape_dict(self.shape), "seed": self.seed,
                "keep_capture": self.keep_capture}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of to_dict."""
        return cls(fs=Filesystem(data["fs"]), dax=DaxMode(data["dax"]),
                   params=cls.PARAMS.model_validate(data["params"]), crash=CrashPoint.from_dict(data["crash"]),
                   shape=shape_from_dict(data),
                   seed=int(data.get("seed", 1)), keep_capture=bool(data.get("keep_capture", False)))


@dataclass(frozen=True)
class CutPlan:
    """What the flow runs: the machine's filesystem, the workload command, and when to cut."""

    fs: Filesystem
    dax: DaxMode
    argv: Callable[[PmemMount], list[str]]  # the workload command line, given the mounted filesystem
    trigger: CrashTrigger
    workload_timeout: float = WORKLOAD_TIMEOUT_S
    keep_capture: bool = False


@dataclass
class PreCut:
    """What the host knew when it cut: the durable ACKs, the workload's output and events so far."""

    cut: CutResult
    cut_time: float  # host monotonic time the stop was issued
    mount: PmemMount
    stdout: bytes
    stderr: bytes
    events: list[Event]
    finished_first: bool  # the workload ended before the crash point: the cut found it at rest
    exit: CommandResult | None  # how it ended, if it did
    captures: list[Capture] = field(default_factory=list)

    @property
    def durable(self) -> list[int]:
        return self.cut.durable

    def marks(self) -> list[str]:
        """MARK names read before the stop was issued, in order."""
        return [e.arg for e in self.events if e.kind == "MARK" and e.host_time <= self.cut_time]


class PowerCutFlow:
    """One workload cut mid-run and recovered; a kind makes one per check."""

    def __init__(self, run: GuestRun, plan: CutPlan) -> None:
        self.run = run
        self.plan = plan
        self.pre: PreCut | None = None
        self.metrics = run.result.metrics

    # -- the machine that loses its power ------------------------------------
    def workload_and_cut(self) -> PreCut:
        run, plan = self.run, self.plan
        media = run.fresh_media()
        ok = False
        try:
            pre = self._run_and_cut(media)
            ok = True
        finally:
            # The capture is the evidence; the live file (real data up to the NVDIMM's size) is not
            # needed. After a failure it stays only where captures are kept, for a look at it.
            if ok or not plan.keep_capture:
                media.unlink(missing_ok=True)
        cut, captures = pre.cut, pre.captures
        self._save_output(pre.stdout, pre.stderr)
        self.metrics["cut"] = {
            "trigger": plan.trigger.to_dict(), "trigger_text": plan.trigger.describe(),
            "durable": len(cut.durable), "last_durable": cut.durable[-1] if cut.durable else None,
            "acked_after_freeze": cut.acked_after_freeze, "freeze_latency_s": cut.freeze_latency_s,
            "finished_first": pre.finished_first,
            "captures": [{"path": str(c.path), "method": c.method, "seconds": round(c.seconds, 4),
                          "data_bytes": c.data_bytes, "size": c.size} for c in captures],
        }
        self.pre = pre
        return pre

    def _run_and_cut(self, media: Path) -> PreCut:
        run, plan = self.run, self.plan
        with run.machine("workload", [media]) as machine:
            with run.phase("boot"):
                machine.wait_ready(ready_timeout(run.accel.accel))
            with run.phase("setup"):
                mnt = pmem.setup(machine.agent, plan.fs, plan.dax)
            argv = plan.argv(mnt)
            run.hooks.progress(f"workload: {' '.join(argv)}; cut {plan.trigger.describe()}")
            with run.phase("workload"):
                handle = machine.agent.start(argv, timeout=plan.workload_timeout)
                trigger = wait_for_crash_point(machine, handle, plan.trigger, plan.workload_timeout)
            finished: CommandResult | None = None
            if trigger is None:  # the workload ended before the crash point
                finished = handle.wait(timeout=30)
                if not finished.ok:
                    save_events(machine, run.run_dir)
                    self._save_output(finished.stdout, finished.stderr)
                    tail = finished.err_text.strip()[-2000:]
                    raise GuestError(f"the workload {argv[0]} failed before the crash point "
                                     f"({plan.trigger.describe()}): it {finished.describe()}"
                                     + (f"; stderr: {tail}" if tail else ""))
                trigger = time.monotonic()  # cut the machine at rest
            with run.phase("freeze"):
                issued = time.monotonic()
                cut = freeze_and_close(machine, trigger)
            save_events(machine, run.run_dir)
            events = machine.events.snapshot()
            stdout, stderr = (finished.stdout, finished.stderr) if finished else handle.output()
            with run.phase("capture"):
                captures = capture_media(machine, run.run_dir / "capture")
            with run.phase("destroy"):
                machine.destroy()
            pre = PreCut(cut, issued, mnt, stdout, stderr, events, finished is not None, finished, captures)
        return pre

    def _save_output(self, stdout: bytes, stderr: bytes) -> None:
        (self.run.run_dir / "workload.stdout").write_bytes(stdout)
        if stderr:
            (self.run.run_dir / "workload.stderr").write_bytes(stderr)

    # -- the machine that boots on what the media held ------------------------
    def recover_and_judge(self, judge: Judge) -> list[Finding]:
        """Recovery boot on the capture, mount, `judge`, unmount, fsck, poweroff."""
        run, plan = self.run, self.plan
        if self.pre is None or not self.pre.captures:
            raise GuestError("recover_and_judge() needs the capture workload_and_cut() takes")
        findings: list[Finding] = []
        recovery: dict[str, Any] = {"mounted": None, "fsck_clean": None}
        self.metrics["recovery"] = recovery
        with run.machine("recovery", [self.pre.captures[0].path]) as machine:
            with run.phase("recovery_boot"):
                machine.wait_ready(ready_timeout(run.accel.accel))
            with run.phase("recovery_mount"):
                device, mounted = mount_recovered(machine, plan.fs, plan.dax)
            if mounted.timed_out:
                raise AgentTimeout(f"the recovery mount did not finish within {MOUNT_TIMEOUT_S:.0f} s")
            recovery["mounted"] = mounted.ok
            if not mounted.ok:
                findings.append(Finding("recovery-mount", Verdict.VIOLATION,
                                        f"the recovered {plan.fs.value} does not mount: {mounted.err_text.strip()}",
                                        {"device": device, "exit_code": mounted.exit_code}))
            else:
                findings.append(Finding("recovery-mount", Verdict.PASS,
                                        f"the recovered {plan.fs.value} mounts with dax={plan.dax.value}"))
                with run.phase("judge"):
                    findings += judge(machine, pmem.MOUNTPOINT)
                    pmem.umount(machine.agent)
            with run.phase("fsck"):
                fsck_finding, output = run_fsck(machine.agent, plan.fs, device)
                (run.run_dir / "fsck.txt").write_text(output)
                recovery["fsck_clean"] = fsck_finding.verdict is Verdict.PASS
                findings.append(fsck_finding)
            with run.phase("shutdown"):
                machine.poweroff(timeout=30)
        return findings

    def remove_capture(self) -> None:
        if not self.plan.keep_capture:
            shutil.rmtree(self.run.run_dir / "capture", ignore_errors=True)


def wait_for_crash_point(machine: Machine, handle: RunHandle, trigger: CrashTrigger, timeout: float,
                         what: str | None = None) -> float | None:
    """Host monotonic time of the crash point, or None if the workload ended first.

    The crash point is the first event `trigger` matches (or its time offset after it, cut short
    when the workload ends). With no such event within `timeout`, AgentTimeout naming the crash
    point as `what` (default: the trigger's description).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            event = machine.events.wait_for(trigger.matches, timeout=POLL_S)
            break
        except AgentTimeout:
            if handle.done:
                try:  # its last events may still be in flight
                    event = machine.events.wait_for(trigger.matches, timeout=0.5)
                    break
                except AgentTimeout:
                    return None
            if time.monotonic() > deadline:
                raise AgentTimeout(f"no workload event for the crash point ({what or trigger.describe()}) "
                                   f"within {timeout:.0f} s") from None
    if trigger.seconds is None:
        return event.host_time
    until = event.host_time + trigger.seconds
    while time.monotonic() < until and not handle.done:
        time.sleep(min(0.005, max(0.0, until - time.monotonic())))
    return time.monotonic()


def save_events(machine: Machine, run_dir: Path) -> None:
    """The machine's events so far, one line each, to run_dir/events.log."""
    lines = [f"{e.host_time:.6f} {e.kind} {e.arg} {e.guest_ns}" for e in machine.events.snapshot()]
    (run_dir / "events.log").write_text("\n".join(lines) + ("\n" if lines else ""))


def mount_recovered(machine: Machine, fs: Filesystem, dax: DaxMode) -> tuple[str, CommandResult]:
    """On a recovery machine: wait for the fsdax namespace on the captured media and mount its
    filesystem (journal/log replay) with the same dax mode. Returns the device and the mount's result."""
    pmem.wait_for_namespace(machine.agent)
    device = pmem.existing_pmem_device(machine.agent)
    if device is None:
        raise GuestError("the fsdax namespace did not come back on the captured media")
    machine.run(["mkdir", "-p", pmem.MOUNTPOINT], timeout=10, check=True)
    mounted = machine.run(["mount", "-t", fs.value, "-o", f"dax={dax.value}", device, pmem.MOUNTPOINT],
                          timeout=MOUNT_TIMEOUT_S, check=False)
    return device, mounted


def run_power_cut(run: GuestRun, plan: CutPlan, pre_cut: Callable[[PreCut], list[Finding]],
                  judge_for: Callable[[PreCut], Judge]) -> list[Finding]:
    """The whole flow for a run_guarded body: the pre-cut findings (what the workload reported
    before the cut) followed by the recovery's (mount, the kind's judge, fsck).

    The capture is removed on every path unless the plan keeps it.
    """
    flow = PowerCutFlow(run, plan)
    try:
        pre = flow.workload_and_cut()
        findings = pre_cut(pre)
        findings += flow.recover_and_judge(judge_for(pre))
        return findings
    finally:
        flow.remove_capture()


def read_file(machine: Machine, path: str, timeout: float = 120) -> CommandResult | None:
    """`cat path` in the guest; None when the file does not exist."""
    if not machine.run(["test", "-f", path], timeout=10, check=False).ok:
        return None
    return machine.run(["cat", path], timeout=timeout, check=False)


def file_size(machine: Machine, path: str) -> int | None:
    """st_size of `path` in the guest, None when it does not exist."""
    result = machine.run(["stat", "-c", "%s", path], timeout=10, check=False)
    if not result.ok:
        return None
    try:
        return int(result.text.strip())
    except ValueError:
        raise GuestError(f"stat -c %s {path} printed {result.text.strip()!r}") from None


@dataclass(frozen=True)
class RecoveredFile:
    """A workload file as the recovery machine reads it."""

    size: int | None  # None: the file does not exist
    data: bytes | None  # None: not read (it does not exist, or vanished between stat and cat)
    read_ok: bool
    err: str  # what cat said on stderr


def read_recovered(machine: Machine, path: str) -> RecoveredFile:
    """The size and bytes of `path` on the recovery machine."""
    size = file_size(machine, path)
    read = read_file(machine, path) if size is not None else None
    return RecoveredFile(size, read.stdout if read else None, bool(read and read.ok), read.err_text if read else "")
