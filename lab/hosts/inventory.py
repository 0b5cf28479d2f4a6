"""The host inventory: ~/.config/pmemlab/hosts.toml (or $PMEMLAB_HOSTS), validated on every load.

    [hosts.lab1]
    target = "lab@10.0.0.5"          # USER@HOST, optional :PORT
    key = "~/.ssh/id_ed25519"        # the private key SSH authenticates with
    known_hosts = "~/.ssh/known_hosts"  # host keys are verified against it; an unknown key is refused
    backend = "qemu"                 # or "libvirt"
    libvirt_uri = "qemu:///system"   # for backend = "libvirt"
    slots = 2                        # machines at once there
    workdir = "/var/tmp/pmemlab"     # the lab's directory there (images/<id>, runs)
    pmemlab = "/opt/pmemlab/bin/pmemlab"  # the pmemlab command there (--host runs it); default "pmemlab"

No secret is stored: `key` is a path, never key material.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab.errors import ConfigError
from lab.vm.backend import BackendChoice

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
TARGET = re.compile(r"^(?P<user>[a-z_][a-z0-9_.-]{0,31})@(?P<host>[A-Za-z0-9.:_-]+?|\[[0-9a-fA-F:]+\])(:(?P<port>\d{1,5}))?$")
FIELDS = {"target", "key", "known_hosts", "backend", "libvirt_uri", "slots", "workdir", "pmemlab"}
DEFAULT_WORKDIR = "/var/tmp/pmemlab"
DEFAULT_PMEMLAB = "pmemlab"
# One executable: an absolute path or a name on the host's PATH, never a command line (it is one argv item).
PMEMLAB = re.compile(r"^(/[^\x00-\x20]*|[A-Za-z0-9_.+-]+)$")


def inventory_path() -> Path:
    env = os.environ.get("PMEMLAB_HOSTS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pmemlab" / "hosts.toml"


@dataclass(frozen=True)
class Host:
    name: str
    target: str
    key: str
    known_hosts: str = "~/.ssh/known_hosts"
    backend: str = "qemu"
    libvirt_uri: str | None = None
    slots: int = 1
    workdir: str = DEFAULT_WORKDIR
    pmemlab: str = DEFAULT_PMEMLAB

    @property
    def user(self) -> str:
        return self._parts()[0]

    @property
    def address(self) -> str:
        return self._parts()[1]

    @property
    def port(self) -> int:
        return self._parts()[2]

    def _parts(self) -> tuple[str, str, int]:
        m = TARGET.match(self.target)
        assert m is not None  # validated
        return m["user"], m["host"].strip("[]"), int(m["port"] or 22)

    @property
    def key_path(self) -> Path:
        return Path(self.key).expanduser()

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser()

    def machines(self) -> BackendChoice:
        return BackendChoice.parse(self.backend, self.libvirt_uri, where=f"host {self.name!r} backend")

    def to_toml(self) -> str:
        lines = [f"[hosts.{self.name}]"]
        for key, value in asdict(self).items():
            if key == "name" or value is None:
                continue
            lines.append(f"{key} = {value}" if isinstance(value, int) else f"{key} = {_quote(str(value))}")
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate(name: str, data: Any, where: str) -> Host:
    """A Host from one [hosts.NAME] table; ConfigError naming the file and field otherwise."""
    at = f"{where}: [hosts.{name}]"
    if not NAME.match(name):
        raise ConfigError(f"{at}: a host name is letters, digits, '.', '_' or '-' (at most 63)")
    if not isinstance(data, dict):
        raise ConfigError(f"{at}: expected a table")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ConfigError(f"{at}: unknown field {unknown[0]!r} (expected {', '.join(sorted(FIELDS))})")
    for field in ("target", "key"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise ConfigError(f"{at}.{field}: required, a string")
    if not TARGET.match(data["target"]):
        raise ConfigError(f"{at}.target: expected USER@HOST or USER@HOST:PORT, got {data['target']!r}")
    for field in ("known_hosts", "backend", "libvirt_uri", "workdir", "pmemlab"):
        if field in data and not isinstance(data[field], str):
            raise ConfigError(f"{at}.{field}: expected a string")
    slots = data.get("slots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 64:
        raise ConfigError(f"{at}.slots: expected an integer 1..64, got {slots!r}")
    workdir = data.get("workdir", DEFAULT_WORKDIR)
    if not workdir.startswith("/"):
        raise ConfigError(f"{at}.workdir: expected an absolute path on the host, got {workdir!r}")
    pmemlab = data.get("pmemlab", DEFAULT_PMEMLAB)
    if not PMEMLAB.match(pmemlab):
        raise ConfigError(f"{at}.pmemlab: expected one executable there, an absolute path or a name on its PATH "
                          f"(no spaces or arguments), got {pmemlab!r}")
    host = Host(name=name, target=data["target"], key=data["key"],
                known_hosts=data.get("known_hosts", "~/.ssh/known_hosts"), backend=data.get("backend", "qemu"),
                libvirt_uri=data.get("libvirt_uri"), slots=slots, workdir=workdir, pmemlab=pmemlab)
    try:
        host.machines()
    except ConfigError as exc:
        raise ConfigError(f"{at}: {exc}") from None
    if host.port > 65535:
        raise ConfigError(f"{at}.target: port {host.port} is out of range")
    return host


def load(path: Path | None = None) -> dict[str, Host]:
    path = path or inventory_path()
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable TOML: {exc}") from None
    extra = sorted(set(raw) - {"hosts"})
    if extra:
        raise ConfigError(f"{path}: unknown table {extra[0]!r} (expected [hosts.NAME] tables)")
    tables = raw.get("hosts", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: 'hosts' must be tables [hosts.NAME]")
    return {name: validate(name, data, str(path)) for name, data in tables.items()}


def save(hosts: dict[str, Host], path: Path | None = None) -> Path:
    path = path or inventory_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# pmemlab lab hosts (pmemlab host add|list|check|remove)\n\n" + "\n".join(
        hosts[name].to_toml() for name in sorted(hosts))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def get(name: str, path: Path | None = None) -> Host:
    hosts = load(path)
    if name not in hosts:
        known = ", ".join(sorted(hosts)) or "none"
        raise ConfigError(f"{path or inventory_path()}: no host {name!r} (known: {known}; add one with "
                          "'pmemlab host add')")
    return hosts[name]
