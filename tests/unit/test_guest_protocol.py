"""Agent frame encoding/decoding and the host event-stream reader (no guest)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from lab.errors import AgentClosed, AgentTimeout, GuestError
from lab.guest.events import INVALID, Event, EventStream, parse_line
from lab.guest.protocol import (
    AGENT_VERSION,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    decode_ready,
    decode_status,
    encode_frame,
    encode_run,
)


def test_frame_header_layout() -> None:
    data = encode_frame(FrameType.RUN, 0x01020304, b"xyz")
    assert data == b"\x00\x00\x00\x03R\x01\x02\x03\x04xyz"
    assert HEADER_SIZE == 9
    assert encode_frame(FrameType.PING, 7) == b"\x00\x00\x00\x00P\x00\x00\x00\x07"


def test_wire_letters() -> None:
    letters = {t.name: chr(t.value) for t in FrameType}
    assert letters == {"PING": "P", "RUN": "R", "KILL": "K", "POWEROFF": "Q",
                       "READY": "Y", "PONG": "p", "STDOUT": "O", "STDERR": "E",
                       "STATUS": "S"}


def test_encode_frame_rejects_bad_id_and_size() -> None:
    with pytest.raises(ValueError):
        encode_frame(FrameType.PING, -1)
    with pytest.raises(ValueError):
        encode_frame(FrameType.PING, 1 << 32)
    with pytest.raises(ValueError):
        encode_frame(FrameType.STDOUT, 1, b"x" * (MAX_PAYLOAD + 1))
    assert len(encode_frame(FrameType.STDOUT, 1, b"x" * MAX_PAYLOAD)) == MAX_PAYLOAD + 9


def test_decoder_byte_by_byte_and_batched() -> None:
    frames = [Frame(FrameType.STDOUT, 1, b"hello"), Frame(FrameType.PONG, 2, b""),
              Frame(FrameType.STATUS, 1, struct.pack(">iiB", 0, 0, 0))]
    stream = b"".join(encode_frame(f.type, f.id, f.payload) for f in frames)
    dec = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i:i + 1])
    assert got == frames and dec.pending == 0
    assert FrameDecoder().feed(stream) == frames
    dec = FrameDecoder()
    assert dec.feed(stream[:12]) == []
    assert dec.pending == 12
    assert dec.feed(stream[12:]) == frames


def test_decoder_rejects_unknown_type_and_oversize() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError, match="unknown frame type 0x58"):
        dec.feed(b"\x00\x00\x00\x00X\x00\x00\x00\x01")
    with pytest.raises(ProtocolError):  # stays broken: no frame boundary left
        dec.feed(encode_frame(FrameType.PONG, 1))
    with pytest.raises(ProtocolError, match="limit"):
        FrameDecoder().feed(struct.pack(">IBI", MAX_PAYLOAD + 1, ord("O"), 1))
    assert issubclass(ProtocolError, GuestError)


def test_encode_run() -> None:
    payload = encode_run(1.5, ["echo", "a b", ""])
    assert payload == struct.pack(">I", 1500) + b"echo\0a b\0\0"
    assert encode_run(0.0001, ["x"])[:4] == struct.pack(">I", 1)  # never 0
    assert encode_run(1, ["caf\u00e9"]).endswith("café".encode() + b"\0")


@pytest.mark.parametrize("timeout,argv", [
    (0, ["x"]), (-1, ["x"]), (float("nan"), ["x"]), (1e10, ["x"]),
    (1, []), (1, ["a\0b"]), (1, [""]),
])
def test_encode_run_rejects(timeout: float, argv: list[str]) -> None:
    with pytest.raises(ValueError):
        encode_run(timeout, argv)


def test_encode_run_rejects_shell_string() -> None:
    with pytest.raises(TypeError):
        encode_run(1, "echo hi")


def test_decode_status() -> None:
    assert decode_status(struct.pack(">iiB", 3, 0, 0)) == (3, 0, False)
    assert decode_status(struct.pack(">iiB", -1, 9, 1)) == (-1, 9, True)
    with pytest.raises(ProtocolError):
        decode_status(b"\x00" * 8)
    with pytest.raises(ProtocolError):
        decode_status(struct.pack(">iiB", 0, 0, 2))


def test_decode_ready() -> None:
    payload = struct.pack(">Q", 123456789) + AGENT_VERSION.encode()
    assert decode_ready(payload) == (123456789, "pmemlab-agent 1")
    with pytest.raises(ProtocolError):
        decode_ready(b"\x00" * 7)
    with pytest.raises(ProtocolError):
        decode_ready(b"\x00" * 8 + b"\xff")


# -- event stream -----------------------------------------------------------

def test_parse_line() -> None:
    ev = parse_line(b"ACK 12 3456", 1.0)
    assert ev == Event("ACK", "12", 3456, 1.0) and ev.ack == 12
    assert parse_line(b"MARK mmap-ok 9", 2.0).ack is None
    bad = parse_line(b"garbage here", 3.0)
    assert bad.kind == INVALID and bad.arg == "garbage here" and bad.guest_ns == -1


@pytest.fixture
def stream_pair():
    host, guest = socket.socketpair()
    stream = EventStream(host)
    yield stream, guest
    stream.close()
    guest.close()


def test_event_stream_split_writes_and_queries(stream_pair) -> None:
    stream, guest = stream_pair
    guest.sendall(b"MARK start 10\nACK 0 1")
    assert stream.wait_mark("start", 2).guest_ns == 10
    guest.sendall(b"1\nACK 1 12\nnonsense\n")
    ev = stream.wait_ack(1, 2)
    assert ev.guest_ns == 12 and ev.host_time <= time.monotonic()
    assert stream.acks() == [0, 1]
    stream.wait_for(lambda e: e.kind == INVALID, 2)
    kinds = [e.kind for e in stream.snapshot()]
    assert kinds == ["MARK", "ACK", "ACK", INVALID]
    with pytest.raises(AgentTimeout, match="ACK 5"):
        stream.wait_ack(5, 0.05)


def test_event_stream_wakes_waiter_promptly(stream_pair) -> None:
    stream, guest = stream_pair
    woke: list[float] = []

    def waiter() -> None:
        stream.wait_ack(3, 5)
        woke.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    sent = time.monotonic()
    guest.sendall(b"ACK 3 1\n")
    t.join(5)
    # No polling interval: a waiter wakes as the event is read. 0.5 s leaves room for a loaded 2-core host;
    # a poll-based wait (the thing this guards against) would sleep for its whole 5 s timeout.
    assert woke and woke[0] - sent < 0.5


def test_event_stream_hook_and_eof() -> None:
    host, guest = socket.socketpair()
    seen: list[Event] = []
    stream = EventStream(host, on_event=seen.append)
    guest.sendall(b"ACK 0 5\n")
    stream.wait_ack(0, 2)
    assert [e.ack for e in seen] == [0]
    guest.close()
    with pytest.raises(AgentClosed, match="EOF"):
        stream.wait_ack(1, 2)
    assert stream.closed
    assert stream.acks() == [0]  # what was read stays readable
    stream.close()


def test_event_stream_close_wakes_waiters() -> None:
    host, guest = socket.socketpair()
    stream = EventStream(host)
    errors: list[Exception] = []

    def waiter() -> None:
        try:
            stream.wait_ack(0, 10)
        except Exception as exc:  # noqa: BLE001 - recorded for the assert
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    stream.close()
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], AgentClosed)
    guest.close()
