"""`pmemlab doctor`: is this host ready to run the lab? Each check says what to do."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import ConfigError, LabError
from lab.image import cache as image_cache
from lab.image.kconfig import INTERESTING_OPTIONS, REQUIRED_OPTIONS, missing_options, parse_config
from lab.paths import cache_dir, data_dir
from lab.vm.accel import HostFacts, decide_from_facts
from lab.vm.spec import Accel

MIN_FREE_BYTES = 4 * 1024**3
QEMU = "qemu-system-x86_64"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class Identity:
    """Who runs the lab: uid, the groups this process holds, the groups /etc/group gives the user."""

    name: str
    uid: int
    active_gids: frozenset[int]
    member_gids: frozenset[int]

    @classmethod
    def current(cls) -> "Identity":
        uid = os.getuid()
        active = frozenset([os.getgid(), *os.getgroups()])
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(str(uid), uid, active, active)
        return cls(entry.pw_name, uid, active, frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def permits(st: os.stat_result, who: Identity, want: int) -> bool:
    """Whether mode bits grant `want` (os.R_OK|W_OK|X_OK) to `who` through its active groups (ACLs aside)."""
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        bits = st.st_mode >> 6
    elif st.st_gid in who.active_gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_kvm_access(device: Path, accessible: bool, pvm: bool, who: Identity) -> Check | None:
    """For a user who cannot open /dev/kvm: what that costs and how to get access. None without /dev/kvm."""
    try:
        st = device.stat()
    except FileNotFoundError:
        return None
    if accessible:
        return Check("kvm access", True, f"{device} is read-write for {who.name}")
    group = _group_name(st.st_gid)
    node = f"{device} is {stat.filemode(st.st_mode)[1:]} owner uid {st.st_uid}, group {group}"
    group_rw = st.st_mode & 0o060 == 0o060
    if group_rw and st.st_gid in who.member_gids:
        fix = (f"{who.name} is in group {group} but this login predates it: log in again "
               f"(or run 'newgrp {group}')")
    elif group_rw:
        fix = f"sudo usermod -aG {group} {who.name}, then log in again"
    else:
        fix = (f"give {device} to group kvm read-write (udev: KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\"), "
               f"then sudo usermod -aG kvm {who.name}")
    if pvm:
        return Check("kvm access", True, f"{node}: not accessible to {who.name}, which costs nothing here "
                     "(PVM: TCG is used anyway)", fix)
    return Check("kvm access", False, f"{node}: not accessible to {who.name}, so machines run under TCG "
                 "(many times slower) and --accel kvm fails", fix)


def check_writable(label: str, path: Path, who: Identity) -> Check:
    """`path` (or the directory it will be made in) and its entries must be writable by `who`: a cache
    left by an earlier run as root is not."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    candidates = [probe]
    if probe == path and probe.is_dir():
        try:
            candidates += sorted(probe.iterdir())
        except PermissionError:
            pass  # unreadable: the directory itself is reported
    blocked = [p for p in candidates if p.is_dir() and not permits(p.stat(), who, os.W_OK | os.X_OK)]
    if blocked:
        owner = blocked[0].stat().st_uid
        return Check(label, False, f"{blocked[0]} is not writable by {who.name} (owner uid {owner})",
                     f"sudo chown -R {who.name}: {path}" if probe == path else f"sudo install -d -o {who.name} {path}",
                     data={"blocked": [str(p) for p in blocked]})
    return Check(label, True, f"{path} is writable by {who.name}")


def check_qemu() -> list[Check]:
    path = shutil.which(QEMU)
    if path is None:
        return [Check("qemu", False, f"{QEMU} not found", "apt-get install qemu-system-x86 qemu-utils")]
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    devices = subprocess.run([path, "-device", "help"], capture_output=True, text=True, timeout=10).stdout
    checks = [Check("qemu", True, version, data={"path": path})]
    nvdimm = '"nvdimm"' in devices
    checks.append(Check("nvdimm", nvdimm, "QEMU offers the nvdimm device" if nvdimm else "this QEMU has no nvdimm device",
                        "install a QEMU built with NVDIMM support (Debian's qemu-system-x86 has it)"))
    return checks


