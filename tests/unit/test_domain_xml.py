"""libvirt domain XML, byte-for-byte against golden files (the libvirt backend's argv goldens).

Regenerate after an intended change: PMEMLAB_REGEN_GOLDEN=1 pytest tests/unit/test_domain_xml.py
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.vm.backend import Backend, BackendChoice
from lab.vm.domain_xml import domain_xml
from lab.vm.libvirt_machine import domain_name
from lab.vm.spec import MIB, RamFile
from tests.unit.test_qemu_argv import CASES, _spec

GOLDEN = Path(__file__).parent / "golden"
EMULATOR = "/usr/bin/qemu-system-x86_64"


def _xml(name: str) -> str:
    return domain_xml(CASES[name], domain_name("run1", "workload"), EMULATOR, Path("/tmp/s/agent.sock"),
                      Path("/tmp/s/events.sock"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_domain_xml_matches_golden(name: str) -> None:
    got = _xml(name)
    path = GOLDEN / f"{name}.domain.xml"
    if os.environ.get("PMEMLAB_REGEN_GOLDEN"):
        path.write_text(got)
    assert path.read_text() == got


def test_nvdimm_memory_hotplug_and_numa() -> None:
    root = ET.fromstring(_xml("tcg-two-nvdimms-label"))
    assert root.get("type") == "qemu"  # TCG
    assert root.find("name").text == "pmemlab-run1-workload"  # type: ignore[union-attr]
    assert root.find("maxMemory").get("slots") == "2"  # type: ignore[union-attr]
    assert root.find("maxMemory").text == str(2816 * 1024)  # type: ignore[union-attr]
    assert root.find("features/acpi") is not None
    assert root.find("cpu/numa/cell").get("memory") == str(2048 * 1024)  # type: ignore[union-attr]
    nvdimms = root.findall("devices/memory[@model='nvdimm']")
    assert [n.get("access") for n in nvdimms] == ["shared", "shared"]
    assert [n.find("source/path").text for n in nvdimms] == ["/run/a.img", "/run/b.img"]  # type: ignore[union-attr]
    # <pmem/>: without it libvirt adds prealloc and a sparse media file becomes fully allocated
    assert all(n.find("source/pmem") is not None for n in nvdimms)
    assert nvdimms[0].find("target/label") is None
    assert nvdimms[1].find("target/label/size").text == "128"  # type: ignore[union-attr]
    channels = {c.find("target").get("name"): c.find("source").get("path")  # type: ignore[union-attr]
                for c in root.findall("devices/channel[@type='unix']")}
    assert channels == {"pmemlab.agent": "/tmp/s/agent.sock", "pmemlab.events": "/tmp/s/events.sock"}
    assert root.find("devices/serial/source").get("path") == "/run/t.console.log"  # type: ignore[union-attr]


def test_kvm_domain_type_and_cpu() -> None:
    root = ET.fromstring(_xml("kvm-one-nvdimm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


def test_paths_are_escaped() -> None:
    spec = _spec(console_log=Path("/run/a'b&<c>.log"))
    root = ET.fromstring(domain_xml(spec, "pmemlab-x-y", EMULATOR, Path("/a"), Path("/b")))
    assert root.find("devices/serial/source").get("path") == "/run/a'b&<c>.log"  # type: ignore[union-attr]


def test_ready_snapshot_ram_is_refused() -> None:
    with pytest.raises(ValueError, match="no file-backed RAM"):
        domain_xml(_spec(ram_file=RamFile(Path("/r"), shared=False)), "n", EMULATOR, Path("/a"), Path("/b"))


def test_backend_choice_validation() -> None:
    assert BackendChoice.parse("qemu", None).kind is Backend.QEMU
    assert BackendChoice.parse("libvirt", "qemu+libssh://lab@h/system").libvirt_uri == "qemu+libssh://lab@h/system"
    with pytest.raises(ConfigError, match="needs the libvirt backend"):
        BackendChoice.parse("qemu", "qemu:///system")
    with pytest.raises(ConfigError, match="libvirt URI 'xen:///'"):
        BackendChoice.parse("libvirt", "xen:///")
    with pytest.raises(ConfigError, match="expected one of qemu, libvirt"):
        BackendChoice.parse("vmware", None)
    assert MIB == 1024 * 1024


SCENARIO = """\
[scenario]
name = "t"
description = "d"
workload = "mapsync"

[machine]
{machine}

[crash]
strategy = "after_ack"
ack = 20

[[expect]]
verdict = "PASS"
"""


def test_scenario_machine_backend(tmp_path: Path) -> None:
    from lab.scenario.load import load_scenario

    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(machine='backend = "libvirt"\nlibvirt_uri = "qemu:///session"'))
    assert load_scenario(path).machines == BackendChoice(Backend.LIBVIRT, "qemu:///session")
    path.write_text(SCENARIO.format(machine="cpus = 2"))
    assert load_scenario(path).machines == BackendChoice()
    path.write_text(SCENARIO.format(machine='libvirt_uri = "qemu:///system"'))
    with pytest.raises(ConfigError, match="libvirt_uri needs backend"):
        load_scenario(path)
    path.write_text(SCENARIO.format(machine='backend = "xen"'))
    with pytest.raises(ConfigError, match="backend"):
        load_scenario(path)


def test_unreachable_libvirt_is_a_lab_error(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    from lab.errors import MachineError
    from lab.vm.libvirt_machine import LibvirtMachine
    from lab.vm.media import MediaLock
    from lab.vm.spec import NvdimmSpec

    media = tmp_path / "nv.img"
    media.write_bytes(b"")
    spec = _spec(console_log=tmp_path / "c.log", nvdimms=(NvdimmSpec(media, 2 * MIB),))
    uri = f"qemu+unix:///system?socket={tmp_path}/no-such-sock"
    machine = LibvirtMachine(spec, tmp_path, uri, "run1")
    with pytest.raises(MachineError, match=r"cannot connect to libvirt at qemu\+unix"):
        machine.launch()
    assert machine.state.value == "dead"
    MediaLock(media).acquire().release()  # the lock was released on the failed launch
    assert (tmp_path / "t.domain.xml").is_file()  # what would have been started is kept for the user
