"""Results store: migrations, attempt lifecycle, retries, interrupt/resume, summaries, errors."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from lab.errors import LabError
from lab.store import CampaignRecord, CaseRecord, ResultsStore, StoreError, default_url
from lab.store.db import MIGRATIONS_DIR
from lab.store.models import Base

HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"


def make_cases(cells: dict[str, str], per_cell: int = 2) -> list[dict[str, Any]]:
    """Case.to_dict()-like dicts: per_cell crash points for each cell, expecting cells[cell]."""
    cases = []
    for cell_key, expect in cells.items():
        for crash in range(per_cell):
            cases.append({"id": f"{cell_key.replace('=', '')}-{crash}", "cell_key": cell_key,
                          "cell": {"key": cell_key}, "repeat": 0, "crash_index": crash,
                          "seed": 2**64 - 1 - crash, "expect": expect, "workload": {"records": 100}})
    return cases


def make_result(verdict: str, run_dir: Path, error: str | None = None) -> dict[str, Any]:
    """A CheckResult.to_dict()-shaped result."""
    return {"verdict": verdict, "status": "complete", "error": error, "run_dir": str(run_dir),
            "findings": [{"oracle": "persistence", "verdict": verdict, "summary": f"judged {verdict}",
                          "details": {"lost": [3, 4]}},
                         {"oracle": "kernel-log", "verdict": "PASS", "summary": "clean", "details": {}}],
            "timings": {"boot": 1.5, "workload": 2.0, "total": 3.5}, "acked": 10}


def new_campaign(store: ResultsStore, campaign_id: str, cases: list[dict[str, Any]]) -> None:
    store.create_campaign(campaign_id=campaign_id, scenario_name="mapsync-basic",
                          scenario_path="scenarios/mapsync-basic.toml", scenario_text="name = 'x'\n",
                          scenario_hash="abc123", image_id="img0", kernel_version="6.1.0-test",
                          accelerator="tcg", jobs=2, cases=cases)


def run_case(store: ResultsStore, campaign_id: str, case_id: str, verdict: str, tmp: Path, *,
             final: bool = True) -> int:
    run_dir = tmp / f"run-{campaign_id}-{case_id}-{verdict}"
    run_dir.mkdir(exist_ok=True)
    attempt = store.start_attempt(campaign_id, case_id, run_dir)
    store.finish_attempt(attempt, make_result(verdict, run_dir), final=final)
    return attempt


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Each store test runs on SQLite and on a real PostgreSQL server (a fresh database each)."""
    if request.param == "sqlite":
        url = url_for(tmp_path / "results.db")
    else:
        url = request.getfixturevalue("postgres").new_database()
    s = ResultsStore.open(url)
    yield s
    s.close()


# -- migrations -----------------------------------------------------------
def alembic_versions(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


def test_open_empty_database_migrates_to_head_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    ResultsStore.open(url_for(db)).close()
    assert alembic_versions(db) == [HEAD]
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"campaigns", "cases", "attempts", "findings", "timings", "artifacts"} <= tables


def test_opening_twice_is_a_no_op_and_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    with ResultsStore.open(url_for(db)) as s:
        new_campaign(s, "c1", make_cases({"fs=ext4": "PASS"}))
    with ResultsStore.open(url_for(db)) as s:
        assert [c.campaign.id for c in s.list_campaigns()] == ["c1"]
        assert len(s.pending_cases("c1")) == 2
    assert alembic_versions(db) == [HEAD]


def test_upgrade_of_a_database_made_at_revision_1(tmp_path: Path) -> None:
    """A database an older pmemlab made (via the alembic CLI path of env.py: a URL, no connection)."""
    db = tmp_path / "old.db"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url_for(db))
    command.upgrade(cfg, "0001")
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO campaigns VALUES ('old', 's', 'p', 't', 'h', 'i', 'k', 'tcg', 1, 'finished', "
                     "'2024-01-01 00:00:00.000000', NULL)")
    with ResultsStore.open(url_for(db)) as s:
        assert s.get_campaign("old").status == "finished"
    assert alembic_versions(db) == [HEAD]


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    ResultsStore.open(url_for(db)).close()
    engine = create_engine(url_for(db))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_default_url_lives_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    assert default_url() == f"sqlite:///{tmp_path}/data/results.db"
    ResultsStore.open().close()
    assert (tmp_path / "data" / "results.db").is_file()


# -- errors ---------------------------------------------------------------
@pytest.mark.parametrize("url", ["sqlite:////nonexistent-pmemlab-dir/sub/results.db", "nosuchdb://u:s3cret@host/db",
                                 "postgresql+nosuchdriver://u:s3cret@localhost/lab", "not a url at all"])
