"""The guest kernel's taint flags: a second KERNEL-BUG signal beside the console parser.

The kernel sets a taint bit when something happened that makes it untrustworthy (a WARN, an
Oops, a bad page, a soft lockup, ...): /proc/sys/kernel/tainted is the mask. The lab reads it
when a machine's agent first answers (the baseline) and again after the workload or recovery;
a bit that was not set at the baseline is a finding. Bits and letters follow the kernel's
Documentation/admin-guide/tainted-kernels.rst.

Read in this lab's guests (Debian 6.1, TCG, restored or cold): 0 at the baseline and after clean
workloads and recoveries. The module-provenance bits (P, O, E: proprietary, out-of-tree,
unsigned module loaded) say where a module came from, not that the kernel misbehaved; a user's
own kernel may set them as modules load on demand mid-run, so they are reported and never a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any

from lab.errors import GuestError
from lab.guest.agent import AgentClient
from lab.oracles.finding import Finding
from lab.verdict import Verdict

TAINTED = "/proc/sys/kernel/tainted"


class Taint(IntFlag):
    """Bit n of /proc/sys/kernel/tainted (tainted-kernels.rst, 'Table for decoding tainted state')."""

    PROPRIETARY_MODULE = 1 << 0
    FORCED_MODULE = 1 << 1
    CPU_OUT_OF_SPEC = 1 << 2
    FORCED_RMMOD = 1 << 3
    MACHINE_CHECK = 1 << 4
    BAD_PAGE = 1 << 5
    USER = 1 << 6
    DIE = 1 << 7
    OVERRIDDEN_ACPI_TABLE = 1 << 8
    WARN = 1 << 9
    CRAP = 1 << 10
    FIRMWARE_WORKAROUND = 1 << 11
    OOT_MODULE = 1 << 12
    UNSIGNED_MODULE = 1 << 13
    SOFTLOCKUP = 1 << 14
    LIVEPATCH = 1 << 15
    AUX = 1 << 16
    RANDSTRUCT = 1 << 17
    TEST = 1 << 18
    FWCTL = 1 << 19


# bit -> (letter when set, what it means); bit 0 reads 'G' when clear, every other bit '_'
FLAGS: dict[Taint, tuple[str, str]] = {
    Taint.PROPRIETARY_MODULE: ("P", "proprietary module was loaded"),
    Taint.FORCED_MODULE: ("F", "module was force loaded"),
    Taint.CPU_OUT_OF_SPEC: ("S", "kernel running on an out of specification system"),
    Taint.FORCED_RMMOD: ("R", "module was force unloaded"),
    Taint.MACHINE_CHECK: ("M", "processor reported a Machine Check Exception"),
    Taint.BAD_PAGE: ("B", "bad page referenced or some unexpected page flags"),
    Taint.USER: ("U", "taint requested by userspace application"),
    Taint.DIE: ("D", "kernel died recently (OOPS or BUG)"),
    Taint.OVERRIDDEN_ACPI_TABLE: ("A", "an ACPI table was overridden by user"),
    Taint.WARN: ("W", "kernel issued warning"),
    Taint.CRAP: ("C", "staging driver was loaded"),
    Taint.FIRMWARE_WORKAROUND: ("I", "workaround for bug in platform firmware applied"),
    Taint.OOT_MODULE: ("O", "externally-built (out-of-tree) module was loaded"),
    Taint.UNSIGNED_MODULE: ("E", "unsigned module was loaded"),
    Taint.SOFTLOCKUP: ("L", "soft lockup occurred"),
    Taint.LIVEPATCH: ("K", "kernel has been live patched"),
    Taint.AUX: ("X", "auxiliary taint, defined for and used by distros"),
    Taint.RANDSTRUCT: ("T", "kernel was built with the struct randomization plugin"),
    Taint.TEST: ("N", "an in-kernel test has been run"),
    Taint.FWCTL: ("J", "userspace used a mutating debug operation in fwctl"),
}

# Where a module came from, not a kernel misbehaving: never a finding (see the module docstring).
EXPECTED = Taint.PROPRIETARY_MODULE | Taint.OOT_MODULE | Taint.UNSIGNED_MODULE


def parse(text: str) -> int:
    """The mask from the file's text; GuestError naming the file when it is not a number."""
    try:
        value = int(text.strip())
    except ValueError:
        raise GuestError(f"{TAINTED} read {text.strip()[:80]!r}, not a number") from None
    if value < 0:
        raise GuestError(f"{TAINTED} read {value}, a negative mask")
    return value


