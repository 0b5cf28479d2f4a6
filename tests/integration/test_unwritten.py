"""unwritten-extents against a real kernel, reduced (32 blocks, cut after ACK 8, ext4): with MAP_SYNC
it must PASS (no stale block before or after the cut, every acknowledged record kept); without
MAP_SYNC it is the negative control of the persistence oracle and must be caught."""

from __future__ import annotations

from pathlib import Path

from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.workloads import unwritten_extents as uw
from lab.workloads.base import CheckSpec
from lab.runner.guest_run import RunHooks, WorkloadResult

BLOCKS, CUT = 32, 8  # ext4 serves files of <= 16 blocks from per-CPU preallocations the fill never touched


def run(params: uw.UnwrittenParams, image: Image, accel: AccelVerdict, run_dir: Path) -> WorkloadResult:
    check = uw.KIND.make_check(CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, params, CrashPoint(after_ack=CUT),
                                         MachineShape(), seed=1))
    return uw.KIND.run(check, image, accel, run_dir, RunHooks())


def test_no_stale_block_and_acknowledged_records_survive(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = run(uw.UnwrittenParams(blocks=BLOCKS), image, accel, run_dir)
    assert result.verdict is Verdict.PASS, result.to_dict()
    oracles = {f.oracle: f.verdict for f in result.findings}
    assert oracles == {"unwritten-read": Verdict.PASS, "stale-fill": Verdict.PASS, "recovery-mount": Verdict.PASS,
                       "stale-data": Verdict.PASS, "persistence": Verdict.PASS, "fsck": Verdict.PASS,
                       "kernel-log": Verdict.PASS, "kernel-taint": Verdict.PASS}
    reuse = result.metrics["workload"]["reuse"]
    assert reuse["reused_blocks"] > 0, "the file's blocks must come from the stale fill, or the check is blind"
    durable = result.metrics["cut"]["durable"]
    blocks = result.metrics["recovered"]["blocks"]
    assert durable >= CUT + 1 and blocks.get("written", 0) >= durable
    assert sum(blocks.values()) == BLOCKS and set(blocks) <= {"written", "zeros", "torn"}
    assert not (run_dir / "capture").exists()


def test_without_map_sync_acknowledged_records_are_lost(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = run(uw.UnwrittenParams(blocks=BLOCKS, map_sync=False), image, accel, run_dir)
    assert result.verdict is Verdict.VIOLATION, result.to_dict()
    persistence = next(f for f in result.findings if f.oracle == "persistence")
    assert persistence.verdict is Verdict.VIOLATION and persistence.details["lost"]
    stale = next(f for f in result.findings if f.oracle == "stale-data")
    assert stale.verdict is Verdict.PASS, "the lost conversions read back as zeros, never as the old data"


def test_workload_failing_before_the_cut_is_infra_error(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    """dax=never: MAP_SYNC is refused (EOPNOTSUPP), the helper exits before any ACK; the shared flow
    reports the lab's failure (never a pass), keeps the helper's output and leaves no media behind."""
    check = uw.KIND.make_check(CheckSpec(Filesystem.EXT4, DaxMode.NEVER, uw.UnwrittenParams(blocks=BLOCKS, fill_mib=0),
                                         CrashPoint(after_ack=CUT), MachineShape(), seed=1))
    result = uw.KIND.run(check, image, accel, run_dir, RunHooks())
    assert result.verdict is Verdict.INFRA_ERROR and result.status == "failed", result.to_dict()
    assert result.error is not None and "failed before the crash point" in result.error
    assert "EOPNOTSUPP" in result.error
    assert '"errno":"EOPNOTSUPP"' in (run_dir / "workload.stdout").read_text()
    assert not (run_dir / "nvdimm0.img").exists() and not (run_dir / "capture").exists()
    assert "recovery" not in result.metrics
