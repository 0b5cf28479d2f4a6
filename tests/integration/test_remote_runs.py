"""`run mapsync --host` and `campaign run --host` against a second host in a network namespace (its own
sshd, work directory and image cache; the same pid space, so /proc shows what it left running)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import process_argvs

from . import sshhost

REPO_ROOT = Path(__file__).resolve().parents[2]
LOST_WITHIN_S = 45.0  # the controller's link timeout (LOST_LINK_S) plus a machine's teardown, with room
GONE_WITHIN_S = 40.0  # sshd's client-alive probes (3 x 3 s) or the attempt's own watchdog, with room
LOST_LINK_S = "8"  # the lost-link tests' link timeout (PMEMLAB_LINK_TIMEOUT_S, both sides): the 15 s default costs


@dataclass
class LabHost:
    ssh: sshhost.SshHost
    env: dict[str, str]  # PMEMLAB_HOSTS naming it "lab2"; PMEMLAB_DATA: this controller's own runs
    local_data: Path


@pytest.fixture(scope="module")
def lab_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHost]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace and an sshd on port 22 need root (CI runs as root)")
    ssh = sshhost.start(client_alive_s=3)
    try:
        # The host's pmemlab: this checkout, run with this interpreter (one executable, as the inventory wants).
        there = ssh.conf / "pmemlab"
        there.write_text(f"#!/bin/sh\nexport PYTHONPATH={REPO_ROOT}\nexec {sys.executable} -m lab.cli \"$@\"\n")
        there.chmod(0o755)
        base = tmp_path_factory.mktemp("controller")
        env = {**os.environ, "PMEMLAB_HOSTS": str(base / "hosts.toml"), "PMEMLAB_DATA": str(base / "data"),
               "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"}
        added = _cli(["host", "add", "lab2", "--target", ssh.target, "--key", str(ssh.key), "--known-hosts",
                      str(ssh.known_hosts), "--workdir", str(ssh.workdir), "--pmemlab", str(there)], env)
        assert added.returncode == 0, added.stderr
        yield LabHost(ssh, env, base / "data")
        print(json.dumps({"ready_snapshots_there": sorted(p.name for p in (ssh.workdir / "snapshots").glob("*"))}))
    finally:
        sshhost.stop(ssh)
    assert not _left_running(ssh.workdir)


def _cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _left_running(workdir: Path) -> list[str]:
    """Processes whose command line names the host's work directory (its attempts and their QEMUs)."""
    found = []
    for pid, argv in process_argvs().items():
        text = " ".join(argv)
        if str(workdir) in text and not text.startswith(("sshd", "/usr/sbin/sshd", "ip netns")):
            found.append(f"{pid}: {text[:200]}")
    return found


def _qemu_there(workdir: Path) -> list[str]:
    return [p for p in _left_running(workdir) if "qemu-system-x86" in p]


def _cut_mid_workload(host: LabHost, proc: subprocess.Popen[str], settle_s: float) -> float:
    """Wait for a machine there, let the workload get going, cut the link; when it was cut."""
    deadline = time.monotonic() + 240
    while not _qemu_there(host.ssh.workdir):
        assert proc.poll() is None, f"ended before a machine started there: {proc.communicate()}"
        assert time.monotonic() < deadline, "no machine started on the host"
        time.sleep(0.2)
    time.sleep(settle_s)
    assert _qemu_there(host.ssh.workdir), "the workload machine ended before the cut"
    sshhost.cut_link(host.ssh)
    return time.monotonic()


def _wait_gone(workdir: Path, since: float, only: re.Pattern[str] | None = None) -> float:
    def left() -> list[str]:
        return [p for p in _left_running(workdir) if only is None or only.search(p)]

    while left():
        assert time.monotonic() - since < GONE_WITHIN_S, f"still running there: {left()}"
        time.sleep(0.5)
    return time.monotonic() - since


