"""A non-editable install (the wheel) carries the recipes, guest sources and scenarios it needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.image.cache import Image
from tests.integration.conftest import REPO_ROOT, InstalledLab


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(900)  # the first user of installed_lab pays for the wheel and the venv
def test_installed_wheel_lists_every_shipped_scenario(installed_lab: InstalledLab, tmp_path: Path) -> None:
    env = installed_lab.env()
    where = _run([installed_lab.venv / "bin" / "python", "-c", "import lab; print(lab.__file__)"], tmp_path, env, 60)
    assert Path(where.stdout.strip()).is_relative_to(installed_lab.venv), where.stdout + where.stderr
    proc = _run([installed_lab.pmemlab, "scenarios", "list", "--json"], tmp_path, env, 120)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(s["file"] for s in listed) == sorted(p.name for p in (REPO_ROOT / "scenarios").glob("*.toml"))
    assert [s["file"] for s in listed if s["error"] is not None or not s["cases"]] == []
    print(f"wheel built and installed with its dependencies in {installed_lab.install_s:.1f} s")


@pytest.mark.timeout(900)
def test_installed_wheel_builds_the_image(installed_lab: InstalledLab, image: Image, tmp_path: Path,
                                          record_property: Callable[[str, object], None]) -> None:
    """A real build into an empty cache (kernel download included); the same inputs give the checkout's id."""
    cache = tmp_path / "cache"
    try:
        started = time.monotonic()
        proc = _run([installed_lab.pmemlab, "image", "build", "--json"], tmp_path,
                    installed_lab.env(PMEMLAB_CACHE=str(cache)), 600)
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr[-3000:]
        built = json.loads(proc.stdout)
        assert built["built"] is True
        assert Path(built["recipe_path"]).is_relative_to(installed_lab.venv)
        assert built["id"] == image.id, "the wheel's images/ must be the checkout's, byte for byte"
        assert (cache / "images" / built["id"] / "manifest.json").is_file()
        record_property("image_build_s", round(seconds, 1))
        print(f"image build from the wheel into an empty cache: {seconds:.1f} s")
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # half a GiB of unpacked kernel package
