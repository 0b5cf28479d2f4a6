"""Minimize and bisect, searched with fake runners (the real ones boot machines: tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from lab.bisect import EXIT_CODES, Outcome, bisect, classify
from lab.cases import Case, expand, export_case_scenario
from lab.errors import ConfigError
from lab.minimize import minimize, with_changes
from lab.paths import scenarios_dir
from lab.scenario import load_scenario, parse_scenario
from lab.verdict import Verdict
from lab.workloads.mapsync import MapsyncParams

V, P, I = Verdict.VIOLATION, Verdict.PASS, Verdict.INFRA_ERROR


def control() -> Case:
    """smoke.toml's MAP_SYNC-off cell: 40 records, cut after ACK 20."""
    return next(c for c in expand(load_scenario(scenarios_dir() / "smoke.toml")) if c.cell["map_sync"] is False)


def ack(case: Case) -> int:
    """The ACK a case cuts after (every case here cuts after an ACK)."""
    assert case.crash is not None and case.crash.after_ack is not None
    return case.crash.after_ack


def mapsync_params(case: Case) -> MapsyncParams:
    assert isinstance(case.params, MapsyncParams)
    return case.params


def lost_records(case: Case) -> Verdict:
    """A deterministic fake bug: without MAP_SYNC, a cut after ACK 3 or later with 5+ records fails."""
    params = mapsync_params(case)
    return V if not params.map_sync and ack(case) >= 3 and params.records >= 5 else P


def test_minimize_finds_the_smallest_failing_case() -> None:
    lines: list[str] = []
    result = minimize(control(), V, 1, lost_records, progress=lines.append)
    small = result.smallest
    assert ack(small) == 3 and mapsync_params(small).records == 5
    assert mapsync_params(small).map_sync is False and small.cell["map_sync"] is False  # it matters: kept
    assert not result.interrupted and lines and lines[0].startswith("step 1: crash after ACK ")
    (again,) = expand(parse_scenario(export_case_scenario(small).encode(), Path("m.toml")))
    assert again.check == small.check and lost_records(again) is V


def test_a_flaky_failure_is_not_minimized_into_a_pass() -> None:
    calls = {"n": 0}

    def flaky(case: Case) -> Verdict:
        calls["n"] += 1
        if ack(case) >= 10:
            return V
        return V if calls["n"] % 2 else P  # below ACK 10 it fails every other run

    assert ack(minimize(control(), V, 1, flaky).smallest) < 10
    calls["n"] = 0
    assert ack(minimize(control(), V, 3, flaky).smallest) == 10


def test_ctrl_c_keeps_the_smallest_so_far() -> None:
    calls = {"n": 0}

    def interrupted(case: Case) -> Verdict:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return lost_records(case)

    result = minimize(control(), V, 1, interrupted)
    assert result.interrupted and len(result.steps) == 2
    assert ack(result.smallest) == 5  # ACK 10, then ACK 5 kept; the third run was cut short


def test_an_invalid_middle_is_never_taken_for_a_pass() -> None:
    """record_size must be a multiple of 8: a search from 128 that meets 68 (invalid) must still reach 64."""
    case = with_changes(control(), params={"record_size": 128})
    assert case is not None
    tried: list[int] = []

    def always(c: Case) -> Verdict:
        tried.append(mapsync_params(c).record_size)
        return V

    result = minimize(case, V, 1, always)
    assert mapsync_params(result.smallest).record_size == 64
    assert all(size % 8 == 0 for size in tried)


def test_invalid_candidates_are_not_run() -> None:
    case = control()
    assert with_changes(case, params={"records": 30}) is not None
    assert with_changes(case, params={"records": 20}) is None  # the cut after ACK 20 needs 21 records


def test_classify() -> None:
    assert classify([P, P], P) is Outcome.GOOD and classify([P, V], P) is Outcome.BAD
    assert classify([V, I], P) is Outcome.SKIP and classify([], P) is Outcome.SKIP
    assert EXIT_CODES == {Outcome.GOOD: 0, Outcome.BAD: 1, Outcome.SKIP: 125}


IMAGES = list("abcdefgh")


def probe_from(first_bad: str, skip: str = "") -> tuple[list[str], object]:
    probed: list[str] = []

    def probe(image: str) -> Sequence[Verdict]:
        probed.append(image)
        if image in skip:
            return [I]
        return [V] if image >= first_bad else [P]
    return probed, probe


@pytest.mark.parametrize("first_bad", list("bcdefgh"))
def test_bisect_finds_the_first_bad_image(first_bad: str) -> None:
    probed, probe = probe_from(first_bad)
    result = bisect(IMAGES, "a", "h", P, probe)  # type: ignore[arg-type]
    assert result.first_bad == first_bad and result.candidates == (first_bad,)
    assert probed[:2] == ["a", "h"] and len(probed) <= 2 + 3  # the ends, then log2(6 between) steps


def test_bisect_steps_around_a_skipped_image() -> None:
    _, probe = probe_from("e", skip="e")
    result = bisect(IMAGES, "a", "h", P, probe)  # type: ignore[arg-type]
    assert result.first_bad is None and result.candidates == ("e", "f")
    assert [s.outcome for s in result.steps if s.image == "e"] == [Outcome.SKIP]


def test_bisect_refuses_ends_that_are_not_good_and_bad() -> None:
    _, probe = probe_from("a")
    with pytest.raises(ConfigError, match="the case is bad on a, which was given as good"):
        bisect(IMAGES, "a", "h", P, probe)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must come before"):
        bisect(IMAGES, "h", "a", P, probe)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'z' is not in --images"):
        bisect(IMAGES, "a", "z", P, probe)  # type: ignore[arg-type]



def test_a_search_whose_middle_window_is_all_invalid_looks_further_up() -> None:
    """Valid values only from 1000 up (e.g. records >= the crash point): from [1, 1100) the middle's
    whole window is invalid; the search must go on above it and reach 1000, not stop at 1100."""
    from lab.minimize import Search

    tried: list[int] = []

    def make(value: int) -> Case | None:
        if value < 1000:
            return None
        tried.append(value)
        return control()

    search = Search(control(), V, 1, lambda case: V, lambda _: None)  # every valid candidate still fails
    search.smallest_int(1, 1100, make, "records")
    assert tried and min(tried) == 1000
