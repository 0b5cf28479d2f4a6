"""CLI commands for campaigns, stored results and exact repro (registered on lab.cli's group)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import click

from lab.ui import UI


def _store(db: str | None) -> Any:
    from lab.store.db import ResultsStore

    return ResultsStore.open(db)


db_option = click.option("--db", default=None, help="Results database URL (default: SQLite in the data directory).")
jobs_option = click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
                           help="Machines at once (default: from CPUs and free memory).")


def _progress(ui: UI, total: int, jobs: int) -> Any:
    from lab.report.live import LineProgress, LiveProgress

    if ui.json_mode or not ui.err.is_terminal:
        return LineProgress(ui.err)
    return LiveProgress(total, jobs, ui.err)


def _run_campaign(ui: UI, store: Any, campaign_id: str, cases: list[Any], image_name: str, accel: str,
                  jobs: int | None, attempts: dict[str, int], scenario: Any, cold_boot: bool) -> None:
    from contextlib import nullcontext

    from lab.campaign import CampaignContext, default_jobs, run_cases
    from lab.cli import resolve_accel
    from lab.image import cache as image_cache
    from lab.paths import cache_dir, runs_dir

    image = image_cache.resolve(cache_dir(), image_name)
    verdict = resolve_accel(accel, image)
    jobs = jobs or (default_jobs(cases[0].check.shape) if cases else 1)
    from lab.cli import boot_mode

    boot = boot_mode(cold_boot or scenario.cold_boot)
    ctx = CampaignContext(campaign_id, image, verdict, store, runs_dir(), boot=boot,
                          cuts_per_run=scenario.cuts_per_run)
    progress = _progress(ui, len(cases), jobs)
    ui.info(f"campaign {campaign_id}: {len(cases)} cases, {jobs} at a time, accelerator {verdict.accel.value}, "
            f"{boot.value} machines")
    store.set_campaign_status(campaign_id, "running")
    try:
        with progress if hasattr(progress, "__enter__") else nullcontext():
            run_cases(ctx, cases, jobs, progress, attempts_so_far=lambda c: attempts.get(c.id, 0))
    except KeyboardInterrupt:
        ui.err.print(f"interrupted: no machine left running; resume with 'pmemlab campaign resume {campaign_id}'")
        raise SystemExit(130)
    if ctx.stop_reason:
        ui.err.print(f"campaign stopped: {ctx.stop_reason} ('pmemlab campaign resume {campaign_id}')")
    store.set_campaign_status(campaign_id, "interrupted" if ctx.stop.is_set() else "finished")


def _report(ui: UI, store: Any, campaign_id: str, as_json: bool, junit: Path | None, html: Path | None) -> int:
    from lab.report.campaign import render_summary, summary_to_json
    from lab.report.html import write_html
    from lab.report.junit import write_junit

    summary = store.campaign_summary(campaign_id)
    campaign = store.get_campaign(campaign_id)
    cases = campaign["cases"]
    if junit:
        write_junit(junit, campaign, cases)
    if html:
        write_html(html, campaign, cases)
    if as_json:
        ui.emit_json(summary_to_json(summary, cases))
    else:
        render_summary(ui, summary)
        for path in (junit, html):
            if path:
                ui.info(f"wrote {path}")
    return int(summary.exit_status)


@click.group()
def campaign() -> None:
    """Crash-consistency campaigns: a scenario's matrix, run in parallel and stored."""