@pytest.mark.timeout(400)
def test_remote_mapsync_end_to_end(lab_host: LabHost) -> None:
    started = time.monotonic()
    ran = _cli(["run", "mapsync", "--host", "lab2", "--records", "50", "--json"], lab_host.env)
    wall = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["verdict"] == "PASS" and result["host"] == "lab2"
    assert result["check"]["params"]["map_sync"] is True
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == lab_host.local_data / "runs", "the run directory came back under this host's runs"
    fetched = json.loads((run_dir / "result.json").read_text())
    assert (fetched["verdict"], fetched["run_dir"], fetched["host"]) == ("PASS", str(run_dir), "lab2")
    assert "clean" in (run_dir / "fsck.txt").read_text() or (run_dir / "fsck.txt").stat().st_size > 0
    there = lab_host.ssh.workdir / "data" / "runs" / run_dir.name
    assert (there / "result.json").is_file(), "the host ran it in its own data directory"
    assert not list(run_dir.rglob("*.img")) and not (run_dir / "capture").exists(), "a capture crossed the network"
    # --keep-capture: the capture comes back too, with its holes
    kept = _cli(["run", "mapsync", "--host", "lab2", "--records", "50", "--keep-capture", "--json"], lab_host.env)
    assert kept.returncode == 0, kept.stderr[-3000:]
    captures = [p for p in Path(json.loads(kept.stdout)["run_dir"]).rglob("capture/**/*") if p.is_file()]
    assert captures, "--keep-capture: no capture came back"
    media = max(captures, key=lambda p: p.stat().st_size)
    assert media.stat().st_blocks * 512 < media.stat().st_size // 4, "the capture's holes were filled in"
    print(json.dumps({"remote_mapsync_wall_s": round(wall, 2)}))


@pytest.mark.timeout(400)
def test_lost_link_mid_workload(lab_host: LabHost) -> None:
    # a workload that runs 60 s unless stopped: the cut lands in it
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "run", "mapsync", "--host", "lab2", "--records",
                             "1000000", "--records-per-page", "64", "--cut-at-seconds", "60", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**lab_host.env, "PMEMLAB_LINK_TIMEOUT_S": LOST_LINK_S})
    try:
        cut = _cut_mid_workload(lab_host, proc, settle_s=4.0)
        try:
            out, err = proc.communicate(timeout=LOST_WITHIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"no verdict within {LOST_WITHIN_S} s of the cut: {proc.communicate()}")
        lost_after = time.monotonic() - cut
        assert proc.returncode == 2, err[-2000:]
        result = json.loads(out)
        assert result["verdict"] == "INFRA-ERROR" and result["error"] == "host lost: lab2", result
        gone_after = _wait_gone(lab_host.ssh.workdir, cut)
        print(json.dumps({"lost_after_s": round(lost_after, 1), "nothing_left_after_s": round(gone_after, 1)}))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        sshhost.restore_link(lab_host.ssh)


FIRST_ATTEMPT = re.compile(r"/[0-9a-f]{12}-a1[/-]")  # runs/CAMPAIGN/CASE-a1/..., tasks/CASE-a1-KEY.json
@pytest.mark.timeout(300)
def test_interrupted_controller_leaves_nothing_there(lab_host: LabHost) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "run", "mapsync", "--host", "lab2", "--records",
                             "1000000", "--records-per-page", "64", "--cut-at-seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab_host.env)
    try:
        deadline = time.monotonic() + 240
        while not _qemu_there(lab_host.ssh.workdir):
            assert proc.poll() is None and time.monotonic() < deadline, "no machine started on the host"
            time.sleep(0.2)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the session closes, sshd hangs the attempt's pty up
        proc.communicate(timeout=30)
        assert proc.returncode != 0
        gone_after = _wait_gone(lab_host.ssh.workdir, interrupted)
        assert gone_after < 15.0, "the attempt outlived its controller until its own link timeout"
        print(json.dumps({"nothing_left_after_ctrl_c_s": round(gone_after, 1)}))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


