"""Many crash points per workload run, and the proof that restored machines give the verdicts cold
boots give: the shipped mapsync scenario's eADR ext4 cells run on both paths, cell by cell."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from lab.campaign import CampaignContext, CaseOutcome, NoProgress, new_campaign_id, run_cases
from lab.cases import Case, expand
from lab.image.cache import Image
from lab.runner.machines import BootMode
from lab.scenario import Scenario, load_scenario, parse_scenario
from lab.store.db import ResultsStore
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict

REPO = Path(__file__).resolve().parents[2]

MANY_CUTS = b"""
[scenario]
name = "many-cuts-reduced"
description = "ext4, MAP_SYNC on and off, 40 records, a cut after every 8th ACK of one run"
workload = "mapsync"
seed = 3

[workload]
records = 40

[matrix]
fs = ["ext4"]
map_sync = [true, false]

[crash]
strategy = "every_nth_ack"
every = 8

[[expect]]
where = { map_sync = false }
verdict = "VIOLATION"

[[expect]]
verdict = "PASS"
"""


def run_scenario(scenario: Scenario, image: Image, accel: AccelVerdict, work: Path, boot: BootMode,
                 jobs: int = 2, keep: Callable[[Case], bool] = lambda _: True) -> list[CaseOutcome]:
    cases = [c for c in expand(scenario) if keep(c)]
    work.mkdir(parents=True, exist_ok=True)
    store = ResultsStore.open(f"sqlite:///{work}/results-{boot.value}.db")
    campaign_id = new_campaign_id()
    store.create_campaign(campaign_id=campaign_id, scenario_name=scenario.name, scenario_path=str(scenario.path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=image.id,
                          kernel_version=image.kernel_version, accelerator=accel.accel.value, jobs=jobs,
                          cases=[c.to_dict() for c in cases])
    ctx = CampaignContext(campaign_id, image, accel, store, work / f"runs-{boot.value}", boot=boot,
                          cuts_per_run=scenario.cuts_per_run)
    outcomes = run_cases(ctx, cases, jobs, NoProgress())
    store.close()
    assert len(outcomes) == len(cases) and not any(o.interrupted for o in outcomes)
    return outcomes


def test_one_workload_run_serves_every_crash_point_of_a_cell(image: Image, accel: AccelVerdict,
                                                             tmp_path: Path) -> None:
    scenario = parse_scenario(MANY_CUTS, tmp_path / "many-cuts.toml")
    outcomes = run_scenario(scenario, image, accel, tmp_path, BootMode.SNAPSHOT)
    by_cell: dict[str, list[CaseOutcome]] = {}
    for outcome in outcomes:
        by_cell.setdefault(outcome.case.cell_key, []).append(outcome)
    assert len(by_cell) == 2 and all(len(cell) == 5 for cell in by_cell.values())
    for cell, cell_outcomes in by_cell.items():
        results = [o.result for o in cell_outcomes]
        assert all(r is not None for r in results)
        cuts = [r.metrics["cut"] for r in results if r is not None]
        assert {c["workload_dir"] for c in cuts} == {cuts[0]["workload_dir"]}, "one workload run per cell"
        assert sorted(c["cut_index"] for c in cuts) == [0, 1, 2, 3, 4] and {c["cuts_in_run"] for c in cuts} == {5}
        durable = [c["durable"] for c in sorted(cuts, key=lambda c: c["cut_index"])]
        assert durable == sorted(durable) and durable[0] >= 8, durable  # each freeze knew at least its ACK
        for outcome in cell_outcomes:
            assert outcome.result is not None
            assert outcome.result.verdict is outcome.case.expect, (cell, outcome.result.to_dict())
        if "map_sync=false" in cell:  # the negative control is caught at every crash point, each alone
            assert all(r is not None and r.metrics["persistence"]["lost"] for r in results)
        run_dir = Path(results[0].run_dir) if results[0] is not None else None
        assert run_dir is not None and (run_dir / "workload.console.log").is_file()


@pytest.mark.timeout(900)
def test_restored_and_cold_machines_agree_cell_by_cell(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "mapsync.toml")
    # The eADR ext4 cells with flushing workloads, 4 of 14: MAP_SYNC on and off (smoke.toml's cells,
    # with more records), with and without preallocation. The boot path is what differs and cold
    # boots cost ~20 s each here. The ADR cells and the unflushed control run on the same machinery
    # and have their own tests; XFS's cold path is compared in test_libvirt_backend (libvirt boots cold).
    def keep(case: Case) -> bool:
        key = case.cell_key
        return "persistence=eadr" in key and "flush=auto" in key and "fs=ext4" in key

    verdicts: dict[BootMode, dict[str, set[Verdict]]] = {}
    for boot in (BootMode.SNAPSHOT, BootMode.COLD):
        cells: dict[str, set[Verdict]] = {}
        for outcome in run_scenario(scenario, image, accel, tmp_path / boot.value, boot, keep=keep):
            assert outcome.result is not None and outcome.result.boot == boot.value
            phases = {BootMode.SNAPSHOT: {"restore", "recovery_restore"}, BootMode.COLD: {"boot", "recovery_boot"}}
            assert phases[boot] <= set(outcome.result.timings), outcome.result.timings
            cells.setdefault(outcome.case.cell_key, set()).add(outcome.result.verdict)
        verdicts[boot] = cells
    assert verdicts[BootMode.SNAPSHOT] == verdicts[BootMode.COLD]
    assert set().union(*verdicts[BootMode.SNAPSHOT].values()) == {Verdict.PASS, Verdict.VIOLATION}, verdicts
