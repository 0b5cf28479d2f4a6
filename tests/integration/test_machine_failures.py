"""Launch failures and guests that never become ready: clear errors, no stray process, locks released."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lab.errors import LaunchError
from lab.image.cache import Image
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape, lab_spec
from lab.vm.machine import Machine
from lab.vm.media import MediaLock, create_sparse


@pytest.fixture
def media(tmp_path: Path) -> Path:
    path = tmp_path / "nvdimm0.img"
    create_sparse(path, MachineShape().nvdimm_size)
    return path


def test_guest_that_panics_before_ready(image: Image, accel: AccelVerdict, tmp_path: Path, media: Path) -> None:
    spec = replace(lab_spec(image, "t", tmp_path, [media], accel.accel), cmdline=("rdinit=/nonexistent",))
    with Machine(spec, tmp_path) as machine:
        with pytest.raises(LaunchError, match="exited before the guest was ready"):
            machine.wait_ready(120)
    console = spec.console_log.read_text(errors="replace")
    assert "Kernel panic" in console
    with MediaLock(media):
        pass


def test_doctor_json(image: Image, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "doctor", "--json"], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    data = json.loads(proc.stdout)
    names = {c["name"]: c for c in data["checks"]}
    assert {"qemu", "nvdimm", "accelerator", "image", "kernel config"} <= set(names)
    assert names["kernel config"]["ok"] and names["kernel config"]["data"]["FS_DAX"] == "y"
    assert proc.returncode == (0 if data["ok"] else 1)


def test_a_guest_past_its_deadline_leaves_its_vcpu_registers(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    """A stuck guest (here: its vCPUs stopped) hits a deadline: the machine writes where each vCPU was
    beside its console, and the run directory lists it as an artifact."""
    from lab.errors import AgentTimeout
    from lab.guest.pmem import Filesystem
    from lab.runner.machines import BootMode, MachineMaker
    from lab.store.db import _artifacts as artifacts_of  # what results show lists for a run directory

    maker = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT)
    media = maker.fresh_media(tmp_path / "nvdimm0.img", Filesystem.EXT4)
    with pytest.raises(AgentTimeout):
        with maker.machine("stuck", tmp_path, [media], Filesystem.EXT4) as machine:
            maker.bring_up(machine)
            assert machine.qmp is not None
            machine.qmp.execute("stop")
            machine.agent.ping(2.0)
    dump = (tmp_path / "stuck.hang.txt").read_text()
    assert dump.count("RIP=") == MachineShape().cpus, dump[:2000]
    assert ("hang", str(tmp_path / "stuck.hang.txt")) in artifacts_of(tmp_path)
    with MediaLock(media):
        pass
