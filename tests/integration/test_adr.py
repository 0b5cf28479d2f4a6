"""The ADR persistence model end to end: QEMU 10 with the adrtrace plugin, restored machines, the
MAP_SYNC oracle on adr:drop-all crash states.

The negative control must be caught: without flushes, every acknowledged record is lost under ADR,
while eADR keeps them; each flush instruction (and non-temporal stores + sfence) makes them persist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.adr.qemu import find_adr_qemu
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.vm.spec import Accel, Persistence
from lab.workloads.mapsync import MapsyncParams
from lab.workloads.mapsync_kind import MapsyncCheck, run

ADR = MachineShape(persistence=Persistence.ADR)
BOOKWORM = "VERSION_CODENAME=bookworm" in Path("/etc/os-release").read_text()


@pytest.fixture(scope="module", autouse=True)
def adr_qemu(accel: AccelVerdict) -> None:
    if accel.accel is not Accel.TCG:
        pytest.skip("the ADR model runs under TCG only")
    try:
        find_adr_qemu()
    except ConfigError:
        if BOOKWORM:
            raise  # bootstrap.sh provisions it on Debian 12: its absence is a failure
        pytest.skip("no QEMU >= 9.2 for the ADR model on this host")


def mapsync(fs: Filesystem, image: Image, accel: AccelVerdict, run_dir: Path, shape: MachineShape = ADR,
            adr_states: int = 0, **params: object) -> WorkloadResult:
    check = MapsyncCheck(fs, DaxMode.ALWAYS, MapsyncParams(records=30, **params),  # type: ignore[arg-type]
                         CrashPoint(after_ack=20), shape=shape, adr_states=adr_states, seed=3)
    return run(check, image, accel, run_dir, RunHooks())


def test_no_flush_loses_acknowledged_records_under_adr(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = mapsync(Filesystem.EXT4, image, accel, run_dir, flush="none", adr_states=3)
    assert result.verdict is Verdict.VIOLATION, result.to_dict()
    assert result.check["persistence"] == "adr"
    assert result.qemu_version.startswith("10."), result.qemu_version  # the ADR model's QEMU, recorded
    state = result.metrics["crash_state"]
    assert state["model"] == "adr" and state["unpersisted_lines"] >= 21
    assert [s["id"] for s in state["states"]] == ["adr:drop-all", "adr:random:3:0", "adr:random:3:1", "adr:random:3:2"]
    assert result.metrics["persistence"]["survived"] == 0  # drop-all: every record line reverted
    assert result.metrics["recovery"]["fsck_clean"] is True
    assert any(f.summary.startswith("[adr:random:3:") for f in result.findings)
    assert "adr_arm" in result.timings and "adr_states" in result.timings and "restore" in result.timings
    assert not (run_dir / "capture").exists(), "crash-state images are removed with the captures"


def test_no_flush_passes_under_eadr(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = mapsync(Filesystem.EXT4, image, accel, run_dir, shape=MachineShape(), flush="none")
    assert result.verdict is Verdict.PASS, result.to_dict()
    assert "persistence" not in result.check and "crash_state" not in result.metrics


@pytest.mark.parametrize("flush", ["clwb", "clflushopt", "clflush", "nt"])
def test_flushed_records_survive_under_adr(flush: str, image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = mapsync(Filesystem.EXT4, image, accel, run_dir, flush=flush)
    assert result.verdict is Verdict.PASS, result.to_dict()
    assert result.metrics["persistence"]["lost"] == []
    counts = result.metrics["crash_state"]["plugin_counts"]
    if flush == "nt":
        assert counts["nt_stores"] >= 21 * 8
    else:
        assert counts["flushes"] >= 21 and counts["unresolved_flushes"] == 0


def test_xfs_with_clwb_passes_and_without_flush_fails(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    ok = mapsync(Filesystem.XFS, image, accel, tmp_path / "clwb", flush="clwb")
    lost = mapsync(Filesystem.XFS, image, accel, tmp_path / "none", flush="none")
    assert (ok.verdict, lost.verdict) == (Verdict.PASS, Verdict.VIOLATION), (ok.to_dict(), lost.to_dict())


def test_flush_without_fence_is_fenced_by_the_ack_syscall(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    """clwb with no sfence: the write(2) that sends each ACK runs locked instructions on the same
    CPU, which order the flush (Intel SDM, CLWB), so every acknowledged record is persistent: PASS
    is the faithful answer. What differs is the in-flight record: its flushed line waits for a fence."""
    result = mapsync(Filesystem.EXT4, image, accel, run_dir, flush="clwb", fence=False)
    assert result.verdict is Verdict.PASS, result.to_dict()


def test_a_qemu_without_the_plugin_api_is_refused_before_any_boot(tmp_path: Path) -> None:
    env = {**os.environ, "PMEMLAB_ADR_QEMU": "/usr/bin/qemu-system-x86_64", "PMEMLAB_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "lab.cli", "run", "mapsync", "--persistence", "adr", "--records", "5"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    version = subprocess.run(["/usr/bin/qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    if version.startswith("QEMU emulator version 7."):
        assert "needs QEMU >= 9.2" in out.stderr and "version 7." in out.stderr and "bootstrap.sh" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not list(tmp_path.rglob("*.console.log")), "no machine was started"


def test_a_truncated_dump_is_an_infra_error(image: Image, accel: AccelVerdict, run_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's real dump, cut short on the host before it is read: never a verdict on it."""
    from lab.adr import states
    from lab.crash import adr_cut

    def truncated(path: Path, expected: tuple[int, int] | None = None) -> states.AdrDump:
        text = path.read_text()
        path.write_text(text[: len(text) // 2])
        return states.parse_dump(path, expected)

    monkeypatch.setattr(adr_cut, "parse_dump", truncated)
    result = mapsync(Filesystem.EXT4, image, accel, run_dir, flush="none")
    assert result.verdict is Verdict.INFRA_ERROR, result.to_dict()
    assert "truncated" in (result.error or "") + " ".join(f.summary for f in result.findings)


def test_each_case_of_a_shared_run_gets_its_own_seeded_states(image: Image, accel: AccelVerdict,
                                                              tmp_path: Path) -> None:
    """Two crash points of one workload run: each case's random states carry its own seed, as a
    repro of that case alone would draw them."""
    from lab.crash.cut_flow import cut_workload
    from lab.workloads.mapsync_kind import POWER_CUT

    checks = [MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=30, flush="none"),
                           CrashPoint(after_ack=ack), shape=ADR, adr_states=2, seed=seed)
              for ack, seed in ((20, 11), (8, 12))]
    dirs = [tmp_path / "a", tmp_path / "b"]
    jobs = cut_workload("mapsync", POWER_CUT, checks, image, accel, dirs, RunHooks())
    results = [job(RunHooks()) for job in jobs]
    assert [r.verdict for r in results] == [Verdict.VIOLATION, Verdict.VIOLATION], [r.to_dict() for r in results]
    ids = [[s["id"] for s in r.metrics["crash_state"]["states"]] for r in results]
    assert ids == [["adr:drop-all", "adr:random:11:0", "adr:random:11:1"],
                   ["adr:drop-all", "adr:random:12:0", "adr:random:12:1"]], ids
