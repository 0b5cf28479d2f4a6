"""The campaign's lab-host executor: each task a `pmemlab attempt` on an inventory host over SSH.

The same contract as the Dask executor (lab.cluster.client): `run_cases` stays the one scheduler
and the one store writer; this executor submits tasks ("alone", or "group": a shared workload run
with its recoveries there, since captures never cross the network), waits, and turns what comes
back into results. Each task has its own SSH connection, so a lost link fails that task alone: an
INFRA-ERROR "host lost: NAME" for each of its cases, retried by the controller's rule.
"""

from __future__ import annotations

import logging
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from lab import attempt
from lab.campaign import CampaignContext, PoolWaiting, Progress, Task, TaskDone
from lab.hosts.inventory import Host
from lab.hosts.push import push_image
from lab.hosts.remote_attempt import HostLost, run_attempt
from lab.hosts.ssh import HostConnection, HostError
from lab.runner.guest_run import WorkloadResult

log = logging.getLogger(__name__)


class HostExecutor(PoolWaiting):
    """Runs campaign tasks on one lab host, `host.slots` at a time."""

    def __init__(self, ctx: CampaignContext, host: Host, accel: str) -> None:
        self.ctx = ctx
        self.lab_host = host
        self.host: str | None = host.name  # recorded when each attempt starts
        self.accel = accel
        self.pool = ThreadPoolExecutor(max_workers=host.slots, thread_name_prefix=f"host-{host.name}")
        self._cancel = threading.Event()

    def prepare(self) -> int:
        """Reach the host and push the campaign's image there (skipped when it is there); its slots."""
        with HostConnection(self.lab_host) as conn:
            pushed = push_image(conn, self.ctx.image)
        log.info("image %s on %s: %s", pushed.image_id, pushed.host, "sent" if pushed.sent else "already there")
        return self.lab_host.slots

    def capacity(self) -> int:
        return self.lab_host.slots

    def submit(self, task: Task, progress: Progress) -> Future[Any]:
        assert task.what in ("alone", "group"), "a lab host runs a shared run's recoveries inside its task"
        return self.pool.submit(self._run, task, progress)

    def _run(self, task: Task, progress: Progress) -> TaskDone:
        key = f"{task.cases[0].id}-a{task.attempts[0]}-{secrets.token_hex(3)}"
        spec = task.spec(self.ctx, self.accel, key)
        keep = any(bool(getattr(c.check, "keep_capture", False)) for c in task.cases)
        name = self.lab_host.name
        try:
            with HostConnection(self.lab_host) as conn:
                outcome = run_attempt(conn, spec, self.ctx.runs_base, keep,
                                      lambda phase: progress.case_phase(task.slot, f"{name}: {phase}"), self._cancel)
            results = [attempt.result_from_dict(d) for d in outcome["results"]]
            if len(results) != len(task.cases):  # the campaign pairs them with its cases by position
                raise ValueError(f"{len(results)} results for {len(task.cases)} cases")
        except HostLost as exc:
            log.warning("%s (task of case %s)", exc, task.cases[0].id)
            return self._failed(task, f"host lost: {name}", lost=True)
        except HostError as exc:
            if self._cancel.is_set():
                return TaskDone(interrupted=True)
            # unreachable, or the attempt there failed without a result: no verdict, retried
            return self._failed(task, str(exc), lost="cannot connect" in str(exc) or "link is lost" in str(exc))
        except Exception as exc:  # tar here timing out, a full disk, a malformed outcome: this task's, not the campaign's end
            log.warning("task of case %s on %s: %s", task.cases[0].id, name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return self._failed(task, f"host {name!r}: the task failed here: {type(exc).__name__}: {exc}", lost=False)
        return TaskDone(results=results, host=str(outcome.get("host") or name))

    def _failed(self, task: Task, why: str, lost: bool) -> TaskDone:
        results: list[WorkloadResult] = [
            attempt.lost_result(case, self.ctx.image.id, self.accel, self.ctx.boot.value,
                                self.ctx.runs_base / run_name, why)
            for case, run_name in zip(task.cases, task.run_names(self.ctx.campaign_id))]
        return TaskDone(results=results, host=self.lab_host.name, lost=self.lab_host.name if lost else "")

    def abort(self, futures: list[Future[Any]]) -> None:
        """Ctrl-C: close every task's channel (sshd hangs each attempt's pty up: its machines are destroyed)."""
        self._cancel.set()
        wait(futures, timeout=60)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def shutdown(self) -> None:
        self.close()
