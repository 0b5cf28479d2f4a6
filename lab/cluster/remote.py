"""Remote workers of `pmemlab cluster up --host`: started, looked at and stopped over SSH (lab.hosts.ssh:
verified host keys, argument lists quoted with shlex.join, a deadline on every command).

On a host, everything lives under its inventory `workdir`, laid out as for `--host` runs and from the same
functions (lab.hosts.remote_attempt: cache_there, data_there, pmemlab_argv), so a pushed image is where
the worker looks; workdir/cluster holds the worker's log and pidfile. The worker runs the inventory's
`pmemlab` executable. The worker runs detached (setsid, stdin from /dev/null, output to its log) so it outlives
the SSH session; it is its own process group, stopped by pid (SIGTERM: it destroys its machines,
then SIGKILL for the group at the deadline), after checking that pid still runs `pmemlab worker`.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from lab.hosts.inventory import DEFAULT_PMEMLAB, DEFAULT_WORKDIR, Host, validate
from lab.hosts.remote_attempt import data_there, pmemlab_argv
from lab.hosts.ssh import HostConnection, HostError

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20
WORKER_MARK = " worker --scheduler "  # as in lab.cluster.local: a recycled pid is never ours

# $1: workdir, $2: data directory; the rest: the worker's command line (its env from pmemlab_argv).
# Refuses to start a second worker there; prints the pid.
_START = r"""
work=$1; data=$2; shift 2
mkdir -p "$work/cluster" "$data" || exit 1
pidfile=$work/cluster/worker.pid
if [ -s "$pidfile" ]; then
  old=$(cat "$pidfile")
  if tr '\0' ' ' < "/proc/$old/cmdline" 2>/dev/null | grep -q -F -e "$MARK"; then
    echo "a pmemlab worker already runs there (pid $old, $pidfile): 'pmemlab cluster down' first" >&2; exit 3
  fi
fi
NO_COLOR=1 setsid "$@" </dev/null >>"$work/cluster/worker.log" 2>&1 &
echo $! > "$pidfile"
echo $!
"""

# $1: pid, $2: seconds, $3: pidfile. SIGTERM the worker's process group if it is still a worker, wait
# for the whole group (its QEMUs too), SIGKILL it at the deadline.
_STOP = r"""
pid=$1; wait_s=$2; pidfile=$3
if ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -F -e "$MARK"; then
  rm -f "$pidfile" "${pidfile%/*}/tls.pem"; echo gone; exit 0
fi
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
i=0
running() { kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; }
while running && [ "$i" -lt $((wait_s * 10)) ]; do sleep 0.1; i=$((i + 1)); done
if running; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; echo killed; else echo stopped; fi
rm -f "$pidfile" "${pidfile%/*}/tls.pem"
"""

_ADHOC_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _sh(script: str, *args: str) -> list[str]:
    return ["env", f"MARK={WORKER_MARK}", "sh", "-c", script, "sh", *args]


@dataclass(frozen=True)
class Paths:
    workdir: str

    @property
    def log(self) -> str:
        return f"{self.workdir}/cluster/worker.log"

    @property
    def pidfile(self) -> str:
        return f"{self.workdir}/cluster/worker.pid"

    @property
    def credentials(self) -> str:
        return f"{self.workdir}/cluster/tls.pem"  # removed with the pid file when the worker is stopped


def adhoc_host(target: str, key: str, known_hosts: str, workdir: str | None, pmemlab: str | None) -> Host:
    """A host given on the command line as USER@ADDR (not in the inventory); named after its address."""
    name = _ADHOC_NAME.sub("-", target.split("@", 1)[-1]).strip("-.") or "host"
    data = {"target": target, "key": key, "known_hosts": known_hosts, "workdir": workdir or DEFAULT_WORKDIR,
            "pmemlab": pmemlab or DEFAULT_PMEMLAB}
    return validate(name, data, f"--host {target}")


def start_worker(conn: HostConnection, scheduler: str, slots: int | None, credentials: bytes | None = None) -> int:
    """Start `pmemlab worker` on the host, detached; its pid there. A TLS scheduler's `credentials`
    (lab.cluster.tls) are written there first, readable by the lab's user only."""
    host = conn.host
    tls_args: list[str] = []
    if credentials is not None:
        where = Paths(host.workdir).credentials
        wrote = conn.put_stream(["sh", "-c", 'umask 077 && mkdir -p -- "${1%/*}" && rm -f -- "$1" && cat > "$1"',
                                 "sh", where], io.BytesIO(credentials), START_TIMEOUT_S)
        if not wrote.ok:
            raise HostError(f"host {host.name!r}: cannot write the cluster's credentials {where}: "
                            f"{wrote.stderr.strip()[-200:]}")
        tls_args = ["--tls", where]
    argv = pmemlab_argv(host, "worker", "--scheduler", scheduler, "--name", host.name,
                        *(["--vm", str(slots)] if slots else []), *tls_args)
    out = conn.run(_sh(_START, host.workdir, data_there(host), *argv), timeout=START_TIMEOUT_S, check=False)
    if not out.ok:
        if tls_args:
            conn.run(["rm", "-f", "--", tls_args[1]], timeout=30, check=False)
        why = out.stderr.strip().splitlines()[-1:] or [f"status {out.exit_code}"]
        raise HostError(f"host {host.name!r}: cannot start a worker: {why[0]}")
    try:
        return int(out.stdout.split()[-1])
    except (IndexError, ValueError):
        raise HostError(f"host {host.name!r}: the worker start printed no pid: {out.stdout.strip()[:200]!r}") from None


def stop_worker(conn: HostConnection, pid: int, timeout: int = STOP_TIMEOUT_S) -> str:
    """Stop the worker `pid` there (and its process group); 'stopped', 'killed' or 'gone'."""
    out = conn.run(_sh(_STOP, str(pid), str(timeout), Paths(conn.host.workdir).pidfile), timeout=timeout + 30)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "stopped"


def worker_running(conn: HostConnection, pid: int) -> bool:
    script = 'tr "\\0" " " < "/proc/$1/cmdline" 2>/dev/null | grep -q -F -e "$MARK"'
    return conn.run(_sh(script, str(pid)), timeout=15, check=False).ok


def log_tail(conn: HostConnection, lines: int = 15) -> str:
    out = conn.run(["tail", "-n", str(lines), "--", Paths(conn.host.workdir).log], timeout=15, check=False)
    return out.stdout.strip() if out.ok else f"(no log: {out.stderr.strip()})"
