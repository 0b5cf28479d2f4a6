"""Shared unit-test setup: the guest helpers of images/guest/, compiled for this host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab.image.builder import gcc_argv
from lab.paths import images_dir
from tests.unit.helpers import GuestProgram


@pytest.fixture(scope="session")
def guest_program(tmp_path_factory: pytest.TempPathFactory) -> GuestProgram:
    """compile(name): images/guest/NAME.c built as the image builder builds it (static, warnings
    as errors, -I for pmemlab.h), once per session; the test is skipped where gcc is missing."""
    built: dict[str, Path] = {}

    def compile_program(name: str) -> Path:
        gcc = shutil.which("gcc")
        if gcc is None:
            pytest.skip("gcc is not installed")
        if name not in built:
            out = tmp_path_factory.mktemp(name) / name
            proc = subprocess.run(gcc_argv(images_dir() / "guest" / f"{name}.c", out, gcc),
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            built[name] = out
        return built[name]

    return compile_program
