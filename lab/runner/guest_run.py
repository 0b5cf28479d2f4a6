"""One check's run on lab machines: phases, machines, consoles, and the result every kind returns.

`GuestRun` hands a kind its machines (restored from a ready snapshot, or
booted cold: lab/runner/machines.py) and records what the kernel-log oracle
scans; `run_guarded` runs a kind's body and turns whatever happens into a
verdict, writing result.json on every path: a passed deadline is HANG, a lab
failure INFRA-ERROR, a kernel problem on any console KERNEL-BUG - or a taint bit
a machine's kernel gained during the run (read when its agent first answers and
again before it powers off). A full disk is one line naming the path and what
the run needs. The run's lab records go to RUN_DIR/lab.log.
"""

from __future__ import annotations

import errno
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from lab import space
from lab.errors import AgentTimeout, LabError
from lab.guest.pmem import DaxMode, Filesystem, PmemMount
from lab.image.cache import Image
from lab.logs import run_log
from lab.oracles import taint
from lab.oracles.finding import Finding
from lab.oracles.kernel_log import check_consoles
from lab.paths import cache_dir
from lab.runner.machines import BUILD_NEEDS_MIB, BootMode, MachineMaker
from lab.runner.phases import PhaseTimer
from lab.runs import write_json
from lab.verdict import Verdict, combine
from lab.vm.accel import AccelVerdict, lab_qemu_version
from lab.vm.backend import BackendChoice
from lab.vm.boot import MachineShape, qemu_binary_for
from lab.vm.machine import Machine
from lab.vm.spec import MIB, ShareSpec

log = logging.getLogger(__name__)

ORACLES = ("persistence", "fsck", "kernel_log")  # what a scenario's [oracles] may switch off


@dataclass
class RunHooks:
    """What a caller gives a run besides the check: how it is followed (messages, phase changes, each
    machine as it is made, so Ctrl-C can destroy them at once), how its machines start, and which
    oracles judge it."""

    progress: Callable[[str], None] = lambda _: None
    on_phase: Callable[[str], None] = lambda _: None
    on_machine: Callable[[Machine], None] = lambda _: None
    boot: BootMode = BootMode.SNAPSHOT
    backend: BackendChoice = BackendChoice()  # frozen: one default instance is safe
    oracles: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(ORACLES, True))

    def oracle(self, name: str) -> bool:
        return self.oracles.get(name, True)


class Check(Protocol):
    """One case's fully specified run: pure data."""

    @property
    def shape(self) -> MachineShape: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class WorkloadResult:
    """The outcome of one check of any kind: findings, metrics, timings, verdict."""

    kind: str
    check: dict[str, Any]
    run_dir: Path
    image_id: str
    kernel_version: str
    accelerator: str
    boot: str = BootMode.SNAPSHOT.value
    verdict: Verdict = Verdict.INFRA_ERROR
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # kind-specific measurements (tables, errnos, counts)
    kernel_problems: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    errno: int | None = None  # the OS error behind a lab failure (ENOSPC: the disk is full)
    status: str = "complete"
    qemu_version: str = ""  # what the machines ran under (an export pins it: lab/scenario/pin.py)
    backend: str = "qemu"  # what ran the machines: qemu (the lab's own process) or libvirt

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "verdict": self.verdict.value, "status": self.status, "error": self.error,
                "findings": [f.to_dict() for f in self.findings], "metrics": self.metrics,
                "kernel_problems": self.kernel_problems, "timings": self.timings, "check": self.check,
                "run_dir": str(self.run_dir), "image_id": self.image_id, "kernel_version": self.kernel_version,
                "accelerator": self.accelerator, "boot": self.boot, "errno": self.errno,
                "qemu_version": self.qemu_version, "backend": self.backend}


