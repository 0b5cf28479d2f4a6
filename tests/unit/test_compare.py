"""Comparing two campaigns: cell states, change classes, known issues, the text and JSON reports, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab.compare import Change, CellState, cell_state, classify, compare, render_text
from lab.errors import ConfigError
from lab.known_issues import KnownIssue, KnownIssues, kernel_key, load_known_issues
from lab.store import CaseRecord, ResultsStore
from tests.seed import add_campaign, seed_pair

REPO = Path(__file__).resolve().parents[2]


def case(crash: int, verdict: str | None, expect: str = "PASS", repeat: int = 0) -> CaseRecord:
    return CaseRecord(id=f"x-{crash}-{repeat}", campaign_id="c", cell_key="x", repeat=repeat, crash_index=crash,
                      seed=1, expect=expect, position=crash, status="finished" if verdict else "pending",
                      verdict=verdict, met_expectation=None if verdict is None else verdict == expect)


@pytest.mark.parametrize(("cases", "state"), [
    ([], CellState.ABSENT),
    ([case(0, "PASS"), case(1, "PASS")], CellState.MET),
    ([case(0, "PASS"), case(1, "VIOLATION")], CellState.NOT_MET),
    ([case(0, "VIOLATION", "VIOLATION")], CellState.MET),
    ([case(0, "PASS", "VIOLATION")], CellState.NOT_MET),  # a negative control that failed to fail
    ([case(0, "PASS"), case(0, "VIOLATION", repeat=1)], CellState.FLAKY),  # same crash point, both outcomes
    ([case(0, "PASS"), case(1, "INFRA-ERROR")], CellState.INFRA),
    ([case(0, "PASS"), case(1, None)], CellState.INFRA),  # unfinished: no verdict, not a pass
    ([case(0, "INFRA-ERROR"), case(1, "VIOLATION")], CellState.NOT_MET),  # a real failure wins over no evidence
    ([case(0, "INFRA-ERROR", "INFRA-ERROR")], CellState.MET),
])
def test_cell_state(cases: list[CaseRecord], state: CellState) -> None:
    assert cell_state(cases) is state


@pytest.mark.parametrize(("before", "after", "change"), [
    (CellState.MET, CellState.NOT_MET, Change.REGRESSION),
    (CellState.NOT_MET, CellState.MET, Change.FIXED),
    (CellState.NOT_MET, CellState.NOT_MET, Change.STILL_FAILING),
    (CellState.ABSENT, CellState.NOT_MET, Change.NEW_FAILURE),
    (CellState.INFRA, CellState.NOT_MET, Change.NEW_FAILURE),
    (CellState.INFRA, CellState.MET, Change.NEW_PASS),
    (CellState.ABSENT, CellState.MET, Change.APPEARED),
    (CellState.MET, CellState.ABSENT, Change.DISAPPEARED),
    (CellState.MET, CellState.FLAKY, Change.FLAKY),
    (CellState.MET, CellState.INFRA, Change.INFRA),
    (CellState.FLAKY, CellState.MET, Change.FIXED),
    (CellState.MET, CellState.MET, Change.UNCHANGED),
])
def test_classify(before: CellState, after: CellState, change: Change) -> None:
    assert classify(before, after) is change


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    s = ResultsStore.open(f"sqlite:///{tmp_path}/results.db")
    seed_pair(s, tmp_path / "runs")
    yield s
    s.close()


def test_compare_two_stored_campaigns(store: ResultsStore) -> None:
    result = compare(store.get_campaign("base1"), store.get_campaign("cand2"))
    changes = {c.cell_key: c.change for c in result.cells}
    assert changes == {"fs=ext4,sync=on": Change.REGRESSION, "fs=ext4,sync=off": Change.UNCHANGED,
                       "fs=xfs,sync=on": Change.FIXED, "fs=xfs,sync=off": Change.APPEARED,
                       "fs=ext2,sync=on": Change.DISAPPEARED}
    regression = next(c for c in result.cells if c.change is Change.REGRESSION)
    assert [(c.case_id, c.baseline, c.candidate) for c in regression.cases] == [
        ("cfsext4-syncon-1", "PASS", "VIOLATION")]
    assert result.exit_status == 1
    text = render_text(result)
    first = text.splitlines()[0]
    assert first.startswith("CHANGED: 1 regression") and "1 fixed" in first and "1 appeared" in first
    assert text.index("REGRESSION") < text.index("FIXED") < text.index("unchanged: 1 unchanged")
    assert "case cfsext4-syncon-1: PASS -> VIOLATION (expected PASS)" in text
    data = result.to_dict()
    assert data["counts"] == {"regression": 1, "fixed": 1, "appeared": 1, "disappeared": 1, "unchanged": 1}
    json.dumps(data)


def test_same_campaign_twice_is_no_change(store: ResultsStore) -> None:
    result = compare(store.get_campaign("base1"), store.get_campaign("base1"))
    assert render_text(result).startswith("NO CHANGE")
    assert result.exit_status == 0  # xfs,sync=on still failing is no regression
    assert {c.change for c in result.cells} == {Change.UNCHANGED, Change.STILL_FAILING}


def test_known_issue_turns_a_regression_into_known_and_expired_ones_are_reported(store: ResultsStore) -> None:
    known = KnownIssues((
        KnownIssue(cell="fs=ext4,*", reason="ext4 loses a record", scenario="map*", kernel_min="6.1.0-14",
                   fixed_in="6.1.0-20", link="https://bugs.example/1"),
        KnownIssue(cell="fs=xfs,*", reason="fixed long ago", fixed_in="6.1.0-10"),
        KnownIssue(cell="fs=ext4,*", reason="another scenario's", scenario="other"),
    ))
    result = compare(store.get_campaign("base1"), store.get_campaign("cand2"), known)
    cell = next(c for c in result.cells if c.cell_key == "fs=ext4,sync=on")
    assert cell.change is Change.KNOWN and cell.was is Change.REGRESSION and cell.known is known.issues[0]
    assert result.exit_status == 0
    assert [i.reason for i in result.expired] == ["fixed long ago"]
    text = render_text(result)
    assert "known issue (regression): ext4 loses a record <https://bugs.example/1>" in text
    assert "EXPIRED KNOWN ISSUES (1)" in text and "REGRESSION" not in text


def test_known_issue_outside_its_kernel_range_does_not_apply(store: ResultsStore) -> None:
    before = KnownIssues((KnownIssue(cell="fs=ext4,sync=on", reason="r", kernel_min="6.2"),))
    past = KnownIssues((KnownIssue(cell="fs=ext4,sync=on", reason="r", fixed_in="6.1.0-14"),))
    for known in (before, past):
        result = compare(store.get_campaign("base1"), store.get_campaign("cand2"), known)
        assert Change.REGRESSION in {c.change for c in result.cells}
    assert compare(store.get_campaign("base1"), store.get_campaign("cand2"), past).expired == past.issues


def test_a_flaky_cell_needs_an_intermittent_known_issue(tmp_path: Path) -> None:
    with ResultsStore.open(f"sqlite:///{tmp_path}/r.db") as s:
        add_campaign(s, "b", "6.1", {"x": ("PASS", ["PASS"])}, tmp_path)
        b = s.get_campaign("b")
    # a repeat of crash point 0 that failed: the same cell sometimes passes
    flaky = replace(b, cases=(*b.cases, case(0, "VIOLATION", repeat=1)))
    steady = KnownIssues((KnownIssue(cell="x", reason="steady"),))
    sometimes = KnownIssues((KnownIssue(cell="x", reason="sometimes", intermittent=True),))
    assert compare(b, flaky).cells[0].change is Change.FLAKY
    assert compare(flaky, flaky, steady).cells[0].change is Change.FLAKY
    assert compare(flaky, flaky, sometimes).cells[0].change is Change.KNOWN


def test_kernel_key() -> None:
    assert kernel_key("6.1.0-13-amd64") == (6, 1, 0, 13, 64)
    assert kernel_key("6.1.0-13-amd64") < kernel_key("6.1.0-14") and kernel_key("6.10") > kernel_key("6.9.12")


def test_known_issues_file(tmp_path: Path) -> None:
    good = tmp_path / "known.toml"
    good.write_text('[[issue]]\ncell = "fs=xfs,*"\nreason = "r"\nfixed_in = "6.2"\nintermittent = true\n')
    (issue,) = load_known_issues(good).issues
    assert issue.cell == "fs=xfs,*" and issue.intermittent and issue.scenario == "*"
    for text, where in [('[[issue]]\nreason = "r"\n', "issue[0].cell"),
                        ('[[issue]]\ncell = "x"\nreason = "r"\nintermittent = "yes"\n', "issue[0].intermittent"),
                        ('[[issue]]\ncell = "x"\nreason = "r"\nlinks = "u"\n', "issue[0].links"),
                        ('[[issue]\n', "not valid TOML")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=rf"^{bad}: .*") as info:
            load_known_issues(bad)
        assert where in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_known_issues(tmp_path / "missing.toml")


def pmemlab(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PMEMLAB_DATA": str(tmp), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=REPO)


def test_compare_command(store: ResultsStore, tmp_path: Path) -> None:
    db = store.url
    proc = pmemlab("compare", "base", "cand", "--db", db, tmp=tmp_path)  # prefixes
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("CHANGED: 1 regression")
    proc = pmemlab("compare", "base1", "cand2", "--db", db, "--json", tmp=tmp_path)
    assert proc.returncode == 1 and json.loads(proc.stdout)["counts"]["regression"] == 1
    known = tmp_path / "known.toml"
    known.write_text('[[issue]]\ncell = "fs=ext4,sync=on"\nreason = "known ext4 loss"\n')
    proc = pmemlab("compare", "base1", "cand2", "--db", db, "--known-issues", str(known), tmp=tmp_path)
    assert proc.returncode == 0 and "KNOWN (1)" in proc.stdout
    proc = pmemlab("compare", "base1", "cfsext4-syncon-0", "--db", db, tmp=tmp_path)
    assert proc.returncode == 2 and "is a case, not a campaign" in proc.stderr
    proc = pmemlab("compare", "base1", "nope", "--db", db, tmp=tmp_path)
    assert proc.returncode == 2 and "no campaign or case id starts with 'nope'" in proc.stderr
