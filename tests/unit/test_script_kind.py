"""The script kind: a reproducer's sources read relative to the scenario and kept in the case,
C compiled once per content, the guest-side unpack wrapper (run here with the host's sh), the
check script's finding, and the CLI's one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cases import expand, export_case_scenario
from lab.cli import cli
from lab.errors import ConfigError
from lab.paths import scenarios_dir
from lab.scenario import load_scenario, parse_scenario
from lab.verdict import Verdict
from lab.workloads import script_build
from lab.workloads.script import ScriptCheck, ScriptParams, check_finding, workload_argv

SCENARIO = """
[scenario]
name = "s"
description = "d"
workload = "script"

[workload]
script = "r/repro.sh"
check = "r/check.sh"
acks = 5

[crash]
strategy = "after_ack"
ack = 3

[[expect]]
verdict = "PASS"
"""


def scenario_dir(tmp_path: Path) -> Path:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "repro.sh").write_text("echo repro\n")
    (tmp_path / "r" / "check.sh").write_text("exit 0\n")
    (tmp_path / "r" / "repro.py").write_text("print()\n")
    (tmp_path / "s.toml").write_text(SCENARIO)
    return tmp_path / "s.toml"


def test_sources_are_read_relative_to_the_scenario_and_kept_in_the_case(tmp_path: Path) -> None:
    path = scenario_dir(tmp_path)
    (case,) = expand(load_scenario(path))
    params, check = case.params, case.check
    assert isinstance(params, ScriptParams) and isinstance(check, ScriptCheck)
    assert params.source == "echo repro\n" and params.check_source == "exit 0\n"
    assert check.crash.after_ack == 3
    exported = tmp_path / "elsewhere" / "export.toml"
    exported.parent.mkdir()
    exported.write_text(export_case_scenario(case))
    (tmp_path / "r" / "repro.sh").write_text("echo changed\n")  # the case runs what it ran, not the new file
    (again,) = expand(load_scenario(exported))
    assert again.params == case.params and again.check == case.check


@pytest.mark.parametrize(("edit", "message"), [
    (('"r/repro.sh"', '"r/missing.sh"'), "script 'r/missing.sh': cannot read"),
    (('"r/repro.sh"', '"r/repro.py"'), "a reproducer is a C source (.c) or a shell script (.sh)"),
    (("ack = 3", "ack = 5"), "field 'crash.ack': ack 5 is never reached (the workload acknowledges 0..4)"),
])
def test_scenario_errors_name_the_field(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = scenario_dir(tmp_path)
    path.write_text(SCENARIO.replace(*edit))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(load_scenario(path))


def test_the_shipped_example_expands() -> None:
    (case,) = expand(load_scenario(scenarios_dir() / "script-map-shared.toml"))
    params, check = case.params, case.check
    assert isinstance(params, ScriptParams) and isinstance(check, ScriptCheck)
    assert "pmemlab_ack" in params.source and params.language == "c"
    assert case.expect is Verdict.VIOLATION and check.crash.after_ack == 20


def test_the_wrapper_unpacks_marks_and_execs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("base64", "gunzip", "sh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    events = tmp_path / "events"
    fake = bin_dir / "pmemlab-event"  # stands in for the guest command: records what it was asked
    fake.write_text(f'#!/bin/sh\necho "$1 $2" >> {events}\n')
    fake.chmod(0o755)
    body = "echo \"ran on $1\"\n" + "# " + os.urandom(200_000).hex() + "\n"  # several chunks
    params = ScriptParams(script="r.sh", source=body)
    argv = workload_argv(params, str(tmp_path / "mnt"))
    assert len(argv) > 9  # the packed bytes span more than one argument
    argv[5] = str(tmp_path / "repro")  # where to unpack it, here
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ran on {tmp_path / 'mnt'}\n" and events.read_text() == "MARK start\n"
    assert (tmp_path / "repro").read_text() == body


def test_c_is_compiled_once_per_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    source = '#include "pmemlab-repro.h"\nint main(void) { pmemlab_mark("m"); pmemlab_ack(1); return 0; }\n'
    first = script_build.compiled(source, "r.c")
    (entry,) = (tmp_path / "cache" / "repro").iterdir()
    stamp = (entry / "repro").stat().st_mtime_ns
    assert script_build.compiled(source, "r.c") == first and (entry / "repro").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"^r\.c does not compile: r\.c:1:.*error"):
        script_build.compiled("int main(void) { return nope; }\n", "r.c")


def test_check_findings() -> None:
    assert check_finding(0, False, b"all fine\n", b"", "c.sh").verdict is Verdict.PASS
    failed = check_finding(1, False, b"3 lost\n", b"", "c.sh")
    assert failed.verdict is Verdict.VIOLATION and failed.summary == "c.sh failed (exit 1): 3 lost"
    assert check_finding(None, True, b"", b"", "c.sh").verdict is Verdict.HANG
    assert check_finding(125, False, b"", b"pmemlab: unpacking x failed\n", "c.sh").verdict is Verdict.INFRA_ERROR
    assert check_finding(125, False, b"", b"its own 125\n", "c.sh").verdict is Verdict.VIOLATION


def test_a_params_model_alone_is_valid() -> None:
    ScriptParams()  # every field defaulted: the kind catalog relies on it
    assert callable(parse_scenario)  # imported for the layering of scenario checks


@pytest.mark.parametrize(("args", "message"), [
    (["r.py", "--cut-at-seconds", "1"], "a reproducer is a C source (.c) or a shell script (.sh)"),
    (["r.sh"], "give a crash point"),
    (["r.sh", "--cut-after-ack", "2", "--cut-at-mark", "m"], "give --cut-after-ack K, or --cut-at-mark"),
    (["r.sh", "--cut-after-ack", "2"], "the reproducer emits 0 ACKs"),
])
def test_cli_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r.sh").write_text("true\n")
    (tmp_path / "r.py").write_text("pass\n")
    result = CliRunner().invoke(cli, ["run", "script", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
