"""Own a child process: its own process group, killed on every exit path.

The child runs under `setpriv --pdeathsig KILL` (util-linux), which sets the
parent-death signal and then execs the real program (same pid): if the
controller dies, even by SIGKILL, the kernel kills the child too. Note the
signal follows the *thread* that started the child, so start machines from a
thread that outlives them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from lab.errors import LaunchError

log = logging.getLogger(__name__)


def pdeathsig_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class OwnedProcess:
    def __init__(self, argv: Sequence[str], log_path: Path, pass_fds: Sequence[int] = ()) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                pdeathsig_prefix() + self.argv,
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds), start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            self._log.close()
            raise LaunchError(f"cannot start {self.argv[0]}: {exc.strerror}", self.argv) from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, grace: float = 2.0) -> int:
        """SIGTERM the process group, then SIGKILL after `grace`; safe to call twice."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            if self.wait(grace) is None:
                if grace > 0:
                    log.debug("%s (pid %d) outlived SIGTERM by %.1f s: SIGKILL", self.argv[0], self.pid, grace)
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        else:
            self._signal_group(signal.SIGKILL)  # stragglers left in the group
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; every wait has a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
