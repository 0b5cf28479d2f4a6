"""Shared by the unit tests that run a guest helper on the host (compiled by conftest's guest_program)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

from lab.store.records import AttemptRecord, CaseRecord

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


def stored_case(result: Mapping[str, Any] | None = None, *, verdict: str | None = None, run_dir: str = "",
                case: Mapping[str, Any] | None = None, attempted: bool = True) -> CaseRecord:
    """A finished case as the results store hands it back, its one attempt carrying `result`
    (attempted=False: a case that never ran)."""
    verdict = verdict if verdict is not None else (str(result.get("verdict")) if result else None)
    attempts = (AttemptRecord(id=1, campaign_id="c", case_id="case", number=1, status="finished", verdict=verdict,
                              started_at=None, finished_at=None, run_dir=run_dir, result=result),) if attempted else ()
    return CaseRecord(id="case", campaign_id="c", cell_key="cell", repeat=0, crash_index=0, seed=1, expect="PASS",
                      position=0, status="finished" if attempted else "pending", verdict=verdict,
                      case=case or {}, attempts=attempts)
