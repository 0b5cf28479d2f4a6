"""What every workload kind provides, and the shared machinery for running one.

A workload kind (mapsync, fault-latency, mmap contract, ...) is a small
entry in the catalog (lab/workloads/catalog.py): its parameter model (the
keys a scenario's [workload] and [matrix] may use, besides fs and dax),
whether it cuts the power, how to build a check (pure data) for one case,
and how to run that check. Scenarios, cases, the campaign runner, the store
and the reports only talk to kinds through this interface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Sequence, TypeVar

from pydantic import BaseModel

from lab.crash.cut_flow import PowerCut
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape

if TYPE_CHECKING:
    from lab.store.records import CaseRecord

STDERR_TAIL = 600  # bytes of a helper's stderr quoted in a finding

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class CheckSpec:
    """What a scenario cell gives a kind to build its check from."""

    fs: Filesystem
    dax: DaxMode
    params: BaseModel
    crash: CrashPoint | None
    shape: MachineShape
    seed: int
    adr_states: int = 0  # ADR crash states beyond adr:drop-all ([crash] adr_states)


C = TypeVar("C")  # a kind's check type


@dataclass(frozen=True)
class WorkloadKind(Generic[C]):
    name: str
    purpose: str  # one line, for `pmemlab scenarios list`
    params: type[BaseModel]  # pydantic model (extra keys forbidden, every field defaulted)
    uses_crash: bool  # a [crash] section is required (True) or refused (False)
    make_check: Callable[[CheckSpec], C]
    check_from_dict: Callable[[dict[str, Any]], C]
    run: Callable[[C, Image, AccelVerdict, Path, RunHooks], WorkloadResult]
    # For ack-based crash strategies: how many ACK indices the workload emits with these params.
    ack_count: Callable[[BaseModel], int] | None = None
    # For kinds that cut the power: their parts for the power-cut pipeline (lab/crash/cut_flow.py),
    # so a campaign can run one workload for several crash points.
    power_cut: PowerCut | None = None
    # Optional scenario-specific section of the campaign HTML report, from this kind's stored cases
    # (and a directory beside the page for files it links); the CLI hands it to lab.report.html.
    render_html: Callable[[Sequence[CaseRecord], Path], str] | None = None


# -- the pieces every kind's check and judge use ---------------------------------------------

def json_lines(stdout: bytes | str) -> list[dict[str, Any]]:
    """The JSON objects among a helper's stdout lines; other lines are skipped (a power cut can
    leave the last one torn)."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def stderr_tail(data: bytes) -> str:
    """The end of a helper's stderr, as text for a finding."""
    return data[-STDERR_TAIL:].decode("utf-8", "replace").strip()


def params_as(model: type[P], params: BaseModel) -> P:
    """A scenario cell's params as the kind's own model: as they are, or validated from their fields."""
    return params if isinstance(params, model) else model.model_validate(params.model_dump())


def require_kind(data: dict[str, Any], name: str) -> None:
    """A stored check names its kind (or none, from before kinds were stored): it must be `name`."""
    if data.get("kind", name) != name:
        raise ConfigError(f"not a {name} check: kind {data.get('kind')!r}")
