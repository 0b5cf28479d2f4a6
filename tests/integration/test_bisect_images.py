"""Bisect over three real images whose outcome genuinely differs.

The images differ in their recipe: the default one; a copy under another name (same kernel and
helpers: a different image id, the same behaviour); and a copy whose mapsync helper ignores
MAP_SYNC (plain MAP_SHARED: acknowledged records are lost with their block allocations in the
uncommitted journal, as the negative control measured). A stored MAP_SYNC case that expects PASS
is bisected over [default, renamed, no-sync]: the first bad image is the no-sync one, and each
probed image's runs are stored as a campaign. The two extra images are built once into the
cache under their own refs (never the default ref).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cases import expand
from lab.cli import cli
from lab.image.builder import build
from lab.image.cache import Image
from lab.paths import cache_dir, images_dir
from lab.scenario import parse_scenario
from lab.store.db import ResultsStore

SCENARIO = """
[scenario]
name = "bisect-me"
description = "MAP_SYNC keeps acknowledged records"
workload = "mapsync"

[workload]
records = 20

[matrix]
fs = ["ext4"]

[crash]
strategy = "after_ack"
ack = 12

[[expect]]
verdict = "PASS"
"""
SYNC_LINE = "mflags = map_sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;"


def variant(tmp: Path, name: str, patch_helper: bool) -> Image:
    root = tmp / name
    shutil.copytree(images_dir(), root)
    recipe = root / "debian12-pmem.toml"
    recipe.write_text(recipe.read_text().replace('name = "debian12-pmem"', f'name = "{name}"', 1))
    if patch_helper:
        helper = root / "guest" / "mapsync.c"
        assert SYNC_LINE in helper.read_text()
        helper.write_text(helper.read_text().replace(SYNC_LINE, "mflags = map_sync ? MAP_SHARED : MAP_SHARED;"))
    return build(recipe, cache_dir(), ref=name).image


@pytest.fixture(scope="module")
def images(image: Image, tmp_path_factory: pytest.TempPathFactory) -> list[Image]:
    tmp = tmp_path_factory.mktemp("recipes")
    return [image, variant(tmp, "pmemlab-test-renamed", False), variant(tmp, "pmemlab-test-nosync", True)]


def test_bisect_finds_the_image_that_dropped_map_sync(images: list[Image], tmp_path: Path) -> None:
    assert len({i.id for i in images}) == 3
    db = f"sqlite:///{tmp_path / 'results.db'}"
    scenario = parse_scenario(SCENARIO.encode(), tmp_path / "bisect-me.toml")
    (case,) = expand(scenario)
    store = ResultsStore.open(db)
    store.create_campaign(campaign_id="c-bisect", scenario_name=scenario.name, scenario_path=str(scenario.path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=images[2].id,
                          kernel_version=images[2].kernel_version, accelerator="tcg", jobs=1, cases=[case.to_dict()])
    refs = [images[0].id, "pmemlab-test-renamed", "pmemlab-test-nosync"]
    result = CliRunner().invoke(cli, ["bisect", case.id, "--good", refs[0], "--bad", refs[2], "--images",
                                      ",".join(refs), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["first_bad"] == "pmemlab-test-nosync"
    assert [(s["image"], s["outcome"]) for s in found["steps"]] == [
        (refs[0], "good"), (refs[2], "bad"), (refs[1], "good")]
    stored = [c for c in store.list_campaigns() if c.campaign.scenario_name == f"bisect-{case.id}"]
    assert sorted(c.campaign.image_id for c in stored) == sorted(i.id for i in images)
    assert all(c.finished == 1 for c in stored)
    store.close()
