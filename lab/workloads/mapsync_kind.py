"""The mapsync workload kind: MAP_SYNC stores acknowledged one by one, a power cut, recovery,
and MAP_SYNC's promise as the judge.

Before the cut: the helper's `{"event":"mmap"}` line is the mmap contract finding (MAP_SYNC on a
DAX file succeeds; on a non-DAX file EOPNOTSUPP, mmap(2)). A helper that fails because mmap was
refused as documented is judged by that finding alone: there is nothing to recover. After the
cut: every record whose ACK the host read before it issued the freeze must be intact in the
recovered file (lab/oracles/persistence.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from lab.crash.cut_flow import CrashTrigger, CutCheck, CutPlan, EarlyEnd, PowerCut, PreCut, read_file, run_cut_check
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.agent import CommandResult
from lab.guest.pmem import DaxMode, Filesystem, PmemMount
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.oracles.persistence import check_persistence
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import shape_from_dict
from lab.vm.spec import Persistence
from lab.vm.machine import Machine
from lab.workloads.base import CheckSpec, WorkloadKind, json_lines, params_as
from lab.workloads.mapsync import WORKLOAD_FILE, MapsyncParams

NAME = "mapsync"
START_MARK = "mmap-ok"  # a time-offset crash point counts from the helper's successful mmap
EXPECTED_NON_DAX_ERRNO = "EOPNOTSUPP"  # mmap(2): MAP_SYNC on a file that does not support it


@dataclass(frozen=True)
class MapsyncCheck(CutCheck):
    params: MapsyncParams

    KIND: ClassVar[str] = NAME
    START_MARK: ClassVar[str] = START_MARK
    PARAMS: ClassVar[type[BaseModel]] = MapsyncParams
    WORKLOAD_USES_SEED: ClassVar[bool] = False  # crash points of one cell share a workload run

    def __post_init__(self) -> None:
        self.crash.validate_for(self.params.records)


def make_check(spec: CheckSpec) -> MapsyncCheck:
    if spec.crash is None:
        raise ConfigError("a mapsync check needs a crash point")
    adr = spec.shape.persistence is Persistence.ADR
    return MapsyncCheck(spec.fs, spec.dax, params_as(MapsyncParams, spec.params), spec.crash, shape=spec.shape,
                        seed=spec.seed, adr_states=spec.adr_states if adr else 0)


def check_from_dict(data: dict[str, Any]) -> MapsyncCheck:
    """A stored check; records from before mapsync was a power-cut kind (params under "workload",
    no seed) read the same."""
    if "workload" in data and "params" not in data:
        params = MapsyncParams.model_validate(data["workload"])
        return MapsyncCheck(Filesystem(data["fs"]), DaxMode(data["dax"]), params, CrashPoint.from_dict(data["crash"]),
                            shape=shape_from_dict(data))
    return MapsyncCheck.from_dict(data)


# -- judging (pure: unit-tested without QEMU) ------------------------------------------------

def mmap_outcome(stdout: bytes) -> dict[str, Any]:
    """The helper's {"event":"mmap",...} line, if it printed one."""
    return next((data for data in json_lines(stdout) if data.get("event") == "mmap"), {})


def contract_finding(map_sync: bool, mmap: dict[str, Any], file_dax: bool | None) -> Finding | None:
    """What mmap must answer: MAP_SYNC on a DAX file succeeds, on a non-DAX file EOPNOTSUPP."""
    if not map_sync or not mmap:
        return None
    got = "success" if mmap.get("ok") else str(mmap.get("errno"))
    expected = "success" if file_dax else EXPECTED_NON_DAX_ERRNO
    what = "DAX" if file_dax else "non-DAX"
    details = {"expected": expected, "got": got, "file_dax": file_dax}
    if got == expected:
        return Finding("mmap-contract", Verdict.PASS, f"MAP_SYNC mmap on a {what} file: {got}, as mmap(2) defines",
                       details)
    return Finding("mmap-contract", Verdict.VIOLATION, f"MAP_SYNC mmap on a {what} file: expected {expected}, "
                   f"got {got}", details)


# -- the power-cut parts -------------------------------------------------------------------

def _plan(check: MapsyncCheck, triggers: tuple[CrashTrigger, ...]) -> CutPlan:
    mounts: list[PmemMount] = []

    def argv(mnt: PmemMount) -> list[str]:
        mounts.append(mnt)
        return check.params.argv(f"{mnt.mountpoint}/{WORKLOAD_FILE}")

    def judge_failure(result: CommandResult) -> list[Finding] | None:
        """mmap refused as mmap(2) documents (or against it): the contract finding is the verdict."""
        mmap = mmap_outcome(result.stdout)
        if not mmap or mmap.get("ok"):
            return None  # it failed after a successful mmap: a lab or helper failure
        finding = contract_finding(check.params.map_sync, mmap, mounts[-1].dax_active if mounts else None)
        return [finding] if finding is not None else None

    # A workload that finished before a time-offset crash point is cut at rest: every record it
    # acknowledged must then survive (ACK crash points are always reached: validate_for).
    return CutPlan(check.fs, check.dax, argv, triggers, early_end=EarlyEnd.CUT_AT_REST,
                   judge_failure=judge_failure, keep_capture=check.keep_capture)


def _pre_cut(check: MapsyncCheck, pre: PreCut, metrics: dict[str, Any]) -> list[Finding]:
    mmap = mmap_outcome(pre.stdout)
    metrics["mmap"] = mmap
    metrics["acked"] = len(pre.durable)
    finding = contract_finding(check.params.map_sync, mmap, pre.mount.dax_active)
    return [finding] if finding is not None else []


def _judge(check: MapsyncCheck, pre: PreCut, machine: Machine, mountpoint: str,
           metrics: dict[str, Any]) -> list[Finding]:
    read = read_file(machine, f"{mountpoint}/{WORKLOAD_FILE}")
    data = read.check().stdout if read is not None else b""  # a missing file: every record lost
    persistence = check_persistence(data, pre.durable, check.params.layout, check.params.records)
    metrics["persistence"] = {"survived": persistence.survived, "lost": persistence.lost,
                              "corrupt": persistence.corrupt, "file_size": persistence.file_size}
    return [persistence.finding()]


POWER_CUT = PowerCut(plan=_plan, pre_cut=_pre_cut, judge=_judge)


def run(check: MapsyncCheck, image: Image, accel: AccelVerdict, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    return run_cut_check(NAME, POWER_CUT, check, image, accel, run_dir, hooks)


KIND = WorkloadKind(
    name=NAME,
    purpose="MAP_SYNC power cuts: every record acknowledged after its store and flush survives the cut",
    params=MapsyncParams,
    uses_crash=True,
    make_check=make_check,
    check_from_dict=check_from_dict,
    run=run,
    ack_count=lambda params: params_as(MapsyncParams, params).records,
    power_cut=POWER_CUT,
)
