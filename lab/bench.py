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
from lab.guest.pmem import Filesystem


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


def mapsync_times(image: Image, accel: AccelVerdict, fs: Filesystem, records: int, runs: int, run_dir: Path,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, object]:
    """Full crash points, one after another: wall time, per-phase medians, capture time."""
    import statistics
    import time

    from lab.crash.mapsync_check import MapsyncCheck, run_mapsync_check
    from lab.crash.point import CrashPoint
    from lab.workloads.mapsync import MapsyncParams

    walls: list[float] = []
    phases: dict[str, list[float]] = {}
    captures: list[float] = []
    verdicts: list[str] = []
    method = ""
    check = MapsyncCheck(fs=fs, workload=MapsyncParams(records=records), crash=CrashPoint(after_ack=records * 3 // 5))
    for i in range(runs):
        workdir = run_dir / f"run-{i}"
        workdir.mkdir()
        started = time.monotonic()
        result = run_mapsync_check(check, image, accel, workdir)
        walls.append(time.monotonic() - started)
        verdicts.append(result.verdict.value)
        for name, seconds in result.timings.items():
            phases.setdefault(name, []).append(seconds)
        for capture in result.captures:
            captures.append(capture.seconds)
            method = capture.method
        progress(f"run {i + 1}/{runs}: {walls[-1]:.2f} s, {result.verdict.value}")
    return {
        "runs": runs, "fs": fs.value, "records": records, "accelerator": accel.accel.value,
        "min_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3), "max_s": round(max(walls), 3),
        "samples_s": [round(w, 3) for w in walls], "verdicts": verdicts,
        "phase_median_s": {k: round(statistics.median(v), 3) for k, v in phases.items()},
        "capture_median_s": round(statistics.median(captures), 4) if captures else None,
        "capture_method": method, "nvdimm_bytes": check.shape.nvdimm_size, "run_dir": str(run_dir),
    }
