"""CLI output that survives a pipe: whole ids and names at any width, --json on every listing.

Commands run through click's CliRunner (stdout is not a terminal there), with
NO_COLOR and a narrow fixed width, against a real SQLite results store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from lab.cli import cli
from lab.cli_campaign import kind_sections
from lab.cli_common import lab_errors
from lab.paths import REPO_ROOT
from lab.store import ResultsStore
from lab.ui import UI, plain_table
from tests.unit.helpers import stored_case

CAMPAIGN = "20261130-141500-0123456789abcdef"
CASE = "mapsync-fs=ext4,dax=always,map_sync=on-crash=0017-seed=4242424242"
SCENARIO = "a-scenario-name-longer-than-any-narrow-terminal"
CELL = "fs=ext4 [machine] dax=always"  # brackets: text, not markup


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "40")
    return CliRunner()


@pytest.fixture
def stored(runner: CliRunner, tmp_path: Path) -> None:
    """One campaign in the default store: a finished case with a finding, a pending one."""
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    with ResultsStore.open() as store:
        case = {"id": CASE, "cell_key": CELL, "cell": {"fs": "ext4"}, "repeat": 0, "crash_index": 17,
                "seed": 4242424242, "expect": "PASS"}
        store.create_campaign(campaign_id=CAMPAIGN, scenario_name=SCENARIO, scenario_path="s.toml",
                              scenario_text="", scenario_hash="h", image_id="img", kernel_version="6.1",
                              accelerator="tcg", jobs=1, cases=[case, {**case, "id": CASE + "-b", "crash_index": 18}])
        attempt = store.start_attempt(CAMPAIGN, CASE, run_dir)
        store.finish_attempt(attempt, {"verdict": "PASS", "run_dir": str(run_dir), "timings": {"total": 1.0},
                                       "findings": [{"oracle": "persistence", "verdict": "PASS",
                                                     "summary": "all 17 acknowledged records intact"}]},
                             final=True)


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


@pytest.mark.parametrize("command", [["results", "list"], ["campaign", "list"]])
def test_campaign_listing_keeps_whole_ids_and_counts(runner: CliRunner, stored: None, command: list[str]) -> None:
    result = runner.invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    (row,) = lines_with(result.output, CAMPAIGN)  # one line per campaign: grep finds it whole
    *fields, created = row.split()
    assert fields == [CAMPAIGN, SCENARIO, "running", "2", "1", "1"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created), created
    header = lines_with(result.output, "scenario")[0].split()
    assert header == ["id", "scenario", "status", "cases", "finished", "met", "created"]


@pytest.mark.parametrize("command", [["results", "list", "--json"], ["campaign", "list", "--json"]])
def test_campaign_listing_json(runner: CliRunner, stored: None, command: list[str]) -> None:
    result = runner.invoke(cli, command)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["id"], row["scenario_name"], row["cases"], row["finished"], row["met"]) == (
        CAMPAIGN, SCENARIO, 2, 1, 1)


def test_results_show_campaign_and_case(runner: CliRunner, stored: None) -> None:
    shown = runner.invoke(cli, ["results", "show", CAMPAIGN[:20]])
    assert shown.exit_code == 0, shown.output
    assert f"campaign {CAMPAIGN}: scenario {SCENARIO}" in shown.output
    assert lines_with(shown.output, CELL), "the cell key, brackets included, on one line"
    assert "…" not in shown.output

    case = runner.invoke(cli, ["results", "show", CASE + "-b"])
    assert case.exit_code == 0, case.output
    assert f"case {CASE}-b of campaign {CAMPAIGN}: {CELL}, expected PASS" in case.output

    case = runner.invoke(cli, ["results", "show", CASE])
    assert "attempt 1: PASS" in case.output and "persistence: PASS all 17 acknowledged records intact" in case.output


def test_results_show_json(runner: CliRunner, stored: None) -> None:
    data = json.loads(runner.invoke(cli, ["results", "show", CAMPAIGN, "--json"]).stdout)
    assert data["kind"] == "campaign" and data["id"] == CAMPAIGN
    assert [c["id"] for c in data["cases"]] == [CASE, CASE + "-b"]
    assert data["cases"][0]["latest_attempt"]["findings"][0]["oracle"] == "persistence"
    data = json.loads(runner.invoke(cli, ["results", "show", CASE, "--json"]).stdout)
    assert (data["kind"], data["id"], data["seed"], len(data["attempts"])) == ("case", CASE, 4242424242, 1)


def test_lab_errors_are_one_line_with_exit_2(runner: CliRunner, stored: None) -> None:
    result = runner.invoke(cli, ["results", "show", "no-such-id"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: no campaign or case id starts with 'no-such-id'"
    result = runner.invoke(cli, ["campaign", "resume", "nope"])
    assert (result.exit_code, result.output.strip()) == (2, "error: no campaign nope")


def test_scenarios_list_piped_keeps_every_file_and_name(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["scenarios", "list"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    shipped = json.loads(runner.invoke(cli, ["scenarios", "list", "--json"]).stdout)
    assert {s["file"] for s in shipped} == {p.name for p in (REPO_ROOT / "scenarios").glob("*.toml")}
    for summary in shipped:
        (row,) = lines_with(result.output, summary["file"] + " ")
        assert row.split()[:3] == [summary["file"], summary["name"], summary["workload"]]
        assert row.endswith(summary["purpose"])


def test_image_list_json_on_an_empty_cache(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["image", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"refs": {}, "images": []}


# -- the UI object itself ------------------------------------------------------------------------

def test_a_terminal_table_folds_instead_of_cutting() -> None:
    out = Console(force_terminal=True, width=20, no_color=True, record=True)
    UI(out=out).table("t", ["id"], [[CAMPAIGN]], literal=True)
    shown = out.export_text()
    assert "…" not in shown and len(shown.splitlines()) > 5  # folded over several lines
    assert CAMPAIGN in "".join(ch for ch in shown if ch.isalnum() or ch == "-")


def test_plain_table_pads_columns_and_cuts_nothing() -> None:
    assert plain_table(["id", "n"], [["a", "1"], [CAMPAIGN, "22"]]) == [
        "id" + " " * (len(CAMPAIGN) - 2) + "  n",
        "a" + " " * (len(CAMPAIGN) - 1) + "  1",
        f"{CAMPAIGN}  22"]


def test_abort_prints_brackets_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        UI().abort("scenario s.toml: [machine] cold_boot must be true or false", 2)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == "error: scenario s.toml: [machine] cold_boot must be true or false"


def test_every_command_turns_lab_errors_into_exit_2() -> None:
    wrapper_code = lab_errors(lambda: None).__code__

    def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
        out: list[tuple[str, click.Command]] = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                out += commands(command, f"{prefix}{name} ")
            else:
                out.append((prefix + name, command))
        return out

    found = commands(cli)
    assert len(found) >= 16
    assert [name for name, command in found if getattr(command.callback, "__code__", None) is not wrapper_code] == []


def test_the_campaign_page_gets_each_kinds_section(tmp_path: Path) -> None:
    result = {"verdict": "PASS", "check": {"fs": "ext4", "dax": "always"},
              "metrics": {"patterns": [{"pattern": "same-page", "ok": True, "matches": "snapshot", "write_us": 3}]}}
    cases = [stored_case(result, case={"workload": "write-from-own-mapping"}),
             stored_case({"verdict": "PASS"}, case={"workload": "mapsync"})]  # mapsync adds no section
    (section,) = kind_sections(cases, tmp_path)
    assert section.startswith('<section id="kind-write-from-own-mapping"><h2>write from own mapping</h2>')
    assert "<td>same-page</td><td>ok (snapshot, 3 us)</td>" in section
