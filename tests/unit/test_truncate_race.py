"""The truncate-fault-race kind without QEMU: its guest helper (truncrace.c, compiled static and run
on the host against a regular file), its parameters and check, and its judges; plus the shared
power-cut flow's crash trigger."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from lab.crash.cut_flow import CrashTrigger
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.events import Event
from lab.guest.pmem import DaxMode, Filesystem
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.workloads import truncate_race as tr
from lab.workloads.base import CheckSpec, json_lines
from lab.workloads.catalog import kinds
from tests.unit.helpers import GuestProgram, run_with_events

PAGE = 4096


@pytest.fixture(scope="module")
def truncrace(guest_program: GuestProgram) -> Path:
    return guest_program("truncrace")


# -- the guest helper ---------------------------------------------------------------------

def test_helper_races_and_reports(truncrace: Path, tmp_path: Path) -> None:
    path = tmp_path / "race.dat"
    proc, events = run_with_events(truncrace, "--file", str(path), "--pages", "16", "--seconds", "0.5",
                                   "--progress-ms", "50")
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout.encode())
    assert lines[0] == {"event": "start", "pages": 16, "threads": 2, "seconds": 0.5, "seed": 1}
    assert [e[:2] for e in events] == [["MARK", "running"]] and events[0][2].isdigit()
    done = lines[-1]
    assert done["event"] == "done" and done["truncates"] > 0 and done["stores"] > 0
    assert done["stale"] == 0 and done["check_sigbus"] == 0 and done["read_errors"] == 0
    assert any(line["event"] == "progress" for line in lines), "progress lines carry the counts past a cut"
    assert path.stat().st_size % PAGE == 0 and path.stat().st_size <= 16 * PAGE
    findings, metrics = tr.pre_cut_findings(proc.stdout.encode(), ["running"])
    assert [f.verdict for f in findings] == [Verdict.PASS]
    assert metrics["counts"]["event"] == "done"


def test_injected_stale_pages_are_caught(truncrace: Path, tmp_path: Path) -> None:
    """The lab's self-test: a nonzero word beyond the truncation point must fail the check."""
    proc, events = run_with_events(truncrace, "--file", str(tmp_path / "race.dat"), "--pages", "8", "--seconds", "0.3",
                                   "--inject-stale")
    assert proc.returncode == 0, proc.stderr
    stale = [line for line in json_lines(proc.stdout.encode()) if line["event"] == "stale"]
    assert 0 < len(stale) <= 16 and stale[0]["value"] == "0x0000000000005eed"
    assert {s["via"] for s in stale} == {"mmap", "pread"}
    marks = [e[1] for e in events if e[0] == "MARK"]
    assert marks[0] == "running" and marks.count("stale") == len(stale)
    findings, _ = tr.pre_cut_findings(proc.stdout.encode(), marks)
    assert findings[0].verdict is Verdict.VIOLATION and "stale page" in findings[0].summary