def test_a_bad_url_raises_store_error_with_the_url_and_why(url: str) -> None:
    with pytest.raises(StoreError) as info:
        ResultsStore.open(url)
    message = str(info.value)
    assert isinstance(info.value, LabError)
    assert "cannot open the results store" in message
    assert "s3cret" not in message
    assert url.replace("s3cret", "***") in message
    assert message.split(": ", 1)[1].strip()  # a reason follows the URL


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bogus = tmp_path / "results.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a database"):
        ResultsStore.open(url_for(bogus))


def test_unknown_campaign_case_and_attempt(store: ResultsStore) -> None:
    new_campaign(store, "c1", make_cases({"fs=ext4": "PASS"}))
    with pytest.raises(StoreError, match="no campaign nope"):
        store.get_campaign("nope")
    with pytest.raises(StoreError, match="no case missing in campaign c1"):
        store.start_attempt("c1", "missing", "/tmp")
    with pytest.raises(StoreError, match="no attempt 999"):
        store.finish_attempt(999, {"verdict": "PASS"}, final=True)
    with pytest.raises(StoreError, match="already exists"):
        new_campaign(store, "c1", [])
    with pytest.raises(ValueError):
        store.set_campaign_status("c1", "bogus")


# -- lifecycle --------------------------------------------------------------
def test_full_attempt_lifecycle(store: ResultsStore, tmp_path: Path) -> None:
    cases = make_cases({"fs=ext4": "PASS"})
    new_campaign(store, "c1", cases)
    run_dir = tmp_path / "run"
    (run_dir / "capture").mkdir(parents=True)
    for name in ("result.json", "workload.console.log", "recovery.console.log", "events.log", "fsck.txt"):
        (run_dir / name).write_text("x")
    (run_dir / "nvdimm0.img").write_text("not an artifact")

    attempt = store.start_attempt("c1", "fsext4-0", run_dir)
    running = store.get_case("fsext4-0")
    assert running.status == "running" and running.verdict is None
    assert [(a.number, a.status) for a in running.attempts] == [(1, "running")]

    store.finish_attempt(attempt, make_result("VIOLATION", run_dir, error=None), final=True)
    case = store.get_case("fsext4-0")
    assert case.case == cases[0]  # the full Case.to_dict() comes back
    assert case.seed == 2**64 - 1
    assert (case.status, case.verdict, case.met_expectation) == ("finished", "VIOLATION", False)
    (only,) = case.attempts
    assert only.status == "finished" and only.verdict == "VIOLATION" and only.finished_at
    assert [f.oracle for f in only.findings] == ["persistence", "kernel-log"]
    assert only.findings[0].details == {"lost": [3, 4]}
    assert only.timings == {"boot": 1.5, "workload": 2.0, "total": 3.5}
    assert sorted((a.kind, Path(a.path).name) for a in only.artifacts) == [
        ("capture", "capture"), ("console", "recovery.console.log"), ("console", "workload.console.log"),
        ("events", "events.log"), ("fsck", "fsck.txt"), ("result", "result.json")]
    assert only.result is not None and only.result["acked"] == 10

    campaign = store.get_campaign("c1")
    assert campaign.scenario_text == "name = 'x'\n"
    assert [c.id for c in campaign.cases] == ["fsext4-0", "fsext4-1"]
    latest = campaign.cases[0].latest
    assert latest is not None and latest.id == attempt
    assert campaign.cases[1].latest is None
    assert [c["id"] for c in store.pending_cases("c1")] == ["fsext4-1"]

    # The JSON form (`results show --json`) keeps its shape.
    data = campaign.to_dict()
    assert data["scenario_text"] == "name = 'x'\n" and data["created_at"].endswith("+00:00")
    assert data["cases"][0]["latest_attempt"]["id"] == attempt and data["cases"][0]["attempts_count"] == 1
    assert data["cases"][1]["latest_attempt"] is None
    assert data["cases"][0]["latest_attempt"]["findings"][0] == {
        "oracle": "persistence", "verdict": "VIOLATION", "summary": "judged VIOLATION", "details": {"lost": [3, 4]}}
    assert case.to_dict()["attempts"][0]["timings"]["total"] == 3.5


