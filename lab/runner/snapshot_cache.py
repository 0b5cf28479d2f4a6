"""Keeping the ready-snapshot cache bounded: each entry is ~290 MB allocated (guest RAM file and
template media), one per image x filesystem x machine shape x QEMU, so a day of image churn
left 11 GB behind. `pmemlab cache gc` and every new build remove what can never be used again
(broken entries, an older format, a QEMU binary that changed or is gone, builds abandoned by a
dead process) and then the least recently used entries down to a size cap.

An entry in use is never removed: every process that uses an entry holds a shared flock on
`<key>.use` for its lifetime (workers and campaigns reuse entries across cases), and a build
holds `<key>.lock`; the collector takes both exclusively without waiting, or skips the entry.
Lock files stay behind (0 bytes): unlinking a lock another process may be about to open would
let two builders in at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.vm.snapshot import MANIFEST, SNAPSHOT_FORMAT, qemu_identity

USE_STAMP = ".last-used"  # touched by the first use in each process: the LRU order
DEFAULT_MAX_BYTES = 8 * 1024**3  # `cache gc` without --max-size
AUTO_MAX_BYTES = 16 * 1024**3  # after a build: generous, only a guard against filling the disk
UNUSED_DAYS = 14.0  # entries nobody used for this long go, whatever the size

_held: dict[Path, int] = {}  # entry dir -> fd of its shared use lock, held until this process exits


@dataclass(frozen=True)
class Entry:
    key: str
    directory: Path
    allocated: int  # bytes on disk (the RAM file and media are sparse)
    last_used: float  # epoch seconds
    stale: str | None  # why it can never be used again, or None


@dataclass
class GcReport:
    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: int = 0
    kept_bytes: int = 0
    in_use: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(int(r["bytes"]) for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "freed_bytes": self.freed_bytes, "kept": self.kept,
                "kept_bytes": self.kept_bytes, "in_use": self.in_use}


def hold(directory: Path) -> None:
    """Mark `directory` used now and keep it from the collector while this process lives."""
    if directory in _held:
        return
    fd = os.open(directory.parent / f"{directory.name}.use", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a collector is removing this very entry
    _held[directory] = fd
    try:
        (directory / USE_STAMP).touch()
    except OSError:
        pass  # removed under us before we held it: the caller's load fails and rebuilds


def release_all() -> None:
    """For tests: drop this process's use locks."""
    for fd in _held.values():
        os.close(fd)
    _held.clear()


def allocated_bytes(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_blocks * 512
        except OSError:
            continue
    return total


def stale_reason(directory: Path) -> str | None:
    """Why the entry can never be loaded again (None: it still can)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest (broken or incomplete)"
    if manifest.get("format") != SNAPSHOT_FORMAT:
        return f"format {manifest.get('format')!r}, this lab writes {SNAPSHOT_FORMAT}"
    identity = str((manifest.get("inputs") or {}).get("qemu") or "")
    binary = identity.split(" ", 1)[0]  # the resolved path the state was saved with
    if not binary or not Path(binary).is_file():
        return f"its QEMU {binary or '(unknown)'} is gone"
    try:
        if identity != qemu_identity(binary):
            return f"its QEMU {binary} changed since it was saved"
    except LabError:
        return f"its QEMU {binary} no longer runs"
    return None


def entries(root: Path) -> list[Entry]:
    found: list[Entry] = []
    if not root.is_dir():
        return found
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        stamp = directory / USE_STAMP
        try:
            used = (stamp if stamp.exists() else directory).stat().st_mtime
        except OSError:
            continue  # removed while we looked (another collector, a rebuild)
        found.append(Entry(directory.name, directory, allocated_bytes(directory), used, stale_reason(directory)))
    return found


_TMP = re.compile(r"^\.tmp-(?P<key>[0-9a-f]+)-(?P<pid>\d+)$")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove(entry: Entry, why: str, report: GcReport, dry_run: bool) -> bool:
    """Remove one entry if no process uses or builds it (both locks taken without waiting)."""
    if entry.directory in _held:
        report.in_use.append(entry.key)
        return False
    fds: list[int] = []
    try:
        for suffix in (".lock", ".use"):
            fd = _try_lock(entry.directory.parent / f"{entry.key}{suffix}")
            if fd is None:
                report.in_use.append(entry.key)
                return False
            fds.append(fd)
        if not dry_run:
            shutil.rmtree(entry.directory, ignore_errors=True)
        report.removed.append({"key": entry.key, "why": why, "bytes": entry.allocated})
        return True
    finally:
        for fd in fds:
            os.close(fd)


def collect(root: Path, max_bytes: int = DEFAULT_MAX_BYTES, unused_days: float = UNUSED_DAYS,
            dry_run: bool = False, now: float | None = None) -> GcReport:
    """Remove stale entries, entries unused for `unused_days`, abandoned builds, then the least
    recently used entries until the rest fit in `max_bytes`."""
    now = time.time() if now is None else now
    report = GcReport()
    for tmp in sorted(root.glob(".tmp-*")) if root.is_dir() else []:
        match = _TMP.match(tmp.name)
        # Abandoned when no process holds its key's build lock (a pid test would be wrong across
        # PID namespaces sharing the cache, and after pid reuse).
        if match is None:
            continue
        fd = _try_lock(root / f"{match['key']}.lock")
        if fd is None:
            continue
        try:
            size = allocated_bytes(tmp)
            if not dry_run:
                shutil.rmtree(tmp, ignore_errors=True)
            report.removed.append({"key": tmp.name, "why": f"a build abandoned by process {match['pid']}",
                                   "bytes": size})
        finally:
            os.close(fd)
    left: list[Entry] = []
    for entry in entries(root):
        idle_days = (now - entry.last_used) / 86400
        why = entry.stale or (f"unused for {idle_days:.0f} days" if idle_days >= unused_days else None)
        if why is None or not _remove(entry, why, report, dry_run):
            left.append(entry)
    total = sum(e.allocated for e in left)
    for entry in sorted(left, key=lambda e: e.last_used):
        if total <= max_bytes:
            break
        if _remove(entry, f"least recently used (cache over {max_bytes // 1024**2} MiB)", report, dry_run):
            total -= entry.allocated
    kept = [e for e in left if e.key not in {r["key"] for r in report.removed}]
    report.kept, report.kept_bytes = len(kept), sum(e.allocated for e in kept)
    return report
