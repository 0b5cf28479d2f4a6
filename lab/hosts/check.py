"""`pmemlab host check`: what a lab host offers, asked over SSH."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lab.hosts.remote_attempt import cache_there, pmemlab_argv
from lab.hosts.ssh import HostConnection, HostError

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class HostFact:
    name: str
    ok: bool
    detail: str


def check_host(conn: HostConnection) -> list[HostFact]:
    host = conn.host
    facts = [HostFact("ssh", True, f"{host.target}: host key verified against {host.known_hosts_path}")]
    version = conn.run([QEMU, "--version"], timeout=30, check=False)
    facts.append(HostFact("qemu", version.ok, version.stdout.splitlines()[0] if version.ok and version.stdout
                          else f"{QEMU} not runnable there: {version.stderr.strip()[-200:]}"))
    if version.ok:
        devices = conn.run([QEMU, "-device", "help"], timeout=30, check=False)
        nvdimm = '"nvdimm"' in devices.stdout
        facts.append(HostFact("nvdimm", nvdimm, "QEMU offers -device nvdimm" if nvdimm else "QEMU lacks nvdimm"))
    lab = conn.run(pmemlab_argv(host, "--version"), timeout=60, check=False)
    facts.append(HostFact("pmemlab", lab.ok, f"{host.pmemlab}: {lab.stdout.strip()}" if lab.ok
                          else f"{host.pmemlab} not runnable there (--host needs it; set the inventory's pmemlab "
                               f"field): {(lab.stderr.strip() or lab.stdout.strip())[-200:]}"))
    if lab.ok:
        facts.append(_persistence_models(conn))
    kvm = conn.run(["test", "-c", "/dev/kvm"], timeout=10, check=False).ok
    pvm = conn.run(["test", "-e", "/sys/module/kvm_pvm"], timeout=10, check=False).ok
    accel = ("tcg: /dev/kvm is the kvm_pvm module (normal guests hang under it)" if kvm and pvm
             else "kvm likely (a first run proves it with a test boot)" if kvm else "tcg: no /dev/kvm")
    facts.append(HostFact("accelerator", True, accel))
    conn.run(["mkdir", "-p", "--", f"{cache_there(host)}/images"], timeout=10)
    df = conn.run(["df", "-B1", "--output=avail", host.workdir], timeout=10, check=False)
    try:
        free = int(df.stdout.split()[-1])
        facts.append(HostFact("disk", free >= 4 << 30, f"{free / (1 << 30):.1f} GiB free at {host.workdir}"))
    except (IndexError, ValueError):
        facts.append(HostFact("disk", False, f"df at {host.workdir} failed: {df.stderr.strip()}"))
    listing = conn.run(["ls", "-1", "--", f"{cache_there(host)}/images"], timeout=10, check=False)
    ids = sorted(n for n in listing.stdout.split() if not n.startswith("."))
    facts.append(HostFact("images", True, ", ".join(ids) if ids else "none (pmemlab image push HOST)"))
    machines = host.machines()
    if machines.kind.value == "libvirt":
        virsh = conn.run(["virsh", "-c", machines.libvirt_uri, "version"], timeout=60, check=False)
        facts.append(HostFact("libvirt", virsh.ok, f"{machines.libvirt_uri} answers" if virsh.ok
                              else f"{machines.libvirt_uri}: {virsh.stderr.strip()[-200:]}"))
    return facts


def _persistence_models(conn: HostConnection) -> HostFact:
    """Which persistence models the host's QEMU supports (eadr always; adr with QEMU >= 9.2 and the
    tracing plugin), in the words of its own doctor, run with its own cache (no machine is started)."""
    name = "persistence models"
    out = conn.run(pmemlab_argv(conn.host, "doctor", "--json"), timeout=120, check=False)  # exit 1: some check failed
    try:
        found = next(c for c in json.loads(out.stdout)["checks"] if c["name"] == name)
        return HostFact(name, True, str(found["detail"]))
    except (ValueError, KeyError, TypeError, StopIteration):
        return HostFact(name, False, f"pmemlab doctor there did not say: {(out.stderr.strip() or out.stdout.strip())[-200:]}")


__all__ = ["HostFact", "check_host", "HostError"]
