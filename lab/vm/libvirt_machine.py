"""One lab machine as a transient libvirt domain, with the QEMU backend's interface.

    with LibvirtMachine(spec, workdir, uri, run_id) as m:   # createXML: domain pmemlab-<run>-<role>
        m.wait_ready(timeout=120)      # the guest agent said READY on its virtio-serial unix channel
        m.freeze()                     # virDomainSuspend: QMP stop inside libvirt, every vCPU frozen
    # exit: the domain destroyed, channels closed, locks released

The domain is started with VIR_DOMAIN_START_AUTODESTROY: libvirtd destroys it
when this controller's connection closes, so a controller killed by SIGKILL
leaves nothing running (its `with` blocks never unwind). Freeze is
`virDomainSuspend` (libvirt's own QMP `stop`), not QMP passthrough, which
would taint the domain ("custom-monitor"). There is no ready snapshot under
libvirt: `virsh save`/`restore` write the saved NVDIMM pages back over the
media and libvirt 9.0 has no x-ignore-shared, so every machine boots cold.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.errors import AgentClosed, LaunchError, MachineError, QemuDied
from lab.guest.agent import AgentClient
from lab.guest.events import EventStream
from lab.vm.domain_xml import domain_xml
from lab.vm.machine import Machine, MachineState
from lab.vm.media import MediaLock
from lab.vm.spec import MachineSpec

log = logging.getLogger(__name__)

CHANNEL_TIMEOUT_S = 30.0
LOG_DIR = Path("/var/log/libvirt/qemu")  # qemu:///system's per-domain QEMU log (stdio_handler="file")


def domain_name(run_id: str, role: str) -> str:
    return f"pmemlab-{run_id}-{role}"


def libvirt_module() -> Any:
    try:
        import libvirt
    except ImportError:
        raise MachineError("the libvirt backend needs libvirt-python: pip install 'pmemlab[libvirt]' "
                           "(it builds against libvirt-dev and pkg-config)") from None
    return libvirt


def open_connection(uri: str) -> Any:
    libvirt = libvirt_module()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions, not stderr noise
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise MachineError(f"cannot connect to libvirt at {uri}: {exc.get_error_message()}") from None


class LibvirtMachine(Machine):
    def __init__(self, spec: MachineSpec, workdir: Path, uri: str, run_id: str) -> None:
        super().__init__(spec, workdir)
        self.uri = uri
        self.domain_name = domain_name(run_id, spec.name)
        self._conn: Any = None
        self._dom: Any = None
        self._sockdir: Path | None = None

    def launch(self, qmp_timeout: float = 15.0) -> "LibvirtMachine":
        libvirt = libvirt_module()
        self._require(MachineState.NEW)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._locks = [MediaLock(nv.backing_file).acquire() for nv in self.spec.nvdimms]
            # unix socket paths must fit in 108 bytes: a short private directory, not the run directory
            self._sockdir = Path(tempfile.mkdtemp(prefix="pmemlab-lv-"))
            agent_path, events_path = self._sockdir / "agent.sock", self._sockdir / "events.sock"
            emulator = shutil.which(self.spec.qemu_binary) or self.spec.qemu_binary
            try:
                xml = domain_xml(self.spec, self.domain_name, emulator, agent_path, events_path)
            except ValueError as exc:  # a spec libvirt cannot express (ready-snapshot RAM, extra QEMU arguments)
                raise MachineError(str(exc)) from None
            (self.workdir / f"{self.spec.name}.domain.xml").write_text(xml)
            self._conn = open_connection(self.uri)
            self.launched_at = time.monotonic()
            try:
                self._dom = self._conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
            except libvirt.libvirtError as exc:
                raise LaunchError(f"libvirt at {self.uri} could not start domain {self.domain_name!r} for machine "
                                  f"{self.spec.name!r}: {exc.get_error_message()}",
                                  output=self._qemu_log()) from None
            log.debug("machine %r: domain %s started on %s", self.spec.name, self.domain_name, self.uri)
            self.state = MachineState.RUNNING
            self._agent = AgentClient(self._connect(agent_path))
            self._events = EventStream(self._connect(events_path))
        except BaseException:
            self.close()
            raise
        return self

    def _connect(self, path: Path) -> socket.socket:
        deadline = time.monotonic() + CHANNEL_TIMEOUT_S
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                self._sockets.append(sock)
                return sock
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise LaunchError(f"machine {self.spec.name!r}: channel {path} of domain {self.domain_name!r} "
                                      f"did not accept within {CHANNEL_TIMEOUT_S:.0f} s: {exc}") from None
                time.sleep(0.05)

    def _await_exit(self) -> None:
        time.sleep(0.5)  # libvirtd notices the QEMU exit asynchronously; no process of ours to wait for

    def save_state(self, dest: Path, timeout: float = 120.0) -> float:
        raise MachineError("the libvirt backend has no ready snapshots (virsh save writes NVDIMM pages back "
                           "over the media; libvirt 9.0 has no x-ignore-shared)")

    def _active(self) -> bool:
        if self._dom is None:
            return False
        try:
            return bool(self._dom.isActive())
        except Exception:  # the domain is gone (destroyed, autodestroyed): no longer active
            return False

    def _check_alive(self) -> None:
        if not self._active():
            self.state = MachineState.DEAD
            raise LaunchError(f"domain {self.domain_name!r} (machine {self.spec.name!r}) ended before the guest was "
                              f"ready (console: {self.spec.console_log})", output=self._qemu_log())

    def _qemu_log(self) -> str:
        if not self.uri.startswith("qemu:///system"):
            return ""
        try:
            return (LOG_DIR / f"{self.domain_name}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def freeze(self, timeout: float = 10.0) -> float:
        """virDomainSuspend: returns once every vCPU is stopped. Returns host monotonic time."""
        self._require(MachineState.RUNNING)
        self._call("suspend", self._dom.suspend)
        self.state = MachineState.PAUSED
        return time.monotonic()

    def cont(self, timeout: float = 10.0) -> None:
        self._require(MachineState.PAUSED)
        self._call("resume", self._dom.resume)
        self.state = MachineState.RUNNING

    def _call(self, what: str, fn: Any) -> None:
        try:
            fn()
        except libvirt_module().libvirtError as exc:
            raise MachineError(f"machine {self.spec.name!r}: libvirt {what} of domain {self.domain_name!r} failed: "
                               f"{exc.get_error_message()}") from None

    def poweroff(self, timeout: float = 30.0) -> bool:
        self._require(MachineState.RUNNING)
        for hook in self.before_poweroff:
            hook(self)
        self._ending = True
        try:
            self.agent.poweroff()
        except (AgentClosed, OSError):
            pass
        deadline = time.monotonic() + timeout
        while self._active() and time.monotonic() < deadline:
            time.sleep(0.1)
        clean = not self._active()
        if not clean:
            log.info("machine %r: the guest did not power off within %.0f s: domain destroyed", self.spec.name, timeout)
        self.close()
        return clean

    def destroy(self) -> None:
        """The power cut's last step: virDomainDestroy now, no goodbye to the guest."""
        self._ending = True
        self.close()

    def close(self) -> None:
        if self._active():
            self._ending = True
            try:
                self._dom.destroy()
            except Exception as exc:  # already gone between the check and the call
                log.debug("machine %r: destroying %s: %s", self.spec.name, self.domain_name, exc)
        if self._events is not None:
            self._events.close()
        if self._agent is not None:
            self._agent.close()
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None
        for lock in self._locks:
            lock.release()
        self._locks = []
        self.state = MachineState.DEAD

    def death(self, wait: float = 0.0) -> QemuDied | None:
        """QemuDied if the domain ended while the lab was not ending it."""
        if self._dom is None or self._ending or self.state in (MachineState.NEW, MachineState.DEAD):
            return None
        deadline = time.monotonic() + wait
        while self._active():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        message = (f"domain {self.domain_name!r} (machine {self.spec.name!r}) ended on its own (the guest rebooted, "
                   "powered off or panicked, or QEMU died)")
        log.info("%s; QEMU log: %s", message, LOG_DIR / f"{self.domain_name}.log")
        self.state = MachineState.DEAD
        return QemuDied(message, 0)


NO_SNAPSHOTS = ("cold boots only: ready snapshots are not supported under libvirt (virsh save/restore writes the "
                "saved NVDIMM pages back over the media and libvirt 9.0 has no x-ignore-shared)")


def libvirt_status(uri: str, socket_path: Path = Path("/var/run/libvirt/libvirt-sock")) -> tuple[bool, str]:
    """(usable, what was found) for the libvirt backend at `uri`. A local system URI is tried only when its
    daemon's socket exists (no connection attempt that would hang or spawn a daemon)."""
    try:
        import libvirt
    except ImportError:
        return False, "libvirt-python is not installed (pip install 'pmemlab[libvirt]')"
    if uri.startswith("qemu:///system") and not socket_path.exists():
        return False, f"libvirt {_version(libvirt.getVersion())} client; no libvirtd serves {uri} ({socket_path} is missing)"
    try:
        conn = open_connection(uri)
    except MachineError as exc:
        return False, str(exc)
    try:
        version = conn.getLibVersion()
    finally:
        conn.close()
    return True, f"{uri} answers (libvirt {_version(version)})"


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"
