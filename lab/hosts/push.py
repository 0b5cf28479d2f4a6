"""`pmemlab image push HOST`: copy an image to a lab host by content id, verified by hash.

The image directory travels as one `tar --sparse` stream over the SSH
connection (SFTP does not keep holes, fabric's put copies one file) into a
temporary directory there, every file's sha256 is compared with ours, and
only then is it renamed to images/<id>. An image whose files there already
hash right is not sent again.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.hosts.remote_attempt import cache_there
from lab.hosts.ssh import HostConnection, HostError
from lab.image.cache import Image

PUSH_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PushResult:
    host: str
    image_id: str
    remote_dir: str
    sent: bool  # False: already there, verified
    files: int
    bytes: int  # apparent size of what is (now) there
    seconds: float


def local_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every regular file under `directory`, by relative path."""
    hashes = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        hashes[str(path.relative_to(directory))] = digest.hexdigest()
    return hashes


def remote_hashes(conn: HostConnection, directory: str, names: list[str]) -> dict[str, str] | None:
    """The same hashes there, or None if any file is missing or unreadable."""
    result = conn.run(["sha256sum", "--", *[f"{directory}/{n}" for n in names]], timeout=120, check=False)
    if not result.ok:
        return None
    found = {}
    for line in result.stdout.splitlines():
        digest, _, path = line.partition("  ")
        found[path[len(directory) + 1:]] = digest
    return found


def push_image(conn: HostConnection, image: Image) -> PushResult:
    started = time.monotonic()
    host = conn.host
    want = local_hashes(image.path)
    size = sum((image.path / n).stat().st_size for n in want)
    final = f"{cache_there(host)}/images/{image.id}"
    if remote_hashes(conn, final, sorted(want)) == want:
        return PushResult(host.name, image.id, final, False, len(want), size, time.monotonic() - started)
    tmp = f"{cache_there(host)}/images/.push-{image.id}-{secrets.token_hex(4)}"
    conn.run(["mkdir", "-p", "--", tmp], timeout=30)
    try:
        tar = subprocess.Popen(["tar", "--sparse", "-cf", "-", "-C", str(image.path), "--", *sorted(want)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            copied = conn.put_stream(["tar", "-xf", "-", "-C", tmp], tar.stdout, PUSH_TIMEOUT_S)
        finally:
            tar.stdout.close()
            local_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
            tar.wait(30)
        if tar.returncode != 0:
            raise HostError(f"push to {host.name!r}: tar of {image.path} failed: {local_err.strip()}")
        if not copied.ok:
            raise HostError(f"push to {host.name!r}: tar there exited with status {copied.exit_code}: "
                            f"{copied.stderr.strip()}")
        got = remote_hashes(conn, tmp, sorted(want))
        if got != want:
            bad = sorted(n for n in want if (got or {}).get(n) != want[n])
            raise HostError(f"push to {host.name!r}: {', '.join(bad)} of image {image.id} arrived with a "
                            "different sha256")
        conn.run(["rm", "-rf", "--", final], timeout=60)
        conn.run(["mv", "-T", "--", tmp, final], timeout=30)
    except BaseException:
        try:
            conn.run(["rm", "-rf", "--", tmp], timeout=60, check=False)
        except HostError:
            pass
        raise
    return PushResult(host.name, image.id, final, True, len(want), size, time.monotonic() - started)
