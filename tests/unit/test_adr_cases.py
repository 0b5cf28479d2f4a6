"""One case per ADR crash state: stable ids, the store, grouping into one workload run and one
cut, export and repro of exactly one state (no QEMU)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lab.adr.states import slot_label
from lab.campaign import plan_tasks
from lab.cases import Case, expand, export_case_scenario
from lab.compare import CellState, cell_state
from lab.crash.cut_flow import AdrCutSpec, _adr_cut_spec, _cut_key
from lab.errors import ConfigError
from lab.paths import scenarios_dir
from lab.scenario import load_scenario, parse_scenario
from lab.store.records import CaseRecord
from lab.verdict import Verdict

SCENARIO = """
[scenario]
name = "adr-states"
description = "ADR crash states as cases"
workload = "mapsync"
seed = 5

[machine]
nvdimm_size_mib = 1024

[workload]
records = 30

[matrix]
fs = ["ext4"]
persistence = ["eadr", "adr"]
flush = ["auto", "none"]

[[exclude]]
where = { persistence = "eadr", flush = "none" }

[crash]
strategy = "ack_list"
acks = [5, 20]
adr_states = 2

[[expect]]
where = { persistence = "adr", flush = "none" }
verdict = "VIOLATION"

[[expect]]
verdict = "PASS"
"""


def scenario_cases(text: str = SCENARIO) -> list[Case]:
    return expand(parse_scenario(text.encode(), Path("s.toml")))


def test_each_adr_crash_state_is_its_own_case_with_a_stable_name() -> None:
    cases = scenario_cases()
    assert [c.cell_key for c in cases].count("fs=ext4 persistence=eadr flush=auto") == 2  # one per crash point
    adr = [c for c in cases if c.cell["persistence"] == "adr" and c.cell["flush"] == "none"]
    assert [(c.crash_index, c.adr_state) for c in adr] == [(i, k) for i in (0, 1) for k in (0, 1, 2)]
    seed = adr[0].seed
    assert [c.crash_state for c in adr[:3]] == ["adr:drop-all", f"adr:subset-1:seed-{seed}",
                                               f"adr:subset-2:seed-{seed}"]
    assert adr[3].seed != seed  # another crash point, another seed; the states of one point share it
    assert len({c.id for c in cases}) == len(cases)
    assert all(c.expect is Verdict.VIOLATION for c in adr)  # the expectation applies per state
    assert [c.id for c in scenario_cases()] == [c.id for c in cases]  # deterministic


def test_eadr_cases_keep_the_id_formula_they_always_had() -> None:
    from lab.cases import case_id
    for case in scenario_cases():
        plain = case_id(case.scenario_hash, case.cell, case.repeat, case.crash_index)
        assert (case.id == plain) == (case.adr_state is None)


def test_a_state_case_round_trips_and_a_wrong_slot_is_refused() -> None:
    case = [c for c in scenario_cases() if c.adr_state == 2][0]
    data = json.loads(json.dumps(case.to_dict()))
    assert data["crash_state"] == case.crash_state and data["check"]["adr_state"] == 2
    assert Case.from_dict(data) == case
    data["check"]["adr_state"] = 1  # a hand-edited record would judge another state
    with pytest.raises(ConfigError, match="crash index and crash state give id"):
        Case.from_dict(data)


def test_the_export_of_a_state_judges_exactly_that_state() -> None:
    case = [c for c in scenario_cases() if c.adr_state == 2 and c.crash_index == 1][0]
    text = export_case_scenario(case)
    assert "adr_state = 2" in text and f"crash state {case.crash_state}" in text
    (only,) = expand(parse_scenario(text.encode(), Path("e.toml")))
    assert only.check == case.check and only.crash_state == case.crash_state and only.seed == case.seed


def test_adr_state_beyond_adr_states_is_refused() -> None:
    with pytest.raises(ConfigError, match="adr_state 3 is beyond adr_states = 2"):
        scenario_cases(SCENARIO.replace("adr_states = 2", "adr_states = 2\nadr_state = 3"))


@pytest.mark.parametrize(("exclude", "message"), [
    ('{ persistence = "pmem" }', "is not among the matrix values of 'persistence'"),
    ('{ records = 3 }', "'records' is not a matrix key"),
    ('{ fs = "ext4" }', "drops every cell"),
])
def test_bad_exclude_rules_are_refused(exclude: str, message: str) -> None:
    text = SCENARIO.replace('where = { persistence = "eadr", flush = "none" }', f"where = {exclude}", 1)
    with pytest.raises(ConfigError, match=message):
        scenario_cases(text)


def test_the_states_of_one_crash_point_share_its_workload_run_and_its_cut() -> None:
    cases = [c for c in scenario_cases() if c.cell["persistence"] == "adr" and c.cell["flush"] == "none"]
    assert [len(group) for group in plan_tasks(cases, None)] == [6]
    assert [len(group) for group in plan_tasks(cases, 1)] == [3, 3]  # cuts_per_run counts crash points
    keys = [_cut_key(c.check) for c in cases]
    assert len(set(keys)) == 2 and keys[:3] == [keys[0]] * 3
    first = cases[:3]
    assert _adr_cut_spec([c.check for c in first]) == AdrCutSpec(2, first[0].seed, frozenset({0, 1, 2}))
    assert _adr_cut_spec([first[2].check]).wanted == frozenset({2})  # a repro writes only its state's image
    whole = replace(first[0].check, adr_state=None)  # type: ignore[type-var]
    assert _adr_cut_spec([whole]).wanted is None  # pmemlab run: every state


def test_shipped_mapsync_adr_cells_share_runs() -> None:
    cases = [c for c in expand(load_scenario(scenarios_dir() / "mapsync.toml")) if c.cell["persistence"] == "adr"]
    groups = plan_tasks(cases, None)
    assert [len(g) for g in groups] == [5, 5, 5, 5]
    assert all(len({c.crash_index for c in g}) == 1 and len({c.seed for c in g}) == 1 for g in groups)


def test_slot_labels() -> None:
    assert slot_label(0, 9) == "adr:drop-all" and slot_label(3, 9) == "adr:subset-3:seed-9"


def record(state: str | None, met: bool, crash: int = 0) -> CaseRecord:
    case = {"crash_state": state} if state else {}
    return CaseRecord(id=f"{state}-{crash}", campaign_id="c", cell_key="x", repeat=0, crash_index=crash, seed=1,
                      expect="VIOLATION", position=0, status="finished", verdict="VIOLATION" if met else "PASS",
                      met_expectation=met, case=case)


def test_states_are_listed_and_compared_one_by_one() -> None:
    drop, other = record("adr:drop-all", True), record("adr:subset-1:seed-1", False)
    assert drop.crash_state == "adr:drop-all" and drop.to_dict()["crash_state"] == "adr:drop-all"
    assert other.title == "x repeat 0 crash point 0 adr:subset-1:seed-1"
    # two states of one cut are two results, not two repeats of one: one unmet state is NOT MET, not FLAKY
    assert cell_state([drop, other]) is CellState.NOT_MET
    assert cell_state([drop, record("adr:subset-1:seed-1", True)]) is CellState.MET
