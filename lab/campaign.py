"""Campaigns: run a scenario's cases in parallel, store every attempt, resume, repro.

A case is one crash point. Cases of a power-cut kind that differ only in
their crash point (same cell, repeat and workload) share one workload run:
freeze, capture, cont, on to the next crash point (`[crash] cuts_per_run`
caps how many). The run yields one capture per case; here each capture's
recovery is a task of its own, so K recoveries run in parallel on restored
machines (on a cluster they run inside the workload run's task, on its
worker: captures never cross hosts). A case run alone (every other kind, a retry, `repro`) is a
workload run with one cut.

One scheduler and one writer: `run_cases` plans tasks, starts and finishes
every attempt in the store on its own thread, retries INFRA-ERROR and stops
on a full disk; an Executor only runs tasks. The execution itself is
lab.attempt (pure: no store), shared by the local thread pool here and the
Dask cluster executor (lab.cluster.client), whose workers return results.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from lab import attempt
from lab.cases import Case
from lab.runner.guest_run import RunHooks, WorkloadResult, hung_coming_up
from lab.runner.machines import BootMode
from lab.workloads.catalog import get_kind
from lab.image.cache import Image
from lab.store.db import ResultsStore
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.backend import BackendChoice
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
    backend: BackendChoice = BackendChoice()  # frozen: one shared default is safe
    cuts_per_run: int | None = None  # crash points one workload run may serve; None: all of a cell's repeat
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""  # why the campaign stopped early (disk full, ...), for the user
    machines: LiveMachines = field(default_factory=LiveMachines)

    def env(self) -> attempt.AttemptEnv:
        return attempt.AttemptEnv(self.image, self.accel, self.boot, self.machines.add, self.backend)

    def hooks(self, case: Case, slot: str, progress: Progress) -> RunHooks:
        return self.env().hooks(case, lambda phase: progress.case_phase(slot, phase))

    def run_dir(self, case: Case, attempt: int) -> Path:
        path = self.runs_base / self.campaign_id / f"{case.id}-a{attempt}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _disk_full(result: WorkloadResult) -> bool:
    return result.errno == errno.ENOSPC


def crashed_result(case: Case, ctx: CampaignContext, run_dir: Path, exc: BaseException) -> WorkloadResult:
    """A bug in a kind or in the lab: INFRA-ERROR with the traceback kept (see lab.attempt)."""
    return attempt.crashed_result(case, ctx.env(), run_dir, exc)


@dataclass
class Task:
    """One unit of work for an executor, with its store bookkeeping.

    what: "alone" (one case), "group" (a shared workload run of several cases) or "recover" (one
    case's recovery from a shared workload run that ran in this process)."""

    what: str
    cases: list[Case]
    attempts: list[int]  # run-directory attempt numbers, one per case
    first_attempts: list[int]  # where each case's retry count starts (resume keeps earlier attempts)
    slot: str = ""
    attempt_ids: list[int] = field(default_factory=list)  # store ids, set when the task starts
    job: attempt.Recoverable | None = None  # "recover": the recovery to run
    avoid: str = ""  # a host just lost running this case: retry elsewhere
    started: float = 0.0

    def run_names(self, campaign_id: str) -> list[str]:
        """Run directories relative to a runs base: the executor's host has its own."""
        return [f"{campaign_id}/{c.id}-a{n}" for c, n in zip(self.cases, self.attempts)]

    def workload_name(self, campaign_id: str) -> str:
        return f"{campaign_id}/w-{self.cases[0].id}-a{self.attempts[0]}"

    def spec(self, ctx: CampaignContext, accel: str, key: str) -> dict[str, Any]:
        """What another process (a lab host, a Dask worker) needs to run this task with
        `attempt.run_spec`: plain data, run directories relative to that host's runs base."""
        return task_spec(key, self.what, self.cases, self.run_names(ctx.campaign_id),
                         self.workload_name(ctx.campaign_id), ctx.image.id, accel, ctx.boot, ctx.backend)


def task_spec(key: str, what: str, cases: Sequence[Case], run_dirs: Sequence[str], workload_dir: str, image_id: str,
              accel: str, boot: BootMode, backend: BackendChoice) -> dict[str, Any]:
    """`attempt.run_spec`'s input, built in one place for every executor and `pmemlab run --host`."""
    return {"key": key, "what": what, "cases": [c.to_dict() for c in cases], "run_dirs": list(run_dirs),
            "workload_dir": workload_dir, "image_id": image_id, "accel": accel, "boot": boot.value,
            "backend": backend.kind.value,
            **({"libvirt_uri": backend.libvirt_uri} if backend.kind.value == "libvirt" else {})}


@dataclass
class TaskDone:
    """What an executor hands back: results per case (same order), or a shared run's recoveries."""

    results: list[WorkloadResult] | None = None
    recoveries: list[attempt.Recoverable] | None = None
    host: str | None = None  # who ran it (None: this host, recorded when it started)
    lost: str = ""  # the host that was lost running it, if any
    interrupted: bool = False  # Ctrl-C or SIGTERM inside the task: no result


def _settle(ctx: CampaignContext, case: Case, slot: str, progress: Progress, attempt_id: int, attempt_no: int,
            first_attempt: int, result: WorkloadResult, started: float, host: str | None = None) -> CaseOutcome | None:
    """Store an attempt's result. None: an INFRA-ERROR to retry (the case goes back to pending)."""
    if _disk_full(result):
        # Retrying cannot help and every later case would fail the same way: stop cleanly, resume later.
        stop_campaign(ctx, f"the disk filled up during case {case.id}: {result.error or 'free space, then resume'}")
    if ctx.stop.is_set():
        # Killed by the interrupt or stopped for a full disk: left for `interrupt_running` to mark.
        return CaseOutcome(case, result, attempt_no, interrupted=True)
    tries = attempt_no - first_attempt
    # INFRA-ERROR is retried up to the bound. A machine that never came up (a boot or restore past its
    # deadline: seen once in a TCG cold boot under load, stuck at 3 guest seconds) is retried once: a
    # kernel that hangs at boot hangs again and is then HANG; a one-off stall is not called one.
    retry = (result.verdict is not case.expect and tries < ctx.max_infra_retries
             and (result.verdict is Verdict.INFRA_ERROR or (hung_coming_up(result) and tries == 0)))
    if not ctx.store.finish_attempt(attempt_id, result.to_dict(), final=not retry, host=host):
        return CaseOutcome(case, result, attempt_no, interrupted=True)  # delivered twice: counted once already
    if retry:
        return None
    progress.case_finished(slot, case, result.verdict, result.verdict is case.expect)
    wall = time.monotonic() - started
    return CaseOutcome(case, result, attempt_no, wall_s=wall, overhead_s=CaseOutcome.lab_overhead(wall, result))


def _start(ctx: CampaignContext, task: Task, progress: Progress, host: str | None) -> None:
    """Record the task's attempts as running (a recovery's attempt was started with its workload run)."""
    task.started = time.monotonic()
    if task.what != "recover":
        task.attempt_ids = [ctx.store.start_attempt(ctx.campaign_id, case.id, str(ctx.runs_base / name), host=host)
                            for case, name in zip(task.cases, task.run_names(ctx.campaign_id))]
    progress.case_started(task.slot, task.cases[0], task.attempts[0])


def _finish(ctx: CampaignContext, task: Task, done: TaskDone, progress: Progress,
            outcomes: list[CaseOutcome]) -> list[Task]:
    """Settle a finished task's attempts; the follow-up tasks (recoveries, retries alone) to queue first."""
    if done.recoveries is not None:
        return [Task("recover", [case], [n], [first], attempt_ids=[aid], job=job)
                for case, n, first, aid, job in zip(task.cases, task.attempts, task.first_attempts,
                                                    task.attempt_ids, done.recoveries)]
    if done.interrupted or done.results is None:
        outcomes.extend(CaseOutcome(case, None, n, interrupted=True) for case, n in zip(task.cases, task.attempts))
        return []
    follow: list[Task] = []
    for case, n, first, aid, result in zip(task.cases, task.attempts, task.first_attempts, task.attempt_ids,
                                           done.results):
        outcome = _settle(ctx, case, task.slot, progress, aid, n, first, result, task.started, done.host)
        if outcome is None:
            follow.append(Task("alone", [case], [n + 1], [first], avoid=done.lost))
        else:
            outcomes.append(outcome)
    return follow


class Executor(Protocol):
    """Where tasks run: a local thread pool (LocalExecutor) or a Dask cluster (lab.cluster.client)."""

    host: str | None  # recorded when an attempt starts; None: the attempt reports its host when it ends

    def capacity(self) -> int: ...
    def submit(self, task: Task, progress: Progress) -> Any: ...
    def wait(self, futures: list[Any], timeout: float) -> set[Any]: ...
    def collect(self, task: Task, future: Any) -> TaskDone: ...
    def abort(self, futures: list[Any]) -> None: ...
    def close(self) -> None: ...
    def shutdown(self) -> None: ...


class PoolWaiting:
    """wait/collect for executors whose tasks are concurrent.futures futures (the local pool, lab hosts)."""

    def wait(self, futures: list[Any], timeout: float) -> set[Any]:
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return done

    def collect(self, task: Task, future: Future[Any]) -> TaskDone:
        done: TaskDone = future.result()
        return done


class LocalExecutor(PoolWaiting):
    """This host's thread pool: machines start from its long-lived threads (QEMU's parent-death signal
    follows the thread that started it); a shared run's recoveries come back as tasks of their own,
    so K recoveries run in parallel."""

    def __init__(self, ctx: CampaignContext, jobs: int) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.host: str | None = socket.gethostname()
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="case")

    def capacity(self) -> int:
        return self.jobs

    def _run(self, task: Task, progress: Progress) -> TaskDone:
        env, ctx = self.ctx.env(), self.ctx
        dirs = [ctx.runs_base / name for name in task.run_names(ctx.campaign_id)]
        phase: attempt.Phase = lambda p: progress.case_phase(task.slot, p)  # noqa: E731
        try:
            if task.what == "alone":
                return TaskDone(results=[attempt.attempt_alone(env, task.cases[0], dirs[0], phase)])
            if task.what == "group":
                return TaskDone(recoveries=attempt.attempt_workload(
                    env, task.cases, dirs, ctx.runs_base / task.workload_name(ctx.campaign_id), phase))
            assert task.job is not None
            return TaskDone(results=[attempt.attempt_recovery(env, task.cases[0], task.job, dirs[0], phase)])
        except (KeyboardInterrupt, SystemExit):
            ctx.stop.set()
            return TaskDone(interrupted=True)

    def submit(self, task: Task, progress: Progress) -> Future[Any]:
        return self.pool.submit(self._run, task, progress)

    def abort(self, futures: list[Future[Any]]) -> None:
        self.ctx.machines.destroy_all()
        wait(futures, timeout=60)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def shutdown(self) -> None:
        self.close()


