"""Campaigns across hosts, process tier: a scheduler on 127.0.0.1 and two `pmemlab worker` processes,
each with its own PMEMLAB_DATA and PMEMLAB_CACHE (one seeded with the image, the other gets it
pushed by content id), one VM slot each, TCG. One worker's process group is SIGKILLed while it runs a
machine: its QEMU dies with it, its media lock is free, the attempt is INFRA-ERROR "host lost" and the
campaign completes on the other worker with every expectation met."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cluster import tls
from lab.cluster.local import pmemlab_argv
from lab.image.cache import Image
from lab.store.db import ResultsStore
from lab.vm.process import wait_until
from tests.conftest import _lab_qemu_cmdlines, lab_qemu_processes

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
# Slow records: the workload runs long enough to be cut down mid-case (0.1 s per record).
SLOW = ((REPO / "scenarios" / "smoke.toml").read_text()
        .replace("records = 40", "records = 40\ndelay_us = 100000").replace("ack = 20", "ack = 30"))


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMEMLAB_")}
    return {**env, "NO_COLOR": "1", "PYTHONPATH": str(REPO), **extra}


class Procs:
    """Every process the test starts (own process group each), stopped by pid on every path. They run
    as `pmemlab ...` where the entry point is installed, so CI's leftover check sees any."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
        with log.open("w") as out:
            proc = subprocess.Popen([*pmemlab_argv(), *args], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def procs() -> Iterator[Procs]:
    owned = Procs()
    try:
        yield owned
    finally:
        owned.stop_all()


def qemu_of(data: Path) -> list[int]:
    """Lab QEMU processes whose command line names a path under `data` (a worker's runs or cache)."""
    return [pid for pid, line in _lab_qemu_cmdlines().items() if str(data) in line]


def media_locked(data: Path) -> list[Path]:
    locked = []
    for media in data.rglob("*.img"):
        fd = os.open(media, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            locked.append(media)
        finally:
            os.close(fd)
    return locked


@pytest.mark.timeout(420)
def test_a_killed_worker_host_loses_one_attempt_and_the_campaign_completes(image: Image, tmp_path: Path,
                                                                           procs: Procs) -> None:
    scenario = tmp_path / "slow-smoke.toml"
    scenario.write_text(SLOW)
    hosts = {name: (tmp_path / name / "data", tmp_path / name / "cache") for name in ("wa", "wb")}
    seeded = hosts["wa"][1] / "images" / image.id
    shutil.copytree(image.path, seeded)  # wb's cache stays empty: the controller pushes the image
    scheduler_file = tmp_path / "scheduler.json"
    credentials = tmp_path / "tls.pem"
    tls.create(credentials)
    procs.start(["cluster", "scheduler", "--scheduler-file", str(scheduler_file), "--tls", str(credentials)],
                base_env(), tmp_path / "s.log")
    assert wait_until(scheduler_file.is_file, 60), (tmp_path / "s.log").read_text()
    address = json.loads(scheduler_file.read_text())["address"]
    workers = {name: procs.start(["worker", "--scheduler", address, "--vm", "1", "--name", name,
                                  "--tls", str(credentials)],
                                 base_env(PMEMLAB_DATA=str(data), PMEMLAB_CACHE=str(cache)), tmp_path / f"{name}.log")
               for name, (data, cache) in hosts.items()}
    controller = tmp_path / "controller"
    campaign = procs.start(["campaign", "run", str(scenario), "--cluster", address, "--accel", "tcg", "--json"],
                           base_env(PMEMLAB_DATA=str(controller), PMEMLAB_CLUSTER_TLS=str(credentials)),
                           tmp_path / "campaign.log")

    # wa runs its case's workload machine (media in its run directory): cut that host down.
    victim_data = hosts["wa"][0].parent
    victim_runs = hosts["wa"][0] / "runs"
    assert wait_until(lambda: bool(qemu_of(victim_runs)) or campaign.poll() is not None, 240, interval=0.1), \
        (tmp_path / "campaign.log").read_text()[-3000:]
    assert campaign.poll() is None, "the campaign ended before the worker could be killed"
    os.killpg(workers["wa"].pid, signal.SIGKILL)
    killed_at = time.time()
    workers["wa"].wait(10)
    assert wait_until(lambda: not qemu_of(victim_data), 15), "an orphaned QEMU outlived its worker"
    assert list(victim_runs.rglob("*.img"))
    # A dying process's cmdline empties (its memory is torn down) just before its files close: wait briefly.
    assert wait_until(lambda: media_locked(victim_data) == [], 10), media_locked(victim_data)

    assert campaign.wait(300) == 0, (tmp_path / "campaign.log").read_text()[-3000:]
    store = ResultsStore.open(f"sqlite:///{controller}/results.db")
    (listing,) = store.list_campaigns()
    record = store.get_campaign(listing.campaign.id)
    assert all(c.status == "finished" and c.met_expectation for c in record.cases)
    lost = [a for c in record.cases for a in c.attempts if a.verdict == "INFRA-ERROR"]
    assert [(a.error, a.host) for a in lost] == [("host lost: wa", "wa")]
    assert all(c.latest is not None and c.latest.host in ("wa", "wb") for c in record.cases)
    retried = next(c for c in record.cases if lost[0] in c.attempts).latest
    assert retried is not None and retried.host == "wb" and retried.started_at is not None
    print(f"host lost, detected and the case restarted on wb {retried.started_at.timestamp() - killed_at:.2f} s "
          "after the SIGKILL")
    assert (hosts["wb"][1] / "images" / image.id / "manifest.json").is_file()  # pushed by content id
    procs.stop_all()
    assert wait_until(lambda: not lab_qemu_processes(), 15), lab_qemu_processes()
