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
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> ResultsStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/results.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database("dash")
    store = ResultsStore.open(url)
    seed_pair(store, tmp_path / "runs")
    yield store  # type: ignore[misc]
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
