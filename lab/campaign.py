"""Campaigns: run a scenario's cases in parallel, store every attempt, resume, repro.

A case is one crash point. Cases of a power-cut kind that differ only in
their crash point (same cell, repeat and workload) share one workload run:
freeze, capture, cont, on to the next crash point (`[crash] cuts_per_run`
caps how many). The run yields one capture per case; each capture's
recovery is a task of its own, so K recoveries run in parallel on restored
machines. A case run alone (every other kind, a retry, `repro`) is a
workload run with one cut.

The runners keep no global state: they take cases, an image, an accelerator
verdict, a store and run directories, so a later executor can run them on
other hosts. The local executor here is a thread pool; machines are started
from the pool's long-lived worker threads (QEMU's parent-death signal
follows the thread that started it).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import threading
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from lab.cases import Case
from lab.crash.cut_flow import RecoveryJob, cut_workload
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.runner.machines import BootMode
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

log = logging.getLogger(__name__)


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
        """Wall time of the task outside its machine phases (a recovery of a shared workload run
        counts only its own phases: the workload's ran in another task)."""
        in_phases = sum(v for k, v in result.timings.items() if k != "total")
        in_phases -= float((result.metrics.get("cut") or {}).get("workload_s", 0.0))
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
    boot: BootMode = BootMode.SNAPSHOT
    cuts_per_run: int | None = None  # crash points one workload run may serve; None: all of a cell's repeat
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""  # why the campaign stopped early (disk full, ...), for the user
    machines: LiveMachines = field(default_factory=LiveMachines)

    def hooks(self, case: Case, slot: str, progress: Progress) -> RunHooks:
        return RunHooks(on_phase=lambda phase: progress.case_phase(slot, phase), on_machine=self.machines.add,
                        boot=self.boot, oracles=dict(case.oracles))

    def run_dir(self, case: Case, attempt: int) -> Path:
        path = self.runs_base / self.campaign_id / f"{case.id}-a{attempt}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _disk_full(result: WorkloadResult) -> bool:
    return result.errno == errno.ENOSPC


def crashed_result(case: Case, ctx: CampaignContext, run_dir: Path, exc: BaseException) -> WorkloadResult:
    """A bug in a kind or in the lab: INFRA-ERROR with the traceback kept, never a silent interruption."""
    text = "".join(traceback.format_exception(exc)).strip()
    log.error("case %s: %s: %s", case.id, type(exc).__name__, exc)
    result = WorkloadResult(case.workload, case.check.to_dict(), run_dir, ctx.image.id, ctx.image.kernel_version,
                            ctx.accel.accel.value, boot=ctx.boot.value, error=f"{type(exc).__name__}: {exc}",
                            status="failed")
    result.metrics["traceback"] = text
    if isinstance(exc, OSError):
        result.errno = exc.errno
    return result


def _settle(ctx: CampaignContext, case: Case, slot: str, progress: Progress, attempt_id: int, attempt: int,
            first_attempt: int, result: WorkloadResult, started: float) -> CaseOutcome | None:
    """Store an attempt's result. None: an INFRA-ERROR to retry (the case goes back to pending)."""
    if _disk_full(result):
        # Retrying cannot help and every later case would fail the same way: stop cleanly, resume later.
        stop_campaign(ctx, f"the disk filled up during case {case.id}: {result.error or 'free space, then resume'}")
    if ctx.stop.is_set():
        # Killed by the interrupt or stopped for a full disk: left for `interrupt_running` to mark.
        return CaseOutcome(case, result, attempt, interrupted=True)
    retry = (result.verdict is Verdict.INFRA_ERROR and case.expect is not Verdict.INFRA_ERROR
             and attempt - first_attempt < ctx.max_infra_retries)
    ctx.store.finish_attempt(attempt_id, result.to_dict(), final=not retry)
    if retry:
        return None
    progress.case_finished(slot, case, result.verdict, result.verdict is case.expect)
    wall = time.monotonic() - started
    return CaseOutcome(case, result, attempt, wall_s=wall, overhead_s=CaseOutcome.lab_overhead(wall, result))


def run_case(ctx: CampaignContext, case: Case, slot: str, progress: Progress,
             first_attempt: int = 1, attempt: int | None = None) -> CaseOutcome:
    """Run one case alone, retrying INFRA-ERROR a bounded number of times; every attempt is stored.
    `attempt`: the number to start at when earlier attempts of this run already counted (default first)."""
    attempt = attempt or first_attempt
    while True:
        started = time.monotonic()
        run_dir = ctx.run_dir(case, attempt)
        attempt_id = ctx.store.start_attempt(ctx.campaign_id, case.id, str(run_dir))
        progress.case_started(slot, case, attempt)
        try:
            result = get_kind(case.workload).run(case.check, ctx.image, ctx.accel, run_dir,
                                                 ctx.hooks(case, slot, progress))
        except (KeyboardInterrupt, SystemExit):
            ctx.stop.set()
            return CaseOutcome(case, None, attempt, interrupted=True)
        except Exception as exc:
            result = crashed_result(case, ctx, run_dir, exc)
        outcome = _settle(ctx, case, slot, progress, attempt_id, attempt, first_attempt, result, started)
        if outcome is not None:
            return outcome
        attempt += 1


@dataclass
class Recovery:
    """One case of a shared workload run, waiting for (or running) its recovery."""

    case: Case
    job: RecoveryJob | None  # None: the workload run itself crashed (see `crashed`)
    attempt_id: int
    attempt: int
    first_attempt: int
    run_dir: Path
    crashed: BaseException | None = None


def run_group(ctx: CampaignContext, cases: list[Case], slot: str, progress: Progress,
              first_attempts: list[int]) -> list[Recovery]:
    """One workload run cut at every case's crash point; returns a recovery per case, to schedule."""
    run_dirs = [ctx.run_dir(case, attempt) for case, attempt in zip(cases, first_attempts)]
    attempt_ids = [ctx.store.start_attempt(ctx.campaign_id, case.id, str(run_dir))
                   for case, run_dir in zip(cases, run_dirs)]
    first = cases[0]
    progress.case_started(slot, first, first_attempts[0])
    kind = get_kind(first.workload)
    assert kind.power_cut is not None
    workload_dir = ctx.runs_base / ctx.campaign_id / f"w-{first.id}-a{first_attempts[0]}"
    jobs: list[RecoveryJob | None]
    crashed: BaseException | None = None
    try:
        jobs = list(cut_workload(kind.name, kind.power_cut, [c.check for c in cases], ctx.image, ctx.accel, run_dirs,
                                 ctx.hooks(first, slot, progress), workload_dir=workload_dir))
    except (KeyboardInterrupt, SystemExit):
        ctx.stop.set()
        raise
    except Exception as exc:
        jobs, crashed = [None] * len(cases), exc
    return [Recovery(case, job, attempt_id, attempt, attempt, run_dir, crashed)
            for case, job, attempt_id, attempt, run_dir in zip(cases, jobs, attempt_ids, first_attempts, run_dirs)]


def run_recovery(ctx: CampaignContext, item: Recovery, slot: str, progress: Progress) -> CaseOutcome | None:
    """Recover and judge one capture of a shared workload run. None: retry the case alone."""
    progress.case_started(slot, item.case, item.attempt)
    started = time.monotonic()  # this task's own wall time: the shared workload run was another task
    try:
        if item.job is None:
            assert item.crashed is not None
            result = crashed_result(item.case, ctx, item.run_dir, item.crashed)
        else:
            result = item.job(ctx.hooks(item.case, slot, progress))
    except (KeyboardInterrupt, SystemExit):
        ctx.stop.set()
        return CaseOutcome(item.case, None, item.attempt, interrupted=True)
    except Exception as exc:
        result = crashed_result(item.case, ctx, item.run_dir, exc)
    return _settle(ctx, item.case, slot, progress, item.attempt_id, item.attempt, item.first_attempt, result,
                   started)


def stop_campaign(ctx: CampaignContext, reason: str) -> None:
    if not ctx.stop.is_set():
        ctx.stop_reason = reason
        ctx.stop.set()


def disk_has_room(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free >= MIN_FREE_BYTES


def plan_tasks(cases: list[Case], cuts_per_run: int | None) -> list[list[Case]]:
    """The cases in order, those that can share a workload run gathered: a list per workload run."""
    groups: dict[tuple[Any, ...], list[Case]] = {}
    tasks: list[list[Case]] = []
    for case in cases:
        power = get_kind(case.workload).power_cut
        workload_key = getattr(case.check, "workload_key", None)
        if power is None or case.crash is None or workload_key is None:
            tasks.append([case])
            continue
        key = (case.scenario_hash, case.cell_key, case.repeat, workload_key())
        group = groups.get(key)
        if group is None or (cuts_per_run is not None and len(group) >= cuts_per_run):
            group = groups[key] = []
            tasks.append(group)
        group.append(case)
    return tasks


def run_cases(ctx: CampaignContext, cases: list[Case], jobs: int, progress: Progress,
              attempts_so_far: Callable[[Case], int] = lambda _: 0) -> list[CaseOutcome]:
    """Run `cases` on `jobs` workers; Ctrl-C destroys every machine and marks in-flight cases interrupted.

    Tasks: a case alone, a shared workload run (which queues one recovery per case, ahead of new
    workload runs so captures do not pile up), or a recovery (an INFRA-ERROR queues the case alone)."""
    outcomes: list[CaseOutcome] = []
    free_slots = [f"machine {i + 1}" for i in range(jobs)]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="case")
    running: dict[Future[Any], tuple[str, str, Any]] = {}
    queue: deque[tuple[str, Any]] = deque(("case", group[0]) if len(group) == 1 else ("group", group)
                                          for group in plan_tasks(cases, ctx.cuts_per_run))
    try:
        while queue or running:
            while queue and free_slots and not ctx.stop.is_set():
                if not disk_has_room(ctx.runs_base):
                    stop_campaign(ctx, f"less than {MIN_FREE_BYTES // 1024**3} GiB free under {ctx.runs_base}: "
                                       "free space, then resume")
                    break
                what, item = queue.popleft()
                slot = free_slots.pop(0)
                future: Future[Any]
                if what == "case":
                    if isinstance(item, Case):
                        future = pool.submit(run_case, ctx, item, slot, progress, attempts_so_far(item) + 1)
                    else:  # a retry of a shared run's case, alone: (case, attempt, first attempt)
                        future = pool.submit(run_case, ctx, item[0], slot, progress, item[2], item[1])
                elif what == "group":
                    future = pool.submit(run_group, ctx, item, slot, progress,
                                         [attempts_so_far(c) + 1 for c in item])
                else:
                    future = pool.submit(run_recovery, ctx, item, slot, progress)
                running[future] = (slot, what, item)
            if not running:
                break
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                slot, what, item = running.pop(future)
                free_slots.append(slot)
                result = future.result()
                if what == "group":
                    queue.extendleft(("recover", r) for r in reversed(result))
                elif what == "recover" and result is None:
                    queue.appendleft(("case", (item.case, item.attempt + 1, item.first_attempt)))
                elif result is not None:
                    outcomes.append(result)
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
