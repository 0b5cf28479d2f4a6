"""Ready snapshots: the saved device+RAM state of a machine at agent-ready, restored for every
workload and recovery instead of a cold boot.

    save:    stop -> x-ignore-shared on -> bandwidth cap raised -> migrate to fd:<state file>
    restore: same argv + `-incoming defer` -> x-ignore-shared on -> migrate-incoming fd:<state file>
             -> (paused, as the source was) -> cont -> PING the agent (no READY after a restore)

Guest RAM is file-backed: `share=on` while the template runs, so its pages are in ram.img and
not in the stream (a 0.3 MB state instead of 160 MB); `share=off` in every clone, a private
copy-on-write mapping of the same file, so ram.img never changes and clones load in ~0.15 s.

The NVDIMM content is NOT in the state: `x-ignore-shared` skips every `share=on` RAM block (the
NVDIMM and its label area). Without it, loading the state would write the template's NVDIMM pages
over whatever media the restored machine was given - a restored capture would silently become the
template. QEMU checks only the block's name, size and address, so each clone brings its own media
file: a copy of the template media for a workload, the capture for a recovery.

A snapshot lives in the content-addressed cache under a key made of everything that makes a saved
state invalid (QEMU binary and version, accelerator, CPU model, the machine's argv with its per-run
paths blanked, image id, RAM, NVDIMM shape, what the guest prepared on the media). A key change
builds a new snapshot; a state is never loaded into another kernel or machine shape.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError, MachineError
from lab.vm.capture import data_extents
from lab.vm.spec import ChannelFds, MachineSpec, qemu_argv

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1  # bump when the layout or the save procedure changes: old entries are never used
MAX_BANDWIDTH = 8 * 1024**3  # QEMU 7.2 caps migration at 128 MiB/s by default: a 160 MB state took 1.3 s
MIGRATE_TIMEOUT_S = 120.0
STATE_FILE = "state.bin"
RAM_FILE = "ram.img"
TEMPLATE_MEDIA = "template.img"
MANIFEST = "manifest.json"
_PLACEHOLDER_FDS = ChannelFds(qmp=3, agent=4, events=5, plugin=6)


class SnapshotError(LabError):
    """A ready snapshot could not be saved, found intact, or restored."""


@functools.lru_cache(maxsize=8)
def qemu_identity(binary: str) -> str:
    """The QEMU binary's resolved path and version line: a new QEMU never loads an old state."""
    path = shutil.which(binary) or binary
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MachineError(f"cannot run {path} --version: {exc}") from None
    stat = os.stat(path)
    return f"{os.path.realpath(path)} {out.splitlines()[0] if out else '?'} {stat.st_size} {int(stat.st_mtime)}"


def key_argv(spec: MachineSpec) -> list[str]:
    """The machine's argv with every per-run path blanked: what must match between save and restore."""
    blank = dataclasses.replace(
        spec, name="ready", console_log=Path("CONSOLE"),
        nvdimms=tuple(dataclasses.replace(nv, backing_file=Path(f"MEDIA{i}")) for i, nv in enumerate(spec.nvdimms)),
        shares=tuple(dataclasses.replace(sh, host_dir=Path(f"SHARE{i}")) for i, sh in enumerate(spec.shares)),
        ram_file=dataclasses.replace(spec.ram_file, path=Path("RAM")) if spec.ram_file else None)
    return qemu_argv(blank, _PLACEHOLDER_FDS)


def snapshot_inputs(spec: MachineSpec, image_id: str, prepared: dict[str, Any]) -> dict[str, Any]:
    """Everything a saved state depends on; `prepared` says what the guest did before the save
    (e.g. {"fs": "ext4", "mkfs": [...]}), since the state holds the guest's view of the media."""
    return {"format": SNAPSHOT_FORMAT, "qemu": qemu_identity(spec.qemu_binary), "accel": spec.accel.value,
            "argv": key_argv(spec), "image": image_id, "memory_mib": spec.memory_mib, "cpus": spec.cpus,
            "nvdimms": [{"size": nv.size, "align": nv.align, "label_size": nv.label_size} for nv in spec.nvdimms],
            "shares": [{"tag": sh.tag, "security_model": sh.security_model} for sh in spec.shares],
            "prepared": prepared}


