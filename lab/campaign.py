"""Campaigns: run a scenario's cases in parallel, store every attempt, resume, repro.

The case runner (`run_case`) keeps no global state: it takes a case, an image,
an accelerator verdict, a store and a run directory, so a later executor can
run it on other hosts. The local executor here is a thread pool; machines
are started from the pool's long-lived worker threads (QEMU's parent-death
signal follows the thread that started it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from lab.cases import Case
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.workloads.catalog import get_kind
from lab.image.cache import Image
from lab.store.db import ResultsStore
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.vm.machine import Machine

MAX_INFRA_RETRIES = 2
MIN_FREE_BYTES = 2 * 1024**3  # below this the next capture may not fit: stop, resume later
MACHINE_OVERHEAD_MIB = 512  # QEMU itself, the TCG translation cache, page tables


class Progress(Protocol):
    """What a live display needs to know; the CLI renders it with rich."""

    def case_started(self, slot: str, case: Case, attempt: int) -> None: ...
    def case_phase(self, slot: str, phase: str) -> None: ...
    def case_finished(self, slot: str, case: Case, verdict: Verdict, met: bool) -> None: ...


class NoProgress:
    def case_started(self, slot: str, case: Case, attempt: int) -> None:
        pass

    def case_phase(self, slot: str, phase: str) -> None:
        pass

    def case_finished(self, slot: str, case: Case, verdict: Verdict, met: bool) -> None:
        pass


def new_campaign_id() -> str:
    return time.strftime("c%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def _mem_available_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def default_jobs(shape: MachineShape) -> int:
    """As many machines as there are CPUs, and as fit in free memory (each machine's RAM counted)."""
    per_machine = shape.memory_mib + MACHINE_OVERHEAD_MIB
    return max(1, min(os.cpu_count() or 1, _mem_available_mib() // per_machine))


class LiveMachines:
    """The machines the campaign's cases have made, so an interrupt can destroy them at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._machines: list[Machine] = []

    def add(self, machine: Machine) -> None:
        with self._lock:
            self._machines = [m for m in self._machines if m.state.value != "dead"] + [machine]

    def destroy_all(self) -> None:
        with self._lock:
            machines, self._machines = self._machines, []
        for machine in machines:
            try:
                machine.destroy()
            except Exception:
                pass  # best effort: the owning thread's `with` block cleans up too


@dataclass
class CaseOutcome:
    case: Case
    result: WorkloadResult | None
    attempts: int
    interrupted: bool = False
    wall_s: float = 0.0  # the last attempt, store writes included
    overhead_s: float = 0.0  # wall time outside every machine phase: the lab's own cost

    @staticmethod
    def lab_overhead(wall_s: float, result: WorkloadResult) -> float:
        in_phases = sum(v for k, v in result.timings.items() if k != "total")
        return max(0.0, wall_s - in_phases)


@dataclass
class CampaignContext:
    """What every case of one campaign shares."""

    campaign_id: str
    image: Image
    accel: AccelVerdict
    store: ResultsStore
    runs_base: Path
    max_infra_retries: int = MAX_INFRA_RETRIES
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""  # why the campaign stopped early (disk full, ...), for the user
    machines: LiveMachines = field(default_factory=LiveMachines)


def run_case(ctx: CampaignContext, case: Case, slot: str, progress: Progress,
             first_attempt: int = 1) -> CaseOutcome:
    """Run one case, retrying INFRA-ERROR a bounded number of times; every attempt is stored."""
    attempt = first_attempt
    while True:
        started = time.monotonic()
        run_dir = ctx.runs_base / ctx.campaign_id / f"{case.id}-a{attempt}"
        run_dir.mkdir(parents=True, exist_ok=True)
        attempt_id = ctx.store.start_attempt(ctx.campaign_id, case.id, str(run_dir))
        progress.case_started(slot, case, attempt)
        hooks = RunHooks(on_phase=lambda phase: progress.case_phase(slot, phase), on_machine=ctx.machines.add)
        try:
            result = get_kind(case.workload).run(case.check, ctx.image, ctx.accel, run_dir, hooks)
        except BaseException:
            if not ctx.stop.is_set():
                ctx.stop.set()
            return CaseOutcome(case, None, attempt, interrupted=True)
        if result.verdict is Verdict.INFRA_ERROR and "No space left on device" in (result.to_dict().get("error") or ""):
            # Retrying cannot help and every later case would fail the same way: stop cleanly, resume later.
            stop_campaign(ctx, f"the disk filled up during case {case.id}: free space, then resume")
        if ctx.stop.is_set():
            # Killed by the interrupt, not by the kernel: left for `interrupt_running` to mark.
            return CaseOutcome(case, result, attempt, interrupted=True)
        retry = (result.verdict is Verdict.INFRA_ERROR and case.expect is not Verdict.INFRA_ERROR
                 and attempt - first_attempt < ctx.max_infra_retries)
        ctx.store.finish_attempt(attempt_id, result.to_dict(), final=not retry)
        if not retry:
            progress.case_finished(slot, case, result.verdict, result.verdict is case.expect)
            wall = time.monotonic() - started
            return CaseOutcome(case, result, attempt, wall_s=wall, overhead_s=CaseOutcome.lab_overhead(wall, result))
        attempt += 1


def stop_campaign(ctx: CampaignContext, reason: str) -> None:
    if not ctx.stop.is_set():
        ctx.stop_reason = reason
        ctx.stop.set()


def disk_has_room(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free >= MIN_FREE_BYTES


def run_cases(ctx: CampaignContext, cases: list[Case], jobs: int, progress: Progress,
              attempts_so_far: Callable[[Case], int] = lambda _: 0) -> list[CaseOutcome]:
    """Run `cases` on `jobs` workers; Ctrl-C destroys every machine and marks in-flight cases interrupted."""
    outcomes: list[CaseOutcome] = []
    free_slots = [f"machine {i + 1}" for i in range(jobs)]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="case")
    running: dict[Future[CaseOutcome], str] = {}
    queue = list(cases)
    try:
        while queue or running:
            while queue and free_slots and not ctx.stop.is_set():
                if not disk_has_room(ctx.runs_base):
                    stop_campaign(ctx, f"less than {MIN_FREE_BYTES // 1024**3} GiB free under {ctx.runs_base}: "
                                       "free space, then resume")
                    break
                case = queue.pop(0)
                slot = free_slots.pop(0)
                running[pool.submit(run_case, ctx, case, slot, progress, attempts_so_far(case) + 1)] = slot
            if not running:
                break
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                free_slots.append(running.pop(future))
                outcomes.append(future.result())
            if ctx.stop.is_set() and not running:
                break
    except BaseException:
        ctx.stop.set()
        ctx.machines.destroy_all()
        wait(list(running), timeout=60)
        ctx.store.interrupt_running(ctx.campaign_id)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if ctx.stop.is_set():
        ctx.store.interrupt_running(ctx.campaign_id)
    return outcomes