def run_case(ctx: CampaignContext, case: Case, slot: str, progress: Progress,
             first_attempt: int = 1, attempt: int | None = None) -> CaseOutcome:
    """Run one case alone here, retrying INFRA-ERROR a bounded number of times; every attempt is stored.
    `attempt`: the number to start at when earlier attempts of this run already counted (default first)."""
    number = attempt or first_attempt
    host = socket.gethostname()
    while True:
        task = Task("alone", [case], [number], [first_attempt], slot=slot)
        _start(ctx, task, progress, host)
        try:
            result = _alone_here(ctx, task, progress)
        except (KeyboardInterrupt, SystemExit):
            ctx.stop.set()
            return CaseOutcome(case, None, number, interrupted=True)
        outcome = _settle(ctx, case, slot, progress, task.attempt_ids[0], number, first_attempt, result,
                          task.started)
        if outcome is not None:
            return outcome
        number += 1


def _alone_here(ctx: CampaignContext, task: Task, progress: Progress) -> WorkloadResult:
    run_dir = ctx.runs_base / task.run_names(ctx.campaign_id)[0]
    return attempt.attempt_alone(ctx.env(), task.cases[0], run_dir, lambda p: progress.case_phase(task.slot, p))


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
        # cuts_per_run counts crash points: the ADR crash states of one point share its cut
        cuts = len({c.crash_index for c in group}) if group is not None else 0
        if group is None or (cuts_per_run is not None and cuts >= cuts_per_run
                             and case.crash_index not in {c.crash_index for c in group}):
            group = groups[key] = []
            tasks.append(group)
        group.append(case)
    return tasks


