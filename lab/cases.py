"""Cases: one fully specified run of a scenario, as pure data.

`expand` turns a scenario into its cases: cells in matrix order, then repeats,
then crash points. Ids and seeds derive only from the scenario's content and
the case's position in it, so the same file always gives the same cases. A
case round-trips through JSON (`to_dict` / `from_dict`): that is how the
results store keeps it and how `pmemlab repro` re-runs it byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lab.crash.mapsync_check import MapsyncCheck
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.scenario import WORKLOAD_KEYS, Scenario, cell_key, parse_scenario
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB
from lab.workloads.mapsync import MapsyncParams

CASE_FORMAT = 1  # bump when to_dict changes shape; from_dict refuses other formats


@dataclass(frozen=True)
class Case:
    id: str  # 12 hex chars, see case_id
    scenario: str  # scenario name
    scenario_hash: str  # sha256 of the scenario file's bytes
    cell: dict[str, Any]  # matrix values, in matrix key order
    cell_key: str  # "fs=ext4 map_sync=false"
    repeat: int
    crash_index: int
    seed: int  # see case_seed; random_ack draws its crash point from it
    expect: Verdict
    image: str  # image ref
    check: MapsyncCheck
    oracles: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        return {"format": CASE_FORMAT, "id": self.id, "scenario": self.scenario,
                "scenario_hash": self.scenario_hash, "cell": dict(self.cell), "cell_key": self.cell_key,
                "repeat": self.repeat, "crash_index": self.crash_index, "seed": self.seed,
                "expect": self.expect.value, "image": self.image, "check": self.check.to_dict(),
                "oracles": dict(self.oracles)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """Rebuild a stored case; ConfigError if the record is malformed or its id does not fit it."""
        try:
            if data["format"] != CASE_FORMAT:
                raise ConfigError(f"case record format {data['format']!r}; this lab reads format {CASE_FORMAT}")
            case = cls(id=str(data["id"]), scenario=str(data["scenario"]), scenario_hash=str(data["scenario_hash"]),
                       cell=dict(data["cell"]), cell_key=str(data["cell_key"]), repeat=int(data["repeat"]),
                       crash_index=int(data["crash_index"]), seed=int(data["seed"]),
                       expect=Verdict(data["expect"]), image=str(data["image"]),
                       check=check_from_dict(data["check"]),
                       oracles={str(k): bool(v) for k, v in dict(data["oracles"]).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed case record: {type(exc).__name__}: {exc}") from None
        expected_id = case_id(case.scenario_hash, case.cell, case.repeat, case.crash_index)
        if case.id != expected_id:  # a hand-edited or corrupted record would re-run something else
            raise ConfigError(f"case record {case.id}: its scenario hash, cell, repeat and crash index "
                              f"give id {expected_id}")
        return case


def check_from_dict(data: dict[str, Any]) -> MapsyncCheck:
    """The inverse of MapsyncCheck.to_dict (keep_capture is a run option, not part of a case)."""
    return MapsyncCheck(fs=Filesystem(data["fs"]), dax=DaxMode(data["dax"]),
                        workload=MapsyncParams(**data["workload"]), crash=CrashPoint(**data["crash"]),
                        shape=MachineShape(cpus=int(data["cpus"]), memory_mib=int(data["memory_mib"]),
                                           nvdimm_size=int(data["nvdimm_size"])))


def case_id(scenario_hash: str, cell: dict[str, Any], repeat: int, crash_index: int) -> str:
    canonical = json.dumps(cell, sort_keys=True, separators=(",", ":"))
    text = f"{scenario_hash}\n{canonical}\n{repeat}\n{crash_index}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def case_seed(base_seed: int, key: str, repeat: int, crash_index: int) -> int:
    digest = hashlib.sha256(f"{base_seed}:{key}:{repeat}:{crash_index}".encode()).hexdigest()
    return int(digest[:16], 16) % 2**31


def expand(scenario: Scenario) -> list[Case]:
    """Every case of the scenario: cells in matrix order, then repeats, then crash points."""
    cases: list[Case] = []
    for cell in scenario.cells():
        key = cell_key(cell)
        params = scenario.params(cell)
        expect = scenario.expected(cell)
        for repeat in range(scenario.repeat):
            seed_for = partial(case_seed, scenario.seed, key, repeat)
            for index, point in enumerate(scenario.crash.points(params.records, seed_for)):
                check = MapsyncCheck(fs=scenario.fs(cell), dax=scenario.dax(cell), workload=params, crash=point,
                                     shape=scenario.shape)
                cases.append(Case(id=case_id(scenario.content_hash, cell, repeat, index), scenario=scenario.name,
                                  scenario_hash=scenario.content_hash, cell=dict(cell), cell_key=key,
                                  repeat=repeat, crash_index=index, seed=seed_for(index), expect=expect,
                                  image=scenario.image, check=check, oracles=scenario.oracles))
    return cases


def export_case_scenario(case: Case) -> str:
    """A standalone scenario file that expands to exactly this case's check, expectation and image."""
    check, crash = case.check, case.check.crash
    if check.workload.file_size is not None:
        raise ConfigError(f"case {case.id}: file_size is not a scenario field, so it cannot be exported")
    if check.shape.nvdimm_size % MIB:
        raise ConfigError(f"case {case.id}: NVDIMM size {check.shape.nvdimm_size} is not a whole number of MiB")
    workload = check.workload.to_dict()
    description = f"case {case.id} of {case.scenario}: {case.cell_key or 'single cell'}, cut {crash.describe()}"
    lines = [
        f"# Exported from case {case.id} of scenario {case.scenario} (scenario hash {case.scenario_hash[:12]}).",
        f"# Cell {case.cell_key or '(no matrix)'}, repeat {case.repeat}, crash point {case.crash_index}: "
        f"cut {crash.describe()}.",
        "# It runs that one case alone: same machine, workload, crash point, image and expected verdict.",
        "",
        "[scenario]",
        f"name = {_toml(f'{case.scenario}-{case.id}')}",
        f"description = {_toml(description)}",
        'workload = "mapsync"',
        "repeat = 1",
        f"seed = {case.seed}",
        f"image = {_toml(case.image)}",
        "",
        "[machine]",
        f"cpus = {check.shape.cpus}",
        f"memory_mib = {check.shape.memory_mib}",
        f"nvdimm_size_mib = {check.shape.nvdimm_size // MIB}",
        "",
        "[workload]",
        *(f"{key} = {_toml(workload[key])}" for key in WORKLOAD_KEYS if key not in case.cell),
        "",
        "[matrix]",
        *(f"{key} = [{_toml(value)}]" for key, value in case.cell.items()),
        "",
        "[crash]",
        *_crash_lines(crash),
        "",
        "[oracles]",
        *(f"{key} = {_toml(value)}" for key, value in case.oracles.items()),
        "",
        "[[expect]]",
        f"verdict = {_toml(case.expect.value)}",
        "",
    ]
    text = "\n".join(lines)
    _check_export(case, text)
    return text


def _crash_lines(crash: CrashPoint) -> list[str]:
    if crash.after_ack is not None:
        seed = [f"seed = {crash.seed}  # the seed this ack was drawn with"] if crash.seed is not None else []
        return ['strategy = "after_ack"', f"ack = {crash.after_ack}", *seed]
    return ['strategy = "time_offsets"', f"seconds = [{_toml(float(crash.after_seconds or 0.0))}]"]


def _check_export(case: Case, text: str) -> None:
    """The export must reproduce the case; anything else would be a silent change of experiment."""
    cases = expand(parse_scenario(text.encode(), Path(f"<export of case {case.id}>")))
    if len(cases) != 1 or (cases[0].check, cases[0].expect, cases[0].image) != (case.check, case.expect, case.image):
        raise ConfigError(f"case {case.id} cannot be exported as a scenario that reproduces it exactly")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # float repr round-trips and is valid TOML (1e-05, 0.25)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    raise ConfigError(f"cannot write {value!r} into a scenario")
