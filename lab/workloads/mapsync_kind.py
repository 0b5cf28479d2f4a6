"""The mapsync workload kind: a MAP_SYNC workload, a power cut after an ACK, recovery and oracles.

The check and its runner live in lab/crash/mapsync_check.py and the guest
helper's command line in lab/workloads/mapsync.py; this module is the
catalog entry: what a scenario's [workload] and [matrix] may set, and how a
case's check is built, stored and run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lab.crash.mapsync_check import MapsyncCheck, run_mapsync_check
from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.vm.accel import AccelVerdict
from lab.workloads.base import CheckSpec, RunHooks, WorkloadKind, shape_from_dict
from lab.workloads.mapsync import PAGE, MapsyncParams

MIN_RECORD_SIZE = 64  # the record header and checksum need 40 bytes; the helper wants >= 64
_DEFAULTS = MapsyncParams()

Records = Annotated[int, Field(ge=1)]
RecordSize = Annotated[int, Field(ge=MIN_RECORD_SIZE, le=PAGE, multiple_of=8)]
PerPage = Annotated[int, Field(ge=1, le=PAGE // MIN_RECORD_SIZE)]
DelayUs = Annotated[int, Field(ge=0)]


class MapsyncScenarioParams(BaseModel):
    """The MapsyncParams fields a scenario sets (file_size is a command-line option only).

    Per-field constraints sit in the annotations, so every [matrix] value is checked
    against them too; the cross-field rule (records fit a page) is checked per cell.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    records: Records = _DEFAULTS.records
    record_size: RecordSize = _DEFAULTS.record_size
    records_per_page: PerPage = _DEFAULTS.records_per_page
    prealloc: bool = _DEFAULTS.prealloc
    map_sync: bool = _DEFAULTS.map_sync
    delay_us: DelayUs = _DEFAULTS.delay_us

    @field_validator("records_per_page")
    @classmethod
    def _records_fit_a_page(cls, per_page: int, info: ValidationInfo) -> int:
        size = info.data.get("record_size")  # absent when record_size itself was invalid
        if size is not None and per_page * size > PAGE:
            raise ValueError(f"records_per_page = {per_page} x record_size = {size} is {per_page * size} bytes, "
                             f"more than a {PAGE}-byte page")
        return per_page


def _params(params: BaseModel) -> MapsyncScenarioParams:
    if not isinstance(params, MapsyncScenarioParams):
        raise TypeError(f"mapsync takes MapsyncScenarioParams, got {type(params).__name__}")
    return params


def make_check(spec: CheckSpec) -> MapsyncCheck:
    if spec.crash is None:
        raise ValueError("a mapsync check needs a crash point")
    return MapsyncCheck(fs=spec.fs, dax=spec.dax, workload=MapsyncParams(**_params(spec.params).model_dump()),
                        crash=spec.crash, shape=spec.shape)


def check_from_dict(data: dict[str, Any]) -> MapsyncCheck:
    """The inverse of MapsyncCheck.to_dict (keep_capture is a run option, not part of a case)."""
    return MapsyncCheck(fs=Filesystem(data["fs"]), dax=DaxMode(data["dax"]),
                        workload=MapsyncParams(**data["workload"]), crash=CrashPoint(**data["crash"]),
                        shape=shape_from_dict(data))


def _run(check: MapsyncCheck, image: Image, accel: AccelVerdict, run_dir: Path, hooks: RunHooks) -> Any:
    return run_mapsync_check(check, image, accel, run_dir, hooks=hooks)


KIND = WorkloadKind(
    name="mapsync",
    purpose="MAP_SYNC power cuts: every record acknowledged after its store and flush survives the cut",
    params=MapsyncScenarioParams,
    uses_crash=True,
    make_check=make_check,
    check_from_dict=check_from_dict,
    run=_run,
    ack_count=lambda params: _params(params).records,
)
