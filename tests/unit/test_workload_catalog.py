"""Workload kinds: the catalog finds them, and scenarios, cases and campaigns work with any of them.

A tiny fake kind (no power cut, two params, one cross-field rule) is registered
for the tests below by replacing lab.workloads.catalog.kinds.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console

from lab.campaign import CampaignContext, CaseOutcome, NoProgress, run_case
from lab.cases import CASE_FORMAT, Case, case_seed, expand, export_case_scenario
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.report.live import LineProgress, LiveProgress
from lab.scenario import CELL_KEYS, load_scenario, matrix_keys, parse_scenario
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.workloads import catalog
from lab.workloads.base import CheckSpec, WorkloadKind
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.workloads.catalog import get_kind


# -- the catalog --------------------------------------------------------------------------------

def test_catalog_has_mapsync() -> None:
    kinds = catalog.kinds()
    assert "mapsync" in kinds
    mapsync = kinds["mapsync"]
    assert mapsync.name == "mapsync" and mapsync.uses_crash and mapsync.ack_count is not None
    assert get_kind("mapsync") is mapsync
    assert mapsync.ack_count(mapsync.params(records=7)) == 7


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown workload 'nope'; known: .*mapsync"):
        get_kind("nope")


@pytest.mark.parametrize("name", list(catalog.kinds()))
def test_every_kind_has_a_usable_params_model(name: str) -> None:
    """What scenarios rely on: extra keys forbidden, every field defaulted, no field named like a cell key."""
    kind = catalog.kinds()[name]
    assert kind.name == name and kind.purpose and "\n" not in kind.purpose
    assert kind.params.model_config.get("extra") == "forbid"
    assert [key for key, info in kind.params.model_fields.items() if info.is_required()] == []
    assert not set(CELL_KEYS) & set(kind.params.model_fields)
    kind.params()  # the defaults pass the model's own validators


# -- a fake kind ----------------------------------------------------------------------------------

class FakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    size_kib: Annotated[int, Field(ge=4, multiple_of=4)] = 64
    mode: Literal["read", "write"] = "read"

    @model_validator(mode="after")
    def _small_writes(self) -> FakeParams:
        if self.mode == "write" and self.size_kib > 1024:
            raise ValueError(f"mode = \"write\" takes size_kib <= 1024, got {self.size_kib}")
        return self


@dataclass(frozen=True)
class FakeCheck:
    fs: Filesystem
    dax: DaxMode
    params: FakeParams
    shape: MachineShape
    seed: int
    crash: CrashPoint | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fs": self.fs.value, "dax": self.dax.value, "params": self.params.model_dump(),
                "shape": asdict(self.shape), "seed": self.seed,
                "crash": self.crash.to_dict() if self.crash else None}


def fake_check(spec: CheckSpec) -> FakeCheck:
    assert isinstance(spec.params, FakeParams)
    return FakeCheck(spec.fs, spec.dax, spec.params, spec.shape, spec.seed, spec.crash)


def fake_check_from_dict(data: dict[str, Any]) -> FakeCheck:
    return FakeCheck(Filesystem(data["fs"]), DaxMode(data["dax"]), FakeParams(**data["params"]),
                     MachineShape(**data["shape"]), int(data["seed"]),
                     CrashPoint(**data["crash"]) if data["crash"] else None)


RUNS: list[tuple[FakeCheck, Path]] = []


def fake_run(check: FakeCheck, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    RUNS.append((check, run_dir))
    hooks.on_phase("measure")
    return WorkloadResult("fake", check.to_dict(), run_dir, "img", "6.1", "tcg", verdict=Verdict.PASS,
                          timings={"measure": 0.5, "total": 0.5})


FAKE = WorkloadKind(name="fake", purpose="a fake for the tests: no power cut", params=FakeParams, uses_crash=False,
                    make_check=fake_check, check_from_dict=fake_check_from_dict, run=fake_run)
# The same with a power cut but no ACKs: only time_offsets can place its crash points.
FAKE_CUT = replace(FAKE, name="fakecut", uses_crash=True)


@pytest.fixture(autouse=True)
def fake_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = {**catalog.kinds(), "fake": FAKE, "fakecut": FAKE_CUT}
    monkeypatch.setattr(catalog, "kinds", lambda: kinds)


# Line numbers matter: the expected messages below point into this text.
FAKE_SCENARIO = """\
[scenario]
name = "f"
description = "a fake campaign"
workload = "fake"
repeat = 2
seed = 3

[workload]
mode = "write"

[matrix]
fs = ["ext4", "xfs"]
size_kib = [4, 64]

[machine]
nvdimm_size_mib = 512

[[expect]]
where = { size_kib = 4 }
verdict = "PASS"

[[expect]]
verdict = "VIOLATION"
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    return [line.replace(str(path), "s.toml") for line in str(err.value).splitlines()]