class GuestRun:
    """Shared pieces for a kind's run: phases, machines on fresh media, consoles to scan."""

    def __init__(self, kind: str, check: Check, image: Image, accel: AccelVerdict, run_dir: Path,
                 hooks: RunHooks) -> None:
        self.check = check
        self.image = image
        self.accel = accel
        self.run_dir = run_dir
        self.hooks = hooks
        self.timer = PhaseTimer(hooks.on_phase)
        self.consoles: dict[str, Path] = {}
        self.taint = taint.TaintLog()  # each machine's kernel taint: at agent-ready, and before it ends
        self.shared_s = 0.0  # seconds of a shared workload run this case stands on (counted in its total)
        self.maker = MachineMaker(image, accel.accel, check.shape, hooks.boot, hooks.backend)
        self.result = WorkloadResult(kind, check.to_dict(), run_dir, image.id, image.kernel_version,
                                     accel.accel.value, boot=hooks.boot.value,
                                     qemu_version=lab_qemu_version(qemu_binary_for(check.shape)),
                                     backend=hooks.backend.kind.value)

    def phase(self, name: str) -> Any:
        return self.timer.phase(name)

    def machine(self, name: str, media: Sequence[Path], fs: Filesystem | None = None,
                shares: Sequence[ShareSpec] = ()) -> Machine:
        """A machine (not yet launched) on `media`: restored from the ready snapshot prepared for `fs`
        (the media must descend from that snapshot's template), or cold."""
        machine = self.maker.machine(name, self.run_dir, media, fs, shares)
        ready = self.maker.ready_console(fs, shares)
        if ready is not None:
            self.consoles["ready-snapshot"] = ready
        self.consoles[name] = machine.spec.console_log
        if self.hooks.oracle("kernel_log"):
            machine.on_ready.append(self._taint_baseline)
            machine.before_poweroff.append(lambda m: self.read_taint(m, "before poweroff"))
        self.hooks.on_machine(machine)
        return machine

    def _taint_baseline(self, machine: Machine) -> None:
        try:
            self.taint.baseline(machine.spec.name, taint.read(machine.agent))
        except LabError as exc:  # the step that needs the guest next says what broke
            self.taint.failed(machine.spec.name, f"at agent-ready: {exc}")

    def read_taint(self, machine: Machine, when: str) -> None:
        """Read `machine`'s kernel taint now (it must be running); compared with its baseline in the verdict."""
        if not self.hooks.oracle("kernel_log"):
            return
        try:
            self.taint.later(machine.spec.name, taint.read(machine.agent), when)
        except LabError as exc:
            self.taint.failed(machine.spec.name, f"{when}: {exc}")

    def fresh_media(self, fs: Filesystem | None = None, name: str = "nvdimm0.img",
                    shares: Sequence[ShareSpec] = ()) -> Path:
        """A new NVDIMM backing file for a machine made with the same `fs` (and shares)."""
        if self.hooks.boot is BootMode.SNAPSHOT:
            with self.phase("ready_snapshot"):  # found in the cache (~0 s), or built once: a cold boot + mkfs
                self.maker.snapshot(fs, shares)
        return self.maker.fresh_media(self.run_dir / name, fs, shares)

    def bring_up(self, machine: Machine) -> float:
        """Boot or restore `machine` to an answering agent, timed as phase boot or restore."""
        with self.phase("boot" if machine.incoming is None else "restore"):
            return self.maker.bring_up(machine)

    def setup(self, machine: Machine, fs: Filesystem, dax: DaxMode) -> PmemMount:
        with self.phase("setup"):
            return self.maker.setup(machine, fs, dax)

    @contextmanager
    def pmem_machine(self, fs: Filesystem, dax: DaxMode, name: str = "guest",
                     shares: Sequence[ShareSpec] = ()) -> Iterator[tuple[Machine, PmemMount]]:
        """A running machine with its NVDIMM's filesystem mounted with `dax` and DAX verified."""
        with self.machine(name, [self.fresh_media(fs, shares=shares)], fs, shares) as machine:
            self.bring_up(machine)
            mnt = self.setup(machine, fs, dax)
            yield machine, mnt
            with self.phase("shutdown"):
                machine.poweroff(timeout=30)


def run_guarded(run: GuestRun, body: Callable[[GuestRun], list[Finding]]) -> WorkloadResult:
    """Run `body`, map failures to verdicts (deadline: HANG, lab error: INFRA-ERROR), add the
    kernel-log and taint oracles, write result.json on every path. Ctrl-C is recorded and re-raised."""
    with run_log(run.run_dir):
        return _run_guarded(run, body)


def _run_guarded(run: GuestRun, body: Callable[[GuestRun], list[Finding]]) -> WorkloadResult:
    result = run.result
    findings: list[Finding] = []
    started = run.timer.started
    log.info("%s run in %s", result.kind, run.run_dir)
    log.debug("check: %s", result.check)
    try:
        write_json(run.run_dir / "result.json", {**result.to_dict(), "status": "running"})
        findings += body(run)
    except AgentTimeout as exc:
        record_failure(run, exc)
        findings.append(failure_finding(run, exc))
    except (LabError, OSError) as exc:  # OSError: the lab's own files (a full disk, a vanished directory)
        record_failure(run, exc)
        findings.append(failure_finding(run, exc))
        result.status = "failed"
    except BaseException as exc:
        result.status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        log.log(logging.INFO if result.status == "interrupted" else logging.ERROR, "%s run %s: %s", result.kind,
                result.status, result.error)
        finish(run, findings, started)
        raise
    finish(run, findings, started)
    return result


