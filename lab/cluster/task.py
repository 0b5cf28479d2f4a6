"""What runs inside a Dask worker: one attempt (a case alone, or a shared workload run and all its
recoveries), with this host's image cache, accelerator verdict and run directories.

Pure: it returns plain dicts (WorkloadResult.to_dict() per case, and who ran it) and never opens
the results store. Captures never cross hosts: a shared run's recoveries run here, one after the
other, inside the one task that holds the worker's VM slot.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from functools import lru_cache
from typing import Any

from lab import attempt
from lab.image import cache as image_cache
from lab.paths import cache_dir, runs_dir
from lab.runner.machines import BootMode
from lab.vm.accel import AccelVerdict, choose
from lab.vm.boot import probe_kvm_boot
from lab.vm.machine import Machine

PROGRESS_TOPIC = "pmemlab-progress"
IMAGE_FILES = ("manifest.json", "vmlinuz", "initramfs.cpio.gz", "config", "build.log")

log = logging.getLogger(__name__)


class WorkerMachines:
    """Every machine this worker process made, by task, so a SIGTERM destroys them all at once
    (SIGKILL: QEMU's parent-death signal does) and an interrupted campaign destroys its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._machines: list[tuple[str, Machine]] = []

    def add(self, machine: Machine, key: str = "") -> None:
        with self._lock:
            self._machines = [(k, m) for k, m in self._machines if m.state.value != "dead"] + [(key, machine)]

    def running(self) -> int:
        with self._lock:
            return sum(1 for _, m in self._machines if m.state.value != "dead")

    def destroy_all(self, keys: set[str] | None = None) -> int:
        """Destroy the machines of tasks `keys` (None: every one); how many there were."""
        with self._lock:
            machines = [m for k, m in self._machines if keys is None or k in keys]
            self._machines = [(k, m) for k, m in self._machines if keys is not None and k not in keys]
        for machine in machines:
            try:
                machine.destroy()
            except Exception:
                pass  # best effort: the task's own `with` blocks clean up too
        return len(machines)


MACHINES = WorkerMachines()


@lru_cache(maxsize=8)
def _image_and_accel(image_id: str, accel: str) -> tuple[image_cache.Image, AccelVerdict]:
    image = image_cache.find_by_id(cache_dir(), image_id)
    if image is None:
        raise RuntimeError(f"image {image_id} is not in this worker's cache {cache_dir()}")
    return image, choose(accel, cache_dir(), lambda: probe_kvm_boot(image))


def worker_name() -> str:
    """This worker's name as the scheduler knows it (the host recorded for its attempts)."""
    from distributed import get_worker

    return str(get_worker().name)


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """One task: spec from lab.cluster.client (cases as dicts, relative run directories)."""
    from distributed import get_worker

    worker = get_worker()
    host = str(worker.name)
    key = str(spec["key"])
    image, accel = _image_and_accel(str(spec["image_id"]), str(spec["accel"]))
    env = attempt.AttemptEnv(image, accel, BootMode(spec["boot"]), lambda machine: MACHINES.add(machine, key))

    def phase(name: str) -> None:
        try:
            worker.log_event(PROGRESS_TOPIC, {"key": key, "host": host, "phase": name})
        except Exception:
            pass  # progress is a courtesy; the result is what counts

    results = attempt.run_spec(env, spec, runs_dir(), phase)
    return {"host": host, "results": [r.to_dict() for r in results]}


# -- images, by content id -----------------------------------------------
def has_image(image_id: str) -> bool:
    return image_cache.find_by_id(cache_dir(), image_id) is not None


def read_image(image_id: str) -> dict[str, bytes]:
    """The image's files, to push to a worker that lacks it."""
    image = image_cache.find_by_id(cache_dir(), image_id)
    if image is None:
        raise RuntimeError(f"image {image_id} is not in {cache_dir()}")
    return {name: (image.path / name).read_bytes() for name in IMAGE_FILES if (image.path / name).is_file()}


def receive_image(image_id: str, files: dict[str, bytes]) -> str:
    """Store a pushed image under its content id; the manifest last, as a build does."""
    images = cache_dir() / "images"
    final = images / image_id
    if (final / "manifest.json").is_file():
        return str(final)
    tmp = images / f".push-{image_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        if name != "manifest.json":
            (tmp / name).write_bytes(data)
    (tmp / "manifest.json").write_bytes(files["manifest.json"])
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("image %s received on %s", image_id, socket.gethostname())
    return str(final)


def destroy_tasks(keys: list[str]) -> int:
    """Destroy the machines of these tasks (an interrupted campaign's): Dask cannot stop their threads,
    but with their machines gone they end at once."""
    return MACHINES.destroy_all(set(keys))
