"""`pmemlab worker`: a Dask worker in this process, declaring this host's VM slots.

No nanny: the worker is this process, so QEMU's parent-death signal (set per starting thread)
kills every machine if the process is SIGKILLed, and SIGTERM/SIGINT/SIGHUP destroy them before the
worker leaves the scheduler. Run directories and the image cache are this host's own
(PMEMLAB_DATA, PMEMLAB_CACHE).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Callable

from lab.errors import LabError
from lab.cluster import tls
from lab.cluster.task import MACHINES
from lab.paths import cache_dir, data_dir
from lab.vm.accel import HostFacts, decide_from_facts

CLOSE_TIMEOUT_S = 20

log = logging.getLogger(__name__)


def accel_note() -> str:
    """This host's accelerator verdict where its facts decide it; otherwise a KVM test boot at the first case."""
    verdict = decide_from_facts(HostFacts.read(), "auto")
    return f"{verdict.accel.value} ({verdict.reason})" if verdict else "KVM if a test boot at the first case works"


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


CONNECT_DEADLINE_S = float(os.environ.get("PMEMLAB_WORKER_CONNECT_S", "60"))  # to reach the scheduler at start


async def _serve(scheduler: str, slots: int, name: str, announce: Callable[[str], None],
                 credentials: Path | None) -> str:
    from distributed import Worker

    stop = asyncio.Event()
    why: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        why.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    space = data_dir() / "dask-worker"
    space.mkdir(parents=True, exist_ok=True)
    # death_timeout: a scheduler that never answers ends the worker instead of a retry loop without end
    worker = Worker(scheduler, nthreads=slots, resources={"vm": slots}, name=name, local_directory=str(space),
                    dashboard=False, death_timeout=CONNECT_DEADLINE_S,
                    security=tls.security_for(scheduler, credentials))
    try:
        await worker
    except (asyncio.TimeoutError, OSError) as exc:
        raise LabError(f"worker {name}: no scheduler answered at {scheduler} within {CONNECT_DEADLINE_S:.0f} s "
                       f"({exc}): start it first ('pmemlab cluster up') or check the address") from None
    announce(f"worker {name}: {slots} VM slot(s) on {scheduler}; accelerator {accel_note()}; data {data_dir()}, "
             f"cache {cache_dir()}, pid {os.getpid()}")
    finished = asyncio.ensure_future(worker.finished())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
    MACHINES.destroy_all()  # first: a running attempt then ends at once, and close need not wait for it
    if not finished.done():
        try:
            await asyncio.wait_for(worker.close(timeout=CLOSE_TIMEOUT_S, executor_wait=False), CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError) as exc:
            log.warning("worker %s: close: %s", name, exc)
    stopping.cancel()
    return why[0] if why else "the scheduler closed the worker"


def serve(scheduler: str, slots: int, name: str | None = None,
          announce: Callable[[str], None] = lambda _: None, credentials: Path | None = None) -> str:
    """Run the worker until a signal or the scheduler ends it; returns why it ended. Every machine it
    made is destroyed on every way out. A tls:// scheduler is joined with `credentials` (lab.cluster.tls)."""
    tls.credentials_for(scheduler, credentials)  # missing credentials: one line before anything starts
    try:
        return asyncio.run(_serve(scheduler, slots, name or default_name(), announce, credentials))
    finally:
        MACHINES.destroy_all()
