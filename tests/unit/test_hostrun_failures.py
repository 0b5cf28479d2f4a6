"""Remote runs fail as one INFRA-ERROR, never a traceback or a hang: a failure on the controller's side of
a task, an exit status that never comes; the ADR QEMU is checked where the attempt runs; a cluster
worker's directories come from the same functions as a --host run's. Nothing here opens SSH."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lab.campaign import CampaignContext, NoProgress, Task
from lab.cases import Case, expand
from lab.errors import ConfigError
from lab.hostrun import executor as executor_mod
from lab.hostrun import single
from lab.hosts import inventory, link, remote_attempt
from lab.hosts.remote_attempt import HostLost, cache_there, data_there
from lab.hosts.ssh import HostConnection, HostError
from lab.image.cache import Image, set_ref
from lab.paths import scenarios_dir
from lab.runner.machines import BootMode
from lab.scenario import load_scenario
from lab.verdict import Verdict
from lab.vm.backend import BackendChoice

IMAGE = Image("0123456789abcdef", Path("/nonexistent"), {})


def _host(tmp_path: Path, **extra: str) -> inventory.Host:
    return inventory.validate("lab1", {"target": "lab@10.0.0.5:2222", "key": str(tmp_path / "key"),
                                       "known_hosts": str(tmp_path / "known_hosts"), **extra}, "t")


class _NoSSH:
    def __init__(self, host: inventory.Host) -> None:
        self.host = host

    def __enter__(self) -> "_NoSSH":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _cases(n: int) -> list[Case]:
    return expand(load_scenario(scenarios_dir() / "smoke.toml"))[:n]


@pytest.mark.parametrize("failure, named", [
    (subprocess.TimeoutExpired(["tar", "-xf", "-"], 60), "TimeoutExpired"),  # tar here stuck at the end of a fetch
    (OSError(28, "No space left on device"), "OSError"),
    ({"host": "lab1"}, "KeyError"),  # an outcome without results
    ({"host": "lab1", "results": []}, "ValueError"),  # fewer results than cases
])
def test_a_failure_here_is_the_tasks_infra_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Any,
                                                 named: str) -> None:
    def attempt_there(*_: Any, **__: Any) -> dict[str, Any]:
        if isinstance(failure, BaseException):
            raise failure
        return dict(failure)

    monkeypatch.setattr(executor_mod, "HostConnection", _NoSSH)
    monkeypatch.setattr(executor_mod, "run_attempt", attempt_there)
    ctx = CampaignContext("c1", image=IMAGE, accel=None, store=None, runs_base=tmp_path)  # type: ignore[arg-type]
    cases = _cases(2)
    task = Task("group", cases, [1, 1], [1, 1])
    ex = executor_mod.HostExecutor(ctx, _host(tmp_path), "tcg")
    try:
        done = ex._run(task, NoProgress())
    finally:
        ex.close()
    assert done.results is not None and len(done.results) == 2 and not done.interrupted
    assert done.lost == "" and done.host == "lab1"  # not "host lost": the host did nothing wrong
    for result, name in zip(done.results, task.run_names("c1")):
        assert result.verdict is Verdict.INFRA_ERROR and result.run_dir == tmp_path / name
        assert result.error is not None and "'lab1'" in result.error and named in result.error
        assert "host lost" not in result.error


def test_a_single_runs_failure_here_is_an_infra_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def attempt_there(*_: Any, **__: Any) -> dict[str, Any]:
        raise subprocess.TimeoutExpired(["tar"], 60)

    monkeypatch.setattr(single, "HostConnection", _NoSSH)
    monkeypatch.setattr(single, "push_image", lambda conn, image: type("P", (), {"sent": False, "seconds": 0.0})())
    monkeypatch.setattr(single, "run_attempt", attempt_there)
    (case,) = _cases(1)
    run_dir = tmp_path / "runs" / "r1"
    result = single.run_on_host(_host(tmp_path), case, IMAGE, "tcg", BootMode.SNAPSHOT, BackendChoice(), run_dir,
                                lambda _: None)
    assert result.verdict is Verdict.INFRA_ERROR
    assert result.error is not None and "'lab1'" in result.error and "TimeoutExpired" in result.error
    assert json.loads((run_dir / "result.json").read_text())["error"] == result.error


class _SilentChannel:
    """Output at EOF at once, and an exit status that never arrives (a link gone between the two)."""

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self.asked_status = False

    def settimeout(self, _: float) -> None:
        pass

    def exec_command(self, _: str) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def sendall(self, _: bytes) -> None:
        pass

    def recv(self, _: int) -> bytes:
        return b""

    recv_stderr = recv

    def recv_exit_status(self) -> int:
        self.asked_status = True  # paramiko's waits with no deadline: only after status_event
        return 0

    def close(self) -> None:
        pass


def test_an_attempts_missing_exit_status_is_host_lost(tmp_path: Path) -> None:
    channel = _SilentChannel()
    conn = type("C", (), {"host": _host(tmp_path), "open_pty": lambda self, argv: channel})()
    started = time.monotonic()
    with pytest.raises(HostLost, match="host lost: lab1 .no exit status"):
        remote_attempt._follow(conn, ["pmemlab", "attempt"], lambda _: None, None, 60.0, 0.3)  # type: ignore[arg-type]
    assert time.monotonic() - started < 10 and not channel.asked_status


def test_a_commands_missing_exit_status_is_a_host_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    channel = _SilentChannel()
    conn = HostConnection(_host(tmp_path))
    monkeypatch.setattr(conn, "_channel", lambda timeout: channel)
    started = time.monotonic()
    with pytest.raises(HostError, match=r"host 'lab1': uname sent no exit status within 0 s"):
        conn.run(["uname", "-r"], timeout=0.3)
    assert time.monotonic() - started < 10 and not channel.asked_status


def test_a_cluster_workers_directories_are_a_host_runs(tmp_path: Path) -> None:
    from lab.cluster import remote

    fake = tmp_path / "fake-pmemlab"  # records the environment it was started with, then exits
    seen = tmp_path / "seen.json"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n%s\\n%s\\n' \"$PMEMLAB_CACHE\" \"$PMEMLAB_DATA\" \"$*\" > {seen}.tmp\n"
                    f"mv {seen}.tmp {seen}\n")
    fake.chmod(0o755)
    host = _host(tmp_path, workdir=str(tmp_path / "work"), pmemlab=str(fake))
    started: list[list[str]] = []

    class Conn:
        def run(self, argv: list[str], timeout: float, check: bool = True) -> Any:
            started.append(argv)
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            return type("R", (), {"ok": out.returncode == 0, "stdout": out.stdout, "stderr": out.stderr,
                                  "exit_code": out.returncode})()

    Conn.host = host  # type: ignore[attr-defined]
    pid = remote.start_worker(Conn(), "tcp://127.0.0.1:1", 2)  # type: ignore[arg-type]
    until = time.monotonic() + 30
    while not seen.exists() and time.monotonic() < until:
        time.sleep(0.05)
    assert pid > 0 and seen.exists(), (tmp_path / "work" / "cluster" / "worker.log").read_text()
    cache, data, args = seen.read_text().splitlines()
    assert (cache, data) == (cache_there(host), data_there(host))
    assert args == "worker --scheduler tcp://127.0.0.1:1 --name lab1 --vm 2"
    assert Path(data).is_dir()


@pytest.fixture
def adr_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The CLI with a cached image, no ADR QEMU here, and campaigns that record where they would run."""
    from lab import cli_campaign
    from lab.adr import qemu as adr_qemu

    cache = tmp_path / "cache"
    entry = cache / "images" / "1111aaaa"
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(json.dumps({"kernel_version": "6.1", "initramfs": "initramfs.cpio.gz"}))
    set_ref(cache, "debian12-pmem", "1111aaaa")
    monkeypatch.setenv("PMEMLAB_CACHE", str(cache))
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))

    def no_adr_qemu() -> Any:
        raise ConfigError("no ADR QEMU on this machine")

    ran: list[Any] = []
    monkeypatch.setattr(adr_qemu, "find_adr_qemu", no_adr_qemu)
    monkeypatch.setattr(cli_campaign, "_run_campaign", lambda *a: ran.append(a[-1]))
    monkeypatch.setattr(cli_campaign, "_report", lambda *a: 0)
    return {"db": f"sqlite:///{tmp_path / 'r.db'}", "ran": ran}


