"""The ADR model without QEMU: the dump reader, crash states, the QEMU check, the plugin build, argv."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from lab.adr import plugin as plugin_mod
from lab.adr import qemu as qemu_mod
from lab.adr.states import (DirtyLine, DumpError, PendingStore, crash_states, parse_dump, read_lines,
                            write_state)
from lab.errors import ConfigError, LabError
from lab.vm.boot import MachineShape, shape_dict, shape_from_dict
from lab.vm.plugin_channel import PluginChannel, PluginError
from lab.vm.spec import ChannelFds, MachineSpec, Persistence, qemu_argv

BASE = 0x100000000


def line_text(addr: int, mask: int, shadow: bytes, stores: list[tuple[int, int, bytes, str]]) -> list[str]:
    rows = [f"line {addr:#x} {mask:016x} {shadow.hex()}"]
    rows += [f"s {seq} 0 {a:#x} {len(v)} {state} {v.hex()}" for seq, a, v, state in stores]
    return rows


def write_dump(path: Path, lines: list[list[str]], end: str | None = None) -> Path:
    body = [row for rows in lines for row in rows]
    stores = sum(1 for row in body if row.startswith("s "))
    text = ["pmemlab-adrtrace 1", f"range {BASE:#x} 0x40000000",
            "counts stores=9 flushes=0 unresolved_flushes=0 fences=0 nt_stores=0 wbinvd=0", *body,
            end if end is not None else f"end {len(lines)} {stores}"]
    path.write_text("\n".join(text) + "\n")
    return path


def two_lines() -> list[list[str]]:
    return [line_text(BASE + 0x1000, 0xff, bytes(range(8)) + bytes(56),
                      [(5, BASE + 0x1008, b"\xaa" * 8, "u"), (6, BASE + 0x1010, b"\xbb" * 8, "f")]),
            line_text(BASE + 0x40, 0, bytes(64), [(7, BASE + 0x40, b"\xcc" * 4, "u")])]


def test_a_whole_dump_reads_back(tmp_path: Path) -> None:
    dump = parse_dump(write_dump(tmp_path / "d", two_lines()), expected=(2, 3))
    assert (dump.base, dump.size, dump.counts["stores"]) == (BASE, 0x40000000, 9)
    assert [line.addr for line in dump.lines] == [BASE + 0x40, BASE + 0x1000]  # address order
    assert dump.lines[1].stores[1] == PendingStore(6, 0, BASE + 0x1010, b"\xbb" * 8, True)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda text: text[: text.index("end ")], "truncated (no end line)"),
    (lambda text: text.rsplit("\n", 3)[0] + "\nend 2 3\n", "truncated: 2 lines / 2 stores, its end line says 2 / 3"),
    (lambda text: text.replace("pmemlab-adrtrace 1", "other"), "not a 'pmemlab-adrtrace 1' dump"),
    (lambda text: text.replace(" 8 u aaaa", " 9 u aaaa"), "malformed"),
    (lambda text: "", "not a"),
])
def test_a_truncated_or_bad_dump_is_a_lab_error(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_dump(tmp_path / "d", two_lines())
    path.write_text(mutate(path.read_text()))
    with pytest.raises(DumpError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_dump(path)
    assert isinstance(info.value, LabError)  # the pipeline turns it into INFRA-ERROR, never a verdict


def test_counts_that_differ_from_the_plugins_reply_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DumpError, match="the plugin reported 2 lines / 4 stores"):
        parse_dump(write_dump(tmp_path / "d", two_lines()), expected=(2, 4))
    with pytest.raises(DumpError):
        parse_dump(tmp_path / "missing")


def test_drop_all_reverts_to_the_baseline_under_the_persisted_shadow() -> None:
    line = DirtyLine(BASE, 0b11, b"\x01\x02" + bytes(62), (PendingStore(1, 0, BASE + 1, b"\x09", False),))
    baseline = b"\xff" * 64
    persisted = line.persisted(baseline)
    assert persisted == b"\x01\x02" + b"\xff" * 62
    assert line.with_prefix(persisted, 1) == b"\x01\x09" + b"\xff" * 62


def test_states_enumerate_subsets_of_few_lines_and_deduplicate(tmp_path: Path) -> None:
    dump = parse_dump(write_dump(tmp_path / "d", two_lines()))
    baseline = {line.addr: bytes(64) for line in dump.lines}
    states = crash_states(dump, baseline, subsets=10, seed=1)
    assert [s.id for s in states] == ["adr:drop-all", "adr:subset:10", "adr:subset:01", "adr:subset:11"]
    assert [s.kept_stores for s in states] == [0, 1, 2, 3]
    assert len({s.digest for s in states}) == len(states)
    drop = states[0].lines
    assert drop[0x1000] == bytes(range(8)) + bytes(56) and drop[0x40] == bytes(64)
    assert crash_states(dump, baseline, subsets=0, seed=1)[0].id == "adr:drop-all"
    assert len(crash_states(dump, baseline, subsets=1, seed=1)) == 2


def test_many_lines_get_seeded_random_in_order_prefixes(tmp_path: Path) -> None:
    lines = [line_text(BASE + 64 * i, 0, bytes(64), [(2 * i, BASE + 64 * i, b"\x01", "u"),
                                                     (2 * i + 1, BASE + 64 * i + 1, b"\x02", "u")])
             for i in range(6)]
    dump = parse_dump(write_dump(tmp_path / "d", lines))
    baseline = {line.addr: bytes(64) for line in dump.lines}
    first = crash_states(dump, baseline, subsets=5, seed=7)
    again = crash_states(dump, baseline, subsets=5, seed=7)
    assert [s.id for s in first] == [s.id for s in again] and [s.digest for s in first] == [s.digest for s in again]
    assert all(s.id.startswith("adr:random:7:") for s in first[1:])
    for state in first:  # a store is never kept without the stores before it on its line
        for data in state.lines.values():
            assert data[1] == 0 or data[0] == 1


def test_a_state_is_written_over_a_copy_of_the_capture(tmp_path: Path) -> None:
    dump = parse_dump(write_dump(tmp_path / "d", two_lines()))
    media = tmp_path / "capture.img"
    media.write_bytes(b"\x55" * 8192)
    baseline = read_lines(media, dump.base, dump)
    state = crash_states(dump, baseline, subsets=0, seed=0)[0]
    copy = tmp_path / "state.img"
    copy.write_bytes(media.read_bytes())
    write_state(media, copy, state)
    data = copy.read_bytes()
    assert data[0x40:0x80] == b"\x55" * 64 and data[0x1000:0x1008] == bytes(range(8))
    assert data[0x1008:0x1040] == b"\x55" * 56 and data[:0x40] == b"\x55" * 64


def test_versions_and_the_refusal_of_an_old_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert qemu_mod.parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert qemu_mod.parse_version("QEMU emulator version 7.2.22") == (7, 2, 22)
    old = tmp_path / "qemu"
    old.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)'\n")
    old.chmod(0o755)
    monkeypatch.setenv("PMEMLAB_ADR_QEMU", str(old))
    with pytest.raises(ConfigError) as info:
        qemu_mod.find_adr_qemu()
    text = str(info.value)
    assert "needs QEMU >= 9.2" in text and "7.2.22" in text and "bootstrap.sh" in text and "\n" not in text
    monkeypatch.setenv("PMEMLAB_ADR_QEMU", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="none at"):
        qemu_mod.find_adr_qemu()
    assert qemu_mod.supported()[0] is False


def test_a_plugin_that_does_not_compile_shows_the_compiler_output(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    header = tmp_path / "qemu-plugin.h"
    header.write_text("/* empty */\n")
    source = tmp_path / "broken.c"
    source.write_text("int main(void) { return undeclared_thing; }\n")
    qemu = qemu_mod.AdrQemu(Path("/bin/true"), "QEMU emulator version 10.0.2", (), header)
    try:
        plugin_mod._glib_cflags()
    except plugin_mod.PluginBuildError:
        pytest.skip("no glib headers here")
    with pytest.raises(plugin_mod.PluginBuildError) as info:
        plugin_mod.plugin_path(qemu, source)
    assert "did not compile" in str(info.value) and "undeclared_thing" in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_the_plugin_source_compiles_against_a_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        qemu = qemu_mod.find_adr_qemu()
    except ConfigError:
        pytest.skip("no ADR QEMU (and its qemu-plugin.h) on this host")
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    built = plugin_mod.plugin_path(qemu)
    assert built.is_file() and plugin_mod.plugin_path(qemu) == built  # content-addressed: built once


def test_argv_loads_the_plugin_on_its_control_fd_and_the_shape_keeps_the_model() -> None:
    spec = MachineSpec("m", Path("K"), Path("I"), Path("C"), plugin=Path("/p/adrtrace.so"),
                       data_dirs=(Path("/q/share/qemu"),))
    argv = qemu_argv(spec, ChannelFds(3, 4, 5, plugin=6))
    assert argv[-4:] == ["-L", "/q/share/qemu", "-plugin", "/p/adrtrace.so,ctl=6"]
    with pytest.raises(ValueError, match="no control socket"):
        qemu_argv(spec, ChannelFds(3, 4, 5))
    assert "-plugin" not in qemu_argv(MachineSpec("m", Path("K"), Path("I"), Path("C")), ChannelFds(3, 4, 5))
    adr = MachineShape(persistence=Persistence.ADR)
    assert shape_dict(adr)["persistence"] == "adr" and "persistence" not in shape_dict(MachineShape())
    assert shape_from_dict(shape_dict(adr)) == adr and shape_from_dict(shape_dict(MachineShape())) == MachineShape()


def test_the_control_channel_waits_for_armed_and_poking_the_guest(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    pokes: list[int] = []

    def peer() -> None:  # the protocol's other end, as adrtrace.c speaks it
        f = theirs.makefile("rwb", buffering=0)
        assert f.readline() == b"arm 0x100 0x40\n"
        while len(pokes) < 2:
            pass
        f.write(b"armed\n")
        assert f.readline().startswith(b"dump ")
        f.write(b"dumped 2 3\n")
        assert f.readline() == b"dump /x\n"
        f.write(b"error /x: Permission denied\n")
        theirs.close()

    thread = threading.Thread(target=peer)
    thread.start()
    channel = PluginChannel(ours, "m")
    channel.arm(0x100, 0x40, poke=lambda: pokes.append(1), timeout=10)
    assert len(pokes) >= 2
    assert channel.dump(tmp_path / "d") == (2, 3)
    with pytest.raises(PluginError, match="Permission denied"):
        channel.dump(Path("/x"))
    with pytest.raises(PluginError, match="closed its channel|cannot write|channel failed"):
        channel.ping()
    thread.join(5)
    ours.close()


def test_the_mapsync_scenario_has_adr_cells_with_the_model_and_exports_them() -> None:
    from lab.cases import expand, export_case_scenario
    from lab.crash.cut_flow import CutCheck
    from lab.paths import scenarios_dir
    from lab.scenario import load_scenario

    cases = expand(load_scenario(scenarios_dir() / "mapsync.toml"))
    adr = [c for c in cases if c.cell["persistence"] == "adr"]
    assert len(adr) == 4 * 5  # 2 fs x 2 flush, each cut judged as drop-all + 4 states
    assert all(isinstance(c.check, CutCheck) and c.check.shape.persistence is Persistence.ADR
               and c.check.adr_states == 4 for c in adr)
    assert all(c.check.to_dict()["persistence"] == "adr" for c in adr)
    eadr = [c for c in cases if c.cell["persistence"] == "eadr"]
    assert all(isinstance(c.check, CutCheck) and c.check.shape.persistence is Persistence.EADR
               and c.check.adr_states == 0 for c in eadr)
    text = export_case_scenario(adr[1])  # the export reproduces the case exactly (it checks itself)
    assert 'persistence = ["adr"]' in text and "adr_states = 4" in text and "adr_state = 1" in text


def test_doctor_names_the_models_this_host_supports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lab.doctor import check_persistence_models

    monkeypatch.setenv("PMEMLAB_ADR_QEMU", str(tmp_path / "no-qemu"))
    check = check_persistence_models()
    assert check.ok and check.detail.startswith("eadr only: ") and check.data["models"] == ["eadr"]
    monkeypatch.delenv("PMEMLAB_ADR_QEMU")
    try:
        qemu_mod.find_adr_qemu()
    except ConfigError:
        return
    check = check_persistence_models()
    assert check.data["models"] == ["eadr", "adr"] and "10." in check.detail
