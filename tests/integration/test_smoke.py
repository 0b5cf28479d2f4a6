"""Boot real machines: pmem set up, DAX verified by statx, clean shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from lab.guest.pmem import Filesystem
from lab.image.cache import Image
from lab.smoke import smoke
from lab.vm.accel import AccelVerdict


# Each smoke is a cold boot (~15 s here): ext4 through the function, XFS through the CLI.
def test_smoke_mounts_with_dax(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = smoke(image, Filesystem.EXT4, accel, run_dir)
    assert result.dax, "STATX_ATTR_DAX must be set on a file of a dax=always mount"
    assert result.round_trip_ok and result.clean_shutdown
    assert result.kernel_problems == []
    assert result.ok
    assert 0 < result.boot_to_ready_s < 120


def test_cli_smoke_json(image: Image, tmp_path: Path) -> None:
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "vm", "smoke", "--fs", "xfs", "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["fs"] == "xfs" and data["dax"] is True and data["ok"] is True
    assert data["accelerator"] in ("tcg", "kvm")
    assert isinstance(data["boot_to_ready_s"], float)
    assert Path(data["run_dir"], "result.json").is_file()
