"""A campaign stored in PostgreSQL: the smoke scenario run with --db on a server the test starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.image.cache import Image
from lab.store import ResultsStore
from tests.pgserver import PostgresServer

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def pmemlab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=REPO)


@pytest.mark.timeout(600)
def test_smoke_campaign_in_postgresql(image: Image, postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database("campaign")
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path), "NO_COLOR": "1"}
    proc = pmemlab("campaign", "run", str(SMOKE), "-j", "2", "--db", url, "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "results.db").exists()  # nothing went to the default SQLite store
    listing = pmemlab("results", "list", "--db", url, "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    (campaign,) = json.loads(listing.stdout)
    assert (campaign["cases"], campaign["finished"], campaign["met"]) == (2, 2, 2)
    with ResultsStore.open(url) as store:
        stored = store.get_campaign(campaign["id"])
        assert stored.status == "finished"
        assert {c.verdict for c in stored.cases} == {"PASS", "VIOLATION"}
        assert all(c.latest and c.latest.findings and c.latest.timings for c in stored.cases)
