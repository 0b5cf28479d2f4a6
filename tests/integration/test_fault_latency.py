"""fault-latency on real machines: a reduced table (ext4, 64 pages, prealloc x MAP_SYNC, no load).

The absolute numbers are the emulator's; what must hold even under TCG is the
shape of the cover letter: a MAP_SYNC fault that allocates a block waits for
a journal commit, so on an empty file MAP_SYNC is slower than a plain mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.report import latency
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.workloads.base import CheckSpec
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.workloads.fault_latency import KIND, FaultLatencyParams

PAGES = 64
# The default shape (2 vCPUs), not the scenario's 1: under TCG the idle second vCPU makes every MAP_SYNC
# commit cost milliseconds, which keeps the average comparison far from the emulator's outliers (one 10 ms
# hiccup in 64 plain samples adds 160 us to their average; 1 vCPU MAP_SYNC averages only ~230 us).


def _run(params: FaultLatencyParams, image: Image, accel: AccelVerdict, run_dir: Path) -> WorkloadResult:
    check = KIND.make_check(CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, params, None, MachineShape(), seed=1))
    return KIND.run(check, image, accel, run_dir, RunHooks())


@pytest.fixture(scope="module")
def table(image: Image, accel: AccelVerdict,
          tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[bool, bool], WorkloadResult]:
    out = {}
    for prealloc in (True, False):
        for map_sync in (False, True):
            run_dir = tmp_path_factory.mktemp(f"fl-{'prealloc' if prealloc else 'empty'}-{map_sync}")
            out[(prealloc, map_sync)] = _run(FaultLatencyParams(pages=PAGES, prealloc=prealloc, map_sync=map_sync),
                                             image, accel, run_dir)
    return out


def test_every_cell_is_measured(table: dict[tuple[bool, bool], WorkloadResult]) -> None:
    for (prealloc, map_sync), result in table.items():
        assert result.verdict is Verdict.PASS, (prealloc, map_sync, result.error, result.findings)
        assert result.kernel_problems == []
        m = result.metrics
        s = m["summary"]
        assert s["count"] == PAGES
        assert 0 < s["min_us"] <= s["p50_us"] <= s["max_us"] and s["min_us"] <= s["avg_us"] <= s["max_us"]
        assert sum(b["count"] for b in m["histogram"]) == PAGES
        assert len(m["samples_ns"]) == PAGES
        assert m["faults"] >= PAGES, "every first store must take its own fault (no huge mapping)"
        assert m["cell"] == {"fs": "ext4", "prealloc": prealloc, "map_sync": map_sync, "background_copy": False,
                             "pages": PAGES}
        stored = json.loads((result.run_dir / "result.json").read_text())
        assert stored["verdict"] == "PASS" and stored["metrics"]["summary"] == s


def test_map_sync_on_an_empty_file_waits_for_the_commit(table: dict[tuple[bool, bool], WorkloadResult]) -> None:
    sync, plain = table[(False, True)].metrics["summary"], table[(False, False)].metrics["summary"]
    assert sync["avg_us"] > plain["avg_us"], (sync, plain)
    assert sync["p50_us"] > plain["p50_us"], (sync, plain)


def test_the_report_renders_the_table(table: dict[tuple[bool, bool], WorkloadResult], tmp_path: Path) -> None:
    cells = latency.cells_from_results([r.to_dict() for r in table.values()])
    assert len(cells) == 4 and all(c.measured for c in cells)
    print("\n" + latency.render_text(cells))  # visible with -s: the table of this machine
    assert len(latency.ratios(cells)) == 2
    cases = [{"case": {}, "verdict": "PASS", "latest_attempt": {"result": r.to_dict()}} for r in table.values()]
    pytest.importorskip("matplotlib")
    assert "data:image/png;base64," in latency.render_html(cases, tmp_path)


def test_background_copy_runs_through_the_measurement(image: Image, accel: AccelVerdict, run_dir: Path) -> None:
    result = _run(FaultLatencyParams(pages=PAGES, background_copy=True), image, accel, run_dir)
    assert result.verdict is Verdict.PASS, (result.error, result.findings)
    assert result.metrics["background"]["killed"] is True  # still copying when the measurement ended
    assert result.metrics["summary"]["count"] == PAGES
    assert "background" in result.timings
