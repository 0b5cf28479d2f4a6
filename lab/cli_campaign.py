"""CLI commands for campaigns, stored results and exact repro (added to lab.cli's group)."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from lab.cli_common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LAB_ERROR, EXIT_OK, accel_option, boot_mode,
                            cold_boot_option, db_option, host_option, image_and_accel, jobs_option, json_option,
                            lab_errors, open_store)
from lab.errors import ConfigError
from lab.ui import UI

if TYPE_CHECKING:
    from lab.campaign import CampaignContext, Executor, Progress
    from lab.cases import Case
    from lab.image.cache import Image
    from lab.scenario import Scenario
    from lab.scenario.pin import ImagePin
    from lab.store.db import ResultsStore
    from lab.store.records import CampaignListing, CampaignRecord, CaseRecord

junit_option = click.option("--junit", type=click.Path(path_type=Path), default=None, help="Write JUnit XML here.")
any_image_option = click.option("--any-image", is_flag=True,
                                help="Run an exported scenario even if its image ref now resolves to another image "
                                     "than the one it pins (a warning instead of a refusal).")
cluster_option = click.option("--cluster", default=None, metavar="tls://HOST:PORT",
                               help="Run the cases on this Dask scheduler's workers, as many at once as they "
                                    "have VM slots (-j does not apply; pmemlab[cluster]; see 'pmemlab cluster "
                                    "up' and 'pmemlab worker'). A tls:// one (every 'cluster up') is reached with "
                                    "its credentials: $PMEMLAB_CLUSTER_TLS, else the data directory's cluster/tls.pem.")
html_option = click.option("--html", type=click.Path(path_type=Path), default=None,
                           help="Write a self-contained HTML report here.")


def _progress(ui: UI, total: int, jobs: int) -> Progress:
    from lab.report.live import LineProgress, LiveProgress

    if ui.json_mode or not ui.err.is_terminal:
        return LineProgress(ui.err)
    return LiveProgress(total, jobs, ui.err)


def _cluster_executor(ui: UI, ctx: CampaignContext, address: str, accel: str) -> tuple[Executor, int, str]:
    """The Dask executor, its VM slots and how to name it; a one-line error where Dask is missing."""
    try:
        from lab.cluster.client import ClusterExecutor, connect
    except ImportError:
        ui.abort("--cluster needs Dask distributed: pip install 'pmemlab[cluster]'", EXIT_LAB_ERROR)
    client = connect(address)
    executor = ClusterExecutor(ctx, client, accel)
    try:
        slots = executor.prepare(ctx.image.id)
    except BaseException:
        client.close()
        raise
    return executor, slots, f"on the cluster {address} ({len(executor.worker_names())} workers)"


def _host_executor(ui: UI, ctx: CampaignContext, host_name: str, accel: str) -> tuple[Executor, int, str]:
    """The lab-host executor (its image pushed first), its slots and how to name it."""
    from lab.hosts import inventory
    from lab.hostrun.executor import HostExecutor

    lab_host = inventory.get(host_name)
    executor = HostExecutor(ctx, lab_host, accel)
    try:
        slots = executor.prepare()
    except BaseException:
        executor.shutdown()
        raise
    return executor, slots, f"on host {lab_host.name} ({lab_host.target}, its accelerator {accel})"


def _run_campaign(ui: UI, store: ResultsStore, campaign_id: str, cases: list[Case], image_name: str, accel: str,
                  jobs: int | None, attempts: dict[str, int], scenario: Scenario, cold_boot: bool,
                  cluster: str | None = None, host_name: str | None = None) -> None:
    from lab.campaign import CampaignContext, default_jobs, run_cases
    from lab.paths import cache_dir, runs_dir

    if cluster and host_name:
        raise ConfigError("give --cluster or --host, not both")
    if host_name:  # the host judges its own accelerator: here only the image is needed
        from lab.image import cache as image_cache
        from lab.vm.accel import AccelVerdict
        from lab.vm.spec import Accel

        image = image_cache.resolve(cache_dir(), image_name)
        verdict = AccelVerdict(Accel.TCG, f"chosen on host {host_name} ({accel})")
    else:
        image, verdict = image_and_accel(image_name, accel)
    machines = scenario.machines
    boot = boot_mode(cold_boot or scenario.cold_boot or machines.kind.value == "libvirt")  # libvirt: cold only
    ctx = CampaignContext(campaign_id, image, verdict, store, runs_dir(), boot=boot, backend=machines,
                          cuts_per_run=scenario.cuts_per_run)
    executor: Executor | None = None
    where = f"accelerator {verdict.accel.value}"
    if cluster and machines.kind.value == "libvirt":
        raise ConfigError(f"{scenario.path}: [machine] backend = \"libvirt\" runs on this host, not on a cluster")
    if cluster:
        executor, jobs, where = _cluster_executor(ui, ctx, cluster, accel)
    if host_name:
        executor, jobs, where = _host_executor(ui, ctx, host_name, accel)
    jobs = jobs or (default_jobs(cases[0].check.shape) if cases else 1)
    progress = _progress(ui, len(cases), jobs)
    live: AbstractContextManager[object] = progress if isinstance(progress, AbstractContextManager) else nullcontext()
    on = f" on libvirt ({machines.libvirt_uri})" if machines.kind.value == "libvirt" else ""
    ui.info(f"campaign {campaign_id}: {len(cases)} cases, {jobs} at a time, {where}, {boot.value} machines{on}")
    store.set_campaign_status(campaign_id, "running")
    try:
        with live:
            run_cases(ctx, cases, jobs, progress, attempts_so_far=lambda c: attempts.get(c.id, 0), executor=executor)
    except KeyboardInterrupt:
        ui.err.print(f"interrupted: no machine left running; resume with 'pmemlab campaign resume {campaign_id}'")
        raise SystemExit(EXIT_INTERRUPTED)
    finally:
        if executor is not None:
            executor.shutdown()
    if ctx.stop_reason:
        ui.err.print(f"campaign stopped: {ctx.stop_reason} ('pmemlab campaign resume {campaign_id}')")
    store.set_campaign_status(campaign_id, "interrupted" if ctx.stop.is_set() else "finished")


def kind_sections(cases: Sequence[CaseRecord], page_dir: Path) -> list[str]:
    """Each workload kind's own part of the HTML report, from its cases: the kind's render_html, or
    for fault-latency the report module that lays out its statistics (so the kind imports no report)."""
    from lab import latency_stats
    from lab.report import latency
    from lab.report.html import kind_section
    from lab.workloads.catalog import kinds

    report_sections: dict[str, Callable[[Sequence[CaseRecord], Path], str]] = {latency_stats.KIND: latency.render_html}
    by_kind: dict[str, list[CaseRecord]] = {}
    for case in sorted(cases, key=lambda c: c.position):
        by_kind.setdefault(case.workload, []).append(case)
    known = kinds()
    sections = []
    for name, members in by_kind.items():
        kind = known.get(name)
        render = report_sections.get(name) or (kind.render_html if kind is not None else None)
        if render is not None:
            sections.append(kind_section(name, render(members, page_dir)))
    return sections


def _report(ui: UI, store: ResultsStore, campaign_id: str, as_json: bool, junit: Path | None,
            html: Path | None) -> int:
    from lab.report.campaign import render_summary, summary_to_json
    from lab.report.html import write_html
    from lab.report.junit import write_junit
    from lab.store.summary import summarize

    campaign = store.get_campaign(campaign_id)
    summary = summarize(campaign.id, campaign.cases)
    if junit:
        write_junit(junit, campaign)
    if html:
        write_html(html, campaign, kind_sections(campaign.cases, html.parent))
    if as_json:
        ui.emit_json(summary_to_json(summary, campaign.cases))
    else:
        render_summary(ui, summary)
        for path in (junit, html):
            if path:
                ui.info(f"wrote {path}")
    return summary.exit_status


def _check_pin(ui: UI, pin: ImagePin | None, ref: str, image: Image, any_image: bool, where: str) -> None:
    """Refuse (or, with --any-image, warn) when an exported scenario's pinned image is not `image`."""
    from lab.scenario.pin import verify_pin
    from lab.vm.accel import lab_qemu_version

    check = verify_pin(pin, ref, image.id, image.kernel_version, lab_qemu_version(), any_image, where)
    for warning in check.warnings:
        ui.warn(warning)


