"""Benchmarks measured the way the issues ask: several runs, median printed."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from lab.guest.pmem import Filesystem
from lab.image.cache import Image
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.runner.machines import BootMode, MachineMaker, SnapshotRequest, ready_snapshot
from lab.vm.accel import AccelVerdict
from lab.vm.boot import DEFAULT_NVDIMM_SIZE, QEMU_ENV, MachineShape, eadr_qemu, lab_spec, ready_timeout
from lab.vm.machine import Machine
from lab.vm.media import create_sparse
from lab.vm.spec import Persistence


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


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _mapsync_run(image: Image, accel: AccelVerdict, fs: Filesystem, records: int, boot: BootMode,
                 workdir: Path, shape: MachineShape = MachineShape(), flush: str = "auto",
                 adr_states: int = 0) -> tuple[float, WorkloadResult]:
    from lab.crash.point import CrashPoint
    from lab.guest.pmem import DaxMode
    from lab.workloads import mapsync_kind
    from lab.workloads.mapsync import MapsyncParams

    check = mapsync_kind.MapsyncCheck(fs, DaxMode.ALWAYS, MapsyncParams(records=records, flush=flush),  # type: ignore[arg-type]
                                      CrashPoint(after_ack=records * 3 // 5), shape=shape, adr_states=adr_states)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    result = mapsync_kind.run(check, image, accel, workdir, RunHooks(boot=boot))
    return time.monotonic() - started, result


def warm_snapshots(image: Image, accel: AccelVerdict, shape: MachineShape, filesystems: list[Filesystem]) -> float:
    """Build (or find) the ready snapshots a benchmark uses, so its timed runs measure restores only."""
    started = time.monotonic()
    for fs in filesystems:
        ready_snapshot(SnapshotRequest(image, accel.accel, shape, fs))
    return round(time.monotonic() - started, 3)


def mapsync_paths(image: Image, accel: AccelVerdict, fs: Filesystem, records: int, runs: int, run_dir: Path,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Full crash points on both paths, interleaved (cold, snapshot, cold, ...) so host drift hits
    both alike: wall medians, per-phase medians, the speedup cold/snapshot."""
    warm_s = warm_snapshots(image, accel, MachineShape(), [fs])
    paths: dict[str, dict[str, Any]] = {}
    samples: dict[BootMode, list[tuple[float, WorkloadResult]]] = {BootMode.COLD: [], BootMode.SNAPSHOT: []}
    for i in range(runs):
        for boot in (BootMode.COLD, BootMode.SNAPSHOT):
            wall, result = _mapsync_run(image, accel, fs, records, boot, run_dir / f"{boot.value}-{i}")
            samples[boot].append((wall, result))
            progress(f"run {i + 1}/{runs} {boot.value}: {wall:.2f} s, {result.verdict.value}")
    for boot, runs_of in samples.items():
        walls = [w for w, _ in runs_of]
        phases: dict[str, list[float]] = {}
        for _, result in runs_of:
            for name, seconds in result.timings.items():
                phases.setdefault(name, []).append(seconds)
        paths[boot.value] = {"min_s": round(min(walls), 3), "median_s": _median(walls), "max_s": round(max(walls), 3),
                             "samples_s": [round(w, 3) for w in walls],
                             "verdicts": [r.verdict.value for _, r in runs_of],
                             "phase_median_s": {k: _median(v) for k, v in phases.items()}}
    return {"runs": runs, "fs": fs.value, "records": records, "accelerator": accel.accel.value,
            "snapshot_ready_s": warm_s, "cold": paths["cold"], "snapshot": paths["snapshot"],
            "speedup": round(paths["cold"]["median_s"] / paths["snapshot"]["median_s"], 2), "run_dir": str(run_dir)}


