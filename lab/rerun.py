"""Re-run failing cases before calling a cell a regression (or a new failure).

A cell whose comparison class is bad (lab/compare.py: regression, new failure) has its failing cases
re-run up to K times each, through `pmemlab repro --record` (each re-run stored as an attempt of the
candidate's case). A case that meets its expectation on a re-run stops there: its crash point is
then flaky. The comparison is then made again from the store, so `pmemlab compare` and the
dashboard later tell the same story: a cell whose every failing crash point passed once is
"flaky" (reported apart, exit status 0); one with a crash point that failed every time stays a
regression.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from lab.paths import env_with_db
from lab.compare import Comparison, compare
from lab.errors import LabError
from lab.known_issues import KnownIssues
from lab.store.db import ResultsStore
from lab.store.records import CaseRecord

DEFAULT_RERUNS = 2
# Re-runs one stored case once and stores the attempt (ResultsStore.add_rerun); returns its verdict.
RerunCase = Callable[[CaseRecord], str]
Say = Callable[[str], None]


@dataclass(frozen=True)
class RerunOutcome:
    comparison: Comparison
    runs: int  # re-runs made
    failed_runs: int  # re-runs that gave no verdict (the runner failed): no evidence either way


def failing_cases(comparison: Comparison) -> list[CaseRecord]:
    """The candidate's cases that missed their expectation, in the cells the comparison calls bad."""
    bad = {cell.cell_key for cell in comparison.cells if cell.change.bad}
    return [c for c in comparison.candidate.cases
            if c.cell_key in bad and c.finished and c.met_expectation is False]


def confirm_failures(store: ResultsStore, comparison: Comparison, known: KnownIssues, reruns: int,
                     rerun_case: RerunCase, say: Say) -> RerunOutcome:
    runs = failed = 0
    for case in failing_cases(comparison) if reruns > 0 else []:
        for i in range(reruns):
            runs += 1
            try:
                verdict = rerun_case(case)
            except LabError as exc:
                failed += 1
                say(f"re-run {i + 1}/{reruns} of case {case.id} ({case.cell_key}): no verdict: {exc}")
                continue
            say(f"re-run {i + 1}/{reruns} of case {case.id} ({case.cell_key}): {verdict} "
                f"(expected {case.expect}, first run {case.verdict})")
            if verdict == case.expect:
                break  # once met is enough: this crash point is flaky
    if runs == 0:
        return RerunOutcome(comparison, 0, 0)
    again = compare(store.get_campaign(comparison.baseline.id), store.get_campaign(comparison.candidate.id), known)
    return RerunOutcome(again, runs, failed)


def _run_child(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, env=env)  # progress and errors: our stderr
    return proc.returncode, proc.stdout


def repro_runner(store_url: str, campaign_id: str,
                 run_child: Callable[[list[str], dict[str, str]], tuple[int, str]] = _run_child) -> RerunCase:
    """The real re-run: a `pmemlab repro CASE --campaign ID --record` child process (the same exact
    repro a user runs; it stores its attempt). run_child: (argv) -> (status, stdout)."""

    def run(case: CaseRecord) -> str:
        argv = [sys.executable, "-m", "lab.cli", "repro", case.id, "--campaign", campaign_id, "--times", "1",
                "--record", "--json"]
        status, out = run_child(argv, env_with_db(store_url))  # the URL may hold a password: not in argv
        try:
            verdicts = json.loads(out)["verdicts"]
        except (ValueError, KeyError, TypeError):
            raise LabError(f"repro {case.id} printed no verdict (status {status})") from None
        if status not in (0, 1) or len(verdicts) != 1:
            raise LabError(f"repro {case.id} ended with status {status}")
        return str(verdicts[0])

    return run