# Phases that bring a machine up: a deadline passed in one is a machine that never answered, before
# the run asked anything of its kernel (lab.campaign retries such a HANG once).
BRING_UP_PHASES = frozenset({"boot", "restore", "recovery_boot", "recovery_restore"})


def failure_finding(run: GuestRun, exc: Exception) -> Finding:
    """A passed deadline is HANG; any other lab error INFRA-ERROR; both name the phase they hit."""
    where = run.timer.current or "run"
    if isinstance(exc, AgentTimeout):
        return Finding("deadline", Verdict.HANG, f"{where}: {exc}", {"phase": where})
    return Finding("lab", Verdict.INFRA_ERROR, f"{where}: {run.result.error or exc}")


def hung_coming_up(result: WorkloadResult) -> bool:
    """A HANG whose deadline passed while a machine was coming up (booting or restoring), not in the
    workload or the recovery the run judges."""
    return result.verdict is Verdict.HANG and any(
        f.oracle == "deadline" and f.details.get("phase") in BRING_UP_PHASES for f in result.findings)


def record_failure(run: GuestRun, exc: BaseException) -> None:
    """The error and its OS error number on the result; a full disk as the one line that says which
    path is full and how much the run needs there."""
    result = run.result
    result.error, result.errno = str(exc), os_errno(exc)
    if result.errno == errno.ENOSPC:
        path = space.full_path(exc) or run.run_dir
        needs, bound = space_needed(run.check.shape, path)
        result.error = space.describe_full(path, needs, bound)
        result.metrics["disk_full"] = {"path": str(path), "filesystem": str(space.mount_point(path)),
                                       "needs_bytes": needs, "cause": str(exc)}
    log.info("%s run failed in phase %s: %s", result.kind, run.timer.current or "run", result.error)


def space_needed(shape: MachineShape, path: Path) -> tuple[int, str]:
    """How much a run may write where `path` is, and how sure that is: in the cache, a ready snapshot
    build (about BUILD_NEEDS_MIB); elsewhere, the live NVDIMM and a capture (sparse: up to their size)."""
    try:
        in_cache = path.resolve().is_relative_to(cache_dir().resolve())
    except OSError:
        in_cache = False
    if in_cache:
        return BUILD_NEEDS_MIB * MIB, "about"
    return 2 * shape.nvdimm_size, "up to"


def os_errno(exc: BaseException) -> int | None:
    """The OS error number behind `exc` (itself, or the OSError it was raised from), if any."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        number = getattr(exc, "errno", None)
        if isinstance(number, int):
            return number
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def finish(run: GuestRun, findings: list[Finding], started: float) -> None:
    """Add the kernel-log and taint oracles, combine the verdict, write result.json (a result that
    cannot be written is INFRA-ERROR, told by the returned result)."""
    result = run.result
    if run.hooks.oracle("kernel_log"):
        kernel_finding, problems = check_consoles(run.consoles)
        result.kernel_problems = problems
        findings = findings + [kernel_finding]
        taint_finding = run.taint.finding()
        if taint_finding is not None:
            findings.append(taint_finding)
    if run.taint.tracks:
        result.metrics["taint"] = run.taint.to_dict()
    result.findings = findings
    result.verdict = combine(f.verdict for f in result.findings)
    if result.status in ("failed", "interrupted"):
        result.verdict = combine([result.verdict, Verdict.INFRA_ERROR])
    result.timings = {**run.timer.timings, **result.timings, "total": round(time.monotonic() - started + run.shared_s, 3)}
    try:
        write_json(run.run_dir / "result.json", result.to_dict())
    except OSError as exc:
        if result.errno is None:
            record_failure(run, exc)
        result.status = "failed"
        result.findings.append(Finding("lab", Verdict.INFRA_ERROR, f"result.json not written: {result.error}"))
        result.verdict = combine([result.verdict, Verdict.INFRA_ERROR])
        (run.run_dir / "result.json").unlink(missing_ok=True)  # not a stale 'running' one
    log.info("%s run: %s (%s)", result.kind, result.verdict.value, result.status)
