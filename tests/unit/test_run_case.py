"""The campaign runner's bookkeeping without QEMU: INFRA-ERROR retries, a full disk, a kind that
crashes, Ctrl-C, and a shared workload run's recoveries. The kind is a stand-in whose `run`
returns prepared results; everything else (cases, store, scheduler) is the real thing."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest

import lab.attempt as attempt
import lab.campaign as campaign
from lab.campaign import CampaignContext, NoProgress, run_case, run_cases
from lab.cases import Case, expand
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.scenario import load_scenario
from lab.oracles.finding import Finding
from lab.store.db import ResultsStore
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.spec import Accel
from lab.workloads.catalog import get_kind

REPO = Path(__file__).resolve().parents[2]


class FakeImage:
    id = "img"
    kernel_version = "6.1.0-test"


def result_for(case: Case, run_dir: Path, verdict: Verdict, error: str | None = None,
               errno_: int | None = None) -> WorkloadResult:
    return WorkloadResult(case.workload, case.check.to_dict(), run_dir, "img", "6.1.0-test", "tcg", verdict=verdict,
                          error=error, errno=errno_, status="failed" if error else "complete")


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[CampaignContext, list[Case]]]:
    def make(scenario: str, run: Callable[..., WorkloadResult], power_cut: bool = True) -> tuple[CampaignContext,
                                                                                                list[Case]]:
        cases = expand(load_scenario(REPO / "scenarios" / scenario))
        kind = get_kind(cases[0].workload)
        fake = replace(kind, run=run, power_cut=kind.power_cut if power_cut else None)
        monkeypatch.setattr(campaign, "get_kind", lambda name: fake)
        monkeypatch.setattr(attempt, "get_kind", lambda name: fake)
        store = ResultsStore.open(f"sqlite:///{tmp_path}/results.db")
        store.create_campaign(campaign_id="c1", scenario_name="s", scenario_path=scenario, scenario_text="",
                              scenario_hash="h", image_id="img", kernel_version="k", accelerator="tcg", jobs=1,
                              cases=[c.to_dict() for c in cases])
        ctx = CampaignContext("c1", FakeImage(), AccelVerdict(Accel.TCG, "test"), store,  # type: ignore[arg-type]
                              tmp_path / "runs")
        return ctx, cases
    return make


def attempts(ctx: CampaignContext, case: Case) -> list[Any]:
    return list(next(c for c in ctx.store.get_campaign("c1").cases if c.id == case.id).attempts)


def test_infra_error_is_retried_then_the_pass_counts(setup: Any) -> None:
    calls: list[int] = []

    def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
        calls.append(1)
        verdict = Verdict.INFRA_ERROR if len(calls) == 1 else Verdict.PASS
        return result_for(case, run_dir, verdict, "QEMU said no" if len(calls) == 1 else None)

    ctx, cases = setup("smoke.toml", run)
    case = cases[0]
    outcome = run_case(ctx, case, "machine 1", NoProgress())
    assert outcome.result is not None and outcome.result.verdict is Verdict.PASS and outcome.attempts == 2
    tries = attempts(ctx, case)
    assert [a.verdict for a in tries] == ["INFRA-ERROR", "PASS"] and len(calls) == 2


def test_retries_are_bounded(setup: Any) -> None:
    cases: list[Case]  # declared first: the fake runner below reads it
    ctx, cases = setup("smoke.toml", lambda check, image, accel, run_dir, hooks:
                       result_for(cases[0], run_dir, Verdict.INFRA_ERROR, "broken host"))
    outcome = run_case(ctx, cases[0], "machine 1", NoProgress())
    assert outcome.result is not None and outcome.result.verdict is Verdict.INFRA_ERROR
    assert outcome.attempts == 1 + campaign.MAX_INFRA_RETRIES == len(attempts(ctx, cases[0]))


def hang_in(case: Case, run_dir: Path, phase: str) -> WorkloadResult:
    result = result_for(case, run_dir, Verdict.HANG, f"machine 'workload': the guest agent was not ready ({phase})")
    result.findings.append(Finding("deadline", Verdict.HANG, f"{phase}: not ready within 120 s", {"phase": phase}))
    return result


@pytest.mark.parametrize("phase", ["boot", "recovery_restore"])
def test_a_machine_that_never_came_up_is_tried_once_more(setup: Any, phase: str) -> None:
    """A one-off stall while a machine comes up is not called HANG: the case runs again, once."""
    calls: list[int] = []

    def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
        calls.append(1)
        return hang_in(case, run_dir, phase) if len(calls) == 1 else result_for(case, run_dir, Verdict.PASS)

    ctx, cases = setup("smoke.toml", run)
    case = cases[0]
    outcome = run_case(ctx, case, "machine 1", NoProgress())
    assert outcome.result is not None and outcome.result.verdict is Verdict.PASS and outcome.attempts == 2
    assert [a.verdict for a in attempts(ctx, case)] == ["HANG", "PASS"]


@pytest.mark.parametrize("phase, tries", [("boot", 2), ("workload", 1), ("recovery_mount", 1)])
def test_a_hang_is_final_when_it_repeats_or_the_kernel_was_running_the_check(setup: Any, phase: str,
                                                                             tries: int) -> None:
    """A kernel that hangs at boot every time is HANG after one more try; a hang in the workload or the
    recovery is the kernel's answer at once."""
    cases: list[Case]  # declared first: the fake runner below reads it
    ctx, cases = setup("smoke.toml", lambda check, image, accel, run_dir, hooks: hang_in(cases[0], run_dir, phase))
    outcome = run_case(ctx, cases[0], "machine 1", NoProgress())
    assert outcome.result is not None and outcome.result.verdict is Verdict.HANG and outcome.attempts == tries
    assert [a.verdict for a in attempts(ctx, cases[0])] == ["HANG"] * tries


