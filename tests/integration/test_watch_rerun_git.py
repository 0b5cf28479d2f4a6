"""The real parts behind watch's re-runs and git kernels, each once and cheaply:

- a regression's failing case re-run for real (`pmemlab repro --record`, one smoke case under QEMU):
  the stored first run is seeded as a VIOLATION of a case that really passes, so the real re-run
  passes and the cell is called flaky, not a regression;
- a git source's built kernel handed to the image builder (the 'build' copies Debian's kernel:
  building a real Linux tree is far too slow here).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.cases import expand
from lab.compare import Change, compare
from lab.image.builder import build
from lab.image.cache import Image
from lab.image.kernel import user_kernel
from lab.known_issues import KnownIssues
from lab.paths import cache_dir, images_dir
from lab.rerun import confirm_failures, repro_runner
from lab.scenario import load_scenario
from lab.store import ResultsStore
from lab.watch.gitkernel import build_git_kernel, git_version
from lab.watch.plan import GitKernel
from tests.unit.test_watch_git_loop import copy_build, make_tree

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _store_campaign(store: ResultsStore, ident: str, image: Image, verdicts: dict[str, str], tmp: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "smoke.toml")
    cases = expand(scenario)
    store.create_campaign(campaign_id=ident, scenario_name=scenario.name, scenario_path=str(scenario.path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=image.id,
                          kernel_version=image.kernel_version, accelerator="tcg", jobs=1,
                          cases=[c.to_dict() for c in cases])
    for case in cases:
        run_dir = tmp / ident / case.id
        run_dir.mkdir(parents=True)
        attempt = store.start_attempt(ident, case.id, run_dir)
        store.finish_attempt(attempt, {"verdict": verdicts[case.cell_key], "run_dir": str(run_dir)}, final=True)
    store.set_campaign_status(ident, "finished")


@pytest.mark.timeout(300)
def test_a_real_rerun_that_passes_makes_the_cell_flaky(image: Image, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/results.db"
    with ResultsStore.open(db) as store:
        keys = sorted({c.cell_key for c in expand(load_scenario(REPO / "scenarios" / "smoke.toml"))})
        sync_on = next(k for k in keys if "map_sync=true" in k)
        sync_off = next(k for k in keys if "map_sync=false" in k)
        _store_campaign(store, "base", image, {sync_on: "PASS", sync_off: "VIOLATION"}, tmp_path)
        _store_campaign(store, "cand", image, {sync_on: "VIOLATION", sync_off: "VIOLATION"}, tmp_path)
        first = compare(store.get_campaign("base"), store.get_campaign("cand"))
        assert {c.cell_key: c.change for c in first.cells}[sync_on] is Change.REGRESSION
        started = time.monotonic()
        outcome = confirm_failures(store, first, KnownIssues(()), 2, repro_runner(db, "cand"), print)
        print(f"one real re-run: {time.monotonic() - started:.1f} s")
        assert outcome.runs == 1 and outcome.failed_runs == 0  # it passed at once: no second re-run
        assert {c.cell_key: c.change for c in outcome.comparison.cells}[sync_on] is Change.FLAKY
        [case] = [c for c in store.get_campaign("cand").cases if c.cell_key == sync_on]
        assert case.verdict == "VIOLATION" and [(a.rerun, a.verdict) for a in case.attempts] == [
            (False, "VIOLATION"), (True, "PASS")]
        assert case.reruns[0].timings and Path(case.reruns[0].run_dir).is_dir()


@pytest.mark.timeout(300)
def test_a_git_kernel_becomes_an_image(image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = str(image.manifest["kernel_source"])  # debian:PKG=VERSION
    package, _, version = source.removeprefix("debian:").partition("=")
    debian = cache_dir() / "kernels" / f"{package}_{version}"
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))  # the built kernel and the image: here
    tree = make_tree(tmp_path)
    git = GitKernel(tree, "main", copy_build(debian, tmp_path / "builds"))
    out = build_git_kernel("next", git, git_version(git))
    kernel = user_kernel(out / "bzImage", out / "modules", out / ".config")
    result = build(images_dir() / "debian12-pmem.toml", tmp_path / "cache", kernel=kernel, ref="next-ref")
    assert result.built and result.image.kernel_version == image.kernel_version
    assert result.image.manifest["kernel_source"].startswith("user:")
