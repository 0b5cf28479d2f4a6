"""Campaigns on Dask distributed, fast tier: a LocalCluster of two one-slot worker processes and a
sleep-based kind (no QEMU). A worker is SIGKILLed mid-case: that attempt is INFRA-ERROR "host lost",
the case finishes exactly once on the other worker, the store stays consistent, resume works."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

distributed = pytest.importorskip("distributed")

import dask  # noqa: E402

from lab.campaign import CampaignContext, NoProgress, run_cases  # noqa: E402
from lab.cases import Case, expand  # noqa: E402
from lab.image.cache import find_by_id  # noqa: E402
from lab.scenario import load_scenario  # noqa: E402
from lab.store.db import ResultsStore  # noqa: E402
from lab.vm.accel import AccelVerdict  # noqa: E402
from lab.vm.spec import Accel  # noqa: E402
from tests.unit import cluster_kind  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGE_ID = "feedfacecafe0001"


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Data and cache directories (a fake image by content id), the test kind registered here."""
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "cache" / "images" / IMAGE_ID
    image.mkdir(parents=True)
    (image / "manifest.json").write_text(json.dumps({"kernel_version": "6.1.0-test", "initramfs": "x"}))
    cluster_kind.register()
    yield tmp_path
    cluster_kind.unregister()


@pytest.fixture
def client(lab_env: Path) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, resources={"vm": 1}, processes=True,
                               dashboard_address=None, scheduler_port=0, silence_logs=40)
        try:
            with Client(cluster, set_as_default=False) as c:
                c.register_plugin(cluster_kind.SleepKind())
                yield c
        finally:
            cluster.close(timeout=30)


def sleep_cases() -> list[Case]:
    return [replace(c, workload=cluster_kind.NAME) for c in expand(load_scenario(REPO / "scenarios" / "smoke.toml"))]


def new_campaign(store: ResultsStore, campaign_id: str, cases: list[Case]) -> None:
    store.create_campaign(campaign_id=campaign_id, scenario_name="smoke", scenario_path="smoke.toml",
                          scenario_text="", scenario_hash="h", image_id=IMAGE_ID, kernel_version="6.1.0-test",
                          accelerator="tcg", jobs=0, cases=[c.to_dict() for c in cases])


def context(store: ResultsStore, campaign_id: str, lab_env: Path) -> CampaignContext:
    image = find_by_id(lab_env / "cache", IMAGE_ID)
    assert image is not None
    return CampaignContext(campaign_id, image, AccelVerdict(Accel.TCG, "test"), store, lab_env / "data" / "runs")


def cluster_run(client: Any, ctx: CampaignContext, cases: list[Case], attempts: dict[str, int] | None = None) -> Any:
    from lab.cluster.client import ClusterExecutor

    executor = ClusterExecutor(ctx, client, "tcg")
    assert executor.prepare(IMAGE_ID) == 2
    return run_cases(ctx, cases, 0, NoProgress(), attempts_so_far=lambda c: (attempts or {}).get(c.id, 0),
                     executor=executor)


@pytest.mark.timeout(120)
def test_a_killed_worker_loses_one_attempt_and_the_case_finishes_once_elsewhere(client: Any, lab_env: Path) -> None:
    store = ResultsStore.open(f"sqlite:///{lab_env}/results.db")
    cases = sleep_cases()
    new_campaign(store, "c1", cases)
    ctx = context(store, "c1", lab_env)
    victim = cases[0]
    got: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: got.update(outcomes=cluster_run(client, ctx, cases)))
    runner.start()
    started = lab_env / "data" / "started"
    deadline = time.monotonic() + 60
    marker: list[Path] = []
    while not marker and time.monotonic() < deadline:
        marker = sorted(started.glob(f"{victim.id}-a1.*")) if started.is_dir() else []
        time.sleep(0.05)
    assert marker, "the first case never started on a worker"
    pid = int(marker[0].read_text())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the worker process, mid-case
    killed, killed_at = time.monotonic(), time.time()
    retry: list[Path] = []
    while not retry and time.monotonic() < killed + 30:
        retry = sorted(started.glob(f"{victim.id}-a2.*"))
        time.sleep(0.02)
    rescheduled_s = time.monotonic() - killed
    print(f"killed worker: its case restarted on the other worker {rescheduled_s:.2f} s later "
          f"(that worker's slot was busy with a {cluster_kind.SLEEP_S} s case)")
    assert retry and int(retry[0].read_text()) != pid
    assert rescheduled_s < 10
    runner.join(90)
    assert not runner.is_alive()

    outcomes = got["outcomes"]
    assert sorted(o.case.id for o in outcomes) == sorted(c.id for c in cases)  # each case reported once
    assert all(o.result is not None and o.result.verdict is o.case.expect for o in outcomes)
    campaign = store.get_campaign("c1")
    by_id = {c.id: c for c in campaign.cases}
    lost, retried = by_id[victim.id].attempts
    assert lost.verdict == "INFRA-ERROR" and (lost.error or "").startswith("host lost: ")
    assert lost.host and lost.error == f"host lost: {lost.host}"
    assert lost.finished_at is not None
    print(f"host loss detected and recorded {lost.finished_at.timestamp() - killed_at:.2f} s after the SIGKILL")
    assert retried.verdict == victim.expect.value and retried.host and retried.host != lost.host
    assert retried.number == 2 and by_id[victim.id].infra_retries == 1
    assert all(c.status == "finished" and c.met_expectation for c in campaign.cases)
    other = by_id[cases[1].id]
    assert [a.verdict for a in other.attempts] == [cases[1].expect.value] and other.attempts[0].host
    assert store.campaign_summary("c1").exit_status == 0
    # The retry's run directory is the surviving worker's, recorded when it finished.
    assert retried.run_dir.endswith(f"{victim.id}-a2")


