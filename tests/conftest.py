"""Shared test setup: integration tests boot real QEMU machines; none may outlive the tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (`timeout`, CI cancelling) unwinds like Ctrl-C, so the session fixtures still stop
    the daemons they started (libvirtd, PostgreSQL, sshd) by pid; plain SIGTERM would skip them."""
    signal.signal(signal.SIGTERM, _terminate)


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


def process_argvs() -> dict[int, list[str]]:
    """pid -> argv of every process, read from /proc: no procps needed (a bare machine lacks it)."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it exited while we looked
        found[int(entry.name)] = [a.decode(errors="replace") for a in argv if a]
    return found


def _lab_qemu_cmdlines() -> dict[int, str]:
    """pid -> command line of every lab QEMU (its -name is pmemlab-...)."""
    return {pid: " ".join(words) for pid, words in process_argvs().items()
            if words and "qemu-system" in words[0] and any(w.startswith("pmemlab-") for w in words)}


def lab_qemu_processes() -> list[str]:
    """QEMU processes this test run started, or orphaned ones, as 'PID CMDLINE'."""
    return [f"{pid} {line}" for pid, line in sorted(_lab_qemu_cmdlines().items()) if _ours_or_orphaned(pid)]


@pytest.fixture(scope="session", autouse=True)
def no_stray_qemu() -> object:
    before = set(lab_qemu_processes())
    yield
    stray = [p for p in lab_qemu_processes() if p not in before]
    assert not stray, f"the tests left QEMU processes behind: {stray}"


@pytest.fixture(scope="session")
def postgres() -> object:
    """A PostgreSQL server of its own for this test session (tests/pgserver.py), stopped at the end.

    Skipped where Debian's postgresql package is missing, except under CI (bootstrap.sh installs it)."""
    import shutil

    from tests import pgserver

    try:
        server = pgserver.start()
    except pgserver.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
