"""The dashboard over plain HTTP: TestClient on SQLite and PostgreSQL, and `pmemlab serve` as a real server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the dashboard needs the 'web' extra")
from fastapi.testclient import TestClient  # noqa: E402

from lab.known_issues import KnownIssue, KnownIssues  # noqa: E402
from lab.store import ResultsStore  # noqa: E402
from lab.web.app import create_app  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402
from tests.seed import seed_pair  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultsStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/results.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database("dash")
    store = ResultsStore.open(url)
    seed_pair(store, tmp_path / "runs")
    yield store
    store.close()


def row_of(html: str, cell: str) -> str:
    match = re.search(rf'<tr class="([^"]*)" data-cell="{re.escape(cell)}">', html)
    assert match, f"no row for {cell}"
    return match.group(1)


def test_pages(seeded: ResultsStore) -> None:
    client = TestClient(create_app(seeded))
    index = client.get("/")
    assert index.status_code == 200
    assert "kernel 6.1.0-14-amd64" in index.text and 'href="/compare/base1/cand2"' in index.text
    campaign = client.get("/campaign/cand2")
    assert campaign.status_code == 200 and "cfsext4-syncon-1" in campaign.text
    compare = client.get("/compare/base1/cand2")
    assert compare.status_code == 200
    assert row_of(compare.text, "fs=ext4,sync=on") == "regression"
    assert row_of(compare.text, "fs=xfs,sync=on") == "fixed"
    assert row_of(compare.text, "fs=ext2,sync=on") == "disappeared"
    assert '<span class="badge">1 regression</span>' in compare.text
    trend = client.get("/trend", params={"scenario": "mapsync", "cell": "fs=ext4,sync=on"})
    assert trend.status_code == 200
    assert re.findall(r'<td class="([a-z-]+)">(met|not met)</td>', trend.text) == [("met", "met"),
                                                                                  ("not-met", "not met")]
    case = client.get("/case/cand2/cfsext4-syncon-1")
    assert case.status_code == 200
    for text in ("2 acknowledged records lost", "<cfsext4-syncon-1 console>", "fsck of cfsext4-syncon-1: clean",
                 "1.25 s"):
        assert text.replace("<", "&lt;").replace(">", "&gt;") in case.text  # escaped, not markup


def test_known_issue_on_the_comparison_page(seeded: ResultsStore) -> None:
    known = KnownIssues((KnownIssue(cell="fs=ext4,*", reason="ext4 loses a record", link="https://bugs.example/9"),))
    page = TestClient(create_app(seeded, known)).get("/compare/base1/cand2").text
    assert row_of(page, "fs=ext4,sync=on") == "known" and "ext4 loses a record" in page


def seed_fault_latency(store: ResultsStore, run_root: Path) -> None:
    """A finished fault-latency campaign: plain and MAP_SYNC stores on ext4, and one that failed."""
    cells = [("sync=off", False, [20, 22, 24], "PASS"), ("sync=on", True, [100, 120, 140], "PASS"),
             ("bg", True, [], "INFRA-ERROR")]
    cases = []
    for i, (cell, map_sync, _, _) in enumerate(cells):
        check = {"kind": "fault-latency", "fs": "ext4", "dax": "always",
                 "params": {"pages": 3, "file": "empty", "map_sync": map_sync, "background_copy": cell == "bg"}}
        cases.append({"id": f"lat{i}", "cell_key": cell, "cell": {}, "repeat": 0, "crash_index": 0, "seed": i,
                      "expect": "PASS", "workload": "fault-latency", "check": check})
    store.create_campaign(campaign_id="lat1", scenario_name="fault-latency", scenario_path="s.toml",
                          scenario_text="", scenario_hash="l", image_id="img", kernel_version="6.1.0-14-amd64",
                          accelerator="tcg", jobs=1, cases=cases)
    for case, (_, _, samples_us, verdict) in zip(cases, cells):
        run_dir = run_root / str(case["id"])
        run_dir.mkdir(parents=True)
        attempt = store.start_attempt("lat1", str(case["id"]), run_dir)
        store.finish_attempt(attempt, {
            "kind": "fault-latency", "verdict": verdict, "accelerator": "tcg", "check": case["check"],
            "run_dir": str(run_dir), "findings": [], "timings": {"total": 3.0},
            "metrics": {"samples_ns": [us * 1000 for us in samples_us]} if samples_us else {}}, final=True)
    store.set_campaign_status("lat1", "finished")


def test_fault_latency_plots_are_inline_svg(seeded: ResultsStore, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    seed_fault_latency(seeded, tmp_path / "lat")
    client = TestClient(create_app(seeded))
    case = client.get("/case/lat1/lat1")
    assert case.status_code == 200
    assert re.search(r'<figure class="fault-latency"><svg [^>]*xmlns="http://www.w3.org/2000/svg"', case.text)
    assert "<script" not in case.text and "<?xml" not in case.text  # drawn on the server, inside the page
    campaign = client.get("/campaign/lat1")
    assert campaign.text.count('<figure class="fault-latency"><svg') == 1
    failed = client.get("/case/lat1/lat2")  # no samples: said, not drawn
    assert "No fault-latency samples to plot." in failed.text and "<svg" not in failed.text
    mapsync = client.get("/case/cand2/cfsext4-syncon-1")  # other kinds get no plot
    assert "fault-latency" not in mapsync.text and "<svg" not in mapsync.text


def test_read_only_and_missing_things(seeded: ResultsStore) -> None:
    client = TestClient(create_app(seeded))
    assert client.post("/").status_code == 405
    assert client.delete("/campaign/cand2").status_code == 405
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
    missing = client.get("/campaign/nope")
    assert missing.status_code == 404 and "no campaign nope" in missing.text
    assert client.get("/case/cand2/nope").status_code == 404
    assert seeded.list_campaigns()[0].campaign.id == "cand2"  # nothing changed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pmemlab_serve_on_localhost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/results.db"
    with ResultsStore.open(url) as store:
        seed_pair(store, tmp_path / "runs")
    port = free_port()
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "serve", "--db", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/compare/base1/cand2", timeout=5) as r:
                    body = r.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "pmemlab serve did not answer within 30 s"
                time.sleep(0.1)
        assert row_of(body, "fs=ext4,sync=on") == "regression"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130), proc.stderr.read() if proc.stderr else ""


def test_serve_with_a_bad_known_issues_file(tmp_path: Path) -> None:
    bad = tmp_path / "known.toml"
    bad.write_text("[[issue]]\nreason = 'r'\n")
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "serve", "--known-issues", str(bad)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and f"{bad}: issue[0].cell" in proc.stderr
