"""The results store on a real PostgreSQL server: schema, and two controllers writing at once.

The store's logic tests (tests/unit/test_store.py) run on PostgreSQL too, through their `store` fixture.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from lab.store import ResultsStore
from lab.store.db import MIGRATIONS_DIR
from lab.store.models import Base
from tests.pgserver import PostgresServer
from tests.unit.test_store import make_cases, new_campaign

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[2]


def test_models_and_migrations_agree_on_postgresql(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    ResultsStore.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()]
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_a_big_seed_and_json_round_trip(postgres: PostgresServer, tmp_path: Path) -> None:
    with ResultsStore.open(postgres.new_database()) as store:
        cases = make_cases({"fs=ext4": "PASS"}, per_cell=1)
        cases[0]["workload"] = {"paths": [str(tmp_path)], "ratio": 0.5, "text": "é ✓"}
        new_campaign(store, "c1", cases)
        case = store.get_case(cases[0]["id"])
        assert case.seed == 2**64 - 1 and case.case == cases[0]


def run_controllers(url: str, go: Path, work: dict[str, list[str]]) -> None:
    """One process per controller (tests/unit/store_controller.py), released together by touching go."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "tests.unit.store_controller", url, name, str(go), *ids],
                                    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, ids in work.items()}
    try:
        go.touch()
        outputs = {name: p.communicate(timeout=120) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert {n: p.returncode for n, p in procs.items()} == {n: 0 for n in work}, outputs


def test_two_controllers_opening_a_new_database_at_once(postgres: PostgresServer, tmp_path: Path) -> None:
    """Both upgrade the empty schema at the same moment, then write a campaign each: nothing is lost."""
    url = postgres.new_database()
    run_controllers(url, tmp_path / "go", {"ctl1": [], "ctl2": []})
    with ResultsStore.open(url) as store:
        listed = {c.campaign.id: (c.cases, c.finished, c.met) for c in store.list_campaigns()}
        assert listed == {"ctl1": (10, 10, 10), "ctl2": (10, 10, 10)}
        assert store.campaign_summary("ctl1").total.infra_retries == 10


def test_two_controllers_share_one_campaign(postgres: PostgresServer, tmp_path: Path) -> None:
    """Both processes write cases of one campaign at once, interleaved: all 40 attempts are kept."""
    url = postgres.new_database()
    shared = make_cases({f"cell{i}": "PASS" for i in range(4)}, per_cell=5)
    with ResultsStore.open(url) as store:
        new_campaign(store, "shared", shared)
    ids = [c["id"] for c in shared]
    run_controllers(url, tmp_path / "go", {"ctl1": ids[0::2], "ctl2": ids[1::2]})
    with ResultsStore.open(url) as store:
        campaign = store.get_campaign("shared")
        assert [len(c.attempts) for c in campaign.cases] == [2] * 20
        assert all(c.verdict == "PASS" and c.infra_retries == 1 for c in campaign.cases)
        summary = store.campaign_summary("shared")
        assert (summary.total.runs, summary.total.met, summary.total.infra_retries) == (20, 20, 20)
        for name in ("ctl1", "ctl2"):
            assert store.campaign_summary(name).total.met == 10
        assert len({a.id for c in campaign.cases for a in c.attempts}) == 40
