"""The script kind on real machines: a shell reproducer whose fsync'd files survive the cut (the
check script passes), and the shipped C example, compiled here and pushed through the agent,
whose plain MAP_SHARED records are lost (the check script fails: VIOLATION)."""

from __future__ import annotations

from pathlib import Path

from lab.cases import expand
from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.paths import scenarios_dir
from lab.runner.guest_run import RunHooks
from lab.scenario import load_scenario
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.workloads.script import ScriptCheck, ScriptParams, run

REPRO = """i=0
while [ $i -lt 8 ]; do
  xfs_io -f -c "pwrite -q -S 0x61 0 4096" -c fsync "$1/f$i" || exit 1
  pmemlab-event ACK $i
  i=$((i+1))
done
"""
CHECK = """i=0; while [ $i -le $2 ]; do [ -s "$1/f$i" ] || { echo "f$i lost"; exit 1; }; i=$((i+1)); done
echo "f0-f$2 present"
"""


def test_a_shell_reproducer_and_its_check(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    params = ScriptParams(script="repro.sh", source=REPRO, check="check.sh", check_source=CHECK, acks=8)
    result = run(ScriptCheck(Filesystem.XFS, DaxMode.ALWAYS, params, CrashPoint(after_ack=4)), image, accel,
                 tmp_path / "run", RunHooks())
    assert result.verdict is Verdict.PASS, result.to_dict()
    check = next(f for f in result.findings if f.oracle == "check-script")
    assert check.verdict is Verdict.PASS and check.summary.startswith("check.sh passed: f0-f")
    assert result.metrics["acked"] >= 5 and "start" in result.metrics["marks"]


def test_the_shipped_c_example_loses_its_records(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    (case,) = expand(load_scenario(scenarios_dir() / "script-map-shared.toml"))
    assert isinstance(case.check, ScriptCheck)
    result = run(case.check, image, accel, tmp_path / "run", RunHooks())
    assert result.verdict is case.expect is Verdict.VIOLATION, result.to_dict()
    verdicts = {f.oracle: f.verdict for f in result.findings}
    assert verdicts.pop("check-script") is Verdict.VIOLATION
    assert {"recovery-mount", "fsck", "kernel-log"} <= set(verdicts) and set(verdicts.values()) == {Verdict.PASS}
    assert "mapped" in result.metrics["marks"]
