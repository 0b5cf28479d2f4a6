"""The lab's own cost per case on a TLS cluster beside the thread pool (median of N rounds, printed).

    PYTHONPATH=. python -m tests.cluster_bench [N] [--json]

Each round: `cluster up --local 1 --vm 1` (timed: scheduler, TLS credentials, worker joined), then the
same 20 cases of the sleep kind (tests/unit/cluster_kind, 0.5 s each, no machine) on one slot through
the thread pool and through the cluster, then `cluster down`. A case's overhead is its wall time
outside its machine phases (CaseOutcome.overhead_s). Not a test: a measurement for the closing note.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

SLEEP_S = "0.5"
ROUNDS_OF_SMOKE = 10  # scenarios/smoke.toml's two cells, ten times over: 20 cases


def _cases(work: Path) -> list[Any]:
    """smoke.toml's cases, repeated, on the sleep kind (its matrix and expectations as they are)."""
    from lab.cases import expand
    from lab.paths import scenarios_dir
    from lab.scenario import parse_scenario
    from tests.unit import cluster_kind

    text = (scenarios_dir() / "smoke.toml").read_bytes()
    assert b"\nrepeat = 1\n" in text, "scenarios/smoke.toml changed its repeat line"
    scenario = parse_scenario(text.replace(b"\nrepeat = 1\n", f"\nrepeat = {ROUNDS_OF_SMOKE}\n".encode()),
                              work / "smoke.toml")
    return [replace(c, workload=cluster_kind.NAME) for c in expand(scenario)]


def _round(work: Path) -> dict[str, float]:
    from lab.campaign import CampaignContext, NoProgress, run_cases
    from lab.cluster import local
    from lab.cluster.client import ClusterExecutor, connect
    from lab.image.cache import resolve
    from lab.paths import cache_dir
    from lab.store.db import ResultsStore
    from lab.vm.accel import AccelVerdict
    from lab.vm.spec import Accel
    from tests.unit import cluster_kind

    image = resolve(cache_dir())
    cases = _cases(work)
    medians: dict[str, float] = {}
    with ResultsStore.open(f"sqlite:///{work}/results.db") as store:
        def campaign(name: str, client: object | None = None) -> float:
            store.create_campaign(campaign_id=name, scenario_name="b", scenario_path="b.toml", scenario_text="",
                                  scenario_hash="h", image_id=image.id, kernel_version="k", accelerator="tcg",
                                  jobs=1, cases=[c.to_dict() for c in cases])
            ctx = CampaignContext(name, image, AccelVerdict(Accel.TCG, "bench"), store, work / "runs")
            executor = None
            if client is not None:
                executor = ClusterExecutor(ctx, client, "tcg")  # type: ignore[arg-type]
                executor.prepare(image.id)
            outcomes = run_cases(ctx, cases, 1, NoProgress(), executor=executor)
            assert all(o.result is not None and o.result.verdict is o.case.expect for o in outcomes)
            return statistics.median(o.overhead_s for o in outcomes)

        cluster_kind.register()
        try:
            medians["thread_pool_overhead_s"] = campaign("pool")
            started = time.monotonic()
            cluster = local.up(1, 1, extra_env={"PMEMLAB_TEST_SLEEP_S": SLEEP_S})
            medians["cluster_up_s"] = time.monotonic() - started
            try:
                with connect(cluster.address) as client:
                    client.register_plugin(cluster_kind.SleepKind())
                    medians["tls_cluster_overhead_s"] = campaign("tls", client)
            finally:
                started = time.monotonic()
                local.down()
                medians["cluster_down_s"] = time.monotonic() - started
        finally:
            cluster_kind.unregister()
    return medians


def main(argv: list[str]) -> int:
    rounds = int(next((a for a in argv if a.isdigit()), "3"))
    os.environ["PMEMLAB_TEST_SLEEP_S"] = SLEEP_S
    results = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="pmemlab-cluster-bench-") as tmp:
            os.environ["PMEMLAB_DATA"] = tmp
            results.append(_round(Path(tmp)))
    summary = {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
    summary["rounds"] = rounds
    print(json.dumps(summary) if "--json" in argv else
          "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
