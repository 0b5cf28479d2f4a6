"""The libvirt backend on a libvirtd these tests start (and stop by pid): verdicts equal the qemu
backend's on scenarios/smoke.toml, and no transient domain outlives its controller."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cases import Case, expand
from lab.image.cache import Image
from lab.paths import scenarios_dir
from lab.runner.guest_run import RunHooks
from lab.runner.machines import BootMode
from lab.scenario.load import load_scenario
from lab.vm.accel import AccelVerdict
from lab.vm.backend import Backend, BackendChoice
from lab.workloads.catalog import get_kind

from . import libvirtd

HERE = Path(__file__).parent
REPO_ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def daemon() -> Iterator[libvirtd.Libvirtd]:
    if os.geteuid() != 0:
        pytest.skip("the test libvirtd serves qemu:///system: root only (CI runs as root)")
    started = libvirtd.start()
    yield started
    libvirtd.stop(started)
    if started.pid is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(started.pid, 0)


def _domains(uri: str, prefix: str) -> list[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
    finally:
        conn.close()


def _same_verdicts(daemon: libvirtd.Libvirtd, image: Image, accel: AccelVerdict, tmp_path: Path,
                   cases: list[Case]) -> dict[str, dict[str, tuple[str, int, int]]]:
    """Each case on both backends (qemu: restored ready snapshots; libvirt: cold boots): the expected verdict
    on each, and the same verdict on both; (verdict, acked, survived) per cell and backend."""
    seen: dict[str, dict[str, tuple[str, int, int]]] = {}
    for backend, boot in ((BackendChoice(), BootMode.SNAPSHOT),
                          (BackendChoice(Backend.LIBVIRT, daemon.uri), BootMode.COLD)):
        for case in cases:
            run_dir = tmp_path / f"{backend.kind.value}-{case.id}"
            run_dir.mkdir()
            result = get_kind(case.workload).run(case.check, image, accel, run_dir,
                                                 RunHooks(boot=boot, backend=backend))
            assert result.backend == backend.kind.value
            assert result.verdict is case.expect, (backend, case.cell_key, result.error, result.findings)
            acked = result.metrics.get("acked", -1)
            survived = result.metrics.get("persistence", {}).get("survived", -1)
            seen.setdefault(case.cell_key, {})[backend.kind.value] = (result.verdict.value, acked, survived)
    print(json.dumps(seen))
    for cell, by_backend in seen.items():
        assert by_backend["qemu"][0] == by_backend["libvirt"][0], cell
    assert _domains(daemon.uri, "pmemlab-") == []
    return seen


@pytest.mark.timeout(240)
def test_smoke_verdicts_equal_the_qemu_backend(daemon: libvirtd.Libvirtd, image: Image, accel: AccelVerdict,
                                               tmp_path: Path) -> None:
    cases = expand(load_scenario(scenarios_dir() / "smoke.toml"))
    assert len(cases) == 2  # map_sync on (PASS) and off (the negative control: VIOLATION)
    _same_verdicts(daemon, image, accel, tmp_path, cases)


# A scenarios/mapsync.toml cell the smoke scenario (ext4, MAP_SYNC on and off: both verdicts) does not
# cover, kept to one since every libvirt machine boots cold (two cold boots a case, ~40 s here): XFS with
# MAP_SYNC. Its negative control differs from ext4's only inside the guest, which both backends share.
MAPSYNC_CELLS = {"fs=xfs map_sync=true prealloc=false persistence=eadr flush=auto"}


@pytest.mark.timeout(300)
def test_mapsync_verdicts_equal_the_qemu_backend(daemon: libvirtd.Libvirtd, image: Image, accel: AccelVerdict,
                                                 tmp_path: Path) -> None:
    cases = [c for c in expand(load_scenario(scenarios_dir() / "mapsync.toml")) if c.cell_key in MAPSYNC_CELLS]
    assert {c.cell_key for c in cases} == MAPSYNC_CELLS and len(cases) == len(MAPSYNC_CELLS), \
        "scenarios/mapsync.toml changed its cells: pick the subset again"
    assert {c.expect.value for c in cases} == {"PASS"}
    started = time.monotonic()
    _same_verdicts(daemon, image, accel, tmp_path, cases)
    print(json.dumps({"mapsync_subset_both_backends_s": round(time.monotonic() - started, 1)}))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_no_domain_outlives_its_controller(daemon: libvirtd.Libvirtd, image: Image, tmp_path: Path,
                                          sig: signal.Signals) -> None:
    workdir = tmp_path / f"hold-{sig.name.lower()}"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    line = ""
    proc = subprocess.Popen([sys.executable, str(HERE / "hold_domain.py"), str(workdir), daemon.uri],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the controller ended before starting its domain (exit {proc.wait(10)})"
        held = json.loads(line)
        name = held["domain"]
        assert _domains(daemon.uri, name) == [name]  # it runs while its controller lives
        proc.send_signal(sig)
        proc.wait(30)
        deadline = time.monotonic() + 20
        while _domains(daemon.uri, name) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _domains(daemon.uri, name) == [], f"domain {name} outlived its controller ({sig.name})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if line:
            shutil.rmtree(held["sockets"], ignore_errors=True)  # a SIGKILLed controller cannot remove its own
