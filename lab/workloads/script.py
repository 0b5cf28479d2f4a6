"""The script workload kind: bring your own reproducer, cut the power at its events, judge recovery.

A bug report's reproducer (a C program or a busybox shell script) runs on the mounted DAX
filesystem (its first argument is the mountpoint) with no image rebuild: C is compiled
statically on the host (cached by content hash; `#include "pmemlab-repro.h"` gives
pmemlab_ack(n) and pmemlab_mark(name)), a script runs under the guest's busybox sh with the
guest tools on PATH (`pmemlab-event ACK n`, `pmemlab-event MARK name`); either is pushed
through the agent (lab/workloads/script_build.py). The crash strategies are the usual ones:
after ACK k (the scenario says how many ACKs the reproducer emits: `acks`), at a MARK, or a
time offset after a MARK (default "start", emitted just before the reproducer is exec'd).

After recovery, the optional check script runs in the recovery machine: `sh CHECK MOUNTPOINT
LAST_DURABLE_ACK` (-1 when none was read before the cut), against the mounted filesystem; its
exit status and output are the `check-script` finding, beside the recovery mount, fsck and the
kernel log. The sources are part of the case (params `source`, `check_source`): a stored case
or an exported scenario re-runs the same bytes even after the files change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from lab.crash.cut_flow import CrashTrigger, CutCheck, CutPlan, EarlyEnd, PowerCut, PreCut, run_cut_check
from lab.errors import ConfigError
from lab.guest.pmem import PmemMount
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.machine import Machine
from lab.workloads.base import CheckSpec, WorkloadKind, params_as, stderr_tail
from lab.workloads.script_build import UNPACK_AND_CHECK, UNPACK_AND_RUN, compiled, pack

NAME = "script"
START_MARK = "start"
GUEST_PROGRAM = "/tmp/pmemlab-repro"
GUEST_CHECK = "/tmp/pmemlab-check.sh"
CHECK_TIMEOUT_S = 300.0
UNPACK_FAILED = 125  # the wrappers' exit status when the pushed bytes did not unpack
LANGUAGES = {".c": "c", ".sh": "sh"}


class ScriptParams(BaseModel):
    """`script` and `check` are paths (relative to the scenario file); their contents are read into
    `source` and `check_source` when the scenario is loaded, and it is those a case runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    script: str = ""  # the reproducer: NAME.c or NAME.sh
    source: str = ""
    check: str = ""  # optional: a shell script run in the recovery machine
    check_source: str = ""
    acks: int = Field(default=0, ge=0)  # ACKs the reproducer emits (0..acks-1), for ACK crash points
    mark: str = Field(default=START_MARK, pattern=r"^[A-Za-z0-9._:-]+$")  # time offsets count from this MARK
    timeout_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _read_sources(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        base = Path((info.context or {}).get("base_dir", "."))
        for path_key, text_key in (("script", "source"), ("check", "check_source")):
            name = data.get(path_key)
            if isinstance(name, str) and name and not data.get(text_key):
                path = Path(name) if Path(name).is_absolute() else base / name
                try:
                    data[text_key] = path.read_text()
                except (OSError, UnicodeDecodeError) as exc:
                    raise ValueError(f"{path_key} {name!r}: cannot read {path}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
        return data

    @field_validator("script")
    @classmethod
    def _known_language(cls, value: str) -> str:
        if value and Path(value).suffix not in LANGUAGES:
            raise ValueError(f"{value!r}: a reproducer is a C source (.c) or a shell script (.sh)")
        return value

    @field_validator("check")
    @classmethod
    def _check_is_shell(cls, value: str) -> str:
        if value and Path(value).suffix != ".sh":
            raise ValueError(f"{value!r}: the check is a shell script (.sh)")
        return value

    @property
    def language(self) -> str:
        return LANGUAGES[Path(self.script).suffix]


@dataclass(frozen=True)
class ScriptCheck(CutCheck):
    params: ScriptParams

    KIND: ClassVar[str] = NAME
    START_MARK: ClassVar[str] = START_MARK
    PARAMS: ClassVar[type[BaseModel]] = ScriptParams
    WORKLOAD_USES_SEED: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.params.script or not self.params.source:
            raise ConfigError("a script check needs its reproducer: set script = \"REPRO.c\" or \"REPRO.sh\"")
        if self.crash.after_ack is not None and self.crash.after_ack >= self.params.acks:
            raise ConfigError(f"cut after ACK {self.crash.after_ack}: the reproducer emits {self.params.acks} ACKs "
                              f"(acks = {self.params.acks}), so the cut point must be below that")

    @property
    def trigger(self) -> CrashTrigger:
        """Time offsets (and --cut-at-mark, offset 0) count from the params' MARK."""
        return CrashTrigger.from_point(self.crash, self.params.mark)


def make_check(spec: CheckSpec) -> ScriptCheck:
    if spec.crash is None:
        raise ConfigError("a script check needs a crash point")
    return ScriptCheck(spec.fs, spec.dax, params_as(ScriptParams, spec.params), spec.crash, shape=spec.shape,
                       seed=spec.seed)


def program_bytes(params: ScriptParams) -> bytes:
    """What runs in the guest: the compiled C program, or the script itself."""
    if params.language == "c":
        return compiled(params.source, params.script)
    return params.source.encode()


def workload_argv(params: ScriptParams, mountpoint: str) -> list[str]:
    """One agent RUN that unpacks the reproducer, emits the start MARK and execs it on `mountpoint`."""
    return ["sh", "-c", UNPACK_AND_RUN, "sh", params.language, GUEST_PROGRAM, START_MARK, mountpoint,
            *pack(program_bytes(params), params.script)]


def check_finding(exit_code: int | None, timed_out: bool, stdout: bytes, stderr: bytes, name: str) -> Finding:
    """The check script's verdict: exit 0 PASS, any other exit VIOLATION, no exit in time HANG."""
    output = (stdout + stderr)[-600:].decode("utf-8", "replace").strip()
    details = {"exit_code": exit_code, "output": output}
    if timed_out:
        return Finding("check-script", Verdict.HANG, f"{name} did not finish within {CHECK_TIMEOUT_S:.0f} s", details)
    if exit_code == UNPACK_FAILED and b"pmemlab: unpacking" in stderr:
        return Finding("check-script", Verdict.INFRA_ERROR, f"{name} could not be pushed: {stderr_tail(stderr)}",
                       details)
    if exit_code == 0:
        return Finding("check-script", Verdict.PASS, f"{name} passed" + (f": {output.splitlines()[-1]}"
                                                                         if output else ""), details)
    last = output.splitlines()[-1] if output else "no output"
    return Finding("check-script", Verdict.VIOLATION, f"{name} failed (exit {exit_code}): {last}", details)


# -- the power-cut parts -------------------------------------------------------------------

def _plan(check: ScriptCheck, triggers: tuple[CrashTrigger, ...]) -> CutPlan:
    def argv(mnt: PmemMount) -> list[str]:
        return workload_argv(check.params, mnt.mountpoint)

    return CutPlan(check.fs, check.dax, argv, triggers, early_end=EarlyEnd.CUT_AT_REST,
                   workload_timeout=check.params.timeout_s, keep_capture=check.keep_capture)


def _pre_cut(check: ScriptCheck, pre: PreCut, metrics: dict[str, Any]) -> list[Finding]:
    metrics["acked"] = len(pre.durable)
    metrics["marks"] = pre.marks()
    metrics["finished_first"] = pre.finished_first
    return []


def _judge(check: ScriptCheck, pre: PreCut, machine: Machine, mountpoint: str,
           metrics: dict[str, Any]) -> list[Finding]:
    params = check.params
    if not params.check_source:
        return []
    last = str(pre.durable[-1]) if pre.durable else "-1"
    result = machine.run(["sh", "-c", UNPACK_AND_CHECK, "sh", GUEST_CHECK, mountpoint, last,
                          *pack(params.check_source.encode(), params.check)], timeout=CHECK_TIMEOUT_S, check=False)
    finding = check_finding(result.exit_code, result.timed_out, result.stdout, result.stderr, params.check)
    metrics["check_script"] = finding.details
    return [finding]


POWER_CUT = PowerCut(plan=_plan, pre_cut=_pre_cut, judge=_judge)


def run(check: ScriptCheck, image: Image, accel: AccelVerdict, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    return run_cut_check(NAME, POWER_CUT, check, image, accel, run_dir, hooks)


KIND = WorkloadKind(
    name=NAME,
    purpose="bring your own reproducer (C or shell): power cuts at its ACK/MARK events, its check after recovery",
    params=ScriptParams,
    uses_crash=True,
    make_check=make_check,
    check_from_dict=ScriptCheck.from_dict,
    run=run,
    ack_count=lambda params: params_as(ScriptParams, params).acks,
    power_cut=POWER_CUT,
)
