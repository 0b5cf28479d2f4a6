"""`cluster up --host` without a host to reach: ad-hoc hosts, the scheduler's listen address, the state
file with remote workers, and `cluster down` when a host does not answer (its worker stays recorded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.cluster import local, remote
from lab.errors import ConfigError
from lab.hosts import inventory


def test_an_adhoc_host_is_named_after_its_address_and_validated() -> None:
    host = remote.adhoc_host("lab@10.0.0.7:2222", "~/k", "~/kh", None, "/opt/p/bin/pmemlab")
    assert (host.name, host.port, host.workdir, host.pmemlab) == ("10.0.0.7-2222", 2222, "/var/tmp/pmemlab",
                                                                  "/opt/p/bin/pmemlab")
    assert remote.adhoc_host("lab@[fe80::1]", "k", "kh", "/w", None).name == "fe80-1"
    with pytest.raises(ConfigError, match=r"--host lab@h; rm: \[hosts.h-rm\].target: expected USER@HOST"):
        remote.adhoc_host("lab@h; rm", "k", "kh", None, None)
    with pytest.raises(ConfigError, match=r"pmemlab: expected one executable there"):
        remote.adhoc_host("lab@h", "k", "kh", None, "env PYTHONPATH=x pmemlab")


def test_the_scheduler_listens_where_the_hosts_reach_this_machine() -> None:
    assert local.listen_address([]) == "127.0.0.1"
    loop = inventory.validate("a", {"target": "u@127.0.0.5", "key": "k"}, "t")
    assert local.listen_address([loop]) == "127.0.0.1"  # the kernel's source address on that route


def test_a_host_that_does_not_answer_keeps_its_worker_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fabric")
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path))
    (tmp_path / "known_hosts").write_text("")
    gone = inventory.validate("gone", {"target": "lab@127.0.0.1:1", "key": str(tmp_path / "key"),
                                       "known_hosts": str(tmp_path / "known_hosts")}, "t")
    local.LocalCluster("tcp://127.0.0.1:1", [local.Member("worker", 4242, "/w/cluster/worker.log", gone)]).save()
    loaded = local.LocalCluster.load()
    assert loaded is not None and loaded.remote_members[0].host == gone and not loaded.local_members
    assert "BEGIN" not in local.state_path().read_text()
    with pytest.raises(local.ClusterStateError, match="already up"):
        local.up(1, 1)
    (line,) = local.down()
    assert line.startswith("worker 4242 on gone: NOT stopped: host 'gone'") and "cannot connect" in line
    again = local.LocalCluster.load()
    assert again is not None and [(m.pid, m.name) for m in again.members] == [(4242, "gone")]


def test_a_damaged_state_file_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path))
    local.state_path().parent.mkdir(parents=True)
    local.state_path().write_text('{"address": "x", "members": [{"role": "worker", "pid": 1, "log": "l", '
                                  '"host": {"name": "h", "target": "nope"}}]}')
    with pytest.raises((local.ClusterStateError, ConfigError), match=str(local.state_path())):
        local.LocalCluster.load()


@pytest.mark.timeout(120)
def test_cluster_up_local_status_down_through_the_cli(tmp_path: Path) -> None:
    """`cluster up --local 1 --listen 127.0.0.1`: the processes it records are the ones running, and
    `down` ends them all."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("distributed")
    repo = Path(__file__).resolve().parents[2]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PMEMLAB_")}, "PMEMLAB_DATA": str(tmp_path),
           "PYTHONPATH": str(repo), "NO_COLOR": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab.cli", "cluster", *args], capture_output=True, text=True,
                              env=env, timeout=90, stdin=subprocess.DEVNULL)

    nothing = cli("up")
    assert nothing.returncode != 0 and "give --local N and/or --host" in nothing.stderr
    up = cli("up", "--local", "1", "--vm", "1", "--listen", "127.0.0.1", "--json")
    credentials = tmp_path / "cluster" / "tls.pem"
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        started = json.loads(up.stdout)
        assert started["address"].startswith("tls://127.0.0.1:")
        assert credentials.stat().st_mode & 0o777 == 0o600
        pids = [int(m["pid"]) for m in started["members"]]
        status = json.loads(cli("status", "--json").stdout)
        assert [(w["name"], w["vm"]) for w in status["workers"]] == [("local-1", "1")]
        assert [(m["role"], m["host"], m["alive"]) for m in status["members"]] == [("scheduler", "local", "yes"),
                                                                                   ("worker", "local", "yes")]
        _only_credential_holders_get_in(started["address"], credentials, tmp_path)
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert all(not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
               for pid in pids)
    assert not (tmp_path / "cluster" / "state.json").exists() and not credentials.exists()


def _only_credential_holders_get_in(address: str, credentials: Path, tmp_path: Path) -> None:
    """Anyone reaching the port could otherwise submit code to run as the lab user: plain TCP, TLS
    without a certificate and TLS with another cluster's credentials are all refused."""
    from distributed import Client

    from lab.cluster import tls
    from lab.cluster.client import ClusterError, connect

    with connect(address, timeout=10, credentials=credentials) as client:
        assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3
    with pytest.raises((OSError, TimeoutError)):
        Client(address.replace("tls://", "tcp://"), timeout=3, set_as_default=False)
    other = tmp_path / "other.pem"
    tls.create(other)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        connect(address, timeout=3, credentials=other)
    with pytest.raises(ConfigError, match=r"does not exist: give its cluster's credentials .*PMEMLAB_CLUSTER_TLS"):
        connect(address, timeout=3, credentials=tmp_path / "missing.pem")


def test_a_tls_scheduler_without_credentials_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    from lab.cluster import worker

    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path))
    monkeypatch.delenv("PMEMLAB_CLUSTER_TLS", raising=False)
    with pytest.raises(ConfigError, match=rf"^tls://127.0.0.1:1 is a TLS scheduler and {tmp_path}/cluster/tls.pem "
                                          r"does not exist: .*PMEMLAB_CLUSTER_TLS=FILE"):
        worker.serve("tls://127.0.0.1:1", 1)


def test_credentials_are_private_and_damaged_ones_name_their_file(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from lab.cluster import tls

    made = tmp_path / "c" / "tls.pem"
    pem = tls.create(made)
    assert made.stat().st_mode & 0o777 == 0o600 and made.read_bytes() == pem
    assert b"BEGIN CERTIFICATE" in pem and b"BEGIN PRIVATE KEY" in pem
    security = tls.security(made)
    # distributed's Security fills its tls_* __slots__ by setattr and declares no types for them
    assert security.require_encryption and security.tls_worker_cert == security.tls_ca_file  # type: ignore[attr-defined]
    assert tls.create(made) != pem, "a new cluster gets new credentials"
    made.write_text(pem.decode().split("-----BEGIN PRIVATE KEY-----")[0])
    with pytest.raises(ConfigError, match=rf"^{made}: not a cluster's TLS credentials"):
        tls.security(made)
    assert tls.credentials_for("tcp://127.0.0.1:1") is None  # a scheduler the user runs without TLS
