"""`pmemlab minimize` on a real failing case, real machines (restored from the ready snapshot).

The case: mapsync without MAP_SYNC on ext4, 16 records, cut after ACK 10, expecting PASS. It really
fails (VIOLATION: the acknowledged records' block allocations sit in the uncommitted journal the
cut loses), run once by a campaign. Minimized, it must come out smaller (an earlier cut and/or
fewer records), keep MAP_SYNC off (MAP_SYNC on passes: that step is dropped), and the written
scenario must fail the same way when a campaign runs it again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cli import cli
from lab.image.cache import Image

pytestmark = pytest.mark.timeout(420)

SCENARIO = """
[scenario]
name = "minimize-me"
description = "MAP_SYNC off, expected to keep every acknowledged record (it does not)"
workload = "mapsync"

[workload]
records = 16
map_sync = false

[matrix]
fs = ["ext4"]

[crash]
strategy = "after_ack"
ack = 10

[[expect]]
verdict = "PASS"
"""


def run_campaign(path: Path, db: str) -> tuple[str, str]:
    """Run a one-case scenario as a campaign: the case id and its stored verdict."""
    result = CliRunner().invoke(cli, ["campaign", "run", str(path), "--db", db, "-j", "1", "--json"])
    assert result.exit_code in (0, 1), result.output
    (case,) = json.loads(result.stdout)["cases"]
    return case["id"], case["verdict"]


def test_minimize_shrinks_a_real_failure_that_still_fails(image: Image, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'results.db'}"
    scenario = tmp_path / "minimize-me.toml"
    scenario.write_text(SCENARIO)
    case_id, verdict = run_campaign(scenario, db)
    assert verdict == "VIOLATION"
    output = tmp_path / "minimized.toml"
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["minimize", case_id, "--db", db, "-o", str(output), "--json"])
    seconds = time.monotonic() - started
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    small = found["smallest"]
    print(f"minimize: {len(found['steps'])} steps, {found['runs']} runs, {seconds:.1f} s: "
          f"{[(s['what'], s['verdicts'], s['kept']) for s in found['steps']]} -> {small}")
    assert not found["interrupted"] and all(len(s["verdicts"]) == 1 for s in found["steps"])
    assert small["params"]["map_sync"] is False  # it is the bug: putting it back to default passes
    assert any(s["what"].startswith("map_sync") and s["verdicts"] == ["PASS"] and not s["kept"]
               for s in found["steps"])
    ack, records = small["crash"]["after_ack"], small["params"]["records"]
    assert (ack, records) < (10, 16) and ack <= 10 and records <= 16  # smaller in what it cuts or writes
    kept = [s for s in found["steps"] if s["kept"]]
    assert kept and all(s["verdicts"] == ["VIOLATION"] for s in kept)
    # The written scenario, run again by a campaign: the same failure.
    assert "map_sync = false" in output.read_text()
    _again_id, again = run_campaign(output, db)
    assert again == "VIOLATION"