def _stored_pin(store: ResultsStore, campaign_id: str) -> ImagePin | None:
    """The pin of the scenario a campaign ran (an export run as a campaign), if it has one."""
    from lab.errors import ConfigError
    from lab.scenario import parse_scenario

    campaign = store.get_campaign(campaign_id)
    if not campaign.scenario_text:
        return None
    try:
        return parse_scenario(campaign.scenario_text.encode(), Path(campaign.scenario_path)).pin
    except ConfigError:  # a scenario this lab no longer reads pins nothing it could check
        return None


# -- campaign ------------------------------------------------------------
@click.group()
def campaign() -> None:
    """Crash-consistency campaigns: a scenario's matrix, run in parallel and stored."""


@campaign.command("run")
@click.argument("scenario_path", type=click.Path(path_type=Path))
@jobs_option
@db_option
@accel_option
@json_option
@junit_option
@html_option
@cold_boot_option
@any_image_option
@cluster_option
@host_option
@lab_errors
def campaign_run(scenario_path: Path, jobs: int | None, db: str | None, accel: str, as_json: bool,
                 junit: Path | None, html: Path | None, cold_boot: bool, any_image: bool,
                 cluster: str | None, host_name: str | None) -> None:
    """Expand SCENARIO into cases and run them all."""
    from lab.campaign import new_campaign_id
    from lab.cases import expand
    from lab.image import cache as image_cache
    from lab.paths import cache_dir
    from lab.scenario import load_scenario

    ui = UI(as_json)
    scenario = load_scenario(scenario_path)  # every error before any machine boots
    cases = expand(scenario)
    image = image_cache.resolve(cache_dir(), scenario.image)
    _check_pin(ui, scenario.pin, scenario.image, image, any_image, f"scenario {scenario_path}")
    if cluster is None and host_name is None:  # elsewhere, the attempt's own host needs the ADR QEMU
        _require_adr_qemu(cases)
    store = open_store(db)
    campaign_id = new_campaign_id()
    store.create_campaign(campaign_id=campaign_id, scenario_name=scenario.name, scenario_path=str(scenario_path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=image.id,
                          kernel_version=image.kernel_version, accelerator=accel, jobs=jobs or 0,
                          cases=[c.to_dict() for c in cases])
    _run_campaign(ui, store, campaign_id, cases, image.id, accel, jobs, {}, scenario, cold_boot, cluster, host_name)
    raise SystemExit(_report(ui, store, campaign_id, as_json, junit, html))


def _require_adr_qemu(cases: Sequence[Case]) -> None:
    """Cells with persistence = "adr" need QEMU >= 9.2 and the plugin built: a one-line error before
    the campaign is stored and any machine boots."""
    from lab.adr.plugin import plugin_path
    from lab.adr.qemu import find_adr_qemu
    from lab.vm.spec import Persistence

    if any(c.check.shape.persistence is Persistence.ADR for c in cases):
        plugin_path(find_adr_qemu())


@campaign.command("resume")
@click.argument("campaign_id")
@jobs_option
@db_option
@accel_option
@json_option
@junit_option
@html_option
@cold_boot_option
@cluster_option
@host_option
@lab_errors
def campaign_resume(campaign_id: str, jobs: int | None, db: str | None, accel: str, as_json: bool,
                    junit: Path | None, html: Path | None, cold_boot: bool, cluster: str | None,
                    host_name: str | None) -> None:
    """Run what a campaign has not finished (interrupted, crashed or pending cases)."""
    from lab.cases import Case
    from lab.scenario import parse_scenario

    ui = UI(as_json)
    store = open_store(db)
    stored = store.get_campaign(campaign_id)
    pending = [Case.from_dict(c) for c in store.pending_cases(campaign_id)]
    attempts = {c.id: len(c.attempts) for c in stored.cases}
    ui.info(f"campaign {campaign_id}: {len(pending)} of {len(stored.cases)} cases left")
    if pending:  # the scenario as it was stored: its [machine]/[crash] options still apply
        scenario = parse_scenario((stored.scenario_text or "").encode(), Path(stored.scenario_path))
        if cluster is None and host_name is None:
            _require_adr_qemu(pending)
        _run_campaign(ui, store, campaign_id, pending, stored.image_id, accel, jobs, attempts, scenario, cold_boot,
                      cluster, host_name)
    else:
        store.set_campaign_status(campaign_id, "finished")
    raise SystemExit(_report(ui, store, campaign_id, as_json, junit, html))


def _when(instant: datetime | None) -> str:
    """To the second, with its UTC offset."""
    from lab.store.records import iso

    if instant is None:
        return "-"
    return iso(instant.replace(microsecond=0)) or "-"


def _list_campaigns(ui: UI, db: str | None) -> None:
    listings: list[CampaignListing] = open_store(db).list_campaigns()
    if ui.json_mode:
        ui.emit_json([row.to_dict() for row in listings])
        return
    ui.table("campaigns", ["id", "scenario", "status", "cases", "finished", "met", "created"],
             [[row.campaign.id, row.campaign.scenario_name, row.campaign.status, str(row.cases),
               str(row.finished), str(row.met),
               _when(row.campaign.created_at)]
              for row in listings], literal=True)


@campaign.command("list")
@db_option
@json_option
@lab_errors
def campaign_list(db: str | None, as_json: bool) -> None:
    """Campaigns in the results database, newest first."""
    _list_campaigns(UI(as_json), db)


@campaign.command("export")
@click.argument("case_id")
@db_option
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="File to write (default stdout).")
@lab_errors
def campaign_export(case_id: str, db: str | None, output: Path | None) -> None:
    """Export a stored case as a standalone scenario file (attach it to a bug report)."""
    from lab.cases import Case, export_case_scenario
    from lab.scenario.pin import ImagePin

    store = open_store(db)
    stored = store.get_case(case_id)
    campaign = store.get_campaign(stored.campaign_id)
    ran = [a.result.get("qemu_version") for a in stored.attempts if a.result]
    qemu = next((str(v) for v in reversed(ran) if v and v != "unknown"), None)  # older records: not recorded
    pin = ImagePin(campaign.image_id, campaign.kernel_version, qemu)
    text = export_case_scenario(Case.from_dict(dict(stored.case)), pin)
    if output:
        output.write_text(text)
        UI().info(f"wrote {output}: run it with 'pmemlab campaign run {output}'")
    else:
        sys.stdout.write(text)


