"""`pmemlab vm smoke`: boot, pmem setup, DAX mount verified, agent round trip, clean shutdown."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import GuestError
from lab.guest import pmem
from lab.guest.console import scan_console
from lab.image.cache import Image
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape, lab_spec, ready_timeout
from lab.vm.machine import Machine
from lab.vm.media import create_sparse


@dataclass
class SmokeResult:
    ok: bool
    fs: str
    dax: bool
    accelerator: str
    accelerator_reason: str
    boot_to_ready_s: float
    kernel_version: str
    image_id: str
    clean_shutdown: bool
    round_trip_ok: bool
    kernel_problems: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agent_round_trip(machine: Machine) -> bool:
    """A command's output and a non-zero exit status both come back intact."""
    result = machine.run(["sh", "-c", "echo pmemlab-out; echo pmemlab-err >&2; exit 7"], timeout=20, check=False)
    return (result.exit_code == 7 and result.stdout == b"pmemlab-out\n"
            and result.stderr == b"pmemlab-err\n")


def smoke(image: Image, fs: pmem.Filesystem, accel: AccelVerdict, run_dir: Path,
          shape: MachineShape = MachineShape()) -> SmokeResult:
    timings: dict[str, float] = {}
    media = run_dir / "nvdimm0.img"
    create_sparse(media, shape.nvdimm_size)
    spec = lab_spec(image, "smoke", run_dir, [media], accel.accel, shape)
    with Machine(spec, run_dir) as machine:
        boot_s = machine.wait_ready(ready_timeout(accel.accel))
        timings["boot_to_ready"] = boot_s
        mark = time.monotonic()
        mnt = pmem.setup(machine.agent, fs)
        timings["pmem_setup"] = time.monotonic() - mark
        mark = time.monotonic()
        dax = bool(mnt.dax_active)
        round_trip = agent_round_trip(machine)
        if not round_trip:
            raise GuestError("agent round trip failed: output or exit status did not come back intact")
        pmem.umount(machine.agent, mnt.mountpoint)
        timings["checks"] = time.monotonic() - mark
        mark = time.monotonic()
        clean = machine.poweroff(timeout=30)
        timings["shutdown"] = time.monotonic() - mark
    problems = [p.to_dict() for p in scan_console(spec.console_log.read_text(errors="replace"))]
    return SmokeResult(
        ok=dax and round_trip and clean and not problems,
        fs=fs.value, dax=dax, accelerator=accel.accel.value, accelerator_reason=accel.reason,
        boot_to_ready_s=round(boot_s, 3), kernel_version=image.kernel_version, image_id=image.id,
        clean_shutdown=clean, round_trip_ok=round_trip, kernel_problems=problems,
        timings={k: round(v, 3) for k, v in timings.items()}, run_dir=str(run_dir),
    )
