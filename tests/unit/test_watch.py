"""pmemlab watch: plan validation, kernel-source versions, the plan lock, the nothing-new path, --dry-run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.store import ResultsStore
from lab.watch.plan import load_plan
from lab.watch.run import WatchBusy, plan_lock
from lab.watch.sources import directory_version

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"


def write_plan(tmp: Path, body: str = "") -> Path:
    kernel_dir = tmp / "kernel"
    kernel_dir.mkdir(exist_ok=True)
    if not (kernel_dir / "bzImage").exists():
        (kernel_dir / "bzImage").write_bytes(b"\x00kernel v1" * 1000)
    plan = tmp / "plan.toml"
    plan.write_text(body or f'name = "nightly"\nscenarios = ["{SMOKE}"]\ndb = "sqlite:///{tmp}/results.db"\n'
                            f'[[kernel]]\nname = "mine"\ndirectory = "{kernel_dir}"\n')
    return plan


def test_a_plan_loads(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path))
    assert plan.name == "nightly" and plan.scenarios == (SMOKE,)
    assert plan.kernels[0].directory == tmp_path / "kernel" and plan.db and plan.db.startswith("sqlite")


@pytest.mark.parametrize(("body", "where"), [
    ('scenarios = ["x"]\n[[kernel]]\nname = "a"\ndirectory = "/d"\n', "name: Field required"),
    ('name = "n"\nscenarios = []\n[[kernel]]\nname = "a"\ndirectory = "/d"\n', "scenarios: List should have"),
    ('name = "n"\nscenarios = ["SMOKE"]\n', "kernel: Field required"),
    ('name = "n"\nscenarios = ["SMOKE"]\n[[kernel]]\nname = "a"\n', "kernel[0]: give exactly one of"),
    ('name = "n"\nscenarios = ["SMOKE"]\n[[kernel]]\nname = "a"\ndirectory = "/d"\ndebian_package = "p"\n',
     "kernel[0]: give exactly one of"),
    ('name = "n/../x"\nscenarios = ["SMOKE"]\n[[kernel]]\nname = "a"\ndirectory = "/d"\n', "name: String should"),
    ('name = "n"\nscenarios = ["SMOKE"]\njobz = 2\n[[kernel]]\nname = "a"\ndirectory = "/d"\n', "jobz: Extra"),
    ('name = "n"\nscenarios = ["missing.toml"]\n[[kernel]]\nname = "a"\ndirectory = "/d"\n',
     "scenarios[0]: no such file"),
    ('name = "n"\nscenarios = ["SMOKE"]\n[[kernel]]\nname = "a"\ndirectory = "/d"\n[[kernel]]\nname = "a"\n'
     'directory = "/e"\n', "kernel: names must be distinct"),
    ('name = "n"\n[[kernel]\n', "not valid TOML"),
])
def test_bad_plans_name_the_field(tmp_path: Path, body: str, where: str) -> None:
    plan = write_plan(tmp_path, body.replace("SMOKE", str(SMOKE)))
    with pytest.raises(ConfigError) as info:
        load_plan(plan)
    message = str(info.value)
    assert message.startswith(f"{plan}: ") and where in message and "\n" not in message


def test_directory_version_follows_the_kernel(tmp_path: Path) -> None:
    d = tmp_path / "out"
    d.mkdir()
    with pytest.raises(ConfigError, match="no bzImage"):
        directory_version(d)
    (d / "bzImage").write_bytes(b"one")
    first = directory_version(d)
    assert first == directory_version(d) and first.startswith("sha256:")
    (d / "bzImage").write_bytes(b"two")
    second = directory_version(d)
    assert second != first
    (d / "modules" / "lib").mkdir(parents=True)
    (d / "modules" / "lib" / "nd_pmem.ko").write_bytes(b"m")
    assert directory_version(d) != second


def test_the_plan_lock_is_exclusive_and_freed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    plan = load_plan(write_plan(tmp_path))
    with plan_lock(plan) as path:
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(WatchBusy, match=rf"plan nightly \(pid {os.getpid()}\) holds"):
            with plan_lock(plan):
                pass
    with plan_lock(plan):  # released
        pass


def pmemlab(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PMEMLAB_DATA": str(tmp / "data"), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def test_nothing_new_is_quick_and_does_nothing(tmp_path: Path) -> None:
    plan_path = write_plan(tmp_path)
    plan = load_plan(plan_path)
    assert plan.db and plan.kernels[0].directory
    with ResultsStore.open(plan.db) as store:
        store.watch_record_seen("nightly", "mine", directory_version(plan.kernels[0].directory))
    started = time.monotonic()
    proc = pmemlab("watch", str(plan_path), "--once", tmp=tmp_path)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "mine: sha256:" in proc.stdout and "already ran (no new kernel)" in proc.stdout
    assert wall < 20, wall
    with ResultsStore.open(plan.db) as store:
        assert store.list_campaigns() == []


def test_dry_run_sees_a_new_kernel_and_records_nothing(tmp_path: Path) -> None:
    plan_path = write_plan(tmp_path)
    plan = load_plan(plan_path)
    assert plan.db and plan.kernels[0].directory
    with ResultsStore.open(plan.db) as store:
        store.watch_record_seen("nightly", "mine", "sha256:old")
    proc = pmemlab("watch", str(plan_path), "--once", "--dry-run", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mine: new kernel sha256:" in proc.stdout and "(last: sha256:old)" in proc.stdout
    with ResultsStore.open(plan.db) as store:
        assert store.watch_last_seen("nightly", "mine") == "sha256:old"
        assert store.list_campaigns() == []


def test_a_second_watch_does_not_start_while_one_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    plan_path = write_plan(tmp_path)
    with plan_lock(load_plan(plan_path)):
        proc = pmemlab("watch", str(plan_path), "--once", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not starting: another 'pmemlab watch' of plan nightly" in proc.stdout
    assert "new kernel" not in proc.stdout and "already ran" not in proc.stdout


def test_watch_needs_once(tmp_path: Path) -> None:
    proc = pmemlab("watch", str(write_plan(tmp_path)), tmp=tmp_path)
    assert proc.returncode == 2 and "--once" in proc.stderr


# -- schedule install ---------------------------------------------------------
def test_schedule_units_and_crontab_line(tmp_path: Path) -> None:
    from lab.watch.schedule import crontab_line, parse_at, render_units

    plan = write_plan(tmp_path)
    units = render_units("nightly", plan, "2:05", {"PMEMLAB_DATA": "/srv/lab data"})
    assert units.name == "pmemlab-watch-nightly"
    assert "OnCalendar=*-*-* 02:05:00\nPersistent=true\n" in units.timer and "WantedBy=timers.target" in units.timer
    assert "Type=oneshot" in units.service and "Environment='PMEMLAB_DATA=/srv/lab data'" in units.service
    assert f"-m lab.cli watch {plan.resolve()} --once" in units.service
    line = crontab_line(plan, "23:59", {})
    assert line.startswith("59 23 * * * ") and line.endswith(f"watch {plan.resolve()} --once")
    for bad in ("24:00", "2", "02:60", "noon"):
        with pytest.raises(ConfigError, match=rf"--at '{bad}': expected HH:MM"):
            parse_at(bad)


def test_schedule_install_writes_units(tmp_path: Path) -> None:
    plan = write_plan(tmp_path)
    units = tmp_path / "units"
    proc = pmemlab("schedule", "install", str(plan), "--at", "03:30", "--unit-dir", str(units), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in units.iterdir()) == ["pmemlab-watch-nightly.service", "pmemlab-watch-nightly.timer"]
    assert "OnCalendar=*-*-* 03:30:00" in (units / "pmemlab-watch-nightly.timer").read_text()
    proc = pmemlab("schedule", "install", str(plan), "--at", "3pm", "--unit-dir", str(units), tmp=tmp_path)
    assert proc.returncode == 2 and "--at '3pm': expected HH:MM" in proc.stderr


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd runs here: install would enable units")
def test_schedule_install_without_systemd_prints_the_crontab_line(tmp_path: Path) -> None:
    plan = write_plan(tmp_path)
    proc = pmemlab("schedule", "install", str(plan), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("0 2 * * * ")
    assert "crontab" in proc.stdout
