"""ninep-mmap against the real kernel and QEMU's 9p server, through KIND.run."""

from __future__ import annotations

import json
from pathlib import Path

from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.workloads import ninep_mmap as nm
from lab.workloads.base import CheckSpec
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.workloads.catalog import get_kind


def _run(cache: nm.CacheMode, image: Image, accel: AccelVerdict, run_dir: Path,
         seed: int) -> tuple[nm.NinepMmapCheck, WorkloadResult]:
    kind = get_kind("ninep-mmap")
    check = kind.make_check(CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, nm.NinepMmapParams(cache=cache), None,
                                      MachineShape(), seed=seed))
    return check, kind.run(check, image, accel, run_dir, RunHooks())


def test_cache_mmap_bytes_visible_both_ways(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    check, result = _run("mmap", image, accel, run_dir, seed=7)
    assert result.verdict is Verdict.PASS, result.to_dict()
    m = result.metrics
    assert m["writable_shared_mmap"] == "accepted-visible" and m["host_first_mismatch"] is None
    assert m["guest_sees_host"] == {"rw": "sees-host", "r": "sees-host"}
    # The share is a real host directory: the file holds the host's final bytes.
    assert (run_dir / "share" / nm.FILE_NAME).read_bytes() == nm.pattern(check.host_seed, check.params.size)
    assert "-fsdev" in (run_dir / "guest.argv").read_text()
    assert json.loads((run_dir / "result.json").read_text())["verdict"] == "PASS"


def test_cache_none_is_recorded(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    _, result = _run("none", image, accel, run_dir, seed=8)
    m = result.metrics
    assert m["writable_shared_mmap"] in nm.WRITE_OUTCOMES, m
    assert set(m["guest_sees_host"]) == {"rw", "r"}
    assert all(out in nm.READ_OUTCOMES for out in m["guest_sees_host"].values())
    if m["writable_shared_mmap"] == "refused":
        assert m["writable_shared_mmap_errno"], "a refusal names its errno"
    finding = next(f for f in result.findings if f.oracle.startswith("ninep"))
    if m["writable_shared_mmap"] != "accepted-not-visible":
        assert result.verdict is Verdict.PASS and finding.verdict is Verdict.PASS, result.to_dict()