@pytest.mark.timeout(120)
def test_resume_on_the_cluster_continues_the_attempt_numbers(client: Any, lab_env: Path) -> None:
    store = ResultsStore.open(f"sqlite:///{lab_env}/results.db")
    cases = sleep_cases()
    new_campaign(store, "c2", cases)
    store.start_attempt("c2", cases[0].id, "gone", host="a-dead-controller")  # then the controller died
    store.interrupt_running("c2")
    pending = [Case.from_dict(c) for c in store.pending_cases("c2")]
    assert [c.id for c in pending] == [c.id for c in cases]
    attempts = {c.id: len(c.attempts) for c in store.get_campaign("c2").cases}
    outcomes = cluster_run(client, context(store, "c2", lab_env), pending, attempts)
    assert len(outcomes) == 2
    first = next(c for c in store.get_campaign("c2").cases if c.id == cases[0].id)
    assert [(a.number, a.status) for a in first.attempts] == [(1, "interrupted"), (2, "finished")]
    assert store.campaign_summary("c2").exit_status == 0 and not store.pending_cases("c2")


@pytest.mark.timeout(120)
def test_a_shared_workload_run_and_its_recoveries_run_in_one_task_on_one_worker(client: Any, lab_env: Path) -> None:
    """Captures never cross hosts: each group of K crash points comes back from one worker process
    with K results; a failed recovery is retried alone."""
    store = ResultsStore.open(f"sqlite:///{lab_env}/results.db")
    cases = [replace(c, workload=cluster_kind.CUT_NAME)
             for c in expand(load_scenario(REPO / "scenarios" / "mapsync-many-cuts.toml"))]
    new_campaign(store, "c4", cases)
    outcomes = cluster_run(client, context(store, "c4", lab_env), cases)
    assert len(outcomes) == len(cases) == 40
    assert all(o.result is not None and o.result.verdict is o.case.expect for o in outcomes)
    record = store.get_campaign("c4")
    retried = [c for c in record.cases if len(c.attempts) == 2]
    assert len(retried) == 4 and all(c.attempts[0].verdict == "INFRA-ERROR" for c in retried)
    by_cell: dict[str, set[tuple[int, int, str | None]]] = {}
    for case in record.cases:
        first = case.attempts[0]
        assert first.result is not None and first.host
        pids = first.result["metrics"]["pids"]
        by_cell.setdefault(case.cell_key, set()).add((pids["workload"], pids["recovery"], first.host))
    assert len(by_cell) == 4
    for seen in by_cell.values():
        ((workload_pid, recovery_pid, _),) = seen  # one worker process and host per workload run
        assert workload_pid == recovery_pid != os.getpid()


