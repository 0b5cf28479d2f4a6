"""The power cut: freeze every vCPU, close the durable set, capture the media, destroy.

The durable set is the ACKs the host read before it issued QMP `stop`. A
guest cannot emit anything once frozen, and nothing read after the stop was
issued enters the set, so the set never holds a record the guest had not
finished (stored and flushed) before the cut.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.vm.capture import Capture, capture_file
from lab.guest.events import EventStream
from lab.vm.machine import Machine


@dataclass
class CutResult:
    durable: list[int]  # ACKs read before the stop was issued
    acked_after_freeze: list[int]  # read later: emitted before the freeze, kept out of the set
    freeze_latency_s: float  # from the trigger event being read to the vCPUs stopped
    captures: list[Capture] = field(default_factory=list)


def durable_set(events: EventStream, issued_at: float) -> tuple[list[int], list[int]]:
    before: set[int] = set()
    after: set[int] = set()
    for event in events.snapshot():
        if event.ack is not None:
            (before if event.host_time <= issued_at else after).add(event.ack)
    return sorted(before), sorted(after - before)


def freeze_and_close(machine: Machine, trigger_time: float) -> CutResult:
    """Stop the vCPUs and split the ACKs read so far at the instant `stop` was issued."""
    issued_at = time.monotonic()
    machine.freeze()
    frozen_at = time.monotonic()
    time.sleep(0.05)  # let the reader take in ACKs already in flight: they go to 'after', for the record
    durable, after = durable_set(machine.events, issued_at)
    return CutResult(durable, after, round(frozen_at - trigger_time, 4))


def capture_media(machine: Machine, dest_dir: Path) -> list[Capture]:
    """Copy every NVDIMM backing file of the frozen machine into `dest_dir`."""
    return [capture_file(nv.backing_file, dest_dir / nv.backing_file.name) for nv in machine.spec.nvdimms]
