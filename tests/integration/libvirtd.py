"""A libvirtd the tests start and stop (no systemd on CI machines; LAB-NOTES "libvirt on these machines").

Root only: `libvirtd -d` serves qemu:///system once its run/log directories and the `libvirt-qemu`
user exist and qemu.conf suits the lab (QEMU as root, its stdio to a file instead of virtlogd, no
security driver relabelling the shared kernel cache). A libvirtd someone already runs is used through its
URI and never stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SYSTEM_URI = "qemu:///system"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
LAB_CONF = ('# pmemlab: QEMU as root, its output in files (no virtlogd), no relabelling\n'
            'user = "root"\ngroup = "root"\nstdio_handler = "file"\nsecurity_driver = "none"\n'
            'dynamic_ownership = 0\n')
PID_FILE = Path("/var/run/libvirt/pmemlab-test-libvirtd.pid")
SOCKET = Path("/var/run/libvirt/libvirt-sock")
START_TIMEOUT_S = 30.0


@dataclass
class Libvirtd:
    uri: str
    pid: int | None  # ours to stop; None: someone else's


def prepare_host() -> None:
    for d in ("/var/run/libvirt", "/var/log/libvirt", "/var/lib/libvirt/qemu", "/var/cache/libvirt/qemu"):
        Path(d).mkdir(parents=True, exist_ok=True)
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "libvirt-qemu"],
                       check=True)
    if not QEMU_CONF.exists() or QEMU_CONF.read_text() != LAB_CONF:
        QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
        QEMU_CONF.write_text(LAB_CONF)


def _answers() -> bool:
    return subprocess.run(["virsh", "-c", SYSTEM_URI, "version"], capture_output=True, timeout=30).returncode == 0


def start() -> Libvirtd:
    if SOCKET.exists() and _answers():
        return Libvirtd(SYSTEM_URI, None)
    if shutil.which("libvirtd") is None:
        raise RuntimeError("libvirtd is not installed (bootstrap.sh installs libvirt-daemon-driver-qemu)")
    prepare_host()
    PID_FILE.unlink(missing_ok=True)
    subprocess.run(["libvirtd", "-d", "-p", str(PID_FILE)], check=True, timeout=30)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not PID_FILE.exists() or not SOCKET.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd did not come up within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)
    pid = int(PID_FILE.read_text().strip())
    return Libvirtd(SYSTEM_URI, pid)


def stop(daemon: Libvirtd, timeout: float = 15.0) -> None:
    if daemon.pid is None:
        return
    try:
        os.kill(daemon.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(daemon.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(daemon.pid, signal.SIGKILL)
