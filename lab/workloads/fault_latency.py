"""fault-latency: how long the first store to each page of a DAX mapping takes.

Reproduces the measurement of the synchronous page fault series' cover letter
(MAP_SYNC, Linux 4.15): one 8-byte store to each of N pages of a fresh
mapping, each timed, the file set up as `file` says, mapped with
MAP_SHARED_VALIDATE|MAP_SYNC or plain MAP_SHARED, with or without a
background file copy loading the same filesystem. With MAP_SYNC a fault
that allocates (or converts) a block waits for the filesystem to commit
that metadata before the page is mapped writeable, so it costs a
journal/log commit; without, it does not. The file modes:

- empty: ftruncate to size; every first store allocates a block.
- fallocate: unwritten extents; every first store converts one to written,
  a metadata change MAP_SYNC must commit.
- written: zeros written through write(2) and fsync'd; a first store needs
  no metadata, so MAP_SYNC costs what plain does. This is the cover letter's
  "preallocated" file (10 vs 10 us).

Records stored before `file` existed carry `prealloc` (true: fallocate,
false: empty); they read back as those modes.

The helper first takes a few untimed faults on a scratch file set up and
mapped like the measured one: under TCG the first run of the fault path's
kernel code is translated, which cost the first samples milliseconds each.

This kind measures and does not judge the numbers: PASS means measured (the
kernel-log oracle still applies), a measurement that could not be taken is
INFRA-ERROR, a guest that stopped answering is HANG. The guest helper is
images/guest/faultlat.c; the statistics are lab/latency_stats.py, the
comparison with the published figures is rendered by lab/report/latency.py.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lab.errors import AgentTimeout, ConfigError, GuestError, LabError
from lab.guest.agent import CommandResult, RunHandle
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.latency_stats import FileMode, histogram, summarize
from lab.oracles.finding import Finding
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.machine import Machine
from lab.workloads.base import CheckSpec, WorkloadKind, json_lines, params_as, stderr_tail
from lab.runner.check import BaseCheck
from lab.runner.guest_run import GuestRun, RunHooks, WorkloadResult, run_guarded

NAME = "fault-latency"
HELPER = "faultlat"
WORKLOAD_FILE = "faultlat.dat"
COPY_SRC, COPY_DST = "faultlat-copy.src", "faultlat-copy.dst"
COPY_MIB = 16  # the background copy's file: large enough to keep copying through the whole measurement
COPY_START_TIMEOUT_S = 120.0  # writing the source file and the first copy chunk, under TCG
COPY_STOP_TIMEOUT_S = 30.0
MEASURE_BASE_TIMEOUT_S = 120.0
MEASURE_PER_PAGE_S = 0.05  # under TCG with load a fault rarely takes 20 ms; this allows 50


class FaultLatencyParams(BaseModel):
    """The [workload]/[matrix] keys of a fault-latency scenario (besides fs and dax)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pages: int = Field(default=512, ge=1, le=65536, description="pages of the mapping; one timed first store each")
    file: FileMode = Field(default="empty", description="the file before mapping: empty (ftruncate), fallocate "
                           "(unwritten extents) or written (zeros written through write(2), fsync'd)")
    map_sync: bool = Field(default=True, description="MAP_SHARED_VALIDATE|MAP_SYNC (true) or plain MAP_SHARED")
    background_copy: bool = Field(default=False, description="a file copy loops on the same filesystem meanwhile")

    @model_validator(mode="before")
    @classmethod
    def _legacy_prealloc(cls, data: Any) -> Any:
        """Stored cases from before `file` carry `prealloc`: true was fallocate, false empty."""
        if isinstance(data, dict) and "prealloc" in data:
            data = dict(data)
            prealloc = data.pop("prealloc")
            if not isinstance(prealloc, bool):
                raise ValueError(f"prealloc (the old spelling of file) must be true or false, got {prealloc!r}")
            if "file" in data:
                raise ValueError("give file, or the old prealloc, not both")
            data["file"] = "fallocate" if prealloc else "empty"
        return data

    def argv(self, path: str) -> list[str]:
        argv = [HELPER, "measure", "--file", path, "--pages", str(self.pages), "--setup", self.file]
        if not self.map_sync:
            argv.append("--no-map-sync")
        return argv

    def measure_timeout(self) -> float:
        return MEASURE_BASE_TIMEOUT_S + self.pages * MEASURE_PER_PAGE_S


