"""`pmemlab cluster up [--local N] [--host NAME|USER@ADDR ...] | status | down`: a scheduler on this
machine, N workers here and one worker per remote host (started over SSH: lab.cluster.remote), as
processes this lab starts (each its own process group), records (pids in a state file under the
data directory; a remote worker's with its host) and stops by pid; nothing is found or killed by name.

The scheduler listens on tls:// and accepts only peers holding this cluster's credentials
(lab.cluster.tls: made at each 'up', copied to each remote worker, removed at 'down').

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.cluster import remote, tls
from lab.errors import LabError
from lab.hosts.inventory import Host, validate
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
    log: str  # on the member's host
    host: Host | None = None  # a remote worker's host (its pid and log are there); None: this machine
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)  # started by this command

    @property
    def name(self) -> str:
        return self.host.name if self.host else "local"

    def cmdline(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        """Alive and still ours: a recycled pid running something else is not (a remote one: never
        asked here; see lab.cluster.remote)."""
        if self.host is not None:
            return False
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
                "members": [{"role": m.role, "pid": m.pid, "log": m.log,
                             **({"host": asdict(m.host)} if m.host else {})} for m in self.members]}

    @property
    def local_members(self) -> list[Member]:
        return [m for m in self.members if m.host is None]

    @property
    def remote_members(self) -> list[Member]:
        return [m for m in self.members if m.host is not None]

    @classmethod
    def load(cls) -> LocalCluster | None:
        path = state_path()
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(str(data["address"]), [Member(str(m["role"]), int(m["pid"]), str(m["log"]),
                                                     _host(m["host"], path) if "host" in m else None)
                                              for m in data["members"]])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ClusterStateError(f"{path}: not a cluster state file ({exc}); remove it") from None

    def save(self) -> None:
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.rename(path)


def _host(data: dict[str, Any], path: Path) -> Host:
    fields = {k: v for k, v in data.items() if k != "name" and v is not None}
    return validate(str(data["name"]), fields, str(path))


def listen_address(hosts: list[Host]) -> str:
    """Where the scheduler listens when not told: 127.0.0.1 for local workers only; otherwise this
    machine's address on the route to the remote hosts (the source address the kernel picks to reach
    them), which must be one address for all of them."""
    import socket

    if not hosts:
        return "127.0.0.1"
    sources: dict[str, list[str]] = {}
    for host in hosts:
        try:
            family = socket.AF_INET6 if ":" in host.address else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((host.address, host.port))  # UDP: no packet is sent, only a route chosen
                sources.setdefault(str(probe.getsockname()[0]), []).append(host.name)
        except OSError as exc:
            raise ClusterStateError(f"host {host.name!r}: no route to {host.address} ({exc}); "
                                    "give the scheduler's address with --listen") from None
    if len(sources) > 1:
        seen = "; ".join(f"{a} for {', '.join(n)}" for a, n in sorted(sources.items()))
        raise ClusterStateError(f"the hosts reach this machine at different addresses ({seen}): choose one "
                                "every host can reach with --listen ADDR")
    return next(iter(sources))


def pmemlab_argv() -> list[str]:
    """How to run pmemlab from here: the installed entry point beside this Python, or the module."""
    script = Path(sys.executable).parent / "pmemlab"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "lab.cli"]


async def _serve_scheduler(host: str, port: int, scheduler_file: Path, credentials: Path) -> None:
    import asyncio

    from distributed import Scheduler

    security = tls.security(credentials)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    async with Scheduler(host=host, port=port, protocol="tls", security=security, dashboard=False,
                         allowed_failures=0, scheduler_file=str(scheduler_file)) as scheduler:
        finished = asyncio.ensure_future(scheduler.finished())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()


def serve_scheduler(host: str, port: int, scheduler_file: Path, credentials: Path) -> None:
    """The scheduler, in this process, until a signal (`pmemlab cluster scheduler`); TLS with `credentials`."""
    import asyncio

    asyncio.run(_serve_scheduler(host, port, scheduler_file, credentials))


def _spawn(role: str, argv: list[str], log: Path, env: dict[str, str]) -> Member:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    return Member(role, proc.pid, str(log), proc=proc)


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
       extra_env: dict[str, str] | None = None, remote_hosts: list[Host] | None = None,
       remote_slots: int | None = None) -> LocalCluster:
    """Start a scheduler listening on `host`, `workers` local workers of `slots` VM slots and one worker
    per remote host (its inventory slots, or `remote_slots`); wait until all have joined."""
    from lab.hosts.ssh import HostConnection

    existing = LocalCluster.load()
    if existing is not None and (existing.remote_members or any(m.alive() for m in existing.members)):
        raise ClusterStateError(f"a cluster is already up at {existing.address} ('pmemlab cluster down' first)")
    where = cluster_dir()
    where.mkdir(parents=True, exist_ok=True)
    scheduler_file = where / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    credentials = tls.default_path()
    pem = tls.create(credentials)  # a new cluster, new credentials: an old cluster's holders are shut out
    env = dict(os.environ, **(extra_env or {}))
    members: list[Member] = []
    conns: list[HostConnection] = []
    try:
        for remote_host in remote_hosts or []:  # every host key verified before anything starts
            conns.append(HostConnection(remote_host).__enter__())
        members.append(_spawn("scheduler", pmemlab_argv() + ["cluster", "scheduler", "--scheduler-file",
                                                             str(scheduler_file), "--host", host, "--port", str(port),
                                                             "--tls", str(credentials)],
                              where / "scheduler.log", env))
        deadline = time.monotonic() + START_TIMEOUT_S
        address = str(_wait_for_file(scheduler_file, members[0], deadline)["address"])
        for i in range(workers):
            members.append(_spawn("worker", pmemlab_argv() + ["worker", "--scheduler", address,
                                                             "--vm", str(slots), "--name", f"local-{i + 1}",
                                                             "--tls", str(credentials)],
                                  where / f"worker-{i + 1}.log", env))
        for conn in conns:
            pid = remote.start_worker(conn, address, remote_slots or conn.host.slots, pem)
            members.append(Member("worker", pid, remote.Paths(conn.host.workdir).log, conn.host))
        cluster = LocalCluster(address, members)
        cluster.save()
        _wait_for_workers(cluster, conns, deadline)
        return cluster
    except BaseException:
        _stop_remote([m for m in members if m.host], {c.host.name: c for c in conns})
        stop_members([m for m in members if m.host is None])
        state_path().unlink(missing_ok=True)
        credentials.unlink(missing_ok=True)
        raise
    finally:
        for conn in conns:
            conn.close()


def _wait_for_workers(cluster: LocalCluster, conns: list[Any], deadline: float) -> None:
    """Until every worker has joined the scheduler; a local one that died or a remote one that stopped
    running fails at once, with its log (a remote one's tail, fetched over SSH)."""
    from lab.cluster.client import connect, workers

    by_host = {c.host.name: c for c in conns}
    want = len(cluster.members) - 1
    client = connect(cluster.address, credentials=tls.default_path())
    checked = 0.0
    try:
        while len(workers(client)) < want:
            joined = {str(w.get("name")) for w in workers(client).values()}
            dead = [m for m in cluster.local_members if not m.alive()]
            if time.monotonic() - checked > 2.0:  # over SSH: not every 0.2 s
                checked = time.monotonic()
                dead += [m for m in cluster.remote_members if m.name not in joined
                         and not remote.worker_running(by_host[m.name], m.pid)]
            if dead or time.monotonic() > deadline:
                late = dead or [m for m in cluster.members[1:] if m.host is None or m.name not in joined]
                raise ClusterStateError(f"{want} worker(s) did not join {cluster.address}: "
                                        + "; ".join(_where(m, by_host) for m in late))
            time.sleep(0.2)
    finally:
        client.close()


def _where(member: Member, conns: dict[str, Any]) -> str:
    if member.host is None:
        return f"see {member.log}"
    tail = remote.log_tail(conns[member.name]).splitlines()
    return f"host {member.name}: {member.log} there ends: " + " | ".join(tail[-5:])


def _stop_remote(members: list[Member], conns: dict[str, Any] | None = None) -> tuple[list[str], list[Member]]:
    """Stop remote workers over SSH (a connection per host, reused when given); what was done, and the
    members whose host could not be reached (kept in the state file for the next 'down')."""
    from lab.hosts.ssh import HostConnection, HostError

    done: list[str] = []
    left: list[Member] = []
    for member in members:
        assert member.host is not None
        try:
            conn = (conns or {}).get(member.name)
            if conn is not None:
                outcome = remote.stop_worker(conn, member.pid)
            else:
                with HostConnection(member.host) as fresh:
                    outcome = remote.stop_worker(fresh, member.pid)
            done.append(f"worker {member.pid} on {member.name}: {outcome}")
        except HostError as exc:
            left.append(member)
            done.append(f"worker {member.pid} on {member.name}: NOT stopped: {exc}")
    return done, left


def down() -> list[str]:
    """Remote workers (over SSH), then local workers, then the scheduler. A host that cannot be reached
    keeps its worker in the state file: 'down' again once it can."""
    cluster = LocalCluster.load()
    if cluster is None:
        raise ClusterStateError(f"no cluster recorded in {state_path()}")
    done, left = _stop_remote(cluster.remote_members)
    local = cluster.local_members
    done += stop_members(local[1:]) + stop_members(local[:1])  # workers first
    if left:
        LocalCluster(cluster.address, left).save()  # its credentials too: 'down' again stops the rest
    else:
        state_path().unlink(missing_ok=True)
        tls.default_path().unlink(missing_ok=True)
    return done
