"""Lab machines for a run: restored from a ready snapshot (the default) or booted cold.

A ready snapshot is a machine booted to agent-ready with its modules loaded
and, for a filesystem, the fsdax namespace created and the filesystem made on
a template NVDIMM - then unmounted, caches dropped, and saved without the
NVDIMM content (lab/vm/snapshot.py); its guest RAM stays in a file that every
clone maps copy-on-write. A workload machine is restored on a
sparse copy of the template media and only mounts; a recovery machine is
restored on the capture, which descends from the same template, so the
guest's view of the namespace (kept in RAM) still matches the media, and the
mount replays the journal from what the capture holds.

`--cold-boot` keeps the path without snapshots: fresh media, a full boot,
namespace + mkfs + mount. Verdicts must not depend on the path.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Iterator, Sequence

from lab.vm.capture import capture_file
from lab.errors import ConfigError, GuestError, LabError
from lab.guest import pmem
from lab.guest.pmem import DaxMode, Filesystem, PmemMount
from lab.image.cache import Image
from lab.paths import cache_dir
from lab.runner import snapshot_cache
from lab.vm.backend import Backend, BackendChoice
from lab.vm.boot import MachineShape, lab_spec, ready_timeout
from lab.vm.libvirt_machine import LibvirtMachine
from lab.vm.machine import Machine
from lab.vm.media import create_sparse
from lab.vm.snapshot import (ReadySnapshot, SnapshotError, forget_verified, load_snapshot, snapshot_inputs,
                             snapshot_key, write_manifest)
from lab.vm.spec import MIB, Accel, MachineSpec, RamFile, ShareSpec

log = logging.getLogger(__name__)

RESTORE_TIMEOUT_S = 60.0
BUILD_LOCK_TIMEOUT_S = 600.0  # another process building the same snapshot: a cold boot + mkfs under TCG
READY_CONSOLE = "ready.console.log"
BUILD_NEEDS_MIB = 400  # the guest RAM it touches (~260 MB at 1 GiB) plus the made filesystem
DROP_CACHES = 'sync; echo 3 > /proc/sys/vm/drop_caches; blockdev --flushbufs "$1"'
RAW_DEVICE = "/dev/pmem0"  # a label-less NVDIMM's raw namespace


class BootMode(str, Enum):
    SNAPSHOT = "snapshot"  # restore a ready snapshot (default)
    COLD = "cold"  # boot from scratch, as a cold machine does


def snapshots_dir() -> Path:
    return cache_dir() / "snapshots"


@dataclass(frozen=True)
class SnapshotRequest:
    """Which ready snapshot a machine needs."""

    image: Image
    accel: Accel
    shape: MachineShape
    fs: Filesystem | None  # the filesystem made on the template media; None: the raw namespace
    share_tags: tuple[str, ...] = ()  # virtio-9p devices the machine carries (their paths differ per run)

    def spec_for_key(self) -> MachineSpec:
        """A clone's spec (paths blanked by the key): what a state is loaded into."""
        shares = tuple(ShareSpec(Path(f"SHARE{i}"), tag) for i, tag in enumerate(self.share_tags))
        spec = lab_spec(self.image, "ready", Path("/nonexistent"), [Path("MEDIA0")], self.accel, self.shape)
        return replace(spec, shares=shares, ram_file=RamFile(Path("RAM"), shared=False))

    def inputs(self) -> dict[str, object]:
        prepared = {"fs": self.fs.value if self.fs else None, "mkfs": pmem.MKFS[self.fs] if self.fs else None,
                    "namespace": "fsdax -M mem" if self.fs else None}
        return snapshot_inputs(self.spec_for_key(), self.image.id, prepared)


_memo: dict[Path, ReadySnapshot] = {}  # entry dir -> a checked entry: later lookups in this process skip the disk


def ready_snapshot(request: SnapshotRequest) -> ReadySnapshot:
    """The cached ready snapshot for `request`, built (once, under a lock) when missing or broken."""
    inputs = request.inputs()
    key = snapshot_key(inputs)
    root = snapshots_dir()
    entry = root / key
    if entry in _memo:
        return _memo[entry]
    root.mkdir(parents=True, exist_ok=True)
    built = False
    with _build_lock(root / f"{key}.lock"):
        snapshot_cache.hold(entry)  # before the check: from here on the collector leaves it alone
        if entry.exists():
            try:
                snap = load_snapshot(entry, key)
                _memo[entry] = snap
                return snap
            except SnapshotError as exc:
                log.warning("%s; rebuilding it", exc)
                shutil.rmtree(entry, ignore_errors=True)
        try:
            snap = _build(request, inputs, key, entry)
        except ClockSkewError as exc:
            log.warning("%s; booting the template again", exc)
            snap = _build(request, inputs, key, entry)
        built = True
    _memo[entry] = snap
    if built:
        _collect_after_build(root)
    return snap