def test_retry_bookkeeping(store: ResultsStore, tmp_path: Path) -> None:
    new_campaign(store, "c1", make_cases({"fs=ext4": "PASS"}, per_cell=1))
    run_case(store, "c1", "fsext4-0", "INFRA-ERROR", tmp_path, final=False)
    case = store.get_case("fsext4-0")
    assert (case.status, case.verdict, case.infra_retries) == ("pending", None, 1)
    assert [c["id"] for c in store.pending_cases("c1")] == ["fsext4-0"]

    run_case(store, "c1", "fsext4-0", "PASS", tmp_path)
    case = store.get_case("fsext4-0")
    assert (case.status, case.verdict, case.met_expectation, case.infra_retries) == ("finished", "PASS", True, 1)
    assert [(a.number, a.verdict) for a in case.attempts] == [(1, "INFRA-ERROR"), (2, "PASS")]
    assert store.pending_cases("c1") == []
    assert store.campaign_summary("c1").total.infra_retries == 1


def test_retries_exhausted_final_infra_error(store: ResultsStore, tmp_path: Path) -> None:
    new_campaign(store, "c1", make_cases({"fs=ext4": "PASS"}, per_cell=1))
    run_case(store, "c1", "fsext4-0", "INFRA-ERROR", tmp_path, final=False)
    run_case(store, "c1", "fsext4-0", "INFRA-ERROR", tmp_path, final=True)
    case = store.get_case("fsext4-0")
    assert (case.status, case.verdict, case.met_expectation, case.infra_retries) == (
        "finished", "INFRA-ERROR", False, 1)
    assert store.campaign_summary("c1").exit_status == 2


def test_interrupt_and_resume_return_no_finished_case_twice(store: ResultsStore, tmp_path: Path) -> None:
    cases = make_cases({"fs=ext4": "PASS", "fs=xfs": "PASS"})
    new_campaign(store, "c1", cases)
    ids = [c["id"] for c in cases]
    run_case(store, "c1", ids[0], "PASS", tmp_path)
    hanging = [store.start_attempt("c1", ids[1], tmp_path), store.start_attempt("c1", ids[2], tmp_path)]

    store.interrupt_running("c1")  # Ctrl-C, or the next controller cleaning up after a SIGKILL
    campaign = store.get_campaign("c1")
    assert campaign.status == "interrupted" and campaign.finished_at is None
    by_id = {c.id: c for c in campaign.cases}
    assert [by_id[i].status for i in ids] == ["finished", "interrupted", "interrupted", "pending"]
    for attempt_id in hanging:
        attempt = next(a for c in campaign.cases if (a := c.latest) and a.id == attempt_id)
        assert attempt.status == "interrupted" and attempt.finished_at

    seen: list[str] = []
    store.set_campaign_status("c1", "running")
    for case in store.pending_cases("c1"):
        seen.append(case["id"])
        run_case(store, "c1", case["id"], "PASS", tmp_path)
    assert seen == ids[1:]  # position order; the finished case is not run again
    assert store.pending_cases("c1") == []
    store.set_campaign_status("c1", "finished")
    assert store.get_campaign("c1").finished_at
    assert [len(store.get_case(i).attempts) for i in ids] == [1, 2, 2, 1]


def test_a_crashed_controller_leaves_running_cases_pending(store: ResultsStore, tmp_path: Path) -> None:
    new_campaign(store, "c1", make_cases({"fs=ext4": "PASS"}))
    store.start_attempt("c1", "fsext4-0", tmp_path)  # then SIGKILL: nobody calls interrupt_running
    assert [c["id"] for c in store.pending_cases("c1")] == ["fsext4-0", "fsext4-1"]


def test_summary_counts_and_exit_status(store: ResultsStore, tmp_path: Path) -> None:
    new_campaign(store, "c1", make_cases({"fs=ext4,sync=on": "PASS", "fs=ext4,sync=off": "VIOLATION"}, 3))
    for crash in range(3):
        run_case(store, "c1", f"fsext4,syncon-{crash}", "PASS", tmp_path)
    run_case(store, "c1", "fsext4,syncoff-0", "VIOLATION", tmp_path)
    run_case(store, "c1", "fsext4,syncoff-1", "VIOLATION", tmp_path)
    summary = store.campaign_summary("c1")
    assert summary.exit_status == 2  # one case unfinished
    run_case(store, "c1", "fsext4,syncoff-2", "PASS", tmp_path)  # the negative control failed to fail
    summary = store.campaign_summary("c1")
    on, off = summary.cells
    assert (on.cell_key, on.runs, on.verdicts, on.expected, on.met, on.not_met) == (
        "fs=ext4,sync=on", 3, {"PASS": 3}, ["PASS"], 3, 0)
    assert (off.runs, off.verdicts, off.met, off.not_met, off.all_met) == (
        3, {"VIOLATION": 2, "PASS": 1}, 2, 1, False)
    assert (summary.total.runs, summary.total.met, summary.total.not_met) == (6, 5, 1)
    assert summary.exit_status == 1


