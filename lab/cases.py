"""Cases: one fully specified run of a scenario, as pure data.

`expand` turns a scenario into its cases: cells in matrix order, then repeats,
then crash points (kinds that cut no power have one case per cell and
repeat, crash index 0), then, in cells with persistence = "adr", the crash
states of each cut: slot 0 (adr:drop-all) and `[crash] adr_states` more,
each its own case (its check's adr_state; its name `crash_state`, e.g.
adr:subset-2:seed-1234). The states of one crash point share its workload
run and its cut. Ids and seeds derive only from the scenario's
content and the case's position in it, so the same file always gives the
same cases. A case round-trips through JSON (`to_dict` / `from_dict`): that
is how the results store keeps it and how `pmemlab repro` re-runs it byte
for byte. The check inside is the workload kind's own object (see
lab/workloads/base.py); the kind rebuilds it from its dict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from lab.crash.cut_flow import CutCheck
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.scenario import Scenario, cell_key, load_scenario, parse_scenario
from lab.scenario.pin import ImagePin
from lab.verdict import Verdict
from lab.vm.spec import MIB, Persistence
from lab.runner.guest_run import Check
from lab.workloads.base import CheckSpec
from lab.workloads.catalog import get_kind

CASE_FORMAT = 3  # bump when to_dict changes shape; from_dict reads READABLE_FORMATS
# 1: before workload kinds (every case was mapsync; no "workload", no "params"); 2: before ADR crash states
READABLE_FORMATS = (1, 2, 3)


@dataclass(frozen=True)
class Case:
    id: str  # 12 hex chars, see case_id
    scenario: str  # scenario name
    scenario_hash: str  # sha256 of the scenario file's bytes
    workload: str  # the workload kind's name (lab.workloads.catalog)
    cell: dict[str, Any]  # matrix values, in matrix key order
    cell_key: str  # "fs=ext4 map_sync=false"
    repeat: int
    crash_index: int  # 0 for kinds that cut no power
    seed: int  # see case_seed; random_ack draws its crash point from it, and the kind's check gets it
    expect: Verdict
    image: str  # image ref
    params: BaseModel  # the kind's params model, as the scenario set it for this cell
    check: Check  # the kind's check: to_dict(), shape and, for kinds that cut the power, crash
    oracles: dict[str, bool]

    @property
    def crash(self) -> CrashPoint | None:
        """The check's crash point; None for kinds that cut no power."""
        crash: CrashPoint | None = getattr(self.check, "crash", None)
        return crash

    @property
    def adr_state(self) -> int | None:
        """The ADR crash-state slot this case judges (None: not an ADR case)."""
        slot: int | None = getattr(self.check, "adr_state", None)
        return slot

    @property
    def crash_state(self) -> str | None:
        """Its stable name: adr:drop-all, adr:subset-<k>:seed-<s> (None: not an ADR case)."""
        label: str | None = getattr(self.check, "crash_state", None)
        return label

    def to_dict(self) -> dict[str, Any]:
        return {"format": CASE_FORMAT, "id": self.id, "scenario": self.scenario,
                "scenario_hash": self.scenario_hash, "workload": self.workload, "cell": dict(self.cell),
                "cell_key": self.cell_key, "repeat": self.repeat, "crash_index": self.crash_index,
                "seed": self.seed, "expect": self.expect.value, "image": self.image,
                "params": self.params.model_dump(mode="json"), "check": self.check.to_dict(),
                "oracles": dict(self.oracles), **({"crash_state": self.crash_state} if self.crash_state else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """Rebuild a stored case; ConfigError if the record is malformed or its id does not fit it."""
        try:
            if data["format"] not in READABLE_FORMATS:
                raise ConfigError(f"case record format {data['format']!r}; this lab reads formats "
                                  f"{', '.join(map(str, READABLE_FORMATS))}")
            workload = "mapsync" if data["format"] == 1 else str(data["workload"])
            kind = get_kind(workload)
            params = _params_from_record(kind.params, data)
            case = cls(id=str(data["id"]), scenario=str(data["scenario"]), scenario_hash=str(data["scenario_hash"]),
                       workload=workload, cell=dict(data["cell"]), cell_key=str(data["cell_key"]),
                       repeat=int(data["repeat"]), crash_index=int(data["crash_index"]), seed=int(data["seed"]),
                       expect=Verdict(data["expect"]), image=str(data["image"]), params=params,
                       check=kind.check_from_dict(data["check"]),
                       oracles={str(k): bool(v) for k, v in dict(data["oracles"]).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed case record: {type(exc).__name__}: {exc}") from None
        expected_id = case_id(case.scenario_hash, case.cell, case.repeat, case.crash_index, case.adr_state)
        if case.id != expected_id:  # a hand-edited or corrupted record would re-run something else
            raise ConfigError(f"case record {case.id}: its scenario hash, cell, repeat, crash index and crash "
                              f"state give id {expected_id}")
        return case


def _params_from_record(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    if data["format"] == 1:  # the scenario's fields of the check's MapsyncParams
        values = {key: value for key, value in data["check"]["workload"].items() if key in model.model_fields}
    else:
        values = data["params"]
    try:  # JSON mode: what model_dump(mode="json") wrote reads back exactly (enums, tuples too)
        return model.model_validate_json(json.dumps(values))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(model)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"malformed case record: params: {problems}") from None


def case_id(scenario_hash: str, cell: dict[str, Any], repeat: int, crash_index: int,
            adr_state: int | None = None) -> str:
    canonical = json.dumps(cell, sort_keys=True, separators=(",", ":"))
    text = f"{scenario_hash}\n{canonical}\n{repeat}\n{crash_index}"
    if adr_state is not None:  # eADR cases keep the ids they always had
        text += f"\nadr:{adr_state}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def case_seed(base_seed: int, key: str, repeat: int, crash_index: int) -> int:
    digest = hashlib.sha256(f"{base_seed}:{key}:{repeat}:{crash_index}".encode()).hexdigest()
    return int(digest[:16], 16) % 2**31


def expand(scenario: Scenario) -> list[Case]:
    """Every case of the scenario: cells in matrix order, then repeats, then crash points."""
    kind = scenario.kind
    cases: list[Case] = []
    for cell in scenario.cells():
        key = cell_key(cell)
        params = scenario.params(cell)
        expect = scenario.expected(cell)
        for repeat in range(scenario.repeat):
            seed_for: Callable[[int], int] = partial(case_seed, scenario.seed, key, repeat)
            if scenario.case_seed is not None:
                seed_for = partial(_pinned, scenario.case_seed)
            points: list[CrashPoint | None] = [None]  # kinds that cut no power: one case
            if scenario.crash is not None:
                points = list(scenario.crash.points(scenario.ack_count(params), seed_for))
            for index, point in enumerate(points):
                seed = seed_for(index)
                check = kind.make_check(CheckSpec(fs=scenario.fs(cell), dax=scenario.dax(cell), params=params,
                                                  crash=point, shape=scenario.shape_for(cell), seed=seed,
                                                  adr_states=scenario.adr_states))
                for slot, sub in _state_checks(scenario, check):
                    cases.append(Case(id=case_id(scenario.content_hash, cell, repeat, index, slot),
                                      scenario=scenario.name, scenario_hash=scenario.content_hash, workload=kind.name,
                                      cell=dict(cell), cell_key=key, repeat=repeat, crash_index=index, seed=seed,
                                      expect=expect, image=scenario.image, params=params, check=sub,
                                      oracles=scenario.oracles))
    return cases


def _state_checks(scenario: Scenario, check: Check) -> list[tuple[int | None, Check]]:
    """A check per ADR crash state (the check itself when the cell is not ADR): every slot, or the
    one `[crash] adr_state` pins (an exported case)."""
    if not isinstance(check, CutCheck) or check.shape.persistence is not Persistence.ADR:
        return [(None, check)]
    pinned = scenario.crash.adr_state if scenario.crash is not None else None
    slots = [pinned] if pinned is not None else list(range(check.adr_states + 1))
    return [(slot, replace(check, adr_state=slot)) for slot in slots]


def _pinned(seed: int, crash_index: int) -> int:
    return seed


def export_case_scenario(case: Case, pin: ImagePin | None = None) -> str:
    """A standalone scenario file that expands to exactly this case's check, expectation and image.
    `pin`: the exact image (and QEMU) the case ran on; running the export checks it (lab/scenario/pin.py)."""
    shape, crash = case.check.shape, case.crash
    if shape.nvdimm_size % MIB:
        raise ConfigError(f"case {case.id}: NVDIMM size {shape.nvdimm_size} is not a whole number of MiB")
    fields = type(case.params).model_fields
    params = case.params.model_dump()
    fixed = {key: value for key, value in params.items()
             if key not in case.cell and not (value is None and fields[key].default is None)}  # TOML has no null
    cut = f", cut {crash.describe()}" if crash is not None else ""
    description = f"case {case.id} of {case.scenario}: {case.cell_key or 'single cell'}{cut}"
    where = f"repeat {case.repeat}" + (f", crash point {case.crash_index}: cut {crash.describe()}" if crash else "")
    if case.crash_state:
        where += f", crash state {case.crash_state}"
        description += f", {case.crash_state}"
    lines = [
        f"# Exported from case {case.id} of scenario {case.scenario} (scenario hash {case.scenario_hash[:12]}).",
        f"# Cell {case.cell_key or '(no matrix)'}, {where}.",
        "# It runs that one case alone: same machine, workload, seed, "
        f"{'crash point, ' if crash is not None else ''}image and expected verdict.",
        "",
        "[scenario]",
        f"name = {_toml(f'{case.scenario}-{case.id}')}",
        f"description = {_toml(description)}",
        f"workload = {_toml(case.workload)}",
        "repeat = 1",
        f"case_seed = {case.seed}",
        f"image = {_toml(case.image)}",
        *_pin_lines(pin),
        "",
        "[machine]",
        f"cpus = {shape.cpus}",
        f"memory_mib = {shape.memory_mib}",
        f"nvdimm_size_mib = {shape.nvdimm_size // MIB}",
        "",
        "[workload]",
        *(f"{key} = {_toml(value)}" for key, value in fixed.items()),
        "",
        "[matrix]",
        *(f"{key} = [{_toml(value)}]" for key, value in case.cell.items()),
        "",
        *(["[crash]", *_crash_lines(crash, getattr(case.check, "adr_states", 0), case.adr_state), ""]
          if crash is not None else []),
        "[oracles]",
        *(f"{key} = {_toml(value)}" for key, value in case.oracles.items()),
        "",
        "[[expect]]",
        f"verdict = {_toml(case.expect.value)}",
        "",
    ]
    text = "\n".join(lines)
    _check_export(case, text, pin)
    return text


def _pin_lines(pin: ImagePin | None) -> list[str]:
    if pin is None:
        return []
    lines = [f"image_id = {_toml(pin.image_id)}  # the exact image it ran on: another one is refused "
             "(--any-image: a warning)"]
    if pin.kernel_version:
        lines.append(f"kernel_version = {_toml(pin.kernel_version)}")
    if pin.qemu_version:
        lines.append(f"qemu_version = {_toml(pin.qemu_version)}")
    return lines


def _crash_lines(crash: CrashPoint, adr_states: int = 0, adr_state: int | None = None) -> list[str]:
    states = [f"adr_states = {adr_states}"] if adr_states else []
    if adr_state is not None:  # the one crash state of the cut this case judges
        states.append(f"adr_state = {adr_state}")
    if crash.after_ack is not None:
        seed = [f"seed = {crash.seed}  # the seed this ack was drawn with"] if crash.seed is not None else []
        return ['strategy = "after_ack"', f"ack = {crash.after_ack}", *seed, *states]
    return ['strategy = "time_offsets"', f"seconds = [{_toml(float(crash.after_seconds or 0.0))}]", *states]


def _check_export(case: Case, text: str, pin: ImagePin | None) -> None:
    """The export must reproduce the case; anything else would be a silent change of experiment."""
    scenario = parse_scenario(text.encode(), Path(f"<export of case {case.id}>"))
    cases = expand(scenario)
    if len(cases) != 1 or _what_runs(cases[0]) != _what_runs(case) or scenario.pin != pin:
        raise ConfigError(f"case {case.id} cannot be exported as a scenario that reproduces it exactly")


def _what_runs(case: Case) -> tuple[Any, ...]:
    return case.workload, case.params, case.check, case.seed, case.expect, case.image


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # float repr round-trips and is valid TOML (1e-05, 0.25)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write {value!r} into a scenario")


@dataclass(frozen=True)
class ScenarioSummary:
    """One scenario file as `pmemlab scenarios list` shows it; `error` (and nothing else) when it does not load."""

    file: str
    name: str | None = None
    workload: str | None = None
    purpose: str | None = None  # the scenario's description
    cells: int | None = None
    cases: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_scenarios(directory: Path) -> list[ScenarioSummary]:
    """Every *.toml in `directory`, by file name: loaded and expanded, or the reason it cannot be."""
    summaries: list[ScenarioSummary] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            scenario = load_scenario(path)
            cases = expand(scenario)
        except ConfigError as exc:
            summaries.append(ScenarioSummary(path.name, error=str(exc)))
        except Exception as exc:  # a broken workload kind must not hide the other scenarios
            summaries.append(ScenarioSummary(path.name, error=f"{type(exc).__name__}: {exc}"))
        else:
            summaries.append(ScenarioSummary(path.name, scenario.name, scenario.workload, scenario.description,
                                             len(scenario.cells()), len(cases)))
    return summaries
