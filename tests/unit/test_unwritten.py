"""The unwritten-extents kind without QEMU: its guest helper (unwritten.c, compiled static and run
on the host against regular files, so without MAP_SYNC), the record layout the host shares with
it, its parameters and check, and its judges."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from lab.crash.cut_flow import CrashTrigger
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.workloads import unwritten_extents as uw
from lab.workloads.base import CheckSpec, json_lines
from lab.workloads.catalog import kinds
from tests.unit.helpers import GuestProgram, run_with_events

PAGE = uw.PAGE


@pytest.fixture(scope="module")
def unwritten(guest_program: GuestProgram) -> Path:
    return guest_program("unwritten")


# -- the guest helper ---------------------------------------------------------------------

def test_helper_writes_the_records_the_host_expects(unwritten: Path, tmp_path: Path) -> None:
    path, fill = tmp_path / "u.dat", tmp_path / "fill.dat"
    proc, events = run_with_events(unwritten, "--file", str(path), "--fill", str(fill), "--blocks", "12",
                                   "--fill-mib", "2", "--no-map-sync")
    assert proc.returncode == 0, proc.stderr
    lines = {line["event"]: line for line in json_lines(proc.stdout.encode())}
    assert lines["fill"]["bytes"] == 2 << 20 and lines["fill"]["enospc"] is False
    assert not fill.exists(), "the fill file is deleted once written"
    assert lines["reuse"]["blocks"] == 12
    assert lines["mmap"] == {"event": "mmap", "ok": True, "map_sync": False}
    assert lines["check"]["stage"] == "partial" and lines["check"]["lost"] == 0
    assert "bad" not in lines
    assert events[0][:2] == ["MARK", "checked"]
    assert [e[1] for e in events[1:]] == [str(i) for i in range(12)] and all(e[0] == "ACK" for e in events[1:])
    data = path.read_bytes()
    assert len(data) == 12 * PAGE
    assert [data[i * PAGE:(i + 1) * PAGE] == uw.expected_page(i) for i in range(12)] == [True] * 12
    findings, metrics = uw.recovery_findings(len(data), data, True, uw.UnwrittenParams(blocks=12), list(range(12)))
    assert [f.verdict for f in findings] == [Verdict.PASS, Verdict.PASS]
    assert metrics["blocks"] == {"written": 12}
    pre, _ = uw.pre_cut_findings(proc.stdout.encode(), ["checked"], uw.UnwrittenParams(blocks=12, fill_mib=0))
    assert [f.verdict for f in pre] == [Verdict.PASS]


def test_helper_without_a_dax_file_refuses_map_sync(unwritten: Path, tmp_path: Path) -> None:
    proc, events = run_with_events(unwritten, "--file", str(tmp_path / "u.dat"), "--fill", str(tmp_path / "f"),
                                   "--blocks", "2", "--fill-mib", "0")
    assert proc.returncode == 3
    mmap = [line for line in json_lines(proc.stdout.encode()) if line["event"] == "mmap"]
    assert mmap == [{"event": "mmap", "ok": False, "errno": "EOPNOTSUPP", "map_sync": True}]
    assert events == []


@pytest.mark.parametrize("args, message", [
    (["--fill", "f"], "--file PATH and --fill PATH are required"),
    (["--file", "u", "--fill", "f", "--blocks", "0"], "--blocks expects 1.."),
    (["--file", "u", "--fill", "f", "--flush", "sometimes"], "--flush expects auto|"),
])
def test_helper_usage_errors(unwritten: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([str(unwritten), *args], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and message in proc.stderr


# -- the record layout and block classes ------------------------------------------------------

def test_records_fit_their_page_and_never_look_stale() -> None:
    for i in range(600):
        off = uw.record_offset(i)
        assert off % 64 == 0 and off + uw.RECORD <= PAGE
        rec = uw.record(i)
        assert len(rec) == uw.RECORD and rec.startswith(b"UNWREC01") and not uw.has_fill(rec)
        assert int.from_bytes(rec[16:24], "little") == i * PAGE + off


def test_fill_word_counts_only_aligned() -> None:
    assert uw.has_fill(bytes(16) + uw.FILL_WORD)
    assert not uw.has_fill(bytes(3) + uw.FILL_WORD + bytes(5))
    assert uw.has_fill(b"x" + uw.FILL_WORD + bytes(7) + uw.FILL_WORD)


def torn(i: int, words: int) -> bytes:
    page = bytearray(PAGE)
    off = uw.record_offset(i)
    page[off:off + 8 * words] = uw.record(i)[:8 * words]
    return bytes(page)


@pytest.mark.parametrize("page, cls", [
    (uw.expected_page(5), "written"),
    (bytes(PAGE), "zeros"),
    (torn(5, 3), "torn"),
    (uw.FILL_WORD * (PAGE // 8), "stale"),
    (uw.expected_page(5)[:-8] + uw.FILL_WORD, "stale"),  # the rest of the block kept the old data
    (uw.expected_page(6), "corrupt"),  # another block's record
    (b"\x01" + bytes(PAGE - 1), "corrupt"),
    (bytes(PAGE - 1), "missing"),
])
def test_classify_block(page: bytes, cls: str) -> None:
    assert uw.classify_block(page, 5) == cls


def image(*pages: bytes) -> bytes:
    return b"".join(pages)


def test_recovery_names_stale_blocks_and_lost_acknowledged_ones() -> None:
    params = uw.UnwrittenParams(blocks=4)
    data = image(uw.expected_page(0), uw.FILL_WORD * (PAGE // 8), bytes(PAGE), torn(3, 2))
    findings, metrics = uw.recovery_findings(len(data), data, True, params, [0, 1, 2])
    by = {(f.oracle, f.verdict) for f in findings}
    assert ("stale-data", Verdict.VIOLATION) in by and ("persistence", Verdict.VIOLATION) in by
    stale = next(f for f in findings if f.oracle == "stale-data")
    assert "blocks [1]" in stale.summary and stale.details["stale_blocks"] == [1]
    lost = next(f for f in findings if f.oracle == "persistence")
    assert lost.details["lost"] == [1, 2] and "2 of 3 acknowledged" in lost.summary
    assert metrics["blocks"] == {"stale": 1, "torn": 1, "written": 1, "zeros": 1}


def test_recovery_pass_with_unacknowledged_zeros_and_torn_tail() -> None:
    params = uw.UnwrittenParams(blocks=3)
    data = image(uw.expected_page(0), torn(1, 5), bytes(PAGE))
    findings, _ = uw.recovery_findings(len(data), data, True, params, [0])
    assert [f.verdict for f in findings] == [Verdict.PASS, Verdict.PASS]


@pytest.mark.parametrize("size, data, ok, words", [
    (None, None, False, "missing"),
    (2 * PAGE, bytes(PAGE), False, "does not read back"),
    (PAGE, bytes(PAGE), True, "has size 4096"),
])
def test_recovery_file_problems(size: int | None, data: bytes | None, ok: bool, words: str) -> None:
    findings, _ = uw.recovery_findings(size, data, ok, uw.UnwrittenParams(blocks=2), [])
    assert findings[0].verdict is Verdict.VIOLATION and words in findings[0].summary


# -- what the helper saw before the cut ---------------------------------------------------------

def helper_stdout(reused: int = 8, stale_read: list[int] | None = None, bad: list[int] | None = None) -> bytes:
    stale_read = stale_read or []
    lines = [{"event": "fill", "bytes": 1 << 28, "enospc": False, "extents": 3, "seconds": 0.8, "free_wait_s": 0.0},
             {"event": "reuse", "reused_blocks": reused, "blocks": 8, "extents": 1},
             {"event": "mmap", "ok": True, "map_sync": True},
             {"event": "check", "stage": "fallocate", "stale_read": len(stale_read), "stale_read_blocks": stale_read,
              "stale_map": 0, "stale_map_blocks": [], "nonzero_read": 0, "nonzero_read_blocks": [],
              "nonzero_map": 0, "nonzero_map_blocks": []}]
    lines += [{"event": "bad", "block": b, "via": "mmap", "record_lost": False, "stale": True, "nonzero": False}
              for b in bad or []]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def verdicts(stdout: bytes, marks: list[str], params: uw.UnwrittenParams) -> dict[str, Verdict]:
    findings, _ = uw.pre_cut_findings(stdout, marks, params)
    return {f.oracle: f.verdict for f in findings}


def test_pre_cut_clean() -> None:
    assert verdicts(helper_stdout(), ["checked"], uw.UnwrittenParams(blocks=8)) == {
        "unwritten-read": Verdict.PASS, "stale-fill": Verdict.PASS}


def test_pre_cut_violations() -> None:
    params = uw.UnwrittenParams(blocks=8)
    assert verdicts(helper_stdout(stale_read=[2]), ["checked"], params)["unwritten-read"] is Verdict.VIOLATION
    assert verdicts(helper_stdout(bad=[4]), ["checked"], params)["partial-store"] is Verdict.VIOLATION
    findings, _ = uw.pre_cut_findings(helper_stdout(), ["checked", "bad-6"], params)
    partial = next(f for f in findings if f.oracle == "partial-store")
    assert partial.verdict is Verdict.VIOLATION and partial.details["blocks"] == [6]


def test_pre_cut_blind_check_is_not_a_pass() -> None:
    assert verdicts(helper_stdout(reused=0), ["checked"], uw.UnwrittenParams(blocks=8))["stale-fill"] \
        is Verdict.INFRA_ERROR
    assert "stale-fill" not in verdicts(helper_stdout(reused=0), [], uw.UnwrittenParams(blocks=8, fill_mib=0))
    assert verdicts(b"", [], uw.UnwrittenParams(blocks=8))["unwritten-read"] is Verdict.INFRA_ERROR


# -- parameters and checks ------------------------------------------------------------------

def spec(params: uw.UnwrittenParams | None = None, crash: CrashPoint | None = CrashPoint(after_ack=32)) -> CheckSpec:
    return CheckSpec(Filesystem.XFS, DaxMode.ALWAYS, params or uw.UnwrittenParams(), crash, MachineShape(), seed=3)


def test_params_defaults_argv_and_refusals() -> None:
    params = uw.UnwrittenParams()
    assert (params.blocks, params.fill_mib, params.map_sync) == (64, 256, True)
    assert params.argv("/m/u", "/m/f") == ["unwritten", "--file", "/m/u", "--fill", "/m/f", "--blocks", "64",
                                          "--fill-mib", "256"]
    assert uw.UnwrittenParams(map_sync=False).argv("/m/u", "/m/f")[-1] == "--no-map-sync"
    for bad in ({"blocks": 0}, {"fill_mib": -1}, {"records": 3}):
        with pytest.raises(ValidationError):
            uw.UnwrittenParams.model_validate(bad)


def test_kind_is_in_the_catalog_and_counts_one_ack_per_block() -> None:
    kind = kinds()[uw.NAME]
    assert kind is uw.KIND and kind.uses_crash
    assert kind.ack_count is not None and kind.ack_count(uw.UnwrittenParams(blocks=10)) == 10


def test_check_round_trips() -> None:
    check = uw.make_check(spec(uw.UnwrittenParams(blocks=16, fill_mib=64), CrashPoint(after_ack=8)))
    assert check.trigger == CrashTrigger(ack=8)
    data = json.loads(json.dumps(check.to_dict()))
    assert data["kind"] == uw.NAME and data["params"] == {"blocks": 16, "fill_mib": 64, "map_sync": True}
    assert uw.check_from_dict(data) == check
    timed = uw.make_check(spec(crash=CrashPoint(after_seconds=0.5)))
    assert timed.trigger == CrashTrigger(mark="checked", seconds=0.5)


def test_check_refusals() -> None:
    with pytest.raises(ConfigError, match="give a \\[crash\\] section"):
        uw.make_check(spec(crash=None))
    with pytest.raises(ConfigError, match="ACK 64 is never reached"):
        uw.make_check(spec(crash=CrashPoint(after_ack=64)))
