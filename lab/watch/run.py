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
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.paths import env_with_db
from lab.compare import Comparison, compare, render_text
from lab.errors import ConfigError, KernelConfigError, LabError
from lab.known_issues import KnownIssues, load_known_issues
from lab.paths import data_dir
from lab.rerun import RerunCase, confirm_failures, repro_runner
from lab.store.db import ResultsStore
from lab.store.records import CampaignRecord, CaseRecord
from lab.watch.gitkernel import KernelBuildError
from lab.watch.plan import KernelSource, Plan
from lab.watch.sources import current_version

Say = Callable[[str], None]
# (source, version, image ref) -> builds that source's kernel under that ref; the CLI passes the real
# builder. A kernel that cannot be built or imaged (KernelBuildError, KernelConfigError) is reported.
BuildImage = Callable[[KernelSource, str, str], None]
# (store URL, candidate campaign id) -> re-runs one failing case once, storing the attempt (lab/rerun.py).
RerunFactory = Callable[[str, str], RerunCase]
# (cases, page directory) -> the workload kinds' HTML sections (lab.cli_campaign.kind_sections).
KindSections = Callable[[Sequence[CaseRecord], Path], list[str]]


class WatchInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM while a campaign or re-run ran: the child was told to stop and has unwound."""


class _Children:
    """The child process running now, so a signal can be passed on to it (Ctrl-C semantics: a campaign
    marks its cases interrupted and stops its machines), and whether a stop was asked for."""

    def __init__(self) -> None:
        self.current: subprocess.Popen[str] | None = None
        self.stopping = False

    def stop(self) -> None:
        if self.stopping:  # a second Ctrl-C or a SIGTERM after it: the child already unwinds
            return
        self.stopping = True
        child = self.current
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        if self.stopping:
            raise WatchInterrupted("stopped before " + " ".join(argv[3:5]))
        # Its own process group: a terminal's Ctrl-C reaches only us, and stop() passes it on once (a
        # second SIGINT would cut the child's own unwinding short). Progress and errors: our stderr.
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, process_group=0, env=env)
        self.current = child
        try:
            out, _ = child.communicate()
        finally:
            if child.poll() is None:  # we are unwinding (an exception): never leave it running
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            self.current = None
        if self.stopping:
            raise WatchInterrupted(f"stopped during {' '.join(argv[3:5])} (status {child.returncode})")
        return child.returncode, out


CHILDREN = _Children()


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
    texts: list[str] = field(default_factory=list)  # each report's text, for the mail
    headlines: list[str] = field(default_factory=list)  # one line per report: what changed


def _scenario_ref(path: Path) -> tuple[str, str]:
    from lab.scenario import load_scenario

    scenario = load_scenario(path)
    return scenario.name, scenario.image


def _run_campaign(plan: Plan, store_url: str, scenario: Path) -> int:
    argv = [sys.executable, "-m", "lab.cli", "campaign", "run", str(scenario), "--json"]
    if plan.jobs:
        argv += ["-j", str(plan.jobs)]
    status, out = CHILDREN.run(argv, env_with_db(store_url))  # the URL may hold a password: not in argv
    if status not in (0, 1, 2):
        raise LabError(f"campaign run {scenario} ended with status {status}")
    try:
        json.loads(out)
    except ValueError:
        raise LabError(f"campaign run {scenario} printed no summary (status {status})") from None
    return status


def _repro_runner(store_url: str, campaign_id: str) -> RerunCase:
    return repro_runner(store_url, campaign_id, CHILDREN.run)


def _baseline(before: list[CampaignRecord], new: CampaignRecord) -> CampaignRecord | None:
    """The newest earlier campaign of the same scenario file content, else of the same scenario name."""
    same = [c for c in before if c.scenario_hash == new.scenario_hash and c.status == "finished"]
    same = same or [c for c in before if c.scenario_name == new.scenario_name and c.status == "finished"]
    return same[0] if same else None


def report_dir_of(plan: Plan) -> Path:
    return plan.report_dir or data_dir() / "watch" / plan.name


def _write_report(report_dir: Path, name: str, text: str) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    report = report_dir / name
    report.write_text(text)
    return report


def _side_reports(plan: Plan, report_dir: Path, candidate: CampaignRecord, comparison: Comparison | None,
                  kind_sections: KindSections | None) -> list[Path]:
    """[report] junit = true: the campaign's JUnit (regressions as failures) and HTML page."""
    from lab.report.html import write_html
    from lab.report.junit import write_junit

    if not plan.report.junit:
        return []
    sections = kind_sections(candidate.cases, report_dir) if kind_sections else []
    return [write_junit(report_dir / f"{candidate.id}.junit.xml", candidate, comparison),
            write_html(report_dir / f"{candidate.id}.html", candidate, sections, comparison)]


