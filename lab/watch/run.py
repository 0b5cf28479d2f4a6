"""One `pmemlab watch --once`: for each kernel source with a new version, build its image, run the
plan's scenarios on it, compare each new campaign with the last one of the same scenario, report.

Idempotent: a source's version is remembered (in the results store) only once every scenario ran
on it, so a run that failed is tried again next time; a version already seen does no work.
Campaigns run as `pmemlab campaign run` child processes, so each is the same run a user would do.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.compare import compare, render_text
from lab.errors import ConfigError, LabError
from lab.known_issues import KnownIssues, load_known_issues
from lab.paths import data_dir
from lab.store.db import ResultsStore
from lab.store.records import CampaignRecord
from lab.watch.plan import KernelSource, Plan
from lab.watch.sources import current_version

Say = Callable[[str], None]
# (source, image ref) -> builds that source's kernel under that ref; the CLI passes the real builder.
BuildImage = Callable[[KernelSource, str], None]


class WatchBusy(LabError):
    """Another watch of the same plan holds its lock."""


@contextmanager
def plan_lock(plan: Plan) -> Iterator[Path]:
    """An exclusive flock on data_dir()/watch-NAME.lock, not waited for: overlapping runs never both start.
    The kernel drops it when the holder dies, so a killed watch leaves no stale lock."""
    path = data_dir() / f"watch-{plan.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise WatchBusy(f"another 'pmemlab watch' of plan {plan.name} (pid {holder}) holds {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)


@dataclass
class SourceResult:
    source: str
    version: str
    new: bool
    statuses: list[int] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)


def _scenario_ref(path: Path) -> tuple[str, str]:
    from lab.scenario import load_scenario

    scenario = load_scenario(path)
    return scenario.name, scenario.image


def _run_campaign(plan: Plan, store_url: str, scenario: Path) -> int:
    argv = [sys.executable, "-m", "lab.cli", "campaign", "run", str(scenario), "--db", store_url, "--json"]
    if plan.jobs:
        argv += ["-j", str(plan.jobs)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)  # its progress and errors go to our stderr
    if proc.returncode not in (0, 1, 2):
        raise LabError(f"campaign run {scenario} ended with status {proc.returncode}")
    try:
        json.loads(proc.stdout)
    except ValueError:
        raise LabError(f"campaign run {scenario} printed no summary (status {proc.returncode})") from None
    return proc.returncode


def _baseline(before: list[CampaignRecord], new: CampaignRecord) -> CampaignRecord | None:
    """The newest earlier campaign of the same scenario file content, else of the same scenario name."""
    same = [c for c in before if c.scenario_hash == new.scenario_hash and c.status == "finished"]
    same = same or [c for c in before if c.scenario_name == new.scenario_name and c.status == "finished"]
    return same[0] if same else None


def watch_once(plan: Plan, store: ResultsStore, build_image: BuildImage, say: Say, *,
               dry_run: bool = False) -> tuple[int, list[SourceResult]]:
    """Exit status: the worst comparison's (0 when nothing is new)."""
    known = load_known_issues(plan.known_issues) if plan.known_issues else KnownIssues(())
    report_dir = plan.report_dir or data_dir() / "watch" / plan.name
    scenarios: list[tuple[Path, str, str]] = []  # loaded at the first new kernel: nothing new stays quick
    results: list[SourceResult] = []
    for source in plan.kernels:
        version = current_version(source)
        last = store.watch_last_seen(plan.name, source.name)
        result = SourceResult(source.name, version, new=version != last)
        results.append(result)
        if not result.new:
            say(f"{source.name}: {version} already ran (no new kernel)")
            continue
        say(f"{source.name}: new kernel {version} (last: {last or 'none'})")
        if dry_run:
            continue
        # Every scenario error before any build.
        scenarios = scenarios or [(path, *_scenario_ref(path)) for path in plan.scenarios]
        for ref in dict.fromkeys(ref for _, _, ref in scenarios):
            build_image(source, ref)
        for path, name, _ref in scenarios:
            before = [item.campaign for item in store.list_campaigns()]
            status = _run_campaign(plan, store.url, path)
            known_ids = {c.id for c in before}
            created = [i.campaign for i in store.list_campaigns() if i.campaign.id not in known_ids]
            if len(created) != 1:
                raise LabError(f"campaign run {path} stored {len(created)} campaigns, expected one")
            candidate = store.get_campaign(created[0].id)
            base = _baseline(before, candidate)
            header = (f"pmemlab watch {plan.name}: kernel source {source.name} {version}, scenario {name}, "
                      f"campaign {candidate.id}\n")
            if base is None:
                text = header + f"FIRST RUN of scenario {name}: no baseline; campaign exit status {status}\n"
            else:
                comparison = compare(store.get_campaign(base.id), candidate, known)
                # A regression decides; otherwise a campaign without evidence (2) still says so.
                status = 1 if comparison.exit_status == 1 else max(comparison.exit_status, 2 if status == 2 else 0)
                text = header + render_text(comparison)
            report_dir.mkdir(parents=True, exist_ok=True)
            report = report_dir / f"{candidate.id}.txt"
            report.write_text(text)
            say(text.rstrip("\n"))
            result.statuses.append(status)
            result.reports.append(report)
        store.watch_record_seen(plan.name, source.name, version)
    return max((s for r in results for s in r.statuses), default=0), results


def check_sources(plan: Plan) -> None:
    """Fail early on a source that cannot be read (a directory without bzImage is a ConfigError)."""
    for source in plan.kernels:
        if source.directory is not None and not source.directory.is_dir():
            raise ConfigError(f"{plan.path}: kernel {source.name}: no such directory {source.directory}")
