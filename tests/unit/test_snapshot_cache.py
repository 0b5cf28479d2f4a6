"""The ready-snapshot cache collector: what can never be used goes, LRU beyond the cap goes, an entry
in use or being built never goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cli import cli
from lab.cli_cache import parse_size
from lab.errors import ConfigError
from lab.runner import snapshot_cache
from lab.vm.snapshot import MANIFEST, SNAPSHOT_FORMAT, qemu_identity

MB = 1024**2


def entry(root: Path, key: str, mb: int = 1, used_ago_s: float = 0.0, qemu: str | None = None,
          fmt: int = SNAPSHOT_FORMAT) -> Path:
    directory = root / key
    directory.mkdir(parents=True)
    (directory / "ram.img").write_bytes(os.urandom(mb * MB))  # allocated, not a hole
    identity = qemu if qemu is not None else qemu_identity("/bin/true")
    (directory / MANIFEST).write_text(json.dumps({"format": fmt, "key": key, "inputs": {"qemu": identity}}))
    stamp = directory / snapshot_cache.USE_STAMP
    stamp.touch()
    when = time.time() - used_ago_s
    os.utime(stamp, (when, when))
    return directory


@pytest.fixture(autouse=True)
def _no_held_entries() -> object:
    yield
    snapshot_cache.release_all()


def test_entries_that_can_never_load_again_are_removed(tmp_path: Path) -> None:
    entry(tmp_path, "usable")
    entry(tmp_path, "oldformat", fmt=SNAPSHOT_FORMAT + 99)
    entry(tmp_path, "qemugone", qemu="/nonexistent/qemu-system-x86_64 QEMU 7.2 1 2")
    entry(tmp_path, "qemuchanged", qemu="/bin/true QEMU emulator version 1.0 1 2")
    broken = entry(tmp_path, "broken")
    (broken / MANIFEST).unlink()
    report = snapshot_cache.collect(tmp_path, max_bytes=10**12)
    why = {r["key"]: r["why"] for r in report.removed}
    assert set(why) == {"oldformat", "qemugone", "qemuchanged", "broken"}
    assert "is gone" in why["qemugone"] and "changed" in why["qemuchanged"] and "manifest" in why["broken"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["usable"]
    assert report.kept == 1 and report.freed_bytes >= 4 * MB


def test_least_recently_used_go_first_down_to_the_cap(tmp_path: Path) -> None:
    for i, age in enumerate([300, 100, 200, 0]):
        entry(tmp_path, f"e{i}", mb=2, used_ago_s=age)
    report = snapshot_cache.collect(tmp_path, max_bytes=5 * MB)
    assert [r["key"] for r in report.removed] == ["e0", "e2"]  # oldest first, until 2 x 2 MB fit in 5 MB
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["e1", "e3"]


def test_long_unused_entries_go_whatever_the_size(tmp_path: Path) -> None:
    entry(tmp_path, "old", used_ago_s=30 * 86400)
    entry(tmp_path, "new")
    report = snapshot_cache.collect(tmp_path, max_bytes=10**12, unused_days=14)
    assert [(r["key"], r["why"]) for r in report.removed] == [("old", "unused for 30 days")]


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    entry(tmp_path, "a", used_ago_s=10)
    entry(tmp_path, "b")
    report = snapshot_cache.collect(tmp_path, max_bytes=0, dry_run=True)
    assert len(report.removed) == 2 and (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()


def test_an_entry_in_use_or_being_built_is_never_removed(tmp_path: Path) -> None:
    used = entry(tmp_path, "used", used_ago_s=10)
    building = entry(tmp_path, "building", used_ago_s=20)
    mine = entry(tmp_path, "mine", used_ago_s=30)
    entry(tmp_path, "free")
    # another process's use (a shared lock) and another's build (the exclusive build lock)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys\n"
        f"a = os.open({str(tmp_path / 'used.use')!r}, os.O_RDWR | os.O_CREAT); fcntl.flock(a, fcntl.LOCK_SH)\n"
        f"b = os.open({str(tmp_path / 'building.lock')!r}, os.O_RDWR | os.O_CREAT); fcntl.flock(b, fcntl.LOCK_EX)\n"
        "print('held', flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        snapshot_cache.hold(mine)  # this process uses it
        report = snapshot_cache.collect(tmp_path, max_bytes=0)
    finally:
        holder.communicate("", timeout=10)
    assert [r["key"] for r in report.removed] == ["free"]
    assert sorted(report.in_use) == ["building", "mine", "used"]
    assert used.is_dir() and building.is_dir() and mine.is_dir()


def test_hold_marks_the_entry_used(tmp_path: Path) -> None:
    directory = entry(tmp_path, "k", used_ago_s=5000)
    snapshot_cache.hold(directory)
    assert time.time() - (directory / snapshot_cache.USE_STAMP).stat().st_mtime < 60


def test_builds_no_process_holds_are_removed_and_a_build_in_progress_is_kept(tmp_path: Path) -> None:
    (tmp_path / ".tmp-abc-111").mkdir()  # abandoned: nobody holds abc's build lock
    (tmp_path / ".tmp-def-222").mkdir()  # in progress: its builder holds def's build lock
    builder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys\n"
        f"b = os.open({str(tmp_path / 'def.lock')!r}, os.O_RDWR | os.O_CREAT); fcntl.flock(b, fcntl.LOCK_EX)\n"
        "print('held', flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout is not None and builder.stdout.readline().strip() == "held"
        report = snapshot_cache.collect(tmp_path)
    finally:
        builder.communicate("", timeout=10)
    assert [r["key"] for r in report.removed] == [".tmp-abc-111"]
    assert (tmp_path / ".tmp-def-222").is_dir() and not (tmp_path / ".tmp-abc-111").exists()


@pytest.mark.parametrize(("text", "expected"), [("8G", 8 * 1024**3), ("500M", 500 * MB), ("1.5GiB", 3 * 1024**3 // 2),
                                                ("0", 0), ("2048", 2048)])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_a_bad_size_is_one_line_naming_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path))
    result = CliRunner().invoke(cli, ["cache", "gc", "--max-size", "lots"])
    assert result.exit_code == 2 and "--max-size 'lots': expected a size such as 8G" in result.output
    with pytest.raises(ConfigError):
        parse_size("8 parsecs")


def test_cache_gc_command_reports_and_removes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path))
    entry(tmp_path / "snapshots", "gone", qemu="/nonexistent/qemu x 1 2")
    entry(tmp_path / "snapshots", "kept")
    result = CliRunner().invoke(cli, ["cache", "gc", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["key"] for r in data["removed"]] == ["gone"] and data["kept"] == 1
    assert not (tmp_path / "snapshots" / "gone").exists()
    listed = json.loads(CliRunner().invoke(cli, ["cache", "list", "--json"]).output)
    assert [e["key"] for e in listed["entries"]] == ["kept"] and listed["entries"][0]["stale"] is None


def test_the_eadr_qemu_follows_pmemlab_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lab.vm.boot import eadr_qemu

    monkeypatch.delenv("PMEMLAB_QEMU", raising=False)
    assert eadr_qemu() == ("qemu-system-x86_64", ())
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("")
    monkeypatch.setenv("PMEMLAB_QEMU", str(fake))
    assert eadr_qemu() == (str(fake), ())
    monkeypatch.setenv("PMEMLAB_QEMU", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"PMEMLAB_QEMU=.*nope.*expected the path of a qemu-system-x86_64, or 'adr'"):
        eadr_qemu()
