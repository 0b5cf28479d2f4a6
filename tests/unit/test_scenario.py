"""Scenario files: the shipped ones load, every bad input is one exact line naming file, line and field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner

from lab.cli import cli
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.paths import scenarios_dir
from lab.scenario import AfterAck, DaxName, FsName, load_scenario, matrix_keys
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB
from lab.workloads import catalog
from lab.workloads.mapsync_kind import KIND as MAPSYNC
from lab.workloads.mapsync import MapsyncParams as MapsyncScenarioParams

SCENARIOS = scenarios_dir()

# Line numbers matter: the expected messages below point into this text.
BASE = """\
[scenario]
name = "t"
description = "d"
workload = "mapsync"

[workload]
records = 40

[matrix]
fs = ["ext4", "xfs"]
map_sync = [true, false]

[crash]
strategy = "after_ack"
ack = 20

[[expect]]
where = { map_sync = false }
verdict = "VIOLATION"

[[expect]]
verdict = "PASS"
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def errors(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    return [line.replace(str(path), "s.toml") for line in str(err.value).splitlines()]


# -- the shipped scenarios ---------------------------------------------------------------------

def test_shipped_mapsync_scenario() -> None:
    scenario = load_scenario(SCENARIOS / "mapsync.toml")
    assert scenario.name == "mapsync"
    assert scenario.text.startswith("#")
    assert scenario.matrix == {"fs": ("ext4", "xfs"), "map_sync": (True, False), "prealloc": (False, True),
                               "persistence": ("eadr", "adr"), "flush": ("auto", "none")}
    params = scenario.params({})
    assert isinstance(params, MapsyncScenarioParams) and params.records == 100
    assert isinstance(scenario.crash, AfterAck)
    assert scenario.crash.strategy == "after_ack" and scenario.crash.ack == 60
    assert scenario.shape.nvdimm_size >= 512 * MIB
    expected = {(c["fs"], c["map_sync"], c["prealloc"]): scenario.expected(c) for c in scenario.cells()
                if c["persistence"] == "eadr" and c["flush"] == "auto"}
    assert [k for k, v in expected.items() if v is Verdict.VIOLATION] == [("ext4", False, False),
                                                                          ("ext4", False, True),
                                                                          ("xfs", False, False),
                                                                          ("xfs", False, True)]
    assert all(v is Verdict.PASS for k, v in expected.items() if k[1])


def test_shipped_smoke_scenario() -> None:
    scenario = load_scenario(SCENARIOS / "smoke.toml")
    assert scenario.matrix == {"fs": ("ext4",), "map_sync": (True, False)}
    assert scenario.params({}) == MapsyncScenarioParams(records=40, prealloc=False)
    assert isinstance(scenario.crash, AfterAck)
    assert scenario.crash.strategy == "after_ack" and scenario.crash.ack == 20
    assert [scenario.expected(c) for c in scenario.cells()] == [Verdict.PASS, Verdict.VIOLATION]


# -- what a valid file gives -------------------------------------------------------------------

def test_text_hash_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    scenario = load_scenario(path)
    assert scenario.text == BASE
    assert scenario.content_hash == hashlib.sha256(BASE.encode()).hexdigest()
    assert scenario.path == path
    assert (scenario.repeat, scenario.seed, scenario.image) == (1, 0, "debian12-pmem")
    assert scenario.shape == MachineShape()
    assert scenario.oracles == {"persistence": True, "fsck": True, "kernel_log": True}
    assert scenario.fs({}) is Filesystem.EXT4 and scenario.dax({}) is DaxMode.ALWAYS


def test_matrix_keeps_file_order_and_cells_vary_last_key_fastest(tmp_path: Path) -> None:
    text = edit('fs = ["ext4", "xfs"]\nmap_sync = [true, false]', 'map_sync = [true, false]\ndax = ["always", "never"]')
    scenario = load_scenario(write(tmp_path, text))
    assert list(scenario.matrix) == ["map_sync", "dax"]
    assert scenario.cells() == [{"map_sync": True, "dax": "always"}, {"map_sync": True, "dax": "never"},
                                {"map_sync": False, "dax": "always"}, {"map_sync": False, "dax": "never"}]


def test_machine_workload_and_cell_overrides(tmp_path: Path) -> None:
    text = edit("[workload]\nrecords = 40", "[machine]\ncpus = 4\nmemory_mib = 2048\nnvdimm_size_mib = 512\n\n"
                "[workload]\nrecords = 40\nrecord_size = 128\nrecords_per_page = 4\ndelay_us = 10")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.shape == MachineShape(cpus=4, memory_mib=2048, nvdimm_size=512 * MIB)
    assert scenario.params({"fs": "xfs", "map_sync": False}) == MapsyncScenarioParams(
        records=40, record_size=128, records_per_page=4, map_sync=False, delay_us=10)
    assert scenario.fs({"fs": "xfs"}) is Filesystem.XFS


def test_where_with_two_keys_must_match_both(tmp_path: Path) -> None:
    text = edit("map_sync = [true, false]", "map_sync = [true, false]\nprealloc = [false, true]")
    text = text.replace("where = { map_sync = false }", "where = { map_sync = false, prealloc = false }")
    scenario = load_scenario(write(tmp_path, text))
    verdicts = {(c["map_sync"], c["prealloc"]): scenario.expected(c) for c in scenario.cells() if c["fs"] == "xfs"}
    assert verdicts == {(True, False): Verdict.PASS, (True, True): Verdict.PASS,
                        (False, False): Verdict.VIOLATION, (False, True): Verdict.PASS}


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    text = edit("[[expect]]\nwhere", '[[expect]]\nwhere = { fs = "xfs" }\nverdict = "HANG"\n\n[[expect]]\nwhere')
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.expected({"fs": "xfs", "map_sync": False}) is Verdict.HANG
    assert scenario.expected({"fs": "ext4", "map_sync": False}) is Verdict.VIOLATION
    assert scenario.expected({"fs": "ext4", "map_sync": True}) is Verdict.PASS


def test_every_crash_strategy_gives_its_points(tmp_path: Path) -> None:
    def points(crash: str, records: int = 100) -> list[tuple[int | None, float | None]]:
        text = edit('strategy = "after_ack"\nack = 20', crash).replace("records = 40", f"records = {records}")
        scenario = load_scenario(write(tmp_path, text))
        assert scenario.crash is not None
        return [(p.after_ack, p.after_seconds) for p in scenario.crash.points(records, lambda i: 7 + i)]

    assert points('strategy = "after_ack"\nack = 60') == [(60, None)]
    assert points('strategy = "ack_list"\nacks = [10, 50, 90]') == [(10, None), (50, None), (90, None)]
    assert points('strategy = "every_nth_ack"\nevery = 25') == [(24, None), (49, None), (74, None), (99, None)]
    assert points('strategy = "every_nth_ack"\nevery = 30', records=100) == [(29, None), (59, None), (89, None)]
    assert points('strategy = "time_offsets"\nseconds = [0.01, 1]') == [(None, 0.01), (None, 1.0)]
    assert len(points('strategy = "random_ack"\ncount = 3')) == 3


def test_literal_names_follow_the_enums() -> None:
    assert set(get_args(FsName)) == {f.value for f in Filesystem}
    assert set(get_args(DaxName)) == {d.value for d in DaxMode}
    assert matrix_keys(MAPSYNC) == ("fs", "dax", "persistence", *MapsyncScenarioParams.model_fields)


# -- every problem, one exact line ------------------------------------------------------------

STRATEGIES = "allowed: after_ack, ack_list, random_ack, every_nth_ack, time_offsets"
VERDICTS = "allowed: PASS, VIOLATION, KERNEL-BUG, HANG, INFRA-ERROR"
KNOWN = ", ".join(catalog.kinds())  # other kinds join the catalog as they are written

BAD = {
    "malformed toml": (edit("ack = 20", "ack = "), ["s.toml:15:7: not valid TOML: Invalid value"]),
    "unknown key": (edit("records = 40", "records = 40\nrecord = 3"), [
        "s.toml:8: field 'workload.record': unknown key; allowed: records, record_size, records_per_page, "
        "prealloc, map_sync, delay_us, file_size, flush, fence"]),
    "unknown table": (BASE + "\n[oracle]\nfsck = false\n", [
        "s.toml:24: field 'oracle': unknown key; allowed: scenario, machine, workload, matrix, crash, oracles, "
        "exclude, expect"]),
    "unknown strategy key": (edit("ack = 20", "ack = 20\nacks = [1]"), [
        "s.toml:16: field 'crash.acks': unknown key; allowed: cuts_per_run, adr_states, adr_state, strategy, ack, "
        "seed"]),
    "wrong types": (edit("records = 40", 'records = "40"').replace("[true, false]", "[true, 1]"), [
        "s.toml:7: field 'workload.records': input should be a valid integer, got \"40\"",
        "s.toml:11: field 'matrix.map_sync.1': input should be a valid boolean, got 1"]),
    "out of range": (edit("records = 40", "records = 0\nrecord_size = 65"), [
        "s.toml:7: field 'workload.records': input should be greater than or equal to 1, got 0",
        "s.toml:8: field 'workload.record_size': input should be a multiple of 8, got 65"]),
    "missing fields": (edit('description = "d"\n', "").replace("ack = 20\n", ""), [
        "s.toml:1: field 'scenario.description': missing (required)",
        "s.toml:12: field 'crash.ack': missing (required)"]),
    "missing table": (edit('[crash]\nstrategy = "after_ack"\nack = 20\n', ""), [
        "s.toml: field 'crash': missing (required)"]),
    "unknown workload": (edit('workload = "mapsync"', 'workload = "fio"'), [
        f"s.toml:4: field 'scenario.workload': unknown workload \"fio\"; known: {KNOWN}"]),
    "bad name": (edit('name = "t"', 'name = "my scenario"'), [
        "s.toml:2: field 'scenario.name': \"my scenario\" is not a valid name; use letters, digits, '.', '_' and '-'"]),
    "unknown strategy": (edit('"after_ack"', '"after_nack"'), [
        f"s.toml:14: field 'crash.strategy': unknown strategy \"after_nack\"; {STRATEGIES}"]),
    "no strategy": (edit('strategy = "after_ack"\n', ""), [
        f"s.toml:13: field 'crash.strategy': missing (required); {STRATEGIES}"]),
    "ack beyond records": (edit("ack = 20", "ack = 40"), [
        "s.toml:15: field 'crash.ack': ack 40 is never reached (the workload acknowledges 0..39), "
        "in cell fs=ext4 map_sync=true (and 3 more cells)"]),
    "ack list beyond records": (edit('strategy = "after_ack"\nack = 20',
                                     'strategy = "ack_list"\nacks = [10, 50, 90]'), [
        "s.toml:15: field 'crash.acks': acks 50, 90 are never reached (the workload acknowledges "
        "0..39), in cell fs=ext4 map_sync=true (and 3 more cells)"]),
    "ack beyond records of one cell": (
        edit("records = 40\n", "").replace("map_sync = [true, false]", "map_sync = [true, false]\nrecords = [10, 40]"),
        ["s.toml:15: field 'crash.ack': ack 20 is never reached (the workload acknowledges 0..9), "
         "in cell fs=ext4 map_sync=true records=10 (and 3 more cells)"]),
    "every beyond records": (edit('strategy = "after_ack"\nack = 20', 'strategy = "every_nth_ack"\nevery = 41'), [
        "s.toml:15: field 'crash.every': every = 41 gives no crash point (the first would be ack 40; the "
        "workload acknowledges 0..39), in cell fs=ext4 map_sync=true (and 3 more cells)"]),
    "bad offsets": (edit('strategy = "after_ack"\nack = 20', 'strategy = "time_offsets"\nseconds = [0.1, -1, nan]'), [
        "s.toml:15: field 'crash.seconds.1': input should be greater than or equal to 0, got -1",
        "s.toml:15: field 'crash.seconds.2': input should be a finite number, got nan"]),
    "empty offsets": (edit('strategy = "after_ack"\nack = 20', 'strategy = "time_offsets"\nseconds = []'), [
        "s.toml:15: field 'crash.seconds': must not be empty"]),
    "no verdict": (edit('verdict = "VIOLATION"\n', ""), [
        f"s.toml:17: field 'expect.0.verdict': missing (required); {VERDICTS}"]),
    "unknown verdict": (edit('"VIOLATION"', '"FAIL"'), [
        f"s.toml:19: field 'expect.0.verdict': unknown verdict \"FAIL\"; {VERDICTS}"]),
    "no rules": (BASE.split("[[expect]]")[0], ["s.toml: field 'expect': missing (required)"]),
    "where names a non-matrix key": (edit("where = { map_sync = false }", "where = { prealloc = false }"), [
        "s.toml:18: field 'expect.0.where.prealloc': 'prealloc' is not a matrix key; matrix keys: fs, map_sync"]),
    "where value not in matrix": (edit("where = { map_sync = false }", 'where = { fs = "btrfs", map_sync = 0 }'), [
        "s.toml:18: field 'expect.0.where.fs': \"btrfs\" is not among the matrix values of 'fs': [\"ext4\", \"xfs\"]",
        "s.toml:18: field 'expect.0.where.map_sync': 0 is not among the matrix values of 'map_sync': "
        "[true, false]"]),
    "where as a sub-table": (edit("where = { map_sync = false }\nverdict = \"VIOLATION\"",
                                  "verdict = \"VIOLATION\"\n[expect.where]\nprealloc = true"), [
        "s.toml:20: field 'expect.0.where.prealloc': 'prealloc' is not a matrix key; matrix keys: fs, map_sync"]),
    "catch-all before the last rule": (edit("where = { map_sync = false }\n", ""), [
        "s.toml:17: field 'expect.0.where': only the last rule may omit 'where': this rule matches every cell, "
        "so the rules after it would never apply"]),
    "unmatched cell": (edit('[[expect]]\nverdict = "PASS"\n', ""), [
        "s.toml:17: field 'expect': no rule matches cell fs=ext4 map_sync=true (and 1 more cell); add a rule "
        "for it, or end with a rule without 'where'"]),
    "empty matrix list": (edit('["ext4", "xfs"]', "[]"), ["s.toml:10: field 'matrix.fs': must not be empty"]),
    "repeated matrix value": (edit('["ext4", "xfs"]', '["ext4", "ext4"]'), [
        "s.toml:10: field 'matrix.fs': lists \"ext4\" twice"]),
    "unknown matrix key": (edit("map_sync = [true, false]", "map_sync = [true, false]\nflavour = [\"clwb\"]"), [
        "s.toml:12: field 'matrix.flavour': unknown key; allowed: fs, dax, persistence, records, record_size, records_per_page, "
        "prealloc, map_sync, delay_us, file_size, flush, fence"]),
    "key in workload and matrix": (edit("records = 40", "records = 40\nmap_sync = true"), [
        "s.toml:12: field 'matrix.map_sync': 'map_sync' is set in both [workload] and [matrix]; keep it in one"]),
    "nvdimm too small for xfs": (edit("[workload]", "[machine]\nnvdimm_size_mib = 256\n\n[workload]"), [
        "s.toml:7: field 'machine.nvdimm_size_mib': 256 MiB is too small for xfs (in the matrix): mkfs.xfs needs "
        ">= 300 MB, so use at least 512"]),
    "nvdimm not 2 MiB aligned": (edit("[workload]", "[machine]\nnvdimm_size_mib = 1025\n\n[workload]"), [
        "s.toml:7: field 'machine.nvdimm_size_mib': input should be a multiple of 2, got 1025"]),
    "records do not fit a page": (edit("records = 40", "records = 40\nrecord_size = 1024\nrecords_per_page = 8"), [
        "s.toml:9: field 'workload.records_per_page': records_per_page = 8 x record_size = 1024 is 8192 bytes, "
        "more than a 4096-byte page, in cell fs=ext4 map_sync=true (and 3 more cells)"]),
    "unknown oracle": (BASE + "\n[oracles]\nfsk = false\n", [
        "s.toml:25: field 'oracles.fsk': unknown key; allowed: persistence, fsck, kernel_log"]),
    "oracle toggle not a bool": (BASE + "\n[oracles]\nfsck = 0\nkernel_log = \"off\"\n", [
        "s.toml:25: field 'oracles.fsck': input should be a valid boolean, got 0",
        "s.toml:26: field 'oracles.kernel_log': input should be a valid boolean, got \"off\""]),
    "KERNEL-BUG expected with the kernel log off": (
        edit('"VIOLATION"', '"KERNEL-BUG"') + "\n[oracles]\nkernel_log = false\n", [
            "s.toml:19: field 'expect.0.verdict': only the kernel_log oracle gives KERNEL-BUG, and [oracles] turns "
            "it off; turn it on or expect another verdict"]),
    "multi-line array": (edit("map_sync = [true, false]", 'map_sync = [\n  true,\n  "x",\n]\nprealloc = ["y"]'), [
        "s.toml:11: field 'matrix.map_sync.1': input should be a valid boolean, got \"x\"",
        "s.toml:15: field 'matrix.prealloc.0': input should be a valid boolean, got \"y\""]),
}


@pytest.mark.parametrize("text, expected", BAD.values(), ids=BAD.keys())
def test_bad_scenario_exact_messages(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert errors(tmp_path, text) == expected


def test_oracles_turned_off_reach_the_cases(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, BASE + "\n[oracles]\npersistence = false\nfsck = false\n"))
    assert scenario.oracles == {"persistence": False, "fsck": False, "kernel_log": True}


NO_CUT = """\
[scenario]
name = "t"
description = "d"
workload = "fault-latency"

[oracles]
{oracles}

[[expect]]
verdict = "PASS"
"""


@pytest.mark.parametrize("workload, oracles, expected", [
    ("fault-latency", "fsck = false", "s.toml:7: field 'oracles.fsck': the fault-latency workload cuts no power, "
     "so no fsck oracle runs and there is nothing to turn off; remove the key"),
    ("fault-latency", "persistence = false", "s.toml:7: field 'oracles.persistence': the fault-latency workload "
     "acknowledges no records, so no persistence oracle runs and there is nothing to turn off; remove the key"),
    ("truncate-fault-race", "persistence = false", "s.toml:7: field 'oracles.persistence': the "
     "truncate-fault-race workload acknowledges no records, so no persistence oracle runs and there is nothing to "
     "turn off; remove the key"),
])
def test_an_oracle_the_kind_never_runs_cannot_be_turned_off(tmp_path: Path, workload: str, oracles: str,
                                                             expected: str) -> None:
    text = NO_CUT.format(oracles=oracles).replace('"fault-latency"', json.dumps(workload))
    if workload == "truncate-fault-race":
        text = text.replace("[oracles]", '[crash]\nstrategy = "time_offsets"\nseconds = [1.0]\n\n[oracles]')
        expected = expected.replace("s.toml:7:", "s.toml:11:")
    assert errors(tmp_path, text) == [expected]


def test_oracles_a_kind_runs_can_be_turned_off(tmp_path: Path) -> None:
    latency = load_scenario(write(tmp_path, NO_CUT.format(oracles="kernel_log = false\nfsck = true")))
    assert latency.oracles == {"persistence": True, "fsck": True, "kernel_log": False}
    race = NO_CUT.format(oracles="fsck = false").replace('"fault-latency"', '"truncate-fault-race"')
    race = race.replace("[oracles]", '[crash]\nstrategy = "time_offsets"\nseconds = [1.0]\n\n[oracles]')
    assert load_scenario(write(tmp_path, race)).oracles["fsck"] is False


def test_all_problems_at_once_in_file_order(tmp_path: Path) -> None:
    text = edit('name = "t"', 'name = "t"\ncolour = "red"').replace('"FAIL"', "").replace("ack = 20", "ack = -1")
    text = text.replace('verdict = "VIOLATION"', 'verdict = "FAIL"')
    assert errors(tmp_path, text) == [
        "s.toml:3: field 'scenario.colour': unknown key; allowed: name, description, workload, repeat, seed, case_seed, "
        "image, image_id, kernel_version, qemu_version",
        "s.toml:16: field 'crash.ack': input should be greater than or equal to 0, got -1",
        f"s.toml:20: field 'expect.0.verdict': unknown verdict \"FAIL\"; {VERDICTS}",
    ]


def test_unreadable_and_non_utf8(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read scenario: No such file or directory"):
        load_scenario(missing)
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"[scenario]\nname = \"\xff\"\n")
    with pytest.raises(ConfigError, match=r"b.toml:2: not UTF-8 text \(byte offset 19\)"):
        load_scenario(binary)


# -- pmemlab scenarios list -------------------------------------------------------------------

def test_scenarios_list_shipped() -> None:
    result = CliRunner().invoke(cli, ["scenarios", "list", "--json"])  # exit 1 if any file is broken
    listed = {s["file"]: s for s in json.loads(result.stdout)}
    assert {path.name for path in SCENARIOS.glob("*.toml")} == set(listed)
    assert listed["mapsync.toml"] == {"file": "mapsync.toml", "name": "mapsync", "workload": "mapsync",
                                      "purpose": load_scenario(SCENARIOS / "mapsync.toml").description,
                                      "cells": 14, "cases": 30, "error": None}
    assert (listed["smoke.toml"]["cells"], listed["smoke.toml"]["cases"]) == (2, 2)


def test_scenarios_list_shows_a_broken_file_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scenarios").mkdir()
    write(tmp_path / "scenarios", edit('workload = "mapsync"', 'workload = "mapsync"\nrepeat = 3'), "a-wide.toml")
    write(tmp_path / "scenarios", edit('workload = "mapsync"', 'workload = "fio"'), "b-broken.toml")
    write(tmp_path / "scenarios", "not a scenario", "notes.txt")
    monkeypatch.setenv("PMEMLAB_SCENARIOS_DIR", str(tmp_path / "scenarios"))
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(cli, ["scenarios", "list", "--json"])
    assert result.exit_code == 1
    broken = tmp_path / "scenarios" / "b-broken.toml"
    assert json.loads(result.stdout) == [
        {"file": "a-wide.toml", "name": "t", "workload": "mapsync", "purpose": "d", "cells": 4, "cases": 12,
         "error": None},
        {"file": "b-broken.toml", "name": None, "workload": None, "purpose": None, "cells": None, "cases": None,
         "error": f"{broken}:4: field 'scenario.workload': unknown workload \"fio\"; known: {KNOWN}"}]
    table = CliRunner().invoke(cli, ["scenarios", "list"])
    assert table.exit_code == 1
    assert "a-wide.toml" in table.output and "unknown workload" in table.output