def _collect_after_build(root: Path) -> None:
    """A new entry costs ~290 MB: drop what can never be used again, and keep the cache under a
    generous cap (`pmemlab cache gc` applies a tighter one)."""
    try:
        report = snapshot_cache.collect(root, max_bytes=snapshot_cache.AUTO_MAX_BYTES)
    except OSError as exc:
        log.warning("could not tidy the ready-snapshot cache %s: %s", root, exc)
        return
    for removed in report.removed:
        log.info("removed ready snapshot %s (%s, %.0f MB)", removed["key"], removed["why"], removed["bytes"] / 1e6)


def find_snapshot(request: SnapshotRequest) -> ReadySnapshot | None:
    """The intact cached snapshot for `request`, or None (nothing is built)."""
    key = snapshot_key(request.inputs())
    try:
        return load_snapshot(snapshots_dir() / key, key)
    except SnapshotError:
        return None


def probe_restore(request: SnapshotRequest, snap: ReadySnapshot) -> float:
    """Restore one clone of `snap` on a copy of its template media and ping it: seconds to the answer."""
    workdir = Path(tempfile.mkdtemp(prefix="pmemlab-restore-probe-"))
    try:
        maker = MachineMaker(request.image, request.accel, request.shape, BootMode.SNAPSHOT)
        media = capture_file(snap.template_media, workdir / "nvdimm0.img").path
        with Machine(replace(lab_spec(request.image, "restore-probe", workdir, [media], request.accel, request.shape),
                             ram_file=RamFile(snap.ram, shared=False)), workdir, incoming=snap.state) as machine:
            seconds = maker.bring_up(machine)
            machine.destroy()
        return seconds
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def forget(snap: ReadySnapshot) -> None:
    """Drop a snapshot that failed to restore, so the next request checks it again (and rebuilds it
    if it is broken)."""
    _memo.pop(snap.directory, None)
    forget_verified(snap.directory)


