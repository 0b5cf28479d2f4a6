"""Integration fixtures: the guest image (built if missing) and the accelerator verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.image import cache as image_cache
from lab.image.builder import build
from lab.paths import cache_dir, images_dir
from lab.vm.accel import AccelVerdict, choose
from lab.vm.boot import probe_kvm_boot


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def image() -> image_cache.Image:
    # Idempotent: the README's test command has normally built it already.
    return build(images_dir() / "debian12-pmem.toml", cache_dir()).image


@pytest.fixture(scope="session")
def accel(image: image_cache.Image) -> AccelVerdict:
    return choose("auto", cache_dir(), lambda: probe_kvm_boot(image))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path
