"""The MAP_SYNC power-cut check against real kernels, and its negative control, on restored machines.

The control (MAP_SYNC off, file empty) must be caught: the measured experiment
lost every acknowledged record on ext4, since the block allocations sat in the
uncommitted journal. A single run could happen to pass (a journal commit
landing just before the cut), so it is repeated a bounded number of times;
the test asserts that the oracle catches it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.workloads.mapsync import MapsyncParams
from lab.workloads.mapsync_kind import MapsyncCheck, run

CONTROL_ATTEMPTS = 3


def finding(result: WorkloadResult, oracle: str) -> Verdict:
    return next(f.verdict for f in result.findings if f.oracle == oracle)


@pytest.mark.parametrize("fs", [Filesystem.EXT4, Filesystem.XFS])
def test_map_sync_keeps_every_acknowledged_record(fs: Filesystem, image: Image, accel: AccelVerdict,
                                                  run_dir: Path) -> None:
    check = MapsyncCheck(fs, DaxMode.ALWAYS, MapsyncParams(records=100), CrashPoint(after_ack=60))
    result = run(check, image, accel, run_dir, RunHooks())
    assert result.verdict is Verdict.PASS, result.to_dict()
    metrics = result.metrics
    assert result.kind == "mapsync" and result.boot == "snapshot" and "restore" in result.timings
    assert metrics["acked"] >= 61 and metrics["persistence"]["lost"] == [] and metrics["persistence"]["corrupt"] == []
    assert metrics["persistence"]["survived"] >= metrics["acked"]
    assert metrics["recovery"]["fsck_clean"] is True
    assert metrics["mmap"] == {"event": "mmap", "ok": True, "map_sync": True}
    assert [f.oracle for f in result.findings] == ["mmap-contract", "recovery-mount", "persistence", "fsck",
                                                   "kernel-log", "kernel-taint"]
    assert (run_dir / "result.json").is_file() and (run_dir / "recovery.console.log").is_file()
    assert (run_dir / "workload.stdout").is_file() and (run_dir / "events.log").is_file()
    assert (run_dir / "fsck.txt").read_text().startswith("$ ")
    assert not (run_dir / "capture").exists(), "captures are removed unless --keep-capture"
    assert not (run_dir / "nvdimm0.img").exists(), "the live media is removed"


def test_negative_control_is_caught(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    check = MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=100, map_sync=False),
                         CrashPoint(after_ack=60))
    verdicts = []
    for attempt in range(CONTROL_ATTEMPTS):
        run_dir = tmp_path / f"attempt{attempt}"
        run_dir.mkdir()
        result = run(check, image, accel, run_dir, RunHooks())
        verdicts.append(result.verdict)
        if result.verdict is Verdict.VIOLATION:
            lost = result.metrics["persistence"]["lost"]
            assert lost, "a VIOLATION of the control must list the lost records"
            assert len(lost) <= result.metrics["cut"]["durable"]
            assert finding(result, "persistence") is Verdict.VIOLATION
            return
        assert result.verdict is Verdict.PASS, result.to_dict()  # anything else is a lab problem
    pytest.fail(f"the oracle never caught the MAP_SYNC-off control in {CONTROL_ATTEMPTS} runs: {verdicts}")


def test_map_sync_on_non_dax_mount_is_eopnotsupp(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    check = MapsyncCheck(Filesystem.EXT4, DaxMode.NEVER, MapsyncParams(records=10), CrashPoint(after_ack=5))
    result = run(check, image, accel, run_dir, RunHooks())
    contract = next(f for f in result.findings if f.oracle == "mmap-contract")
    assert contract.verdict is Verdict.PASS and contract.details["got"] == "EOPNOTSUPP"
    assert result.verdict is Verdict.PASS, result.to_dict()
    assert result.metrics["cut"] == {"reached": False, "why": "the kind judged the failed workload"}, \
        "nothing was mapped, so there is no power cut to make"


def test_keep_capture_and_prealloc(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    check = MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=40, prealloc=True,
                                                                        records_per_page=4, record_size=256),
                         CrashPoint.random_ack(40, seed=7), keep_capture=True)
    result = run(check, image, accel, run_dir, RunHooks())
    assert result.verdict is Verdict.PASS, result.to_dict()
    capture = run_dir / "capture" / "cut-0" / "nvdimm0.img"
    assert capture.is_file() and capture.stat().st_size == check.shape.nvdimm_size
    assert result.metrics["cut"]["captures"][0]["data_bytes"] < capture.stat().st_size, "the capture stays sparse"
