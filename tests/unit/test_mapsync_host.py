"""The MAP_SYNC workload helper (mapsync.c) and pmemlab-statx, compiled static
and run on the host against regular (non-DAX) files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from tests.unit.helpers import GuestProgram, run_with_events

PAGE = 4096


@pytest.fixture(scope="module")
def mapsync(guest_program: GuestProgram) -> Path:
    return guest_program("mapsync")


@pytest.fixture(scope="module")
def statx_bin(guest_program: GuestProgram) -> Path:
    return guest_program("statx")


def run_mapsync(binary: Path, *args: str, events: bool = True
                ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run it with PMEMLAB_EVENT_FD on a pipe; returns the process and event lines."""
    return run_with_events(binary, *args, events=events, timeout=30)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def expected_record(i: int, size: int, per_page: int) -> tuple[int, bytes]:
    off = (i // per_page) * PAGE + (i % per_page) * size
    body = b"PMEMREC1" + struct.pack("<QQII", i, off, size, 0)
    body += bytes((i * 131 + j) & 0xFF for j in range(32, size - 8))
    return off, body + struct.pack("<Q", fnv1a64(body))


def check_records(path: Path, n: int, size: int, per_page: int) -> None:
    data = path.read_bytes()
    for i in range(n):
        off, rec = expected_record(i, size, per_page)
        assert data[off:off + size] == rec, f"record {i} at offset {off}"


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_records_events_and_summary(mapsync: Path, tmp_path: Path) -> None:
    f = tmp_path / "data"
    proc, events = run_mapsync(mapsync, "--file", str(f), "--records", "10", "--no-map-sync")
    assert proc.returncode == 0, proc.stderr
    mmap_line, done = json_lines(proc.stdout)
    assert mmap_line == {"event": "mmap", "ok": True, "map_sync": False}
    assert done["event"] == "done" and done["records"] == 10
    assert done["flush"] in ("clwb", "clflushopt", "clflush")
    st = done["store_us"]
    assert isinstance(st, dict) and 0 <= st["min"] <= st["avg"] <= st["max"]

    assert events[0][:2] == ["MARK", "mmap-ok"]
    assert [e[:2] for e in events[1:]] == [["ACK", str(i)] for i in range(10)]
    stamps = [int(e[2]) for e in events]
    assert stamps == sorted(stamps)

    assert f.stat().st_size == 10 * PAGE
    check_records(f, 10, 64, 1)


def test_packed_records_prealloc_no_flush(mapsync: Path, tmp_path: Path) -> None:
    f = tmp_path / "packed"
    proc, events = run_mapsync(mapsync, "--file", str(f), "--records", "100",
                               "--record-size", "128", "--records-per-page", "32",
                               "--prealloc", "--flush", "none", "--no-map-sync")
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["flush"] == "none"
    assert len(events) == 101
    assert f.stat().st_size == 4 * PAGE  # ceil(100 / 32) pages
    check_records(f, 100, 128, 32)


def test_explicit_file_size_and_odd_layout(mapsync: Path, tmp_path: Path) -> None:
    f = tmp_path / "sized"
    proc, _ = run_mapsync(mapsync, "--file", str(f), "--records", "5", "--record-size", "1000",
                          "--records-per-page", "4", "--file-size", "20000", "--no-map-sync")
    assert proc.returncode == 0, proc.stderr
    assert f.stat().st_size == 20000
    check_records(f, 5, 1000, 4)


def test_runs_without_event_channel(mapsync: Path, tmp_path: Path) -> None:
    proc, _ = run_mapsync(mapsync, "--file", str(tmp_path / "f"), "--records", "3",
                          "--no-map-sync", events=False)
    assert proc.returncode == 0, proc.stderr
    check_records(tmp_path / "f", 3, 64, 1)


def test_map_sync_on_non_dax_file_is_eopnotsupp(mapsync: Path, tmp_path: Path) -> None:
    proc, events = run_mapsync(mapsync, "--file", str(tmp_path / "f"), "--records", "4")
    assert proc.returncode == 3
    assert json_lines(proc.stdout) == [
        {"event": "mmap", "ok": False, "errno": "EOPNOTSUPP", "map_sync": True}]
    assert proc.stderr.startswith("mmap: EOPNOTSUPP (")
    assert events == []  # nothing acknowledged


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.parametrize("mode", ["clwb", "clflushopt", "clflush"])
def test_explicit_flush_modes(mapsync: Path, tmp_path: Path, mode: str) -> None:
    if os.uname().machine not in ("x86_64", "i686"):
        pytest.skip("x86 cache-flush instructions")
    proc, _ = run_mapsync(mapsync, "--file", str(tmp_path / "f"), "--records", "3",
                          "--record-size", "256", "--flush", mode, "--no-map-sync")
    if mode != "clflush" and mode not in _cpu_flags():
        assert proc.returncode == 2 and f"--flush {mode}" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["flush"] == mode
    check_records(tmp_path / "f", 3, 256, 1)


def test_delay_between_records(mapsync: Path, tmp_path: Path) -> None:
    proc, events = run_mapsync(mapsync, "--file", str(tmp_path / "f"), "--records", "3",
                               "--delay-us", "20000", "--no-map-sync")
    assert proc.returncode == 0, proc.stderr
    acks = [int(e[2]) for e in events if e[0] == "ACK"]
    assert all(b - a >= 20_000_000 for a, b in zip(acks, acks[1:]))


@pytest.mark.parametrize("args,option", [
    (["--records", "1"], "--file"),
    (["--file", "F"], "--records"),
    (["--file", "F", "--records", "0"], "--records"),
    (["--file", "F", "--records", "ten"], "--records"),
    (["--file", "F", "--records", "1", "--record-size", "65"], "--record-size"),
    (["--file", "F", "--records", "1", "--record-size", "32"], "--record-size"),
    (["--file", "F", "--records", "1", "--record-size", "8192"], "--record-size"),
    (["--file", "F", "--records", "1", "--record-size", "4096", "--records-per-page", "2"],
     "--records-per-page"),
    (["--file", "F", "--records", "1", "--records-per-page", "0"], "--records-per-page"),
    (["--file", "F", "--records", "2", "--file-size", "4100"], "--file-size"),
    (["--file", "F", "--records", "1", "--flush", "wbinvd"], "--flush"),
    (["--file", "F", "--records", "1", "--delay-us", "-5"], "--delay-us"),
    (["--file", "F", "--records", "1", "--bogus"], "--bogus"),
    (["--file", "F", "--records"], "--records"),
])
def test_bad_options_exit_2_naming_the_option(mapsync: Path, tmp_path: Path,
                                               args: list[str], option: str) -> None:
    args = [str(tmp_path / "F") if a == "F" else a for a in args]
    proc, _ = run_mapsync(mapsync, *args, events=False)
    assert proc.returncode == 2, proc.stderr
    assert option in proc.stderr.splitlines()[0]
    assert not (tmp_path / "F").exists()  # rejected before touching the file


def test_open_failure_exits_4(mapsync: Path, tmp_path: Path) -> None:
    proc, _ = run_mapsync(mapsync, "--file", str(tmp_path / "no" / "such"), "--records", "1",
                          events=False)
    assert proc.returncode == 4 and "ENOENT" in proc.stderr


def test_statx_regular_file(statx_bin: Path, tmp_path: Path) -> None:
    f = tmp_path / 'we"ird\tname'
    f.write_bytes(b"x")
    proc = subprocess.run([str(statx_bin), str(f)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["path"] == str(f)
    assert info["dax"] is False
    assert str(info["attributes"]).startswith("0x")
    assert str(info["attributes_mask"]).startswith("0x")


def test_statx_missing_file(statx_bin: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(statx_bin), str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("statx: ENOENT")
