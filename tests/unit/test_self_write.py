"""write-from-own-mapping without QEMU: parsing and judging the helper's lines, the check, the helper itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.agent import CommandResult
from lab.guest.pmem import DaxMode, Filesystem
from lab.paths import images_dir
from lab.store.records import CaseRecord
from lab.verdict import Verdict, combine
from lab.vm.boot import MachineShape
from lab.workloads import catalog
from lab.workloads.base import CheckSpec
from lab.workloads.self_write import KIND, SelfWriteCheck, SelfWriteParams, check_from_dict, judge, render_html
from tests.unit.helpers import GuestProgram, stored_case

PATTERNS = ["same-range", "whole-page-self", "overlap-forward"]


def _line(pattern: str, **kw: Any) -> dict[str, Any]:
    base = {"pattern": pattern, "ok": True, "bytes": 4096, "expected_bytes": 4096, "src": 4096, "dst": 4096,
            "warm": False, "errno": None, "matches": "snapshot", "mismatch_at": None,
            "in_order_mismatch_at": None, "write_us": 12.5, "what": "..."}
    return {**base, **kw}


def _stdout(lines: list[dict[str, Any]], dax: bool = True, begun_extra: str | None = None,
            done: bool = True) -> str:
    out = [{"event": "start", "size_pages": 4, "dax": dax, "patterns": PATTERNS}]
    for line in lines:
        out += [{"event": "begin", "pattern": line["pattern"]}, line]
    if begun_extra:
        out.append({"event": "begin", "pattern": begun_extra})
    elif done:
        out.append({"event": "done", "patterns": len(lines), "failed": sum(not d["ok"] for d in lines)})
    return "".join(json.dumps(d) + "\n" for d in out)


def _outcome(stdout: str, code: int = 0, signal: int = 0, timed_out: bool = False) -> CommandResult:
    return CommandResult(["selfwrite"], code, signal, timed_out, stdout.encode(), b"", 0.5)


ALL_OK = [_line(p) for p in PATTERNS]


def test_all_patterns_ok_is_pass() -> None:
    findings, metrics = judge(_outcome(_stdout(ALL_OK)), 120, DaxMode.ALWAYS)
    assert [f.verdict for f in findings] == [Verdict.PASS]
    assert "3 patterns" in findings[0].summary and "DAX" in findings[0].summary
    assert metrics["file_dax"] is True and [d["pattern"] for d in metrics["patterns"]] == PATTERNS


def test_a_mismatch_line_is_a_violation_naming_the_pattern() -> None:
    bad = _line("overlap-forward", ok=False, matches=None, mismatch_at=5000, in_order_mismatch_at=4700,
                got=17, want=99)
    findings, _ = judge(_outcome(_stdout([ALL_OK[0], ALL_OK[1], bad]), code=1), 120, DaxMode.ALWAYS)
    assert combine(f.verdict for f in findings) is Verdict.VIOLATION
    [f] = findings
    assert f.summary.startswith("pattern overlap-forward:") and "offset 5000" in f.summary
    assert "byte 17, reference 99" in f.summary and f.details["mismatch_at"] == 5000


def test_a_failed_or_short_write_is_a_violation() -> None:
    failed = _line("same-range", ok=False, bytes=-1, errno="EFAULT")
    short = _line("whole-page-self", ok=False, bytes=100)
    findings, _ = judge(_outcome(_stdout([failed, short, ALL_OK[2]]), code=1), 120, DaxMode.ALWAYS)
    assert [f.verdict for f in findings] == [Verdict.VIOLATION, Verdict.VIOLATION]
    assert "failed with EFAULT" in findings[0].summary
    assert "wrote 100 bytes" in findings[1].summary


def test_a_timed_out_pattern_is_a_hang_naming_it() -> None:
    stdout = _stdout([ALL_OK[0]], begun_extra="whole-page-self")
    findings, metrics = judge(_outcome(stdout, code=-1, signal=9, timed_out=True), 120, DaxMode.NEVER)
    assert combine(f.verdict for f in findings) is Verdict.HANG
    assert "pattern whole-page-self" in findings[0].summary and "120 s" in findings[0].summary
    assert findings[0].details["pending"] == ["whole-page-self"]
    assert len(metrics["patterns"]) == 1


def test_killed_by_a_signal_during_a_write_is_a_violation() -> None:
    stdout = _stdout([ALL_OK[0]], begun_extra="whole-page-self")
    findings, _ = judge(_outcome(stdout, code=-1, signal=7), 120, DaxMode.ALWAYS)
    assert [f.verdict for f in findings] == [Verdict.VIOLATION]
    assert "pattern whole-page-self" in findings[0].summary and "signal 7" in findings[0].summary


def test_missing_patterns_or_no_start_is_infra_error() -> None:
    findings, _ = judge(_outcome(_stdout(ALL_OK[:2], done=False), code=4), 120, DaxMode.ALWAYS)
    assert combine(f.verdict for f in findings) is Verdict.INFRA_ERROR
    assert "missing: overlap-forward" in findings[-1].summary
    findings, _ = judge(_outcome("selfwrite: usage\n", code=2), 120, DaxMode.ALWAYS)
    assert [f.verdict for f in findings] == [Verdict.INFRA_ERROR]


def test_a_cell_that_is_not_what_it_names_is_infra_error() -> None:
    findings, _ = judge(_outcome(_stdout(ALL_OK, dax=True)), 120, DaxMode.NEVER)
    assert [f.verdict for f in findings] == [Verdict.INFRA_ERROR]
    assert "dax=never" in findings[0].summary
    findings, _ = judge(_outcome(_stdout(ALL_OK, dax=False)), 120, DaxMode.NEVER)
    assert [f.verdict for f in findings] == [Verdict.PASS] and "page cache" in findings[0].summary


def test_render_html_tabulates_patterns_by_cell(tmp_path: Path) -> None:
    def case(fs: str, dax: str, lines: list[dict[str, Any]], expected: list[str], verdict: str) -> CaseRecord:
        result = {"kind": "write-from-own-mapping", "verdict": verdict, "check": {"fs": fs, "dax": dax},
                  "metrics": {"patterns": lines, "expected_patterns": expected}}
        return stored_case(result)

    bad = _line("overlap-forward", ok=False, matches=None, mismatch_at=5000)
    html = render_html([case("ext4", "always", ALL_OK, PATTERNS, "PASS"),
                        case("xfs<i>", "never", [ALL_OK[0], bad], PATTERNS, "HANG")], tmp_path)
    assert "<th>ext4 dax=always</th>" in html and "xfs&lt;i&gt; dax=never" in html
    assert "ok (snapshot, 12 us)" in html and "MISMATCH at 5000" in html
    assert "not finished (HANG)" in html  # whole-page-self never reported in the xfs cell
    assert "No pattern results" in render_html([], tmp_path)


# -- the check ---------------------------------------------------------------------------------

def test_kind_is_in_the_catalog() -> None:
    kind = catalog.get_kind("write-from-own-mapping")
    assert kind is KIND and not kind.uses_crash and kind.params is SelfWriteParams
    assert kind.render_html is render_html


def test_params() -> None:
    assert SelfWriteParams().size_pages == 4
    assert SelfWriteParams(size_pages=8).argv("/mnt/pmem/d") == ["selfwrite", "--dir", "/mnt/pmem/d",
                                                                 "--size-pages", "8"]
    with pytest.raises(ValidationError):
        SelfWriteParams(size_pages=3)
    with pytest.raises(ValidationError):
        SelfWriteParams(pattern="x")  # type: ignore[call-arg]


def _spec(**kw: Any) -> CheckSpec:
    base: dict[str, Any] = dict(fs=Filesystem.EXT4, dax=DaxMode.NEVER, params=SelfWriteParams(size_pages=6),
                                crash=None, shape=MachineShape(), seed=3)
    return CheckSpec(**{**base, **kw})


def test_make_check_round_trips_and_refuses_a_crash() -> None:
    check = KIND.make_check(_spec())
    assert isinstance(check, SelfWriteCheck) and check.dax is DaxMode.NEVER and check.params.size_pages == 6
    data = json.loads(json.dumps(check.to_dict()))
    assert data["kind"] == "write-from-own-mapping"
    assert check_from_dict(data) == check
    with pytest.raises(ConfigError, match="crash"):
        KIND.make_check(_spec(crash=CrashPoint(after_ack=1)))


# -- the helper on this host's page cache (the dax=never path, without a VM) --------------------

@pytest.fixture(scope="module")
def helper(guest_program: GuestProgram) -> Path:
    return guest_program("selfwrite")


def test_helper_on_the_host_passes_every_pattern(helper: Path, tmp_path: Path) -> None:
    argv = [str(helper)] + SelfWriteParams(size_pages=5).argv(str(tmp_path))[1:]
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    findings, metrics = judge(CommandResult(argv, proc.returncode, 0, False, proc.stdout, proc.stderr, 0), 60,
                              DaxMode.NEVER)
    assert [f.verdict for f in findings] == [Verdict.PASS], findings
    names = [d["pattern"] for d in metrics["patterns"]]
    assert names == metrics["expected_patterns"] and len(names) >= 10
    assert {"same-range", "whole-page-self", "overlap-forward", "hole-self", "extend"} <= set(names)
    # A forward overlap is only explained by the in-order copy; a backward one by both.
    matches = {d["pattern"]: d["matches"] for d in metrics["patterns"]}
    assert matches["overlap-forward"] == "in-order" and matches["overlap-backward"] == "snapshot"
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself


def test_helper_comparison_has_teeth(helper: Path, tmp_path: Path) -> None:
    """A corrupted result (one byte flipped after the write) must come back as a VIOLATION naming it."""
    argv = [str(helper), "--dir", str(tmp_path), "--inject-mismatch", "whole-page-self"]
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    assert proc.returncode == 1
    findings, _ = judge(CommandResult(argv, proc.returncode, 0, False, proc.stdout, proc.stderr, 0), 60,
                        DaxMode.NEVER)
    [f] = findings
    assert f.verdict is Verdict.VIOLATION and f.summary.startswith("pattern whole-page-self:")
    assert f.details["mismatch_at"] == 4096 + 2048


def test_helper_selects_patterns_and_refuses_unknown_ones(helper: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(helper), "--dir", str(tmp_path), "--pattern", "extend"], capture_output=True,
                          timeout=60, check=True)
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[0]["patterns"] == ["extend"] and lines[-1] == {"event": "done", "patterns": 1, "failed": 0}
    bad = subprocess.run([str(helper), "--dir", str(tmp_path), "--pattern", "nope"], capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"unknown pattern 'nope'" in bad.stderr


def test_helper_is_in_the_image_recipe() -> None:
    assert '"selfwrite" = "guest/selfwrite.c"' in (images_dir() / "debian12-pmem.toml").read_text()
