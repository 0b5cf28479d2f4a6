"""Agent channel protocol v1: frame encoding and decoding, no I/O.

Every frame, both directions, is a 9-byte header — u32 big-endian payload
length, u8 type, u32 big-endian request id — followed by the payload (at
most 1 MiB). The guest side is ``images/guest/agent.c``; the two must agree
byte for byte.

Host -> guest: PING, RUN, KILL (id = the RUN to kill), POWEROFF.
Guest -> host: READY (id 0), PONG, STDOUT, STDERR, STATUS. STDERR frames
also carry the agent's own error messages for a request id (a refused RUN,
a failed POWEROFF).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from lab.errors import GuestError

HEADER = struct.Struct(">IBI")  # payload length, type, request id
HEADER_SIZE = HEADER.size  # 9
MAX_PAYLOAD = 1 << 20
MAX_ID = 0xFFFFFFFF
MAX_TIMEOUT_MS = 0xFFFFFFFF
AGENT_VERSION = "pmemlab-agent 1"

_STATUS = struct.Struct(">iiB")  # exit code, signal, timed out
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ProtocolError(GuestError):
    """The agent channel carried bytes that are not a valid v1 frame."""


class FrameType(IntEnum):
    """Frame types; the wire value is the ASCII letter."""

    # host -> guest
    PING = ord("P")
    RUN = ord("R")
    KILL = ord("K")
    POWEROFF = ord("Q")
    # guest -> host
    READY = ord("Y")
    PONG = ord("p")
    STDOUT = ord("O")
    STDERR = ord("E")
    STATUS = ord("S")


@dataclass(frozen=True)
class Frame:
    type: FrameType
    id: int
    payload: bytes = b""


def encode_frame(type: FrameType, id: int, payload: bytes = b"") -> bytes:
    """One frame, header and payload."""
    if not 0 <= id <= MAX_ID:
        raise ValueError(f"request id must be a u32, got {id}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), int(type), id) + payload


class FrameDecoder:
    """Turns a byte stream into frames; keeps a partial frame between feeds.

    After a ProtocolError the stream has no recoverable frame boundary, so
    the decoder refuses further input.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken is not None:
            raise self._broken
        self._buf += data
        frames: list[Frame] = []
        off = 0
        while len(self._buf) - off >= HEADER_SIZE:
            length, code, rid = HEADER.unpack_from(self._buf, off)
            try:
                ftype = FrameType(code)
            except ValueError:
                self._broken = ProtocolError(
                    f"agent sent unknown frame type 0x{code:02x} (id {rid})")
            else:
                if length > MAX_PAYLOAD:
                    self._broken = ProtocolError(
                        f"agent sent a {length}-byte payload (limit {MAX_PAYLOAD}) "
                        f"in a {ftype.name} frame")
            if self._broken is not None:
                self._buf.clear()
                raise self._broken
            end = off + HEADER_SIZE + length
            if len(self._buf) < end:
                break
            frames.append(Frame(ftype, rid, bytes(self._buf[off + HEADER_SIZE:end])))
            off = end
        del self._buf[:off]
        return frames


def encode_run(timeout_s: float, argv: Sequence[str]) -> bytes:
    """RUN payload: u32 BE timeout in ms (> 0), then NUL-terminated argv."""
    if not argv:
        raise ValueError("argv must hold at least the program name")
    if isinstance(argv, str):
        raise TypeError("argv must be a list of arguments, not a string")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout_s}")
    timeout_ms = max(1, math.ceil(timeout_s * 1000))
    if timeout_ms > MAX_TIMEOUT_MS:
        raise ValueError(f"timeout {timeout_s} s exceeds the u32 millisecond range")
    parts = [_U32.pack(timeout_ms)]
    for arg in argv:
        raw = os.fsencode(arg)
        if b"\0" in raw:
            raise ValueError(f"argument {arg!r} contains a NUL byte")
        parts.append(raw + b"\0")
    if not parts[1].rstrip(b"\0"):
        raise ValueError("program name (argv[0]) is empty")
    payload = b"".join(parts)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"argv encodes to {len(payload)} bytes, over {MAX_PAYLOAD}")
    return payload


def decode_status(payload: bytes) -> tuple[int, int, bool]:
    """STATUS payload -> (exit_code, signal, timed_out); exit_code is -1 if killed."""
    if len(payload) != _STATUS.size:
        raise ProtocolError(f"STATUS payload is {len(payload)} bytes, expected {_STATUS.size}")
    code, sig, timed_out = _STATUS.unpack(payload)
    if timed_out not in (0, 1):
        raise ProtocolError(f"STATUS timed_out flag is {timed_out}, expected 0 or 1")
    return code, sig, bool(timed_out)


def decode_ready(payload: bytes) -> tuple[int, str]:
    """READY payload -> (guest CLOCK_MONOTONIC ns, version string)."""
    if len(payload) < _U64.size:
        raise ProtocolError(f"READY payload is {len(payload)} bytes, expected >= 8")
    (mono_ns,) = _U64.unpack_from(payload)
    try:
        version = payload[_U64.size:].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"READY version is not ASCII: {payload[8:]!r}") from exc
    return mono_ns, version
