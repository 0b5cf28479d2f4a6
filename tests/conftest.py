"""Shared test setup: integration tests boot real QEMU machines; none may outlive the tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _ours_or_orphaned(pid: int) -> bool:
    """Started under this test process (at any depth), or orphaned: its controller died without it."""
    me, parent = os.getpid(), _ppid(pid)
    if parent == 1:
        return True
    while parent not in (None, 0, 1):
        if parent == me:
            return True
        parent = _ppid(parent)
    return False


def lab_qemu_processes() -> list[str]:
    """QEMU processes this test run started (their -name is pmemlab-...), or orphaned ones."""
    out = subprocess.run(["pgrep", "-a", "-f", "qemu-system.*-name pmemlab-"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip() and _ours_or_orphaned(int(line.split()[0]))]


@pytest.fixture(scope="session", autouse=True)
def no_stray_qemu() -> object:
    before = set(lab_qemu_processes())
    yield
    stray = [p for p in lab_qemu_processes() if p not in before]
    assert not stray, f"the tests left QEMU processes behind: {stray}"
