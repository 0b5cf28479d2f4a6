"""Run one executor task on a lab host over SSH and bring its results back.

The qemu backend runs there, started by the host's own pmemlab (`pmemlab attempt`, its spec the
Dask task's: lab.attempt.run_spec) with the host's own cache and data directories under its
workdir. Captures stay there (recovered where they were taken); what comes back is each run
directory's results, logs and fsck output, and captures only when the check keeps them, as a
sparse tar stream. A silent link (no heartbeat for the link timeout) or a dropped connection is
HostLost, "host lost: NAME"; the attempt there then hangs itself up (lab.hostrun.remote_side).
"""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lab.hosts.inventory import Host
from lab.hosts.link import BEAT, HEARTBEAT_S, PHASE, link_timeout_s
from lab.hosts.ssh import HostConnection, HostError
from lab.runs import write_json

ATTEMPT_DEADLINE_S = 4 * 3600.0  # a task's own phases have deadlines; this one only bounds a wedged host
FETCH_TIMEOUT_S = 600.0

log = logging.getLogger(__name__)


class HostLost(HostError):
    """The link to a lab host went silent or dropped mid-task."""


def lost_message(host: Host) -> str:
    return f"host lost: {host.name}"


def cache_there(host: Host) -> str:
    return host.workdir  # images/<id> are where `pmemlab image push` puts them


def data_there(host: Host) -> str:
    return f"{host.workdir}/data"


def pmemlab_argv(host: Host, *args: str) -> list[str]:
    """The host's pmemlab with its own cache and data directories, as one argument list."""
    return ["env", f"PMEMLAB_CACHE={cache_there(host)}", f"PMEMLAB_DATA={data_there(host)}", host.pmemlab, *args]


def run_attempt(conn: HostConnection, spec: dict[str, Any], local_runs: Path, keep_capture: bool,
                on_phase: Callable[[str], None] = lambda _: None, cancel: threading.Event | None = None,
                deadline_s: float = ATTEMPT_DEADLINE_S) -> dict[str, Any]:
    """Run `spec` there; its outcome ({"host", "results"}) with run directories fetched under `local_runs`
    and the results' run_dir pointing at them. HostLost when the link goes; HostError when it fails there."""
    host = conn.host
    key = str(spec["key"])
    tasks = f"{data_there(host)}/tasks"
    spec_path, out_path = f"{tasks}/{key}.json", f"{tasks}/{key}.out.json"
    conn.run(["mkdir", "-p", "--", tasks, f"{data_there(host)}/runs"], timeout=30)
    wrote = conn.put_stream(["dd", f"of={spec_path}", "status=none"],
                            io.BytesIO(json.dumps({**spec, "host": host.name}).encode()), 60)
    if not wrote.ok:
        raise HostError(f"host {host.name!r}: cannot write the task spec {spec_path}: {wrote.stderr.strip()}")
    silence = link_timeout_s()
    tail = _follow(conn, pmemlab_argv(host, "attempt", "--spec", spec_path, "--out", out_path, "--link",
                                      "--link-timeout", f"{silence:g}"),
                   on_phase, cancel, deadline_s, silence)
    got = conn.run(["cat", "--", out_path], timeout=60, check=False)
    conn.run(["rm", "-f", "--", spec_path, out_path], timeout=30, check=False)
    try:
        outcome: dict[str, Any] = json.loads(got.stdout)
    except ValueError:
        last = " | ".join(tail[-5:]) or "no output"
        raise HostError(f"host {host.name!r}: pmemlab attempt left no outcome ({last})") from None
    names = [str(n) for n in spec["run_dirs"]] + ([str(spec["workload_dir"])] if spec.get("what") == "group" else [])
    fetch_runs(conn, names, local_runs, keep_capture)
    for data, name in zip(outcome["results"], spec["run_dirs"]):
        data["run_dir"] = str(local_runs / str(name))
        fetched = local_runs / str(name) / "result.json"
        if fetched.is_file():  # the host's copy names the host's path, which does not exist here
            write_json(fetched, {**data, "host": host.name})
    return outcome


def _follow(conn: HostConnection, argv: list[str], on_phase: Callable[[str], None],
            cancel: threading.Event | None, deadline_s: float, silence: float) -> list[str]:
    """Run `argv` there under a pty until it exits, heartbeats both ways; the last lines it printed.
    The host is lost after `silence` seconds with nothing from it."""
    host = conn.host
    channel = conn.open_pty(argv)
    channel.settimeout(0.5)
    started = last_heard = last_beat = time.monotonic()
    pending, tail = b"", list[str]()
    try:
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                raise HostError(f"host {host.name!r}: the task was interrupted")
            if now - last_heard > silence:
                raise HostLost(f"{lost_message(host)} (nothing from it for {silence:.0f} s)")
            if now - started > deadline_s:
                raise HostError(f"host {host.name!r}: the task did not finish within {deadline_s:.0f} s")
            if now - last_beat >= HEARTBEAT_S:
                channel.sendall(b"\n")
                last_beat = now
            try:
                data = channel.recv(1 << 16)
            except socket.timeout:
                continue
            if not data:
                break  # the command exited and its output is drained
            last_heard = time.monotonic()
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if line == BEAT:
                    continue
                if line.startswith(PHASE):
                    on_phase(line[len(PHASE):])
                    continue
                log.debug("%s: %s", host.name, line)
                tail = (tail + [line])[-20:]
        # EOF on the output comes before the exit status; paramiko's recv_exit_status has no deadline
        if not channel.status_event.wait(silence):
            raise HostLost(f"{lost_message(host)} (no exit status {silence:.0f} s after its output ended)")
        code = channel.recv_exit_status()
    except HostError:
        raise
    except Exception as exc:  # a dropped transport: EOFError, SSHException, OSError
        raise HostLost(f"{lost_message(host)} ({type(exc).__name__}: {exc})") from None
    finally:
        channel.close()  # a running attempt there is hung up with it
    if code != 0:
        last = " | ".join(tail[-5:]) or "no output"
        raise HostError(f"host {host.name!r}: pmemlab attempt exited with status {code}: {last}")
    return tail


def fetch_runs(conn: HostConnection, names: list[str], local_runs: Path, keep_capture: bool) -> None:
    """Copy run directories (relative to the runs directory there) here, holes kept; captures only if kept."""
    host = conn.host
    local_runs.mkdir(parents=True, exist_ok=True)
    argv = ["tar", "--sparse", "-cf", "-", "-C", f"{data_there(host)}/runs",
            *([] if keep_capture else ["--exclude=capture", "--exclude=*.img"]), "--", *names]
    untar = subprocess.Popen(["tar", "-xf", "-", "-C", str(local_runs)], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert untar.stdin is not None
    try:
        sent = conn.get_stream(argv, untar.stdin, FETCH_TIMEOUT_S)
    finally:
        untar.stdin.close()
        err = untar.stderr.read().decode(errors="replace") if untar.stderr else ""
        untar.wait(60)
    if not sent.ok:
        raise HostError(f"host {host.name!r}: could not read back {', '.join(names)}: {sent.stderr.strip()[-300:]}")
    if untar.returncode != 0:
        raise HostError(f"fetching {', '.join(names)} from {host.name!r}: tar here failed: {err.strip()[-300:]}")
