"""ninep-mmap: shared mappings of files on a virtio-9p share, both ways (guest -> host, host -> guest).

A host directory inside the run directory is shared into the guest
(-fsdev local + virtio-9p-pci) and mounted with
``-t 9p -o trans=virtio,version=9p2000.L,cache=MODE``. Then:

1. guest: map a file on the share MAP_SHARED|PROT_WRITE, store a pattern,
   msync(MS_SYNC), unmap (images/guest/ninepmmap.c "write");
2. host: read the file directly: the guest's bytes must be there;
3. host: overwrite the file in place with another pattern (write + fsync);
4. guest: a fresh MAP_SHARED mapping (PROT_READ|PROT_WRITE, and PROT_READ)
   must show the host's bytes.

cache=mmap (the "9P: introduction of a new cache=mmap model" change) exists
to make exactly this work: anything short of bytes visible both ways is a
VIOLATION. cache=none is recorded, not assumed: whether the kernel accepts a
writable shared mapping at all (Debian's 6.1 refuses it with EINVAL,
generic_file_readonly_mmap), and what the host and a fresh mapping see. It is
an informational PASS, except that a writable mapping the kernel accepted and
whose msync(MS_SYNC) returned 0 must have put the bytes in the file (msync's
own promise): if not, VIOLATION.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lab.errors import ConfigError, GuestError
from lab.guest.agent import CommandResult
from lab.image.cache import Image
from lab.oracles.finding import Finding
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.vm.boot import MachineShape
from lab.vm.machine import Machine
from lab.vm.spec import ShareSpec
from lab.workloads.base import CheckSpec, WorkloadKind, json_lines, params_as
from lab.runner.guest_run import GuestRun, RunHooks, WorkloadResult, run_guarded
from lab.vm.boot import shape_dict, shape_from_dict

NAME = "ninep-mmap"
HELPER = "ninepmmap"
TAG = "pmemlab9p"
GUEST_MOUNT = "/mnt/share"
FILE_NAME = "ninep-mmap.dat"
HELPER_TIMEOUT_S = 60.0
MOUNT_TIMEOUT_S = 30.0
MAX_SIZE = 1 << 20

CacheMode = Literal["mmap", "none"]
# What a writable MAP_SHARED mapping of a 9p file came to (metrics "writable_shared_mmap").
WRITE_OUTCOMES = ("refused", "accepted-visible", "accepted-not-visible", "accepted-msync-failed")
# What a fresh guest mapping showed after the host changed the file (metrics "guest_sees_host").
READ_OUTCOMES = ("sees-host", "stale", "refused")


class NinepMmapParams(BaseModel):
    """[workload] / [matrix] keys of the ninep-mmap kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: CacheMode = "mmap"
    size: int = Field(default=8192, ge=1, le=MAX_SIZE)  # bytes mapped and compared (two pages by default)


def pattern(seed: int, size: int) -> bytes:
    """The helper's pattern: byte j = (seed*131 + j*7 + (j >> 8)) & 0xff."""
    return bytes((seed * 131 + j * 7 + (j >> 8)) & 0xFF for j in range(size))


def first_mismatch(got: bytes, want: bytes) -> int | None:
    """Offset of the first byte that differs (a length difference counts), None if equal."""
    if got == want:
        return None
    for offset, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return offset
    return min(len(got), len(want))


