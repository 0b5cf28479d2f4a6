"""Killing the controller leaves no QEMU behind and frees the media lock."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.image.cache import Image
from lab.vm.process import wait_until

HOLDER = Path(__file__).with_name("hold_machine.py")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _lock_is_free(media: Path) -> bool:
    fd = os.open(media, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_killed_controller_takes_qemu_down(sig: signal.Signals, image: Image, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(HOLDER), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None  # stdout=PIPE
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, "the holder never reported a ready machine"
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, f"holder exited early: {proc.stderr.read() if proc.stderr else ''}"
        info = json.loads(line)
        qemu_pid, media = int(info["qemu_pid"]), Path(info["media"])
        assert _pid_alive(qemu_pid)
        assert not _lock_is_free(media), "a running machine must hold its media lock"
        proc.send_signal(sig)
        proc.wait(30)
        assert wait_until(lambda: not _pid_alive(qemu_pid), 15), f"QEMU {qemu_pid} outlived its controller ({sig.name})"
        assert wait_until(lambda: _lock_is_free(media), 5), "the media lock was not released"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
