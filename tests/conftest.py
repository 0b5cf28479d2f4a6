"""Shared test setup: integration tests boot real QEMU machines; none may outlive the tests."""

from __future__ import annotations

import subprocess

import pytest


def lab_qemu_processes() -> list[str]:
    """QEMU processes this lab started (their -name is pmemlab-...)."""
    out = subprocess.run(["pgrep", "-a", "-f", "qemu-system.*-name pmemlab-"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session", autouse=True)
def no_stray_qemu() -> object:
    before = set(lab_qemu_processes())
    yield
    stray = [p for p in lab_qemu_processes() if p not in before]
    assert not stray, f"the tests left QEMU processes behind: {stray}"
