"""mapsync-contract against the real kernel: ext4 with dax=always and dax=inode, through KIND.run.

Judged with shared_sync = "honoured" the kernel answers every probe as the
contract defines (PASS). The same answers judged by mmap(2)'s own words
(shared_sync = "ignored", the default) break on exactly one probe: the
kernel does not ignore MAP_SYNC under MAP_SHARED (see lab/workloads/mmap_contract.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.verdict import Verdict, combine
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.workloads import mmap_contract as mc
from lab.workloads.base import CheckSpec
from lab.runner.guest_run import RunHooks
from lab.workloads.catalog import get_kind

S, E = mc.SUCCESS, mc.EOPNOTSUPP
# probe -> (answer, file is DAX), as mmap(2) and dax.rst define them
WANT = {
    DaxMode.ALWAYS: {"validate-plain": (S, True), "validate-sync": (S, True), "shared-sync": (S, True),
                     "validate-undefined": (E, True), "xflag-dax-sync": (S, True)},
    DaxMode.INODE: {"validate-plain": (S, False), "validate-sync": (E, False), "shared-sync": (E, False),
                    "validate-undefined": (E, False), "xflag-dax-sync": (S, True)},
}


@pytest.mark.parametrize("dax", [DaxMode.ALWAYS, DaxMode.INODE])
def test_ext4_answers_as_the_contract_defines(dax: DaxMode, image: Image, accel: AccelVerdict,
                                              run_dir: Path) -> None:
    kind = get_kind("mapsync-contract")
    params = mc.MmapContractParams(shared_sync="honoured")
    check = kind.make_check(CheckSpec(Filesystem.EXT4, dax, params, None, MachineShape(), seed=1))
    result = kind.run(check, image, accel, run_dir, RunHooks())

    assert result.verdict is Verdict.PASS, result.to_dict()
    rows = {r["probe"]: r for r in result.metrics["rows"]}
    assert {p: (r["got"], r["file_dax"]) for p, r in rows.items()} == WANT[dax]
    assert all(r["ok"] and r["expected"] == r["got"] for r in rows.values())
    # A MAP_SYNC mapping that succeeded really is synchronous.
    assert all(r["vm_sync"] is True for r in rows.values() if r["got"] == S and "MAP_SYNC" in r["flags"])
    assert rows["xflag-dax-sync"]["xflag_dax"] is True
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["verdict"] == "PASS" and stored["metrics"]["rows"] == result.metrics["rows"]
    assert (run_dir / "mmapcontract.jsonl").read_text().count("\n") == len(mc.PROBES)

    # mmap(2)'s own words: MAP_SHARED silently ignores MAP_SYNC. This kernel does not.
    strict_rows, strict = mc.judge(result.metrics["raw"], dax, mc.MmapContractParams())
    assert combine(f.verdict for f in strict) is Verdict.VIOLATION
    assert [r["probe"] for r in strict_rows if not r["ok"]] == ["shared-sync"]
