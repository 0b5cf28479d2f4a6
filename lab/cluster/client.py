"""The campaign's cluster executor: tasks on Dask distributed workers, bookkeeping here.

`run_cases` (lab.campaign) stays the one scheduler and the one store writer; this executor only
submits each task (`resources={"vm": 1}`, `pure=False`: the same case twice is two runs), waits,
and turns what comes back into results. A worker that dies mid-task (KilledWorker: the scheduler
runs with allowed-failures 0, since the lab retries) or a task cancelled with a lost connection
is an INFRA-ERROR "host lost: NAME" for each of the task's cases, retried on another worker.
"""

from __future__ import annotations

import logging
import secrets
import time
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from distributed import Client, KilledWorker
from distributed import wait as dask_wait

from lab import attempt
from lab.campaign import CampaignContext, Progress, Task, TaskDone
from lab.cluster import task as remote
from lab.cluster import tls
from lab.errors import LabError
from lab.runner.guest_run import WorkloadResult

CONNECT_TIMEOUT_S = 20
CAPACITY_REFRESH_S = 2.0

log = logging.getLogger(__name__)


class ClusterError(LabError):
    """The cluster cannot take the campaign (no scheduler, no workers, an image it cannot get)."""


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S, credentials: Path | None = None) -> Client:
    """A client of the scheduler at `address`; a tls:// one with its cluster's credentials (lab.cluster.tls)."""
    security = tls.security_for(address, credentials)
    try:
        return Client(address, timeout=timeout, set_as_default=False, security=security)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def workers(client: Client) -> dict[str, dict[str, Any]]:
    """address -> the scheduler's record of that worker (name, resources, ...)."""
    info: dict[str, dict[str, Any]] = client.scheduler_info(n_workers=-1)["workers"]
    return info


def vm_slots(client: Client) -> int:
    return sum(int((w.get("resources") or {}).get("vm", 0)) for w in workers(client).values())


