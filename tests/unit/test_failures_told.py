"""Failures told as they are, the pure parts: taint decoding, how QEMU ended, the disk-full line,
per-run log files, result files that leave no temporary behind, the CLI's disk-full message."""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lab import logs, space
from lab.cli import lab_errors
from lab.errors import AgentClosed, GuestError, MachineError, QemuDied
from lab.oracles import taint
from lab.runner.guest_run import space_needed
from lab.runner.machines import BUILD_NEEDS_MIB
from lab.runs import write_json
from lab.verdict import Verdict
from lab.vm.boot import GIB, MIB, MachineShape
from lab.vm.machine import Machine, MachineState, describe_exit, output_tail
from lab.vm.process import OwnedProcess
from lab.vm.spec import MachineSpec, NvdimmSpec

# -- taint ----------------------------------------------------------------------------------


def test_taint_letters_follow_the_kernel_table() -> None:
    assert taint.letters(0) == ""
    assert taint.letters(1 << 9) == "W"
    assert taint.letters((1 << 7) | (1 << 9) | (1 << 14)) == "DWL"
    assert taint.letters((1 << 12) | (1 << 13)) == "OE"
    assert taint.letters(1 << 0) == "P"
    assert taint.letters(1 << 25) == "?25"


def test_taint_describe_names_each_bit() -> None:
    assert taint.describe(0) == "none"
    assert taint.describe(1 << 5) == "B (bad page referenced or some unexpected page flags)"
    assert taint.describe((1 << 9) | (1 << 30)) == "W (kernel issued warning), bit 30 (unknown)"


def test_taint_parse() -> None:
    assert taint.parse("0\n") == 0
    assert taint.parse(" 512 ") == 512
    with pytest.raises(GuestError, match="/proc/sys/kernel/tainted read 'x'"):
        taint.parse("x")
    with pytest.raises(GuestError, match="negative"):
        taint.parse("-1")


def test_new_bits_ignore_the_baseline_and_module_provenance() -> None:
    warn, oot, unsigned = 1 << 9, 1 << 12, 1 << 13
    assert taint.new_bits(0, warn) == warn
    assert taint.new_bits(warn, warn) == 0  # set at boot: not this run's doing
    assert taint.new_bits(0, oot | unsigned) == 0  # a module loaded on demand
    assert taint.new_bits(oot, oot | warn) == warn


def test_taint_log_finding() -> None:
    log = taint.TaintLog()
    assert log.finding() is None  # nothing read
    log.baseline("workload", 0)
    assert log.finding() is None  # read once only
    log.later("workload", 0, "the workload's last cut")
    log.baseline("recovery", 4096)  # O from boot
    log.later("recovery", 4096, "before poweroff")
    finding = log.finding()
    assert finding is not None and finding.verdict is Verdict.PASS
    assert finding.summary == "no new kernel taint: workload 0, recovery 4096 (O)"
    log.later("recovery", 4096 | (1 << 9) | (1 << 7), "before poweroff")
    finding = log.finding()
    assert finding is not None and finding.verdict is Verdict.KERNEL_BUG and finding.oracle == "kernel-taint"
    assert "recovery: D (kernel died recently (OOPS or BUG)), W (kernel issued warning)" in finding.summary
    assert "taint 4096 -> 4736, after before poweroff" in finding.summary
    assert finding.details["recovery"]["latest_flags"] == "DWO"


def test_taint_log_records_a_failed_read() -> None:
    log = taint.TaintLog()
    log.baseline("guest", 0)
    log.failed("guest", "before poweroff: agent channel closed")
    assert log.finding() is None
    assert log.to_dict()["guest"]["error"] == "before poweroff: agent channel closed"


# -- how QEMU ended -------------------------------------------------------------------------


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-7) == "killed by signal 7 (SIGBUS)"
    assert describe_exit(-99) == "killed by signal 99 (unknown signal)"


def test_output_tail_keeps_the_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(10)) + "\n\n"
    assert output_tail(text, 3) == "line 7 | line 8 | line 9"
    assert output_tail("") == ""


def _machine_running(tmp_path: Path, script: str) -> Machine:
    """A Machine whose 'QEMU' is a shell script: the death classification runs on a real process."""
    media = tmp_path / "nvdimm0.img"
    media.write_bytes(b"")
    spec = MachineSpec("workload", tmp_path / "k", tmp_path / "i", tmp_path / "console.log",
                       nvdimms=(NvdimmSpec(media, 2 * 1024**2),))
    machine = Machine(spec, tmp_path)
    machine.process = OwnedProcess(["sh", "-c", script], tmp_path / "workload.qemu.log")
    machine.state = MachineState.RUNNING
    return machine


@pytest.mark.parametrize("told", [AgentClosed("guest agent channel closed (EOF): the guest powered off or died"),
                                  MachineError("QMP stop failed: disconnected")])
def test_a_closed_channel_or_failed_qmp_after_qemu_died_is_told_as_the_death(told: Exception, tmp_path: Path) -> None:
    machine = _machine_running(tmp_path, "echo 'qemu-system-x86_64: something broke'; kill -KILL $$")
    with pytest.raises(QemuDied) as died:
        with machine:
            raise told
    assert str(died.value) == ("QEMU for machine 'workload' died: killed by signal 9 (SIGKILL); "
                               "QEMU said: qemu-system-x86_64: something broke")
    assert died.value.__cause__ is told and died.value.errno is None
    assert machine.state is MachineState.DEAD