@pytest.mark.timeout(120)
def test_ctrl_c_destroys_the_running_tasks_machines_on_their_workers(client: Any, lab_env: Path) -> None:
    store = ResultsStore.open(f"sqlite:///{lab_env}/results.db")
    cases = sleep_cases()
    new_campaign(store, "c5", cases)
    started = lab_env / "data" / "started"

    def interrupt_when_both_run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(started.glob("*-a1.*[0-9]"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the controller (the main thread)

    threading.Thread(target=interrupt_when_both_run, daemon=True).start()
    interrupted_at = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        cluster_run(client, context(store, "c5", lab_env), cases)
    took = time.monotonic() - interrupted_at
    assert sorted(p.name for p in started.glob("*.destroyed")) == sorted(f"{c.id}-a1.destroyed" for c in cases)
    assert took < cluster_kind.SLEEP_S + 10
    record = store.get_campaign("c5")
    assert record.status == "interrupted" and [c.status for c in record.cases] == ["interrupted"] * 2


def test_a_duplicate_finish_counts_once(tmp_path: Path) -> None:
    store = ResultsStore.open(f"sqlite:///{tmp_path}/results.db")
    case = expand(load_scenario(REPO / "scenarios" / "smoke.toml"))[0]
    new_campaign(store, "c3", [case])
    first = store.start_attempt("c3", case.id, tmp_path / "a1")
    infra = {"verdict": "INFRA-ERROR", "error": "host lost: w1", "run_dir": str(tmp_path / "a1")}
    assert store.finish_attempt(first, infra, final=False, host="w1")
    assert not store.finish_attempt(first, infra, final=False, host="w1")  # delivered again
    second = store.start_attempt("c3", case.id, tmp_path / "a2")
    passed = {"verdict": case.expect.value, "run_dir": str(tmp_path / "a2")}
    assert store.finish_attempt(second, passed, final=True, host="w2")
    assert not store.finish_attempt(second, {"verdict": "VIOLATION"}, final=True, host="w3")
    (stored,) = store.get_campaign("c3").cases
    assert stored.infra_retries == 1 and stored.verdict == case.expect.value and stored.met_expectation
    assert [(a.verdict, a.host) for a in stored.attempts] == [("INFRA-ERROR", "w1"), (case.expect.value, "w2")]


def test_a_result_crosses_the_wire_whole(tmp_path: Path) -> None:
    """What a worker returns (to_dict) reads back to the same result: no field is dropped on the way."""
    from lab.attempt import result_from_dict
    from lab.oracles.finding import Finding
    from lab.runner.guest_run import WorkloadResult
    from lab.verdict import Verdict

    result = WorkloadResult("mapsync", {"fs": "ext4"}, tmp_path / "run", "img", "6.1.0", "tcg", boot="cold",
                            verdict=Verdict.VIOLATION, findings=[Finding("persistence", Verdict.VIOLATION, "lost 3",
                                                                         {"lost": [1, 2, 3]})],
                            metrics={"cut": {"workload_s": 1.5}}, kernel_problems=[{"kind": "oops"}],
                            timings={"workload": 2.0, "total": 3.0}, error="x", errno=28, status="failed",
                            qemu_version="7.2.0")
    assert result_from_dict(result.to_dict()).to_dict() == result.to_dict()


@pytest.mark.timeout(120)
def test_a_cluster_left_without_workers_stops_the_campaign_by_a_deadline(lab_env: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wait has a deadline: when the last worker goes, the campaign does not wait for one forever;
    it stops (resumable) with the reason, its in-flight case interrupted."""
    from distributed import Client, LocalCluster

    from lab import campaign as campaign_module
    from lab.cluster import client as client_module
    from lab.cluster.client import ClusterExecutor

    monkeypatch.setattr(campaign_module, "NO_SLOTS_TIMEOUT_S", 3.0)
    monkeypatch.setattr(client_module, "CAPACITY_REFRESH_S", 0.2)
    store = ResultsStore.open(f"sqlite:///{lab_env}/results.db")
    cases = sleep_cases()
    new_campaign(store, "c9", cases)
    ctx = context(store, "c9", lab_env)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, resources={"vm": 1}, processes=True,
                               dashboard_address=None, scheduler_port=0, silence_logs=40)
        try:
            with Client(cluster, set_as_default=False) as c:
                c.register_plugin(cluster_kind.SleepKind())
                executor = ClusterExecutor(ctx, c, "tcg")
                assert executor.prepare(IMAGE_ID) == 1
                got: dict[str, Any] = {}
                runner = threading.Thread(target=lambda: got.update(outcomes=run_cases(
                    ctx, cases, 0, NoProgress(), executor=executor)))
                runner.start()
                started = lab_env / "data" / "started"
                deadline = time.monotonic() + 60
                while not (started.is_dir() and any(started.iterdir())) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert started.is_dir() and any(started.iterdir()), "no case started on the worker"
                gone = time.monotonic()
                cluster.scale(0)  # the last worker leaves mid-case
                runner.join(60)
                waited = time.monotonic() - gone
                assert not runner.is_alive(), "the campaign waited for a worker past its deadline"
        finally:
            cluster.close(timeout=30)
    print(f"campaign stopped {waited:.1f} s after its last worker left (deadline 3 s)")
    assert ctx.stop.is_set() and "no machine slots for 3 s" in (ctx.stop_reason or "")
    campaign = store.get_campaign("c9")
    assert {c.status for c in campaign.cases} <= {"interrupted", "pending", "finished"}
    assert any(c.status == "interrupted" for c in campaign.cases)


@pytest.mark.timeout(60)
def test_a_worker_whose_scheduler_never_answers_ends_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PMEMLAB_WORKER_CONNECT_S": "2", "PMEMLAB_DATA": str(tmp_path / "data"),
           "PMEMLAB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "worker", "--scheduler", "tcp://127.0.0.1:1", "--vm", "1"],
                          capture_output=True, text=True, timeout=50, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no scheduler answered at tcp://127.0.0.1:1 within 2 s" in proc.stderr
    assert "Traceback" not in proc.stderr
