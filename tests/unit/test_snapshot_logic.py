"""Ready-snapshot keys and cache entries, and how a campaign gathers crash points into workload runs
(no QEMU: the logic alone)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest

import lab.runner.machines as machines
from lab.cases import expand
from lab.crash.cut_flow import PausedTime
from lab.campaign import plan_tasks
from lab.guest.pmem import Filesystem
from lab.image.cache import Image
from lab.runner.machines import SnapshotRequest, ready_snapshot
from lab.scenario import load_scenario
from lab.vm.boot import MachineShape, lab_spec
from lab.vm.snapshot import SnapshotError, key_argv, load_snapshot, snapshot_key, write_manifest
from lab.vm.spec import Accel, RamFile

REPO = Path(__file__).resolve().parents[2]


def image(tmp_path: Path, image_id: str = "img1") -> Image:
    return Image(id=image_id, path=tmp_path / "images" / image_id,
                 manifest={"initramfs": "initramfs.cpio.gz", "kernel_version": "6.1.0-test"})


def test_key_argv_blanks_every_per_run_path(tmp_path: Path) -> None:
    img = image(tmp_path)
    one = lab_spec(img, "workload", tmp_path / "a", [tmp_path / "a" / "m.img"], Accel.TCG)
    two = lab_spec(img, "recovery", tmp_path / "b", [tmp_path / "b" / "capture.img"], Accel.TCG)
    one = dataclasses.replace(one, ram_file=RamFile(tmp_path / "x" / "ram.img", shared=False))
    two = dataclasses.replace(two, ram_file=RamFile(tmp_path / "y" / "ram.img", shared=False))
    assert key_argv(one) == key_argv(two)
    assert not any(str(tmp_path / "a") in arg or str(tmp_path / "y") in arg for arg in key_argv(one))
    bigger = dataclasses.replace(one, memory_mib=2048)
    assert key_argv(bigger) != key_argv(one)


def test_the_key_changes_with_image_fs_shape_and_accelerator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lab.vm.snapshot.qemu_identity", lambda binary: "qemu 7.2 test")
    base = SnapshotRequest(image(tmp_path), Accel.TCG, MachineShape(), Filesystem.EXT4)
    variants = [dataclasses.replace(base, image=image(tmp_path, "img2")),
                dataclasses.replace(base, fs=Filesystem.XFS), dataclasses.replace(base, fs=None),
                dataclasses.replace(base, shape=MachineShape(cpus=1)),
                dataclasses.replace(base, shape=MachineShape(nvdimm_size=512 * 1024 * 1024)),
                dataclasses.replace(base, accel=Accel.KVM), dataclasses.replace(base, share_tags=("share",))]
    keys = {snapshot_key(base.inputs())} | {snapshot_key(v.inputs()) for v in variants}
    assert len(keys) == len(variants) + 1
    assert snapshot_key(base.inputs()) == snapshot_key(dataclasses.replace(base).inputs())


def fake_entry(directory: Path, key: str) -> None:
    """What a build leaves (with made-up contents): state, RAM file, template media, manifest last."""
    directory.mkdir(parents=True)
    (directory / "state.bin").write_bytes(b"QEVM" + bytes(range(256)) * 8)
    with (directory / "ram.img").open("wb") as ram:
        ram.truncate(1 << 20)
        ram.write(b"kernel text")
    (directory / "template.img").write_bytes(b"")
    write_manifest(directory, key, {"format": 1}, {"device": "/dev/pmem0"})


def test_an_intact_entry_loads(tmp_path: Path) -> None:
    fake_entry(tmp_path / "k1", "k1")
    snap = load_snapshot(tmp_path / "k1", "k1")
    assert snap.device == "/dev/pmem0" and snap.state.name == "state.bin" and snap.ram.name == "ram.img"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "manifest.json").unlink(), "no manifest.json (an incomplete entry)"),
    (lambda d: (d / "state.bin").write_bytes(b"QEVM"), "is 4 bytes, the manifest says"),
    (lambda d: (d / "state.bin").write_bytes(b"QEVX" + bytes(range(256)) * 8), "does not match its sha256"),
    (lambda d: (d / "ram.img").unlink(), "ram.img is missing"),
    (lambda d: (d / "manifest.json").write_text("{"), "is unreadable"),
])
def test_a_damaged_entry_is_refused_naming_the_file(tmp_path: Path, damage: object, message: str) -> None:
    fake_entry(tmp_path / "k1", "k1")
    damage(tmp_path / "k1")  # type: ignore[operator]
    with pytest.raises(SnapshotError, match=re.escape(message)):
        load_snapshot(tmp_path / "k1", "k1")


def test_an_entry_for_another_key_is_refused(tmp_path: Path) -> None:
    fake_entry(tmp_path / "k1", "k1")
    with pytest.raises(SnapshotError, match="is for key 'k1'"):
        load_snapshot(tmp_path / "k1", "k2")


def test_a_broken_cached_snapshot_is_rebuilt_and_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("lab.vm.snapshot.qemu_identity", lambda binary: "qemu 7.2 test")
    monkeypatch.setattr(machines, "snapshots_dir", lambda: tmp_path / "snapshots")
    builds: list[str] = []

    def build(request: SnapshotRequest, inputs: dict[str, object], key: str, entry: Path) -> object:
        builds.append(key)
        fake_entry(entry, key)
        return load_snapshot(entry, key)

    monkeypatch.setattr(machines, "_build", build)
    request = SnapshotRequest(image(tmp_path), Accel.TCG, MachineShape(), Filesystem.EXT4)
    first = ready_snapshot(request)
    machines._memo.clear()
    assert ready_snapshot(request).directory == first.directory and len(builds) == 1  # found in the cache
    machines._memo.clear()
    (first.state).write_bytes(b"QEVM")  # truncated
    with caplog.at_level(logging.WARNING):
        again = ready_snapshot(request)
    assert len(builds) == 2 and again.state.stat().st_size > 4
    assert any("(truncated or replaced); rebuilding it" in r.getMessage() for r in caplog.records)
    machines._memo.clear()


def test_crash_points_of_a_cell_share_a_workload_run() -> None:
    cases = expand(load_scenario(REPO / "scenarios" / "mapsync-many-cuts.toml"))
    tasks = plan_tasks(cases, None)
    assert [len(t) for t in tasks] == [10, 10, 10, 10]
    assert all(len({c.cell_key for c in t}) == 1 for t in tasks)
    assert [len(t) for t in plan_tasks(cases, 4)] == [4, 4, 2] * 4


def test_kinds_whose_workload_uses_the_seed_or_cut_no_power_run_alone() -> None:
    race = expand(load_scenario(REPO / "scenarios" / "truncate-fault-race.toml"))
    assert all(len(t) == 1 for t in plan_tasks(race, None))  # each crash point's seed is its own race
    contract = expand(load_scenario(REPO / "scenarios" / "mapsync-contract.toml"))
    assert all(len(t) == 1 for t in plan_tasks(contract, None))


def test_time_offsets_count_only_the_time_the_guest_ran() -> None:
    paused = PausedTime([(10.0, 12.0), (20.0, 20.5)])
    assert paused.since(0.0) == 2.5
    assert paused.since(11.0) == 1.5  # the part of the first freeze after the mark
    assert paused.since(30.0) == 0.0


def test_golden_manifest_fields(tmp_path: Path) -> None:
    fake_entry(tmp_path / "k1", "k1")
    manifest = json.loads((tmp_path / "k1" / "manifest.json").read_text())
    assert {"format", "key", "inputs", "state_bytes", "state_sha256", "ram_bytes", "ram_sha256", "created",
            "device"} <= set(manifest)