def snapshot_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReadySnapshot:
    """A complete cache entry: the state file, the template media it was saved with, the manifest."""

    key: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def state(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def ram(self) -> Path:
        return self.directory / RAM_FILE

    @property
    def template_media(self) -> Path:
        return self.directory / TEMPLATE_MEDIA

    @property
    def device(self) -> str | None:
        """The guest's block device for the prepared media (/dev/pmem0), if the guest made one."""
        device: str | None = self.manifest.get("device")
        return device


def _sha256(path: Path) -> str:
    """Over the file's data regions (holes count as their offsets): a sparse 1 GiB RAM file hashes fast."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for offset, length in data_extents(handle.fileno(), size):
            digest.update(f"{offset}:{length}:".encode())
            handle.seek(offset)
            left = length
            while left and (chunk := handle.read(min(1 << 20, left))):
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int, int], bool] = {}  # (path, ino, size, mtime_ns): checked this process


def forget_verified(directory: Path) -> None:
    """Hash the entry's files again on next use (after a restore from it failed)."""
    for token in [t for t in _verified if Path(t[0]).parent == directory]:
        del _verified[token]


def load_snapshot(directory: Path, key: str) -> ReadySnapshot:
    """The entry at `directory`, checked: manifest, key, state size and (once per process) its sha256.

    SnapshotError names what is wrong; the caller removes the entry and builds it again."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise SnapshotError(f"ready snapshot {directory}: no {MANIFEST} (an incomplete entry)") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"ready snapshot {manifest_path} is unreadable: {exc}") from None
    if manifest.get("key") != key or manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"ready snapshot {manifest_path} is for key {manifest.get('key')!r} "
                            f"format {manifest.get('format')!r}, not {key} format {SNAPSHOT_FORMAT}")
    snap = ReadySnapshot(key, directory, manifest)
    for path, field in ((snap.state, "state"), (snap.ram, "ram")):
        if not path.is_file():
            raise SnapshotError(f"ready snapshot {directory}: {path.name} is missing")
        stat = path.stat()
        if stat.st_size != manifest.get(f"{field}_bytes"):
            raise SnapshotError(f"ready snapshot {field} {path} is {stat.st_size} bytes, the manifest says "
                                f"{manifest.get(f'{field}_bytes')} (truncated or replaced)")
        token = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if not _verified.get(token):
            if _sha256(path) != manifest.get(f"{field}_sha256"):
                raise SnapshotError(f"ready snapshot {field} {path} does not match its sha256 (corrupted)")
            _verified[token] = True
    if not snap.template_media.is_file():
        raise SnapshotError(f"ready snapshot {directory}: {TEMPLATE_MEDIA} is missing")
    return snap


def write_manifest(directory: Path, key: str, inputs: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Written last: an entry without a manifest is incomplete and never used."""
    state, ram = directory / STATE_FILE, directory / RAM_FILE
    manifest = {"format": SNAPSHOT_FORMAT, "key": key, "inputs": inputs,
                "state_bytes": state.stat().st_size, "state_sha256": _sha256(state),
                "ram_bytes": ram.stat().st_size, "ram_sha256": _sha256(ram),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.rename(directory / MANIFEST)
    return manifest


def migration_caps(qmp_execute: Any, ignore_shared: bool = True) -> None:
    """Both ends: skip share=on RAM blocks (the NVDIMMs). A destination without it refuses the stream."""
    qmp_execute("migrate-set-capabilities",
                {"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared}]})


def wait_migration(query: Any, what: str, timeout: float = MIGRATE_TIMEOUT_S) -> dict[str, Any]:
    """Poll query-migrate until it completes; SnapshotError with QEMU's error-desc when it fails."""
    deadline = time.monotonic() + timeout
    interval = 0.005
    while True:
        info: dict[str, Any] = query()
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise SnapshotError(f"{what} {status}: {info.get('error-desc', 'QEMU gave no reason')}")
        if time.monotonic() > deadline:
            raise SnapshotError(f"{what} did not complete within {timeout:.0f} s (status {status})")
        time.sleep(interval)
        interval = min(0.05, interval * 2)

