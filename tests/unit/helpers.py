"""Shared by the unit tests that run a guest helper on the host (compiled by conftest's guest_program)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

GuestProgram = Callable[[str], Path]  # conftest's guest_program fixture: name -> compiled binary


def run_with_events(binary: Path, *args: str, events: bool = True, timeout: float = 60
                    ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run it with PMEMLAB_EVENT_FD on a pipe (or, events=False, without the variable);
    returns the process and its event lines, split into words."""
    env = {k: v for k, v in os.environ.items() if k != "PMEMLAB_EVENT_FD"}
    if not events:
        return subprocess.run([str(binary), *args], env=env, capture_output=True,
                              text=True, timeout=timeout), []
    r, w = os.pipe()
    try:
        env["PMEMLAB_EVENT_FD"] = str(w)
        proc = subprocess.Popen([str(binary), *args], env=env, pass_fds=(w,),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            raw = f.read()  # until the helper exits and the pipe closes
        out, err = proc.communicate(timeout=timeout)
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, [line.split(" ") for line in raw.decode().splitlines()]
