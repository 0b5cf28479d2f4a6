"""The ADR persistence model end to end: QEMU 10 with the adrtrace plugin, restored machines, the
MAP_SYNC oracle on adr:drop-all crash states.

The negative control must be caught: without flushes, every acknowledged record is lost under ADR,
while eADR keeps them; each flush instruction (and non-temporal stores + sfence) makes them persist.
"""

from __future__ import annotations

import json
import os
import re
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
    """clwb with no sfence: PASS under ADR, and that is the faithful answer, not a blind model.

    The write(2) that sends each ACK runs locked instructions on the CPU that flushed, which order
    the earlier clwb (Intel SDM, CLWB: ordered by locked instructions, SFENCE, MFENCE); the plugin
    tracks fences per vCPU, so every acknowledged record is persistent before its ACK leaves. Only
    the in-flight record differs (its flushed line waits for the next fence).

    Why no VIOLATION variant (issue 10, "flush without fence"): an honest ACK path without a fence
    would leave from another CPU (a second thread that sees the record's index through a plain
    store and writes the ACK). The flushing CPU still fences on its own within about one timer
    tick (every interrupt runs locked instructions in the kernel on that CPU; 4 ms at Debian's
    HZ=250, or its next system call), while the host reads the ACK and freezes 2-5 ms later
    (freeze_latency_s measured 0.002-0.004). A cut loses such a record only if the freeze lands
    inside that window: a race on real hardware as here, which makes a flaky test, not a negative
    control that must fail."""
    result = mapsync(Filesystem.EXT4, image, accel, run_dir, flush="clwb", fence=False)
    assert result.verdict is Verdict.PASS, result.to_dict()
    counts = result.metrics["crash_state"]["plugin_counts"]
    assert counts["flushes"] >= 21 and counts["fences"] >= 21  # no sfence in the helper: the ACKs' fences


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


def test_each_crash_state_is_its_own_result_from_one_cut(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    """A campaign's ADR cases: two crash points x (drop-all, state 1, state 2), one workload run, one
    cut per crash point; each case recovers and judges its own state alone."""
    from dataclasses import replace

    from lab.crash.cut_flow import cut_workload
    from lab.workloads.mapsync_kind import POWER_CUT

    base = [MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=30, flush="none"),
                         CrashPoint(after_ack=ack), shape=ADR, adr_states=2, seed=seed)
            for ack, seed in ((20, 11), (8, 12))]
    checks = [replace(check, adr_state=slot) for check in base for slot in range(3)]
    dirs = [tmp_path / f"case-{i}" for i in range(len(checks))]
    jobs = cut_workload("mapsync", POWER_CUT, checks, image, accel, dirs, RunHooks(), workload_dir=tmp_path / "w")
    results = [job(RunHooks()) for job in jobs]
    assert [r.verdict for r in results] == [Verdict.VIOLATION] * 6, [r.to_dict() for r in results]
    states = [r.metrics["crash_state"] for r in results]
    assert [(s["slot"], s["label"]) for s in states] == [
        (0, "adr:drop-all"), (1, "adr:subset-1:seed-11"), (2, "adr:subset-2:seed-11"),
        (0, "adr:drop-all"), (1, "adr:subset-1:seed-12"), (2, "adr:subset-2:seed-12")]
    assert [s["judged"] for s in states] == ["adr:drop-all", "adr:random:11:0", "adr:random:11:1",
                                             "adr:drop-all", "adr:random:12:0", "adr:random:12:1"]
    assert all(r.metrics["cut"]["cuts_in_run"] == 2 for r in results)  # 6 cases, one run, two cuts
    assert all("recovery" in r.metrics and not any(k.startswith("recovery-") for k in r.metrics) for r in results)
    assert all(f.details.get("crash_state") == s["judged"] for r, s in zip(results, states)
               for f in r.findings if f.oracle == "persistence")
    assert not list((tmp_path / "w").rglob("*.img")), "state images, captures and the baseline are removed"


