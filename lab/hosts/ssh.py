"""One SSH connection to a lab host (fabric over paramiko), with verified host keys.

Host keys are checked against the host's known_hosts file with paramiko's
RejectPolicy: an unknown or changed key refuses the connection (fabric's
default would add it). Commands are argument lists joined with shlex.join,
never strings built from input. Every command has a deadline.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import IO, Any, Sequence

from lab.errors import LabError
from lab.hosts.inventory import Host

CONNECT_TIMEOUT_S = 15.0
KEEPALIVE_S = 5  # an idle link still carries packets (NAT and firewalls keep it; a dead one errors sooner)


class HostError(LabError):
    """A lab host could not be reached or did not do what was asked: names the host."""


@dataclass(frozen=True)
class Remote:
    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _fabric() -> Any:
    try:
        import fabric
        import paramiko
    except ImportError:
        raise HostError("remote hosts need fabric and paramiko: pip install 'pmemlab[remote]'") from None
    return fabric, paramiko


class HostConnection:
    """`with HostConnection(host) as c: c.run(["uname", "-r"])`"""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._conn: Any = None

    def __enter__(self) -> "HostConnection":
        fabric, paramiko = _fabric()
        known = self.host.known_hosts_path
        if not known.is_file():
            raise HostError(f"host {self.host.name!r}: known_hosts file {known} is missing (host keys are verified; "
                            f"add the host's key there, e.g. with ssh-keyscan checked out of band)")
        conn = fabric.Connection(self.host.address, user=self.host.user, port=self.host.port,
                                 connect_timeout=CONNECT_TIMEOUT_S,
                                 connect_kwargs={"key_filename": str(self.host.key_path), "allow_agent": False,
                                                 "look_for_keys": False})
        # fabric sets AutoAddPolicy in its constructor: replace it before connecting
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client.load_host_keys(str(known))
        try:
            conn.open()
        except paramiko.SSHException as exc:
            raise HostError(f"host {self.host.name!r} ({self.host.target}): SSH refused: {exc}") from None
        except OSError as exc:
            raise HostError(f"host {self.host.name!r} ({self.host.target}): cannot connect: {exc}") from None
        conn.client.get_transport().set_keepalive(KEEPALIVE_S)
        self._conn = conn
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> Remote:
        """Run `argv` there (quoted with shlex.join); HostError on a lost link, a deadline or (check) failure."""
        remote = self._exec(argv, None, timeout)
        if check and not remote.ok:
            tail = remote.stderr.strip().splitlines()[-1:] or ["no output"]
            raise HostError(f"host {self.host.name!r}: {shlex.join(argv)} exited with status {remote.exit_code}: "
                            f"{tail[0]}")
        return remote

    def put_stream(self, argv: Sequence[str], source: IO[bytes], timeout: float) -> Remote:
        """Run `argv` there with `source` streamed to its stdin (closed at EOF)."""
        return self._exec(argv, source, timeout)

    def get_stream(self, argv: Sequence[str], sink: IO[bytes], timeout: float) -> Remote:
        """Run `argv` there with its stdout streamed into `sink` (the Remote's stdout is empty)."""
        return self._exec(argv, None, timeout, sink)

    def open_pty(self, argv: Sequence[str]) -> Any:
        """Start `argv` there under a pty (sshd hangs it up when the session ends) and return the channel."""
        channel = self._channel(CONNECT_TIMEOUT_S)
        try:
            channel.get_pty(term="dumb", width=200, height=50)
            channel.exec_command(shlex.join(argv))
        except Exception as exc:
            channel.close()
            raise HostError(f"host {self.host.name!r}: cannot start {argv[0]}: {type(exc).__name__}: {exc}") from None
        return channel

    def _channel(self, timeout: float) -> Any:
        # Our own channel on fabric's transport: fabric's run opens its channel with paramiko's default
        # 3600 s timeout, so a lost link would hang there instead of failing at the deadline.
        if self._conn is None:
            raise HostError(f"host {self.host.name!r}: not connected")
        try:
            transport = self._conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise HostError(f"host {self.host.name!r}: the SSH connection is closed")
            channel = transport.open_session(timeout=min(timeout, CONNECT_TIMEOUT_S))
        except HostError:
            raise
        except Exception as exc:
            raise HostError(f"host {self.host.name!r} ({self.host.target}): the link is lost: "
                            f"{type(exc).__name__}: {exc}") from None
        return channel

    def _exec(self, argv: Sequence[str], source: IO[bytes] | None, timeout: float,
              sink: IO[bytes] | None = None) -> Remote:
        channel = self._channel(timeout)
        channel.settimeout(timeout)
        try:
            channel.exec_command(shlex.join(argv))
            if source is not None:
                while chunk := source.read(1 << 20):
                    channel.sendall(chunk)
            channel.shutdown_write()
            if sink is not None:
                while chunk := channel.recv(1 << 16):
                    sink.write(chunk)
            out = b"".join(iter(lambda: channel.recv(1 << 16), b""))
            err = b"".join(iter(lambda: channel.recv_stderr(1 << 16), b""))
            if not channel.status_event.wait(timeout):  # recv_exit_status itself would wait forever
                raise HostError(f"host {self.host.name!r}: {argv[0]} sent no exit status within {timeout:.0f} s "
                                f"after its output ended (the link may be lost)")
            code = channel.recv_exit_status()
        except HostError:
            raise
        except Exception as exc:  # socket.timeout at the deadline, SSHException on a dropped link
            raise HostError(f"host {self.host.name!r}: {argv[0]} did not complete within {timeout:.0f} s "
                            f"(the link may be lost): {type(exc).__name__}: {exc}") from None
        finally:
            channel.close()
        return Remote(out.decode(errors="replace"), err.decode(errors="replace"), code)
