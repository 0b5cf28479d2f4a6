"""The lab's exception tree.

LabError                      root: every error the lab raises on purpose
 +-- ConfigError              bad input (file, field, what is expected)
 +-- ImageError               building or finding a guest image failed
 |    +-- KernelConfigError   the kernel lacks an option the lab needs
 +-- MachineError             a QEMU machine could not be run as asked
 |    +-- LaunchError         QEMU did not start (command line, exit code, output)
 |    +-- MediaBusyError      a media file is already held by another machine
 |    +-- MachineStateError   a call made in the wrong machine state
 |    +-- QemuDied            QEMU exited while the lab still used the machine (exit code or signal)
 +-- GuestError               the guest side failed
 |    +-- AgentTimeout        a deadline passed waiting on the guest (HANG material)
 |    +-- AgentClosed         the agent channel closed (guest died)
 +-- CaptureError             the media could not be captured
 +-- DiskFull                 a filesystem the lab (or QEMU for it) writes to is full: errno ENOSPC, the path
"""

from __future__ import annotations

from errno import ENOSPC


class LabError(Exception):
    """Root of every error the lab raises deliberately."""


class ConfigError(LabError):
    """Bad input: says which file/field is wrong and what is expected."""


class ImageError(LabError):
    """A guest image could not be built or found."""


class KernelConfigError(ImageError):
    """The kernel lacks a configuration option the lab needs."""


class MachineError(LabError):
    """A QEMU machine could not be run as asked."""


class LaunchError(MachineError):
    """QEMU failed to start; carries the command line, exit code and output."""

    def __init__(self, message: str, argv: list[str] | None = None,
                 exit_code: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.argv = argv or []
        self.exit_code = exit_code
        self.output = output

    def __str__(self) -> str:
        text = super().__str__()
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.output.strip():
            text += "; QEMU said: " + self.output.strip().splitlines()[-1]
        return text


class MediaBusyError(MachineError):
    """A media file is held by another machine."""


class MachineStateError(MachineError):
    """A machine method was called in a state that does not allow it."""


class QemuDied(MachineError):
    """QEMU ended while the lab still used the machine: how (exit code or signal) and its last words.
    `errno` is ENOSPC when a file QEMU maps shared (an NVDIMM, a ready snapshot's RAM) sits on a
    full filesystem: a store the filesystem cannot back is a SIGBUS."""

    def __init__(self, message: str, returncode: int, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.errno = errno
        self.path = path  # the full filesystem's file, with errno ENOSPC


class GuestError(LabError):
    """The guest side failed."""


class AgentTimeout(GuestError):
    """A deadline passed while waiting on the guest."""


class AgentClosed(GuestError):
    """The agent channel closed: the guest died or powered off."""


class CaptureError(LabError):
    """The media could not be captured."""


class DiskFull(LabError):
    """A filesystem the lab writes to (or QEMU writes to for it) is full."""

    errno = ENOSPC

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
