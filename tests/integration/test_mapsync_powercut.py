"""The MAP_SYNC power-cut check against real kernels, and its negative control.

The control (MAP_SYNC off, file empty) must be caught: the measured experiment
lost every acknowledged record on ext4, since the block allocations sat in the
uncommitted journal. A single run could happen to pass (a journal commit
landing just before the cut), so it is repeated a bounded number of times;
the test asserts that the oracle catches it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.crash.mapsync_check import MapsyncCheck, run_mapsync_check
from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.workloads.mapsync import MapsyncParams

CONTROL_ATTEMPTS = 3


@pytest.mark.parametrize("fs", [Filesystem.EXT4, Filesystem.XFS])
def test_map_sync_keeps_every_acknowledged_record(fs: Filesystem, image: Image, accel: AccelVerdict,
                                                  run_dir: Path) -> None:
    check = MapsyncCheck(fs=fs, workload=MapsyncParams(records=100), crash=CrashPoint(after_ack=60))
    result = run_mapsync_check(check, image, accel, run_dir)
    assert result.verdict is Verdict.PASS, result.to_dict()
    assert result.acked >= 61 and result.lost == [] and result.corrupt == []
    assert result.survived is not None and result.survived >= result.acked
    assert result.fsck_clean is True
    assert result.mmap == {"event": "mmap", "ok": True, "map_sync": True}
    assert (run_dir / "result.json").is_file() and (run_dir / "recovery.console.log").is_file()
    assert (run_dir / "fsck.txt").read_text().startswith("$ ")
    assert not (run_dir / "capture").exists(), "captures are removed unless --keep-capture"


def test_negative_control_is_caught(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    check = MapsyncCheck(fs=Filesystem.EXT4, workload=MapsyncParams(records=100, map_sync=False),
                         crash=CrashPoint(after_ack=60))
    verdicts = []
    for attempt in range(CONTROL_ATTEMPTS):
        run_dir = tmp_path / f"attempt{attempt}"
        run_dir.mkdir()
        result = run_mapsync_check(check, image, accel, run_dir)
        verdicts.append(result.verdict)
        if result.verdict is Verdict.VIOLATION:
            assert result.lost, "a VIOLATION of the control must list the lost records"
            assert set(result.lost) <= set(result.cut.durable if result.cut else [])
            persistence = next(f for f in result.findings if f.oracle == "persistence")
            assert persistence.verdict is Verdict.VIOLATION
            return
        assert result.verdict is Verdict.PASS, result.to_dict()  # anything else is a lab problem
    pytest.fail(f"the oracle never caught the MAP_SYNC-off control in {CONTROL_ATTEMPTS} runs: {verdicts}")


def test_map_sync_on_non_dax_mount_is_eopnotsupp(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    check = MapsyncCheck(fs=Filesystem.EXT4, dax=DaxMode.NEVER, workload=MapsyncParams(records=10),
                         crash=CrashPoint(after_ack=5))
    result = run_mapsync_check(check, image, accel, run_dir)
    assert result.mmap.get("ok") is False and result.mmap.get("errno") == "EOPNOTSUPP"
    contract = next(f for f in result.findings if f.oracle == "mmap-contract")
    assert contract.verdict is Verdict.PASS and contract.details["got"] == "EOPNOTSUPP"
    assert result.verdict is Verdict.PASS
    assert result.cut is None, "nothing was mapped, so there is no power cut to make"


def test_keep_capture_and_prealloc(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    check = MapsyncCheck(fs=Filesystem.EXT4, workload=MapsyncParams(records=40, prealloc=True, records_per_page=4,
                                                                    record_size=256),
                         crash=CrashPoint.random_ack(40, seed=7), keep_capture=True)
    result = run_mapsync_check(check, image, accel, run_dir)
    assert result.verdict is Verdict.PASS, result.to_dict()
    capture = run_dir / "capture" / "nvdimm0.img"
    assert capture.is_file() and capture.stat().st_size == check.shape.nvdimm_size
    assert result.captures[0].data_bytes < capture.stat().st_size, "the capture must stay sparse"
