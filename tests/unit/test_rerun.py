"""Re-runs before a regression is called: stored re-run attempts, the cell states they make, and the
decision (lab/rerun.py) driven by a fake runner that stores each re-run's verdict as repro --record does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.compare import CellState, Change, cell_state, compare, render_text
from lab.errors import LabError
from lab.known_issues import KnownIssues
from lab.rerun import confirm_failures, failing_cases, repro_runner
from lab.store import CaseRecord, ResultsStore
from tests.seed import seed_pair

REGRESSED = "cfsext4-syncon-1"  # tests/seed.py: fs=ext4,sync=on, PASS -> VIOLATION


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    s = ResultsStore.open(f"sqlite:///{tmp_path}/results.db")
    seed_pair(s, tmp_path / "runs")
    yield s
    s.close()


class FakeRunner:
    """Stands in for the QEMU run only: stores each verdict through the real store, as repro --record."""

    def __init__(self, store: ResultsStore, tmp: Path, verdicts: list[str | Exception]) -> None:
        self.store, self.tmp, self.verdicts, self.calls = store, tmp, list(verdicts), []  # type: ignore[var-annotated]

    def __call__(self, case: CaseRecord) -> str:
        self.calls.append(case.id)
        got = self.verdicts.pop(0)
        if isinstance(got, Exception):
            raise got
        run_dir = self.tmp / f"rerun-{case.id}-{len(self.calls)}"
        run_dir.mkdir()
        self.store.add_rerun(case.campaign_id, case.id, run_dir,
                             {"verdict": got, "run_dir": str(run_dir), "findings": [], "timings": {"total": 1.0}})
        return got


def test_a_stored_rerun_keeps_the_case_verdict(store: ResultsStore, tmp_path: Path) -> None:
    store.add_rerun("cand2", REGRESSED, tmp_path, {"verdict": "PASS", "timings": {"total": 2.0}})
    case = store.get_case(REGRESSED, "cand2")
    assert (case.verdict, case.met_expectation, case.status) == ("VIOLATION", False, "finished")
    assert [a.rerun for a in case.attempts] == [False, True] and case.attempts[1].number == 2
    assert case.latest is case.attempts[0] and case.reruns == (case.attempts[1],)
    assert store.get_case(REGRESSED, "base1").reruns == ()  # only that campaign's case
    with pytest.raises(LabError, match="no case nope in campaign cand2"):
        store.add_rerun("cand2", "nope", tmp_path, {"verdict": "PASS"})


def _case(crash: int, verdict: str, reruns: list[str], expect: str = "PASS") -> CaseRecord:
    from lab.store.records import AttemptRecord

    attempts = tuple(AttemptRecord(id=i, campaign_id="c", case_id=f"x{crash}", number=i + 2, status="finished",
                                   verdict=v, started_at=None, finished_at=None, run_dir="", result={"rerun": True})
                     for i, v in enumerate(reruns))
    return CaseRecord(id=f"x{crash}", campaign_id="c", cell_key="x", repeat=0, crash_index=crash, seed=1,
                      expect=expect, position=crash, status="finished", verdict=verdict,
                      met_expectation=verdict == expect, attempts=attempts)


@pytest.mark.parametrize(("cases", "state"), [
    ([_case(0, "VIOLATION", [])], CellState.NOT_MET),
    ([_case(0, "VIOLATION", ["VIOLATION", "PASS"])], CellState.FLAKY),  # passed once on a re-run
    ([_case(0, "VIOLATION", ["VIOLATION", "VIOLATION"])], CellState.NOT_MET),  # failed every time
    ([_case(0, "VIOLATION", ["INFRA-ERROR", "INFRA-ERROR"])], CellState.NOT_MET),  # no evidence is no pass
    ([_case(0, "VIOLATION", ["PASS"]), _case(1, "VIOLATION", ["VIOLATION"])], CellState.NOT_MET),  # solid one wins
    ([_case(0, "PASS", ["VIOLATION"])], CellState.FLAKY),  # a re-run of a passing case can show flakiness too
])
def test_cell_state_reads_reruns(cases: list[CaseRecord], state: CellState) -> None:
    assert cell_state(cases) is state


def test_a_failing_case_that_passes_on_a_rerun_makes_its_cell_flaky(store: ResultsStore, tmp_path: Path) -> None:
    first = compare(store.get_campaign("base1"), store.get_campaign("cand2"))
    assert [c.id for c in failing_cases(first)] == [REGRESSED]  # not the still-failing or expected ones
    runner = FakeRunner(store, tmp_path, ["VIOLATION", "PASS", "VIOLATION"])
    said: list[str] = []
    outcome = confirm_failures(store, first, KnownIssues(()), 3, runner, said.append)
    assert runner.calls == [REGRESSED, REGRESSED]  # stopped at the first pass
    assert outcome.runs == 2 and outcome.failed_runs == 0
    cell = next(c for c in outcome.comparison.cells if c.cell_key == "fs=ext4,sync=on")
    assert cell.change is Change.FLAKY and cell.candidate is CellState.FLAKY
    assert outcome.comparison.exit_status == 0
    text = render_text(outcome.comparison)
    assert text.startswith("CHANGED: 1 flaky") and "regression" not in text.splitlines()[0]
    assert f"case {REGRESSED}: PASS -> VIOLATION (expected PASS; re-runs: VIOLATION, PASS)" in text
    assert "re-run 2/3 of case cfsext4-syncon-1 (fs=ext4,sync=on): PASS" in said[1]
    # the stored re-runs tell the same story to a later compare
    again = compare(store.get_campaign("base1"), store.get_campaign("cand2"))
    assert {c.cell_key: c.change for c in again.cells}["fs=ext4,sync=on"] is Change.FLAKY


def test_a_failure_that_fails_every_rerun_stays_a_regression(store: ResultsStore, tmp_path: Path) -> None:
    first = compare(store.get_campaign("base1"), store.get_campaign("cand2"))
    runner = FakeRunner(store, tmp_path, ["VIOLATION", LabError("machine would not boot")])
    said: list[str] = []
    outcome = confirm_failures(store, first, KnownIssues(()), 2, runner, said.append)
    assert outcome.runs == 2 and outcome.failed_runs == 1 and "no verdict: machine would not boot" in said[1]
    assert {c.cell_key: c.change for c in outcome.comparison.cells}["fs=ext4,sync=on"] is Change.REGRESSION
    assert outcome.comparison.exit_status == 1
    assert len(store.get_case(REGRESSED, "cand2").reruns) == 1


def test_no_reruns_asked_or_nothing_failing_runs_nothing(store: ResultsStore, tmp_path: Path) -> None:
    first = compare(store.get_campaign("base1"), store.get_campaign("cand2"))
    runner = FakeRunner(store, tmp_path, [])
    assert confirm_failures(store, first, KnownIssues(()), 0, runner, print).comparison is first
    same = compare(store.get_campaign("base1"), store.get_campaign("base1"))
    assert confirm_failures(store, same, KnownIssues(()), 2, runner, print).runs == 0 and runner.calls == []


def test_the_repro_runner_reads_repro_json_and_refuses_garbage() -> None:
    case = _case(0, "VIOLATION", [])
    seen: list[list[str]] = []

    def child(out: str, status: int) -> object:
        def run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
            seen.append(argv)
            assert env["PMEMLAB_DB"] == url_seen[-1]  # the URL goes by environment, never in argv
            return status, out
        return run

    url_seen = ["postgresql://lab:secret@db/pmemlab"]
    assert repro_runner(url_seen[0], "cand2", child('{"verdicts": ["PASS"]}', 0))(case) == "PASS"  # type: ignore[arg-type]
    assert seen[0][3:] == ["repro", "x0", "--campaign", "cand2", "--times", "1", "--record", "--json"]
    assert not any("secret" in a for a in seen[0])
    url_seen.append("u")
    with pytest.raises(LabError, match="printed no verdict"):
        repro_runner("u", "c", child("boom", 2))(case)  # type: ignore[arg-type]
    with pytest.raises(LabError, match="ended with status 2"):
        repro_runner("u", "c", child('{"verdicts": []}', 2))(case)  # type: ignore[arg-type]