def edit(old: str, new: str) -> str:
    assert old in FAKE_SCENARIO, old
    return FAKE_SCENARIO.replace(old, new, 1)


# -- scenarios of a kind that cuts no power -------------------------------------------------------

def test_fake_scenario_matrix_over_a_kind_param(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, FAKE_SCENARIO))
    assert scenario.kind is FAKE and scenario.workload == "fake" and scenario.crash is None
    assert matrix_keys(FAKE) == ("fs", "dax", "persistence", "size_kib", "mode")
    assert scenario.matrix == {"fs": ("ext4", "xfs"), "size_kib": (4, 64)}
    assert scenario.params({"fs": "xfs", "size_kib": 4}) == FakeParams(size_kib=4, mode="write")
    assert scenario.params({}) == FakeParams(mode="write")
    assert [scenario.expected(c) for c in scenario.cells()] == [Verdict.PASS, Verdict.VIOLATION] * 2


FAKE_BAD = {
    "crash refused": (FAKE_SCENARIO + '\n[crash]\nstrategy = "after_ack"\nack = 1\n', [
        "s.toml:25: field 'crash': the fake workload cuts no power, so its scenarios take no [crash] section; "
        "remove it"]),
    "wrong type in a matrix list": (edit("size_kib = [4, 64]", 'size_kib = [4, "64", 6, true]'), [
        "s.toml:13: field 'matrix.size_kib.1': input should be a valid integer, got \"64\"",
        "s.toml:13: field 'matrix.size_kib.2': input should be a multiple of 4, got 6",
        "s.toml:13: field 'matrix.size_kib.3': input should be a valid integer, got true"]),
    "literal param in the matrix": (edit("[matrix]", '[matrix]\nmode = ["read", "append"]')
                                    .replace('mode = "write"\n', ""), [
        "s.toml:11: field 'matrix.mode.1': input should be 'read' or 'write', got \"append\""]),
    "unknown workload key": (edit('mode = "write"', 'mode = "write"\nrecords = 3'), [
        "s.toml:10: field 'workload.records': unknown key; allowed: size_kib, mode"]),
    "unknown matrix key": (edit("size_kib = [4, 64]", "size_kib = [4, 64]\nrecords = [1]"), [
        "s.toml:14: field 'matrix.records': unknown key; allowed: fs, dax, persistence, size_kib, mode"]),
    "unknown table lists no crash": (FAKE_SCENARIO + "\n[oracle]\nfsck = false\n", [
        "s.toml:25: field 'oracle': unknown key; allowed: scenario, machine, workload, matrix, oracles, exclude, "
        "expect"]),
    "model rule, per cell": (edit("size_kib = [4, 64]", "size_kib = [4, 2048, 4096]"), [
        "s.toml:8: field 'workload': mode = \"write\" takes size_kib <= 1024, got 2048, in cell fs=ext4 "
        "size_kib=2048 (and 1 more cell)",
        "s.toml:8: field 'workload': mode = \"write\" takes size_kib <= 1024, got 4096, in cell fs=ext4 "
        "size_kib=4096 (and 1 more cell)"]),
}