def test_a_campaign_stores_each_state_and_repro_judges_exactly_one(image: Image, tmp_path: Path) -> None:
    """Through the CLI: one ADR cell, drop-all + 1 state as two stored cases; export and repro of the
    second judge that one state alone."""
    scenario = tmp_path / "adr.toml"
    scenario.write_text("""
[scenario]
name = "adr-states"
description = "two ADR crash states of one cut"
workload = "mapsync"

[machine]
nvdimm_size_mib = 1024

[workload]
records = 30
flush = "none"

[matrix]
persistence = ["adr"]

[crash]
strategy = "after_ack"
ack = 20
adr_states = 1

[[expect]]
verdict = "VIOLATION"
""")
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path / "data"), "NO_COLOR": "1"}

    def pmemlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, env=env,
                              timeout=600)

    ran = pmemlab("campaign", "run", str(scenario), "-j", "2", "--accel", "tcg", "--json")
    assert ran.returncode == 0, ran.stderr[-3000:]
    cases = json.loads(ran.stdout)["cases"]
    assert [c["crash_state"] for c in cases] == ["adr:drop-all", f"adr:subset-1:seed-{cases[0]['seed']}"]
    assert [c["verdict"] for c in cases] == ["VIOLATION", "VIOLATION"]
    state = cases[1]["id"]
    shown = pmemlab("results", "show", state)
    assert shown.returncode == 0 and cases[1]["crash_state"] in shown.stdout, shown.stdout
    exported = pmemlab("campaign", "export", state)
    assert exported.returncode == 0 and "adr_state = 1" in exported.stdout, exported.stderr
    repro = pmemlab("repro", state, "--json")
    assert repro.returncode == 0, repro.stderr[-3000:]
    assert json.loads(repro.stdout)["verdicts"] == ["VIOLATION"]
    assert f"crash state {cases[1]['crash_state']}" in repro.stderr
    run_dir = Path(re.search(r"run 1/1: VIOLATION \((.+)\)", repro.stderr)[1])  # type: ignore[index]
    judged = json.loads((run_dir / "result.json").read_text())["metrics"]["crash_state"]
    assert (judged["slot"], judged["judged"]) == (1, "adr:random:" + f"{cases[1]['seed']}:0") or \
        (judged["slot"], judged["judged"][:11]) == (1, "adr:subset:"), judged  # few lines: enumerated subsets
    assert not (run_dir / "recovery-1.console.log").exists()  # one state, one recovery


def test_a_slot_beyond_the_cuts_states_judges_a_real_image_again(image: Image, accel: AccelVerdict,
                                                                 tmp_path: Path) -> None:
    """Correct flushes leave few distinct states: a case whose slot lies beyond them recovers and judges
    state (slot mod count) again on its own machine, never a PASS with nothing judged."""
    from lab.crash.cut_flow import cut_workload
    from lab.workloads.mapsync_kind import POWER_CUT

    check = MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=30, flush="auto"),
                         CrashPoint(after_ack=20), shape=ADR, adr_states=8, seed=5, adr_state=8)
    jobs = cut_workload("mapsync", POWER_CUT, [check], image, accel, [tmp_path / "case"], RunHooks(),
                        workload_dir=tmp_path / "w")
    result = jobs[0](RunHooks())
    state = result.metrics["crash_state"]
    distinct = len(state["states"])
    assert result.verdict is Verdict.PASS, result.to_dict()
    assert "recovery" in result.metrics  # a recovery machine judged an image
    assert any(f.oracle == "persistence" for f in result.findings)
    if distinct <= 8:  # the usual case: 1 state (nothing unpersisted) or a few
        assert state["repeat_of_slot"] == 8 % distinct and state["judged"] == state["states"][8 % distinct]["id"]
        assert any(f.oracle == "crash-state" and f"left {distinct} distinct" in f.summary for f in result.findings)