NO_SLOTS_TIMEOUT_S = 120.0  # how long a campaign waits for a machine slot when its cluster has none


def run_cases(ctx: CampaignContext, cases: list[Case], jobs: int, progress: Progress,
              attempts_so_far: Callable[[Case], int] = lambda _: 0,
              executor: Executor | None = None) -> list[CaseOutcome]:
    """Run `cases` on `jobs` local machines (or on `executor`: a cluster); Ctrl-C destroys every machine
    and marks in-flight cases interrupted.

    Tasks: a case alone, a shared workload run (which queues one recovery per case, ahead of new
    workload runs so captures do not pile up; a cluster runs them inside the workload's task), or a
    recovery. An INFRA-ERROR queues the case alone. Every store write happens on this thread."""
    outcomes: list[CaseOutcome] = []
    executor = executor or LocalExecutor(ctx, jobs)
    free_slots: list[str] = []
    known_slots = 0
    running: dict[Any, Task] = {}
    queue: deque[Task] = deque()
    for group in plan_tasks(cases, ctx.cuts_per_run):
        firsts = [attempts_so_far(c) + 1 for c in group]
        queue.append(Task("alone" if len(group) == 1 else "group", group, list(firsts), firsts))
    no_slots_since: float | None = None
    try:
        while queue or running:
            capacity = executor.capacity()
            if capacity == 0:  # a cluster whose every worker is gone: its tasks would wait forever
                no_slots_since = no_slots_since or time.monotonic()
                if time.monotonic() - no_slots_since > NO_SLOTS_TIMEOUT_S:
                    stop_campaign(ctx, f"no machine slots for {NO_SLOTS_TIMEOUT_S:.0f} s (every cluster worker is "
                                       "gone): start workers, then resume")
                    executor.abort(list(running))
                    running.clear()
                    break
            else:
                no_slots_since = None
            while known_slots < capacity:  # a cluster may grow while it runs
                known_slots += 1
                free_slots.append(f"machine {known_slots}")
            while queue and free_slots and not ctx.stop.is_set():
                if not disk_has_room(ctx.runs_base):
                    stop_campaign(ctx, f"less than {MIN_FREE_BYTES // 1024**3} GiB free under {ctx.runs_base}: "
                                       "free space, then resume")
                    break
                task = queue.popleft()
                task.slot = free_slots.pop(0)
                _start(ctx, task, progress, executor.host)
                running[executor.submit(task, progress)] = task
            if not running:
                break
            for future in executor.wait(list(running), 0.5):
                task = running.pop(future)
                free_slots.append(task.slot)
                queue.extendleft(reversed(_finish(ctx, task, executor.collect(task, future), progress, outcomes)))
            if ctx.stop.is_set() and not running:
                break
    except BaseException:
        ctx.stop.set()
        executor.abort(list(running))
        ctx.store.interrupt_running(ctx.campaign_id)
        raise
    finally:
        executor.close()
    if ctx.stop.is_set():
        ctx.store.interrupt_running(ctx.campaign_id)
    return outcomes
