"""The QEMU the ADR model runs on: 10.0 from Debian bookworm-backports, unpacked into the cache.

Debian 12's QEMU 7.2 cannot tell which address a clwb flushes (no register reads in its plugin API,
RAM-block offsets instead of guest-physical addresses, no stored values: LAB-NOTES). QEMU 10.0
(plugin API 4) has all three. bootstrap.sh (images/qemu-adr.sh) unpacks its packages with
`dpkg -x` into a private prefix, so the system QEMU other runs use stays as it is, and takes
`qemu-plugin.h` from the same version's Debian source tarball.

Layout under the cache: qemu/<debian version>/root/usr/bin/qemu-system-x86_64 (+ share/qemu,
share/seabios), qemu/<debian version>/include/qemu-plugin.h.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ConfigError
from lab.paths import cache_dir

DEBIAN_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
MIN_VERSION = (9, 2)  # plugin API 4 with register reads, stored values and guest-physical addresses
HOW_TO_GET = ("run ./bootstrap.sh (it unpacks QEMU " + DEBIAN_VERSION + " from bookworm-backports into "
              "the cache), or set PMEMLAB_ADR_QEMU to a qemu-system-x86_64 >= 9.2 with PMEMLAB_ADR_HEADER "
              "naming its qemu-plugin.h")


@dataclass(frozen=True)
class AdrQemu:
    binary: Path
    version: str  # as --version says it
    data_dirs: tuple[Path, ...]  # -L: firmware of the same version before the system's
    header: Path  # qemu-plugin.h of the exact version


def prefix() -> Path:
    return cache_dir() / "qemu" / DEBIAN_VERSION.split(":", 1)[-1]


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(10, 0, 2) from 'QEMU emulator version 10.0.2 (Debian ...)'."""
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


@functools.lru_cache(maxsize=4)
def _version_line(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"the ADR model's QEMU {binary} does not run ({exc}); {HOW_TO_GET}") from None
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0] if lines else "?"


def find_adr_qemu() -> AdrQemu:
    """The QEMU for `persistence = "adr"`; a one-line ConfigError naming what was found and how to
    get a suitable one, before any machine boots."""
    env_binary = os.environ.get("PMEMLAB_ADR_QEMU")
    root = prefix()
    binary = Path(env_binary) if env_binary else root / "root/usr/bin/qemu-system-x86_64"
    header = Path(os.environ.get("PMEMLAB_ADR_HEADER") or root / "include/qemu-plugin.h")
    if not binary.is_file():
        raise ConfigError(f"the ADR persistence model needs QEMU >= {MIN_VERSION[0]}.{MIN_VERSION[1]} "
                          f"(plugin API 4); none at {binary}: {HOW_TO_GET}")
    line = _version_line(str(binary))
    version = parse_version(line)
    if version is None or version[:2] < MIN_VERSION:
        raise ConfigError(f"the ADR persistence model needs QEMU >= {MIN_VERSION[0]}.{MIN_VERSION[1]} "
                          f"(register reads, stored values, guest-physical addresses in the plugin API); "
                          f"{binary} is {line!r}: {HOW_TO_GET}")
    if not header.is_file():
        raise ConfigError(f"the ADR plugin needs qemu-plugin.h of {line!r}; none at {header}: {HOW_TO_GET}")
    data = tuple(d for d in (root / "root/usr/share/qemu", root / "root/usr/share/seabios") if d.is_dir())
    return AdrQemu(binary, line, data if not env_binary else (), header)


def supported() -> tuple[bool, str]:
    """For doctor: can this host run the ADR model, and in words why (not)."""
    try:
        qemu = find_adr_qemu()
    except ConfigError as exc:
        return False, str(exc)
    return True, f"{qemu.version} at {qemu.binary}"
