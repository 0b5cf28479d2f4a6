"""QEMU argument lists, byte-for-byte against golden files.

Regenerate after an intended change: PMEMLAB_REGEN_GOLDEN=1 pytest tests/unit/test_qemu_argv.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.vm.spec import MIB, Accel, ChannelFds, MachineSpec, NvdimmSpec, ShareSpec, qemu_argv

GOLDEN = Path(__file__).parent / "golden"
FDS = ChannelFds(qmp=10, agent=11, events=12)


def _spec(**overrides: object) -> MachineSpec:
    base: dict[str, object] = dict(
        name="t", kernel=Path("/img/vmlinuz"), initrd=Path("/img/initramfs.cpio.gz"),
        console_log=Path("/run/t.console.log"),
        nvdimms=(NvdimmSpec(Path("/run/nvdimm0.img"), 1024 * MIB),),
    )
    base.update(overrides)
    return MachineSpec(**base)  # type: ignore[arg-type]


CASES = {
    "tcg-one-nvdimm": _spec(),
    "kvm-one-nvdimm": _spec(accel=Accel.KVM),
    "tcg-two-nvdimms-label": _spec(cpus=4, memory_mib=2048, nvdimms=(
        NvdimmSpec(Path("/run/a.img"), 512 * MIB),
        NvdimmSpec(Path("/run/b.img"), 256 * MIB, label_size=128 * 1024))),
    "tcg-9p-share": _spec(shares=(ShareSpec(Path("/srv/share"), "hostshare"),), cmdline=("quiet",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_argv_matches_golden(name: str) -> None:
    got = "\n".join(qemu_argv(CASES[name], FDS)) + "\n"
    path = GOLDEN / f"{name}.argv"
    if os.environ.get("PMEMLAB_REGEN_GOLDEN"):
        path.write_text(got)
    assert path.read_text() == got


def test_maxmem_covers_nvdimms() -> None:
    spec = CASES["tcg-two-nvdimms-label"]
    assert spec.max_memory_mib == 2048 + 512 + 256
    assert "-m" in qemu_argv(spec, FDS)
    assert "2048M,slots=2,maxmem=2816M" in qemu_argv(spec, FDS)


def test_nvdimm_size_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="multiple of its align"):
        NvdimmSpec(Path("/x"), 3 * MIB)