def test_exit_status_rules(store: ResultsStore, tmp_path: Path) -> None:
    new_campaign(store, "ok", make_cases({"a": "PASS"}, 1))
    run_case(store, "ok", "a-0", "PASS", tmp_path)
    assert store.campaign_summary("ok").exit_status == 0

    new_campaign(store, "infra", make_cases({"b": "PASS", "c": "INFRA-ERROR"}, 1))
    run_case(store, "infra", "c-0", "INFRA-ERROR", tmp_path)  # expected: met
    run_case(store, "infra", "b-0", "PASS", tmp_path)
    assert store.campaign_summary("infra").exit_status == 0
    new_campaign(store, "infra2", make_cases({"b": "PASS", "d": "PASS"}, 1))
    run_case(store, "infra2", "b-0", "VIOLATION", tmp_path)
    run_case(store, "infra2", "d-0", "INFRA-ERROR", tmp_path)
    summary = store.campaign_summary("infra2")
    assert (summary.total.infra_errors, summary.total.unexpected_infra_errors) == (1, 1)
    assert summary.exit_status == 2  # incomplete evidence outranks a failed expectation

    new_campaign(store, "empty", [])
    assert store.campaign_summary("empty").exit_status == 2  # no evidence is not a pass


# -- lookups ----------------------------------------------------------------
def test_same_case_in_two_campaigns_get_case_finds_the_newest(store: ResultsStore, tmp_path: Path) -> None:
    cases = make_cases({"fs=ext4": "PASS"}, 1)
    new_campaign(store, "first", cases)
    run_case(store, "first", "fsext4-0", "VIOLATION", tmp_path)
    new_campaign(store, "second", cases)
    run_case(store, "second", "fsext4-0", "PASS", tmp_path)
    case = store.get_case("fsext4-0")
    assert (case.campaign_id, case.verdict) == ("second", "PASS")
    assert [c.campaign.id for c in store.list_campaigns()] == ["second", "first"]
    newest = store.list_campaigns()[0]
    assert (newest.cases, newest.finished, newest.met) == (1, 1, 1)
    assert newest.to_dict() | {"cases": 1, "finished": 1, "met": 1, "id": "second"} == newest.to_dict()


def test_find_by_id_or_prefix(store: ResultsStore, tmp_path: Path) -> None:
    new_campaign(store, "20240101-aaaa", make_cases({"x": "PASS"}, 1))
    new_campaign(store, "20240101-abbb", [{"id": "deadbeef", "cell_key": "y", "cell": {}, "repeat": 0,
                                           "crash_index": 0, "seed": 1, "expect": "PASS"}])
    assert isinstance(store.find("20240101-aaaa"), CampaignRecord)
    found = store.find("20240101-ab")
    assert isinstance(found, CampaignRecord) and found.id == "20240101-abbb"
    found = store.find("dead")
    assert isinstance(found, CaseRecord) and (found.id, found.campaign_id) == ("deadbeef", "20240101-abbb")
    with pytest.raises(StoreError, match="ambiguous.*20240101-aaaa.*20240101-abbb"):
        store.find("20240101-a")
    with pytest.raises(StoreError, match="no campaign or case id starts with 'zzz'"):
        store.find("zzz")
    with pytest.raises(StoreError, match="no campaign or case"):
        store.find("%")  # LIKE wildcards are taken literally


# -- concurrency ------------------------------------------------------------
def test_threads_write_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    cases = make_cases({f"cell{i}": "PASS" for i in range(8)}, per_cell=4)
    with ResultsStore.open(url_for(db)) as s, ResultsStore.open(url_for(db)) as other:  # other: a 2nd process
        new_campaign(s, "c1", cases)
        errors: list[BaseException] = []

        def worker(chunk: list[dict[str, Any]], target: ResultsStore) -> None:
            try:
                for case in chunk:
                    run_case(target, "c1", case["id"], "INFRA-ERROR", tmp_path, final=False)
                    run_case(target, "c1", case["id"], "PASS", tmp_path)
                    target.get_campaign("c1")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(cases[i::8], s if i % 2 else other)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        summary = s.campaign_summary("c1")
        assert (summary.total.runs, summary.total.met, summary.total.infra_retries) == (32, 32, 32)
        assert summary.exit_status == 0
