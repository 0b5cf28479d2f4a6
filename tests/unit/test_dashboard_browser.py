"""The dashboard in a real browser: Playwright driving Debian's chromium against `pmemlab serve`.

`playwright install` cannot download browsers here: the test points Playwright at /usr/bin/chromium
(bootstrap.sh installs it). The screenshot of the comparison page is kept in test-artifacts/
(or $PMEMLAB_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright", reason="the browser test needs pytest-playwright (the 'test' extra)")
pytest.importorskip("fastapi", reason="the dashboard needs the 'web' extra")

from lab.store import ResultsStore  # noqa: E402
from tests.seed import seed_pair  # noqa: E402
from tests.unit.test_dashboard import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PMEMLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: bootstrap.sh installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """`pmemlab serve` on a free localhost port over a seeded store; stopped by pid."""
    url = f"sqlite:///{tmp_path}/results.db"
    with ResultsStore.open(url) as store:
        seed_pair(store, tmp_path / "runs")
    port = free_port()
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "serve", "--db", url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "pmemlab serve did not answer within 30 s"
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_regression_is_highlighted_in_the_browser(page: Any, server: str) -> None:
    page.goto(server + "/")
    page.click("text=vs previous")  # the index links the candidate to its baseline
    assert page.url.endswith("/compare/base1/cand2")
    row = page.locator('tr[data-cell="fs=ext4,sync=on"]')
    assert row.get_attribute("class") == "regression"
    assert row.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(255, 214, 214)"
    fixed = page.locator('tr[data-cell="fs=xfs,sync=on"]')
    assert fixed.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(220, 245, 220)"
    unchanged = page.locator('tr[data-cell="fs=ext4,sync=off"]')
    assert unchanged.evaluate("el => getComputedStyle(el).backgroundColor") == "rgba(0, 0, 0, 0)"
    assert page.locator("#counts .badge").inner_text() == "1 regression"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-regression.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
    # From the regression to the case page: its console log and fsck output are there.
    row.locator("a", has_text="cfsext4-syncon-1").click()
    assert "<cfsext4-syncon-1 console>" in page.locator("pre.console").first.inner_text()
    assert "fsck of cfsext4-syncon-1: clean" in page.locator("pre.fsck").inner_text()