@campaign.command("run")
@click.argument("scenario_path", type=click.Path(path_type=Path))
@jobs_option
@db_option
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", type=click.Path(path_type=Path), default=None, help="Write JUnit XML here.")
@click.option("--html", type=click.Path(path_type=Path), default=None, help="Write a self-contained HTML report here.")
@click.option("--cold-boot", is_flag=True, help="Boot every machine from cold instead of restoring a ready snapshot.")
def campaign_run(scenario_path: Path, jobs: int | None, db: str | None, accel: str, as_json: bool,
                 junit: Path | None, html: Path | None, cold_boot: bool) -> None:
    """Expand SCENARIO into cases and run them all."""
    from lab.campaign import new_campaign_id
    from lab.cases import expand
    from lab.cli import EXIT_LAB_ERROR
    from lab.errors import LabError
    from lab.image import cache as image_cache
    from lab.paths import cache_dir
    from lab.scenario import load_scenario

    ui = UI(as_json)
    try:
        scenario = load_scenario(scenario_path)  # every error before any machine boots
        cases = expand(scenario)
        image = image_cache.resolve(cache_dir(), scenario.image)
        store = _store(db)
        campaign_id = new_campaign_id()
        store.create_campaign(campaign_id=campaign_id, scenario_name=scenario.name, scenario_path=str(scenario_path),
                              scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id=image.id,
                              kernel_version=image.kernel_version, accelerator=accel, jobs=jobs or 0,
                              cases=[c.to_dict() for c in cases])
        _run_campaign(ui, store, campaign_id, cases, image.id, accel, jobs, {}, scenario, cold_boot)
        raise SystemExit(_report(ui, store, campaign_id, as_json, junit, html))
    except LabError as exc:
        ui.abort(str(exc), EXIT_LAB_ERROR)


@campaign.command("resume")
@click.argument("campaign_id")
@jobs_option
@db_option
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", type=click.Path(path_type=Path), default=None)
@click.option("--html", type=click.Path(path_type=Path), default=None)
@click.option("--cold-boot", is_flag=True, help="Boot every machine from cold instead of restoring a ready snapshot.")
def campaign_resume(campaign_id: str, jobs: int | None, db: str | None, accel: str, as_json: bool,
                    junit: Path | None, html: Path | None, cold_boot: bool) -> None:
    """Run what a campaign has not finished (interrupted, crashed or pending cases)."""
    from lab.cases import Case
    from lab.cli import EXIT_LAB_ERROR
    from lab.errors import LabError

    ui = UI(as_json)
    try:
        store = _store(db)
        info = store.get_campaign(campaign_id)
        pending = [Case.from_dict(c) for c in store.pending_cases(campaign_id)]
        attempts = {c["id"]: int(c["attempts_count"]) for c in info["cases"]}
        ui.info(f"campaign {campaign_id}: {len(pending)} of {len(info['cases'])} cases left")
        if pending:
            from lab.scenario import parse_scenario

            scenario = parse_scenario(str(info["scenario_text"]).encode(), Path(str(info["scenario_path"])))
            _run_campaign(ui, store, campaign_id, pending, info["image_id"], accel, jobs, attempts, scenario,
                          cold_boot)
        else:
            store.set_campaign_status(campaign_id, "finished")
        raise SystemExit(_report(ui, store, campaign_id, as_json, junit, html))
    except LabError as exc:
        ui.abort(str(exc), EXIT_LAB_ERROR)


@campaign.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True)
def campaign_list(db: str | None, as_json: bool) -> None:
    """Campaigns in the results database."""
    _list_campaigns(UI(as_json), db, as_json)


def _list_campaigns(ui: UI, db: str | None, as_json: bool) -> None:
    from lab.cli import EXIT_LAB_ERROR
    from lab.errors import LabError

    try:
        rows = _store(db).list_campaigns()
    except LabError as exc:
        ui.abort(str(exc), EXIT_LAB_ERROR)
    if as_json:
        ui.emit_json(rows)
        return
    ui.table("campaigns", ["id", "scenario", "status", "cases", "created"],
             [[str(r.get("id")), str(r.get("scenario_name")), str(r.get("status")), str(r.get("case_count", "")),
               str(r.get("created_at"))] for r in rows])


@campaign.command("export")
@click.argument("case_id")
@db_option
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="File to write (default stdout).")
def campaign_export(case_id: str, db: str | None, output: Path | None) -> None:
    """Export a stored case as a standalone scenario file (attach it to a bug report)."""
    from lab.cases import Case, export_case_scenario
    from lab.cli import EXIT_LAB_ERROR
    from lab.errors import LabError

    ui = UI()
    try:
        case = Case.from_dict(_store(db).get_case(case_id)["case"])
    except LabError as exc:
        ui.abort(str(exc), EXIT_LAB_ERROR)
    text = export_case_scenario(case)
    if output:
        output.write_text(text)
        ui.info(f"wrote {output}: run it with 'pmemlab campaign run {output}'")
    else:
        sys.stdout.write(text)


@click.group()
def results() -> None:
    """Stored results."""


