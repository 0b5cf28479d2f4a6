"""Host side of the guest agent channel (protocol v1, see ``protocol.py``).

One daemon thread reads the socket and files every frame under its request
id; callers wait on a Condition, so any number of threads can run commands
at once and nobody polls. Output callbacks run in the waiting caller's
thread (inside ``run()`` / ``RunHandle.wait()``), never in the reader, so a
callback may itself use the client without deadlocking it.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lab.errors import AgentClosed, AgentTimeout, GuestError
from lab.guest.channel import shut_down
from lab.guest.protocol import (
    MAX_ID,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    decode_ready,
    decode_status,
    encode_frame,
    encode_run,
)

# The host waits this much longer than the command's own timeout: the agent
# kills at the deadline and needs a moment (up to 1 s for held pipes) to
# report; past the grace the guest itself is presumed hung.
GRACE_S = 10.0
STDERR_TAIL = 2000  # bytes of stderr quoted in a failed command's error

OutputCallback = Callable[[str, bytes], None]  # ("stdout"|"stderr", chunk)


@dataclass(frozen=True)
class ReadyInfo:
    """The agent's READY frame."""

    guest_ns: int  # guest CLOCK_MONOTONIC when the agent came up
    version: str
    host_time: float  # time.monotonic() when the host read it


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int  # -1 when killed by a signal
    signal: int  # 0 if none
    timed_out: bool  # the agent killed it at its deadline
    stdout: bytes
    stderr: bytes
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal == 0 and not self.timed_out

    @property
    def text(self) -> str:
        """stdout as text (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def err_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def describe(self) -> str:
        """How it ended, in words."""
        if self.timed_out:
            return f"timed out and was killed (signal {self.signal})"
        if self.signal:
            return f"was killed by signal {self.signal}"
        return f"exited with status {self.exit_code}"

    def check(self) -> CommandResult:
        """Return self if ok, else raise GuestError naming the command."""
        if not self.ok:
            tail = self.stderr[-STDERR_TAIL:].decode("utf-8", "replace").strip()
            msg = f"guest command {self.argv!r} {self.describe()}"
            msg += f"; stderr: {tail}" if tail else " (no stderr)"
            raise GuestError(msg)
        return self


@dataclass
class _RunState:
    """What the reader thread has filed for one RUN id (guarded by the client lock)."""

    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    status: tuple[int, int, bool] | None = None
    ended_at: float = 0.0


class RunHandle:
    """A command started with ``AgentClient.start``; still running until waited."""

    def __init__(self, client: AgentClient, rid: int, argv: list[str],
                 timeout: float, on_output: OutputCallback | None) -> None:
        self._client = client
        self.id = rid
        self.argv = argv
        self.timeout = timeout
        self.started = time.monotonic()
        self._on_output = on_output
        self._delivered = 0  # chunks already handed to on_output
        self._result: CommandResult | None = None

    @property
    def done(self) -> bool:
        """True once the guest reported the command's STATUS."""
        return self._result is not None or self._client._run_status(self.id) is not None

    def output(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) received so far: what a hung command left behind."""
        if self._result is not None:
            return self._result.stdout, self._result.stderr
        return self._client._run_output(self.id)

    def kill(self) -> None:
        """SIGKILL the command's process group; its STATUS still follows."""
        if self._result is None and not self.done:
            self._client._send(FrameType.KILL, self.id)

    def wait(self, timeout: float | None = None, check: bool = False) -> CommandResult:
        """Wait for the command to end (one waiting thread per handle).

        Never waits past the command's own timeout plus GRACE_S: the agent
        kills it at its timeout, so no STATUS by then means the guest is hung
        (AgentTimeout). A shorter ``timeout`` bounds this wait only (AgentTimeout;
        the command keeps running and may be waited again).
        """
        if self._result is None:
            deadline = self.started + self.timeout + GRACE_S
            what = (f"guest command {self.argv!r} did not report back within its "
                    f"{self.timeout:g} s timeout + {GRACE_S:g} s grace; "
                    f"guest agent presumed hung")
            if timeout is not None and time.monotonic() + timeout < deadline:
                deadline = time.monotonic() + timeout
                what = f"guest command {self.argv!r} still running after {timeout:g} s"
            self._result = self._pump(deadline, what)
        return self._result.check() if check else self._result

    def _pump(self, deadline: float, what: str) -> CommandResult:
        while True:
            new, state = self._client._wait_run(self.id, self._delivered, deadline, what)
            self._delivered += len(new)
            if self._on_output is not None:
                for stream, chunk in new:
                    self._on_output(stream, chunk)
            if state is not None and self._delivered == len(state.chunks):
                assert state.status is not None
                code, sig, timed_out = state.status
                out = b"".join(c for s, c in state.chunks if s == "stdout")
                err = b"".join(c for s, c in state.chunks if s == "stderr")
                self._client._forget(self.id)
                return CommandResult(list(self.argv), code, sig, timed_out, out, err,
                                     state.ended_at - self.started)


