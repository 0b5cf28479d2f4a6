"""Campaigns across hosts, SSH tier: `pmemlab cluster up --host lab2` starts the scheduler here, on the
address that reaches a second host (a network namespace with its own sshd, tests/integration/sshhost.py),
and over SSH one detached `pmemlab worker` there; a small campaign (the sleep-based test kind, no QEMU)
runs on it through the cluster executor, every attempt recorded on host lab2; `cluster down` stops the
remote worker by pid over SSH and the scheduler here. Key material never reaches a log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab.cluster import remote
from lab.hosts import inventory
from lab.hosts.ssh import HostConnection, HostError
from lab.image.cache import Image
from lab.vm.process import wait_until
from tests.conftest import _lab_qemu_cmdlines

from . import sshhost

pytest.importorskip("distributed")
pytest.importorskip("fabric")

REPO = Path(__file__).resolve().parents[2]
IMAGE_ID = "feedfacecafe0002"


@pytest.fixture
def second_host() -> Iterator[sshhost.SshHost]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace and an sshd on port 22 need root (CI runs as root)")
    host = sshhost.start()
    try:
        yield host
    finally:
        sshhost.stop(host)


def cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def ours(pid: int) -> bool:
    """`pid` still runs a pmemlab worker or scheduler (a zombie's cmdline is empty)."""
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return " worker --scheduler " in line or " cluster scheduler " in line


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pmemlab_there(host: sshhost.SshHost, **env: str) -> str:
    """The host's pmemlab executable: it shares this filesystem, so this checkout run by this Python."""
    there = host.conf / "pmemlab"
    exports = "".join(f"export {k}={v}\n" for k, v in {"PYTHONPATH": str(REPO), **env}.items())
    there.write_text(f"#!/bin/sh\n{exports}exec {sys.executable} -m lab.cli \"$@\"\n")
    there.chmod(0o755)
    return str(there)


def netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def run_sleep_campaign(address: str, lab: Path) -> Any:
    """Two cases of the sleep kind through the cluster executor (the path of 'campaign run --cluster'),
    with the kind registered here and, by a worker plugin, on the remote worker."""
    from lab.campaign import CampaignContext, NoProgress, run_cases
    from lab.cases import expand
    from lab.cluster.client import ClusterExecutor, connect
    from lab.image.cache import find_by_id
    from lab.scenario import load_scenario
    from lab.store.db import ResultsStore
    from lab.vm.accel import AccelVerdict
    from lab.vm.spec import Accel
    from tests.unit import cluster_kind

    store = ResultsStore.open(f"sqlite:///{lab}/results.db")
    cases = [replace(c, workload=cluster_kind.NAME) for c in expand(load_scenario(REPO / "scenarios" / "smoke.toml"))]
    store.create_campaign(campaign_id="ssh1", scenario_name="smoke", scenario_path="smoke.toml", scenario_text="",
                          scenario_hash="h", image_id=IMAGE_ID, kernel_version="6.1.0-test", accelerator="tcg",
                          jobs=0, cases=[c.to_dict() for c in cases])
    image = find_by_id(lab / "cache", IMAGE_ID)
    assert image is not None
    ctx = CampaignContext("ssh1", image, AccelVerdict(Accel.TCG, "test"), store, lab / "data" / "runs")
    cluster_kind.register()
    try:
        with connect(address, timeout=20) as client:
            client.register_plugin(cluster_kind.SleepKind())
            executor = ClusterExecutor(ctx, client, "tcg")
            assert executor.prepare(IMAGE_ID) == 1  # lab2's one slot; the image pushed to it by content id
            outcomes = run_cases(ctx, cases, 0, NoProgress(), attempts_so_far=lambda c: 0, executor=executor)
    finally:
        cluster_kind.unregister()
    assert sorted(o.case.id for o in outcomes) == sorted(c.id for c in cases)
    assert all(o.result is not None and o.result.verdict is o.case.expect for o in outcomes)
    return store.get_campaign("ssh1")


@pytest.mark.timeout(240)
def test_cluster_up_over_ssh_runs_a_campaign_there_and_down_stops_it(second_host: sshhost.SshHost, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    lab = tmp_path / "controller"
    (lab / "cache" / "images" / IMAGE_ID).mkdir(parents=True)
    (lab / "cache" / "images" / IMAGE_ID / "manifest.json").write_text(
        json.dumps({"kernel_version": "6.1.0-test", "initramfs": "x"}))
    monkeypatch.setenv("PMEMLAB_DATA", str(lab / "data"))
    monkeypatch.setenv("PMEMLAB_CACHE", str(lab / "cache"))
    remote_pmemlab = pmemlab_there(second_host, PMEMLAB_TEST_SLEEP_S="1")
    hosts_file = tmp_path / "hosts.toml"
    hosts_file.write_text(f'[hosts.lab2]\ntarget = "{second_host.target}"\nkey = "{second_host.key}"\n'
                          f'known_hosts = "{second_host.known_hosts}"\nworkdir = "{second_host.workdir}"\n'
                          f'pmemlab = "{remote_pmemlab}"\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PMEMLAB_")}, "NO_COLOR": "1",
           "PYTHONPATH": str(REPO), "PMEMLAB_HOSTS": str(hosts_file), "PMEMLAB_DATA": str(lab / "data"),
           "PMEMLAB_CACHE": str(lab / "cache")}
    outputs: list[str] = []
    state = lab / "data" / "cluster" / "state.json"

    # Negative control first: an unknown host key is refused before anything starts.
    (tmp_path / "empty_known_hosts").write_text("")
    refused = cli(["cluster", "up", "--host", second_host.target, "--key", str(second_host.key),
                   "--known-hosts", str(tmp_path / "empty_known_hosts")], env)
    outputs += [refused.stdout, refused.stderr]
    assert refused.returncode != 0 and "SSH refused" in refused.stderr, refused.stderr
    assert not state.exists()
    # A worker that cannot start there fails 'up' at once with its log's tail, and nothing stays up.
    broken = cli(["cluster", "up", "--host", second_host.target, "--key", str(second_host.key),
                  "--known-hosts", str(second_host.known_hosts), "--workdir", str(tmp_path / "broken"),
                  "--pmemlab", "/nonexistent/pmemlab"], env)
    outputs += [broken.stdout, broken.stderr]
    assert broken.returncode != 0 and "did not join" in broken.stderr, broken.stderr
    assert "/nonexistent/pmemlab" in broken.stderr and "No such file" in broken.stderr, broken.stderr
    assert not state.exists()
    assert not [p for p in Path("/proc").glob("[0-9]*") if str(lab) in _cmdline(p)]

    up = cli(["cluster", "up", "--host", "lab2", "--json"], env)
    outputs += [up.stdout, up.stderr]
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        started = json.loads(up.stdout)
        # Listening where the host reaches us: this side of the veth pair, not loopback.
        assert started["address"].startswith(f"tls://{second_host.address.rsplit('.', 1)[0]}.1:")
        # The cluster's credentials went to the host for its worker, for the lab's user only.
        pushed = second_host.workdir / "cluster" / "tls.pem"
        assert pushed.read_bytes() == (lab / "data" / "cluster" / "tls.pem").read_bytes()
        assert pushed.stat().st_mode & 0o777 == 0o600
        scheduler_pid = next(m["pid"] for m in started["members"] if m["role"] == "scheduler")
        (worker,) = [m for m in started["members"] if m["role"] == "worker"]
        assert worker["host"]["name"] == "lab2" and worker["log"] == f"{second_host.workdir}/cluster/worker.log"
        pid = int(worker["pid"])
        assert ours(pid), "the recorded pid is not the remote worker"
        assert os.getsid(pid) == os.getpgid(pid) == pid  # detached: its own session, stopped as a group
        # It runs on the other "host": inside the namespace, where sshd runs, not where we run.
        assert netns(pid) == netns(second_host.proc.pid) != netns(os.getpid())
        assert (second_host.workdir / "cluster" / "worker.pid").read_text().strip() == str(pid)

        again = cli(["cluster", "up", "--host", "lab2"], env)
        assert again.returncode != 0 and "already up" in again.stderr, again.stderr
        with HostConnection(inventory.load(hosts_file)["lab2"]) as conn:  # even without our state file
            with pytest.raises(HostError, match=f"a pmemlab worker already runs there \\(pid {pid}"):
                remote.start_worker(conn, "tcp://127.0.0.1:1", 1)

        status = cli(["cluster", "status", "--json"], env)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert [(w["name"], w["vm"]) for w in shown["workers"]] == [("lab2", "1")]
        assert {(m["host"], m["alive"]) for m in shown["members"]} == {("local", "yes"), ("lab2", "joined")}

        record = run_sleep_campaign(started["address"], lab)
        assert all(c.status == "finished" and c.met_expectation for c in record.cases)
        attempts = [a for c in record.cases for a in c.attempts]
        assert len(attempts) == 2 and {a.host for a in attempts} == {"lab2"}
        assert all(a.run_dir.startswith(f"{second_host.workdir}/data/runs/") for a in attempts)
        ran = sorted((second_host.workdir / "data" / "started").glob("*-a1.[0-9]*"))
        assert len(ran) == 2 and {int(p.read_text()) for p in ran} == {pid}  # in the remote worker process
        assert (second_host.workdir / "images" / IMAGE_ID / "manifest.json").is_file()
    finally:
        down = cli(["cluster", "down"], env)
        outputs += [down.stdout, down.stderr]
    assert down.returncode == 0, down.stderr
    assert f"worker {pid} on lab2: stopped" in down.stderr + down.stdout  # by SIGTERM, in time: not "killed"
    assert wait_until(lambda: not ours(pid) and not ours(scheduler_pid), 15)
    assert not state.exists() and not (second_host.workdir / "cluster" / "worker.pid").exists()
    assert not (second_host.workdir / "cluster" / "tls.pem").exists()
    assert not [line for line in _lab_qemu_cmdlines().values() if str(second_host.workdir) in line]
    assert "stopped: SIGTERM" in (second_host.workdir / "cluster" / "worker.log").read_text()

    # No key material in any log or output: the key is named by path only.
    key_lines = [line for line in second_host.key.read_text().splitlines() if line and "PRIVATE KEY" not in line]
    logs = outputs + [p.read_text(errors="replace") for p in (lab / "data" / "cluster").glob("*.log")]
    logs.append((second_host.workdir / "cluster" / "worker.log").read_text(errors="replace"))
    for text in logs:
        assert "PRIVATE KEY" not in text and not any(line in text for line in key_lines)


@pytest.mark.timeout(240)
def test_cluster_down_mid_case_leaves_no_qemu_on_the_host(second_host: sshhost.SshHost, image: Image,
                                                          tmp_path: Path) -> None:
    """A real campaign ('campaign run --cluster', smoke under TCG) on a worker started with --host
    USER@ADDR: once its machine runs there, `cluster down` stops the worker, and its QEMU with it."""
    lab = tmp_path / "controller"
    env = {**{k: v for k, v in os.environ.items() if k not in ("PMEMLAB_DATA", "PMEMLAB_HOSTS")}, "NO_COLOR": "1",
           "PYTHONPATH": str(REPO), "PMEMLAB_DATA": str(lab)}
    up = cli(["cluster", "up", "--host", second_host.target, "--key", str(second_host.key), "--known-hosts",
              str(second_host.known_hosts), "--workdir", str(second_host.workdir), "--vm", "1",
              "--pmemlab", pmemlab_there(second_host), "--json"], env)
    campaign: subprocess.Popen[str] | None = None
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        started = json.loads(up.stdout)
        (worker,) = [m for m in started["members"] if m["role"] == "worker"]
        pid = int(worker["pid"])
        assert worker["host"]["name"] == second_host.address and netns(pid) == netns(second_host.proc.pid)
        with (tmp_path / "campaign.log").open("w") as out:
            campaign = subprocess.Popen([sys.executable, "-m", "lab.cli", "campaign", "run",
                                         str(REPO / "scenarios" / "smoke.toml"), "--cluster", started["address"],
                                         "--accel", "tcg"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        there = str(second_host.workdir)
        assert wait_until(lambda: any(there in line for line in _lab_qemu_cmdlines().values())
                          or campaign.poll() is not None, 150, interval=0.2), \
            (tmp_path / "campaign.log").read_text()[-3000:]
        assert campaign.poll() is None, "the campaign ended before its machine ran on the host"
        assert (second_host.workdir / "images" / image.id / "manifest.json").is_file()  # pushed by content id
    finally:
        down = cli(["cluster", "down"], env)
        if campaign is not None and campaign.poll() is None:
            os.killpg(campaign.pid, signal.SIGINT)
            try:
                campaign.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(campaign.pid, signal.SIGKILL)
                campaign.wait(10)
    assert down.returncode == 0, down.stderr
    assert f"worker {pid} on {second_host.address}: stopped" in down.stderr + down.stdout
    assert wait_until(lambda: not ours(pid), 15)
    assert wait_until(lambda: not any(there in line for line in _lab_qemu_cmdlines().values()), 15), \
        "a QEMU outlived its worker"