@pytest.mark.parametrize("text, expected", FAKE_BAD.values(), ids=FAKE_BAD.keys())
def test_fake_scenario_exact_messages(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert errors(tmp_path, text) == expected


def test_workload_section_is_judged_with_the_matrix(tmp_path: Path) -> None:
    """[workload] alone may break a cross-field rule that every cell's matrix value repairs."""
    text = edit('mode = "write"', "size_kib = 2048").replace("size_kib = [4, 64]", 'mode = ["read"]')
    text = text.replace("where = { size_kib = 4 }", 'where = { mode = "read" }')
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.params({"mode": "read"}) == FakeParams(size_kib=2048, mode="read")


def test_kind_without_acks_takes_only_time_offsets(tmp_path: Path) -> None:
    text = edit('workload = "fake"', 'workload = "fakecut"')
    assert errors(tmp_path, text) == ["s.toml: field 'crash': missing (required)"]
    assert errors(tmp_path, text + '\n[crash]\nstrategy = "after_ack"\nack = 1\n') == [
        "s.toml:26: field 'crash.strategy': \"after_ack\" cuts after an ACK, and the fakecut workload sends none; "
        "use \"time_offsets\""]
    cases = expand(load_scenario(write(tmp_path, text + '\n[crash]\nstrategy = "time_offsets"\nseconds = [0.5, 2]\n')))
    assert len(cases) == 4 * 2 * 2
    assert [(c.crash_index, c.crash) for c in cases[:2]] == [(0, CrashPoint(after_seconds=0.5)),
                                                             (1, CrashPoint(after_seconds=2.0))]
    for case in cases:
        assert Case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
        (only,) = expand(parse_scenario(export_case_scenario(case).encode(), Path("export.toml")))
        assert (only.check, only.params) == (case.check, case.params)


# -- cases of a kind that cuts no power -----------------------------------------------------------

def fake_cases(tmp_path: Path) -> list[Case]:
    return expand(load_scenario(write(tmp_path, FAKE_SCENARIO)))


def test_expand_one_case_per_cell_and_repeat(tmp_path: Path) -> None:
    cases = fake_cases(tmp_path)
    assert [(c.cell_key, c.repeat, c.crash_index) for c in cases] == [
        ("fs=ext4 size_kib=4", 0, 0), ("fs=ext4 size_kib=4", 1, 0), ("fs=ext4 size_kib=64", 0, 0),
        ("fs=ext4 size_kib=64", 1, 0), ("fs=xfs size_kib=4", 0, 0), ("fs=xfs size_kib=4", 1, 0),
        ("fs=xfs size_kib=64", 0, 0), ("fs=xfs size_kib=64", 1, 0)]
    assert len({c.id for c in cases}) == len(cases)
    case = cases[5]
    assert case.workload == "fake" and case.crash is None
    assert case.seed == case_seed(3, "fs=xfs size_kib=4", 1, 0)
    assert case.params == FakeParams(size_kib=4, mode="write")
    assert case.check == FakeCheck(Filesystem.XFS, DaxMode.ALWAYS, FakeParams(size_kib=4, mode="write"),
                                   MachineShape(nvdimm_size=512 * 2**20), case.seed)


def test_fake_round_trip_is_exact(tmp_path: Path) -> None:
    for case in fake_cases(tmp_path):
        data = case.to_dict()
        assert (data["format"], data["workload"], data["params"]) == (CASE_FORMAT, "fake", case.params.model_dump())
        stored = json.dumps(data)
        back = Case.from_dict(json.loads(stored))
        assert back == case and json.dumps(back.to_dict()) == stored


def test_fake_record_with_bad_params(tmp_path: Path) -> None:
    data = fake_cases(tmp_path)[0].to_dict()
    with pytest.raises(ConfigError, match=r"malformed case record: params: size_kib: Input should be a multiple "
                                          r"of 4"):
        Case.from_dict({**data, "params": {"size_kib": 5, "mode": "read"}})
    with pytest.raises(ConfigError, match=r"unknown workload 'gone'; known: "):
        Case.from_dict({**data, "workload": "gone"})


def test_fake_export_reproduces_each_case(tmp_path: Path) -> None:
    for case in fake_cases(tmp_path):
        text = export_case_scenario(case)
        assert "[crash]" not in text and 'workload = "fake"' in text
        assert '[workload]\nmode = "write"\n\n[matrix]\n' in text  # size_kib is in the cell
        scenario = parse_scenario(text.encode(), Path("export.toml"))
        (only,) = expand(scenario)
        assert (only.workload, only.params, only.check, only.expect, only.image, only.cell) == (
            case.workload, case.params, case.check, case.expect, case.image, case.cell)


# -- campaigns and live progress --------------------------------------------------------------------

class FakeStore:
    def __init__(self) -> None:
        self.finished: list[tuple[int, dict[str, Any], bool]] = []

    def start_attempt(self, campaign_id: str, case_id: str, run_dir: str, host: str | None = None) -> int:
        return 1

    def finish_attempt(self, attempt_id: int, result: dict[str, Any], *, final: bool,
                       host: str | None = None) -> bool:
        self.finished.append((attempt_id, result, final))
        return True


def test_run_case_runs_the_kind_of_the_case(tmp_path: Path) -> None:
    case = fake_cases(tmp_path)[0]
    store = FakeStore()
    ctx = CampaignContext("c1", image=Any, accel=Any, store=store, runs_base=tmp_path / "runs")  # type: ignore[arg-type]
    RUNS.clear()
    outcome = run_case(ctx, case, "machine 1", NoProgress())
    assert isinstance(outcome, CaseOutcome) and outcome.result is not None
    assert outcome.result.verdict is Verdict.PASS and outcome.attempts == 1
    assert RUNS == [(case.check, tmp_path / "runs" / "c1" / f"{case.id}-a1")]
    assert store.finished == [(1, outcome.result.to_dict(), True)]


def test_live_progress_without_a_crash_point(tmp_path: Path) -> None:
    case = fake_cases(tmp_path)[0]
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with LiveProgress(1, 1, console) as live:
        live.case_started("machine 1", case, 1)
        assert live._labels["machine 1"] == "machine 1: fs=ext4 size_kib=4"
        live.case_phase("machine 1", "measure")
        live.case_finished("machine 1", case, Verdict.PASS, True)
    LineProgress(console).case_started("machine 1", case, 2)
    text = out.getvalue()
    assert f"{case.id} fs=ext4 size_kib=4: PASS (expected PASS) met" in text
    assert f"machine 1: start {case.id} fs=ext4 size_kib=4 (attempt 2)" in text

