"""`bisect --git` over a real repository: git bisect run, real builds, real images, real machines.

The repository is a stand-in for a kernel tree. Its build command (build.sh, tracked like a Makefile)
"builds" by copying Debian's unpacked kernel into the places a kernel build leaves it
(arch/x86/boot/bzImage, .config, .pmemlab-modules/lib/modules/VERSION + depmod), so no commit
compiles a kernel; the tree also carries the guest image recipe (images/, the lab's own), read
at each commit. The commits, oldest first, and what each one genuinely does:

  0 base                                    good (its image runs the case: PASS)
  1 a README                                good
  2 the build drops nd_pmem.ko (depmod)     skip: the modules the lab loads are not all there
  3 .config without CONFIG_ACPI_NFIT        skip: the image builder refuses the kernel
  4 both fixed                              good
  5 the guest helper ignores MAP_SYNC       bad: acknowledged records lost (VIOLATION)
  6 a README                                bad

git visits 3 first (the one best midpoint of 6 candidates); where it goes after a skip depends on
the commit ids (ties are broken by id), so the test checks every visited commit against the table,
not the order, and runs the real step once more at commit 2 (in a separate worktree) for the
module lever. The first bad commit is 5. What this proves: git's search is driven by the lab's real exit statuses; a build
the lab cannot use is skipped, never called good or bad; each probed commit's runs are stored;
the tree ends as it began. What it does not: the good/bad difference comes from the tree's
recipe (the guest helper), not from the kernel binary, which is the same Debian kernel at
every commit: no kernel build here changes the case's verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cases import expand
from lab.cli import cli
from lab.image.cache import Image
from lab.paths import cache_dir, images_dir
from lab.scenario import parse_scenario
from lab.store.db import ResultsStore

pytestmark = pytest.mark.timeout(420)

SCENARIO = """
[scenario]
name = "git-bisect-me"
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
BUILD = """#!/bin/sh
# "Builds" the kernel: Debian's, copied where a kernel build leaves its output.
set -e
PATH=$PATH:/usr/sbin:/sbin
K={tree}
V={version}
mkdir -p arch/x86/boot
cp "$K/boot/vmlinuz-$V" arch/x86/boot/bzImage
cp "$K/boot/config-$V" .config
rm -rf .pmemlab-modules
mkdir -p .pmemlab-modules/lib/modules/$V
cp -al "$K/lib/modules/$V/kernel" .pmemlab-modules/lib/modules/$V/kernel
cp "$K/lib/modules/$V/modules.order" "$K/lib/modules/$V"/modules.builtin* .pmemlab-modules/lib/modules/$V/
# A step of this "build" per commit goes here.
depmod -b .pmemlab-modules "$V"
"""
SYNC_LINE = "mflags = map_sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;"
HOOK = "# A step of this \"build\" per commit goes here.\n"
NO_NFIT = "sed -i 's/^CONFIG_ACPI_NFIT=m/# CONFIG_ACPI_NFIT is not set/' .config\n"
NO_PMEM = "find .pmemlab-modules -name 'nd_pmem.ko*' -delete\n"


