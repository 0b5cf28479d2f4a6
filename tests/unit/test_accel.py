from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import MachineError
from lab.vm.accel import HostFacts, choose, decide_from_facts
from lab.vm.spec import Accel

PVM = HostFacts(kvm_device=True, kvm_access=True, kvm_pvm=True, qemu_version="7.2.22")
REAL_KVM = HostFacts(kvm_device=True, kvm_access=True, kvm_pvm=False, qemu_version="7.2.22")
NO_KVM = HostFacts(kvm_device=False, kvm_access=False, kvm_pvm=False, qemu_version="7.2.22")


def test_pvm_host_falls_back_to_tcg_without_a_probe(tmp_path: Path) -> None:
    def probe() -> tuple[bool, str]:
        raise AssertionError("no test boot needed: the facts decide")

    verdict = choose("auto", tmp_path, probe, PVM)
    assert verdict.accel is Accel.TCG and "PVM" in verdict.reason


def test_no_kvm_device_means_tcg() -> None:
    verdict = decide_from_facts(NO_KVM, "auto")
    assert verdict is not None and verdict.accel is Accel.TCG


def test_forced_choices() -> None:
    assert decide_from_facts(PVM, "tcg").accel is Accel.TCG  # type: ignore[union-attr]
    assert decide_from_facts(PVM, "kvm").accel is Accel.KVM  # type: ignore[union-attr]
    with pytest.raises(MachineError, match="/dev/kvm"):
        decide_from_facts(NO_KVM, "kvm")
    with pytest.raises(MachineError, match="expected auto, kvm or tcg"):
        decide_from_facts(REAL_KVM, "hvf")


def test_real_kvm_is_probed_once_and_remembered(tmp_path: Path) -> None:
    calls: list[int] = []

    def probe() -> tuple[bool, str]:
        calls.append(1)
        return True, "ready in 1.2 s"

    first = choose("auto", tmp_path, probe, REAL_KVM)
    second = choose("auto", tmp_path, probe, REAL_KVM)
    assert first.accel is Accel.KVM and first.probed
    assert second.accel is Accel.KVM and "remembered" in second.reason
    assert len(calls) == 1


def test_failed_probe_means_tcg(tmp_path: Path) -> None:
    verdict = choose("auto", tmp_path, lambda: (False, "no console output after setup within 20 s"), REAL_KVM)
    assert verdict.accel is Accel.TCG and "no console output" in verdict.reason