@results.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True)
def results_list(db: str | None, as_json: bool) -> None:
    """Campaigns in the results database."""
    _list_campaigns(UI(as_json), db, as_json)


@results.command("show")
@click.argument("ident")
@db_option
@click.option("--json", "as_json", is_flag=True)
def results_show(ident: str, db: str | None, as_json: bool) -> None:
    """One campaign (summary per cell) or one case (attempts and findings), by id or unique prefix."""
    from lab.cli import EXIT_LAB_ERROR
    from lab.errors import LabError
    from lab.report.campaign import render_summary

    ui = UI(as_json)
    try:
        store = _store(db)
        kind, data = store.find(ident)
        if as_json:
            ui.emit_json({"kind": kind, **data})
            return
        if kind == "campaign":
            ui.info(f"campaign {data['id']}: scenario {data.get('scenario_name')}, status {data.get('status')}, "
                    f"image {data.get('image_id')} (kernel {data.get('kernel_version')})")
            render_summary(ui, store.campaign_summary(data["id"]))
        else:
            ui.info(f"case {data['case']['id']} of campaign {data.get('campaign_id')}: {data['case']['cell_key']}, "
                    f"expected {data['case']['expect']}")
            for attempt in data.get("attempts", []):
                ui.info(f"  attempt {attempt.get('number')}: {attempt.get('verdict')} {attempt.get('run_dir')}")
                for finding in attempt.get("findings", []):
                    ui.info(f"    {finding['oracle']}: {finding['verdict']} {finding['summary']}")
    except LabError as exc:
        ui.abort(str(exc), EXIT_LAB_ERROR)


@click.command()
@click.argument("case_id")
@click.option("--times", type=click.IntRange(1, 100), default=1, show_default=True)
@db_option
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--cold-boot", is_flag=True, help="Boot every machine from cold instead of restoring a ready snapshot.")
def repro(case_id: str, times: int, db: str | None, accel: str, as_json: bool, cold_boot: bool) -> None:
    """Re-run a stored case exactly (same image, kernel, seed, crash point) N times."""
    from lab.cases import Case
    from lab.cli import EXIT_LAB_ERROR, boot_mode, resolve_accel
    from lab.runner.guest_run import RunHooks
    from lab.workloads.catalog import get_kind
    from lab.errors import LabError
    from lab.image import cache as image_cache
    from lab.paths import cache_dir
    from lab.runs import new_run_dir

    ui = UI(as_json)
    try:
        store = _store(db)
        stored = store.get_case(case_id)
        case = Case.from_dict(stored["case"])
        image_id = store.get_campaign(stored["campaign_id"])["image_id"]  # the exact image the case ran on
        recorded = stored.get("verdict")
        if recorded is None:
            ui.abort(f"case {case.id} has no final verdict to reproduce (campaign {stored.get('campaign_id')} "
                     "did not finish it)", EXIT_LAB_ERROR)
        image = image_cache.resolve(cache_dir(), image_id)
        verdict = resolve_accel(accel, image)
        crash = f", crash {case.crash.describe()}" if case.crash is not None else ""
        ui.info(f"repro of case {case.id} ({case.workload}: {case.cell_key}{crash}), recorded verdict "
                f"{recorded}, image {image.id}, {times} run(s)")
        got: list[str] = []
        walls: list[float] = []
        for i in range(times):
            run_dir = new_run_dir(f"repro-{case.id}")
            result = get_kind(case.workload).run(case.check, image, verdict, run_dir,
                                                 RunHooks(boot=boot_mode(cold_boot), oracles=dict(case.oracles)))
            got.append(result.verdict.value)
            walls.append(result.timings.get("total", 0.0))
            ui.info(f"run {i + 1}/{times}: {result.verdict.value} ({run_dir})")
    except LabError as exc:
        ui.abort(str(exc), EXIT_LAB_ERROR)
    same = sum(1 for v in got if v == recorded)
    data = {"case_id": case.id, "recorded_verdict": recorded, "runs": times, "reproduced": same, "verdicts": got,
            "median_s": statistics.median(walls) if walls else None}
    if as_json:
        ui.emit_json(data)
    else:
        ui.info(f"reproduced the recorded verdict {recorded} in {same} of {times} runs")
    raise SystemExit(0 if same == times else 1)
