"""A second "host" on this machine: a network namespace, a veth pair, and its own sshd (LAB-NOTES
"SSH test hosts on one machine"). Host and client keys are generated per run; sshd is started by pid
and stopped by pid; the namespace (and with it the veth pair) is removed. Root only."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 20.0


@dataclass
class SshHost:
    netns: str
    address: str
    conf: Path  # under /tmp: keys, sshd_config, known_hosts
    key: Path
    known_hosts: Path
    workdir: Path  # the host's own lab directory
    proc: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"root@{self.address}"


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=30)


def start(client_alive_s: int | None = None) -> SshHost:
    """client_alive_s: sshd probes a silent client that often and drops it after 3 unanswered probes
    (hanging up its pty sessions); None: sshd's default, no probes."""
    token = secrets.token_hex(3)
    netns, outer, inner = f"pmemlab-t-{token}", f"pmh{token}", f"pmn{token}"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250) + 1}"
    conf = Path(tempfile.mkdtemp(prefix="pmemlab-sshd-", dir="/tmp"))
    for name in ("host_key", "client_key"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pmemlab-test-{name}", "-f", str(conf / name))
    shutil.copy(conf / "client_key.pub", conf / "authorized_keys")
    address = f"{subnet}.2"
    known = conf / "known_hosts"
    known.write_text(f"{address} {(conf / 'host_key.pub').read_text().split(' ', 2)[0]} "
                     f"{(conf / 'host_key.pub').read_text().split(' ', 2)[1]}\n")
    (conf / "sshd_config").write_text(
        f"ListenAddress {address}\nPort 22\nHostKey {conf / 'host_key'}\n"
        f"AuthorizedKeysFile {conf / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        f"PidFile {conf / 'sshd.pid'}\nSubsystem sftp internal-sftp\n"
        + (f"ClientAliveInterval {client_alive_s}\nClientAliveCountMax 3\n" if client_alive_s else ""))
    workdir = conf / "host-work"
    workdir.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    _run("ip", "netns", "add", netns)
    try:
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", netns)
        _run("ip", "addr", "add", f"{subnet}.1/24", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        _run("ip", "netns", "exec", netns, "ip", "addr", "add", f"{address}/24", "dev", inner)
        _run("ip", "netns", "exec", netns, "ip", "link", "set", inner, "up")
        _run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        # `ip netns exec` execs sshd: this pid is sshd's. -f first: `pgrep -af 'sshd -f /tmp'` finds leftovers.
        proc = subprocess.Popen(["ip", "netns", "exec", netns, SSHD, "-f", str(conf / "sshd_config"), "-D", "-e"],
                                stdout=subprocess.DEVNULL, stderr=open(conf / "sshd.log", "wb"))
    except BaseException:
        _remove_netns(netns)
        raise
    host = SshHost(netns, address, conf, conf / "client_key", known, workdir, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection((address, 22), timeout=1).close()
            return host
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(host)
                raise RuntimeError(f"sshd in {netns} did not listen: {(conf / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)


def cut_link(host: SshHost) -> None:
    """Take the host's side of the veth pair down: the link is lost, sshd still runs."""
    _run("ip", "netns", "exec", host.netns, "ip", "link", "set", f"pmn{host.netns.rsplit('-', 1)[1]}", "down")


def restore_link(host: SshHost) -> None:
    """Undo cut_link."""
    _run("ip", "netns", "exec", host.netns, "ip", "link", "set", f"pmn{host.netns.rsplit('-', 1)[1]}", "up")


def _remove_netns(netns: str) -> None:
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)


def stop(host: SshHost) -> None:
    if host.proc.poll() is None:
        host.proc.send_signal(signal.SIGTERM)
        try:
            host.proc.wait(10)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            host.proc.wait(10)
    # session processes sshd forked for connections end with their connections; any left are ours to end
    pidfile = host.conf / "sshd.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _remove_netns(host.netns)
    shutil.rmtree(host.conf, ignore_errors=True)
