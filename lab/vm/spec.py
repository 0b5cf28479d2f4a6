"""Machine specs and their QEMU command lines.

A spec is plain data; `qemu_argv` turns it into an argument list (never a
shell string). The argument lists are tested byte-for-byte against golden
files in tests/unit/golden/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

MIB = 1024 * 1024
DEFAULT_ALIGN = 2 * MIB


class Accel(str, Enum):
    TCG = "tcg"
    KVM = "kvm"


class Persistence(str, Enum):
    """What a power cut keeps (DESIGN.md, the power-cut model)."""

    EADR = "eadr"  # every executed store: the caches are in the persistence domain
    ADR = "adr"  # only flushed and fenced lines (a TCG plugin traces stores, flushes, fences)


@dataclass(frozen=True)
class NvdimmSpec:
    """One emulated NVDIMM: its backing file is the persistent media."""

    backing_file: Path
    size: int  # bytes
    align: int = DEFAULT_ALIGN
    label_size: int | None = None  # bytes of label area; None: label-less (raw namespace)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % self.align:
            raise ValueError(f"NVDIMM size {self.size} must be a positive multiple of its align {self.align}")


@dataclass(frozen=True)
class ShareSpec:
    """A host directory shared into the guest with virtio-9p."""

    host_dir: Path
    tag: str
    security_model: str = "none"


@dataclass(frozen=True)
class ChannelFds:
    """File descriptors QEMU inherits: QMP, agent port, event port."""

    qmp: int
    agent: int
    events: int
    plugin: int | None = None  # the ADR plugin's control socket (spec.plugin set)


@dataclass(frozen=True)
class RamFile:
    """Guest RAM backed by a file: shared while a ready snapshot's template runs (its RAM is saved
    there, not in the migration stream), private copy-on-write in each clone (the file never changes)."""

    path: Path
    shared: bool


@dataclass(frozen=True)
class MachineSpec:
    name: str
    kernel: Path
    initrd: Path
    console_log: Path
    cpus: int = 2
    memory_mib: int = 1024
    nvdimms: tuple[NvdimmSpec, ...] = ()
    shares: tuple[ShareSpec, ...] = ()
    accel: Accel = Accel.TCG
    cmdline: tuple[str, ...] = ()  # extra kernel arguments
    qemu_binary: str = "qemu-system-x86_64"
    ram_file: RamFile | None = None  # None: anonymous RAM
    extra_args: tuple[str, ...] = field(default=())
    # The ADR model: a TCG plugin (loaded disarmed, controlled over an inherited socket) and the
    # firmware directories of its QEMU's own version (-L, searched before the system's).
    plugin: Path | None = None
    data_dirs: tuple[Path, ...] = ()

    @property
    def max_memory_mib(self) -> int:
        # NVDIMMs are plugged into the memory hotplug area: maxmem must cover them.
        return self.memory_mib + sum(-(-n.size // MIB) for n in self.nvdimms)

    def kernel_cmdline(self) -> str:
        base = [
            "console=ttyS0",
            "panic=-1",  # reboot on panic; with -no-reboot QEMU then exits at once
            "loglevel=5",  # warnings and worse reach the console; boot chatter does not
            "tsc=reliable", "no_timer_check", "mitigations=off",
            "random.trust_cpu=on", "8250.nr_uarts=1", "i8042.noaux", "i8042.nokbd",
        ]
        return " ".join(base + list(self.cmdline))


def qemu_argv(spec: MachineSpec, fds: ChannelFds) -> list[str]:
    """The QEMU argument list for `spec`, with QMP/agent/events on inherited fds."""
    if spec.accel is Accel.KVM:
        machine, cpu = "q35,nvdimm=on,accel=kvm", "host"
    else:
        machine, cpu = "q35,nvdimm=on,accel=tcg", "max"
    ram: list[str] = []
    if spec.ram_file is not None:
        machine += ",memory-backend=pcram"
        ram = ["-object", f"memory-backend-file,id=pcram,size={spec.memory_mib}M,mem-path={spec.ram_file.path},"
                          f"share={'on' if spec.ram_file.shared else 'off'}"]
    argv = [
        spec.qemu_binary,
        "-name", f"pmemlab-{spec.name}",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", machine,
        "-cpu", cpu,
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mib}M,slots={max(1, len(spec.nvdimms))},maxmem={spec.max_memory_mib}M",
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", spec.kernel_cmdline(),
        *ram,
        "-chardev", f"file,id=console,path={spec.console_log}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,fd={fds.qmp}",
        "-mon", "chardev=qmp,mode=control",
        # A fresh generation id per process: clones of one ready snapshot must not share RNG state (KVM).
        "-device", "vmgenid,guid=auto",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=agent,fd={fds.agent}",
        "-device", "virtserialport,bus=vser0.0,chardev=agent,name=pmemlab.agent",
        "-chardev", f"socket,id=events,fd={fds.events}",
        "-device", "virtserialport,bus=vser0.0,chardev=events,name=pmemlab.events",
    ]
    for i, nv in enumerate(spec.nvdimms):
        argv += ["-object", f"memory-backend-file,id=nvmem{i},share=on,mem-path={nv.backing_file},"
                            f"size={nv.size},align={nv.align}"]
        device = f"nvdimm,id=nvdimm{i},memdev=nvmem{i}"
        if nv.label_size is not None:
            device += f",label-size={nv.label_size}"
        argv += ["-device", device]
    for i, share in enumerate(spec.shares):
        argv += ["-fsdev", f"local,id=fsdev{i},path={share.host_dir},security_model={share.security_model}",
                 "-device", f"virtio-9p-pci,fsdev=fsdev{i},mount_tag={share.tag}"]
    for data_dir in spec.data_dirs:
        argv += ["-L", str(data_dir)]
    if spec.plugin is not None:
        if fds.plugin is None:
            raise ValueError(f"machine {spec.name!r} loads a plugin but has no control socket for it")
        argv += ["-plugin", f"{spec.plugin},ctl={fds.plugin}"]
    argv += list(spec.extra_args)
    return argv
