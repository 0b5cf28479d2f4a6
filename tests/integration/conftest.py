"""Integration fixtures: the guest image (built if missing), the accelerator verdict, pmemlab installed
from a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class InstalledLab:
    """pmemlab built as a wheel from this checkout and installed, not editable, into a fresh venv outside it."""

    root: Path  # a directory every user may read: the unprivileged-user test runs this install too
    venv: Path
    wheel: Path
    install_s: float

    @property
    def pmemlab(self) -> Path:
        return self.venv / "bin" / "pmemlab"

    def env(self, **extra: str) -> dict[str, str]:
        """This environment minus whatever would let the checkout leak in (PYTHONPATH, PMEMLAB_*)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PMEMLAB_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        return {**env, "NO_COLOR": "1", **extra}


def _usable_by_others(executable: Path) -> bool:
    """Every directory above it searchable and the file itself runnable by other users."""
    path = executable.resolve()
    return path.stat().st_mode & 0o005 == 0o005 and all(d.stat().st_mode & 0o001 for d in path.parents)


def venv_base_python() -> Path:
    """This interpreter's base, unless another user could not run it (a pyenv under a 0700 home) and the
    system's python3 is recent enough."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    system = Path("/usr/bin/python3")
    if _usable_by_others(base) or not system.exists() or not _usable_by_others(system):
        return base
    recent = subprocess.run([system, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 11))"],
                            capture_output=True, timeout=30).returncode == 0
    return system if recent else base


def _run(argv: list[str | Path], timeout: float) -> None:
    # Without PYTHONPATH: a checkout on it (and its pmemlab.egg-info) makes pip call the wheel already installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def installed_lab() -> Iterator[InstalledLab]:
    root = Path(tempfile.mkdtemp(prefix="pmemlab-installed-"))
    try:
        root.chmod(0o755)
        started = time.monotonic()
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", root / "dist", REPO_ROOT], 300)
        (wheel,) = (root / "dist").glob("pmemlab-*.whl")
        venv = root / "venv"
        _run([venv_base_python(), "-m", "venv", "--without-pip", venv], 120)
        # This pip installs into the new venv: its dependencies come from pip's configured index and cache.
        _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-compile",
              "--disable-pip-version-check", wheel], 600)
        yield InstalledLab(root, venv, wheel, time.monotonic() - started)
    finally:
        shutil.rmtree(root, ignore_errors=True)
