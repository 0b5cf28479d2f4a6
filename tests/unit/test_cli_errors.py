"""Bad input: one clear line, non-zero exit, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cli import cli


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_unknown_fs(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["vm", "smoke", "--fs", "btrfs"])
    assert result.exit_code == 2
    assert "Invalid value for '--fs': 'btrfs' is not one of 'ext4', 'xfs'" in result.output


def test_missing_image_says_what_to_do(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["vm", "smoke"])
    assert result.exit_code == 2
    assert "no guest image 'debian12-pmem'" in result.output and "pmemlab image build" in result.output


def test_cut_point_beyond_records(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["run", "mapsync", "--records", "10", "--cut-after", "10"])
    assert result.exit_code == 2
    assert "--cut-after 10: the workload acknowledges records 0..9, so the cut point must be below 10" in result.output


def test_zero_records(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["run", "mapsync", "--records", "0"])
    assert result.exit_code == 2
    assert "--records must be at least 1, got 0" in result.output


def test_conflicting_cut_options(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["run", "mapsync", "--cut-after", "3", "--cut-random"])
    assert result.exit_code == 2
    assert "give one of --cut-after K, --cut-random, --cut-at-seconds S" in result.output


def test_modules_without_kernel(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["image", "build", "--modules", "/tmp"])
    assert result.exit_code == 2
    assert "--modules and --config go with --kernel" in result.output


def test_user_kernel_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["image", "build", "--kernel", str(tmp_path / "bzImage")])
    assert result.exit_code == 2
    assert "no such file" in result.output
    assert not (tmp_path / "cache" / "images").exists() or not any((tmp_path / "cache" / "images").iterdir())