class AgentClient:
    """Talks to the guest agent over a connected stream socket.

    The client owns the socket from here on: ``close()`` closes it.
    """

    def __init__(self, sock: socket.socket, name: str = "guest agent") -> None:
        self.name = name
        self._sock = sock
        sock.settimeout(None)  # the reader blocks; deadlines live in the waiters
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ready: ReadyInfo | None = None
        self._runs: dict[int, _RunState] = {}
        self._pongs: set[int] = set()
        self._errors: dict[int, bytes] = {}  # agent error text for non-RUN ids
        self._waiting: set[int] = set()  # ping/poweroff ids awaiting a reply
        self._closed: GuestError | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"{name} reader",
                                        daemon=True)
        self._reader.start()

    # -- public API -------------------------------------------------------

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed is not None

    @property
    def ready_info(self) -> ReadyInfo | None:
        with self._cond:
            return self._ready

    def wait_ready(self, timeout: float) -> ReadyInfo:
        """Wait for the agent's READY frame (sent once, when it comes up)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ready is None:
                self._raise_if_closed()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentTimeout(
                        f"{self.name} not ready after {timeout:g} s (no READY frame); "
                        f"the guest may not have booted or the agent did not start")
                self._cond.wait(left)
            return self._ready

    def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the agent; returns the seconds it took."""
        t0 = time.monotonic()
        rid = self._new_id()
        with self._cond:
            self._waiting.add(rid)
        try:
            self._send(FrameType.PING, rid)
            deadline = t0 + timeout
            with self._cond:
                while rid not in self._pongs:
                    self._raise_if_closed()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AgentTimeout(f"{self.name} did not answer a ping within "
                                           f"{timeout:g} s")
                    self._cond.wait(left)
        finally:
            with self._cond:
                self._waiting.discard(rid)
                self._pongs.discard(rid)
                self._errors.pop(rid, None)
        return time.monotonic() - t0

    def start(self, argv: Sequence[str], timeout: float,
              on_output: OutputCallback | None = None) -> RunHandle:
        """Start a command in the guest and return at once.

        The agent kills the command's process group after ``timeout`` seconds.
        ``on_output`` gets ("stdout"|"stderr", chunk) calls from ``wait()``.
        """
        if isinstance(argv, str):  # commands are argument lists, never shell strings
            raise TypeError("argv must be a list of arguments, not a string")
        args = [str(a) for a in argv]
        payload = encode_run(timeout, args)
        rid = self._new_id()
        with self._cond:
            self._raise_if_closed()
            self._runs[rid] = _RunState()
        handle = RunHandle(self, rid, args, timeout, on_output)
        try:
            self._send(FrameType.RUN, rid, payload)
        except GuestError:
            self._forget(rid)
            raise
        return handle

    def run(self, argv: Sequence[str], timeout: float, check: bool = False,
            on_output: OutputCallback | None = None) -> CommandResult:
        """Run a command in the guest and wait for it (timeout + grace at most)."""
        return self.start(argv, timeout, on_output).wait(check=check)

    def poweroff(self, timeout: float | None = None) -> None:
        """Ask the guest to sync and power off.

        With ``timeout`` None, return once the request is sent. Otherwise wait
        for the channel to close (the guest went down); a refusal from the
        agent raises GuestError, no answer AgentTimeout.
        """
        rid = self._new_id()
        with self._cond:
            self._waiting.add(rid)
        try:
            self._send(FrameType.POWEROFF, rid)
            if timeout is None:
                return
            deadline = time.monotonic() + timeout
            with self._cond:
                while self._closed is None:
                    if rid in self._errors:
                        text = self._errors[rid].decode("utf-8", "replace").strip()
                        raise GuestError(f"{self.name} refused to power off: {text}")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AgentTimeout(f"guest did not power off within {timeout:g} s")
                    self._cond.wait(left)
        finally:
            with self._cond:
                self._waiting.discard(rid)
                self._errors.pop(rid, None)

    def close(self) -> None:
        """Close the channel; anyone still waiting gets AgentClosed."""
        self._mark_closed(AgentClosed(f"{self.name} channel closed by the host"))
        shut_down(self._sock, self._reader)

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------

    def _new_id(self) -> int:
        with self._cond:
            rid = next(self._ids)
            if rid > MAX_ID:  # 4 billion requests: start over, skipping 0 (READY's)
                self._ids = itertools.count(2)
                rid = 1
            return rid

    def _send(self, ftype: FrameType, rid: int, payload: bytes = b"") -> None:
        data = encode_frame(ftype, rid, payload)
        with self._send_lock:
            self._raise_if_closed()
            try:
                self._sock.sendall(data)
            except OSError as exc:
                err = AgentClosed(f"{self.name} channel broke while sending: {exc}")
                self._mark_closed(err)
                raise err from exc

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise type(self._closed)(str(self._closed))

    def _mark_closed(self, err: GuestError) -> None:
        with self._cond:
            if self._closed is None:
                self._closed = err
            self._cond.notify_all()

    def _read_loop(self) -> None:
        decoder = FrameDecoder()
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError as exc:
                self._mark_closed(AgentClosed(f"{self.name} channel failed: {exc}"))
                return
            if not data:
                self._mark_closed(AgentClosed(
                    f"{self.name} channel closed (EOF): the guest powered off or died"))
                return
            try:
                frames = decoder.feed(data)
            except ProtocolError as exc:
                self._mark_closed(ProtocolError(f"{self.name}: {exc}"))
                return
            if frames:
                now = time.monotonic()
                with self._cond:
                    for frame in frames:
                        self._file(frame, now)
                    self._cond.notify_all()

    def _file(self, frame: Frame, now: float) -> None:
        """File one frame under its id (lock held)."""
        t = frame.type
        if t is FrameType.READY:
            try:
                mono_ns, version = decode_ready(frame.payload)
            except ProtocolError:
                return
            self._ready = ReadyInfo(mono_ns, version, now)
        elif t is FrameType.PONG:
            if frame.id in self._waiting:
                self._pongs.add(frame.id)
        elif t in (FrameType.STDOUT, FrameType.STDERR):
            state = self._runs.get(frame.id)
            stream = "stdout" if t is FrameType.STDOUT else "stderr"
            if state is not None and state.status is None:
                state.chunks.append((stream, frame.payload))
            elif t is FrameType.STDERR and frame.id in self._waiting:
                self._errors[frame.id] = self._errors.get(frame.id, b"") + frame.payload
        elif t is FrameType.STATUS:
            state = self._runs.get(frame.id)
            if state is not None and state.status is None:
                try:
                    state.status = decode_status(frame.payload)
                except ProtocolError:
                    state.status = (-1, 0, False)
                    state.chunks.append(("stderr", b"pmemlab: malformed STATUS frame\n"))
                state.ended_at = now
        # Frames for ids nobody waits on (stale, or host->guest types) are dropped.

    def _wait_run(self, rid: int, delivered: int, deadline: float,
                  what: str) -> tuple[list[tuple[str, bytes]], _RunState | None]:
        """Wait for new output or the end of run ``rid``.

        Returns the chunks past ``delivered`` and, once STATUS is in, the state.
        """
        with self._cond:
            while True:
                state = self._runs[rid]
                if len(state.chunks) > delivered or state.status is not None:
                    done = state if state.status is not None else None
                    return state.chunks[delivered:], done
                self._raise_if_closed()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentTimeout(what)
                self._cond.wait(left)

    def _run_status(self, rid: int) -> tuple[int, int, bool] | None:
        with self._cond:
            state = self._runs.get(rid)
            return state.status if state is not None else None

    def _run_output(self, rid: int) -> tuple[bytes, bytes]:
        with self._cond:
            state = self._runs.get(rid)
            chunks = list(state.chunks) if state is not None else []
        return (b"".join(c for s, c in chunks if s == "stdout"),
                b"".join(c for s, c in chunks if s == "stderr"))

    def _forget(self, rid: int) -> None:
        with self._cond:
            self._runs.pop(rid, None)
