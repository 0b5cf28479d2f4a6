"""Benchmarks measured the way the issues ask: several runs, median printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

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
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
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


def campaign_throughput(scenario_path: Path, image: Image, accel: AccelVerdict, jobs_list: list[int], work: Path,
                        progress: Callable[[str], None] = lambda _: None) -> dict[str, object]:
    """The same scenario run with each jobs value: crash points per minute and the lab's overhead per case."""
    import statistics
    import time

    from lab.campaign import CampaignContext, NoProgress, new_campaign_id, run_cases
    from lab.cases import expand
    from lab.scenario import load_scenario
    from lab.store.db import ResultsStore

    scenario = load_scenario(scenario_path)
    cases = expand(scenario)
    rows = []
    for jobs in jobs_list:
        store = ResultsStore.open(f"sqlite:///{work}/bench-j{jobs}.db")
        campaign_id = new_campaign_id()
        store.create_campaign(campaign_id=campaign_id, scenario_name=scenario.name, scenario_path=str(scenario_path),
                              scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=image.id,
                              kernel_version=image.kernel_version, accelerator=accel.accel.value, jobs=jobs,
                              cases=[c.to_dict() for c in cases])
        ctx = CampaignContext(campaign_id, image, accel, store, work / f"runs-j{jobs}")
        started = time.monotonic()
        outcomes = run_cases(ctx, cases, jobs, NoProgress())
        wall = time.monotonic() - started
        met = sum(1 for o in outcomes if o.result is not None and o.result.verdict is o.case.expect)
        overheads = [o.overhead_s for o in outcomes if o.result is not None]
        case_walls = [o.wall_s for o in outcomes if o.result is not None]
        rows.append({"jobs": jobs, "cases": len(cases), "met": met, "wall_s": round(wall, 2),
                     "crash_points_per_min": round(len(cases) * 60 / wall, 2),
                     "case_median_s": round(statistics.median(case_walls), 2),
                     "overhead_median_s": round(statistics.median(overheads), 3),
                     "overhead_max_s": round(max(overheads), 3)})
        store.close()
        progress(f"-j {jobs}: {len(cases)} crash points in {wall:.1f} s = {rows[-1]['crash_points_per_min']} per "
                 f"minute; lab overhead per case median {rows[-1]['overhead_median_s']} s")
    return {"scenario": scenario.name, "accelerator": accel.accel.value, "results": rows}