def test_a_full_disk_stops_the_campaign_without_retrying(setup: Any) -> None:
    cases: list[Case]  # declared first: the fake runner below reads it
    ctx, cases = setup("smoke.toml", lambda check, image, accel, run_dir, hooks:
                       result_for(cases[0], run_dir, Verdict.INFRA_ERROR, "some words", errno.ENOSPC))
    outcome = run_case(ctx, cases[0], "machine 1", NoProgress())
    assert outcome.interrupted and ctx.stop.is_set() and "disk filled up" in ctx.stop_reason
    assert len(attempts(ctx, cases[0])) == 1


def test_a_crashing_kind_is_infra_error_with_its_traceback(setup: Any) -> None:
    def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
        raise KeyError("a bug in the kind")

    ctx, cases = setup("smoke.toml", run)
    outcome = run_case(ctx, cases[0], "machine 1", NoProgress())
    assert not outcome.interrupted and outcome.result is not None
    assert outcome.result.verdict is Verdict.INFRA_ERROR and "KeyError" in (outcome.result.error or "")
    assert "Traceback" in outcome.result.metrics["traceback"] and "a bug in the kind" in outcome.result.metrics["traceback"]
    assert not ctx.stop.is_set()


def test_ctrl_c_in_a_case_is_an_interruption_not_a_result(setup: Any) -> None:
    def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
        raise KeyboardInterrupt

    ctx, cases = setup("smoke.toml", run)
    outcome = run_case(ctx, cases[0], "machine 1", NoProgress())
    assert outcome.interrupted and outcome.result is None and ctx.stop.is_set()


def test_a_failed_recovery_reruns_its_case_alone(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared workload run's case whose recovery is INFRA-ERROR goes back to the queue and runs alone."""
    alone: list[str] = []

    def run(check: Any, image: Any, accel: Any, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
        case = next(c for c in cases if c.check == check)
        alone.append(case.id)
        return result_for(case, run_dir, case.expect)

    def cut_workload(kind: str, power: Any, checks: list[Any], image: Any, accel: Any, run_dirs: list[Path],
                     hooks: RunHooks, workload_dir: Path) -> list[Any]:
        jobs = []
        for i, (check, run_dir) in enumerate(zip(checks, run_dirs)):
            case = next(c for c in cases if c.check == check)
            verdict = Verdict.INFRA_ERROR if i == 3 else case.expect
            jobs.append(lambda hooks, case=case, run_dir=run_dir, verdict=verdict: result_for(case, run_dir, verdict))
        return jobs

    ctx, cases = setup("mapsync-many-cuts.toml", run)
    monkeypatch.setattr(attempt, "cut_workload", cut_workload)
    outcomes = run_cases(ctx, cases, 2, NoProgress())
    assert len(outcomes) == len(cases) == 40
    assert all(o.result is not None and o.result.verdict is o.case.expect for o in outcomes)
    assert len(alone) == 4  # the fourth case of each of the 4 workload runs, retried alone
    summary = ctx.store.campaign_summary("c1")
    assert summary.exit_status == 0