class ClusterExecutor:
    """Runs campaign tasks on a Dask cluster; `host` is None: each attempt learns its worker at the end."""

    host: str | None = None

    def __init__(self, ctx: CampaignContext, client: Client, accel: str) -> None:
        self.ctx = ctx
        self.client = client
        self.accel = accel
        self._capacity = (0, 0.0)
        self._names: dict[str, str] = {}  # worker address -> name, to name a lost host
        self._slots: dict[str, tuple[str, Progress]] = {}  # task key -> (slot, progress)
        self._pinned: dict[str, tuple[set[str], Any]] = {}  # a retry kept off a lost host: its workers, future
        client.subscribe_topic(remote.PROGRESS_TOPIC, self._on_progress)

    # -- before the first task -------------------------------------------
    def prepare(self, image_id: str, deadline_s: float = 120.0) -> int:
        """Wait for a worker with VM slots; push the image (by content id) to workers that lack it.
        Returns the cluster's VM slots."""
        until = time.monotonic() + deadline_s
        while vm_slots(self.client) == 0:
            if time.monotonic() > until:
                raise ClusterError(f"no worker with VM slots joined the scheduler within {deadline_s:.0f} s "
                                   "(start one with 'pmemlab worker --scheduler ...')")
            time.sleep(0.5)
        have = self.client.run(remote.has_image, image_id)
        missing = [address for address, present in have.items() if not present]
        if missing:
            log.info("pushing image %s to %d worker(s)", image_id, len(missing))
            files = remote.read_image(image_id)
            self.client.run(remote.receive_image, image_id, files, workers=missing)
        return self.capacity()

    # -- Executor ---------------------------------------------------------
    def capacity(self) -> int:
        slots, at = self._capacity
        if time.monotonic() - at > CAPACITY_REFRESH_S:
            info = workers(self.client)
            self._names.update({address: str(w.get("name")) for address, w in info.items()})
            slots = sum(int((w.get("resources") or {}).get("vm", 0)) for w in info.values())
            self._capacity = (slots, time.monotonic())
            self._unpin(set(info))
        return slots

    def _unpin(self, live: set[str]) -> None:
        """A retry pinned to workers that are all gone now would wait forever: cancel it (lost again,
        so retried anywhere)."""
        for key, (addresses, future) in list(self._pinned.items()):
            if future.done():
                self._pinned.pop(key)
            elif not addresses & live:
                self._pinned.pop(key)
                future.cancel()

    def submit(self, task: Task, progress: Progress) -> Any:
        assert task.what in ("alone", "group"), "a cluster runs a shared run's recoveries inside its task"
        key = f"pmemlab-{task.cases[0].id}-a{task.attempts[0]}-{secrets.token_hex(3)}"
        spec = task.spec(self.ctx, self.accel, key)
        # A retry after a lost host runs elsewhere: pinned to the other workers (a restarted worker of
        # the same name, too, is the host that just failed), while any is left.
        elsewhere = [a for a, w in workers(self.client).items() if str(w.get("name")) != task.avoid] \
            if task.avoid else []
        self._slots[key] = (task.slot, progress)
        future = self.client.submit(remote.run_task, spec, key=key, resources={"vm": 1}, pure=False,
                                    workers=elsewhere or None)
        if elsewhere:
            self._pinned[key] = (set(elsewhere), future)
        return future

    def wait(self, futures: list[Any], timeout: float) -> set[Any]:
        try:
            with self.client.as_current():  # dask's wait looks for its client there, not in the futures
                done, _ = dask_wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        return set(done)

    def collect(self, task: Task, future: Any) -> TaskDone:
        self._slots.pop(str(future.key), None)
        try:
            data = future.result()
        except KilledWorker as exc:
            return self._lost(task, self._lost_name(exc))
        except CancelledError:
            return self._lost(task, "every worker it could run on, or the scheduler connection (task cancelled)")
        except Exception as exc:  # the task itself raised: no result came back from the worker
            why = f"cluster task failed: {type(exc).__name__}: {exc}"
            return TaskDone(results=[self._failed(task, i, why) for i in range(len(task.cases))])
        finally:
            future.release()
        results = [attempt.result_from_dict(d) for d in data["results"]]
        return TaskDone(results=results, host=str(data["host"]))

    def abort(self, futures: list[Any]) -> None:
        """Ctrl-C: destroy the running tasks' machines on their workers (Dask cannot stop a thread, but
        an attempt without its machines ends at once), then cancel them."""
        keys = [str(f.key) for f in futures]
        try:
            self.client.run(remote.destroy_tasks, keys, wait=True)
        except Exception as exc:  # a lost worker's machines died with it
            log.warning("destroying the interrupted tasks' machines: %s", exc)
        self.client.cancel(futures)

    def close(self) -> None:
        """The campaign's tasks are done (run_cases calls this); the client stays for the caller."""
        try:
            self.client.unsubscribe_topic(remote.PROGRESS_TOPIC)
        except Exception:
            pass

    def shutdown(self) -> None:
        """Close the client too (the CLI's executor owns it)."""
        self.close()
        self.client.close()

    def worker_names(self) -> list[str]:
        return sorted(str(w.get("name")) for w in workers(self.client).values())

    # -- helpers ----------------------------------------------------------
    def _on_progress(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        slot = self._slots.get(str(msg.get("key")))
        if slot is not None:
            slot[1].case_phase(slot[0], f"{msg.get('host')}: {msg.get('phase')}")

    def _lost_name(self, exc: KilledWorker) -> str:
        worker = exc.last_worker
        name = getattr(worker, "name", None)
        address = str(getattr(worker, "address", worker))
        return str(name if name is not None else self._names.get(address, address))

    def _failed(self, task: Task, index: int, why: str) -> WorkloadResult:
        run_dir = self.ctx.runs_base / task.run_names(self.ctx.campaign_id)[index]
        return attempt.lost_result(task.cases[index], self.ctx.image.id, self.accel, self.ctx.boot.value, run_dir,
                                   why)

    def _lost(self, task: Task, name: str) -> TaskDone:
        log.warning("host lost: %s (task of case %s)", name, task.cases[0].id)
        why = f"host lost: {name}"
        return TaskDone(results=[self._failed(task, i, why) for i in range(len(task.cases))], host=name, lost=name)