# -- results -------------------------------------------------------------
@click.group()
def results() -> None:
    """Stored results."""


@results.command("list")
@db_option
@json_option
@lab_errors
def results_list(db: str | None, as_json: bool) -> None:
    """Campaigns in the results database, newest first."""
    _list_campaigns(UI(as_json), db)


def _show_campaign(ui: UI, campaign: CampaignRecord) -> None:
    from lab.report.campaign import render_summary
    from lab.store.summary import summarize

    ui.info(f"campaign {campaign.id}: scenario {campaign.scenario_name}, status {campaign.status}, "
            f"image {campaign.image_id} (kernel {campaign.kernel_version})", literal=True)
    render_summary(ui, summarize(campaign.id, campaign.cases))
    hosts: dict[str, int] = {}
    for case in campaign.cases:
        for attempt in case.attempts:
            if attempt.host:
                hosts[attempt.host] = hosts.get(attempt.host, 0) + 1
    if hosts:
        ui.info("attempts per host: " + ", ".join(f"{h} {n}" for h, n in sorted(hosts.items())), literal=True)


def _show_case(ui: UI, case: CaseRecord) -> None:
    state = f" {case.crash_state}" if case.crash_state else ""
    ui.info(f"case {case.id} of campaign {case.campaign_id}: {case.cell_key}{state}, expected {case.expect}",
            literal=True)
    for attempt in case.attempts:
        host = f" on {attempt.host}" if attempt.host else ""
        error = f" ({attempt.error})" if attempt.error and attempt.verdict == "INFRA-ERROR" else ""
        ui.info(f"  attempt {attempt.number}: {attempt.verdict or attempt.status}{host}{error} {attempt.run_dir}",
                literal=True)
        for finding in attempt.findings:
            ui.info(f"    {finding.oracle}: {finding.verdict} {finding.summary}", literal=True)


