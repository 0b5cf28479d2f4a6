"""Building the ADR tracing plugin (images/plugin/adrtrace.c) on the host, content-addressed.

The plugin is compiled against the exact QEMU version's qemu-plugin.h; its path under the cache
names a hash of the source, the header and the compiler, so a changed plugin is a new path, and a
ready snapshot (whose key holds the argv) is never restored under another plugin.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from lab.adr.qemu import AdrQemu
from lab.errors import ConfigError
from lab.paths import cache_dir, images_dir

SOURCE = "plugin/adrtrace.c"
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


class PluginBuildError(ConfigError):
    """The plugin did not compile: carries the compiler's output."""


def _glib_cflags() -> list[str]:
    try:
        out = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True, timeout=30)
    except OSError:
        raise PluginBuildError("the ADR plugin needs pkg-config and glib's headers "
                               "(apt-get install pkg-config libglib2.0-dev)") from None
    if out.returncode != 0:
        said = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "pkg-config failed"
        raise PluginBuildError(f"the ADR plugin needs glib's headers (apt-get install libglib2.0-dev): {said}")
    return out.stdout.split()


def gcc_argv(source: Path, header_dir: Path, out: Path, glib: list[str], gcc: str = "gcc") -> list[str]:
    return [gcc, *CFLAGS, "-I", str(header_dir), *glib, "-o", str(out), str(source), "-lpthread"]


def plugin_path(qemu: AdrQemu, source: Path | None = None) -> Path:
    """The built plugin (built now if missing); PluginBuildError with the compiler's output."""
    source = source or images_dir() / SOURCE
    if not source.is_file():
        raise ConfigError(f"the ADR plugin source is missing: {source}")
    glib = _glib_cflags()
    gcc = shutil.which("gcc")
    if gcc is None:
        raise PluginBuildError("the ADR plugin is compiled on this host: gcc not found (apt-get install gcc libc6-dev)")
    digest = hashlib.sha256()
    for part in (source.read_bytes(), qemu.header.read_bytes(), " ".join(glib).encode(), gcc.encode()):
        digest.update(hashlib.sha256(part).digest())
    out = cache_dir() / "plugins" / digest.hexdigest()[:16] / "adrtrace.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".adrtrace.{os.getpid()}.so")
    try:
        result = subprocess.run(gcc_argv(source, qemu.header.parent, tmp, glib), capture_output=True, text=True,
                                timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PluginBuildError(f"cannot compile the ADR plugin {source}: {exc}") from None
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PluginBuildError(f"the ADR plugin {source} did not compile (gcc exit {result.returncode}):\n"
                               + (result.stderr or result.stdout).strip())
    os.replace(tmp, out)  # atomic: a concurrent build writes the same bytes
    return out