def watch_once(plan: Plan, store: ResultsStore, build_image: BuildImage, say: Say, *,
               dry_run: bool = False, rerun_factory: RerunFactory | None = None,
               kind_sections: KindSections | None = None) -> tuple[int, list[SourceResult]]:
    """Exit status: the worst comparison's (0 when nothing is new; 2 for a kernel that did not build)."""
    known = load_known_issues(plan.known_issues) if plan.known_issues else KnownIssues(())
    report_dir = report_dir_of(plan)
    rerun_factory = rerun_factory or _repro_runner
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
        try:
            for ref in dict.fromkeys(ref for _, _, ref in scenarios):
                build_image(source, version, ref)
        except (KernelBuildError, KernelConfigError) as exc:
            # This kernel cannot be tested: said (and mailed), remembered so it is not rebuilt every
            # run; the source's next version is tried as usual. A failure that looks like the host's
            # (timed out, killed, disk full, compiler out of memory) is not remembered: built again next run.
            trouble = exc.host_trouble if isinstance(exc, KernelBuildError) else None
            then = (f"it looks like this host's trouble, not the kernel's ({trouble}): the next watch run builds "
                    "it again" if trouble else "its next version will be tried")
            text = (f"pmemlab watch {plan.name}: kernel source {source.name} {version}\n"
                    f"BUILD FAILED: no image for this kernel; nothing ran on it ({then})\n"
                    f"{exc}\n")
            safe = version.replace("/", "_").replace("@", "-")
            result.reports.append(_write_report(report_dir, f"build-{source.name}-{safe}.txt", text))
            result.texts.append(text)
            result.headlines.append(f"{source.name}: BUILD FAILED for {version}"
                                    + (" (host trouble: retried next run)" if trouble else ""))
            result.statuses.append(2)
            say(text.rstrip("\n"))
            if not trouble:
                store.watch_record_seen(plan.name, source.name, version)
            continue
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
            comparison = None
            if base is None:
                headline = f"FIRST RUN of scenario {name}: no baseline; campaign exit status {status}"
                text = header + headline + "\n"
            else:
                comparison = compare(store.get_campaign(base.id), candidate, known)
                if any(c.change.bad for c in comparison.cells) and plan.reruns > 0:
                    say(f"re-running the failing cases of {sum(c.change.bad for c in comparison.cells)} "
                        f"failing cell(s) up to {plan.reruns} time(s) each before calling a regression")
                    outcome = confirm_failures(store, comparison, known, plan.reruns,
                                               rerun_factory(store.url, candidate.id), say)
                    comparison, candidate = outcome.comparison, outcome.comparison.candidate
                # A regression decides; otherwise a campaign without evidence (2) still says so.
                status = 1 if comparison.exit_status == 1 else max(comparison.exit_status, 2 if status == 2 else 0)
                body = render_text(comparison)
                headline = f"{name}: {body.splitlines()[0]}"
                text = header + body
            result.reports.append(_write_report(report_dir, f"{candidate.id}.txt", text))
            result.reports.extend(_side_reports(plan, report_dir, candidate, comparison, kind_sections))
            say(text.rstrip("\n"))
            result.statuses.append(status)
            result.texts.append(text)
            result.headlines.append(headline)
        store.watch_record_seen(plan.name, source.name, version)
    return max((s for r in results for s in r.statuses), default=0), results


def mail_summary(plan_name: str, status: int, results: list[SourceResult]) -> tuple[str, str] | None:
    """(subject, body) of a run that did something, what changed first; None when nothing was new."""
    texts = [t for r in results for t in r.texts]
    if not texts:
        return None
    word = {0: "no regression", 1: "REGRESSION", 2: "NO VERDICT"}.get(status, f"status {status}")
    heads = [h for r in results for h in r.headlines]
    subject = f"pmemlab watch {plan_name}: {word}: " + "; ".join(heads)
    if len(subject) > 200:
        subject = subject[:197] + "..."
    lines = [f"pmemlab watch {plan_name}: {word} (exit status {status})", ""]
    lines += [f"  {h}" for h in heads]
    body = "\n".join(lines) + "\n\n" + "\n".join(texts)
    return subject, body


def check_sources(plan: Plan) -> None:
    """Fail early on a source that cannot be read (a directory without bzImage is a ConfigError)."""
    for source in plan.kernels:
        if source.directory is not None and not source.directory.is_dir():
            raise ConfigError(f"{plan.path}: kernel {source.name}: no such directory {source.directory}")
