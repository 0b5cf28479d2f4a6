"""The shipped scenarios' case ids and seeds, pinned: stored results, `campaign resume` and `repro` find
cases by them, so a change must be deliberate.

Regenerate after an intended change (a new or edited scenario, a new id or seed formula):
    PMEMLAB_REGEN_GOLDEN=1 pytest tests/unit/test_scenario_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lab.cases import expand
from lab.paths import scenarios_dir
from lab.scenario import load_scenario

GOLDEN = Path(__file__).parent / "golden" / "scenarios"
SCENARIOS = sorted(scenarios_dir().glob("*.toml"))
REGEN = "PMEMLAB_REGEN_GOLDEN=1 pytest tests/unit/test_scenario_golden.py"


def pinned(path: Path) -> str:
    """One line per case, in expansion order: a diff shows which cases moved."""
    lines = [json.dumps({"id": c.id, "seed": c.seed, "cell": c.cell_key, "repeat": c.repeat,
                         "crash_index": c.crash_index}) for c in expand(load_scenario(path))]
    return "[\n" + ",\n".join(lines) + "\n]\n"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_case_ids_and_seeds_match_golden(path: Path) -> None:
    got = pinned(path)
    golden = GOLDEN / f"{path.stem}.json"
    if os.environ.get("PMEMLAB_REGEN_GOLDEN"):
        golden.write_text(got)
    assert golden.is_file(), f"scenarios/{path.name} is new: pin its case ids and seeds with {REGEN}"
    assert golden.read_text() == got, (
        f"the case ids or seeds of scenarios/{path.name} changed (any byte of the file changes the ids): stored "
        f"results and 'pmemlab repro' of earlier runs no longer match it. If intended, regenerate: {REGEN}")


def test_every_golden_has_its_scenario() -> None:
    stale = sorted(g.name for g in GOLDEN.glob("*.json") if not (scenarios_dir() / f"{g.stem}.toml").is_file())
    assert stale == [], f"golden files without a scenario (renamed or removed?): {stale}; delete them"


def test_shipped_scenarios_are_all_pinned() -> None:
    assert len(SCENARIOS) >= 8  # the glob found the shipped files, so the parametrized test is not empty
