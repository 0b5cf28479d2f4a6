"""`pmemlab cluster up --local N | status | down`: a scheduler and N workers on this machine, as
processes this lab starts (each its own process group), records (pids in a state file under the
data directory) and stops by pid; nothing is found or killed by name.

Both run as pmemlab commands (`pmemlab cluster scheduler`, hidden; `pmemlab worker`), so a leftover
shows in `pgrep -af 'pmemlab (worker|cluster)'`. The scheduler runs with allowed-failures 0: a
worker that dies mid-task fails the task at once (KilledWorker), and the campaign records "host
lost" and retries it elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.paths import data_dir

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
SCHEDULER_MARK = " cluster scheduler --scheduler-file "
WORKER_MARK = " worker --scheduler "


class ClusterStateError(LabError):
    """No local cluster recorded, one already up, or one that did not come up."""


def cluster_dir() -> Path:
    return data_dir() / "cluster"


def state_path() -> Path:
    return cluster_dir() / "state.json"


@dataclass
class Member:
    role: str  # "scheduler" or "worker"
    pid: int
    log: str
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)  # started by this command

    def cmdline(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        """Alive and still ours: a recycled pid running something else is not."""
        if self.proc is not None:
            return self.proc.poll() is None
        mark = SCHEDULER_MARK if self.role == "scheduler" else WORKER_MARK
        return mark in self.cmdline()


@dataclass
class LocalCluster:
    address: str
    members: list[Member]

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address,
                "members": [{"role": m.role, "pid": m.pid, "log": m.log} for m in self.members]}

    @classmethod
    def load(cls) -> LocalCluster | None:
        path = state_path()
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(str(data["address"]), [Member(str(m["role"]), int(m["pid"]), str(m["log"]))
                                              for m in data["members"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise ClusterStateError(f"{path}: not a cluster state file ({exc}); remove it") from None

    def save(self) -> None:
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.rename(path)


def pmemlab_argv() -> list[str]:
    """How to run pmemlab from here: the installed entry point beside this Python, or the module."""
    script = Path(sys.executable).parent / "pmemlab"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "lab.cli"]


async def _serve_scheduler(host: str, port: int, scheduler_file: Path) -> None:
    import asyncio

    from distributed import Scheduler

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    async with Scheduler(host=host, port=port, dashboard=False, allowed_failures=0,
                         scheduler_file=str(scheduler_file)) as scheduler:
        finished = asyncio.ensure_future(scheduler.finished())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()


def serve_scheduler(host: str, port: int, scheduler_file: Path) -> None:
    """The scheduler, in this process, until a signal (`pmemlab cluster scheduler`)."""
    import asyncio

    asyncio.run(_serve_scheduler(host, port, scheduler_file))


def _spawn(role: str, argv: list[str], log: Path, env: dict[str, str]) -> Member:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    return Member(role, proc.pid, str(log), proc)


def _wait_for_file(path: Path, member: Member, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        if path.is_file():
            try:
                data: dict[str, Any] = json.loads(path.read_text())
                return data
            except ValueError:
                pass  # being written
        if not member.alive():
            break
        time.sleep(0.1)
    raise ClusterStateError(f"the scheduler did not start; see {member.log}")


def stop_members(members: list[Member], timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """SIGTERM each live member's process group, SIGKILL what is left at the deadline; what was done."""
    done: list[str] = []
    live = [m for m in members if m.alive()]
    for member in live:
        try:
            os.killpg(member.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(m.alive() for m in live):
        for member in live:
            _reap(member.pid)
        time.sleep(0.1)
    for member in live:
        if member.alive():  # past the deadline
            try:
                os.killpg(member.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            done.append(f"{member.role} {member.pid}: killed")
        else:
            done.append(f"{member.role} {member.pid}: stopped")
        _reap(member.pid)
    return done


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (started by an earlier command): init reaps it


def up(workers: int, slots: int, port: int = 0, host: str = "127.0.0.1",
       extra_env: dict[str, str] | None = None) -> LocalCluster:
    """Start a scheduler and `workers` workers of `slots` VM slots; wait until all have joined."""
    existing = LocalCluster.load()
    if existing is not None and any(m.alive() for m in existing.members):
        raise ClusterStateError(f"a local cluster is already up at {existing.address} "
                                "('pmemlab cluster down' first)")
    where = cluster_dir()
    where.mkdir(parents=True, exist_ok=True)
    scheduler_file = where / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    env = dict(os.environ, **(extra_env or {}))
    members: list[Member] = []
    try:
        members.append(_spawn("scheduler", pmemlab_argv() + ["cluster", "scheduler", "--scheduler-file",
                                                             str(scheduler_file), "--host", host, "--port", str(port)],
                              where / "scheduler.log", env))
        deadline = time.monotonic() + START_TIMEOUT_S
        address = str(_wait_for_file(scheduler_file, members[0], deadline)["address"])
        for i in range(workers):
            members.append(_spawn("worker", pmemlab_argv() + ["worker", "--scheduler", address,
                                                             "--vm", str(slots), "--name", f"local-{i + 1}"],
                                  where / f"worker-{i + 1}.log", env))
        cluster = LocalCluster(address, members)
        cluster.save()
        _wait_for_workers(cluster, workers, deadline)
        return cluster
    except BaseException:
        stop_members(members)
        state_path().unlink(missing_ok=True)
        raise


def _wait_for_workers(cluster: LocalCluster, count: int, deadline: float) -> None:
    from lab.cluster.client import connect, workers

    client = connect(cluster.address)
    try:
        while len(workers(client)) < count:
            dead = [m for m in cluster.members if not m.alive()]
            if dead or time.monotonic() > deadline:
                logs = ", ".join(m.log for m in dead or cluster.members[1:])
                raise ClusterStateError(f"{count} worker(s) did not join {cluster.address}; see {logs}")
            time.sleep(0.2)
    finally:
        client.close()


def down() -> list[str]:
    cluster = LocalCluster.load()
    if cluster is None:
        raise ClusterStateError(f"no local cluster recorded in {state_path()}")
    done = stop_members(cluster.members[1:]) + stop_members(cluster.members[:1])  # workers first
    state_path().unlink(missing_ok=True)
    return done