def load_snapshot_of(state: Path) -> ReadySnapshot:
    """The memoised entry a state file belongs to (for forgetting it)."""
    return _memo.get(state.parent) or ReadySnapshot(state.parent.name, state.parent, {})


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + BUILD_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SnapshotError(f"another process held {path} for {BUILD_LOCK_TIMEOUT_S:.0f} s "
                                        "(building the same ready snapshot)") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _build(request: SnapshotRequest, inputs: dict[str, object], key: str, entry: Path) -> ReadySnapshot:
    """Boot, prepare, save into a temporary directory; renamed into place only when complete."""
    log.info("no ready snapshot %s in %s (image %s, %s, %s): building it", key, entry.parent, request.image.id,
             request.accel.value, request.fs.value if request.fs else "raw namespace")
    tmp = entry.parent / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        media = tmp / "template.img"
        create_sparse(media, request.shape.nvdimm_size)
        ram = tmp / "ram.img"
        create_sparse(ram, request.shape.memory_mib * MIB)
        spec = lab_spec(request.image, "ready", tmp, [media], request.accel, request.shape)
        spec = replace(spec, console_log=tmp / READY_CONSOLE, ram_file=RamFile(ram, shared=True),
                       shares=tuple(ShareSpec(tmp, tag) for tag in request.share_tags))
        device: str | None = None
        with Machine(spec, tmp) as machine:
            machine.wait_ready(ready_timeout(request.accel))
            rate = check_guest_clock(machine)
            pmem.wait_for_namespace(machine.agent)
            if request.fs is not None:
                device = pmem.create_fsdax(machine.agent)
                pmem.mkfs(machine.agent, request.fs, device)
            # Nothing of the media may stay in guest RAM: a clone reads its own media.
            machine.run(["sh", "-c", DROP_CACHES, "sh", device or RAW_DEVICE], timeout=60, check=True)
            save_s = machine.save_state(tmp / "state.bin")
        write_manifest(tmp, key, inputs, {"device": device, "save_s": round(save_s, 3), "clock_rate": round(rate, 4),
                                          "build_s": round(time.monotonic() - started, 3)})
        tmp.rename(entry)
    except ClockSkewError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (LabError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(entry.parent).free // MIB
        raise SnapshotError(f"the ready snapshot could not be built under {entry.parent} ({free} MiB free there; "
                            f"a build needs about {BUILD_NEEDS_MIB} MiB): {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("ready snapshot %s built in %.1f s (%s)", key, time.monotonic() - started,
             request.fs.value if request.fs else "raw namespace")
    return load_snapshot(entry, key)


class ClockSkewError(SnapshotError):
    """The template guest's clock does not keep host time."""


CLOCK_PROBE_S = 1.0
CLOCK_TOLERANCE = 0.1  # guest seconds per host second must be within 10 % of 1


def check_guest_clock(machine: Machine) -> float:
    """Guest seconds per host second over a short interval. Every clone inherits the template's TSC
    calibration; one made while the host was overloaded can run the guest clock far too fast (deadlines
    in the guest fire early, journal commit intervals shrink), so such a template is refused."""
    def uptime() -> tuple[float, float]:
        host = time.monotonic()
        guest = float(machine.run(["cat", "/proc/uptime"], timeout=10, check=True).text.split()[0])
        return host, guest

    host0, guest0 = uptime()
    time.sleep(CLOCK_PROBE_S)
    host1, guest1 = uptime()
    rate = (guest1 - guest0) / (host1 - host0)
    if abs(rate - 1.0) > CLOCK_TOLERANCE + 0.02:  # /proc/uptime has 10 ms steps
        raise ClockSkewError(f"the template guest's clock ran at {rate:.2f} s per host second (its TSC was "
                            "calibrated badly, e.g. under heavy host load): not saving it")
    return rate


class MachineMaker:
    """Makes a run's machines in one boot mode on one backend, and prepares their filesystem."""

    def __init__(self, image: Image, accel: Accel, shape: MachineShape, boot: BootMode,
                 backend: BackendChoice = BackendChoice()) -> None:
        if backend.kind is Backend.LIBVIRT and boot is not BootMode.COLD:
            raise ConfigError("the libvirt backend boots every machine cold (no ready snapshots under libvirt: "
                              "virsh save writes NVDIMM pages back over the media); use --cold-boot")
        self.image = image
        self.accel = accel
        self.shape = shape
        self.boot = boot
        self.backend = backend

    def snapshot(self, fs: Filesystem | None, shares: Sequence[ShareSpec] = ()) -> ReadySnapshot:
        return ready_snapshot(SnapshotRequest(self.image, self.accel, self.shape, fs,
                                              tuple(share.tag for share in shares)))

    def fresh_media(self, dest: Path, fs: Filesystem | None, shares: Sequence[ShareSpec] = ()) -> Path:
        """A workload's NVDIMM: empty (cold), or a sparse copy of the snapshot's template media."""
        if self.boot is BootMode.COLD:
            create_sparse(dest, self.shape.nvdimm_size)
        else:
            capture_file(self.snapshot(fs, shares).template_media, dest)
        return dest

    def machine(self, name: str, run_dir: Path, media: Sequence[Path], fs: Filesystem | None,
                shares: Sequence[ShareSpec] = ()) -> Machine:
        spec = lab_spec(self.image, name, run_dir, list(media), self.accel, self.shape)
        if shares:
            spec = replace(spec, shares=tuple(shares))
        if self.backend.kind is Backend.LIBVIRT:
            return LibvirtMachine(spec, run_dir, self.backend.libvirt_uri, run_dir.name)
        if self.boot is BootMode.COLD:
            return Machine(spec, run_dir)
        snap = self.snapshot(fs, shares)
        return Machine(replace(spec, ram_file=RamFile(snap.ram, shared=False)), run_dir, incoming=snap.state)

    def bring_up(self, machine: Machine) -> float:
        """Boot (cold) or restore (snapshot) to an answering agent; seconds it took."""
        if machine.incoming is None:
            return machine.wait_ready(ready_timeout(self.accel))
        try:
            seconds = machine.wait_ready(RESTORE_TIMEOUT_S)
        except LabError:
            forget(load_snapshot_of(machine.incoming))
            raise
        # The guest's wall clock is the template's: set it, so file times and logs read true.
        machine.run(["date", "-u", "-s", f"@{int(time.time())}"], timeout=10, check=True)
        return seconds

    def setup(self, machine: Machine, fs: Filesystem, dax: DaxMode) -> PmemMount:
        """From a brought-up machine to a mounted, DAX-verified filesystem on its NVDIMM."""
        if machine.incoming is None:
            return pmem.setup(machine.agent, fs, dax)
        device = self.snapshot(fs).device
        if device is None:
            raise GuestError(f"the ready snapshot for {fs.value} made no filesystem")
        return pmem.mount_verified(machine.agent, fs, device, dax)

    def known_device(self, machine: Machine, fs: Filesystem) -> str | None:
        """The fsdax device a restored machine already has (None for a cold one: it must look)."""
        return self.snapshot(fs).device if machine.incoming is not None else None

    def ready_console(self, fs: Filesystem | None, shares: Sequence[ShareSpec] = ()) -> Path | None:
        """The console of the boot the snapshot was saved from: its kernel messages belong to every clone."""
        if self.boot is BootMode.COLD:
            return None
        return self.snapshot(fs, shares).directory / READY_CONSOLE