@pytest.mark.parametrize("args, message", [
    (["--pages", "16"], "--file PATH is required"),
    (["--file", "x", "--pages", "1"], "--pages expects 2.."),
    (["--file", "x", "--threads", "0"], "--threads expects 1.."),
    (["--file", "x", "--seconds", "0"], "--seconds expects seconds in (0, 86400]"),
    (["--file", "x", "--bogus"], "unknown option '--bogus'"),
])
def test_helper_usage_errors(truncrace: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([str(truncrace), *args], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and message in proc.stderr


# -- parameters and checks ------------------------------------------------------------------

def spec(params: tr.TruncateRaceParams | None = None, crash: CrashPoint | None = CrashPoint(after_seconds=1.0),
         fs: Filesystem = Filesystem.EXT4) -> CheckSpec:
    return CheckSpec(fs, DaxMode.ALWAYS, params or tr.TruncateRaceParams(), crash, MachineShape(), seed=7)


def test_params_defaults_and_refusals() -> None:
    params = tr.TruncateRaceParams()
    assert (params.pages, params.threads, params.seconds) == (64, 2, 5.0)
    assert params.argv("/mnt/pmem/t.dat", 7) == ["truncrace", "--file", "/mnt/pmem/t.dat", "--pages", "64",
                                                 "--threads", "2", "--seconds", "5", "--seed", "7"]
    for bad in ({"pages": 1}, {"threads": 0}, {"seconds": 0}, {"records": 3}):
        with pytest.raises(ValidationError):
            tr.TruncateRaceParams.model_validate(bad)


def test_kind_is_in_the_catalog() -> None:
    kind = kinds()[tr.NAME]
    assert kind is tr.KIND and kind.uses_crash and kind.ack_count is None
    assert kind.params is tr.TruncateRaceParams


def test_check_round_trips_and_triggers_after_running() -> None:
    check = tr.make_check(spec(tr.TruncateRaceParams(pages=16, seconds=2.5)))
    assert check.trigger == CrashTrigger(mark="running", seconds=1.0)
    data = json.loads(json.dumps(check.to_dict()))
    assert data["kind"] == tr.NAME and data["params"] == {"pages": 16, "threads": 2, "seconds": 2.5}
    assert tr.check_from_dict(data) == check


def test_check_needs_a_time_offset() -> None:
    with pytest.raises(ConfigError, match="give a \\[crash\\] section"):
        tr.make_check(spec(crash=None))
    with pytest.raises(ConfigError, match="time offset"):
        tr.make_check(spec(crash=CrashPoint(after_ack=3)))


# -- judges ---------------------------------------------------------------------------------

def progress(**counts: int) -> bytes:
    base = {"stores": 100, "sigbus": 5, "truncates": 4, "stale": 0, "check_sigbus": 0, "read_errors": 0}
    return json.dumps({"event": "progress", "elapsed_s": 0.4, **base, **counts}).encode() + b"\n"


def test_last_progress_line_counts_and_a_torn_tail_is_ignored() -> None:
    out = progress(stores=1) + progress(stores=2) + b'{"event":"progress","sto'
    counts = tr.last_counts(out)
    assert counts is not None and counts["stores"] == 2 and counts["event"] == "progress"
    assert tr.last_counts(b"") is None


@pytest.mark.parametrize("stdout, marks, verdict, words", [
    (progress(), ["running"], Verdict.PASS, "4 truncate cycles"),
    (progress(stale=2), ["running"], Verdict.VIOLATION, "2 stale page"),
    (progress(), ["running", "stale"], Verdict.VIOLATION, "1 stale page"),  # the MARK beat the progress line
    (progress(check_sigbus=1), ["running"], Verdict.VIOLATION, "SIGBUS on reads inside EOF"),
    (progress(read_errors=3), ["running"], Verdict.VIOLATION, "pread(2) error"),
    (progress(truncates=0), ["running"], Verdict.INFRA_ERROR, "did not run"),
    (b"", ["running"], Verdict.INFRA_ERROR, "no counts"),
])
def test_pre_cut_findings(stdout: bytes, marks: list[str], verdict: Verdict, words: str) -> None:
    findings, _ = tr.pre_cut_findings(stdout, marks)
    assert findings[0].verdict is verdict and words in findings[0].summary


def test_stale_reports_name_the_pages() -> None:
    line = json.dumps({"event": "stale", "truncate": 3, "page": 9, "cut_pages": 5, "via": "mmap",
                       "offset": 8, "value": "0x1"}).encode() + b"\n"
    findings, metrics = tr.pre_cut_findings(progress(stale=1) + line, ["running", "stale"])
    assert findings[0].verdict is Verdict.VIOLATION and "pages [9]" in findings[0].summary
    assert metrics["stale_reports"][0]["page"] == 9


@pytest.mark.parametrize("size, data, ok, verdict, words", [
    (16 * PAGE, bytes(16 * PAGE), True, Verdict.PASS, "16 of 64 pages"),
    (0, b"", True, Verdict.PASS, "0 of 64 pages"),
    (None, None, False, Verdict.VIOLATION, "missing"),
    (PAGE + 1, bytes(PAGE + 1), True, Verdict.VIOLATION, "never set"),
    (65 * PAGE, bytes(65 * PAGE), True, Verdict.VIOLATION, "never set"),
    (2 * PAGE, bytes(PAGE), False, Verdict.VIOLATION, "does not read back"),
])
def test_judge_file(size: int | None, data: bytes | None, ok: bool, verdict: Verdict, words: str) -> None:
    finding = tr.judge_file(size, data, ok, 64, "cat: Input/output error")
    assert finding.verdict is verdict and words in finding.summary


# -- the shared flow's crash trigger ---------------------------------------------------------

def test_crash_trigger_from_points_and_matching() -> None:
    ack = CrashTrigger.from_point(CrashPoint(after_ack=4), "running")
    assert ack == CrashTrigger(ack=4) and ack.describe() == "after ACK 4"
    assert ack.matches(Event("ACK", "4", 1, 0.0)) and ack.matches(Event("ACK", "9", 1, 0.0))
    assert not ack.matches(Event("ACK", "3", 1, 0.0)) and not ack.matches(Event("MARK", "running", 1, 0.0))
    timed = CrashTrigger.from_point(CrashPoint(after_seconds=1.5), "running")
    assert timed.describe() == "1.5 s after MARK running"
    assert timed.matches(Event("MARK", "running", 1, 0.0)) and not timed.matches(Event("MARK", "stale", 1, 0.0))
    assert CrashTrigger(mark="checked").describe() == "at MARK checked"


@pytest.mark.parametrize("kwargs", [{}, {"ack": 1, "mark": "m"}, {"seconds": 1.0, "ack": 2}, {"ack": -1},
                                    {"mark": "m", "seconds": -1.0}])
def test_crash_trigger_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CrashTrigger(**kwargs)  # type: ignore[arg-type]
