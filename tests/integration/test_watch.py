"""pmemlab watch --once end to end: Debian's kernel as the source, the smoke scenario as the plan.

First run: a new kernel, the campaign runs, no baseline yet. Second run: nothing new (seconds).
A forgotten version (as if apt had a new kernel): the campaign runs again and is compared with the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.image.cache import Image
from lab.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
pytestmark = pytest.mark.integration


def watch(plan: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "watch", str(plan), "--once"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    return proc, time.monotonic() - started


@pytest.mark.timeout(600)
def test_watch_once_runs_new_kernels_only_and_compares(image: Image, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/results.db"
    plan = tmp_path / "plan.toml"
    plan.write_text(f'name = "nightly"\nscenarios = ["{SMOKE}"]\njobs = 2\ndb = "{db}"\nreport_dir = "reports"\n'
                    '[[kernel]]\nname = "debian"\ndebian_package = "linux-image-amd64"\n')
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path / "data"), "NO_COLOR": "1"}

    first, _ = watch(plan, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "debian: new kernel linux-image-" in first.stdout and "FIRST RUN of scenario" in first.stdout

    again, wall = watch(plan, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already ran (no new kernel)" in again.stdout and "campaign" not in again.stdout
    print(f"watch --once with nothing new: {wall:.2f} s")
    assert wall < 30

    with ResultsStore.open(db) as store:
        store.watch_record_seen("nightly", "debian", "linux-image-older=0")
    third, _ = watch(plan, env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "NO CHANGE since the baseline" in third.stdout
    with ResultsStore.open(db) as store:
        campaigns = store.list_campaigns()
        assert len(campaigns) == 2 and all(c.met == c.cases == 2 for c in campaigns)
        assert store.watch_last_seen("nightly", "debian", ).startswith("linux-image-")  # type: ignore[union-attr]
    reports = sorted((tmp_path / "reports").glob("*.txt"))
    assert [r.stem for r in reports] == sorted(c.campaign.id for c in campaigns)