def letters(mask: int) -> str:
    """The letters of the set bits, in bit order ('' for 0); unknown bits as '?<bit>'."""
    out = [FLAGS[flag][0] for flag in FLAGS if mask & flag]
    unknown = mask & ~sum(FLAGS)
    out += [f"?{bit}" for bit in range(unknown.bit_length()) if unknown >> bit & 1]
    return "".join(out)


def describe(mask: int) -> str:
    """'W (kernel issued warning), D (kernel died recently (OOPS or BUG))'; 'none' for 0."""
    parts = [f"{letter} ({what})" for flag, (letter, what) in FLAGS.items() if mask & flag]
    unknown = mask & ~sum(FLAGS)
    parts += [f"bit {bit} (unknown)" for bit in range(unknown.bit_length()) if unknown >> bit & 1]
    return ", ".join(parts) or "none"


def new_bits(baseline: int, now: int) -> int:
    """Bits set now that were clear at the baseline and are not EXPECTED (taint is never cleared)."""
    return now & ~baseline & ~int(EXPECTED)


def read(agent: AgentClient, timeout: float = 5.0) -> int:
    """The guest kernel's taint mask, read through the agent."""
    return parse(agent.run(["cat", TAINTED], timeout=timeout, check=True).text)


@dataclass
class TaintTrack:
    """One machine's readings: the baseline (agent first answered) and the latest later one."""

    baseline: int | None = None
    latest: int | None = None
    when: str = ""  # what the latest reading followed (e.g. 'workload', 'recovery')
    error: str | None = None  # a reading that failed (the guest no longer answered)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "latest": self.latest, "when": self.when, "error": self.error,
                "baseline_flags": letters(self.baseline or 0), "latest_flags": letters(self.latest or 0)}


@dataclass
class TaintLog:
    """Every machine's taint readings in one run, keyed by machine name."""

    tracks: dict[str, TaintTrack] = field(default_factory=dict)

    def baseline(self, machine: str, mask: int) -> None:
        self.tracks[machine] = TaintTrack(baseline=mask)

    def later(self, machine: str, mask: int, when: str) -> None:
        track = self.tracks.setdefault(machine, TaintTrack())
        track.latest, track.when, track.error = mask, when, None

    def failed(self, machine: str, error: str) -> None:
        self.tracks.setdefault(machine, TaintTrack()).error = error

    def to_dict(self) -> dict[str, Any]:
        return {name: track.to_dict() for name, track in self.tracks.items()}

    def finding(self) -> Finding | None:
        """KERNEL-BUG when a machine's kernel gained a taint bit during the run; PASS when every
        machine read twice kept its mask; None when no machine was read twice."""
        compared = {name: t for name, t in self.tracks.items() if t.baseline is not None and t.latest is not None}
        if not compared:
            return None
        details = self.to_dict()
        gained = {name: new_bits(t.baseline or 0, t.latest or 0) for name, t in compared.items()}
        bad = {name: bits for name, bits in gained.items() if bits}
        if bad:
            text = "; ".join(f"{name}: {describe(bits)} (taint {compared[name].baseline} -> {compared[name].latest}, "
                             f"after {compared[name].when})" for name, bits in bad.items())
            return Finding("kernel-taint", Verdict.KERNEL_BUG, f"the kernel became tainted during the run: {text}",
                           details)
        masks = ", ".join(f"{name} {t.latest}" + (f" ({letters(t.latest or 0)})" if t.latest else "")
                          for name, t in compared.items())
        return Finding("kernel-taint", Verdict.PASS, f"no new kernel taint: {masks}", details)