def check_accel(image: image_cache.Image | None) -> Check:
    facts = HostFacts.read(QEMU)
    verdict = decide_from_facts(facts, "auto")
    if verdict is not None:
        return Check("accelerator", True, f"{verdict.accel.value}: {verdict.reason}",
                     data={**asdict(facts), "decided": verdict.accel})
    remembered = list((cache_dir() / "accel").glob(f"{facts.cache_key()}.json"))
    if remembered:
        return Check("accelerator", True, f"remembered verdict: {remembered[0].read_text().strip()}", data=asdict(facts))
    return Check("accelerator", True, "KVM looks usable; the first run proves it with a test boot "
                 f"{'(image ready)' if image else '(needs an image first)'}", data=asdict(facts))


def qemu_migration_capabilities(qemu: str) -> set[str]:
    """The migration capabilities this QEMU offers (a QMP session on stdio, no machine)."""
    commands = ('{"execute":"qmp_capabilities"}\n{"execute":"query-migrate-capabilities"}\n'
                '{"execute":"quit"}\n')
    try:
        out = subprocess.run([qemu, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"],
                             input=commands, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    found: set[str] = set()
    for line in out.splitlines():
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if isinstance(reply.get("return"), list):
            found |= {str(c.get("capability")) for c in reply["return"] if isinstance(c, dict)}
    return found


def check_snapshots(image: image_cache.Image | None, accel: Accel | None) -> Check:
    """Can this host restore ready snapshots (the default path), and how fast?"""
    qemu = shutil.which(QEMU)
    if qemu is None or "x-ignore-shared" not in qemu_migration_capabilities(qemu):
        return Check("snapshots", False, "this QEMU has no x-ignore-shared migration capability: a saved state "
                     "would carry the NVDIMM content", "run with --cold-boot, or install QEMU >= 4.0")
    if image is None or accel is None:
        return Check("snapshots", True, "QEMU can keep NVDIMMs out of saved states; the first run builds a ready "
                     "snapshot (once the image and the accelerator verdict exist)")
    from lab.guest.pmem import Filesystem
    from lab.runner.machines import SnapshotRequest, find_snapshot, probe_restore
    from lab.vm.boot import MachineShape

    request = SnapshotRequest(image, accel, MachineShape(), Filesystem.EXT4)
    snap = find_snapshot(request)
    if snap is None:
        return Check("snapshots", True, f"QEMU can keep NVDIMMs out of saved states; no ready snapshot for image "
                     f"{image.id} ({accel.value}) yet: the first run builds one (a cold boot + mkfs)")
    try:
        seconds = probe_restore(request, snap)
    except LabError as exc:
        return Check("snapshots", False, f"restoring ready snapshot {snap.directory} failed: {exc}",
                     "run with --cold-boot meanwhile; delete that directory to rebuild it")
    return Check("snapshots", True, f"ready snapshot {snap.key} (ext4, {accel.value}) restores to an answering "
                 f"agent in {seconds:.2f} s", data={"directory": str(snap.directory), "restore_s": round(seconds, 3)})


def check_image(name: str) -> tuple[Check, image_cache.Image | None]:
    try:
        image = image_cache.resolve(cache_dir(), name)
    except LabError as exc:
        return Check("image", False, str(exc), "pmemlab image build"), None
    return Check("image", True, f"{image.id}: kernel {image.kernel_version}, built {image.manifest.get('built_at')}",
                 data={"path": str(image.path)}), image


def check_kernel_config(image: image_cache.Image | None) -> Check:
    if image is None:
        return Check("kernel config", False, "no image, so no guest kernel to check", "pmemlab image build")
    if image.config is None:
        return Check("kernel config", True, "the image's kernel came without a config: options not checked")
    options = parse_config(image.config.read_text(errors="replace"))
    missing = missing_options(options)
    shown = {name: options.get(name, "n") for name in list(REQUIRED_OPTIONS) + list(INTERESTING_OPTIONS)}
    detail = ", ".join(f"{k}={v}" for k, v in shown.items())
    if missing:
        return Check("kernel config", False, f"missing {', '.join('CONFIG_' + m for m in missing)}; {detail}",
                     "use a kernel built with FS_DAX, LIBNVDIMM, BLK_DEV_PMEM and ACPI_NFIT", data=shown)
    return Check("kernel config", True, detail, data=shown)


def check_disk() -> list[Check]:
    checks = []
    for label, path in (("disk (cache)", cache_dir()), ("disk (runs)", data_dir())):
        probe = path
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        ok = free >= MIN_FREE_BYTES
        checks.append(Check(label, ok, f"{free / 1024**3:.1f} GiB free at {path}",
                            "free space: runs need a few GiB (captures are sparse copies of the NVDIMMs)"))
    checks.append(check_snapshot_cache())
    return checks


def check_snapshot_cache() -> Check:
    """How much the ready snapshots take, and how much of it can never be used again."""
    from lab.runner.machines import snapshots_dir
    from lab.runner.snapshot_cache import entries

    found = entries(snapshots_dir())
    total = sum(e.allocated for e in found)
    stale = [e for e in found if e.stale]
    detail = (f"{len(found)} ready snapshots, {total / 1024**3:.1f} GiB in {snapshots_dir()}"
              + (f"; {len(stale)} ({sum(e.allocated for e in stale) / 1024**3:.1f} GiB) can never be used again"
                 if stale else ""))
    return Check("snapshot cache", True, detail,
                 "`pmemlab cache gc` removes unusable and least recently used entries" if stale else "",
                 data={"entries": len(found), "bytes": total, "stale": len(stale)})


def check_tools() -> Check:
    needed = ["gcc", "cpio", "depmod", "busybox", "ndctl", "mkfs.ext4", "mkfs.xfs", "xfs_io", "apt-get", "dpkg-deb"]
    missing = [t for t in needed if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        return Check("image tools", False, f"missing: {', '.join(missing)}", "run the README's setup command")
    return Check("image tools", True, "gcc, cpio, depmod, busybox, ndctl, e2fsprogs, xfsprogs present")


def check_persistence_models() -> Check:
    """Which persistence models this host's QEMU supports: eadr always, adr with QEMU >= 9.2 and the
    tracing plugin (lab/adr). A host without adr still runs every eadr case: not a failure."""
    from lab.adr.plugin import PluginBuildError, plugin_path
    from lab.adr.qemu import find_adr_qemu

    try:
        qemu = find_adr_qemu()
        plugin = plugin_path(qemu)
    except PluginBuildError as exc:
        return Check("persistence models", True, f"eadr only: the ADR plugin does not build: {str(exc).splitlines()[0]}",
                     "apt-get install pkg-config libglib2.0-dev", data={"models": ["eadr"]})
    except ConfigError as exc:
        return Check("persistence models", True, f"eadr only: {exc}", "./bootstrap.sh", data={"models": ["eadr"]})
    return Check("persistence models", True, f"eadr, adr ({qemu.version} with the plugin {plugin})",
                 data={"models": ["eadr", "adr"], "adr_qemu": str(qemu.binary), "plugin": str(plugin)})


def check_user(who: Identity) -> list[Check]:
    """What an ordinary user needs: /dev/kvm for speed, the cache and data directories for anything."""
    checks = [check_writable("writable (cache)", cache_dir(), who), check_writable("writable (runs)", data_dir(), who)]
    kvm = check_kvm_access(Path("/dev/kvm"), os.access("/dev/kvm", os.R_OK | os.W_OK),
                           Path("/sys/module/kvm_pvm").exists(), who)
    return checks + ([kvm] if kvm else [])


def check_libvirt() -> Check:
    """The optional libvirt backend: informational, never a failure of the lab itself."""
    from lab.vm.backend import DEFAULT_LIBVIRT_URI
    from lab.vm.libvirt_machine import NO_SNAPSHOTS, libvirt_status

    usable, detail = libvirt_status(DEFAULT_LIBVIRT_URI)
    return Check("libvirt backend", True, f"{detail}; {NO_SNAPSHOTS}",
                 "" if usable else "optional: --backend libvirt needs libvirt-python and a reachable libvirtd",
                 data={"usable": usable, "snapshots": False})


def run_checks(image_name: str = image_cache.DEFAULT_REF) -> Report:
    checks = check_qemu()
    image_check, image = check_image(image_name)
    if shutil.which(QEMU):
        accel_check = check_accel(image)
        checks.append(accel_check)
        checks.append(check_snapshots(image, accel_check.data.get("decided")))
    checks += check_user(Identity.current())
    checks += [check_tools(), image_check, check_kernel_config(image), check_persistence_models()] + check_disk()
    checks.append(check_libvirt())
    return Report(checks)
