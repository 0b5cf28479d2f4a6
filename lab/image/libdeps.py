"""Host binaries and the shared libraries they need (resolved with ldd)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from lab.errors import ImageError

# "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def which(name: str) -> Path:
    """Absolute path of a host binary, searching sbin too (root's tools live there)."""
    found = shutil.which(name, path=_SEARCH_PATH)
    if not found:
        raise ImageError(f"host binary {name!r} not found in {_SEARCH_PATH}: install its package (see README)")
    return Path(found)


def parse_ldd(output: str) -> list[Path]:
    """Library paths from ldd output; 'not found' libraries are an error."""
    libs: list[Path] = []
    for line in output.splitlines():
        if "not found" in line:
            raise ImageError(f"ldd: a shared library is missing on the host: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match:
            libs.append(Path(match.group(2)))
    return libs


def shared_libraries(binary: Path) -> list[Path]:
    """Shared libraries `binary` loads; empty for a static binary."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise ImageError(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_ldd(proc.stdout)


def guest_path(host_path: Path) -> str:
    """Where a host file goes in the merged-/usr guest tree (relative path)."""
    text = str(host_path)
    for old, new in (("/lib64/", "/usr/lib64/"), ("/lib/", "/usr/lib/"), ("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/")):
        if text.startswith(old):
            text = new + text[len(old):]
            break
    return text.lstrip("/")
