"""The power-cut pipeline: one workload run, K crash points, K recoveries, each judged alone.

    workload machine (restored from the ready snapshot on a copy of its template media, or cold)
      -> mount -o dax -> start the workload
      -> for each crash point, in the order the workload reaches them:
           wait for it (ACK k, MARK m, or a time offset after a MARK)
           -> freeze (QMP stop) -> durable set (ACKs read before the stop was issued)
           -> capture the media -> cont (the workload goes on), or, after the last one, destroy
    per capture: recovery machine on the capture -> mount with the same dax mode (journal/log
      replay; a mount failure is a VIOLATION) -> the kind's judge -> unmount -> fsck -> poweroff

Every kind that cuts the power runs through here: a kind gives a `PowerCut` (its workload
command, what it judges from the output before the cut, and what it judges on the recovered
filesystem). One crash point is a case; a case run alone is a workload run with one cut.
Under ADR a crash point is several cases, one per crash state (the check's adr_state): they
share its cut, which writes an image for each state they judge, and each recovers its own.

A crash point the workload never reaches is the plan's explicit choice (`EarlyEnd`): a workload
that *finished* first is cut at rest (its durable set is every ACK) or is an INFRA-ERROR; a
workload that *failed* first is INFRA-ERROR unless the kind judges the failure itself
(`judge_failure`, e.g. mapsync: mmap refused MAP_SYNC as mmap(2) documents for a non-DAX file).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, ClassVar, Self, Sequence

from lab.adr.states import slot_label
from lab.crash import adr_cut
from lab.crash.point import CrashPoint
from lab.crash.powercut import CutResult, capture_media, freeze_and_close
from lab.errors import AgentTimeout, ConfigError, GuestError, LabError
from lab.guest import pmem
from lab.guest.agent import CommandResult, RunHandle
from lab.guest.events import Event
from lab.guest.pmem import DaxMode, Filesystem, PmemMount
from lab.image.cache import Image
from lab.oracles.finding import Finding, verdict_of
from lab.oracles.fsck import run_fsck
from lab.logs import run_log
from lab.runner.check import BaseCheck
from lab.runner.guest_run import GuestRun, RunHooks, WorkloadResult, record_failure, run_guarded
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.capture import Capture
from lab.vm.machine import Machine, MachineState

WORKLOAD_TIMEOUT_S = 300.0
MOUNT_TIMEOUT_S = 120.0
POLL_S = 0.2

Judge = Callable[[Machine, str], list[Finding]]  # (recovery machine, mountpoint) -> findings


class EarlyEnd(str, Enum):
    """What a crash point means when the workload finished (cleanly) before reaching it."""

    CUT_AT_REST = "cut-at-rest"  # cut the machine at rest: everything acknowledged must survive
    INFRA_ERROR = "infra-error"  # the crash point was the experiment: not reaching it means nothing was checked


@dataclass(frozen=True)
class CrashTrigger:
    """When to cut: right after the host reads ACK `ack` (or any later one), at MARK `mark`,
    or `seconds` after MARK `mark` (seconds the guest ran: time frozen at earlier cuts is not counted)."""

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

    def order(self) -> float:
        """Where the workload reaches this crash point, relative to others of the same strategy."""
        return float(self.ack) if self.ack is not None else float(self.seconds or 0.0)

    def describe(self) -> str:
        if self.ack is not None:
            return f"after ACK {self.ack}"
        if self.seconds is None:
            return f"at MARK {self.mark}"
        return f"{self.seconds:g} s after MARK {self.mark}"

    def to_dict(self) -> dict[str, Any]:
        return {"ack": self.ack, "mark": self.mark, "seconds": self.seconds}


@dataclass(frozen=True)
class CutCheck(BaseCheck):
    """A power-cut kind's check: the base check plus the crash point and whether to keep the capture.
    A kind subclasses it, naming its params model (and the field's type), its name and START_MARK,
    the MARK a time-offset crash point counts from."""

    crash: CrashPoint
    keep_capture: bool = field(default=False, kw_only=True)
    # ADR model (shape.persistence adr): crash states judged beyond adr:drop-all at the cut
    # (bounded subsets of the unpersisted lines, seeded by `seed`); each is recovered and judged.
    adr_states: int = field(default=0, kw_only=True)
    # ADR, one case per crash state: the slot this check judges (0: adr:drop-all, k: the k-th further
    # distinct state; lab/adr/states.py). None: every state of the cut, rolled up into one verdict
    # (`pmemlab run mapsync`, bench). Checks that differ only here share one cut.
    adr_state: int | None = field(default=None, kw_only=True)

    START_MARK: ClassVar[str]
    # Whether the workload's command line uses the seed: if not, checks that differ only in their
    # crash point and seed share one workload run.
    WORKLOAD_USES_SEED: ClassVar[bool] = True

    @property
    def trigger(self) -> CrashTrigger:
        return CrashTrigger.from_point(self.crash, self.START_MARK)

    @property
    def crash_state(self) -> str | None:
        """The ADR crash state this check judges, by its stable name (None: eADR, or every state)."""
        return slot_label(self.adr_state, self.seed) if self.adr_state is not None else None

    def workload_key(self) -> str:
        """Checks with equal keys run the same workload: one run can serve all their crash points."""
        data = self.to_dict()
        for key in ("crash", "keep_capture", "adr_states", "adr_state") + (() if self.WORKLOAD_USES_SEED else ("seed",)):
            data.pop(key, None)
        return json.dumps(data, sort_keys=True)

    def cut_key(self) -> str:
        """Checks with equal keys are served by one cut (the ADR states of one crash point)."""
        data = self.to_dict()
        data.pop("adr_state", None)
        return json.dumps(data, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"adr_states": self.adr_states} if self.adr_states else {}
        if self.adr_state is not None:
            extra["adr_state"] = self.adr_state
        return {**super().to_dict(), "crash": self.crash.to_dict(), "keep_capture": self.keep_capture, **extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of to_dict."""
        try:
            crash = CrashPoint.from_dict(data["crash"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a {cls.KIND} check: no crash point ({exc})") from None
        state = data.get("adr_state")
        return cls(**cls.fields_from_dict(data), crash=crash, keep_capture=bool(data.get("keep_capture", False)),
                   adr_states=int(data.get("adr_states", 0)), adr_state=None if state is None else int(state))


@dataclass(frozen=True)
class CutPlan:
    """What the pipeline runs: the machine's filesystem, the workload command, and when to cut."""

    fs: Filesystem
    dax: DaxMode
    argv: Callable[[PmemMount], list[str]]  # the workload command line, given the mounted filesystem
    triggers: tuple[CrashTrigger, ...]  # in the order the workload reaches them
    early_end: EarlyEnd = EarlyEnd.CUT_AT_REST
    # A workload that failed before a crash point: the kind's findings about it, or None (INFRA-ERROR).
    judge_failure: Callable[[CommandResult], list[Finding] | None] = lambda _: None
    workload_timeout: float = WORKLOAD_TIMEOUT_S
    keep_capture: bool = False
    # ADR: per trigger, what the cut computes for the checks cut there, so a case's states are the
    # same whether it shares a workload run or runs alone (repro).
    adr_states: tuple[AdrCutSpec, ...] = ()


@dataclass(frozen=True)
class AdrCutSpec:
    """The ADR crash states of one cut: `count` beyond adr:drop-all, drawn with `seed`; images only
    for the slots in `wanted` (None: every state)."""

    count: int
    seed: int
    wanted: frozenset[int] | None = None


@dataclass
class PreCut:
    """What the host knew when it cut: the durable ACKs, the workload's output and events so far."""

    index: int  # position among the plan's triggers
    trigger: CrashTrigger
    cut: CutResult
    cut_time: float  # host monotonic time the stop was issued
    mount: PmemMount
    stdout: bytes
    stderr: bytes
    events: list[Event]
    finished_first: bool  # the workload ended before the crash point: the cut found it at rest
    exit: CommandResult | None  # how it ended, if it did
    captures: list[Capture]
    console_bytes: int  # how much of the workload console was written at the freeze
    timings: dict[str, float]  # the workload run's phases up to this cut
    adr: adr_cut.AdrCut | None = None  # the ADR model's crash states at this cut (eADR: None)

    @property
    def durable(self) -> list[int]:
        return self.cut.durable

    def marks(self) -> list[str]:
        """MARK names read before the stop was issued, in order."""
        return [e.arg for e in self.events if e.kind == "MARK" and e.host_time <= self.cut_time]


@dataclass
class WorkloadCuts:
    """What one workload run produced: a PreCut for each crash point it reached (in plan order),
    and, when it stopped short, why."""

    run_dir: Path
    console: Path
    cuts: list[PreCut] = field(default_factory=list)
    failure: Exception | None = None  # a deadline, lab error or OS error that ended the run early
    failure_phase: str | None = None
    judged: list[Finding] | None = None  # the kind judged the failed workload itself: no recovery


@dataclass
class PausedTime:
    """Host intervals the workload machine spent frozen: time offsets count only running time."""

    intervals: list[tuple[float, float]] = field(default_factory=list)

    def since(self, start: float) -> float:
        return sum(end - max(begin, start) for begin, end in self.intervals if end > start)


def run_workload(run: GuestRun, plan: CutPlan) -> WorkloadCuts:
    """Run the workload on a fresh machine and cut at every trigger of the plan, in order."""
    outcome = WorkloadCuts(run.run_dir, run.run_dir / "workload.console.log")
    stdout = stderr = b""
    media: Path | None = None
    machine: Machine | None = None
    trace: adr_cut.AdrTrace | None = None
    try:
        media = run.fresh_media(plan.fs)
        machine = run.machine("workload", [media], plan.fs)
        outcome.console = machine.spec.console_log
        with machine:
            run.bring_up(machine)
            mnt = run.setup(machine, plan.fs, plan.dax)
            if machine.plugin is not None:
                with run.phase("adr_arm"):
                    trace = adr_cut.arm(machine, run.run_dir / "capture")
            argv = plan.argv(mnt)
            run.hooks.progress(f"workload: {_shown(argv)}; cut {', '.join(t.describe() for t in plan.triggers)}")
            handle = machine.agent.start(argv, timeout=plan.workload_timeout)
            paused = PausedTime()
            finished: CommandResult | None = None
            for index, trigger in enumerate(plan.triggers):
                at: float | None = None
                if finished is None:
                    with run.phase("workload"):
                        at = wait_for_crash_point(machine, handle, trigger, plan.workload_timeout, paused=paused)
                    if at is None:
                        finished = handle.wait(timeout=30)
                if at is None:  # the workload ended before this crash point
                    assert finished is not None
                    if not finished.ok:
                        stdout, stderr = finished.stdout, finished.stderr
                        outcome.judged = plan.judge_failure(finished)
                        if outcome.judged is not None:
                            break
                        tail = finished.err_text.strip()[-2000:]
                        raise GuestError(f"the workload {argv[0]} failed before the crash point "
                                         f"({trigger.describe()}): it {finished.describe()}"
                                         + (f"; stderr: {tail}" if tail else ""))
                    if plan.early_end is EarlyEnd.INFRA_ERROR:
                        raise GuestError(f"the workload {argv[0]} finished before the crash point "
                                         f"({trigger.describe()}): nothing was cut mid-run")
                    at = time.monotonic()  # cut the machine at rest
                with run.phase("freeze"):
                    issued = time.monotonic()
                    cut = freeze_and_close(machine, at)
                stdout, stderr = (finished.stdout, finished.stderr) if finished else handle.output()
                with run.phase("capture"):
                    captures = capture_media(machine, run.run_dir / "capture" / f"cut-{index}")
                states: adr_cut.AdrCut | None = None
                if trace is not None:
                    with run.phase("adr_states"):
                        spec = (plan.adr_states[index] if index < len(plan.adr_states) else
                                AdrCutSpec(getattr(run.check, "adr_states", 0), getattr(run.check, "seed", 0)))
                        states = adr_cut.cut_states(trace, machine, captures[0], captures[0].path.parent, spec.count,
                                                    spec.seed, spec.wanted)
                outcome.cuts.append(PreCut(index, trigger, cut, issued, mnt, stdout, stderr, machine.events.snapshot(),
                                           finished is not None, finished, captures, _size(outcome.console),
                                           dict(run.timer.timings), states))
                if index + 1 < len(plan.triggers):
                    with run.phase("cont"):
                        machine.cont()
                    paused.intervals.append((issued, time.monotonic()))
            if run.hooks.oracle("kernel_log"):
                with run.phase("taint"):
                    _read_taint_after_cuts(run, machine)
            with run.phase("destroy"):
                machine.destroy()
    except (LabError, OSError) as exc:  # OSError: the lab's own files (a full disk)
        outcome.failure, outcome.failure_phase = exc, run.timer.current
    finally:
        # The captures are the evidence; the live file (real data up to the NVDIMM's size) is not
        # needed. After a failure it stays only where captures are kept, for a look at it.
        if media is not None and (outcome.failure is None or not plan.keep_capture):
            media.unlink(missing_ok=True)
        if trace is not None and not plan.keep_capture:
            trace.baseline.unlink(missing_ok=True)  # the states of every cut are computed
        try:
            if machine is not None:
                save_events(machine.events.snapshot(), run.run_dir)
            save_output(run.run_dir, stdout, stderr)
        except (LabError, OSError):
            pass  # it never launched (no events), or the disk is full: the failure says so already
    return outcome


def recover_and_judge(run: GuestRun, plan: CutPlan, pre: PreCut, judge: Judge, media: Path | None = None,
                      name: str = "recovery") -> list[Finding]:
    """Recovery machine on the capture (or `media`: an ADR crash state), mount, `judge`, unmount,
    fsck, poweroff."""
    recovery: dict[str, Any] = {"mounted": None, "fsck_clean": None}
    run.result.metrics[name] = recovery
    with run.machine(name, [media or pre.captures[0].path], plan.fs) as machine:
        with run.phase("recovery_boot" if machine.incoming is None else "recovery_restore"):
            run.maker.bring_up(machine)
        device = run.maker.known_device(machine, plan.fs) or find_recovered_device(machine)
        findings = judge_mounted(run, machine, plan.fs, plan.dax, device, judge, recovery, "recovered")
        with run.phase("shutdown"):
            machine.poweroff(timeout=30)
    return findings


def judge_mounted(run: GuestRun, machine: Machine, fs: Filesystem, dax: DaxMode, device: str, judge: Judge,
                  recovery: dict[str, Any], what: str) -> list[Finding]:
    """The recovery oracles on `device`: mount it (journal/log replay; a mount failure is a VIOLATION),
    `judge` the mounted filesystem, unmount, fsck. `what` names the filesystem in findings ("recovered",
    "given"). Shared by power cuts and `pmemlab check`."""
    findings: list[Finding] = []
    with run.phase("recovery_mount"):
        mounted = mount_device(machine, fs, dax, device)
    if mounted.timed_out:
        raise AgentTimeout(f"the recovery mount did not finish within {MOUNT_TIMEOUT_S:.0f} s")
    recovery["mounted"] = mounted.ok
    if not mounted.ok:
        findings.append(Finding("recovery-mount", Verdict.VIOLATION,
                                f"the {what} {fs.value} does not mount: {mounted.err_text.strip()}",
                                {"device": device, "exit_code": mounted.exit_code}))
    else:
        findings.append(Finding("recovery-mount", Verdict.PASS, f"the {what} {fs.value} mounts with dax={dax.value}"))
        with run.phase("judge"):
            if run.hooks.oracle("persistence"):  # [oracles] persistence = false: the kind's judge is not run
                findings += judge(machine, pmem.MOUNTPOINT)
            pmem.umount(machine.agent)
    if run.hooks.oracle("fsck"):
        with run.phase("fsck"):
            fsck_finding, output = run_fsck(machine.agent, fs, device)
            (run.run_dir / "fsck.txt").write_text(output)
            recovery["fsck_clean"] = fsck_finding.verdict is Verdict.PASS
            findings.append(fsck_finding)
    return findings


def wait_for_crash_point(machine: Machine, handle: RunHandle, trigger: CrashTrigger, timeout: float,
                         what: str | None = None, paused: PausedTime | None = None) -> float | None:
    """Host monotonic time of the crash point, or None if the workload ended first.

    The crash point is the first event `trigger` matches, among all read so far (or its time offset
    after it, the frozen time of earlier cuts not counted; cut short when the workload ends). With
    no such event within `timeout`, AgentTimeout naming the crash point as `what` (default: the
    trigger's description).
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
    frozen = paused.since(event.host_time) if paused else 0.0
    until = event.host_time + trigger.seconds + frozen
    while time.monotonic() < until and not handle.done:
        time.sleep(min(0.005, max(0.0, until - time.monotonic())))
    return time.monotonic()


def save_events(events: Sequence[Event], run_dir: Path) -> None:
    """Events, one line each, to run_dir/events.log."""
    lines = [f"{e.host_time:.6f} {e.kind} {e.arg} {e.guest_ns}" for e in events]
    (run_dir / "events.log").write_text("\n".join(lines) + ("\n" if lines else ""))


def save_output(run_dir: Path, stdout: bytes, stderr: bytes) -> None:
    (run_dir / "workload.stdout").write_bytes(stdout)
    if stderr:
        (run_dir / "workload.stderr").write_bytes(stderr)


def _shown(argv: Sequence[str], limit: int = 80) -> str:
    """A command line for a progress line: long arguments (a pushed reproducer's bytes) cut short."""
    return " ".join(a if len(a) <= limit else f"{a[:limit]}...({len(a)} chars)" for a in argv)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def find_recovered_device(machine: Machine) -> str:
    """On a cold recovery machine: wait for the fsdax namespace to come back from its info block on
    the captured media, and return its block device."""
    pmem.wait_for_namespace(machine.agent)
    device = pmem.existing_pmem_device(machine.agent)
    if device is None:
        raise GuestError("the fsdax namespace did not come back on the captured media")
    return device


def mount_device(machine: Machine, fs: Filesystem, dax: DaxMode, device: str) -> CommandResult:
    """Mount `device` at the lab's mountpoint with `dax` (one guest round trip); the mount's result."""
    return machine.run(["sh", "-c", 'mkdir -p "$1" && exec mount -t "$2" -o "dax=$3" "$4" "$1"', "sh",
                        pmem.MOUNTPOINT, fs.value, dax.value, device], timeout=MOUNT_TIMEOUT_S, check=False)


# -- a power-cut kind's parts, and running them ---------------------------------------------

@dataclass(frozen=True)
class PowerCut:
    """What a power-cut kind gives the pipeline. Each callable gets the case's check and its
    result's metrics dict to fill."""

    # The workload run for checks that share a workload_key (built from the first), cutting at `triggers`.
    plan: Callable[[Any, tuple[CrashTrigger, ...]], CutPlan]
    # Findings from what the host saw before the cut (the workload's output, events, durable set).
    pre_cut: Callable[[Any, PreCut, dict[str, Any]], list[Finding]]
    # Findings on the recovered, mounted filesystem.
    judge: Callable[[Any, PreCut, Machine, str, dict[str, Any]], list[Finding]]


RecoveryJob = Callable[[RunHooks], WorkloadResult]  # one case: recover its capture and judge it


def cut_workload(kind: str, power: PowerCut, checks: Sequence[Any], image: Image, accel: AccelVerdict,
                 run_dirs: Sequence[Path], hooks: RunHooks, workload_dir: Path | None = None) -> list[RecoveryJob]:
    """Run one workload for `checks` (equal workload_key, one crash point each) and cut at every
    crash point; returns one recovery job per check, in the order given, to run in any order or
    in parallel. The workload run's files go to `workload_dir` (default: the first run dir)."""
    if not checks or len(checks) != len(run_dirs):
        raise ValueError("cut_workload needs one run directory per check")
    if len({c.workload_key() for c in checks}) != 1:
        raise ValueError("checks that share a workload run must have the same workload_key")
    order = sorted(range(len(checks)), key=lambda i: checks[i].trigger.order())
    cut_of: dict[str, int] = {}  # cut key -> index among the cuts: the ADR states of one crash point share one
    firsts: list[int] = []  # per cut, the first check cut there
    for i in order:
        if cut_of.setdefault(_cut_key(checks[i]), len(firsts)) == len(firsts):
            firsts.append(i)
    triggers = tuple(checks[i].trigger for i in firsts)
    plan = power.plan(checks[order[0]], triggers)
    plan = replace(plan, adr_states=tuple(_adr_cut_spec([c for c in checks if _cut_key(c) == _cut_key(checks[i])])
                                          for i in firsts))
    workload_dir = workload_dir or run_dirs[0]
    workload_dir.mkdir(parents=True, exist_ok=True)
    workload = GuestRun(kind, checks[order[0]], image, accel, workload_dir, hooks)
    try:
        with run_log(workload_dir):
            outcome = run_workload(workload, plan)
    except BaseException:
        _remove_captures(workload_dir, plan)
        raise
    jobs: list[RecoveryJob] = []
    for check, run_dir in zip(checks, run_dirs):
        jobs.append(_recovery_job(kind, power, plan, check, image, accel, run_dir, workload, outcome,
                                  cut_of[_cut_key(check)], len(firsts)))
    return jobs


def _cut_key(check: Any) -> str:
    key = getattr(check, "cut_key", None)
    return key() if key is not None else json.dumps(check.to_dict(), sort_keys=True)


def _adr_cut_spec(checks: Sequence[Any]) -> AdrCutSpec:
    """What the cut shared by `checks` computes: their states, images for the slots they judge."""
    slots = [getattr(c, "adr_state", None) for c in checks]
    return AdrCutSpec(getattr(checks[0], "adr_states", 0), getattr(checks[0], "seed", 0),
                      None if None in slots else frozenset(s for s in slots if s is not None))


def _recovery_job(kind: str, power: PowerCut, plan: CutPlan, check: Any, image: Image, accel: AccelVerdict,
                  run_dir: Path, workload: GuestRun, outcome: WorkloadCuts, index: int, cuts: int) -> RecoveryJob:
    def job(hooks: RunHooks) -> WorkloadResult:
        run_dir.mkdir(parents=True, exist_ok=True)
        shared = run_dir == workload.run_dir
        run = workload if shared else GuestRun(kind, check, image, accel, run_dir, hooks)
        if shared:
            run.hooks = hooks
            run.timer.on_phase = hooks.on_phase
        else:
            run.consoles.update({k: v for k, v in workload.consoles.items() if k == "ready-snapshot"})
            run.taint.tracks.update(workload.taint.tracks)  # the workload kernel's taint belongs to every cut
            run.result.timings = {}

        def body(run: GuestRun) -> list[Finding]:
            pre = outcome.cuts[index] if index < len(outcome.cuts) else None
            if pre is None:
                if outcome.judged is not None:
                    run.result.metrics["cut"] = {"reached": False, "why": "the kind judged the failed workload"}
                    return list(outcome.judged)
                assert outcome.failure is not None
                record_failure(run, outcome.failure)
                if not isinstance(outcome.failure, AgentTimeout):
                    run.result.status = "failed"
                return [_failure_at(outcome)]
            if not shared:
                _copy_workload_view(workload, outcome, pre, run)
            if not shared:
                run.result.timings = dict(pre.timings)
                run.shared_s = sum(pre.timings.values())
            run.result.metrics["cut"] = _cut_metrics(pre, cuts, workload.run_dir)
            run.result.metrics["cut"]["workload_s"] = round(run.shared_s, 3)  # phases another task ran
            findings = power.pre_cut(check, pre, run.result.metrics)
            slot: int | None = getattr(check, "adr_state", None)
            try:
                if pre.adr is None:
                    findings += recover_and_judge(run, plan, pre, lambda m, mp: power.judge(check, pre, m, mp,
                                                                                              run.result.metrics))
                elif slot is None:
                    findings += _judge_adr_states(run, plan, pre, power, check)
                else:
                    findings += _judge_adr_slot(run, plan, pre, power, check, slot)
            finally:
                if not plan.keep_capture:
                    # An ADR case judges its state's image (a copy): the capture is not needed after the cut.
                    for capture in pre.captures:
                        capture.path.unlink(missing_ok=True)
                    if pre.adr is not None:
                        states = pre.adr.states
                        pre.adr.remove(None if slot is None else states[slot].id if slot < len(states) else "")
            return findings

        return run_guarded(run, body)
    return job


def _read_taint_after_cuts(run: GuestRun, machine: Machine) -> None:
    """The workload kernel's taint, read once the last capture is taken: the machine resumes for one
    agent round trip (20-50 ms under TCG). A read before a freeze would delay the cut by as much."""
    try:
        if machine.state is MachineState.PAUSED:
            machine.cont()
    except LabError as exc:
        run.taint.failed(machine.spec.name, f"resuming after the last cut: {exc}")
        return
    run.read_taint(machine, "the workload's last cut")


def _judge_adr_states(run: GuestRun, plan: CutPlan, pre: PreCut, power: PowerCut, check: Any) -> list[Finding]:
    """ADR: adr:drop-all, then each further crash state, each on its own recovery machine; the
    findings of a further state name it (its stable id: model, subset, seed)."""
    assert pre.adr is not None
    run.result.metrics["crash_state"] = pre.adr.metrics()
    findings: list[Finding] = []
    for i, state in enumerate(pre.adr.states):
        metrics: dict[str, Any] = run.result.metrics if i == 0 else {}
        found = recover_and_judge(run, plan, pre, lambda m, mp: power.judge(check, pre, m, mp, metrics),
                                  media=pre.adr.images[state.id], name="recovery" if i == 0 else f"recovery-{i}")
        if i == 0:
            findings += found
            continue
        findings += [Finding(f.oracle, f.verdict, f"[{state.id}] {f.summary}", {**f.details, "crash_state": state.id})
                     for f in found]
        run.result.metrics["crash_state"]["states"][i]["verdict"] = verdict_of(found).value
    return findings


def _judge_adr_slot(run: GuestRun, plan: CutPlan, pre: PreCut, power: PowerCut, check: Any,
                    slot: int) -> list[Finding]:
    """ADR, one case per crash state: the state in `slot` alone, on its recovery machine."""
    assert pre.adr is not None
    states = pre.adr.states
    label = slot_label(slot, getattr(check, "seed", 0))
    metrics = run.result.metrics["crash_state"] = {**pre.adr.metrics(), "slot": slot, "label": label}
    repeat = slot >= len(states)
    # A cut may leave fewer distinct states than the cell has slots: such a slot judges a real image
    # again (state slot mod count) rather than passing with nothing judged, so its verdict is evidence.
    state = states[slot % len(states)]
    metrics["judged"] = state.id
    if repeat:
        metrics["repeat_of_slot"] = slot % len(states)
    found = recover_and_judge(run, plan, pre, lambda m, mp: power.judge(check, pre, m, mp, run.result.metrics),
                              media=pre.adr.images[state.id])
    if repeat:
        found.append(Finding("crash-state", Verdict.PASS, f"{label}: the cut left {len(states)} distinct ADR crash "
                             f"state(s); this slot judged {state.id} again", {"crash_state": label,
                                                                            "distinct_states": len(states)}))
    else:
        metrics["states"][slot]["verdict"] = verdict_of(found).value
    return [Finding(f.oracle, f.verdict, f"[{state.id}] {f.summary}", {**f.details, "crash_state": state.id})
            for f in found]


def _failure_at(outcome: WorkloadCuts) -> Finding:
    assert outcome.failure is not None
    where = outcome.failure_phase or "workload"
    verdict = Verdict.HANG if isinstance(outcome.failure, AgentTimeout) else Verdict.INFRA_ERROR
    return Finding("deadline" if verdict is Verdict.HANG else "lab", verdict, f"{where}: {outcome.failure}",
                   {"phase": where})


def _copy_workload_view(workload: GuestRun, outcome: WorkloadCuts, pre: PreCut, run: GuestRun) -> None:
    """A case that shares a workload run gets its own copy of what the host had seen at its cut:
    the console up to the freeze (scanned by the kernel-log oracle), the events, the output."""
    console = run.run_dir / "workload.console.log"
    try:
        with outcome.console.open("rb") as src:
            console.write_bytes(src.read(pre.console_bytes))
    except OSError:
        console.write_bytes(b"")
    run.consoles["workload"] = console
    save_events(pre.events, run.run_dir)
    save_output(run.run_dir, pre.stdout, pre.stderr)


def _cut_metrics(pre: PreCut, cuts: int, workload_dir: Path) -> dict[str, Any]:
    cut = pre.cut
    return {"trigger": pre.trigger.to_dict(), "trigger_text": pre.trigger.describe(),
            "durable": len(cut.durable), "last_durable": cut.durable[-1] if cut.durable else None,
            "acked_after_freeze": cut.acked_after_freeze, "freeze_latency_s": cut.freeze_latency_s,
            "finished_first": pre.finished_first, "cut_index": pre.index, "cuts_in_run": cuts,
            "workload_dir": str(workload_dir),
            "captures": [{"path": str(c.path), "method": c.method, "seconds": round(c.seconds, 4),
                          "data_bytes": c.data_bytes, "size": c.size} for c in pre.captures]}


def _remove_captures(workload_dir: Path, plan: CutPlan) -> None:
    if not plan.keep_capture:
        shutil.rmtree(workload_dir / "capture", ignore_errors=True)


def run_cut_check(kind: str, power: PowerCut, check: Any, image: Image, accel: AccelVerdict, run_dir: Path,
                  hooks: RunHooks) -> WorkloadResult:
    """One case alone: a workload run with one cut, then its recovery."""
    job = cut_workload(kind, power, [check], image, accel, [run_dir], hooks)[0]
    try:
        return job(hooks)
    finally:
        if not check.keep_capture:
            shutil.rmtree(run_dir / "capture", ignore_errors=True)


# -- reading the recovered files ----------------------------------------------------------

_MISSING = 3  # read_file's exit status for "no such regular file" (cat's own failures exit 1)


def read_file(machine: Machine, path: str, timeout: float = 120) -> CommandResult | None:
    """`cat path` in the guest (one round trip); None when the file does not exist."""
    result = machine.run(["sh", "-c", f'[ -f "$1" ] || exit {_MISSING}; exec cat "$1"', "sh", path],
                         timeout=timeout, check=False)
    return None if result.exit_code == _MISSING and not result.timed_out else result


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

