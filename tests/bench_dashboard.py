"""Dashboard render times over a big store: python -m tests.bench_dashboard [DB_URL] [CAMPAIGNS] [CASES].

Seeds CAMPAIGNS campaigns of one scenario x CASES cases (10 cells; each case one finished attempt
with two findings and two timings, written in bulk through the ORM), then times each page through
FastAPI's TestClient (median of 5 requests). Prints one line per page.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import timedelta

from fastapi.testclient import TestClient

from lab.store import ResultsStore
from lab.store.models import Attempt, Campaign, Case, FindingRow, TimingRow, utcnow
from lab.web.app import create_app


def seed(store: ResultsStore, campaigns: int, cases: int) -> None:
    from sqlalchemy.orm import Session

    start = utcnow() - timedelta(days=campaigns)
    with Session(store.engine) as s, s.begin():
        for n in range(campaigns):
            cid = f"camp{n:04d}"
            camp = Campaign(id=cid, scenario_name="mapsync", scenario_path="scenarios/mapsync.toml",
                            scenario_text="", scenario_hash="h", image_id="img", kernel_version=f"6.1.0-{n // 10}",
                            accelerator="tcg", jobs=2, status="finished", created_at=start + timedelta(days=n))
            for k in range(cases):
                cell = f"fs=ext4,cell={k % 10}"
                verdict = "VIOLATION" if (k % 10 == 3 and n % 7 == 6) else "PASS"
                case = Case(id=f"case{k:03d}", cell_key=cell, cell={"key": cell}, repeat=0, crash_index=k // 10,
                            seed="1", expect="PASS", case={"id": f"case{k:03d}"}, position=k, status="finished",
                            verdict=verdict, met_expectation=verdict == "PASS", infra_retries=0)
                attempt = Attempt(number=1, started_at=camp.created_at, finished_at=camp.created_at,
                                  status="finished", verdict=verdict, run_dir="/nonexistent", result={})
                attempt.findings = [FindingRow(oracle="persistence", verdict=verdict, summary="s", details={}),
                                    FindingRow(oracle="kernel-log", verdict="PASS", summary="clean", details={})]
                attempt.timings = [TimingRow(phase="boot", seconds=1.0), TimingRow(phase="total", seconds=3.0)]
                case.attempts.append(attempt)
                camp.cases.append(case)
            s.add(camp)


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    campaigns = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    cases = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    store = ResultsStore.open(url)
    t = time.perf_counter()
    seed(store, campaigns, cases)
    print(f"seeded {campaigns} campaigns x {cases} cases in {time.perf_counter() - t:.1f} s ({url.split(':')[0]})")
    client = TestClient(create_app(store))
    last, prev = f"camp{campaigns - 1:04d}", f"camp{campaigns - 2:04d}"
    for name, path in [("index", "/"), ("campaign", f"/campaign/{last}"), ("compare", f"/compare/{prev}/{last}"),
                       ("trend", "/trend?scenario=mapsync&cell=fs%3Dext4%2Ccell%3D3"),
                       ("case", f"/case/{last}/case003")]:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            r = client.get(path)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        print(f"{name:9s} {path:45s} median {statistics.median(times) * 1000:7.1f} ms  ({len(r.content)} bytes)")
    store.close()


if __name__ == "__main__":
    main()
