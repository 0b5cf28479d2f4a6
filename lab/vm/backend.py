"""Which backend runs a lab machine: the lab's own QEMU process (the default) or a libvirt domain."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lab.errors import ConfigError

DEFAULT_LIBVIRT_URI = "qemu:///system"
URI_SCHEMES = ("qemu:///", "qemu+ssh://", "qemu+libssh://", "qemu+unix://", "qemu:///embed")


class Backend(str, Enum):
    QEMU = "qemu"  # a QEMU process the lab owns (ready snapshots, restored clones)
    LIBVIRT = "libvirt"  # transient libvirt domains; cold boots only (no x-ignore-shared in libvirt 9.0)


@dataclass(frozen=True)
class BackendChoice:
    kind: Backend = Backend.QEMU
    libvirt_uri: str = DEFAULT_LIBVIRT_URI

    @classmethod
    def parse(cls, kind: str, uri: str | None, where: str = "--backend") -> "BackendChoice":
        try:
            backend = Backend(kind)
        except ValueError:
            raise ConfigError(f"{where}: expected one of {', '.join(b.value for b in Backend)}, got {kind!r}") from None
        if uri is not None and backend is not Backend.LIBVIRT:
            raise ConfigError(f"{where}: a libvirt URI ({uri!r}) needs the libvirt backend")
        uri = uri or DEFAULT_LIBVIRT_URI
        if not uri.startswith(URI_SCHEMES[:4]):
            raise ConfigError(f"libvirt URI {uri!r}: expected qemu:///system, qemu:///session, "
                              "qemu+ssh://USER@HOST/system or qemu+libssh://USER@HOST/system")
        return cls(backend, uri)
