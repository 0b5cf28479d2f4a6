"""What kernel a source offers now: a version string that changes when the kernel does.

debian_package: the candidate version apt would install (`apt-cache policy` behind the meta package).
directory: sha256 of its bzImage, plus the names, sizes and mtimes of its modules tree and .config.
git: BRANCH@COMMIT, the commit `git rev-parse` gives for the branch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lab.errors import ConfigError
from lab.image.debian import resolve_kernel
from lab.watch.plan import KernelSource


def directory_version(directory: Path) -> str:
    bzimage = directory / "bzImage"
    if not bzimage.is_file():
        raise ConfigError(f"kernel directory {directory}: no bzImage in it (yet)")
    digest = hashlib.sha256()
    with open(bzimage, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    extras = [directory / ".config", *sorted((directory / "modules").rglob("*"))]
    for path in extras:
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(directory)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return f"sha256:{digest.hexdigest()[:16]}"


def current_version(source: KernelSource) -> str:
    if source.debian_package is not None:
        kernel = resolve_kernel(source.debian_package)
        return f"{kernel.package}={kernel.version}"
    if source.git is not None:
        from lab.watch.gitkernel import git_version

        return git_version(source.git)
    assert source.directory is not None
    return directory_version(source.directory)
