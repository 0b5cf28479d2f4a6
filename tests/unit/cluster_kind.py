"""A sleep-based workload kind for the cluster tests, registered only by them (in the controller and,
through a worker plugin, in each Dask worker): it boots nothing, says where it runs, sleeps, and
returns the verdict the cell expects (map_sync on: PASS, off: VIOLATION)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from lab.oracles.finding import Finding
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.verdict import Verdict
from lab.workloads import catalog, mapsync_kind

NAME = "sleep-test"
SLEEP_S = float(os.environ.get("PMEMLAB_TEST_SLEEP_S", "3"))


def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    started = Path(os.environ["PMEMLAB_DATA"]) / "started"
    started.mkdir(parents=True, exist_ok=True)
    (started / f"{run_dir.name}.{os.getpid()}").write_text(str(os.getpid()))
    hooks.on_phase("sleeping")
    time.sleep(SLEEP_S)
    verdict = Verdict.PASS if check.params.map_sync else Verdict.VIOLATION
    result = WorkloadResult(NAME, check.to_dict(), run_dir, image.id, image.kernel_version, accel.accel.value,
                            verdict=verdict, findings=[Finding("sleep", verdict, f"slept {SLEEP_S} s")],
                            timings={"workload": SLEEP_S, "total": SLEEP_S})
    (run_dir / "result.json").write_text("{}")
    return result


KIND = replace(mapsync_kind.KIND, name=NAME, run=run, power_cut=None)


def register() -> None:
    catalog.kinds()[NAME] = KIND  # kinds() is cached: the dict it returns is the registry


def unregister() -> None:
    catalog.kinds().pop(NAME, None)


class SleepKind(WorkerPlugin):
    name = "pmemlab-sleep-test-kind"

    def setup(self, worker: Any) -> None:
        register()
