"""Run one attempt of a case, or of a shared workload run: pure execution, no results store.

The same functions run in the local thread pool and inside a cluster task on
another host (lab.cluster.task): they take an image, an accelerator verdict
and run directories, and return WorkloadResults. Attempt bookkeeping (start,
finish, retry, resume) is the controller's alone (lab.campaign).

A bug in a kind or in the lab becomes an INFRA-ERROR result with its
traceback; only KeyboardInterrupt/SystemExit propagate (the caller stops).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lab.cases import Case
from lab.crash.cut_flow import RecoveryJob, cut_workload
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.runner.machines import BootMode
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.backend import BackendChoice
from lab.vm.machine import Machine
from lab.workloads.catalog import get_kind

log = logging.getLogger(__name__)

Phase = Callable[[str], None]
# What a shared workload run leaves each of its cases: the recovery to run, or why there is none.
Recoverable = RecoveryJob | BaseException


@dataclass
class AttemptEnv:
    """What the host that runs an attempt provides."""

    image: Image
    accel: AccelVerdict
    boot: BootMode = BootMode.SNAPSHOT
    on_machine: Callable[[Machine], None] = lambda _: None
    backend: BackendChoice = BackendChoice()  # what runs the machines (frozen: a shared default is safe)

    def hooks(self, case: Case, on_phase: Phase) -> RunHooks:
        return RunHooks(on_phase=on_phase, on_machine=self.on_machine, boot=self.boot, backend=self.backend,
                        oracles=dict(case.oracles))


def crashed_result(case: Case, env: AttemptEnv, run_dir: Path, exc: BaseException) -> WorkloadResult:
    """A bug in a kind or in the lab: INFRA-ERROR with the traceback kept, never a silent interruption."""
    text = "".join(traceback.format_exception(exc)).strip()
    log.error("case %s: %s: %s", case.id, type(exc).__name__, exc)
    result = WorkloadResult(case.workload, case.check.to_dict(), run_dir, env.image.id, env.image.kernel_version,
                            env.accel.accel.value, boot=env.boot.value, error=f"{type(exc).__name__}: {exc}",
                            status="failed")
    result.metrics["traceback"] = text
    if isinstance(exc, OSError):
        result.errno = exc.errno
    return result


def attempt_alone(env: AttemptEnv, case: Case, run_dir: Path, on_phase: Phase) -> WorkloadResult:
    """A case run by itself: one workload run, one cut (or none for kinds that cut no power)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return get_kind(case.workload).run(case.check, env.image, env.accel, run_dir, env.hooks(case, on_phase))
    except Exception as exc:
        return crashed_result(case, env, run_dir, exc)


def attempt_workload(env: AttemptEnv, cases: Sequence[Case], run_dirs: Sequence[Path], workload_dir: Path,
                     on_phase: Phase) -> list[Recoverable]:
    """One workload run cut at every case's crash point: a recovery job per case (or the crash, for each)."""
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
    first = cases[0]
    kind = get_kind(first.workload)
    assert kind.power_cut is not None
    try:
        return list(cut_workload(kind.name, kind.power_cut, [c.check for c in cases], env.image, env.accel,
                                 run_dirs, env.hooks(first, on_phase), workload_dir=workload_dir))
    except Exception as exc:
        return [exc] * len(cases)


def attempt_recovery(env: AttemptEnv, case: Case, job: Recoverable, run_dir: Path, on_phase: Phase) -> WorkloadResult:
    """Recover and judge one capture of a shared workload run."""
    if isinstance(job, BaseException):
        return crashed_result(case, env, run_dir, job)
    try:
        return job(env.hooks(case, on_phase))
    except Exception as exc:
        return crashed_result(case, env, run_dir, exc)


def attempt_group(env: AttemptEnv, cases: Sequence[Case], run_dirs: Sequence[Path], workload_dir: Path,
                  on_phase: Phase) -> list[WorkloadResult]:
    """A shared workload run and then its recoveries one after another, on this host: a cluster task
    (captures never cross hosts, and a task holds one machine slot at a time)."""
    jobs = attempt_workload(env, cases, run_dirs, workload_dir, on_phase)
    return [attempt_recovery(env, case, job, run_dir, on_phase)
            for case, job, run_dir in zip(cases, jobs, run_dirs)]


def run_spec(env: AttemptEnv, spec: dict[str, Any], base: Path, on_phase: Phase) -> list[WorkloadResult]:
    """One executor task as plain data (a Dask task, a lab host's `pmemlab attempt`): "alone" (one case) or
    "group" (a shared workload run and its recoveries, here); run directories are relative to `base`."""
    cases = [Case.from_dict(d) for d in spec["cases"]]
    dirs = [base / str(name) for name in spec["run_dirs"]]
    if spec["what"] == "alone":
        return [attempt_alone(env, cases[0], dirs[0], on_phase)]
    return attempt_group(env, cases, dirs, base / str(spec["workload_dir"]), on_phase)


def result_from_dict(data: dict[str, Any]) -> WorkloadResult:
    """A WorkloadResult.to_dict() back, as a cluster worker sent it."""
    result = WorkloadResult(str(data["kind"]), dict(data.get("check") or {}), Path(str(data["run_dir"])),
                            str(data.get("image_id") or ""), str(data.get("kernel_version") or ""),
                            str(data.get("accelerator") or ""), boot=str(data.get("boot") or BootMode.SNAPSHOT.value),
                            verdict=Verdict.parse(str(data.get("verdict") or Verdict.INFRA_ERROR.value)),
                            findings=[Finding.from_dict(f) for f in data.get("findings") or []],
                            metrics=dict(data.get("metrics") or {}),
                            kernel_problems=list(data.get("kernel_problems") or []),
                            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
                            error=data.get("error"), errno=data.get("errno"),
                            status=str(data.get("status") or "complete"),
                            qemu_version=str(data.get("qemu_version") or ""))
    return result


def lost_result(case: Case, image_id: str, accel: str, boot: str, run_dir: Path, why: str) -> WorkloadResult:
    """An attempt whose host (or the way to it) was lost: INFRA-ERROR, to retry elsewhere."""
    return WorkloadResult(case.workload, case.check.to_dict(), run_dir, image_id, "", accel, boot=boot, error=why,
                          status="failed")
