"""Choosing the accelerator: KVM only where it really boots a normal guest.

On some hosts /dev/kvm is PVM (pagetable-based virtualization, module
kvm_pvm): it answers KVM ioctls, but a standard x86 kernel hangs right after
the setup stage. `auto` therefore decides from host facts first, and where
the facts allow KVM it proves it with a short test boot; the verdict is
remembered per host + QEMU so the test boot runs once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lab.errors import MachineError
from lab.vm.spec import Accel


@dataclass(frozen=True)
class HostFacts:
    kvm_device: bool  # /dev/kvm exists
    kvm_access: bool  # ... and we may open it read-write
    kvm_pvm: bool  # the kvm_pvm module is loaded
    qemu_version: str

    @classmethod
    def read(cls, qemu_binary: str = "qemu-system-x86_64") -> "HostFacts":
        dev = Path("/dev/kvm")
        return cls(
            kvm_device=dev.exists(),
            kvm_access=dev.exists() and os.access(dev, os.R_OK | os.W_OK),
            kvm_pvm=Path("/sys/module/kvm_pvm").exists(),
            qemu_version=qemu_version(qemu_binary),
        )

    def cache_key(self) -> str:
        text = json.dumps({"host": platform.node(), "kernel": platform.release(), **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AccelVerdict:
    accel: Accel
    reason: str
    probed: bool = False  # a test boot decided it

    def to_dict(self) -> dict[str, object]:
        return {"accel": self.accel.value, "reason": self.reason, "probed": self.probed}


def qemu_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except FileNotFoundError:
        raise MachineError(f"{binary} not found: install qemu-system-x86 (see README quick start)") from None
    first = out.splitlines()[0] if out else ""
    return first.replace("QEMU emulator version ", "").strip() or "unknown"


@functools.cache
def lab_qemu_version(binary: str = "qemu-system-x86_64") -> str:
    """The QEMU version machines run under (asked once per process): recorded with every result."""
    try:
        return qemu_version(binary)
    except (MachineError, OSError, subprocess.SubprocessError):
        return "unknown"


def decide_from_facts(facts: HostFacts, requested: str) -> AccelVerdict | None:
    """The verdict the facts alone give; None when only a test boot can tell."""
    if requested == "tcg":
        return AccelVerdict(Accel.TCG, "forced with --accel tcg")
    if requested == "kvm":
        if not facts.kvm_access:
            raise MachineError("--accel kvm: /dev/kvm is missing or not accessible to this user")
        return AccelVerdict(Accel.KVM, "forced with --accel kvm")
    if requested != "auto":
        raise MachineError(f"--accel {requested!r}: expected auto, kvm or tcg")
    if not facts.kvm_device:
        return AccelVerdict(Accel.TCG, "no /dev/kvm on this host")
    if not facts.kvm_access:
        return AccelVerdict(Accel.TCG, "/dev/kvm is not accessible to this user")
    if facts.kvm_pvm:
        return AccelVerdict(Accel.TCG, "/dev/kvm is PVM (module kvm_pvm): a standard kernel hangs after "
                                       "the setup stage under it, so TCG is used")
    return None


def choose(requested: str, cache: Path, probe_boot: Callable[[], tuple[bool, str]],
           facts: HostFacts | None = None) -> AccelVerdict:
    """Decide; run `probe_boot` (returns booted?, detail) only when facts cannot tell."""
    facts = facts or HostFacts.read()
    verdict = decide_from_facts(facts, requested)
    if verdict is not None:
        return verdict
    store = cache / "accel" / f"{facts.cache_key()}.json"
    if store.is_file():
        saved = json.loads(store.read_text())
        return AccelVerdict(Accel(saved["accel"]), saved["reason"] + " (remembered)", probed=True)
    booted, detail = probe_boot()
    if booted:
        verdict = AccelVerdict(Accel.KVM, f"a KVM test boot reached the guest agent ({detail})", probed=True)
    else:
        verdict = AccelVerdict(Accel.TCG, f"a KVM test boot failed: {detail}; TCG is used", probed=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(verdict.to_dict()) + "\n")
    return verdict
