"""Copy media files: captures of a frozen machine and copies of a template, sparse-aware, reflinked where possible.

The NVDIMM backing file is mapped MAP_SHARED by QEMU, so the host page cache
holds exactly what the guest stored; with every vCPU stopped nothing changes
while we copy. Holes stay holes (a 1 GiB NVDIMM is mostly never written).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import CaptureError

FICLONE = 0x40049409  # _IOW(0x94, 9, int): whole-file reflink (btrfs, xfs)


@dataclass(frozen=True)
class Capture:
    source: Path
    path: Path
    size: int  # apparent size
    data_bytes: int  # bytes actually copied (or shared by reflink)
    method: str  # "reflink" or "sparse-copy"
    seconds: float


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of every data region, found with SEEK_DATA/SEEK_HOLE."""
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end - start))
        offset = end
    return extents


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        try:
            copied = os.copy_file_range(src, dst, length - done, offset + done, offset + done)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Linux >= 5.19 refuses copy_file_range between most filesystems (a cache and a data
            # directory on different disks): copy through user space.
            _copy_range_by_hand(src, dst, offset + done, length - done)
            return
        if copied == 0:
            raise CaptureError(f"copy_file_range made no progress at offset {offset + done}")
        done += copied


def _copy_range_by_hand(src: int, dst: int, offset: int, length: int, chunk: int = 1 << 20) -> None:
    end = offset + length
    while offset < end:
        data = os.pread(src, min(chunk, end - offset), offset)
        if not data:
            raise CaptureError(f"the source ended at offset {offset}, inside a data region")
        written = os.pwrite(dst, data, offset)
        offset += written


def capture_file(source: Path, dest: Path) -> Capture:
    """Copy `source` to `dest` (which must not exist); a failure leaves no dest behind."""
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst = dest.open("xb")  # never overwrite: an existing file may be another run's evidence
    except OSError as exc:
        raise CaptureError(f"cannot capture {source} to {dest}: {exc.strerror or exc}") from None
    try:
        with source.open("rb") as src, dst:
            size = os.fstat(src.fileno()).st_size
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
                return Capture(source, dest, size, size, "reflink", time.monotonic() - started)
            except OSError:
                pass  # no reflink on this filesystem: copy the data regions
            copied = 0
            for offset, length in data_extents(src.fileno(), size):
                _copy_range(src.fileno(), dst.fileno(), offset, length)
                copied += length
            dst.truncate(size)  # trailing hole
            # No fsync: a capture is judged minutes later on this host; a host crash loses the run anyway.
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise CaptureError(f"cannot capture {source} to {dest}: {exc.strerror or exc}") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Capture(source, dest, size, copied, "sparse-copy", time.monotonic() - started)
