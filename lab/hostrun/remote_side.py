"""`pmemlab attempt`: one executor task on a lab host, as its controller started it over SSH.

The task spec is the Dask task's (lab.attempt.run_spec): cases as dicts, run directories relative
to this host's runs directory. The outcome (who ran it, WorkloadResult dicts) goes to a file the
controller reads back; the pty carries heartbeats and phases. With `link` the controller's
heartbeats are watched on stdin: when they stop the attempt hangs itself up (SIGHUP: machines
destroyed, as on Ctrl-C), so nothing keeps running on a host whose controller is gone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from lab import attempt
from lab.errors import LabError
from lab.hosts.link import BEAT, HEARTBEAT_S, LINK_TIMEOUT_S, PHASE
from lab.image import cache as image_cache
from lab.paths import cache_dir, runs_dir
from lab.runner.machines import BootMode
from lab.runs import write_json
from lab.vm.accel import choose
from lab.vm.backend import BackendChoice
from lab.vm.boot import probe_kvm_boot

_OUT = threading.Lock()


def _say(line: str) -> None:
    with _OUT:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except OSError:
            pass  # a hung-up pty: the watchdog or SIGHUP ends us


def _quiet_tty() -> None:
    """No echo, no line editing: the controller's heartbeat newlines arrive one by one and are not sent back."""
    fd = sys.stdin.fileno()
    if os.isatty(fd):
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ECHO | termios.ICANON)
        termios.tcsetattr(fd, termios.TCSANOW, mode)


def _watch_link(stop: threading.Event, silence_s: float = LINK_TIMEOUT_S) -> threading.Thread:
    """Hang ourselves up when the controller's heartbeats stop (or its end of stdin closes).
    Returns the heartbeat thread, which the caller joins before exiting: a daemon thread still
    inside a stdout write at interpreter shutdown is a fatal error (_enter_buffered_busy)."""
    last = [time.monotonic()]

    def read() -> None:
        fd = sys.stdin.fileno()
        while not stop.is_set():
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            if not data:
                break  # EOF or hangup: the check below fires at once
            last[0] = time.monotonic()
        last[0] = 0.0

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            _say(BEAT)
            if time.monotonic() - last[0] > silence_s:
                os.kill(os.getpid(), signal.SIGHUP)  # lab.cli turns it into SystemExit: machines destroyed
                return

    threading.Thread(target=read, name="link-read", daemon=True).start()  # blocked in os.read: holds no lock
    beater = threading.Thread(target=beat, name="link-beat", daemon=True)
    beater.start()
    return beater


def serve(spec_path: Path, out_path: Path, link: bool, link_timeout_s: float) -> None:
    try:
        spec: dict[str, Any] = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"{spec_path}: not a readable task spec: {exc}") from None
    stop = threading.Event()
    beater: threading.Thread | None = None
    if link:
        _quiet_tty()
        beater = _watch_link(stop, link_timeout_s)
    try:
        image = image_cache.find_by_id(cache_dir(), str(spec["image_id"]))
        if image is None:
            raise LabError(f"image {spec['image_id']} is not in this host's cache {cache_dir()} "
                           "(pmemlab image push HOST)")
        accel = choose(str(spec["accel"]), cache_dir(), lambda: probe_kvm_boot(image))
        backend = BackendChoice.parse(str(spec.get("backend", "qemu")), spec.get("libvirt_uri"))
        env = attempt.AttemptEnv(image, accel, BootMode(spec["boot"]), backend=backend)
        results = attempt.run_spec(env, spec, runs_dir(), lambda phase: _say(f"{PHASE}{phase}"))
        write_json(out_path, {"host": str(spec.get("host") or os.uname().nodename),
                              "results": [r.to_dict() for r in results]})
    finally:
        stop.set()
        if beater is not None:
            beater.join(link_timeout_s)  # a beat mid-write finishes; a controller that stopped reading hangs us up