def test_adr_qemu_is_checked_here_only_when_the_attempts_run_here(adr_cli: dict[str, Any]) -> None:
    from lab.cli import cli
    from lab.store.db import ResultsStore

    runner, db, ran = CliRunner(), adr_cli["db"], adr_cli["ran"]
    scenario = scenarios_dir() / "mapsync.toml"  # has adr cells
    result = runner.invoke(cli, ["campaign", "run", str(scenario), "--db", db])
    assert result.exit_code != 0 and "no ADR QEMU on this machine" in result.output and ran == []
    result = runner.invoke(cli, ["campaign", "run", str(scenario), "--db", db, "--host", "lab1"])
    assert result.exit_code == 0, result.output
    assert ran == ["lab1"]

    (campaign,) = ResultsStore.open(db).list_campaigns()  # stored, nothing ran: all pending
    result = runner.invoke(cli, ["campaign", "resume", campaign.campaign.id, "--db", db])
    assert result.exit_code != 0 and "no ADR QEMU on this machine" in result.output and ran == ["lab1"]
    result = runner.invoke(cli, ["campaign", "resume", campaign.campaign.id, "--db", db, "--host", "lab1"])
    assert result.exit_code == 0, result.output
    assert ran == ["lab1", "lab1"]


@pytest.mark.parametrize("raw, expected", [(None, 15.0), ("8", 8.0), ("40.5", 40.5)])
def test_the_link_timeout_is_settable(raw: str | None, expected: float, monkeypatch: pytest.MonkeyPatch) -> None:
    if raw is None:
        monkeypatch.delenv(link.LINK_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(link.LINK_TIMEOUT_ENV, raw)
    assert link.link_timeout_s() == expected


@pytest.mark.parametrize("raw", ["2", "soon", "nan", "inf", ""])
def test_a_bad_link_timeout_is_one_line_naming_the_variable(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(link.LINK_TIMEOUT_ENV, raw)
    with pytest.raises(ConfigError, match=r"^PMEMLAB_LINK_TIMEOUT_S=.*expected seconds, at least 6 "):
        link.link_timeout_s()
