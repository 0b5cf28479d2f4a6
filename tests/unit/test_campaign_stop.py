"""The campaign stops cleanly when the disk fills: nothing started past it, the rest left for resume."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import lab.campaign as campaign
from lab.campaign import CampaignContext, NoProgress, disk_has_room, run_cases
from lab.cases import expand
from lab.scenario import load_scenario
from lab.store.db import ResultsStore


def test_low_disk_stops_before_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(campaign, "MIN_FREE_BYTES", shutil.disk_usage(tmp_path).free * 10)
    started: list[Any] = []
    monkeypatch.setattr(campaign, "run_case", lambda *a, **k: started.append(a))
    store = ResultsStore.open(f"sqlite:///{tmp_path}/results.db")
    store.create_campaign(campaign_id="c1", scenario_name="s", scenario_path="s.toml", scenario_text="", scenario_hash="h",
                          image_id="i", kernel_version="k", accelerator="tcg", jobs=2, cases=[])
    ctx = CampaignContext("c1", image=None, accel=None, store=store, runs_base=tmp_path / "runs")  # type: ignore[arg-type]
    cases = expand(load_scenario(Path(__file__).parents[2] / "scenarios" / "smoke.toml"))
    outcomes = run_cases(ctx, cases, 2, NoProgress())
    assert outcomes == [] and started == []
    assert ctx.stop.is_set() and "GiB free" in ctx.stop_reason
    assert store.get_campaign("c1").status == "interrupted"


def test_disk_has_room_walks_up_to_an_existing_directory(tmp_path: Path) -> None:
    assert disk_has_room(tmp_path / "not" / "yet" / "made") == (shutil.disk_usage(tmp_path).free
                                                                 >= campaign.MIN_FREE_BYTES)
