"""Lab machines from images: the spec a lab machine gets, and the KVM probe boot."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.errors import ConfigError, LabError
from lab.image.cache import Image
from lab.vm.machine import Machine
from lab.vm.media import create_sparse
from lab.vm.spec import MIB, Accel, MachineSpec, NvdimmSpec, Persistence

GIB = 1024 * MIB
DEFAULT_NVDIMM_SIZE = GIB  # xfs needs >= 300 MB; 1 GiB sparse costs nothing until written


@dataclass(frozen=True)
class MachineShape:
    cpus: int = 2
    memory_mib: int = 1024
    nvdimm_size: int = DEFAULT_NVDIMM_SIZE
    # Which stores a power cut keeps: eadr (every executed store) or adr (a QEMU 10 with the store-
    # tracing plugin: unflushed lines are dropped). The machine's QEMU and argv follow from it.
    persistence: Persistence = Persistence.EADR


def shape_dict(shape: MachineShape) -> dict[str, Any]:
    """A check's machine shape as its to_dict() stores it (the model only when it is not eADR, so
    records from before the ADR model read the same)."""
    data: dict[str, Any] = {"cpus": shape.cpus, "memory_mib": shape.memory_mib, "nvdimm_size": shape.nvdimm_size}
    if shape.persistence is not Persistence.EADR:
        data["persistence"] = shape.persistence.value
    return data


def shape_from_dict(data: dict[str, Any], defaults: MachineShape | None = None) -> MachineShape:
    """The inverse of shape_dict: every key required, or, given `defaults`, taken from them where missing."""
    persistence = Persistence(data.get("persistence", Persistence.EADR.value))
    if defaults is None:
        return MachineShape(cpus=int(data["cpus"]), memory_mib=int(data["memory_mib"]),
                            nvdimm_size=int(data["nvdimm_size"]), persistence=persistence)
    return MachineShape(cpus=int(data.get("cpus", defaults.cpus)),
                        memory_mib=int(data.get("memory_mib", defaults.memory_mib)),
                        nvdimm_size=int(data.get("nvdimm_size", defaults.nvdimm_size)), persistence=persistence)


def ready_timeout(accel: Accel) -> float:
    """How long a guest may take to become ready: TCG is ~10x slower than KVM."""
    return 120.0 if accel is Accel.TCG else 30.0


QEMU_ENV = "PMEMLAB_QEMU"


def eadr_qemu() -> tuple[str, tuple[Path, ...]]:
    """The QEMU eADR machines run, and its data directories: the system's qemu-system-x86_64, or
    $PMEMLAB_QEMU: a path, or `adr` for the ADR model's QEMU (to run or measure the whole lab on it)."""
    choice = os.environ.get(QEMU_ENV, "")
    if not choice:
        return MachineSpec.qemu_binary, ()
    if choice == "adr":
        from lab.adr.qemu import find_adr_qemu

        qemu = find_adr_qemu()
        return str(qemu.binary), qemu.data_dirs
    if not Path(choice).is_file():
        raise ConfigError(f"{QEMU_ENV}={choice!r}: expected the path of a qemu-system-x86_64, or 'adr' for the "
                          "ADR model's QEMU")
    return choice, ()


def lab_spec(image: Image, name: str, workdir: Path, media: list[Path], accel: Accel,
             shape: MachineShape = MachineShape()) -> MachineSpec:
    spec = _spec(image, name, workdir, media, accel, shape)
    if shape.persistence is Persistence.ADR:
        return adr_spec(spec)
    binary, data_dirs = eadr_qemu()
    return replace(spec, qemu_binary=binary, data_dirs=data_dirs) if binary != spec.qemu_binary else spec


def qemu_binary_for(shape: MachineShape) -> str:
    """The QEMU a machine of this shape runs (recorded with its results); the default QEMU's name
    when the ADR model's QEMU is missing (making the machine then says why)."""
    if shape.persistence is Persistence.ADR:
        from lab.adr.qemu import find_adr_qemu

        try:
            return str(find_adr_qemu().binary)
        except ConfigError:
            pass
    try:
        return eadr_qemu()[0]
    except ConfigError:
        return MachineSpec.qemu_binary


def adr_spec(spec: MachineSpec) -> MachineSpec:
    """`spec` on the ADR model's QEMU with the tracing plugin loaded (disarmed); a ConfigError
    before any machine boots when this host lacks them."""
    from lab.adr.plugin import plugin_path
    from lab.adr.qemu import find_adr_qemu

    if spec.accel is not Accel.TCG:
        raise ConfigError("the ADR persistence model traces stores with a TCG plugin: it needs accel tcg, "
                          f"not {spec.accel.value}")
    qemu = find_adr_qemu()
    return replace(spec, qemu_binary=str(qemu.binary), plugin=plugin_path(qemu), data_dirs=qemu.data_dirs)


def _spec(image: Image, name: str, workdir: Path, media: list[Path], accel: Accel,
          shape: MachineShape) -> MachineSpec:
    return MachineSpec(
        name=name,
        kernel=image.kernel,
        initrd=image.initramfs,
        console_log=workdir / f"{name}.console.log",
        cpus=shape.cpus,
        memory_mib=shape.memory_mib,
        nvdimms=tuple(NvdimmSpec(path, shape.nvdimm_size) for path in media),
        accel=accel,
    )


def probe_kvm_boot(image: Image, timeout: float = 20.0) -> tuple[bool, str]:
    """Boot `image` under KVM with a deadline: does a normal kernel really come up?"""
    workdir = Path(tempfile.mkdtemp(prefix="pmemlab-kvm-probe-"))
    try:
        media = workdir / "nvdimm0.img"
        create_sparse(media, DEFAULT_NVDIMM_SIZE)
        spec = lab_spec(image, "kvm-probe", workdir, [media], Accel.KVM)
        started = time.monotonic()
        try:
            with Machine(spec, workdir) as machine:
                machine.wait_ready(timeout)
        except LabError as exc:
            console = spec.console_log.read_text(errors="replace") if spec.console_log.exists() else ""
            tail = console.strip().splitlines()[-1] if console.strip() else "no console output"
            return False, f"{exc.__class__.__name__}: {str(exc).splitlines()[0]} (last console line: {tail!r})"
        return True, f"ready in {time.monotonic() - started:.1f} s"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
