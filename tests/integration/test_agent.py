"""The guest agent over virtio-serial in a real machine: commands, exit status, deadlines, events."""

from __future__ import annotations

from typing import Iterator

import pytest

from lab.guest.pmem import Filesystem
from lab.image.cache import Image
from lab.runner.machines import BootMode, MachineMaker
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.vm.machine import Machine, MachineState


@pytest.fixture(scope="module")
def machine(image: Image, accel: AccelVerdict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A restored ready machine, as every run's (cold boots are covered by test_smoke and test_many_cuts)."""
    workdir = tmp_path_factory.mktemp("agent")
    maker = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT)
    media = maker.fresh_media(workdir / "nvdimm0.img", Filesystem.EXT4)
    with maker.machine("agent", workdir, [media], Filesystem.EXT4) as m:
        maker.bring_up(m)
        yield m


def test_exit_status_and_streams(machine: Machine) -> None:
    result = machine.run(["sh", "-c", "echo out; echo err >&2; exit 42"], timeout=20, check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (42, b"out\n", b"err\n")
    assert not result.timed_out


def test_guest_kernel_is_the_image_kernel(machine: Machine, image: Image) -> None:
    assert machine.run(["uname", "-r"], timeout=20).text.strip() == image.kernel_version


def test_missing_program_is_127(machine: Machine) -> None:
    assert machine.run(["/no/such/program"], timeout=20, check=False).exit_code == 127


def test_deadline_kills_the_command(machine: Machine) -> None:
    result = machine.run(["sleep", "30"], timeout=1, check=False)
    assert result.timed_out and result.signal == 9
    assert result.duration_s < 10


def test_large_output_arrives_whole(machine: Machine) -> None:
    result = machine.run(["dd", "if=/dev/zero", "bs=1024", "count=3000"], timeout=60)
    assert result.stdout == b"\0" * 3000 * 1024


def test_events_carry_guest_timestamps(machine: Machine) -> None:
    machine.run(["pmemlab-event", "MARK", "hello"], timeout=20)
    event = machine.events.wait_mark("hello", timeout=10)
    assert event.guest_ns > 0


def test_freeze_and_continue(machine: Machine) -> None:
    machine.freeze()
    assert machine.state is MachineState.PAUSED
    machine.cont()
    assert machine.run(["true"], timeout=20).ok
