"""Host side of the guest event channel: ``KIND ARG <guest mono ns>`` lines.

Workloads in the guest write one line per event with a single write() —
``ACK <n> <ns>`` once record n is durable, ``MARK <name> <ns>`` at named
points. A daemon thread reads them as they arrive and hands each batch over
at once: the crash layer freezes the VM the instant it sees ACK k, so every
millisecond between the socket and the waiter is a window in which the
guest runs on. ``on_event`` runs in the reader thread itself, for callers
that must act before any other thread is even woken (it sees each event
just before ``snapshot()`` and the waiters do).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.guest.channel import shut_down
from lab.errors import AgentClosed, AgentTimeout, GuestError

MAX_LINE = 4096  # a longer "line" means the stream is not ours
INVALID = "INVALID"  # kind given to lines that do not parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    kind: str  # 'ACK', 'MARK', ... or INVALID
    arg: str
    guest_ns: int  # guest CLOCK_MONOTONIC; -1 for INVALID lines
    host_time: float  # time.monotonic() when the host read it

    @property
    def ack(self) -> int | None:
        """The record number of an ACK event."""
        if self.kind == "ACK" and self.arg.isdigit():
            return int(self.arg)
        return None


def parse_line(line: bytes, host_time: float) -> Event:
    """One event line (without its newline). Unparseable lines are kept as INVALID."""
    text = line.decode("utf-8", "replace").rstrip("\r")
    parts = text.split(" ")
    if len(parts) == 3 and parts[0] and parts[2].isdigit():
        return Event(parts[0], parts[1], int(parts[2]), host_time)
    return Event(INVALID, text, -1, host_time)


class EventStream:
    """Reads events from a connected socket in a daemon thread.

    The stream owns the socket from here on: ``close()`` closes it.
    """

    def __init__(self, sock: socket.socket, name: str = "guest events",
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.name = name
        self._sock = sock
        sock.settimeout(None)
        self._on_event = on_event
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._closed: GuestError | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"{name} reader",
                                        daemon=True)
        self._reader.start()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed is not None

    def __len__(self) -> int:
        with self._cond:
            return len(self._events)

    def snapshot(self) -> list[Event]:
        """Every event read so far, in order."""
        with self._cond:
            return list(self._events)

    def acks(self) -> list[int]:
        """Record numbers of the ACKs read so far, in order."""
        with self._cond:
            return [a for a in (e.ack for e in self._events) if a is not None]

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float,
                 since: int = 0, what: str = "") -> Event:
        """The first event from index ``since`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self._events):
                    ev = self._events[i]
                    i += 1
                    if predicate(ev):
                        return ev
                if self._closed is not None:
                    raise AgentClosed(f"{self._closed} before {what or 'the awaited event'}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentTimeout(f"{self.name}: no {what or 'matching event'} within "
                                       f"{timeout:g} s ({len(self._events)} events read)")
                self._cond.wait(left)

    def wait_ack(self, n: int, timeout: float) -> Event:
        """Wait for ``ACK n``."""
        return self.wait_for(lambda e: e.ack == n, timeout, what=f"ACK {n}")

    def wait_mark(self, name: str, timeout: float) -> Event:
        """Wait for ``MARK name``."""
        return self.wait_for(lambda e: e.kind == "MARK" and e.arg == name, timeout,
                             what=f"MARK {name}")

    def close(self) -> None:
        with self._cond:
            if self._closed is None:
                self._closed = AgentClosed(f"{self.name} channel closed by the host")
            self._cond.notify_all()
        shut_down(self._sock, self._reader)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError as exc:
                self._finish(AgentClosed(f"{self.name} channel failed: {exc}"))
                return
            now = time.monotonic()  # before parsing: the instant the bytes arrived
            if not data:
                self._finish(AgentClosed(f"{self.name} channel closed (EOF)"))
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            if len(buf) > MAX_LINE:  # no newline in sight: keep what we have
                lines.append(buf)
                buf = b""
            if not lines:
                continue
            batch = [parse_line(line, now) for line in lines if line]
            if self._on_event is not None:
                for ev in batch:
                    try:
                        self._on_event(ev)
                    except Exception:  # a broken hook must not stop the reader
                        log.exception("%s: on_event hook failed on %s", self.name, ev)
            with self._cond:
                self._events.extend(batch)
                self._cond.notify_all()

    def _finish(self, err: GuestError) -> None:
        with self._cond:
            if self._closed is None:
                self._closed = err
            self._cond.notify_all()
