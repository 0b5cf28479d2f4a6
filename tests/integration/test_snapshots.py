"""Ready snapshots on real QEMU: a restore shows the media it was given, never the template's;
a broken state is an error naming it, with no QEMU left; a full disk leaves no half entry."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import lab.runner.machines as machines
from lab.errors import LabError, LaunchError
from lab.image.cache import Image
from lab.runner.machines import BootMode, MachineMaker, SnapshotRequest, ready_snapshot
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape, lab_spec, ready_timeout
from lab.vm.capture import capture_file
from lab.vm.machine import Machine
from lab.vm.media import MediaLock, create_sparse

MARK_OFFSET = 64 * 1024 * 1024  # far from anything the namespace or a filesystem writes
MARK_BLOCK = MARK_OFFSET // 4096


def put_mark(media: Path, text: bytes) -> None:
    with media.open("r+b") as handle:
        handle.seek(MARK_OFFSET)
        handle.write(text * (4096 // len(text)))


def guest_mark(machine: Machine) -> bytes:
    """What the guest reads from its raw namespace at the mark."""
    return machine.run(["dd", "if=/dev/pmem0", "bs=4096", f"skip={MARK_BLOCK}", "count=1"], timeout=30,
                       check=True).stdout[:16]


def test_a_restore_reads_its_own_media_not_the_template(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    snap = ready_snapshot(SnapshotRequest(image, accel.accel, MachineShape(), None))
    capture = tmp_path / "capture.img"
    capture_file(snap.template_media, capture)
    put_mark(capture, b"CAPTURE.")
    maker = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT)
    with maker.machine("recovery", tmp_path, [capture], None) as machine:
        seconds = maker.bring_up(machine)
        assert guest_mark(machine) == b"CAPTURE." * 2
        machine.destroy()
    assert seconds < 10
    with snap.template_media.open("rb") as handle:  # and the template stayed as it was
        handle.seek(MARK_OFFSET)
        assert handle.read(8) == b"\0" * 8


def test_without_x_ignore_shared_the_template_overwrites_the_media(image: Image, accel: AccelVerdict,
                                                                   tmp_path: Path) -> None:
    """Why the capability is on: without it, loading the state writes the template's NVDIMM pages
    over the clone's media, and the restored capture silently becomes the template."""
    template = tmp_path / "template.img"
    create_sparse(template, MachineShape().nvdimm_size)
    put_mark(template, b"TEMPLATE")
    spec = lab_spec(image, "template", tmp_path, [template], accel.accel)
    with Machine(spec, tmp_path, ignore_shared=False) as machine:
        machine.wait_ready(ready_timeout(accel.accel))
        assert guest_mark(machine) == b"TEMPLATE" * 2
        machine.save_state(tmp_path / "state.bin")
    clone_media = tmp_path / "clone.img"
    create_sparse(clone_media, MachineShape().nvdimm_size)
    put_mark(clone_media, b"CAPTURE.")
    clone = lab_spec(image, "clone", tmp_path, [clone_media], accel.accel)
    with Machine(clone, tmp_path, incoming=tmp_path / "state.bin", ignore_shared=False) as machine:
        machine.wait_ready(60)
        assert guest_mark(machine) == b"TEMPLATE" * 2, "the leak this lab's restores are built to avoid"
        machine.destroy()
    with clone_media.open("rb") as handle:
        handle.seek(MARK_OFFSET)
        assert handle.read(8) == b"TEMPLATE"


def test_a_state_qemu_cannot_load_is_an_error_with_its_words(image: Image, accel: AccelVerdict,
                                                             tmp_path: Path) -> None:
    snap = ready_snapshot(SnapshotRequest(image, accel.accel, MachineShape(), None))
    bad = tmp_path / "state.bin"
    bad.write_bytes(b"QEVM" + os.urandom(4096))
    media = tmp_path / "media.img"
    capture_file(snap.template_media, media)
    spec = lab_spec(image, "bad", tmp_path, [media], accel.accel)
    from dataclasses import replace

    from lab.vm.spec import RamFile

    machine = Machine(replace(spec, ram_file=RamFile(snap.ram, shared=False)), tmp_path, incoming=bad)
    with pytest.raises(LabError) as error:
        with machine:
            machine.wait_ready(30)
    assert str(bad) in str(error.value)
    assert isinstance(error.value, LaunchError) and error.value.exit_code not in (None, 0)
    assert machine.process is not None and not machine.process.alive()
    MediaLock(media).acquire().release()  # the media lock went with the machine


def test_a_full_disk_while_building_leaves_no_entry(image: Image, accel: AccelVerdict, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    try:
        monkeypatch.setattr(machines, "snapshots_dir", lambda: small / "snapshots")
        with pytest.raises(LabError) as error:
            ready_snapshot(SnapshotRequest(image, accel.accel, MachineShape(), None))
        assert "could not be built under" in str(error.value) and "MiB free there" in str(error.value)
        left = sorted(p.name for p in (small / "snapshots").iterdir())
        assert all(name.endswith((".lock", ".use")) for name in left), left  # no entry, no .tmp directory
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