def test_sigbus_over_a_full_filesystem_is_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space, "nearly_full", lambda path: path.name == "nvdimm0.img")
    machine = _machine_running(tmp_path, "kill -BUS $$")
    with pytest.raises(QemuDied) as died:
        with machine:
            raise AgentClosed("EOF")
    assert died.value.errno == errno.ENOSPC and died.value.path == str(tmp_path / "nvdimm0.img")
    assert "killed by signal 7 (SIGBUS): the filesystem under its backing file" in str(died.value)


def test_an_exit_the_lab_asked_for_is_no_death(tmp_path: Path) -> None:
    machine = _machine_running(tmp_path, "sleep 30")
    with pytest.raises(AgentClosed):  # the body's own error stands: QEMU was destroyed by the lab
        with machine:
            machine.destroy()
            raise AgentClosed("EOF")
    machine = _machine_running(tmp_path, "sleep 30")
    with pytest.raises(GuestError, match="a command failed"):  # QEMU alive: nothing to tell, no wait
        with machine:
            raise GuestError("a command failed")
    assert machine.process is not None and not machine.process.alive()


# -- disk full ------------------------------------------------------------------------------


def test_human() -> None:
    assert space.human(512) == "512 B"
    assert space.human(1536) == "1.5 KiB"
    assert space.human(2 * GIB) == "2.0 GiB"


def test_disk_full_line() -> None:
    line = space.disk_full_line(Path("/d/runs/r1/nvdimm0.img"), Path("/d"), 40 * 1024**2, 2 * GIB)
    assert line == ("disk full: no space left for /d/runs/r1/nvdimm0.img on /d (40.0 MiB filesystem); "
                    "this run needs up to 2.0 GiB there: free space, then run it again")
    assert "\n" not in line
    assert "needs" not in space.disk_full_line(Path("/x"), Path("/"), GIB, None)
    assert "this run needs about 400.0 MiB there" in space.disk_full_line(Path("/x"), Path("/"), GIB, 400 * MIB,
                                                                            "about")


def test_full_path_follows_the_causes() -> None:
    oserror = OSError(errno.ENOSPC, "No space left on device", "/d/runs/r1/result.json")
    assert space.full_path(oserror) == Path("/d/runs/r1/result.json")
    died = QemuDied("QEMU died: killed by signal 7 (SIGBUS)", -7, errno.ENOSPC, "/d/nvdimm0.img")
    assert space.full_path(died) == Path("/d/nvdimm0.img")
    try:
        try:
            raise oserror
        except OSError:
            raise RuntimeError("cannot capture") from None  # the context is kept
    except RuntimeError as wrapped:
        assert space.full_path(wrapped) == Path("/d/runs/r1/result.json")
    assert space.full_path(OSError(errno.EACCES, "denied", "/x")) is None
    assert space.full_path(QemuDied("died", -9)) is None


def test_space_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    shape = MachineShape(memory_mib=512, nvdimm_size=GIB)
    assert space_needed(shape, tmp_path / "runs" / "r1") == (2 * GIB, "up to")
    assert space_needed(shape, tmp_path / "cache" / "snapshots" / "k" / "ram.img") == (BUILD_NEEDS_MIB * MIB, "about")


def test_write_json_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.mkdir()
    (target / "occupied").write_text("x")  # rename onto a non-empty directory fails
    with pytest.raises(OSError):
        write_json(target, {"verdict": "PASS"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_cli_says_disk_full_in_one_line() -> None:
    @click.command()
    @lab_errors
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/nonexistent/data/runs/x/result.json")

    result = CliRunner().invoke(full, [], env={"NO_COLOR": "1", "COLUMNS": "300"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full: no space left for "
                                                   "/nonexistent/data/runs/x/result.json on /")


# -- logging --------------------------------------------------------------------------------


def test_each_run_log_takes_only_its_own_thread(tmp_path: Path) -> None:
    logger = logging.getLogger("lab.test.runlog")
    logger.info("before any run")
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        run_dir = tmp_path / name
        run_dir.mkdir()
        with logs.run_log(run_dir):
            barrier.wait()
            logger.debug("step of %s", name)
            with logs.run_log(run_dir):  # nested: no second handler, no doubled lines
                logger.info("nested step of %s", name)
            barrier.wait()
        logger.info("after %s", name)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for mine, other in (("a", "b"), ("b", "a")):
        text = (tmp_path / mine / "lab.log").read_text()
        assert text.count(f"step of {mine}") == 2 and f"of {other}" not in text
        assert "before any run" not in text and f"after {mine}" not in text
        assert "DEBUG" in text and "lab.test.runlog" in text


def test_verbosity_levels_and_one_stderr_handler() -> None:
    assert logs.level_for(0) == logging.WARNING
    assert logs.level_for(1) == logging.INFO
    assert logs.level_for(3) == logging.DEBUG
    logger = logging.getLogger("lab")
    try:
        logs.configure_stderr(1)
        logs.configure_stderr(2)
        mine = [h for h in logger.handlers if h.get_name() == logs.STDERR_HANDLER]
        assert len(mine) == 1 and mine[0].level == logging.DEBUG
    finally:
        for handler in [h for h in logger.handlers if h.get_name() == logs.STDERR_HANDLER]:
            logger.removeHandler(handler)
