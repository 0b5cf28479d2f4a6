"""Seed a results store with campaigns whose cells change between a baseline and a candidate.

Used by the compare, dashboard and browser tests; writes through the real ResultsStore API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.store import ResultsStore

# cell -> (expectation, baseline verdicts per crash point or None if absent, candidate verdicts or None)
PAIR: dict[str, tuple[str, list[str] | None, list[str] | None]] = {
    "fs=ext4,sync=on": ("PASS", ["PASS", "PASS"], ["PASS", "VIOLATION"]),        # regression
    "fs=ext4,sync=off": ("VIOLATION", ["VIOLATION"] * 2, ["VIOLATION"] * 2),    # unchanged
    "fs=xfs,sync=on": ("PASS", ["PASS", "VIOLATION"], ["PASS", "PASS"]),         # fixed
    "fs=xfs,sync=off": ("VIOLATION", None, ["VIOLATION", "VIOLATION"]),          # appeared
    "fs=ext2,sync=on": ("PASS", ["PASS", "PASS"], None),                        # disappeared
}


def case_id(cell: str, crash: int) -> str:
    return "c" + cell.replace("=", "").replace(",", "-") + f"-{crash}"


def add_campaign(store: ResultsStore, campaign_id: str, kernel: str, cells: dict[str, tuple[str, list[str]]],
                 run_root: Path, *, scenario: str = "mapsync") -> None:
    """A finished campaign: each cell's cases get the verdicts given, one attempt each, with artifacts."""
    cases: list[dict[str, Any]] = []
    for cell, (expect, verdicts) in cells.items():
        for crash in range(len(verdicts)):
            cases.append({"id": case_id(cell, crash), "cell_key": cell, "cell": {"key": cell}, "repeat": 0,
                          "crash_index": crash, "seed": 7 + crash, "expect": expect, "workload": "mapsync"})
    store.create_campaign(campaign_id=campaign_id, scenario_name=scenario, scenario_path=f"scenarios/{scenario}.toml",
                          scenario_text="name = 'mapsync'\n", scenario_hash="h", image_id=f"img-{kernel}",
                          kernel_version=kernel, accelerator="tcg", jobs=2, cases=cases)
    for cell, (_expect, verdicts) in cells.items():
        for crash, verdict in enumerate(verdicts):
            cid = case_id(cell, crash)
            run_dir = run_root / campaign_id / cid
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "recovery.console.log").write_text(f"[    0.1] booted {kernel}\n<{cid} console>\n")
            (run_dir / "fsck.txt").write_text(f"fsck of {cid}: clean\n")
            attempt = store.start_attempt(campaign_id, cid, run_dir)
            store.finish_attempt(attempt, {
                "verdict": verdict, "status": "complete", "error": None, "run_dir": str(run_dir),
                "findings": [{"oracle": "persistence", "verdict": verdict,
                              "summary": "2 acknowledged records lost" if verdict != "PASS" else "all records there",
                              "details": {}}],
                "timings": {"boot": 1.25, "workload": 2.5}}, final=True)
    store.set_campaign_status(campaign_id, "finished")


def seed_pair(store: ResultsStore, run_root: Path, baseline: str = "base1", candidate: str = "cand2") -> None:
    add_campaign(store, baseline, "6.1.0-13-amd64",
                 {c: (e, b) for c, (e, b, _) in PAIR.items() if b is not None}, run_root)
    add_campaign(store, candidate, "6.1.0-14-amd64",
                 {c: (e, v) for c, (e, _, v) in PAIR.items() if v is not None}, run_root)
