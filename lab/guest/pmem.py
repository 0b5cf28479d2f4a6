"""Persistent memory in the guest: namespace -> fsdax -> mkfs -> mount -> DAX check.

Each step runs real tools in the guest (ndctl, mkfs.ext4/mkfs.xfs, mount)
through the agent, with a deadline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from lab.errors import GuestError
from lab.guest.agent import AgentClient

MOUNTPOINT = "/mnt/pmem"


class Filesystem(str, Enum):
    EXT4 = "ext4"
    XFS = "xfs"


class DaxMode(str, Enum):
    ALWAYS = "always"
    INODE = "inode"
    NEVER = "never"


MKFS = {
    Filesystem.EXT4: ["mkfs.ext4", "-F", "-q"],
    Filesystem.XFS: ["mkfs.xfs", "-f", "-q"],
}
FSCK = {
    Filesystem.EXT4: ["e2fsck", "-f", "-n"],
    Filesystem.XFS: ["xfs_repair", "-n"],
}


@dataclass(frozen=True)
class PmemMount:
    device: str
    fs: Filesystem
    dax: DaxMode
    mountpoint: str = MOUNTPOINT
    dax_active: bool | None = None  # STATX_ATTR_DAX of a new file, once verified


def wait_for_namespace(agent: AgentClient, timeout: float = 30.0) -> None:
    """The NFIT driver probes asynchronously: wait until namespace0.0 exists."""
    polls = max(1, int(timeout / 0.1))
    script = (f"i=0; while [ $i -lt {polls} ]; do [ -e /sys/bus/nd/devices/namespace0.0 ] && exit 0; "
              "i=$((i+1)); sleep 0.1; done; exit 1")
    result = agent.run(["sh", "-c", script], timeout=timeout + 5)
    if not result.ok:
        raise GuestError(f"no NVDIMM namespace appeared within {timeout:.0f} s "
                         "(is the nfit module loaded? is the machine's NVDIMM attached?)")


def existing_pmem_device(agent: AgentClient) -> str | None:
    """/dev/pmemN of an fsdax namespace if the media already carries one."""
    result = agent.run(["ndctl", "list", "-N"], timeout=30, check=True)
    namespaces = json.loads(result.stdout or b"[]") if result.stdout.strip() else []
    if isinstance(namespaces, dict):
        namespaces = [namespaces]
    for ns in namespaces:
        if ns.get("mode") == "fsdax" and ns.get("blockdev"):
            return "/dev/" + str(ns["blockdev"])
    return None


def create_fsdax(agent: AgentClient) -> str:
    """Turn the label-less raw namespace into fsdax; returns /dev/pmemN."""
    result = agent.run(["ndctl", "create-namespace", "-f", "-e", "namespace0.0", "-m", "fsdax", "-M", "mem"],
                       timeout=60, check=True)
    info = json.loads(result.stdout)
    blockdev = info.get("blockdev")
    if not blockdev:
        raise GuestError(f"ndctl create-namespace gave no block device: {result.stdout.decode(errors='replace')}")
    return "/dev/" + str(blockdev)


def mkfs(agent: AgentClient, fs: Filesystem, device: str) -> None:
    agent.run(MKFS[fs] + [device], timeout=120, check=True)


def umount(agent: AgentClient, mountpoint: str = MOUNTPOINT, timeout: float = 60) -> None:
    agent.run(["umount", mountpoint], timeout=timeout, check=True)


# One guest round trip instead of five: mkdir, mount, create a probe file, statx it, remove it.
# Arguments go in as positional parameters ($1..$5), never spliced into the script.
_MOUNT_AND_PROBE = ('mkdir -p "$4" && mount -t "$1" -o "dax=$2" "$3" "$4" && echo probe > "$5" '
                    '&& pmemlab-statx "$5" && rm -f "$5"')


def mount_verified(agent: AgentClient, fs: Filesystem, device: str, dax: DaxMode,
                   mountpoint: str = MOUNTPOINT) -> PmemMount:
    """Mount a made filesystem with `dax` and check STATX_ATTR_DAX on a new file."""
    probe = f"{mountpoint}/.pmemlab-dax-probe"
    result = agent.run(["sh", "-c", _MOUNT_AND_PROBE, "sh", fs.value, dax.value, device, mountpoint, probe],
                       timeout=120, check=True)
    dax_on = bool(json.loads(result.stdout)["dax"])
    mnt = PmemMount(device, fs, dax, mountpoint, dax_on)
    if dax is DaxMode.ALWAYS and not dax_on:
        raise GuestError(f"{fs.value} on {device} was mounted with dax=always but a new file "
                         "does not have STATX_ATTR_DAX: DAX is not really on")
    return mnt


def setup(agent: AgentClient, fs: Filesystem, dax: DaxMode = DaxMode.ALWAYS) -> PmemMount:
    """From a fresh NVDIMM to a mounted, verified filesystem."""
    wait_for_namespace(agent)
    device = create_fsdax(agent)
    mkfs(agent, fs, device)
    return mount_verified(agent, fs, device, dax)