SCENARIO = """
[scenario]
name = "remote-lost"
description = "one mapsync case on a lab host, its link cut mid-workload"
workload = "mapsync"
image = "debian12-pmem"

[workload]
records = 100000
delay_us = 1000  # about 1000 records a second: the workload outlasts the controller's link timeout

[matrix]
fs = ["ext4"]

[crash]
strategy = "time_offsets"
seconds = [20.0]

[[expect]]
verdict = "PASS"
"""


@pytest.mark.timeout(400)
def test_campaign_on_host_retries_a_lost_attempt(lab_host: LabHost, tmp_path: Path) -> None:
    scenario = tmp_path / "remote-lost.toml"
    scenario.write_text(SCENARIO)
    db = f"sqlite:///{tmp_path / 'results.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "campaign", "run", str(scenario), "--host", "lab2",
                             "--db", db, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**lab_host.env, "PMEMLAB_LINK_TIMEOUT_S": LOST_LINK_S})
    err_lines: list[str] = []
    gone_after: list[float] = []

    def watch(cut: float) -> None:
        """The link comes back when the retry starts (the controller declared the host lost): the retry runs
        on the same host, and the lost attempt's side there (its run directory and task spec end in -a1) must
        be gone by then or soon after."""
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if "(attempt 2)" in line:
                sshhost.restore_link(lab_host.ssh)
                gone_after.append(_wait_gone(lab_host.ssh.workdir, cut, FIRST_ATTEMPT))

    try:
        cut = _cut_mid_workload(lab_host, proc, settle_s=3.0)
        watcher = threading.Thread(target=watch, args=(cut,), daemon=True)
        watcher.start()
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(300)
        watcher.join(30)
        err = "".join(err_lines)
        assert gone_after, f"no retry, or something was left running there after the cut: {err[-2000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        sshhost.restore_link(lab_host.ssh)
    assert proc.returncode == 0, err[-3000:]
    campaign = json.loads(out)
    shown = _cli(["results", "show", campaign["campaign_id"], "--db", db, "--json"], lab_host.env)
    assert shown.returncode == 0, shown.stderr
    (listed,) = json.loads(shown.stdout)["cases"]
    case = _cli(["results", "show", listed["id"], "--db", db, "--json"], lab_host.env)
    assert case.returncode == 0, case.stderr
    attempts = json.loads(case.stdout)["attempts"]
    print(json.dumps({"attempts": [(a["verdict"], a["host"], a["error"]) for a in attempts]}))
    assert [a["verdict"] for a in attempts][0] == "INFRA-ERROR" and attempts[0]["error"] == "host lost: lab2"
    assert attempts[-1]["verdict"] == "PASS" and {a["host"] for a in attempts} == {"lab2"}
    final = Path(attempts[-1]["run_dir"])
    assert final.is_relative_to(lab_host.local_data) and (final / "result.json").is_file() \
        and (final / "fsck.txt").is_file(), "the retry's results came back"
    assert json.loads((final / "result.json").read_text())["run_dir"] == str(final), "it names its path here"


def test_host_check_reports_the_persistence_models_there(lab_host: LabHost) -> None:
    checked = _cli(["host", "check", "lab2", "--json"], lab_host.env)
    facts = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}
    assert facts["pmemlab"]["ok"], facts["pmemlab"]
    # The host shares this filesystem: its doctor, with its cache, must say what ours says with that cache.
    there = lab_host.ssh.workdir
    here = _cli(["doctor", "--json"], {**lab_host.env, "PMEMLAB_CACHE": str(there), "PMEMLAB_DATA": f"{there}/data"})
    (local,) = [c for c in json.loads(here.stdout)["checks"] if c["name"] == "persistence models"]
    assert facts["persistence models"]["ok"] and facts["persistence models"]["detail"] == local["detail"]
    assert local["detail"].startswith("eadr")
