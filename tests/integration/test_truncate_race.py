"""truncate-fault-race against a real kernel: a reduced run on ext4 (32 pages, a 3 s race, the power
cut 1 s in) must PASS: SIGBUS beyond EOF, no stale page, the file and the filesystem clean after the
recovery boot."""

from __future__ import annotations

import json
from pathlib import Path

from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.workloads import truncate_race as tr
from lab.workloads.base import CheckSpec
from lab.runner.guest_run import RunHooks


def test_race_cut_mid_run_recovers_clean(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    params = tr.TruncateRaceParams(pages=32, threads=2, seconds=3.0)
    check = tr.KIND.make_check(CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, params, CrashPoint(after_seconds=1.0),
                                         MachineShape(), seed=5))
    result = tr.KIND.run(check, image, accel, run_dir, RunHooks())
    assert result.verdict is Verdict.PASS, result.to_dict()
    oracles = {f.oracle: f.verdict for f in result.findings}
    assert oracles == {"truncate-race": Verdict.PASS, "recovery-mount": Verdict.PASS,
                       "recovered-file": Verdict.PASS, "fsck": Verdict.PASS, "kernel-log": Verdict.PASS,
                       "kernel-taint": Verdict.PASS}
    counts = result.metrics["race"]["counts"]
    assert counts["event"] == "progress", "the cut came 1 s into a 3 s race: the helper was still running"
    assert counts["truncates"] > 0 and counts["stores"] > 0 and counts["stale"] == 0
    assert result.metrics["cut"]["finished_first"] is False
    size = result.metrics["recovered_size"]
    assert size % tr.PAGE == 0 and size <= 32 * tr.PAGE
    assert json.loads((run_dir / "result.json").read_text())["verdict"] == "PASS"
    assert (run_dir / "fsck.txt").read_text().startswith("$ e2fsck")
    assert (run_dir / "events.log").read_text().split("\n")[0].split(" ")[1:3] == ["MARK", "running"]
    assert not (run_dir / "capture").exists() and not (run_dir / "nvdimm0.img").exists()
