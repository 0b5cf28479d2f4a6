"""Benchmarks measured the way the issues ask: several runs, median printed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lab.image.cache import Image
from lab.vm.accel import AccelVerdict
from lab.vm.boot import lab_spec, ready_timeout
from lab.vm.machine import Machine
from lab.vm.media import create_sparse
from lab.vm.boot import DEFAULT_NVDIMM_SIZE


def boot_times(image: Image, accel: AccelVerdict, runs: int, run_dir: Path,
               progress: Callable[[str], None] = lambda _: None) -> list[float]:
    """Seconds from QEMU launch to the agent's READY, one fresh machine per run."""
    samples: list[float] = []
    for i in range(runs):
        workdir = run_dir / f"boot-{i}"
        workdir.mkdir()
        media = workdir / "nvdimm0.img"
        create_sparse(media, DEFAULT_NVDIMM_SIZE)
        spec = lab_spec(image, f"boot{i}", workdir, [media], accel.accel)
        with Machine(spec, workdir) as machine:
            samples.append(machine.wait_ready(ready_timeout(accel.accel)))
            machine.poweroff(timeout=30)
        media.unlink()
        progress(f"run {i + 1}/{runs}: {samples[-1]:.2f} s")
    return samples
