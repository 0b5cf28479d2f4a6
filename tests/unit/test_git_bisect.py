"""`bisect --git`: git's own search over a real repository, with a fake step that reads each commit's
fate from a file in the tree (the real step boots machines: tests/integration/test_bisect_git.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.bisect_step import KernelLayout, find_kernel, run_build
from lab.errors import ConfigError
from lab.git_bisect import bisect_git, git

# Each commit's fate is the file `fate`: good, bad, skip, die (SIGKILL itself), abort, crash (a
# traceback: status 1) or hang. Statuses as the real step's: 0, 100 (bad), 125, 255.
FAKE_STEP = """
import json, os, signal, subprocess, sys
fate = open("fate").read().split()[0]
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"commit": head, "outcome": fate}) + "\\n")
if fate == "die":
    os.kill(os.getpid(), signal.SIGKILL)
if fate == "crash":
    raise RuntimeError("a lab bug")
if fate == "hang":
    open(sys.argv[2], "w").write(str(os.getpid()))
    print("hanging", flush=True)
    signal.pause()
sys.exit({"good": 0, "bad": 100, "skip": 125, "abort": 255}[fate])
"""


def make_repo(root: Path, fates: list[str]) -> list[str]:
    """A repository with one commit per fate; the commit ids, oldest first."""
    root.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run = lambda *a: subprocess.run(["git", "-C", str(root), *a], check=True, capture_output=True,  # noqa: E731
                                    env={**os.environ, **env}, text=True).stdout.strip()
    run("init", "-q", "-b", "work")
    commits = []
    for index, fate in enumerate(fates):
        (root / "fate").write_text(f"{fate}\n{index}\n")  # the index: every commit changes it
        run("add", "fate")
        run("commit", "-q", "-m", f"commit {index}: {fate}")
        commits.append(run("rev-parse", "HEAD"))
    return commits


@pytest.fixture
def step(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "step.py"
    script.write_text(FAKE_STEP)
    steps = tmp_path / "steps.jsonl"
    return [sys.executable, str(script), str(steps), str(tmp_path / "hung.pid")], steps


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Ended within `within_s` (a signal takes effect when the process next runs): no such process,
    or a zombie its new parent has yet to reap."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def untouched(repo: Path, head: str) -> None:
    """As before the bisection: on branch `work` at `head`, no bisect in progress, nothing changed."""
    assert git(repo, "rev-parse", "HEAD").stdout.strip() == head
    assert git(repo, "symbolic-ref", "--short", "HEAD").stdout.strip() == "work"
    assert git(repo, "bisect", "log", check=False).returncode != 0
    assert git(repo, "status", "--porcelain").stdout == ""


@pytest.mark.parametrize("first", [1, 4, 9])
def test_git_finds_the_first_bad_commit(tmp_path: Path, step: tuple[list[str], Path], first: int) -> None:
    commits = make_repo(tmp_path / "repo", ["good"] * first + ["bad"] * (10 - first))
    lines: list[str] = []
    result = bisect_git(tmp_path / "repo", commits[0], "work", step[0], step[1], progress=lines.append)
    assert result.first_bad == commits[first] and result.candidates == (commits[first],)
    assert 1 <= len(result.steps) <= 4 and all(s["commit"] in commits[1:-1] for s in result.steps)
    assert f"git bisect good {result.steps[0]['commit']}" in result.log or "bisect bad" in result.log
    assert any("is the first bad commit" in line for line in lines)
    untouched(tmp_path / "repo", commits[-1])


def test_skips_and_a_step_killed_by_a_signal_are_stepped_around(tmp_path: Path, step: tuple[list[str], Path]) -> None:
    fates = ["good", "good", "die", "skip", "die", "skip", "good", "bad", "bad", "bad"]
    commits = make_repo(tmp_path / "repo", fates)
    result = bisect_git(tmp_path / "repo", commits[0], commits[-1], step[0], step[1])
    assert not result.aborted and result.first_bad == commits[7]
    untouched(tmp_path / "repo", commits[-1])


def test_skips_next_to_the_answer_leave_a_range(tmp_path: Path, step: tuple[list[str], Path]) -> None:
    commits = make_repo(tmp_path / "repo", ["good", "good", "skip", "skip", "bad", "bad"])
    result = bisect_git(tmp_path / "repo", commits[0], commits[-1], step[0], step[1])
    assert result.first_bad is None and set(result.candidates) == set(commits[2:5])
    assert {s["outcome"] for s in result.steps} >= {"skip"}
    untouched(tmp_path / "repo", commits[-1])


@pytest.mark.parametrize("fate", ["abort", "crash"])
def test_an_abort_or_a_crash_stops_git_and_resets(tmp_path: Path, step: tuple[list[str], Path], fate: str) -> None:
    """A traceback's status 1 is the lab failing, never "bad": the bisection stops instead."""
    commits = make_repo(tmp_path / "repo", ["good"] + [fate] * 6 + ["bad"])
    result = bisect_git(tmp_path / "repo", commits[0], commits[-1], step[0], step[1])
    assert result.first_bad is None and not result.candidates and "status" in result.aborted
    assert [s["outcome"] for s in result.steps] == [fate]
    assert "git bisect bad" not in result.log and result.log.count("# bad:") == 1  # only the given end is bad
    untouched(tmp_path / "repo", commits[-1])


