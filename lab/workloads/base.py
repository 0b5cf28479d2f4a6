"""What every workload kind provides, and the shared machinery for running one.

A workload kind (mapsync, fault-latency, mmap contract, ...) is a small
entry in the catalog (lab/workloads/catalog.py): its parameter model (the
keys a scenario's [workload] and [matrix] may use, besides fs and dax),
whether it cuts the power, how to build a check (pure data) for one case,
and how to run that check. Scenarios, cases, the campaign runner, the store
and the reports only talk to kinds through this interface.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from pydantic import BaseModel

from lab.errors import AgentTimeout, ConfigError, LabError

from lab.crash.phases import PhaseTimer
from lab.crash.point import CrashPoint
from lab.guest import pmem
from lab.guest.pmem import DaxMode, Filesystem, PmemMount
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.oracles.kernel_log import check_consoles
from lab.runs import write_json
from lab.verdict import Verdict, combine
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape, lab_spec, ready_timeout
from lab.vm.machine import Machine
from lab.vm.media import create_sparse
from lab.vm.spec import ShareSpec

STDERR_TAIL = 600  # bytes of a helper's stderr quoted in a finding

P = TypeVar("P", bound=BaseModel)


@dataclass
class RunHooks:
    """How a caller follows a run: messages, phase changes, and each machine as it is made
    (a campaign keeps them so Ctrl-C can destroy them at once)."""

    progress: Callable[[str], None] = lambda _: None
    on_phase: Callable[[str], None] = lambda _: None
    on_machine: Callable[[Machine], None] = lambda _: None


class Check(Protocol):
    """One case's fully specified run: pure data."""

    @property
    def shape(self) -> MachineShape: ...

    def to_dict(self) -> dict[str, Any]: ...


class Outcome(Protocol):
    verdict: Verdict
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CheckSpec:
    """What a scenario cell gives a kind to build its check from."""

    fs: Filesystem
    dax: DaxMode
    params: BaseModel
    crash: CrashPoint | None
    shape: MachineShape
    seed: int


@dataclass(frozen=True)
class WorkloadKind:
    name: str
    purpose: str  # one line, for `pmemlab scenarios list`
    params: type[BaseModel]  # pydantic model (extra keys forbidden, every field defaulted)
    uses_crash: bool  # a [crash] section is required (True) or refused (False)
    make_check: Callable[[CheckSpec], Any]
    check_from_dict: Callable[[dict[str, Any]], Any]
    run: Callable[[Any, Image, AccelVerdict, Path, RunHooks], Outcome]
    # For ack-based crash strategies: how many ACK indices the workload emits with these params.
    ack_count: Callable[[BaseModel], int] | None = None
    # Optional scenario-specific sections of the campaign HTML report (given the stored cases).
    render_html: Callable[[list[dict[str, Any]], Path], str] | None = None


# -- the pieces every kind's check and judge use ---------------------------------------------

def json_lines(stdout: bytes | str) -> list[dict[str, Any]]:
    """The JSON objects among a helper's stdout lines; other lines are skipped (a power cut can
    leave the last one torn)."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def stderr_tail(data: bytes) -> str:
    """The end of a helper's stderr, as text for a finding."""
    return data[-STDERR_TAIL:].decode("utf-8", "replace").strip()


def params_as(model: type[P], params: BaseModel) -> P:
    """A scenario cell's params as the kind's own model: as they are, or validated from their fields."""
    return params if isinstance(params, model) else model.model_validate(params.model_dump())


def shape_dict(shape: MachineShape) -> dict[str, int]:
    """A check's machine shape as its to_dict() stores it."""
    return {"cpus": shape.cpus, "memory_mib": shape.memory_mib, "nvdimm_size": shape.nvdimm_size}


def shape_from_dict(data: dict[str, Any], defaults: MachineShape | None = None) -> MachineShape:
    """The inverse of shape_dict: every key required, or, given `defaults`, taken from them where missing."""
    if defaults is None:
        return MachineShape(cpus=int(data["cpus"]), memory_mib=int(data["memory_mib"]),
                            nvdimm_size=int(data["nvdimm_size"]))
    return MachineShape(cpus=int(data.get("cpus", defaults.cpus)),
                        memory_mib=int(data.get("memory_mib", defaults.memory_mib)),
                        nvdimm_size=int(data.get("nvdimm_size", defaults.nvdimm_size)))


