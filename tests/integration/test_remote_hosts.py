"""Remote lab hosts over SSH, against a second host in a network namespace with its own sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.hosts import inventory
from lab.hosts.inventory import Host
from lab.hosts.push import local_hashes, push_image
from lab.hosts.ssh import HostConnection, HostError
from lab.image.cache import Image

from . import sshhost


@pytest.fixture(scope="module")
def second_host() -> Iterator[sshhost.SshHost]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace and an sshd on port 22 need root (CI runs as root)")
    host = sshhost.start()
    yield host
    sshhost.stop(host)
    assert host.proc.poll() is not None
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert host.netns not in names


def _host(second: sshhost.SshHost, **overrides: object) -> Host:
    data: dict[str, object] = {"target": second.target, "key": str(second.key),
                               "known_hosts": str(second.known_hosts), "workdir": str(second.workdir)}
    data.update(overrides)
    return inventory.validate("lab2", data, "test")


def _cli(args: list[str], hosts_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PMEMLAB_HOSTS": str(hosts_file)}
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_host_add_list_check_remove(second_host: sshhost.SshHost, tmp_path: Path) -> None:
    hosts_file = tmp_path / "hosts.toml"
    added = _cli(["host", "add", "lab2", "--target", second_host.target, "--key", str(second_host.key),
                  "--known-hosts", str(second_host.known_hosts), "--workdir", str(second_host.workdir),
                  "--slots", "2"], hosts_file)
    assert added.returncode == 0, added.stderr
    assert "BEGIN" not in hosts_file.read_text()  # a key path, never key material
    listed = json.loads(_cli(["host", "list", "--json"], hosts_file).stdout)
    assert [(h["name"], h["slots"]) for h in listed["hosts"]] == [("lab2", 2)]
    checked = _cli(["host", "check", "lab2", "--json"], hosts_file)
    facts = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}
    assert facts["qemu"]["ok"] and "QEMU emulator version" in facts["qemu"]["detail"]
    assert facts["nvdimm"]["ok"]
    assert facts["images"]["detail"].startswith("none")
    assert _cli(["host", "remove", "lab2"], hosts_file).returncode == 0
    gone = _cli(["host", "check", "lab2"], hosts_file)
    assert gone.returncode != 0 and "no host 'lab2'" in gone.stderr


def test_unknown_host_key_is_refused(second_host: sshhost.SshHost, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{second_host.address} {other[0]} {other[1]}\n")
    with pytest.raises(HostError, match="SSH refused"):
        with HostConnection(_host(second_host, known_hosts=str(wrong))):
            pass
    wrong.write_text("")  # not listed at all: RejectPolicy, never AutoAdd
    with pytest.raises(HostError, match="SSH refused"):
        with HostConnection(_host(second_host, known_hosts=str(wrong))):
            pass
    assert wrong.read_text() == ""


def test_arguments_are_quoted(second_host: sshhost.SshHost, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    with HostConnection(_host(second_host)) as conn:
        out = conn.run(["echo", f"a b; touch {marker}", "$(id)"]).stdout
    assert out == f"a b; touch {marker} $(id)\n"
    assert not marker.exists()


def test_image_push_by_hash(second_host: sshhost.SshHost, image: Image, tmp_path: Path) -> None:
    host = _host(second_host)
    with HostConnection(host) as conn:
        cold = push_image(conn, image)
        warm = push_image(conn, image)
        there = second_host.workdir / "images" / image.id
        assert cold.sent and not warm.sent
        assert local_hashes(there) == local_hashes(image.path)
        (there / "vmlinuz").write_bytes(b"corrupt")  # a damaged copy there is sent again
        again = push_image(conn, image)
        assert again.sent and local_hashes(there) == local_hashes(image.path)
        # sparse-aware: a 64 MiB file with one written page arrives with its holes
        fake = tmp_path / "fake"
        fake.mkdir()
        with (fake / "media.img").open("wb") as f:
            f.truncate(64 << 20)
            f.seek(32 << 20)
            f.write(b"x" * 4096)
        sparse = push_image(conn, Image("0123456789abcdef", fake, {}))
        arrived = second_host.workdir / "images" / "0123456789abcdef" / "media.img"
        assert sparse.sent and arrived.stat().st_size == 64 << 20
        assert arrived.stat().st_blocks * 512 < 1 << 20, "the holes were filled in on the way"
    print(json.dumps({"push_cold_s": round(cold.seconds, 2), "push_warm_s": round(warm.seconds, 2),
                      "bytes": cold.bytes}))


def test_lost_link_is_a_host_error(second_host: sshhost.SshHost) -> None:
    with HostConnection(_host(second_host)) as conn:
        conn.run(["true"])
        sshhost.cut_link(second_host)
        try:
            with pytest.raises(HostError, match="host 'lab2'"):
                conn.run(["sleep", "1"], timeout=5)
        finally:
            inner = f"pmn{second_host.netns.rsplit('-', 1)[1]}"
            subprocess.run(["ip", "netns", "exec", second_host.netns, "ip", "link", "set", inner, "up"], check=True)