@results.command("show")
@click.argument("ident")
@db_option
@json_option
@lab_errors
def results_show(ident: str, db: str | None, as_json: bool) -> None:
    """One campaign (summary per cell) or one case (attempts and findings), by id or unique prefix."""
    from lab.store.records import CampaignRecord

    ui = UI(as_json)
    found = open_store(db).find(ident)
    kind = "campaign" if isinstance(found, CampaignRecord) else "case"
    if as_json:
        ui.emit_json({"kind": kind, **found.to_dict()})
    elif isinstance(found, CampaignRecord):
        _show_campaign(ui, found)
    else:
        _show_case(ui, found)


# -- repro ---------------------------------------------------------------
@click.command()
@click.argument("case_id")
@click.option("--times", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--campaign", "campaign_id", default=None,
              help="The campaign whose case to re-run (default: the case's most recent campaign).")
@click.option("--record", is_flag=True,
              help="Store each run as a re-run attempt of the case (its verdict stays; compare reads re-runs: "
                   "a crash point that passes once is flaky).")
@db_option
@accel_option
@json_option
@cold_boot_option
@any_image_option
@lab_errors
def repro(case_id: str, times: int, campaign_id: str | None, record: bool, db: str | None, accel: str,
          as_json: bool, cold_boot: bool, any_image: bool) -> None:
    """Re-run a stored case exactly (same image, kernel, seed, crash point) N times."""
    from lab.cases import Case
    from lab.runs import new_run_dir
    from lab.runner.guest_run import RunHooks
    from lab.workloads.catalog import get_kind

    ui = UI(as_json)
    store = open_store(db)
    stored = store.get_case(case_id, campaign_id)
    case = Case.from_dict(dict(stored.case))
    image_id = store.get_campaign(stored.campaign_id).image_id  # the exact image the case ran on
    recorded = stored.verdict
    if recorded is None:
        ui.abort(f"case {case.id} has no final verdict to reproduce (campaign {stored.campaign_id} "
                 "did not finish it)", EXIT_LAB_ERROR)
    image, verdict = image_and_accel(image_id, accel)
    _check_pin(ui, _stored_pin(store, stored.campaign_id), image_id, image, any_image,
               f"the scenario of campaign {stored.campaign_id}")
    crash = f", crash {case.crash.describe()}" if case.crash is not None else ""
    crash += f", crash state {case.crash_state}" if case.crash_state else ""
    ui.info(f"repro of case {case.id} ({case.workload}: {case.cell_key}{crash}), recorded verdict "
            f"{recorded}, image {image.id}, {times} run(s)", literal=True)
    got: list[str] = []
    walls: list[float] = []
    for i in range(times):
        run_dir = new_run_dir(f"repro-{case.id}")
        result = get_kind(case.workload).run(case.check, image, verdict, run_dir,
                                             RunHooks(boot=boot_mode(cold_boot), oracles=dict(case.oracles)))
        got.append(result.verdict.value)
        walls.append(result.timings.get("total", 0.0))
        if record:
            store.add_rerun(stored.campaign_id, stored.id, run_dir, result.to_dict())
        ui.info(f"run {i + 1}/{times}: {result.verdict.value} ({run_dir})", literal=True)
    same = sum(1 for v in got if v == recorded)
    data = {"case_id": case.id, "recorded_verdict": recorded, "runs": times, "reproduced": same, "verdicts": got,
            "median_s": statistics.median(walls) if walls else None}
    if as_json:
        ui.emit_json(data)
    else:
        ui.info(f"reproduced the recorded verdict {recorded} in {same} of {times} runs")
    raise SystemExit(EXIT_OK if same == times else EXIT_FAILED)
