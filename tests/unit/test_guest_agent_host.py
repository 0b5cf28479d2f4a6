"""The real guest agent (agent.c), compiled static and run on the host over
socketpairs, driven by the real host client (AgentClient, EventStream).

The agent is started with --no-poweroff (these tests may run as root: a real
reboot(RB_POWER_OFF) would take the host down) and --no-kmsg.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.errors import AgentClosed, AgentTimeout, GuestError
from lab.guest import agent as agent_mod
from lab.guest.agent import AgentClient
from lab.guest.events import EventStream
from lab.guest.protocol import (
    AGENT_VERSION,
    Frame,
    FrameDecoder,
    FrameType,
    decode_ready,
    decode_status,
    encode_frame,
    encode_run,
)
from tests.unit.helpers import GuestProgram


@pytest.fixture(scope="module")
def agent_bin(guest_program: GuestProgram) -> Path:
    return guest_program("agent")


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    client: AgentClient
    events: EventStream
    agent_fd: int  # fd numbers inside the agent process
    events_fd: int


def _spawn(agent_bin: Path, log: Path) -> tuple[subprocess.Popen[bytes], socket.socket,
                                                 socket.socket, int, int]:
    host_a, guest_a = socket.socketpair()
    host_e, guest_e = socket.socketpair()
    fds = (guest_a.fileno(), guest_e.fileno())
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(agent_bin), "--agent-fd", str(fds[0]), "--events-fd", str(fds[1]),
             "--no-kmsg", "--no-poweroff"],
            pass_fds=fds, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    guest_a.close()
    guest_e.close()
    return proc, host_a, host_e, fds[0], fds[1]


@pytest.fixture
def guest(agent_bin: Path, tmp_path: Path) -> Iterator[Guest]:
    proc, host_a, host_e, afd, efd = _spawn(agent_bin, tmp_path / "agent.log")
    g = Guest(proc, AgentClient(host_a), EventStream(host_e), afd, efd)
    try:
        g.client.wait_ready(5)
        yield g
    finally:
        g.client.close()
        g.events.close()
        proc.kill()
        proc.wait(5)


# -- lifecycle --------------------------------------------------------------

def test_ready_and_ping(guest: Guest) -> None:
    info = guest.client.wait_ready(1)
    assert info.version == AGENT_VERSION
    # Same machine, same CLOCK_MONOTONIC: READY carries the agent's clock.
    assert abs(info.guest_ns - time.monotonic_ns()) < 10e9
    assert guest.client.ping(2) < 1.0


def test_wait_ready_times_out_without_agent() -> None:
    host, peer = socket.socketpair()
    with AgentClient(host) as client:
        t0 = time.monotonic()
        with pytest.raises(AgentTimeout, match="not ready after 0.1 s"):
            client.wait_ready(0.1)
        assert time.monotonic() - t0 < 1
        with pytest.raises(AgentTimeout, match="ping"):
            client.ping(0.05)
    peer.close()


def test_host_wait_gives_up_after_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_mod, "GRACE_S", 0.1)
    host, peer = socket.socketpair()  # a guest that never answers
    with AgentClient(host) as client:
        handle = client.start(["true"], timeout=0.1)
        with pytest.raises(AgentTimeout, match="still running after 0.05 s"):
            handle.wait(0.05)
        with pytest.raises(AgentTimeout, match="presumed hung"):
            handle.wait()
        frame = FrameDecoder().feed(peer.recv(4096))[0]
        assert frame.type is FrameType.RUN and frame.id == handle.id
    peer.close()


# -- running commands -------------------------------------------------------

def test_run_separates_streams_and_exit_code(guest: Guest) -> None:
    r = guest.client.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=5)
    assert (r.exit_code, r.signal, r.timed_out) == (3, 0, False)
    assert r.stdout == b"out\n" and r.stderr == b"err\n"
    assert not r.ok and r.text == "out\n"
    assert 0 <= r.duration_s < 5
    assert guest.client.run(["true"], timeout=5).ok


def test_check_raises_with_command_status_and_stderr(guest: Guest) -> None:
    with pytest.raises(GuestError) as info:
        guest.client.run(["sh", "-c", "echo boom-detail >&2; exit 4"], timeout=5, check=True)
    msg = str(info.value)
    assert "sh" in msg and "status 4" in msg and "boom-detail" in msg


def test_stdin_is_dev_null_and_argv_passes_verbatim(guest: Guest) -> None:
    r = guest.client.run(["sh", "-c", 'cat; printf "%s|" "$@"', "sh", "a b", "", "*"],
                         timeout=5, check=True)
    assert r.stdout == b"a b||*|"


def test_exec_failure_is_127(guest: Guest) -> None:
    r = guest.client.run(["/nonexistent/program"], timeout=5)
    assert r.exit_code == 127 and r.signal == 0
    assert b"/nonexistent/program" in r.stderr


def test_killed_by_signal(guest: Guest) -> None:
    r = guest.client.run(["sh", "-c", "kill -TERM $$"], timeout=5)
    assert (r.exit_code, r.signal, r.timed_out) == (-1, signal.SIGTERM, False)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.01)
    return False


def test_deadline_kills_whole_process_group(guest: Guest) -> None:
    t0 = time.monotonic()
    r = guest.client.run(["sh", "-c", "sleep 30 & echo $!; sleep 30"], timeout=0.3)
    assert time.monotonic() - t0 < 2
    assert r.timed_out and r.signal == signal.SIGKILL and r.exit_code == -1
    assert _wait_gone(int(r.stdout)), "background grandchild survived the group kill"


def test_escaped_grandchild_holding_pipes_is_given_up_after_1s(guest: Guest) -> None:
    if shutil.which("setsid") is None:
        pytest.skip("setsid(1) is not installed")
    t0 = time.monotonic()
    r = guest.client.run(["sh", "-c", "setsid sleep 30 & echo $!; sleep 30"], timeout=0.2)
    took = time.monotonic() - t0
    pid = int(r.stdout)
    try:
        assert r.timed_out and r.signal == signal.SIGKILL
        assert 1.1 <= took < 3, took
    finally:
        os.kill(pid, signal.SIGKILL)


def test_kill_background_command_while_pinging(guest: Guest) -> None:
    handle = guest.client.start(["sleep", "30"], timeout=60)
    assert not handle.done
    guest.client.ping(2)  # the channel stays usable while it runs
    with pytest.raises(AgentTimeout):
        handle.wait(0.05)
    handle.kill()
    r = handle.wait(5)
    assert r.signal == signal.SIGKILL and not r.timed_out and handle.done
    handle.kill()  # no-op once finished


def test_concurrent_commands_keep_their_own_output(guest: Guest) -> None:
    handles = [guest.client.start(
        ["sh", "-c", f"for i in 1 2 3; do echo {n}-$i; echo e{n} >&2; sleep 0.05; done; "
                     f"exit {n}"], timeout=10) for n in range(4)]
    results = [h.wait() for h in reversed(handles)][::-1]
    for n, r in enumerate(results):
        assert r.exit_code == n
        assert r.stdout == f"{n}-1\n{n}-2\n{n}-3\n".encode()
        assert r.stderr == f"e{n}\n".encode() * 3


def test_runs_from_many_threads(guest: Guest) -> None:
    out: dict[int, bytes] = {}

    def worker(n: int) -> None:
        out[n] = guest.client.run(["echo", str(n)], timeout=5, check=True).stdout

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == {n: f"{n}\n".encode() for n in range(8)}


def test_output_streams_to_callback_as_it_arrives(guest: Guest) -> None:
    seen: list[tuple[str, bytes, float, str]] = []

    def on_output(stream: str, chunk: bytes) -> None:
        seen.append((stream, chunk, time.monotonic(), threading.current_thread().name))

    t0 = time.monotonic()
    r = guest.client.run(["sh", "-c", "echo a; sleep 0.3; echo b >&2"], timeout=5,
                         on_output=on_output)
    end = time.monotonic()
    assert [(s, c) for s, c, _, _ in seen] == [("stdout", b"a\n"), ("stderr", b"b\n")]
    assert seen[0][2] - t0 < 0.25 and end - seen[0][2] >= 0.25
    assert {name for *_, name in seen} == {threading.current_thread().name}
    assert r.stdout == b"a\n" and r.stderr == b"b\n"


def test_large_output_arrives_intact(guest: Guest) -> None:
    script = "yes 0123456789abcdef | head -c 3000000; yes XY | head -c 500000 >&2"
    r = guest.client.run(["sh", "-c", script], timeout=10, check=True)
    assert r.stdout == (b"0123456789abcdef\n" * 200000)[:3000000]
    assert r.stderr == (b"XY\n" * 200000)[:500000]


def test_background_handle_output_so_far(guest: Guest) -> None:
    handle = guest.client.start(["sh", "-c", "echo early; sleep 30"], timeout=60)
    deadline = time.monotonic() + 2
    while handle.output()[0] != b"early\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.output() == (b"early\n", b"")
    handle.kill()
    assert handle.wait(5).stdout == b"early\n"


# -- file descriptors and events ---------------------------------------------

def test_child_sees_only_the_events_fd(guest: Guest) -> None:
    r = guest.client.run(
        ["sh", "-c", 'echo "$PMEMLAB_EVENT_FD"; for f in /proc/$$/fd/*; do echo "${f##*/}"; done'],
        timeout=5, check=True)
    env_fd, *fds = r.text.split()
    assert int(env_fd) == guest.events_fd
    assert str(guest.events_fd) in fds
    assert str(guest.agent_fd) not in fds


def test_event_subcommand_and_multicall_name(guest: Guest, agent_bin: Path,
                                             tmp_path: Path) -> None:
    guest.client.run([str(agent_bin), "event", "MARK", "phase-1"], timeout=5, check=True)
    ev = guest.events.wait_mark("phase-1", 2)
    assert abs(ev.guest_ns - time.monotonic_ns()) < 10e9

    link = tmp_path / "pmemlab-event"
    link.symlink_to(agent_bin)
    guest.client.run([str(link), "ACK", "7"], timeout=5, check=True)
    assert guest.events.wait_ack(7, 2).kind == "ACK"

    bad = guest.client.run([str(link), "MARK", "two words"], timeout=5)
    assert bad.exit_code == 2 and b"whitespace" in bad.stderr


def test_event_without_env_exits_2(agent_bin: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PMEMLAB_EVENT_FD"}
    p = subprocess.run([str(agent_bin), "event", "MARK", "x"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "PMEMLAB_EVENT_FD" in p.stderr


# -- poweroff, errors, hangups ------------------------------------------------

def test_poweroff_refusal_is_reported(guest: Guest) -> None:
    with pytest.raises(GuestError, match="poweroff disabled"):
        guest.client.poweroff(timeout=2)
    guest.client.ping(2)


def test_agent_death_closes_channel(guest: Guest) -> None:
    handle = guest.client.start(["sleep", "1"], timeout=10)
    guest.proc.kill()
    with pytest.raises(AgentClosed):  # EOF, or a reset if it died with input unread
        handle.wait(5)
    with pytest.raises(AgentClosed):
        guest.client.run(["true"], timeout=5)
    assert guest.client.closed


def test_agent_survives_host_hangup_without_spinning(agent_bin: Path, tmp_path: Path) -> None:
    proc, host_a, host_e, _, _ = _spawn(agent_bin, tmp_path / "agent.log")
    try:
        host_a.close()
        host_e.close()
        time.sleep(0.2)

        def cpu_ticks() -> int:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        before = cpu_ticks()
        time.sleep(0.5)
        assert proc.poll() is None, "agent exited after the host hung up"
        assert cpu_ticks() - before < 10  # < 0.1 s of CPU in 0.5 s: it naps
    finally:
        proc.kill()
        proc.wait(5)


def _raw_frames(sock: socket.socket, want: int, timeout: float = 5) -> list[Frame]:
    dec = FrameDecoder()
    frames: list[Frame] = []
    sock.settimeout(timeout)
    while len(frames) < want:
        data = sock.recv(65536)
        assert data, "agent closed the channel"
        frames += dec.feed(data)
    return frames


def test_raw_protocol_errors_get_answers(agent_bin: Path, tmp_path: Path) -> None:
    proc, host_a, host_e, _, _ = _spawn(agent_bin, tmp_path / "agent.log")
    try:
        ready = _raw_frames(host_a, 1)[0]
        assert ready.type is FrameType.READY and ready.id == 0
        assert decode_ready(ready.payload)[1] == AGENT_VERSION

        host_a.sendall(b"\x00\x00\x00\x00X\x00\x00\x00\x05")  # unknown type
        (err,) = _raw_frames(host_a, 1)
        assert (err.type, err.id) == (FrameType.STDERR, 5) and b"unknown" in err.payload

        host_a.sendall(encode_frame(FrameType.RUN, 6, struct.pack(">I", 0) + b"true\0"))
        err, status = _raw_frames(host_a, 2)
        assert err.type is FrameType.STDERR and b"timeout" in err.payload
        assert status.type is FrameType.STATUS and decode_status(status.payload)[0] == 127

        host_a.sendall(encode_frame(FrameType.RUN, 7, struct.pack(">I", 1000)))
        err, status = _raw_frames(host_a, 2)
        assert status.id == 7 and decode_status(status.payload) == (127, 0, False)

        host_a.sendall(struct.pack(">IBI", (1 << 20) + 1, ord("R"), 8))  # oversize
        (err,) = _raw_frames(host_a, 1)
        assert err.id == 8 and b"exceeds" in err.payload

        # Split across writes, and two frames in one write: still understood.
        run = encode_frame(FrameType.RUN, 9, encode_run(5, ["echo", "hi"]))
        host_a.sendall(run[:5])
        time.sleep(0.05)
        host_a.sendall(run[5:] + encode_frame(FrameType.PING, 10))
        got = _raw_frames(host_a, 3)
        assert Frame(FrameType.PONG, 10) in got
        assert Frame(FrameType.STDOUT, 9, b"hi\n") in got
        assert got[-1].type is FrameType.STATUS and got[-1].id == 9

        host_a.sendall(encode_frame(FrameType.KILL, 12345))  # unknown id: ignored
        host_a.sendall(encode_frame(FrameType.PING, 11))
        assert _raw_frames(host_a, 1) == [Frame(FrameType.PONG, 11)]
    finally:
        proc.kill()
        proc.wait(5)
        host_a.close()
        host_e.close()
