"""The link between a controller and an attempt on a lab host: the attempt's side hangs itself up
when the controller's heartbeats stop (real pty, real signal; timeouts shortened), and a single
run's check travels as a case that rebuilds exactly."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from lab.cases import Case
from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.hosts.link import BEAT
from lab.image.cache import Image
from lab.workloads import mapsync_kind
from lab.workloads.mapsync import MapsyncParams

ATTEMPT_SIDE = """
import signal, sys, threading, time
import lab.hosts.link as link
link.LINK_TIMEOUT_S, link.HEARTBEAT_S = 1.0, 0.2
from lab.hostrun import remote_side
signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))  # as lab.cli.main does
remote_side._quiet_tty()
remote_side._watch_link(threading.Event())
print("ready", flush=True)
time.sleep(30)
"""


def _read(fd: int, seconds: float) -> bytes:
    out = b""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out


def test_attempt_hangs_itself_up_when_the_controller_goes_quiet() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", ATTEMPT_SIDE], stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    os.close(slave)
    try:
        seen = b""
        until = time.monotonic() + 60  # the imports, on a loaded host
        while b"ready" not in seen and time.monotonic() < until and proc.poll() is None:
            os.write(master, b"\n")
            seen += _read(master, 0.2)
        assert b"ready" in seen, seen
        heard = b""
        for _ in range(15):  # 3 s of controller heartbeats: longer than the timeout, so they are what keeps it
            os.write(master, b"\n")
            heard += _read(master, 0.2)
        assert proc.poll() is None, "it hung up while the controller was still there"
        assert BEAT.encode() in heard, "no heartbeat from the attempt's side"
        assert heard.count(b"\n") == heard.count(BEAT.encode()), "the pty echoed our input"
        started = time.monotonic()
        proc.wait(10)
        assert proc.returncode == 129, "not hung up by SIGHUP"
        assert time.monotonic() - started < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


def test_a_single_runs_check_travels_as_a_case(tmp_path: Path) -> None:
    from lab.hostrun.single import check_case

    params = MapsyncParams.from_options(records=50, record_size=64, records_per_page=1, prealloc=False,
                                        map_sync=True, flush="auto", fence=True)
    check = mapsync_kind.MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, params, CrashPoint(after_ack=30), seed=7,
                                      keep_capture=True)
    case = check_case(mapsync_kind.NAME, check, Image("0123456789abcdef", tmp_path, {}))
    back = Case.from_dict(json.loads(json.dumps(case.to_dict())))  # what the host rebuilds; checks the id
    assert back.check.to_dict() == check.to_dict() and back.workload == "mapsync"
    other = mapsync_kind.MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, params, CrashPoint(after_ack=31), seed=7)
    assert check_case(mapsync_kind.NAME, other, Image("0123456789abcdef", tmp_path, {})).id != case.id
