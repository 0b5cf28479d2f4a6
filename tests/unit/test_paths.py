"""Shipped assets are found in an installed wheel's layout and in a checkout's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import LabError
from lab.paths import asset_dir, images_dir, scenarios_dir


def test_installed_layout_wins_over_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "scenarios").mkdir(parents=True)
    (tmp_path / "repo" / "scenarios").mkdir(parents=True)
    assert asset_dir("scenarios", root=tmp_path / "repo", packaged=tmp_path / "pkg") == tmp_path / "pkg" / "scenarios"


def test_checkout_layout_without_packaged_assets(tmp_path: Path) -> None:
    (tmp_path / "repo" / "images").mkdir(parents=True)
    assert asset_dir("images", root=tmp_path / "repo", packaged=tmp_path / "pkg") == tmp_path / "repo" / "images"


def test_neither_layout_names_both_places(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=f"images/ not found at {tmp_path / 'pkg' / 'images'} .* "
                                       f"{tmp_path / 'repo' / 'images'} .*reinstall pmemlab"):
        asset_dir("images", root=tmp_path / "repo", packaged=tmp_path / "pkg")


def test_this_checkout_resolves_its_own_assets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMEMLAB_IMAGES_DIR", raising=False)
    monkeypatch.delenv("PMEMLAB_SCENARIOS_DIR", raising=False)
    assert (images_dir() / "debian12-pmem.toml").is_file()
    assert (scenarios_dir() / "mapsync.toml").is_file()


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_IMAGES_DIR", str(tmp_path / "i"))
    monkeypatch.setenv("PMEMLAB_SCENARIOS_DIR", str(tmp_path / "s"))
    assert (images_dir(), scenarios_dir()) == (tmp_path / "i", tmp_path / "s")
