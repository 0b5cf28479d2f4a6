"""The ADR model at a power cut: arm the tracing plugin after the mount, and at each cut turn its
dump into crash states (lab/adr/states.py) written over copies of the eADR capture.

    arm:  query the NVDIMM's guest-physical range (QMP query-memory-devices) -> `arm` (poking the
          guest until a vCPU re-translates with instrumentation) -> freeze -> baseline capture ->
          cont. Everything stored before the baseline counts as persisted.
    cut:  (frozen) `dump` -> parse (truncated or failed: DumpError, an INFRA-ERROR) -> states ->
          one image per state: a copy of the capture with the state's lines written over it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.adr.states import AdrDump, CrashState, crash_states, parse_dump, read_lines, write_state
from lab.errors import MachineError
from lab.vm.capture import Capture, capture_file
from lab.vm.machine import Machine

DROP_ALL = "adr:drop-all"


@dataclass(frozen=True)
class AdrTrace:
    base: int
    size: int
    baseline: Path
    arm_s: float


@dataclass
class AdrCut:
    """The ADR crash states of one cut and their images."""

    dump_path: Path
    dump: AdrDump
    states: list[CrashState]
    images: dict[str, Path] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {"model": "adr", "dump": str(self.dump_path), "unpersisted_lines": len(self.dump.lines),
                "unpersisted_stores": self.dump.stores, "plugin_counts": self.dump.counts,
                "states": [{"id": s.id, "kept_stores": s.kept_stores, "digest": s.digest} for s in self.states]}

    def remove(self, state_id: str | None = None) -> None:
        """Delete the state images (only `state_id`'s when given: the others belong to other cases)."""
        for sid, image in self.images.items():
            if state_id is None or sid == state_id:
                image.unlink(missing_ok=True)


def nvdimm_range(machine: Machine) -> tuple[int, int]:
    """Guest-physical base and size of the machine's first NVDIMM."""
    assert machine.qmp is not None
    devices = machine.qmp.execute("query-memory-devices", timeout=10.0)
    for device in devices if isinstance(devices, list) else []:
        if device.get("type") == "nvdimm":
            data = device.get("data") or {}
            return int(data["addr"]), int(data["size"])
    raise MachineError(f"machine {machine.spec.name!r} reports no NVDIMM (query-memory-devices)")


def arm(machine: Machine, dest_dir: Path) -> AdrTrace:
    """Start tracing the NVDIMM's stores and capture the baseline they are judged against."""
    if machine.plugin is None:
        raise MachineError(f"machine {machine.spec.name!r} has no ADR plugin loaded")
    base, size = nvdimm_range(machine)
    def poke() -> None:  # any guest activity: a vCPU wakes and runs the plugin's reset
        machine.run(["true"], timeout=10, check=False)

    arm_s = machine.plugin.arm(base, size, poke=poke)
    machine.freeze()
    try:
        baseline = capture_file(machine.spec.nvdimms[0].backing_file, dest_dir / "adr-baseline.img").path
    finally:
        machine.cont()
    return AdrTrace(base, size, baseline, arm_s)


def cut_states(trace: AdrTrace, machine: Machine, capture: Capture, dest_dir: Path, subsets: int,
               seed: int, wanted: frozenset[int] | None = None) -> AdrCut:
    """On the frozen machine: its dump, the crash states, an image per state (only the slots in
    `wanted` when given: the states some case at this cut judges)."""
    assert machine.plugin is not None
    dump_path = dest_dir / "adr.dump"
    if re.search(r"\s", str(dump_path)):
        raise MachineError(f"the ADR dump path may not contain whitespace: {dump_path}")
    expected = machine.plugin.dump(dump_path)
    dump = parse_dump(dump_path, expected)
    states = crash_states(dump, read_lines(trace.baseline, dump.base, dump), subsets, seed)
    cut = AdrCut(dump_path, dump, states)
    # A slot beyond the distinct states judges state (slot mod count) again: its image is needed too.
    needed = None if wanted is None else frozenset(w % len(states) for w in wanted)
    try:
        for slot, state in enumerate(states):
            if needed is not None and slot not in needed:
                continue
            image = dest_dir / (state.id.replace(":", "-") + ".img")
            capture_file(capture.path, image)
            cut.images[state.id] = write_state(capture.path, image, state)
    except BaseException:
        cut.remove()
        raise
    return cut