def mapsync_models(image: Image, accel: AccelVerdict, fs: Filesystem, records: int, runs: int, run_dir: Path,
                   flush: str = "auto", adr_states: int = 8,
                   progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """eADR beside ADR on restored machines, interleaved: wall and per-phase medians, the armed
    window's slowdown (the workload phase, traced only under ADR), and ADR crash states per cut and
    per second of state generation (dump, parse, images)."""
    shapes = {"eadr": MachineShape(), "adr": MachineShape(persistence=Persistence.ADR)}
    warm_s = {name: warm_snapshots(image, accel, shape, [fs]) for name, shape in shapes.items()}
    samples: dict[str, list[tuple[float, WorkloadResult]]] = {name: [] for name in shapes}
    for i in range(runs):
        for name, shape in shapes.items():
            wall, result = _mapsync_run(image, accel, fs, records, BootMode.SNAPSHOT, run_dir / f"{name}-{i}", shape,
                                        flush, adr_states if name == "adr" else 0)
            samples[name].append((wall, result))
            progress(f"run {i + 1}/{runs} {name}: {wall:.2f} s, {result.verdict.value}")
    models: dict[str, dict[str, Any]] = {}
    for name, runs_of in samples.items():
        walls = [w for w, _ in runs_of]
        phases: dict[str, list[float]] = {}
        for _, result in runs_of:
            for phase, seconds in result.timings.items():
                phases.setdefault(phase, []).append(seconds)
        models[name] = {"median_s": _median(walls), "samples_s": [round(w, 3) for w in walls],
                        "verdicts": [r.verdict.value for _, r in runs_of],
                        "phase_median_s": {k: _median(v) for k, v in phases.items()}}
    states = [len(r.metrics["crash_state"]["states"]) for _, r in samples["adr"] if "crash_state" in r.metrics]
    state_s = [r.timings.get("adr_states", 0.0) for _, r in samples["adr"] if "crash_state" in r.metrics]
    lines = [r.metrics["crash_state"]["unpersisted_lines"] for _, r in samples["adr"] if "crash_state" in r.metrics]
    eadr_w = models["eadr"]["phase_median_s"].get("workload") or 0.0
    adr_w = models["adr"]["phase_median_s"].get("workload") or 0.0
    return {"runs": runs, "fs": fs.value, "records": records, "flush": flush, "adr_states": adr_states,
            "accelerator": accel.accel.value, "snapshot_ready_s": warm_s, "eadr": models["eadr"], "adr": models["adr"],
            "armed_window_slowdown": round(adr_w / eadr_w, 2) if eadr_w else None,
            "unpersisted_lines_median": statistics.median(lines) if lines else None,
            "crash_states_per_cut_median": statistics.median(states) if states else None,
            "crash_states_per_second": round(sum(states) / sum(state_s), 1) if sum(state_s) else None,
            "run_dir": str(run_dir)}


def restore_times(image: Image, accel: AccelVerdict, fs: Filesystem, runs: int, run_dir: Path,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Seconds from QEMU's start to the agent's first answer of a machine restored from the ready
    snapshot (each on its own copy of the template media)."""
    warm_s = warm_snapshots(image, accel, MachineShape(), [fs])
    maker = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT)
    samples: list[float] = []
    for i in range(runs):
        workdir = run_dir / f"restore-{i}"
        workdir.mkdir()
        media = maker.fresh_media(workdir / "nvdimm0.img", fs)
        with maker.machine(f"restore{i}", workdir, [media], fs) as machine:
            samples.append(machine.wait_ready(60.0))
            machine.destroy()
        media.unlink()
        progress(f"run {i + 1}/{runs}: {samples[-1]:.3f} s")
    return {"runs": runs, "fs": fs.value, "accelerator": accel.accel.value, "snapshot_ready_s": warm_s,
            "min_s": round(min(samples), 3), "median_s": _median(samples), "max_s": round(max(samples), 3),
            "samples_s": [round(s, 3) for s in samples], "run_dir": str(run_dir)}


def qemu_versions(image: Image, accel: AccelVerdict, fs: Filesystem, records: int, runs: int, run_dir: Path,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The system QEMU beside the ADR model's QEMU (`PMEMLAB_QEMU=adr`), interleaved run by run: a cold
    boot to agent-ready, a restore to the agent's answer, and a full crash point on restored machines
    (eADR, no plugin loaded), so the choice of the lab's one QEMU rests on numbers from one host."""
    choices = {"system": "", "adr-qemu": "adr"}
    saved = os.environ.get(QEMU_ENV)
    found: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, list[float]]] = {n: {"boot": [], "restore": [], "crash_point": []} for n in choices}
    verdicts: dict[str, list[str]] = {n: [] for n in choices}
    try:
        for name, value in choices.items():
            os.environ[QEMU_ENV] = value
            binary, _ = eadr_qemu()
            found[name] = {"binary": binary, "snapshot_ready_s": warm_snapshots(image, accel, MachineShape(), [fs])}
        for i in range(runs):
            for name, value in choices.items():
                os.environ[QEMU_ENV] = value
                base = run_dir / f"{name}-{i}"
                base.mkdir(parents=True)
                samples[name]["boot"] += boot_times(image, accel, 1, base)
                samples[name]["restore"].append(restore_times(image, accel, fs, 1, base)["median_s"])
                wall, result = _mapsync_run(image, accel, fs, records, BootMode.SNAPSHOT, base / "mapsync")
                samples[name]["crash_point"].append(wall)
                verdicts[name].append(result.verdict.value)
                progress(f"run {i + 1}/{runs} {name}: boot {samples[name]['boot'][-1]:.2f} s, restore "
                         f"{samples[name]['restore'][-1]:.3f} s, crash point {wall:.2f} s ({result.verdict.value})")
    finally:
        if saved is None:
            os.environ.pop(QEMU_ENV, None)
        else:
            os.environ[QEMU_ENV] = saved
    out: dict[str, Any] = {"runs": runs, "fs": fs.value, "records": records, "accelerator": accel.accel.value,
                           "run_dir": str(run_dir)}
    for name in choices:
        out[name] = {**found[name], "verdicts": verdicts[name],
                     **{f"{k}_median_s": _median(v) for k, v in samples[name].items()},
                     "samples_s": {k: [round(x, 3) for x in v] for k, v in samples[name].items()}}
    out["ratio_adr_qemu_over_system"] = {k: round(out["adr-qemu"][f"{k}_median_s"] / out["system"][f"{k}_median_s"], 2)
                                         for k in ("boot", "restore", "crash_point")}
    return out