def copy_argv(mountpoint: str) -> list[str]:
    return [HELPER, "copy", "--src", f"{mountpoint}/{COPY_SRC}", "--dst", f"{mountpoint}/{COPY_DST}",
            "--mib", str(COPY_MIB)]


@dataclass(frozen=True)
class FaultLatencyCheck(BaseCheck):
    """One cell's measurement: pure data."""

    params: FaultLatencyParams

    KIND: ClassVar[str] = NAME
    PARAMS: ClassVar[type[BaseModel]] = FaultLatencyParams


def check_from_dict(data: dict[str, Any]) -> FaultLatencyCheck:
    """The inverse of FaultLatencyCheck.to_dict (old records' `prealloc` is read by the params model)."""
    return FaultLatencyCheck.from_dict(data)


def make_check(spec: CheckSpec) -> FaultLatencyCheck:
    if spec.crash is not None:
        raise ConfigError(f"the {NAME} workload does not cut the power: remove the [crash] section")
    if spec.dax is not DaxMode.ALWAYS:
        raise ConfigError(f"the {NAME} workload times DAX page faults: dax must be 'always', "
                          f"got {spec.dax.value!r}")
    params = params_as(FaultLatencyParams, spec.params)
    return FaultLatencyCheck(spec.fs, spec.dax, params, shape=spec.shape, seed=spec.seed)


# -- judging the helper's output (pure) ------------------------------------------------------

def metrics_of(done: dict[str, Any], params: FaultLatencyParams, fs: Filesystem) -> dict[str, Any]:
    samples = [int(ns) for ns in done["samples_ns"]]
    buckets = histogram(samples)
    return {
        "cell": {"fs": fs.value, "file": params.file, "map_sync": params.map_sync,
                 "background_copy": params.background_copy, "pages": params.pages},
        "summary": summarize(samples).to_dict(),
        "histogram": [b.to_dict() for b in buckets],
        "histogram_text": [b.text() for b in buckets],
        "faults": done.get("faults"),
        "huge": done.get("huge"),
        "warmup": done.get("warmup"),
        "clock_overhead_ns": done.get("clock_overhead_ns"),
        "samples_ns": samples,
    }


def judge_measurement(outcome: CommandResult, params: FaultLatencyParams,
                      fs: Filesystem) -> tuple[list[Finding], dict[str, Any]]:
    """Findings and metrics from the `faultlat measure` run."""
    lines = json_lines(outcome.stdout)
    done = next((d for d in lines if d.get("event") == "done"), None)
    mmap = next((d for d in lines if d.get("event") == "mmap"), None)
    if outcome.timed_out:
        return [Finding("measurement", Verdict.HANG,
                        f"the measurement did not finish within its {params.measure_timeout():g} s deadline "
                        f"({'mapped' if mmap and mmap.get('ok') else 'not even mapped'})",
                        {"stderr": stderr_tail(outcome.stderr)})], {}
    if mmap is not None and not mmap.get("ok"):
        return [Finding("measurement", Verdict.INFRA_ERROR,
                        f"nothing measured: mmap{' with MAP_SYNC' if params.map_sync else ''} failed with "
                        f"{mmap.get('errno')}", {"mmap": mmap})], {}
    samples = done.get("samples_ns") if done else None
    if not outcome.ok or not isinstance(samples, list) or len(samples) != params.pages:
        got = len(samples) if isinstance(samples, list) else 0
        return [Finding("measurement", Verdict.INFRA_ERROR,
                        f"nothing measured: {HELPER} {outcome.describe()} with {got} of {params.pages} samples",
                        {"stderr": stderr_tail(outcome.stderr)})], {}
    assert done is not None  # samples came from it
    metrics = metrics_of(done, params, fs)
    s = metrics["summary"]
    summary = (f"{params.pages} first stores: min {s['min_us']:g} avg {s['avg_us']:g} max {s['max_us']:g} us "
               f"(MAP_SYNC {'on' if params.map_sync else 'off'}, file {params.file}"
               f", {'with' if params.background_copy else 'no'} background copy)")
    details: dict[str, Any] = {"summary": s, "histogram": metrics["histogram_text"]}
    faults = metrics["faults"]
    if isinstance(faults, int) and faults < params.pages:
        details["note"] = (f"only {faults} page faults for {params.pages} pages: some stores did not fault "
                           "(huge mappings?)")
    return [Finding("measurement", Verdict.PASS, summary, details)], metrics


