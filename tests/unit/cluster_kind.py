"""A sleep-based workload kind for the cluster tests, registered only by them (in the controller and,
through a worker plugin, in each Dask worker): it boots nothing, says where it runs, sleeps, and
returns the verdict the cell expects (map_sync on: PASS, off: VIOLATION)."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from lab.oracles.finding import Finding
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.verdict import Verdict
from lab.workloads import catalog, mapsync_kind

NAME = "sleep-test"
SLEEP_S = float(os.environ.get("PMEMLAB_TEST_SLEEP_S", "3"))


class StandInMachine:
    """What the worker's machine registry sees of this kind's 'machine': destroy() ends the sleep early
    and leaves a mark, as destroying a real machine ends its attempt."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark
        self.destroyed = threading.Event()
        self.state = SimpleNamespace(value="running")

    def destroy(self) -> None:
        self.mark.write_text("destroyed")
        self.state.value = "dead"
        self.destroyed.set()


def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    started = Path(os.environ["PMEMLAB_DATA"]) / "started"
    started.mkdir(parents=True, exist_ok=True)
    machine = StandInMachine(started / f"{run_dir.name}.destroyed")
    hooks.on_machine(machine)  # type: ignore[arg-type]  # registered before it says it started
    (started / f"{run_dir.name}.{os.getpid()}").write_text(str(os.getpid()))
    hooks.on_phase("sleeping")
    if machine.destroyed.wait(SLEEP_S):
        raise RuntimeError("the machine was destroyed")
    verdict = Verdict.PASS if check.params.map_sync else Verdict.VIOLATION
    result = WorkloadResult(NAME, check.to_dict(), run_dir, image.id, image.kernel_version, accel.accel.value,
                            verdict=verdict, findings=[Finding("sleep", verdict, f"slept {SLEEP_S} s")],
                            timings={"workload": SLEEP_S, "total": SLEEP_S})
    (run_dir / "result.json").write_text("{}")
    return result


KIND = replace(mapsync_kind.KIND, name=NAME, run=run, power_cut=None)

# A power-cut kind whose crash points share a workload run: the campaign plans groups for it, and a
# cluster runs each group's K recoveries inside one task. Its workload run is the fake below.
CUT_NAME = "sleep-cut-test"
CUT_KIND = replace(mapsync_kind.KIND, name=CUT_NAME, run=run)
FAIL_RECOVERY = 3  # the fourth recovery of each workload run is INFRA-ERROR: the case is retried alone


def fake_cut_workload(kind: str, power: Any, checks: list[Any], image: Any, accel: Any, run_dirs: list[Path],
                      hooks: RunHooks, workload_dir: Path) -> list[Any]:
    """One 'workload run' for K checks, in this process; each job says which process recovered it."""
    workload_pid = os.getpid()

    def job(check: Any, run_dir: Path, index: int) -> Any:
        def recover(hooks: RunHooks) -> WorkloadResult:
            ok = Verdict.PASS if check.params.map_sync else Verdict.VIOLATION
            verdict = Verdict.INFRA_ERROR if index == FAIL_RECOVERY else ok
            result = WorkloadResult(CUT_NAME, check.to_dict(), run_dir, image.id, image.kernel_version,
                                    accel.accel.value, verdict=verdict, findings=[Finding("fake", verdict, "cut")])
            result.metrics["pids"] = {"workload": workload_pid, "recovery": os.getpid()}
            return result
        return recover

    return [job(check, run_dir, i) for i, (check, run_dir) in enumerate(zip(checks, run_dirs))]


def register() -> None:
    catalog.kinds()[NAME] = KIND  # kinds() is cached: the dict it returns is the registry
    catalog.kinds()[CUT_NAME] = CUT_KIND


def unregister() -> None:
    catalog.kinds().pop(NAME, None)
    catalog.kinds().pop(CUT_NAME, None)


class SleepKind(WorkerPlugin):
    name = "pmemlab-sleep-test-kind"

    def setup(self, worker: Any) -> None:
        import lab.attempt

        register()
        lab.attempt.cut_workload = fake_cut_workload  # type: ignore[assignment]  # only in the test's workers
