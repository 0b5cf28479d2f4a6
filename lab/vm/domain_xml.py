"""Machine specs as libvirt domain XML (the libvirt backend's `qemu_argv`).

The same typed MachineSpec the QEMU backend turns into an argument list
becomes a transient domain here; the text is tested byte-for-byte against
golden files in tests/unit/golden/. What differs from the argument list, and
why:
- the agent and event ports are virtio-serial `<channel type='unix'>`s that
  QEMU binds (libvirt cannot pass a socketpair in): the lab connects to them;
- NVDIMMs are `<memory model='nvdimm' access='shared'>` with `<pmem/>`: without
  it libvirt 9.0 adds `prealloc=on` and a sparse 1 GiB media file becomes
  fully allocated (LAB-NOTES); `pmem=on` (QEMU has libpmem) asks for none;
- memory hotplug needs `<maxMemory slots>`, one NUMA cell and ACPI;
- no ready-snapshot RAM file: the libvirt backend cold-boots (lab/vm/libvirt_machine.py).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from lab.vm.spec import MIB, Accel, MachineSpec

KIB = 1024
AGENT_PORT = "pmemlab.agent"
EVENTS_PORT = "pmemlab.events"


def _attr(value: str) -> str:
    """An attribute value in single quotes, escaped."""
    return "'" + escape(value, {"'": "&apos;", '"': "&quot;"}) + "'"


def _kib(nbytes: int) -> int:
    return -(-nbytes // KIB)


def domain_xml(spec: MachineSpec, domain_name: str, emulator: str, agent_socket: Path, events_socket: Path) -> str:
    """Domain XML for `spec`, named `domain_name`, run by `emulator` (an absolute path)."""
    if spec.ram_file is not None:
        raise ValueError(f"machine {spec.name!r}: the libvirt backend has no file-backed RAM (ready snapshots)")
    if spec.extra_args:
        raise ValueError(f"machine {spec.name!r}: the libvirt backend cannot pass extra QEMU arguments "
                         f"{list(spec.extra_args)}")
    ram_kib = spec.memory_mib * MIB // KIB
    nv_kib = sum(_kib(nv.size) for nv in spec.nvdimms)
    kvm = spec.accel is Accel.KVM
    cpu_mode = "host-passthrough" if kvm else "maximum"
    a = _attr
    lines = [
        f"<domain type={a('kvm' if kvm else 'qemu')}>",
        f"  <name>{escape(domain_name)}</name>",
        f"  <maxMemory slots={a(str(max(1, len(spec.nvdimms))))} unit='KiB'>{spec.max_memory_mib * MIB // KIB}"
        "</maxMemory>",
        f"  <memory unit='KiB'>{ram_kib + nv_kib}</memory>",
        f"  <currentMemory unit='KiB'>{ram_kib}</currentMemory>",
        f"  <vcpu>{spec.cpus}</vcpu>",
        "  <genid/>",  # a fresh generation id: as -device vmgenid,guid=auto
        "  <os>",
        "    <type arch='x86_64' machine='q35'>hvm</type>",
        f"    <kernel>{escape(str(spec.kernel))}</kernel>",
        f"    <initrd>{escape(str(spec.initrd))}</initrd>",
        f"    <cmdline>{escape(spec.kernel_cmdline())}</cmdline>",
        "  </os>",
        "  <features>",
        "    <acpi/>",
        "  </features>",
        f"  <cpu mode={a(cpu_mode)} check='none'>",
        "    <numa>",
        f"      <cell id='0' cpus={a(f'0-{spec.cpus - 1}' if spec.cpus > 1 else '0')} memory={a(str(ram_kib))} "
        "unit='KiB'/>",
        "    </numa>",
        "  </cpu>",
        # -no-reboot: a guest reboot (panic=-1 after a panic) ends the machine
        "  <on_poweroff>destroy</on_poweroff>",
        "  <on_reboot>destroy</on_reboot>",
        "  <on_crash>destroy</on_crash>",
        "  <devices>",
        f"    <emulator>{escape(emulator)}</emulator>",
        "    <serial type='file'>",
        f"      <source path={a(str(spec.console_log))}/>",
        "      <target port='0'/>",
        "    </serial>",
        "    <controller type='usb' model='none'/>",
        "    <controller type='virtio-serial' index='0'/>",
    ]
    for port, path in ((AGENT_PORT, agent_socket), (EVENTS_PORT, events_socket)):
        lines += [
            "    <channel type='unix'>",
            f"      <source mode='bind' path={a(str(path))}/>",
            f"      <target type='virtio' name={a(port)}/>",
            "    </channel>",
        ]
    for nv in spec.nvdimms:
        lines += [
            "    <memory model='nvdimm' access='shared'>",
            "      <source>",
            f"        <path>{escape(str(nv.backing_file))}</path>",
            f"        <alignsize unit='KiB'>{_kib(nv.align)}</alignsize>",
            "        <pmem/>",
            "      </source>",
            "      <target>",
            f"        <size unit='KiB'>{_kib(nv.size)}</size>",
            "        <node>0</node>",
        ]
        if nv.label_size is not None:
            lines += ["        <label>", f"          <size unit='KiB'>{_kib(nv.label_size)}</size>", "        </label>"]
        lines += ["      </target>", "    </memory>"]
    for share in spec.shares:
        lines += [
            "    <filesystem type='mount' accessmode='squash'>",
            f"      <source dir={a(str(share.host_dir))}/>",
            f"      <target dir={a(share.tag)}/>",
            "    </filesystem>",
        ]
    lines += [
        "    <memballoon model='none'/>",
        "  </devices>",
        "</domain>",
    ]
    return "\n".join(lines) + "\n"
