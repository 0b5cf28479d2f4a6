"""Media files: create them sparse, and lock them so one machine at a time uses each."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lab.errors import MediaBusyError


def create_sparse(path: Path, size: int) -> None:
    """A zero-filled sparse backing file (what a fresh NVDIMM holds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as handle:
        handle.truncate(size)


class MediaLock:
    """An exclusive flock on a media file.

    The descriptor is inheritable and handed to QEMU, so the lock lives as
    long as either the controller or QEMU holds it: an orphaned QEMU still
    blocks a second machine from opening the same media.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> "MediaLock":
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MediaBusyError(f"media file {self.path} is in use by another machine "
                                 "(locked); wait for it to end or use another file") from None
        os.set_inheritable(fd, True)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "MediaLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
