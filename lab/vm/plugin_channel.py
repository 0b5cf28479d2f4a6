"""The host end of the ADR plugin's control socket (protocol: images/plugin/adrtrace.c).

One command a line, one reply a line. `arm` is answered only after a vCPU re-translated its code
with instrumentation (a plugin reset runs on a vCPU): the caller pokes the guest while it waits.
Every wait has a deadline; a closed socket or an `error` reply is a MachineError.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

from lab.errors import MachineError


class PluginError(MachineError):
    """The plugin did not answer as the protocol says (closed, an error, a deadline)."""


class PluginChannel:
    def __init__(self, sock: socket.socket, machine: str) -> None:
        self.sock = sock
        self.machine = machine
        self._buf = b""

    def _send(self, line: str) -> None:
        try:
            self.sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise PluginError(f"machine {self.machine!r}: cannot write to the ADR plugin ({exc})") from None

    def _reply(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PluginError(f"machine {self.machine!r}: the ADR plugin did not answer {what!r} "
                                  f"within {timeout:.0f} s")
            self.sock.settimeout(min(remaining, 0.25))
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                raise PluginError(f"machine {self.machine!r}: the ADR plugin's channel failed ({exc})") from None
            if not chunk:
                raise PluginError(f"machine {self.machine!r}: the ADR plugin closed its channel "
                                  f"(QEMU exited?) while the host waited for {what!r}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        text = line.decode(errors="replace").strip()
        if text.startswith("error"):
            raise PluginError(f"machine {self.machine!r}: the ADR plugin answered {what!r} with: {text}")
        return text

    def ping(self, timeout: float = 5.0) -> None:
        self._send("ping")
        if (got := self._reply(timeout, "ping")) != "pong":
            raise PluginError(f"machine {self.machine!r}: the ADR plugin answered ping with {got!r}")

    def arm(self, base: int, size: int, poke: Callable[[], None], timeout: float = 30.0) -> float:
        """Start tracing stores to [base, base+size); `poke` makes the guest run a little (the arming
        happens on a vCPU). Returns the seconds it took."""
        started = time.monotonic()
        self._send(f"arm {base:#x} {size:#x}")
        self._await("armed", poke, timeout)
        return time.monotonic() - started

    def disarm(self, poke: Callable[[], None], timeout: float = 30.0) -> None:
        self._send("disarm")
        self._await("disarmed", poke, timeout)

    def _await(self, word: str, poke: Callable[[], None], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self._reply(0.2, word)
                break
            except PluginError as exc:
                if "did not answer" not in str(exc) or time.monotonic() > deadline:
                    if time.monotonic() > deadline:
                        raise PluginError(f"machine {self.machine!r}: the ADR plugin did not answer {word!r} "
                                          f"within {timeout:.0f} s") from None
                    raise
                poke()
        if got != word:
            raise PluginError(f"machine {self.machine!r}: the ADR plugin answered {got!r}, expected {word!r}")

    def dump(self, path: Path, timeout: float = 60.0) -> tuple[int, int]:
        """Write the per-line state to `path` (the machine must be frozen): (lines, stores) as the
        plugin counted them, for the reader to check the file against."""
        self._send(f"dump {path}")
        got = self._reply(timeout, "dump")
        parts = got.split()
        if len(parts) != 3 or parts[0] != "dumped" or not parts[1].isdigit() or not parts[2].isdigit():
            raise PluginError(f"machine {self.machine!r}: the ADR plugin answered dump with {got!r}")
        return int(parts[1]), int(parts[2])