def commit(repo: Path, message: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_tree(repo: Path, image: Image) -> list[str]:
    package, _, version = str(image.manifest["kernel_source"]).removeprefix("debian:").partition("=")
    kernel_tree = cache_dir() / "kernels" / f"{package}_{version}"
    build = BUILD.format(tree=kernel_tree, version=image.kernel_version)
    subprocess.run(["git", "init", "-q", "-b", "master", str(repo)], check=True)
    (repo / ".gitignore").write_text("/arch/\n.config\n.pmemlab-modules/\n")
    shutil.copytree(images_dir(), repo / "images")
    helper = repo / "images" / "guest" / "mapsync.c"
    assert SYNC_LINE in helper.read_text()
    script = repo / "build.sh"
    commits = []
    script.write_text(build)
    commits.append(commit(repo, "base"))
    (repo / "README").write_text("a kernel tree\n")
    commits.append(commit(repo, "README"))
    script.write_text(build.replace(HOOK, NO_PMEM))
    commits.append(commit(repo, "lose nd_pmem.ko"))
    script.write_text(build.replace(HOOK, NO_NFIT))
    commits.append(commit(repo, "drop CONFIG_ACPI_NFIT"))
    script.write_text(build)
    commits.append(commit(repo, "fix the build"))
    helper.write_text(helper.read_text().replace(SYNC_LINE, "mflags = map_sync ? MAP_SHARED : MAP_SHARED;"))
    commits.append(commit(repo, "mapsync: plain MAP_SHARED"))
    (repo / "README").write_text("a kernel tree, later\n")
    commits.append(commit(repo, "README again"))
    return commits


@pytest.fixture
def commits(image: Image, tmp_path: Path) -> Iterator[list[str]]:
    made = make_tree(tmp_path / "linux", image)
    yield made
    for sha in made:  # the per-commit image refs the steps made in the shared cache (the images stay cached)
        (cache_dir() / "refs" / f"git-{sha[:12]}").unlink(missing_ok=True)


def test_git_bisect_finds_the_commit_that_dropped_map_sync(image: Image, commits: list[str], tmp_path: Path) -> None:
    repo = tmp_path / "linux"
    db = f"sqlite:///{tmp_path / 'results.db'}"
    scenario = parse_scenario(SCENARIO.encode(), tmp_path / "git-bisect-me.toml")
    (case,) = expand(scenario)
    store = ResultsStore.open(db)
    store.create_campaign(campaign_id="c-reported", scenario_name=scenario.name, scenario_path=str(scenario.path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=image.id,
                          kernel_version=image.kernel_version, accelerator="tcg", jobs=1, cases=[case.to_dict()])
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["bisect", case.id, "--git", str(repo), "--good-rev", commits[0],
                                      "--bad-rev", "master", "--build-cmd", "sh build.sh",
                                      "--recipe", "images/debian12-pmem.toml", "--db", db, "--json"])
    seconds = time.monotonic() - started
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    steps = [(commits.index(s["commit"]), s["outcome"]) for s in found["steps"]]
    print(f"git bisect over {len(commits)} commits: {len(steps)} steps {steps}, {seconds:.1f} s")
    assert found["first_bad"] == commits[5]
    truth = {1: "good", 2: "skip", 3: "skip", 4: "good", 5: "bad"}
    assert steps[0] == (3, "skip") and all(truth[index] == outcome for index, outcome in steps)
    assert {4, 5} <= {index for index, _ in steps}  # the two commits that pin the answer
    reasons = {commits.index(s["commit"]): s["reason"] for s in found["steps"]}
    assert "CONFIG_ACPI_NFIT" in reasons[3] and (2 not in reasons or "nd_pmem" in reasons[2])
    verdicts = {commits.index(s["commit"]): s["verdicts"] for s in found["steps"]}
    assert verdicts[4] == ["PASS"] and verdicts[5] == ["VIOLATION"]
    # The evidence: one stored campaign per commit that ran, on that commit's own image.
    probed = {s["campaign_id"]: s["image_id"] for s in found["steps"] if s["campaign_id"]}
    stored = {c.campaign.id: c for c in store.list_campaigns() if c.campaign.scenario_name == f"bisect-{case.id}"}
    assert set(stored) == set(probed) and len(set(probed.values())) == 2
    assert all(stored[c].campaign.image_id == probed[c] and stored[c].finished == 1 for c in probed)
    bad_step = next(s for s in found["steps"] if s["commit"] == commits[5])
    assert f"commit {commits[5]}" in stored[bad_step["campaign_id"]].campaign.scenario_path
    store.close()
    # The tree as it was: on master, no bisect in progress, nothing tracked changed.
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True)  # noqa: E731
    assert git("symbolic-ref", "--short", "HEAD").stdout.strip() == "master"
    assert git("rev-parse", "HEAD").stdout.strip() == commits[-1]
    assert git("bisect", "log").returncode != 0 and git("status", "--porcelain").stdout == ""
    # The module lever, whether or not git's walk met it: the real step at commit 2, in a worktree of its own.
    other = tmp_path / "at-commit-2"
    assert git("worktree", "add", "--detach", str(other), commits[2]).returncode == 0
    steps_file = tmp_path / "one-step.jsonl"
    step = subprocess.run([sys.executable, "-m", "lab.cli", "bisect-step", case.id, "--build-cmd", "sh build.sh",
                           "--steps-file", str(steps_file), "--run-dir", str(tmp_path), "--recipe",
                           "images/debian12-pmem.toml", "--db", db], cwd=other, capture_output=True, text=True,
                          timeout=300)
    (record,) = [json.loads(line) for line in steps_file.read_text().splitlines()]
    assert step.returncode == 125 and record["outcome"] == "skip", step.stdout + step.stderr
    assert "'nd_pmem' is neither in modules.dep nor built in" in record["reason"] and record["campaign_id"] is None
