"""The host inventory: validated on load, one-line errors naming the file and field, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.hosts import inventory

GOOD = {"target": "lab@10.0.0.5:2222", "key": "~/.ssh/id_ed25519"}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    host = inventory.validate("lab1", {**GOOD, "backend": "libvirt", "libvirt_uri": "qemu+libssh://lab@h/system",
                                       "slots": 3, "pmemlab": "/opt/pmemlab/bin/pmemlab"}, "test")
    inventory.save({"lab1": host}, path)
    assert inventory.load(path) == {"lab1": host}
    assert (host.user, host.address, host.port) == ("lab", "10.0.0.5", 2222)
    assert inventory.validate("v6", {**GOOD, "target": "lab@[fe80::1]:22"}, "t").address == "fe80::1"


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert inventory.load(tmp_path / "none.toml") == {}


@pytest.mark.parametrize("data, message", [
    ({"key": "k"}, r"\[hosts.lab1\].target: required"),
    ({**GOOD, "target": "10.0.0.5"}, r"target: expected USER@HOST"),
    ({**GOOD, "target": "lab@h; rm -rf /"}, r"target: expected USER@HOST"),
    ({**GOOD, "slots": 0}, r"slots: expected an integer 1..64"),
    ({**GOOD, "slots": True}, r"slots: expected an integer"),
    ({**GOOD, "workdir": "relative"}, r"workdir: expected an absolute path"),
    ({**GOOD, "backend": "xen"}, r"expected one of qemu, libvirt"),
    ({**GOOD, "libvirt_uri": "qemu:///system"}, r"needs the libvirt backend"),
    ({**GOOD, "password": "hunter2"}, r"unknown field 'password'"),
    ({**GOOD, "pmemlab": "pmemlab --debug"}, r"pmemlab: expected one executable there"),
    ({**GOOD, "pmemlab": "bin/pmemlab"}, r"pmemlab: expected one executable there"),
    ({**GOOD, "pmemlab": "/opt/pm lab/pmemlab"}, r"pmemlab: expected one executable there"),
])
def test_bad_host_names_file_and_field(tmp_path: Path, data: dict[str, object], message: str) -> None:
    path = tmp_path / "hosts.toml"
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, (bool, int)) else
                     f"{k} = {str(v).lower()}" for k, v in data.items())
    path.write_text(f"[hosts.lab1]\n{body}\n")
    with pytest.raises(ConfigError, match=message) as err:
        inventory.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_toml_and_unknown_table(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text("[hosts.lab1\n")
    with pytest.raises(ConfigError, match="not readable TOML"):
        inventory.load(path)
    path.write_text("[other]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown table 'other'"):
        inventory.load(path)


def test_get_names_known_hosts(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    inventory.save({"a": inventory.validate("a", GOOD, "t")}, path)
    with pytest.raises(ConfigError, match=r"no host 'b' \(known: a"):
        inventory.get("b", path)


def test_bad_name() -> None:
    with pytest.raises(ConfigError, match="a host name is letters"):
        inventory.validate("../x", GOOD, "t")


def test_pmemlab_there_defaults_and_runs_as_one_argument() -> None:
    from lab.hosts.remote_attempt import pmemlab_argv

    assert inventory.validate("a", GOOD, "t").pmemlab == "pmemlab"
    host = inventory.validate("a", {**GOOD, "pmemlab": "/opt/pmemlab/bin/pmemlab", "workdir": "/var/tmp/lab"}, "t")
    assert pmemlab_argv(host, "attempt", "--spec", "x; rm -rf /") == [
        "env", "PMEMLAB_CACHE=/var/tmp/lab", "PMEMLAB_DATA=/var/tmp/lab/data", "/opt/pmemlab/bin/pmemlab", "attempt",
        "--spec", "x; rm -rf /"]
