"""write-from-own-mapping on real machines: ext4 with DAX (iomap copy) and without (write_begin/write_end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.workloads.base import CheckSpec
from lab.runner.guest_run import RunHooks
from lab.workloads.self_write import KIND, SelfWriteParams


@pytest.mark.parametrize("dax", [DaxMode.ALWAYS, DaxMode.NEVER])
def test_ext4_self_write_passes(dax: DaxMode, image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    check = KIND.make_check(CheckSpec(Filesystem.EXT4, dax, SelfWriteParams(), None, MachineShape(), seed=1))
    result = KIND.run(check, image, accel, run_dir, RunHooks())
    assert result.verdict is Verdict.PASS, (result.error, [f.to_dict() for f in result.findings])
    assert result.kernel_problems == []
    patterns = result.metrics["patterns"]
    assert [p["pattern"] for p in patterns] == result.metrics["expected_patterns"]
    assert len(patterns) >= 10 and all(p["ok"] and p["bytes"] == p["expected_bytes"] for p in patterns)
    assert result.metrics["file_dax"] is (dax is DaxMode.ALWAYS)  # the cell tested the path it names
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["verdict"] == "PASS" and stored["kind"] == "write-from-own-mapping"
    assert (run_dir / "selfwrite.out").read_bytes()