@dataclass(frozen=True)
class NinepMmapCheck:
    params: NinepMmapParams = field(default_factory=NinepMmapParams)
    shape: MachineShape = MachineShape()
    seed: int = 0

    @property
    def guest_seed(self) -> int:
        return 1 + self.seed % 1000

    @property
    def host_seed(self) -> int:
        return self.guest_seed + 1  # differs in every byte (131 is odd)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": NAME, "params": self.params.model_dump(), **shape_dict(self.shape), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NinepMmapCheck:
        try:
            shape = shape_from_dict(data, defaults=MachineShape())
            return cls(NinepMmapParams.model_validate(data.get("params") or {}), shape, int(data.get("seed", 0)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"not a {NAME} check: {exc}") from exc


def make_check(spec: CheckSpec) -> NinepMmapCheck:
    if spec.crash is not None:
        raise ConfigError(f"{NAME} makes no power cut: a crash point does not apply")
    return NinepMmapCheck(params_as(NinepMmapParams, spec.params), spec.shape, spec.seed)


# -- judging (pure) -----------------------------------------------------------------------------

def write_outcome(write: dict[str, Any], host_mismatch: int | None) -> str:
    """What the guest's writable shared mapping came to, seen from the host."""
    if write.get("mmap_errno"):
        return "refused"
    if write.get("msync_errno"):
        return "accepted-msync-failed"
    return "accepted-visible" if host_mismatch is None else "accepted-not-visible"


def read_outcome(read: dict[str, Any], want: bytes) -> str:
    if read.get("mmap_errno"):
        return "refused"
    got = bytes.fromhex(str(read.get("hex") or ""))
    return "sees-host" if got == want else "stale"


def judge(cache: CacheMode, metrics: dict[str, Any]) -> list[Finding]:
    """Findings from the recorded outcomes (metrics as `run` fills them)."""
    wrote = metrics["writable_shared_mmap"]
    reads: dict[str, str] = metrics["guest_sees_host"]
    details = {k: metrics.get(k) for k in ("cache", "writable_shared_mmap", "writable_shared_mmap_errno",
                                           "msync_errno", "host_first_mismatch", "guest_sees_host",
                                           "guest_first_mismatch")}
    text = (f"cache={cache}: writable MAP_SHARED mmap {wrote}"
            + (f" ({metrics.get('writable_shared_mmap_errno')})" if wrote == "refused" else "")
            + "; fresh mapping after the host's change: "
            + ", ".join(f"PROT_{'READ|PROT_WRITE' if prot == 'rw' else 'READ'} {out}" for prot, out in reads.items()))
    if cache == "mmap":
        problems = []
        if wrote != "accepted-visible":
            problems.append(f"the guest's msync'd bytes did not reach the host file ({wrote})")
        problems += [f"a fresh {prot} mapping did not show the host's bytes ({out})"
                     for prot, out in reads.items() if out != "sees-host"]
        if problems:
            return [Finding("ninep-coherence", Verdict.VIOLATION, f"{text}: " + "; ".join(problems), details)]
        return [Finding("ninep-coherence", Verdict.PASS, f"{text}: bytes visible both ways", details)]
    if wrote == "accepted-not-visible":
        return [Finding("ninep-coherence", Verdict.VIOLATION,
                        f"{text}: msync(MS_SYNC) returned 0 but the bytes never reached the host file", details)]
    return [Finding("ninep-cache-none", Verdict.PASS, f"{text} (recorded, informational)", details)]


# -- the run ------------------------------------------------------------------------------------

def _helper_json(result: CommandResult, op: str) -> dict[str, Any]:
    if not result.ok:
        raise GuestError(f"{HELPER} {op} {result.describe()}; stderr: {result.err_text.strip()[-500:]}")
    for data in json_lines(result.text):
        if data.get("op") == op:
            return data
    raise GuestError(f"{HELPER} {op} printed no result line: {result.text[:200]!r}")


def _host_overwrite(path: Path, data: bytes) -> None:
    """Rewrite the file in place (same inode, as another writer on the host would)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _mount_share(machine: Machine, cache: CacheMode) -> None:
    machine.agent.run(["mkdir", "-p", GUEST_MOUNT], timeout=10, check=True)
    machine.agent.run(["mount", "-t", "9p", "-o", f"trans=virtio,version=9p2000.L,cache={cache}", TAG, GUEST_MOUNT],
                      timeout=MOUNT_TIMEOUT_S, check=True)


def run_check(check: NinepMmapCheck, image: Image, accel: AccelVerdict, run_dir: Path,
              hooks: RunHooks | None = None) -> WorkloadResult:
    run = GuestRun(NAME, check, image, accel, run_dir, hooks or RunHooks())
    cache, size = check.params.cache, check.params.size
    share = run_dir / "share"
    host_file = share / FILE_NAME
    guest_file = f"{GUEST_MOUNT}/{FILE_NAME}"

    def body(run: GuestRun) -> list[Finding]:
        share.mkdir(parents=True, exist_ok=True)
        if host_file.exists():
            host_file.unlink()
        metrics: dict[str, Any] = {"cache": cache, "size": size, "guest_seed": check.guest_seed,
                                   "host_seed": check.host_seed}
        run.result.metrics = metrics
        shares = [ShareSpec(share, TAG)]
        with run.machine("guest", [run.fresh_media(shares=shares)], shares=shares) as machine:
            run.bring_up(machine)
            with run.phase("setup"):
                _mount_share(machine, cache)
            with run.phase("workload"):
                write = _helper_json(machine.agent.run(
                    [HELPER, "write", "--file", guest_file, "--size", str(size), "--seed", str(check.guest_seed)],
                    timeout=HELPER_TIMEOUT_S), "write")
                on_host = host_file.read_bytes() if host_file.exists() else b""
                mismatch = first_mismatch(on_host, pattern(check.guest_seed, size))
                metrics.update(write=write, host_size=len(on_host), host_first_mismatch=mismatch,
                               msync_errno=write.get("msync_errno"),
                               writable_shared_mmap=write_outcome(write, mismatch),
                               writable_shared_mmap_errno=write.get("mmap_errno"))
                host_bytes = pattern(check.host_seed, size)
                if not host_file.exists():
                    raise GuestError(f"the guest's {HELPER} write left no file on the share ({host_file})")
                _host_overwrite(host_file, host_bytes)
                reads: dict[str, str] = {}
                guest_mismatch: dict[str, int | None] = {}
                for prot in ("rw", "r"):
                    read = _helper_json(machine.agent.run(
                        [HELPER, "read", "--file", guest_file, "--size", str(size), "--prot", prot],
                        timeout=HELPER_TIMEOUT_S), "read")
                    reads[prot] = read_outcome(read, host_bytes)
                    guest_mismatch[prot] = (None if read.get("mmap_errno") else
                                            first_mismatch(bytes.fromhex(str(read.get("hex") or "")), host_bytes))
                metrics.update(guest_sees_host=reads, guest_first_mismatch=guest_mismatch)
            with run.phase("shutdown"):
                machine.agent.run(["umount", GUEST_MOUNT], timeout=MOUNT_TIMEOUT_S, check=True)
                machine.poweroff(timeout=30)
        return judge(cache, metrics)

    return run_guarded(run, body)


def _run(check: Any, image: Image, accel: AccelVerdict, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    return run_check(check, image, accel, run_dir, hooks)


KIND = WorkloadKind(
    name=NAME,
    purpose="shared mappings of 9p files (cache=mmap): guest msync reaches the host, host changes reach the guest",
    params=NinepMmapParams,
    uses_crash=False,
    make_check=make_check,
    check_from_dict=NinepMmapCheck.from_dict,
    run=_run,
)