def require_kind(data: dict[str, Any], name: str) -> None:
    """A stored check names its kind (or none, from before kinds were stored): it must be `name`."""
    if data.get("kind", name) != name:
        raise ConfigError(f"not a {name} check: kind {data.get('kind')!r}")


# -- a generic result and a guarded runner for kinds that need nothing special --------------

@dataclass
class WorkloadResult:
    """The outcome of one check of any kind: findings, metrics, timings, verdict."""

    kind: str
    check: dict[str, Any]
    run_dir: Path
    image_id: str
    kernel_version: str
    accelerator: str
    verdict: Verdict = Verdict.INFRA_ERROR
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # kind-specific measurements (tables, errnos, counts)
    kernel_problems: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    status: str = "complete"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "verdict": self.verdict.value, "status": self.status, "error": self.error,
                "findings": [f.to_dict() for f in self.findings], "metrics": self.metrics,
                "kernel_problems": self.kernel_problems, "timings": self.timings, "check": self.check,
                "run_dir": str(self.run_dir), "image_id": self.image_id, "kernel_version": self.kernel_version,
                "accelerator": self.accelerator}


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
        self.result = WorkloadResult(kind, check.to_dict(), run_dir, image.id, image.kernel_version,
                                     accel.accel.value)

    def phase(self, name: str) -> Any:
        return self.timer.phase(name)

    def machine(self, name: str, media: Sequence[Path], shares: Sequence[ShareSpec] = ()) -> Machine:
        spec = lab_spec(self.image, name, self.run_dir, list(media), self.accel.accel, self.check.shape)
        if shares:
            from dataclasses import replace

            spec = replace(spec, shares=tuple(shares))
        self.consoles[name] = spec.console_log
        machine = Machine(spec, self.run_dir)
        self.hooks.on_machine(machine)
        return machine

    def fresh_media(self, name: str = "nvdimm0.img") -> Path:
        media = self.run_dir / name
        create_sparse(media, self.check.shape.nvdimm_size)
        return media

    @contextmanager
    def pmem_machine(self, fs: Filesystem, dax: DaxMode, name: str = "guest",
                     shares: Sequence[ShareSpec] = ()) -> Iterator[tuple[Machine, PmemMount]]:
        """A booted machine with a fresh NVDIMM set up (fsdax, mkfs, mount -o dax=...)."""
        with self.machine(name, [self.fresh_media()], shares) as machine:
            with self.phase("boot"):
                machine.wait_ready(ready_timeout(self.accel.accel))
            with self.phase("setup"):
                mnt = pmem.setup(machine.agent, fs, dax)
            yield machine, mnt
            with self.phase("shutdown"):
                machine.poweroff(timeout=30)


def run_guarded(run: GuestRun, body: Callable[[GuestRun], list[Finding]]) -> WorkloadResult:
    """Run `body`, map failures to verdicts (deadline: HANG, lab error: INFRA-ERROR), add the
    kernel-log oracle, write result.json on every path. Ctrl-C is recorded and re-raised."""
    result = run.result
    findings: list[Finding] = []
    started = time.monotonic()
    write_json(run.run_dir / "result.json", {**result.to_dict(), "status": "running"})
    try:
        findings += body(run)
    except AgentTimeout as exc:
        findings.append(Finding("deadline", Verdict.HANG, f"{run.timer.current or 'run'}: {exc}"))
        result.error = str(exc)
    except LabError as exc:
        findings.append(Finding("lab", Verdict.INFRA_ERROR, f"{run.timer.current or 'run'}: {exc}"))
        result.error, result.status = str(exc), "failed"
    except BaseException as exc:
        result.status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        _finish(run, findings, started)
        raise
    _finish(run, findings, started)
    return result


def _finish(run: GuestRun, findings: list[Finding], started: float) -> None:
    result = run.result
    kernel_finding, problems = check_consoles(run.consoles)
    result.kernel_problems = problems
    result.findings = findings + [kernel_finding]
    result.verdict = combine(f.verdict for f in result.findings)
    if result.status in ("failed", "interrupted"):
        result.verdict = combine([result.verdict, Verdict.INFRA_ERROR])
    result.timings = {**run.timer.timings, "total": round(time.monotonic() - started, 3)}
    write_json(run.run_dir / "result.json", result.to_dict())