def test_ctrl_c_stops_the_step_and_resets(tmp_path: Path, step: tuple[list[str], Path]) -> None:
    commits = make_repo(tmp_path / "repo", ["good"] + ["hang"] * 6 + ["bad"])
    pid_file = tmp_path / "hung.pid"

    def ctrl_c(line: str) -> None:
        if line == "hanging":  # the step is up and will never end by itself
            raise KeyboardInterrupt

    result = bisect_git(tmp_path / "repo", commits[0], commits[-1], step[0], step[1], progress=ctrl_c)
    assert result.interrupted and result.first_bad is None
    pid = int(pid_file.read_text())
    assert gone(pid)  # the hung step was stopped
    untouched(tmp_path / "repo", commits[-1])


def test_refuses_what_git_bisect_would_disturb(tmp_path: Path, step: tuple[list[str], Path]) -> None:
    repo = tmp_path / "repo"
    commits = make_repo(repo, ["good", "bad", "bad"])
    with pytest.raises(ConfigError, match="--bad-rev nosuch: not a commit"):
        bisect_git(repo, commits[0], "nosuch", *step)
    with pytest.raises(ConfigError, match="is not an ancestor"):
        bisect_git(repo, commits[2], commits[0], *step)
    with pytest.raises(ConfigError, match="not a git work tree"):
        bisect_git(tmp_path, commits[0], commits[1], *step)
    (repo / "fate").write_text("edited\n")
    with pytest.raises(ConfigError, match="uncommitted changes"):
        bisect_git(repo, commits[0], commits[2], *step)
    git(repo, "checkout", "fate")
    git(repo, "bisect", "start")
    with pytest.raises(ConfigError, match="already in progress"):
        bisect_git(repo, commits[0], commits[2], *step)
    git(repo, "bisect", "reset")
    assert not step[1].exists()  # no step ever ran
    untouched(repo, commits[-1])


def test_the_build_has_a_deadline_and_leaves_no_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    built = run_build(f"sleep 60 & echo $! > {pid_file}; wait", tmp_path, tmp_path / "build.log", 1.0)
    assert not built.ok and "deadline" in built.reason and built.seconds < 15
    assert gone(int(pid_file.read_text()))
    failed = run_build("echo compiling; exit 3", tmp_path, tmp_path / "build2.log", 30)
    assert not failed.ok and "status 3" in failed.reason and "compiling" in (tmp_path / "build2.log").read_text()
    assert find_kernel(tmp_path, KernelLayout()) == "the build left no kernel at arch/x86/boot/bzImage"


SCENARIO = """
[scenario]
name = "git-bisect-unit"
description = "a stored case for the git bisect command"
workload = "mapsync"
[workload]
records = 4
[crash]
strategy = "after_ack"
ack = 2
[[expect]]
verdict = "PASS"
"""


def test_the_real_step_skips_commits_whose_build_fails(tmp_path: Path) -> None:
    """The whole command, real step included: every build fails, so every commit is skipped and no
    machine is ever booted; the steps are the record of why."""
    from lab.cases import expand
    from lab.cli import cli
    from lab.scenario import parse_scenario
    from lab.store.db import ResultsStore

    repo = tmp_path / "repo"
    commits = make_repo(repo, ["a", "b", "c"])
    db = f"sqlite:///{tmp_path / 'results.db'}"
    scenario = parse_scenario(SCENARIO.encode(), tmp_path / "s.toml")
    (case,) = expand(scenario)
    store = ResultsStore.open(db)
    store.create_campaign(campaign_id="c1", scenario_name=scenario.name, scenario_path=str(scenario.path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id="x",
                          kernel_version="x", accelerator="tcg", jobs=1, cases=[case.to_dict()])
    store.close()
    result = CliRunner().invoke(cli, ["bisect", case.id, "--git", str(repo), "--good-rev", commits[0], "--bad-rev",
                                      commits[-1], "--build-cmd", "echo no compiler here; exit 2", "--db", db,
                                      "--json"])
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)
    assert found["first_bad"] is None and set(found["candidates"]) == set(commits[1:])
    assert found["steps"] and all(s["outcome"] == "skip" and "status 2" in s["reason"] for s in found["steps"])
    assert "no compiler here" in Path(found["steps"][0]["build_log"]).read_text()
    untouched(repo, commits[-1])
    unknown = CliRunner().invoke(cli, ["bisect", "nosuchcase", "--git", str(repo), "--good-rev", commits[0],
                                       "--bad-rev", commits[-1], "--build-cmd", "true", "--db", db])
    assert unknown.exit_code == 2 and "nosuchcase" in unknown.output
    half = CliRunner().invoke(cli, ["bisect", case.id, "--git", str(repo), "--good-rev", commits[0], "--db", db])
    assert half.exit_code == 2 and "--git needs --good-rev A, --bad-rev B and --build-cmd CMD" in half.output


def test_a_half_written_step_record_is_skipped(tmp_path: Path) -> None:
    from lab.git_bisect import read_steps

    steps = tmp_path / "steps.jsonl"
    steps.write_text('{"commit": "a", "outcome": "good"}\n{"commit": "b", "outc')  # killed mid-write
    assert read_steps(steps) == [{"commit": "a", "outcome": "good"}]
