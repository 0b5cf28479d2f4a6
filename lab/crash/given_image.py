"""Judge a crash image someone attached to a bug report, with the same oracles as a power cut.

Two kinds of file are accepted, told apart by their bytes:
- a kept capture (`--keep-capture`): a whole label-less NVDIMM backing file whose namespace is
  fsdax (its info block, "NVDIMM_PFN_INFO", sits 4 KiB into the namespace; the filesystem starts
  at the block's data offset);
- a raw filesystem image (an ext4 or XFS superblock at its start): it becomes the media of a
  label-less NVDIMM, which the guest sees as a raw-mode namespace. A raw namespace has no DAX, so
  such an image is mounted with dax=never (recovery is the same journal/log replay).

The original file is never opened for writing: the machine runs on a sparse copy. The recovery
machine is restored from the raw-namespace ready snapshot for the media's size (or booted cold)
and then re-reads the namespace from the media (`ndctl disable-region/enable-region`): a ready
snapshot's guest knows its template's namespace, and a given image's namespace is foreign (made
by another kernel or ndctl, another mode or alignment), so trusting the template's view could
read the wrong bytes. Then: recovery mount, the persistence check when the record layout and
the durable set are given, unmount, fsck, and the kernel-log oracle over every console.

Bad input (wrong size, neither format, the other filesystem than --fs) is a `BadImage`: a
one-line reason and no machine.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from lab.crash.cut_flow import judge_mounted, read_file
from lab.errors import ConfigError, GuestError
from lab.guest import pmem
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.oracles.persistence import check_persistence
from lab.oracles.records import RecordLayout
from lab.runner.guest_run import GuestRun, RunHooks, WorkloadResult, run_guarded
from lab.runner.machines import BootMode
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.vm.capture import capture_file
from lab.vm.machine import Machine
from lab.vm.spec import DEFAULT_ALIGN, MIB

KIND = "check-image"
PFN_INFO_OFFSET = 4096  # struct nd_pfn_sb sits SZ_4K into the namespace
PFN_SIGNATURE = b"NVDIMM_PFN_INFO\0"
DAX_SIGNATURE = b"NVDIMM_DAX_INFO\0"  # a devdax namespace: no filesystem on it
PFN_DATAOFF = struct.Struct("<Q")  # nd_pfn_sb.dataoff, at byte 56 of the info block
PFN_DATAOFF_AT = 56
EXT4_MAGIC_AT, EXT4_MAGIC = 1080, b"\x53\xef"  # s_magic 0xEF53, little endian, superblock at 1024
XFS_MAGIC = b"XFSB"  # sb_magicnum at byte 0
MIN_NVDIMM = 64 * MIB  # the smallest NVDIMM a scenario may give a machine
REREAD = "ndctl disable-region all >/dev/null && ndctl enable-region all >/dev/null"
DEVICE_WAIT_S = 30.0


class BadImage(ConfigError):
    """The given file cannot be judged: its one-line reason is the message."""


class ImageFormat(str, Enum):
    CAPTURE = "capture"  # a whole NVDIMM backing file with an fsdax namespace
    RAW_FS = "raw-fs"  # a bare ext4/XFS image


@dataclass(frozen=True)
class GivenImage:
    path: Path
    format: ImageFormat
    size: int  # bytes of the file
    fs_found: Filesystem | None  # what its superblock says (None: no superblock where it should be)
    data_offset: int = 0  # where the filesystem starts in the file

    @property
    def nvdimm_size(self) -> int:
        """The NVDIMM that carries it: the capture's own size; a raw image rounded up to the lab's
        alignment and at least the default NVDIMM (so the common ready snapshot serves it)."""
        if self.format is ImageFormat.CAPTURE:
            return self.size
        return max(MachineShape().nvdimm_size, -(-self.size // DEFAULT_ALIGN) * DEFAULT_ALIGN)


def fs_at(head: bytes) -> Filesystem | None:
    """The filesystem whose superblock starts `head`, if any."""
    if head[:4] == XFS_MAGIC:
        return Filesystem.XFS
    if head[EXT4_MAGIC_AT:EXT4_MAGIC_AT + 2] == EXT4_MAGIC:
        return Filesystem.EXT4
    return None


def inspect_image(path: Path, fs: Filesystem) -> GivenImage:
    """What `path` is, or BadImage with the one-line reason it cannot be judged as `fs`."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise BadImage(f"{path}: not a regular file")
        with path.open("rb") as f:
            head = f.read(PFN_INFO_OFFSET + 64)
            given = _classify(path, size, head, f)
    except OSError as exc:
        raise BadImage(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if given.fs_found is not None and given.fs_found is not fs:
        raise BadImage(f"{path}: the {given.format.value} holds {given.fs_found.value}, not {fs.value} "
                       f"(pass --fs {given.fs_found.value})")
    return given


def _classify(path: Path, size: int, head: bytes, f: Any) -> GivenImage:
    info = head[PFN_INFO_OFFSET:PFN_INFO_OFFSET + 16]
    if info == DAX_SIGNATURE:
        raise BadImage(f"{path}: a devdax namespace (NVDIMM_DAX_INFO at 4 KiB) carries no filesystem")
    if info == PFN_SIGNATURE:
        if size % DEFAULT_ALIGN or size < MIN_NVDIMM:
            raise BadImage(f"{path}: a kept capture is a whole NVDIMM backing file, a multiple of 2 MiB and at "
                           f"least 64 MiB; this one is {size} bytes")
        (dataoff,) = PFN_DATAOFF.unpack_from(head, PFN_INFO_OFFSET + PFN_DATAOFF_AT)
        if not 0 < dataoff < size:
            raise BadImage(f"{path}: its fsdax info block gives data offset {dataoff}, outside the file")
        f.seek(dataoff)
        return GivenImage(path, ImageFormat.CAPTURE, size, fs_at(f.read(EXT4_MAGIC_AT + 2)), dataoff)
    found = fs_at(head)
    if found is None:
        raise BadImage(f"{path}: neither a kept capture (no fsdax info block at 4 KiB) nor an ext4/XFS "
                       "image (no superblock at its start)")
    return GivenImage(path, ImageFormat.RAW_FS, size, found)


def parse_indices(text: str) -> list[int]:
    """'0-60' or '0-3,7,9-10' -> record indices; ConfigError naming --durable otherwise."""
    indices: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ConfigError(f"--durable {text!r}: expected record indices such as 0-60 or 0-3,7,9-10")
        indices.update(range(int(match[1]), int(match[2] or match[1]) + 1))
    return sorted(indices)


@dataclass(frozen=True)
class RecordSpec:
    """The workload's record layout and what the host had acknowledged: the persistence check."""

    file: str  # the workload's file, relative to the filesystem's root
    records: int
    layout: RecordLayout
    durable: tuple[int, ...]


@dataclass(frozen=True)
class ImageCheck:
    """One `pmemlab check`: the given file, how to mount it, and what to judge."""

    image: GivenImage
    fs: Filesystem
    records: RecordSpec | None = None

    @property
    def shape(self) -> MachineShape:
        return MachineShape(nvdimm_size=self.image.nvdimm_size)

    @property
    def dax(self) -> DaxMode:
        return DaxMode.ALWAYS if self.image.format is ImageFormat.CAPTURE else DaxMode.NEVER

    def to_dict(self) -> dict[str, Any]:
        rec = self.records
        return {"kind": KIND, "path": str(self.image.path), "format": self.image.format.value, "fs": self.fs.value,
                "dax": self.dax.value, "size": self.image.size, "nvdimm_size": self.shape.nvdimm_size,
                "records": None if rec is None else {"file": rec.file, "records": rec.records,
                                                     "record_size": rec.layout.record_size,
                                                     "records_per_page": rec.layout.records_per_page,
                                                     "durable": len(rec.durable)}}


def check_image(check: ImageCheck, image: Image, accel: AccelVerdict, run_dir: Path,
                hooks: RunHooks) -> WorkloadResult:
    """Recover and judge a copy of the given image; the result is written to run_dir/result.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = GuestRun(KIND, check, image, accel, run_dir, hooks)
    return run_guarded(run, lambda r: _judge(r, check))


def _media(run: GuestRun, check: ImageCheck) -> Path:
    """A sparse copy of the given file as an NVDIMM backing file: the original is never written."""
    media = run.run_dir / "nvdimm0.img"
    capture_file(check.image.path, media)
    os.truncate(media, check.shape.nvdimm_size)  # a raw image grows to its NVDIMM (a hole)
    return media


def _judge(run: GuestRun, check: ImageCheck) -> list[Finding]:
    findings: list[Finding] = []
    recovery: dict[str, Any] = {"mounted": None, "fsck_clean": None, "format": check.image.format.value}
    run.result.metrics["recovery"] = recovery
    if run.hooks.boot is BootMode.SNAPSHOT:
        with run.phase("ready_snapshot"):  # found in the cache (~0 s), or built once: a cold boot
            run.maker.snapshot(None)
    with run.phase("copy"):
        media = _media(run, check)
    try:
        with run.machine("recovery", [media], None) as machine:
            with run.phase("recovery_boot" if machine.incoming is None else "recovery_restore"):
                run.maker.bring_up(machine)
            with run.phase("namespace"):
                device = _device(machine, check)
            findings += _recover(run, check, machine, device, recovery)
            with run.phase("shutdown"):
                machine.poweroff(timeout=30)
    finally:
        media.unlink(missing_ok=True)
    return findings


def _device(machine: Machine, check: ImageCheck) -> str:
    """The block device the given image appears as, after the guest re-read the namespace from it."""
    if machine.incoming is not None:  # restored: the guest's namespace view is the template's
        machine.run(["sh", "-c", REREAD], timeout=60, check=True)
    pmem.wait_for_namespace(machine.agent)
    script = (f"i=0; while [ $i -lt {int(DEVICE_WAIT_S * 10)} ]; do [ -b /dev/pmem0 ] && exit 0; "
              "i=$((i+1)); sleep 0.1; done; exit 1")
    if not machine.run(["sh", "-c", script], timeout=DEVICE_WAIT_S + 5, check=False).ok:
        raise GuestError(f"no /dev/pmem0 appeared within {DEVICE_WAIT_S:.0f} s of re-reading the namespace")
    if check.image.format is ImageFormat.RAW_FS:
        return "/dev/pmem0"
    device = pmem.existing_pmem_device(machine.agent)
    if device is None:
        raise GuestError("the guest found no fsdax namespace on the capture (its info block did not probe)")
    return device


def _recover(run: GuestRun, check: ImageCheck, machine: Machine, device: str,
             recovery: dict[str, Any]) -> list[Finding]:
    """The power cut's recovery oracles (lab/crash/cut_flow.py judge_mounted), on `device`."""
    records = check.records

    def judge(machine: Machine, mountpoint: str) -> list[Finding]:
        return [_persistence(run, records, machine)] if records is not None else []

    return judge_mounted(run, machine, check.fs, check.dax, device, judge, recovery, "given")


def _persistence(run: GuestRun, spec: RecordSpec, machine: Machine) -> Finding:
    read = read_file(machine, f"{pmem.MOUNTPOINT}/{spec.file}")
    data = read.check().stdout if read is not None else b""  # a missing file: every record lost
    result = check_persistence(data, spec.durable, spec.layout, spec.records)
    run.result.metrics["persistence"] = {"survived": result.survived, "lost": result.lost,
                                         "corrupt": result.corrupt, "file_size": result.file_size}
    return result.finding()

