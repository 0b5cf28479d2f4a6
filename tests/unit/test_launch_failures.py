"""Launches that fail before any guest boots: clear errors, no process, the media lock released."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from lab.errors import LaunchError, MediaBusyError
from lab.image.cache import Image
from lab.vm.boot import MachineShape, lab_spec
from lab.vm.machine import Machine
from lab.vm.media import MediaLock, create_sparse
from lab.vm.spec import Accel, MachineSpec


@pytest.fixture
def media(tmp_path: Path) -> Path:
    path = tmp_path / "nvdimm0.img"
    create_sparse(path, MachineShape().nvdimm_size)
    return path


def spec_for(tmp_path: Path, media: Path) -> MachineSpec:
    """No guest starts in these tests, so the image's files need not exist: only their paths reach QEMU."""
    image = Image("0" * 16, tmp_path / "image", {"initramfs": "initramfs.cpio.gz", "kernel_version": "6.1.0"})
    return lab_spec(image, "t", tmp_path, [media], Accel.TCG)


def test_missing_qemu_binary(tmp_path: Path, media: Path) -> None:
    spec = replace(spec_for(tmp_path, media), qemu_binary="/nonexistent/qemu")
    with pytest.raises(LaunchError, match="did not come up|cannot start"):
        Machine(spec, tmp_path).launch()
    with MediaLock(media):  # released
        pass


def test_bad_qemu_arguments_carry_exit_code_and_output(tmp_path: Path, media: Path) -> None:
    spec = replace(spec_for(tmp_path, media), extra_args=("-no-such-option",))
    if shutil.which(spec.qemu_binary) is None:
        pytest.skip(f"{spec.qemu_binary} is not installed")
    with pytest.raises(LaunchError) as err:
        Machine(spec, tmp_path).launch()
    assert err.value.exit_code not in (None, 0)
    assert "no-such-option" in err.value.output
    assert err.value.argv[-1] == "-no-such-option"
    with MediaLock(media):
        pass


def test_busy_media_is_refused_before_qemu_starts(tmp_path: Path, media: Path) -> None:
    spec = spec_for(tmp_path, media)
    with MediaLock(media):
        machine = Machine(spec, tmp_path)
        with pytest.raises(MediaBusyError, match="in use by another machine"):
            machine.launch()
        assert machine.process is None