def judge_copy(outcome: CommandResult | None, killed: bool) -> tuple[list[Finding], dict[str, Any]]:
    """The background copy must have been running the whole time (killed by us, not ended by itself)."""
    if outcome is None:
        return [], {}
    rounds = [d for d in json_lines(outcome.stdout) if d.get("event") == "round"]
    info = {"rounds": len(rounds), "bytes": sum(int(d.get("bytes", 0)) for d in rounds), "killed": killed}
    if not killed:
        return [Finding("background-copy", Verdict.INFRA_ERROR,
                        f"the background copy ended by itself during the measurement ({outcome.describe()}): "
                        "the load was not there throughout", {"stderr": stderr_tail(outcome.stderr), **info})], info
    return [], info


# -- running ---------------------------------------------------------------------------------

def _start_copy(machine: Machine, mountpoint: str, measure_timeout: float) -> RunHandle:
    """Start the copy loop and wait until it really copies (its first chunk is written)."""
    since = len(machine.events)
    handle = machine.agent.start(copy_argv(mountpoint),
                                 timeout=COPY_START_TIMEOUT_S + measure_timeout + COPY_STOP_TIMEOUT_S)
    try:
        machine.events.wait_for(lambda e: e.kind == "MARK" and e.arg == "copy-running", COPY_START_TIMEOUT_S,
                                since=since, what="MARK copy-running from the background copy")
    except AgentTimeout:
        if handle.done:  # it failed before copying anything: say why
            result = handle.wait(timeout=COPY_STOP_TIMEOUT_S)
            raise GuestError(f"the background copy never started copying: {result.describe()}; "
                             f"stderr: {stderr_tail(result.stderr)}") from None
        raise
    return handle


def _stop_copy(handle: RunHandle) -> tuple[CommandResult, bool]:
    """Kill the copy; (its result, whether it was still running when we killed it)."""
    running = not handle.done
    handle.kill()
    return handle.wait(timeout=COPY_STOP_TIMEOUT_S), running


def run(check: FaultLatencyCheck, image: Image, accel: AccelVerdict, run_dir: Path,
        hooks: RunHooks) -> WorkloadResult:
    guest = GuestRun(NAME, check, image, accel, run_dir, hooks)
    params = check.params

    def body(g: GuestRun) -> list[Finding]:
        findings: list[Finding] = []
        with g.pmem_machine(check.fs, check.dax) as (machine, mnt):
            copier: RunHandle | None = None
            try:
                if params.background_copy:
                    with g.phase("background"):
                        hooks.progress(f"background copy of a {COPY_MIB} MiB file on {mnt.mountpoint}")
                        copier = _start_copy(machine, mnt.mountpoint, params.measure_timeout())
                hooks.progress(f"timing the first store to each of {params.pages} pages")
                with g.phase("measure"):
                    outcome = machine.agent.run(params.argv(f"{mnt.mountpoint}/{WORKLOAD_FILE}"),
                                                timeout=params.measure_timeout())
            except BaseException:
                if copier is not None:  # best effort: the machine is destroyed next anyway
                    with suppress(LabError):
                        copier.kill()
                raise
            (g.run_dir / "faultlat.out").write_bytes(outcome.stdout)
            measured, metrics = judge_measurement(outcome, params, check.fs)
            findings += measured
            g.result.metrics.update(metrics)
            hang = next((f for f in measured if f.verdict is Verdict.HANG), None)
            if hang is not None:  # no polite poweroff of a guest whose faults stopped finishing
                raise AgentTimeout(hang.summary)
            if copier is not None:
                with g.phase("background"):
                    copy_outcome, killed = _stop_copy(copier)
                copy_findings, info = judge_copy(copy_outcome, killed)
                findings += copy_findings
                g.result.metrics["background"] = info
        return findings

    return run_guarded(guest, body)


KIND = WorkloadKind(
    name=NAME,
    purpose="latency of the first store to each DAX page: MAP_SYNC vs plain, empty vs fallocated vs written, with load",
    params=FaultLatencyParams,
    uses_crash=False,
    make_check=make_check,
    check_from_dict=check_from_dict,
    run=run,
)
