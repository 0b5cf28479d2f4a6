"""One QEMU machine as a context manager.

    with Machine(spec, workdir) as m:     # launch: media locked, QEMU owned
        m.wait_ready(timeout=60)          # the guest agent said READY
        m.run(["uname", "-r"], timeout=10)
        m.freeze()                        # QMP stop: every vCPU frozen
    # exit: QEMU killed (process group), channels closed, locks released

A machine made with `incoming=STATE` is a clone of a ready snapshot
(lab/vm/snapshot.py): QEMU starts with `-incoming defer`, and `wait_ready`
loads the state, resumes the vCPUs and pings the agent instead of waiting for
a READY that a restored guest never sends again.

States: NEW -> RUNNING <-> PAUSED -> DEAD. Calls made in the wrong state
raise MachineStateError. Cleanup runs on every exit path and is safe twice.

QEMU ending on its own while the machine is in use (killed, crashed, a
SIGBUS from a full filesystem under a backing file) is told as such: a lab
error that leaves the `with` block becomes QemuDied naming the exit code or
signal and QEMU's last words, not the closed socket it caused.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import signal
import socket
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

from lab import space
from lab.errors import (AgentClosed, AgentTimeout, DiskFull, LabError, LaunchError, MachineError, MachineStateError,
                        QemuDied)
from lab.guest.agent import AgentClient, CommandResult
from lab.guest.events import EventStream
from lab.vm.media import MediaLock
from lab.vm.plugin_channel import PluginChannel
from lab.vm.process import OwnedProcess
from lab.vm.qmp import QmpChannel
from lab.vm.snapshot import MAX_BANDWIDTH, SnapshotError, migration_caps, wait_migration
from lab.vm.spec import ChannelFds, MachineSpec, qemu_argv

log = logging.getLogger(__name__)

DEATH_WAIT_S = 2.0  # a channel's EOF comes as QEMU exits, a moment before it can be reaped
TAIL_LINES = 5

MachineHook = Callable[["Machine"], None]


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: 'exited with code 1', 'killed by signal 9 (SIGKILL)'."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {number} ({name})"
    return f"exited with code {returncode}"


def output_tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last few non-empty lines of a process's output, joined with ' | '."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


class MachineState(Enum):
    NEW = "new"
    RUNNING = "running"
    PAUSED = "paused"
    DEAD = "dead"


class Machine:
    def __init__(self, spec: MachineSpec, workdir: Path, incoming: Path | None = None,
                 ignore_shared: bool = True) -> None:
        self.spec = spec
        self.workdir = workdir
        self.incoming = incoming  # a ready snapshot's state file: restore instead of booting
        # Only tests turn this off, to show what x-ignore-shared prevents (the template leaking into the media).
        self.ignore_shared = ignore_shared
        self._state_fd: int | None = None
        self.state = MachineState.NEW
        self.process: OwnedProcess | None = None
        self.qmp: QmpChannel | None = None
        self._agent: AgentClient | None = None
        self._events: EventStream | None = None
        self._locks: list[MediaLock] = []
        self._sockets: list[socket.socket] = []
        self.launched_at: float | None = None
        self.ready_at: float | None = None
        self._ending = False  # the lab asked QEMU to end (quit, poweroff, destroy): an exit is no death
        # Called with the machine once its agent answers, and before a polite poweroff (the guest still runs).
        self.on_ready: list[MachineHook] = []
        self.before_poweroff: list[MachineHook] = []
        self.plugin: PluginChannel | None = None  # the ADR plugin's control channel (spec.plugin set)

    # -- lifecycle -----------------------------------------------------
    def launch(self, qmp_timeout: float = 15.0) -> "Machine":
        self._require(MachineState.NEW)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._locks = [MediaLock(nv.backing_file).acquire() for nv in self.spec.nvdimms]
            pairs = [socket.socketpair() for _ in range(4 if self.spec.plugin is not None else 3)]
            ours = [a for a, _ in pairs]
            theirs = [b for _, b in pairs]
            self._sockets = ours
            for sock in theirs:
                sock.set_inheritable(True)
            fds = ChannelFds(qmp=theirs[0].fileno(), agent=theirs[1].fileno(), events=theirs[2].fileno(),
                             plugin=theirs[3].fileno() if len(theirs) > 3 else None)
            argv = qemu_argv(self.spec, fds)
            passed = [s.fileno() for s in theirs] + [l.fd for l in self._locks if l.fd is not None]
            if self.incoming is not None:
                try:
                    self._state_fd = os.open(self.incoming, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise SnapshotError(f"cannot open the ready snapshot state {self.incoming}: "
                                        f"{exc.strerror}") from None
                passed.append(self._state_fd)
                argv += ["-incoming", "defer"]
            (self.workdir / f"{self.spec.name}.argv").write_text("\n".join(argv) + "\n")
            log.debug("machine %r: launching %s", self.spec.name, shlex.join(argv))
            self.launched_at = time.monotonic()
            self.process = OwnedProcess(argv, self.workdir / f"{self.spec.name}.qemu.log", pass_fds=passed)
            log.debug("machine %r: QEMU pid %d", self.spec.name, self.process.pid)
            for sock in theirs:
                sock.close()  # QEMU holds them now; ours must not keep the peer alive
            self.state = MachineState.RUNNING
            self.qmp = QmpChannel(ours[0], self.spec.name)
            try:
                self.qmp.connect(qmp_timeout)
            except Exception as exc:
                code = self.process.wait(2.0)
                raise LaunchError(f"QEMU for machine {self.spec.name!r} did not come up: {exc}",
                                  argv, code, self.process.output()) from None
            self._agent = AgentClient(ours[1])
            self._events = EventStream(ours[2])
            self.plugin = PluginChannel(ours[3], self.spec.name) if len(ours) > 3 else None
        except BaseException:
            self.close()
            raise
        return self

    def wait_ready(self, timeout: float) -> float:
        """Wait for the agent's READY (or, for a clone, restore it and ping the agent); returns
        seconds from launch to ready."""
        if self.incoming is not None:
            return self._restore(timeout)
        agent = self.agent
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeout(f"machine {self.spec.name!r}: the guest agent was not ready within {timeout:.0f} s "
                                   f"(console: {self.spec.console_log})")
            try:
                agent.wait_ready(min(0.25, remaining))
                break
            except AgentTimeout:
                self._check_alive()
            except AgentClosed:
                # The channel closes as QEMU exits (a panic with panic=-1): report the exit, not the EOF.
                self._await_exit()
                self._check_alive()
                raise
        return self._ready()

    def _await_exit(self) -> None:
        """Give a machine whose agent channel closed a moment to be seen as ended."""
        assert self.process is not None
        self.process.wait(5.0)

    def _ready(self) -> float:
        self.ready_at = time.monotonic()
        assert self.launched_at is not None
        log.debug("machine %r: agent ready after %.2f s", self.spec.name, self.ready_at - self.launched_at)
        for hook in self.on_ready:
            hook(self)
        return self.ready_at - self.launched_at

    def _restore(self, timeout: float) -> float:
        """Load the ready snapshot's state, resume, and ping the agent."""
        assert self.qmp is not None and self.process is not None and self._state_fd is not None
        deadline = time.monotonic() + timeout
        log.debug("machine %r: restoring the ready snapshot %s", self.spec.name, self.incoming)
        try:
            migration_caps(self._qmp, self.ignore_shared)
            self._qmp("migrate-incoming", {"uri": f"fd:{self._state_fd}"})
            wait_migration(lambda: self._qmp("query-migrate"), f"restoring {self.incoming}",
                           max(1.0, deadline - time.monotonic()))
            status = self._qmp("query-status")
            if status.get("status") != "paused":  # the source was saved paused: so must the clone be
                raise SnapshotError(f"machine {self.spec.name!r} is {status.get('status')!r} after loading "
                                    f"{self.incoming}, not paused")
            self._qmp("cont")
        except LabError as exc:
            code = self.process.wait(1.0)
            if code is not None:  # QEMU exits when a load fails: its own words say why
                self.state = MachineState.DEAD
                raise LaunchError(f"QEMU for machine {self.spec.name!r} could not load the ready snapshot "
                                  f"{self.incoming}", self.process.argv, code, self.process.output()) from None
            raise SnapshotError(f"machine {self.spec.name!r}: restoring {self.incoming} failed: {exc}") from None
        finally:
            os.close(self._state_fd)
            self._state_fd = None
        self.agent.ping(timeout=max(1.0, deadline - time.monotonic()))
        return self._ready()

    def save_state(self, dest: Path, timeout: float = 120.0) -> float:
        """Freeze the machine and write its device+RAM state (NVDIMMs excluded) to `dest`, which must
        not exist; the machine stays paused. Returns the seconds the save took. On failure `dest` is
        removed."""
        assert self.qmp is not None
        if self.state is MachineState.RUNNING:
            self.freeze()
        self._require(MachineState.PAUSED)
        started = time.monotonic()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            migration_caps(self._qmp, self.ignore_shared)
            self._qmp("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
            self.qmp.send_fd(fd, "pmemlab-state")
            self._qmp("migrate", {"uri": "fd:pmemlab-state"})
            wait_migration(lambda: self._qmp("query-migrate"), f"saving the state of {self.spec.name!r} to {dest}",
                           timeout)
            os.fsync(fd)
        except BaseException as exc:
            os.close(fd)
            full = isinstance(exc, Exception) and space.nearly_full(dest)  # measured before the unlink frees it
            dest.unlink(missing_ok=True)
            if full:
                raise DiskFull(f"saving the state of {self.spec.name!r} to {dest} failed: its filesystem is full "
                               f"({exc})", str(dest)) from exc
            raise
        os.close(fd)
        log.debug("machine %r: state saved to %s in %.2f s", self.spec.name, dest, time.monotonic() - started)
        return time.monotonic() - started

    def _qmp(self, command: str, args: dict[str, object] | None = None) -> Any:
        assert self.qmp is not None
        return self.qmp.execute(command, args, timeout=30.0)

    def _check_alive(self) -> None:
        assert self.process is not None
        if not self.process.alive():
            code = self.process.proc.returncode
            self.state = MachineState.DEAD
            error = LaunchError(f"QEMU for machine {self.spec.name!r} exited before the guest was ready "
                                f"(console: {self.spec.console_log})", self.process.argv, code, self.process.output())
            full = self._full_backing_file(code)
            if full is not None:
                raise DiskFull(f"QEMU for machine {self.spec.name!r} was {describe_exit(code)} before the guest was "
                               f"ready: the filesystem under its backing file {full} is full", str(full)) from error
            raise error

    def _full_backing_file(self, returncode: int) -> Path | None:
        """After a SIGBUS: the file QEMU maps shared whose filesystem is full (a store it could not back)."""
        if returncode != -signal.SIGBUS:
            return None
        mapped = [nv.backing_file for nv in self.spec.nvdimms]
        mapped += [self.spec.ram_file.path] if self.spec.ram_file and self.spec.ram_file.shared else []
        return next((path for path in mapped if space.nearly_full(path)), None)

    def freeze(self, timeout: float = 10.0) -> float:
        """QMP stop: all vCPUs frozen when this returns. Returns host monotonic time."""
        self._require(MachineState.RUNNING)
        assert self.qmp is not None
        self.qmp.execute("stop", timeout=timeout)
        self.state = MachineState.PAUSED
        return time.monotonic()

    def cont(self, timeout: float = 10.0) -> None:
        self._require(MachineState.PAUSED)
        assert self.qmp is not None
        self.qmp.execute("cont", timeout=timeout)
        self.state = MachineState.RUNNING

    def poweroff(self, timeout: float = 30.0) -> bool:
        """Ask the guest to power off and wait for QEMU to exit; kill it if it does not."""
        self._require(MachineState.RUNNING)
        assert self.process is not None
        for hook in self.before_poweroff:
            hook(self)
        log.debug("machine %r: asking the guest to power off", self.spec.name)
        self._ending = True
        clean = False
        try:
            self.agent.poweroff()
            clean = self.process.wait(timeout) is not None
        except (AgentClosed, OSError):
            clean = self.process.wait(timeout) is not None
        if not clean:
            log.info("machine %r: the guest did not power off within %.0f s: QEMU is killed", self.spec.name, timeout)
        self.close()
        return clean

    def destroy(self) -> None:
        """The power cut's last step: kill QEMU now, no goodbye to the guest."""
        self._ending = True
        if self.process is not None and self.process.alive():
            log.debug("machine %r: destroyed (SIGTERM, then SIGKILL to its process group)", self.spec.name)
            self.process.kill(grace=0.0)
        self.close()

    def close(self) -> None:
        """Kill QEMU if alive, close channels, release media locks; idempotent."""
        first = self.state is not MachineState.DEAD
        if self.process is not None and self.process.alive():
            if self.qmp is not None and first:
                self._ending = True
                try:
                    self.qmp.execute("quit", timeout=2.0)
                except Exception as exc:
                    log.debug("machine %r: QMP quit failed (%s): killing QEMU", self.spec.name, exc)
                if self.process.wait(2.0) is None:
                    log.info("machine %r: QEMU did not quit within 2 s: killing it", self.spec.name)
        if self.process is not None:
            code = self.process.kill()
            if first:
                log.debug("machine %r: QEMU %s", self.spec.name, describe_exit(code))
        if self.qmp is not None:
            self.qmp.close()
        if self._events is not None:
            self._events.close()
        if self._agent is not None:
            self._agent.close()
        for sock in self._sockets:
            sock.close()
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None
        for lock in self._locks:
            lock.release()
        self._locks = []
        self.state = MachineState.DEAD

    def __enter__(self) -> "Machine":
        if self.state is MachineState.NEW:
            self.launch()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        died = None
        if isinstance(exc, LabError) and not isinstance(exc, QemuDied):
            # A closed channel or a failed QMP call may be QEMU exiting: give it a moment to be reaped.
            died = self.death(DEATH_WAIT_S if isinstance(exc, (AgentClosed, MachineError)) else 0.0)
        if isinstance(exc, AgentTimeout) and died is None:
            log.info("machine %r: deadline passed: %s", self.spec.name, exc)
            self.dump_vcpus()
        self.close()
        if died is not None:
            raise died from exc

    def hang_path(self) -> Path:
        return self.spec.console_log.with_name(f"{self.spec.name}.hang.txt")

    def dump_vcpus(self) -> Path | None:
        """Where each vCPU was when a deadline passed (QEMU's `info registers -a`), written beside the
        console as NAME.hang.txt: the RIPs say where a stuck guest kernel sits (symbolize them with the
        kernel's System.map). Best effort, bounded: it never stands in the way of ending the machine."""
        if self.qmp is None or self.process is None or not self.process.alive():
            return None
        try:
            text = self.qmp.execute("human-monitor-command", {"command-line": "info registers -a"}, timeout=5.0)
            path = self.hang_path()
            path.write_text(f"machine {self.spec.name!r}: vCPU registers when its deadline passed\n\n{text}")
        except Exception as exc:  # noqa: BLE001 (a diagnostic: the deadline's error is what the run reports)
            log.info("machine %r: could not read its vCPU registers: %s", self.spec.name, exc)
            return None
        log.info("machine %r: vCPU registers at the deadline in %s", self.spec.name, path)
        return path

    def death(self, wait: float = 0.0) -> QemuDied | None:
        """QemuDied if QEMU ended while the lab was not ending it (within `wait` seconds), else None."""
        if self.process is None or self._ending or self.state in (MachineState.NEW, MachineState.DEAD):
            return None
        code = self.process.wait(wait) if wait > 0 else self.process.proc.poll()
        if code is None:
            return None
        how = describe_exit(code)
        if code == 0:  # -no-reboot: a guest reboot (panic=-1 after a panic) or poweroff ends QEMU
            how += " (the guest rebooted or powered off on its own; a panic reboots it)"
        number, full = None, self._full_backing_file(code)
        if full is not None:
            number = errno.ENOSPC
            how += f": the filesystem under its backing file {full} is full"
        said = output_tail(self.process.output())
        message = f"QEMU for machine {self.spec.name!r} died: {how}" + (f"; QEMU said: {said}" if said else "")
        log.info("%s (command: %s)", message, self.workdir / f"{self.spec.name}.argv")
        self.state = MachineState.DEAD  # nothing to quit: close() only reaps and releases
        return QemuDied(message, code, number, str(full) if full else None)

    # -- guest access --------------------------------------------------
    @property
    def agent(self) -> AgentClient:
        if self._agent is None:
            raise MachineStateError(f"machine {self.spec.name!r} has no agent channel (state {self.state.value})")
        return self._agent

    @property
    def events(self) -> EventStream:
        if self._events is None:
            raise MachineStateError(f"machine {self.spec.name!r} has no event channel (state {self.state.value})")
        return self._events

    def run(self, argv: Sequence[str], timeout: float, check: bool = True) -> CommandResult:
        self._require(MachineState.RUNNING)
        return self.agent.run(list(argv), timeout=timeout, check=check)

    def console_text(self) -> str:
        try:
            return self.spec.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def _require(self, *states: MachineState) -> None:
        if self.state not in states:
            raise MachineStateError(f"machine {self.spec.name!r} is {self.state.value}; "
                                    f"this needs {' or '.join(s.value for s in states)}")
