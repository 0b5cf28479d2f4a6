"""Failures told as they are, on real QEMU: a QEMU killed mid-run, a full disk, the taint oracle.

Each test is short (restored machines, a small mapsync run). The disk-full test mounts a small
tmpfs (root only) as the data directory: too small for the run, then big enough.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from lab.crash.point import CrashPoint
from lab.errors import QemuDied
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.runner.guest_run import RunHooks
from lab.runner.machines import BUILD_NEEDS_MIB, BootMode, MachineMaker
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MIB, MachineShape
from lab.vm.machine import Machine, MachineState
from lab.vm.media import MediaLock
from lab.workloads import mapsync_kind
from lab.workloads.mapsync import MapsyncParams
from tests.conftest import lab_qemu_processes

REPO = Path(__file__).resolve().parents[2]


def _check(records: int = 50, keep_capture: bool = False) -> mapsync_kind.MapsyncCheck:
    return mapsync_kind.MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=records),
                                     CrashPoint(after_ack=records * 3 // 5), keep_capture=keep_capture)


def test_qemu_killed_while_an_agent_command_runs(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    maker = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT)
    media = maker.fresh_media(run_dir / "nvdimm0.img", Filesystem.EXT4)
    machine = maker.machine("workload", run_dir, [media], Filesystem.EXT4)
    with pytest.raises(QemuDied) as died:
        with machine:
            maker.bring_up(machine)
            assert machine.process is not None
            pid = machine.process.pid
            threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
            machine.run(["sleep", "20"], timeout=30)
    assert str(died.value).startswith("QEMU for machine 'workload' died: killed by signal 9 (SIGKILL)")
    assert died.value.returncode == -signal.SIGKILL and died.value.errno is None
    assert "channel closed" in str(died.value.__cause__)  # what it was told as before
    assert machine.state is MachineState.DEAD and machine.process is not None and not machine.process.alive()
    with MediaLock(media):  # released
        pass


def test_qemu_killed_mid_run_is_infra_error_naming_the_signal(image: Image, accel: AccelVerdict,
                                                              run_dir: Path) -> None:
    machines: list[Machine] = []

    def on_phase(phase: str) -> None:
        if phase == "workload":  # the workload runs; the host waits for its crash point
            assert machines[-1].process is not None
            os.kill(machines[-1].process.pid, signal.SIGKILL)

    hooks = RunHooks(on_phase=on_phase, on_machine=machines.append)
    result = mapsync_kind.run(_check(keep_capture=True), image, accel, run_dir, hooks)
    assert result.verdict is Verdict.INFRA_ERROR and result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("QEMU for machine 'workload' died: killed by signal 9 (SIGKILL)"), result.error
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["verdict"] == "INFRA-ERROR" and "killed by signal 9 (SIGKILL)" in stored["error"]
    assert [m.spec.name for m in machines] == ["workload"]  # no recovery of a run that never cut
    assert all(m.process is not None and not m.process.alive() for m in machines)
    with MediaLock(run_dir / "nvdimm0.img"):  # kept (keep_capture) and released
        pass
    log = (run_dir / "lab.log").read_text()
    assert "launching qemu-system" in log and "died: killed by signal 9 (SIGKILL)" in log


def test_clean_run_reads_the_taint_of_every_machine(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = mapsync_kind.run(_check(), image, accel, run_dir, RunHooks())
    assert result.verdict is Verdict.PASS, result.to_dict()
    taint = result.metrics["taint"]
    # Read in this lab's guests: 0 from boot to the end (tainted-kernels.rst: no flag set).
    assert {name: (t["baseline"], t["latest"], t["error"]) for name, t in taint.items()} == \
        {"workload": (0, 0, None), "recovery": (0, 0, None)}
    finding = next(f for f in result.findings if f.oracle == "kernel-taint")
    assert finding.verdict is Verdict.PASS and finding.summary == "no new kernel taint: workload 0, recovery 0"


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted for the test (root only), unmounted on every path."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the disk-full test runs as root in CI")
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _run_mapsync(data: Path, records: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PMEMLAB_DATA": str(data), "NO_COLOR": "1", "COLUMNS": "300",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lab.cli", *extra, "run", "mapsync", "--records", str(records)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


def _resize(mount: Path, size_bytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(mount)], check=True)


@pytest.mark.parametrize("where", ["template copy", "nvdimm store"])
def test_disk_full_is_one_line_and_the_run_repeats(where: str, image: Image, accel: AccelVerdict,
                                                   small_data_dir: Path) -> None:
    template = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT).snapshot(Filesystem.EXT4)
    template_bytes = template.template_media.stat().st_blocks * 512
    # Too small for the copy of the template media; or room for it, and the guest's stores into
    # the NVDIMM (1000 records, each its own page, plus the journal) hit the full tmpfs: SIGBUS.
    _resize(small_data_dir, template_bytes // 2 if where == "template copy" else template_bytes + 2 * MIB)
    proc = _run_mapsync(small_data_dir, 1000)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: disk full: no space left for {small_data_dir}/runs/"), \
        proc.stderr
    assert f"on {small_data_dir} (" in lines[0] and "this run needs up to 2.0 GiB there" in lines[0]
    (run_dir,) = (small_data_dir / "runs").iterdir()
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["verdict"] == "INFRA-ERROR" and stored["errno"] == 28 and stored["error"] == lines[0][7:]
    if where == "nvdimm store":
        assert "killed by signal 7 (SIGBUS)" in stored["metrics"]["disk_full"]["cause"]
    leftovers = [p.name for p in run_dir.rglob("*") if p.suffix == ".img" or p.name.startswith(".")]
    assert leftovers == [], leftovers
    assert not [p for p in lab_qemu_processes() if str(small_data_dir) in p]

    _resize(small_data_dir, template_bytes * 2 + 64 * MIB)  # space returns: the same run passes
    again = _run_mapsync(small_data_dir, 1000, "-vv")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "PASS" in again.stdout and "launching qemu-system" in again.stderr  # -vv: debug on stderr


def test_full_cache_while_building_the_ready_snapshot_is_one_line(image: Image, small_data_dir: Path,
                                                                  tmp_path: Path) -> None:
    """The cache on the small tmpfs: the image fits, the ready snapshot's guest RAM does not."""
    cache = small_data_dir
    _resize(cache, sum(p.stat().st_size for p in image.path.iterdir()) + 16 * MIB)
    shutil.copytree(image.path, cache / "images" / image.id)
    (cache / "refs").mkdir()
    (cache / "refs" / "debian12-pmem").write_text(image.id + "\n")
    env = {**os.environ, "PMEMLAB_CACHE": str(cache), "PMEMLAB_DATA": str(tmp_path / "data"), "NO_COLOR": "1",
           "COLUMNS": "300", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "run", "mapsync", "--records", "50", "--accel", "tcg"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: disk full: no space left for {cache}/snapshots/"), \
        proc.stderr
    assert f"this run needs about {BUILD_NEEDS_MIB}.0 MiB there" in lines[0]
    assert sorted(p.name for p in (cache / "snapshots").iterdir() if not p.name.endswith((".lock", ".use"))) == []
    assert not [p for p in lab_qemu_processes() if str(cache) in p]
