"""Campaigns end to end: parallel cells meet their expectations, Ctrl-C + resume, exact repro."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from lab.image.cache import Image
from lab.store.db import ResultsStore
from lab.store.records import CampaignRecord
from lab.vm.process import wait_until

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"


def pmemlab(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("data")
    return {**os.environ, "PMEMLAB_DATA": str(data), "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def smoke_campaign(image: Image, lab_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    junit = tmp_path_factory.mktemp("reports") / "smoke.xml"
    proc = pmemlab("campaign", "run", str(SMOKE), "-j", "2", "--json", "--junit", str(junit), env=lab_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"summary": json.loads(proc.stdout), "junit": junit, "stderr": proc.stderr}


def test_smoke_campaign_meets_expectations(smoke_campaign: dict[str, Any]) -> None:
    text = json.dumps(smoke_campaign["summary"])
    assert "VIOLATION" in text and "PASS" in text
    suite = ET.parse(smoke_campaign["junit"]).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == 2
    assert not suite.findall(".//failure") and not suite.findall(".//error")


def test_repro_reproduces_the_recorded_verdict(smoke_campaign: dict[str, Any], lab_env: dict[str, str]) -> None:
    listing = pmemlab("results", "list", "--json", env=lab_env)
    assert listing.returncode == 0, listing.stderr
    campaign_id = json.loads(listing.stdout)[0]["id"]
    shown = pmemlab("results", "show", campaign_id, "--json", env=lab_env)
    cases = json.loads(shown.stdout)["cases"]
    control = next(c for c in cases if c["expect"] == "VIOLATION")
    proc = pmemlab("repro", control["id"], "--times", "1", "--json", env=lab_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["recorded_verdict"] == "VIOLATION" and data["reproduced"] == 1


# The smoke scenario with slow records: a restored machine finishes a case in seconds, so the
# second case must take long enough to be interrupted mid-run (0.1 s per record, cut after ACK 30).
SLOW = SMOKE.read_text().replace("records = 40", "records = 40\ndelay_us = 100000").replace("ack = 20", "ack = 30")


def test_interrupt_then_resume_runs_no_case_twice(image: Image, tmp_path: Path) -> None:
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path), "NO_COLOR": "1"}
    slow = tmp_path / "slow-smoke.toml"
    slow.write_text(SLOW)
    assert "delay_us = 100000" in SLOW and "ack = 30" in SLOW
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "campaign", "run", str(slow), "-j", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        store = ResultsStore.open(f"sqlite:///{tmp_path}/results.db") if wait_until(
            lambda: (tmp_path / "results.db").exists(), 60) else None
        assert store is not None, "the campaign never created its database"

        def campaign() -> CampaignRecord | None:
            rows = store.list_campaigns()
            return store.get_campaign(rows[0].campaign.id) if rows else None

        def first_finished_second_running() -> bool:
            info = campaign()
            return info is not None and [c.status for c in info.cases] == ["finished", "running"]

        assert wait_until(first_finished_second_running, 180, interval=0.2), campaign()
        time.sleep(1.5)  # the second case's machine is restored and its workload is writing records
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 130, err[-2000:]
        assert "campaign resume" in err
        info = campaign()
        assert info is not None
        assert [c.status for c in info.cases] == ["finished", "interrupted"]
        campaign_id = info.id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    from tests.conftest import lab_qemu_processes
    assert wait_until(lambda: not lab_qemu_processes(), 15), lab_qemu_processes()

    resumed = pmemlab("campaign", "resume", campaign_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"1 of 2 cases left", resumed.stderr)
    info = store.get_campaign(campaign_id)
    assert [c.status for c in info.cases] == ["finished", "finished"]
    first, second = info.cases
    assert len(first.attempts) == 1, "a finished case must not run again on resume"
    assert second.latest is not None and second.latest.status == "finished"
    assert all(c.met_expectation for c in info.cases)