def campaign_throughput(scenario_path: Path, image: Image, accel: AccelVerdict, jobs_list: list[int], work: Path,
                        progress: Callable[[str], None] = lambda _: None, cold_boot: bool = False,
                        cluster: str | None = None, accel_request: str = "auto") -> dict[str, object]:
    """The same scenario run with each jobs value (and on `cluster`, a Dask scheduler's workers): crash
    points per minute and the lab's overhead per case. Ready snapshots are built before the clock starts
    (reported as snapshot_ready_s; a cluster's workers build theirs in a warm-up run of one case each)."""
    from lab.campaign import CampaignContext, NoProgress, new_campaign_id, run_cases
    from lab.cases import expand
    from lab.scenario import load_scenario
    from lab.store.db import ResultsStore

    scenario = load_scenario(scenario_path)
    cases = expand(scenario)
    boot = BootMode.COLD if cold_boot or scenario.cold_boot else BootMode.SNAPSHOT
    warm_s = 0.0
    if boot is BootMode.SNAPSHOT:
        warm_s = warm_snapshots(image, accel, scenario.shape, sorted({scenario.fs(cell) for cell in scenario.cells()}))
    rows: list[dict[str, object]] = []
    runs: list[tuple[str, int]] = [(f"-j {jobs}", jobs) for jobs in jobs_list] + ([("cluster", 0)] if cluster else [])
    for label, jobs in runs:
        store = ResultsStore.open(f"sqlite:///{work}/bench-{label.replace(' ', '')}.db")

        def context(todo: list[Any]) -> CampaignContext:
            campaign_id = new_campaign_id()
            store.create_campaign(campaign_id=campaign_id, scenario_name=scenario.name,
                                  scenario_path=str(scenario_path), scenario_text=scenario.text,
                                  scenario_hash=scenario.content_hash, image_id=image.id,
                                  kernel_version=image.kernel_version, accelerator=accel.accel.value, jobs=jobs,
                                  cases=[c.to_dict() for c in todo])
            return CampaignContext(campaign_id, image, accel, store, work / f"runs-{label.replace(' ', '')}",
                                   boot=boot, cuts_per_run=scenario.cuts_per_run)

        executor = None
        if label == "cluster":
            from lab.cluster.client import ClusterExecutor, connect

            assert cluster is not None
            client = connect(cluster)
            warm = context(cases)
            jobs = ClusterExecutor(warm, client, accel_request).prepare(image.id)
            if boot is BootMode.SNAPSHOT:  # every worker builds its ready snapshots off the clock
                run_cases(warm, cases[:jobs], jobs, NoProgress(),
                          executor=ClusterExecutor(warm, client, accel_request))
            executor = ClusterExecutor(context(cases), client, accel_request)
            ctx = executor.ctx
        else:
            ctx = context(cases)
        started = time.monotonic()
        try:
            outcomes = run_cases(ctx, cases, jobs, NoProgress(), executor=executor)
        finally:
            if executor is not None:
                executor.shutdown()
        wall = time.monotonic() - started
        met = sum(1 for o in outcomes if o.result is not None and o.result.verdict is o.case.expect)
        overheads = [o.overhead_s for o in outcomes if o.result is not None]
        case_walls = [o.wall_s for o in outcomes if o.result is not None]
        rows.append({"run": label, "jobs": jobs, "cases": len(cases), "met": met, "wall_s": round(wall, 2),
                     "crash_points_per_minute": round(len(cases) * 60 / wall, 2),
                     "case_median_s": round(statistics.median(case_walls), 2),
                     "overhead_median_s": round(statistics.median(overheads), 3),
                     "overhead_max_s": round(max(overheads), 3)})
        store.close()
        progress(f"{label} ({jobs} machines): {len(cases)} crash points in {wall:.1f} s = "
                 f"{rows[-1]['crash_points_per_minute']} per minute; lab overhead per case median "
                 f"{rows[-1]['overhead_median_s']} s")
    best = max(rows, key=lambda r: int(str(r["jobs"]))) if rows else {}
    return {"scenario": scenario.name, "accelerator": accel.accel.value, "boot": boot.value,
            "snapshot_ready_s": warm_s, "crash_points_per_minute": best.get("crash_points_per_minute"),
            "results": rows}
