"""Cases: expansion order, stable ids and seeds, JSON round trip, export as a standalone scenario."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from lab.cases import CASE_FORMAT, Case, expand, export_case_scenario
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.paths import REPO_ROOT
from lab.scenario import load_scenario, parse_scenario
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB
from lab.workloads.mapsync import MapsyncParams
from lab.workloads.mapsync import MapsyncParams as MapsyncScenarioParams
from lab.workloads.mapsync_kind import MapsyncCheck

SCENARIOS = REPO_ROOT / "scenarios"

WIDE = """\
# A bit of everything: two matrix keys, repeats, several crash points.
[scenario]
name = "wide"
description = "d"
workload = "mapsync"
repeat = 2
seed = 7
image = "custom-image"

[machine]
cpus = 1
memory_mib = 512
nvdimm_size_mib = 128

[workload]
records = 50
record_size = 128
records_per_page = 2
delay_us = 5

[matrix]
map_sync = [true, false]
dax = ["always", "inode"]

[crash]
{crash}

[oracles]
fsck = false

[[expect]]
where = {{ map_sync = false, dax = "always" }}
verdict = "VIOLATION"

[[expect]]
verdict = "PASS"
"""

CRASHES = {
    "after_ack": 'strategy = "after_ack"\nack = 10',
    "ack_list": 'strategy = "ack_list"\nacks = [3, 30]',
    "random_ack": 'strategy = "random_ack"\ncount = 3',
    "every_nth_ack": 'strategy = "every_nth_ack"\nevery = 20',
    "time_offsets": 'strategy = "time_offsets"\nseconds = [0.01, 0.25]',
}


def mapsync_check(case: Case) -> MapsyncCheck:
    """The case's check as the mapsync kind's (every case here is a mapsync case)."""
    check = case.check
    assert isinstance(check, MapsyncCheck)
    return check


def wide(tmp_path: Path, strategy: str = "ack_list", name: str = "wide.toml") -> list[Case]:
    path = tmp_path / name
    path.write_text(WIDE.format(crash=CRASHES[strategy]))
    return expand(load_scenario(path))


def test_smoke_expands_to_its_two_cases() -> None:
    scenario = load_scenario(SCENARIOS / "smoke.toml")
    cases = expand(scenario)
    assert [(c.cell_key, c.expect) for c in cases] == [("fs=ext4 map_sync=true", Verdict.PASS),
                                                       ("fs=ext4 map_sync=false", Verdict.VIOLATION)]
    first = cases[0]
    assert re.fullmatch(r"[0-9a-f]{12}", first.id)
    assert (first.scenario, first.scenario_hash, first.image) == ("smoke", scenario.content_hash, "debian12-pmem")
    assert first.cell == {"fs": "ext4", "map_sync": True}
    assert mapsync_check(first).fs is Filesystem.EXT4 and mapsync_check(first).dax is DaxMode.ALWAYS
    assert mapsync_check(first).params == MapsyncParams(records=40, map_sync=True, prealloc=False)
    assert mapsync_check(first).crash == CrashPoint(after_ack=20)
    assert first.check.shape == MachineShape()
    assert mapsync_check(cases[1]).params.map_sync is False


def test_shipped_mapsync_expands_to_its_eadr_and_adr_cases() -> None:
    cases = expand(load_scenario(SCENARIOS / "mapsync.toml"))
    assert len(cases) == 30 and len({c.id for c in cases}) == 30
    eadr = [c for c in cases if c.cell["persistence"] == "eadr"]
    assert len(eadr) == 10 and all(c.crash_state is None for c in eadr)
    assert [c.cell_key for c in eadr if c.expect is Verdict.VIOLATION] == [
        "fs=ext4 map_sync=false prealloc=false persistence=eadr flush=auto",
        "fs=ext4 map_sync=false prealloc=true persistence=eadr flush=auto",
        "fs=xfs map_sync=false prealloc=false persistence=eadr flush=auto",
        "fs=xfs map_sync=false prealloc=true persistence=eadr flush=auto"]
    adr = [c for c in cases if c.cell["persistence"] == "adr"]  # MAP_SYNC on an empty file, each flush
    assert {c.cell_key for c in adr} == {f"fs={fs} map_sync=true prealloc=false persistence=adr flush={flush}"
                                         for fs in ("ext4", "xfs") for flush in ("auto", "none")}
    assert all((c.expect is Verdict.VIOLATION) == (c.cell["flush"] == "none") for c in adr)
    assert all(mapsync_check(c).crash == CrashPoint(after_ack=60) and mapsync_check(c).params.records == 100
               for c in cases)


def test_order_cells_then_repeats_then_crash_points(tmp_path: Path) -> None:
    cases = wide(tmp_path)
    assert [(c.cell_key, c.repeat, c.crash_index, mapsync_check(c).crash.after_ack) for c in cases[:5]] == [
        ("map_sync=true dax=always", 0, 0, 3), ("map_sync=true dax=always", 0, 1, 30),
        ("map_sync=true dax=always", 1, 0, 3), ("map_sync=true dax=always", 1, 1, 30),
        ("map_sync=true dax=inode", 0, 0, 3)]
    assert len(cases) == 4 * 2 * 2
    assert [c.expect for c in cases[::4]] == [Verdict.PASS, Verdict.PASS, Verdict.VIOLATION, Verdict.PASS]


def test_case_fields_come_from_machine_workload_cell_and_oracles(tmp_path: Path) -> None:
    case = wide(tmp_path)[9]
    assert case.cell == {"map_sync": False, "dax": "always"}
    assert case.image == "custom-image"
    assert case.oracles == {"persistence": True, "fsck": False, "kernel_log": True}
    assert case.check.shape == MachineShape(cpus=1, memory_mib=512, nvdimm_size=128 * MIB)
    assert mapsync_check(case).dax is DaxMode.ALWAYS and mapsync_check(case).fs is Filesystem.EXT4
    assert mapsync_check(case).params == MapsyncParams(records=50, record_size=128, records_per_page=2, map_sync=False,
                                                delay_us=5)


def test_ids_and_seeds_are_stable_and_distinct(tmp_path: Path) -> None:
    """Their values are pinned by tests/unit/golden/scenarios/ (test_scenario_golden.py)."""
    cases = wide(tmp_path)
    (tmp_path / "other").mkdir()
    again = wide(tmp_path / "other")  # same bytes, other path: same cases
    assert cases == again
    assert len({c.id for c in cases}) == len(cases)
    assert len({c.seed for c in cases}) == len(cases)
    scenario_hash = hashlib.sha256(WIDE.format(crash=CRASHES["ack_list"]).encode()).hexdigest()
    assert {c.scenario_hash for c in cases} == {scenario_hash}


def test_any_byte_of_the_file_changes_the_ids(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(WIDE.format(crash=CRASHES["after_ack"]))
    before = expand(load_scenario(path))
    path.write_text(WIDE.format(crash=CRASHES["after_ack"]) + "# a comment\n")
    after = expand(load_scenario(path))
    assert [c.seed for c in before] == [c.seed for c in after]  # seeds derive from the base seed, not bytes
    assert not {c.id for c in before} & {c.id for c in after}


def test_random_ack_draws_from_the_case_seed(tmp_path: Path) -> None:
    cases = wide(tmp_path, "random_ack")
    assert len(cases) == 4 * 2 * 3
    for case in cases:
        assert mapsync_check(case).crash.seed == case.seed
        assert mapsync_check(case).crash.after_ack == random.Random(case.seed).randrange(50)
    assert cases == wide(tmp_path, "random_ack", name="again.toml")


def test_every_nth_and_time_offsets(tmp_path: Path) -> None:
    assert [mapsync_check(c).crash.after_ack for c in wide(tmp_path, "every_nth_ack")[:2]] == [19, 39]
    assert [mapsync_check(c).crash.after_seconds for c in wide(tmp_path, "time_offsets")[:2]] == [0.01, 0.25]


@pytest.mark.parametrize("strategy", CRASHES)
def test_json_round_trip_is_exact(tmp_path: Path, strategy: str) -> None:
    for case in wide(tmp_path, strategy):
        stored = json.dumps(case.to_dict())
        back = Case.from_dict(json.loads(stored))
        assert back == case
        assert json.dumps(back.to_dict()) == stored
        assert list(back.cell) == list(case.cell)  # matrix order survives


def test_from_dict_rejects_bad_records(tmp_path: Path) -> None:
    data = wide(tmp_path)[0].to_dict()
    with pytest.raises(ConfigError, match=r"case record \w{12}: its scenario hash, cell, repeat, crash index and "
                                          r"crash state give id \w{12}"):
        Case.from_dict({**data, "repeat": 1})
    with pytest.raises(ConfigError, match=r"malformed case record: KeyError: 'check'"):
        Case.from_dict({k: v for k, v in data.items() if k != "check"})
    with pytest.raises(ConfigError, match=r"malformed case record: ValueError: 'MAYBE' is not a valid Verdict"):
        Case.from_dict({**data, "expect": "MAYBE"})
    with pytest.raises(ConfigError, match=r"case record format 4; this lab reads formats 1, 2, 3"):
        Case.from_dict({**data, "format": 4})
    with pytest.raises(ConfigError, match=r"malformed case record: params: records: Input should be greater than or "
                                          r"equal to 1"):
        Case.from_dict({**data, "params": {**data["params"], "records": 0}})


def test_format_3_names_the_kind_and_keeps_the_params(tmp_path: Path) -> None:
    case = wide(tmp_path)[9]
    data = case.to_dict()
    assert CASE_FORMAT == 3 and data["format"] == 3 and "crash_state" not in data and data["workload"] == "mapsync" == case.workload
    assert data["params"] == {"records": 50, "record_size": 128, "records_per_page": 2, "prealloc": False,
                              "map_sync": False, "delay_us": 5, "file_size": None}
    assert case.params == MapsyncScenarioParams(**data["params"])
    assert data["check"] == case.check.to_dict() and case.crash == mapsync_check(case).crash


def test_format_1_records_still_read_as_mapsync(tmp_path: Path) -> None:
    for case in wide(tmp_path, "random_ack"):
        old = {k: v for k, v in case.to_dict().items() if k not in ("workload", "params")}
        old["format"] = 1  # what the lab stored before workload kinds: mapsync checks with a "workload" dict
        check = case.check.to_dict()
        old["check"] = {"fs": check["fs"], "dax": check["dax"], "workload": check["params"], "crash": check["crash"],
                        "cpus": check["cpus"], "memory_mib": check["memory_mib"], "nvdimm_size": check["nvdimm_size"]}
        read = Case.from_dict(json.loads(json.dumps(old)))
        assert (read.id, read.cell, read.params, read.expect, read.seed) == (case.id, case.cell, case.params,
                                                                              case.expect, case.seed)
        assert (mapsync_check(read).params, mapsync_check(read).crash, read.check.shape) == (
            mapsync_check(case).params, mapsync_check(case).crash, case.check.shape)


@pytest.mark.parametrize("strategy", CRASHES)
def test_export_reproduces_each_case(tmp_path: Path, strategy: str) -> None:
    for case in wide(tmp_path, strategy):
        text = export_case_scenario(case)
        assert text.startswith(f"# Exported from case {case.id} of scenario wide ")
        scenario = parse_scenario(text.encode(), Path("export.toml"))
        assert scenario.crash is not None
        assert scenario.repeat == 1 and scenario.crash.strategy in ("after_ack", "time_offsets")
        assert all(len(values) == 1 for values in scenario.matrix.values())
        (only,) = expand(scenario)
        assert (only.check, only.expect, only.image, only.oracles) == (case.check, case.expect, case.image,
                                                                       case.oracles)
        assert (only.cell, only.seed, only.workload, only.params) == (case.cell, case.seed, "mapsync", case.params)
        assert scenario.case_seed == case.seed


def test_export_of_shipped_cases(tmp_path: Path) -> None:
    for name in ("mapsync", "smoke"):
        for case in expand(load_scenario(SCENARIOS / f"{name}.toml")):
            path = tmp_path / f"{case.id}.toml"
            path.write_text(export_case_scenario(case))
            (only,) = expand(load_scenario(path))
            assert (only.check, only.expect, only.image) == (case.check, case.expect, case.image)


def test_export_keeps_a_random_draw_seed(tmp_path: Path) -> None:
    case = wide(tmp_path, "random_ack")[0]
    text = export_case_scenario(case)
    ack = mapsync_check(case).crash.after_ack
    assert f"ack = {ack}\nseed = {case.seed}  # the seed this ack was drawn with" in text
    (only,) = expand(parse_scenario(text.encode(), Path("export.toml")))
    assert mapsync_check(only).crash.describe() == mapsync_check(case).crash.describe()


def test_case_seed_pins_every_seed(tmp_path: Path) -> None:
    text = WIDE.format(crash=CRASHES["random_ack"]).replace("seed = 7\n", "seed = 7\ncase_seed = 99\n")
    cases = expand(parse_scenario(text.encode(), Path("pinned.toml")))
    assert {c.seed for c in cases} == {99}
    assert {mapsync_check(c).crash for c in cases} == {CrashPoint.random_ack(50, 99)}
    assert len({c.id for c in cases}) == len(cases)  # a pinned seed leaves the ids apart
