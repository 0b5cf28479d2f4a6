"""Disk space: which filesystem a path lives on, whether it is full, and the one line that says so.

A full disk is told as one line naming the path that could not be written, its filesystem, and how
much the run needs there, so the user knows what to free (or where to point PMEMLAB_DATA /
PMEMLAB_CACHE) before running it again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

NEARLY_FULL = 16 * 1024**2  # below this a SIGBUS on a mapped backing file is the filesystem refusing a page


def existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (a run's files may be gone by the time we look)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem `path` is on."""
    probe = existing(path).resolve()
    while not os.path.ismount(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on `path`'s filesystem."""
    stat = os.statvfs(existing(path))
    return stat.f_bavail * stat.f_frsize


def size_bytes(path: Path) -> int:
    stat = os.statvfs(existing(path))
    return stat.f_blocks * stat.f_frsize


def nearly_full(path: Path) -> bool:
    try:
        return free_bytes(path) < NEARLY_FULL
    except OSError:
        return False


def human(n: int) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def disk_full_line(path: Path, filesystem: Path, fs_size: int, needs: int | None, bound: str = "up to") -> str:
    """The one line a full disk is reported with (pure: the caller measures). `bound`: 'up to' for a
    worst case, 'about' for an estimate."""
    need = f"this run needs {bound} {human(needs)} there: " if needs is not None else ""
    return (f"disk full: no space left for {path} on {filesystem} ({human(fs_size)} filesystem); "
            f"{need}free space, then run it again")


def describe_full(path: Path, needs: int | None = None, bound: str = "up to") -> str:
    """disk_full_line for `path`, measured now."""
    try:
        return disk_full_line(path, mount_point(path), size_bytes(path), needs, bound)
    except OSError:
        return disk_full_line(path, path, 0, needs, bound)


def full_path(exc: BaseException | None) -> Path | None:
    """The file a disk-full error names: an OSError's filename, or a `path` the lab's error carries,
    searched along the chain of causes."""
    while exc is not None:
        if getattr(exc, "errno", None) == errno.ENOSPC:
            path = exc.filename if isinstance(exc, OSError) else getattr(exc, "path", None)
            if isinstance(path, (str, bytes, Path)) and path:
                return Path(os.fsdecode(path))
        exc = exc.__cause__ or exc.__context__
    return None
