"""Dashboard routes: campaigns per scenario and kernel, a campaign, a cell's trend, a comparison, a case.

GET only: the app has no write endpoint and no API docs. Pages are rendered on the
server from store records (lab/store/records.py) and lab/compare.py's comparison.
A case page shows the text artifacts its attempts recorded (console logs, fsck
output), read from the paths stored for them and cut to their last MAX_LOG_BYTES.
Fault-latency cases get lab/report/latency.py's chart as inline SVG (drawn on the server:
no scripts) on their case page, and all of a campaign's on its page.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from lab.compare import Change, cell_state, compare
from lab.known_issues import KnownIssues
from lab.latency_stats import KIND as FAULT_LATENCY
from lab.report.latency import svg_figure
from lab.store.db import ResultsStore, StoreError
from lab.store.records import CampaignListing, CampaignRecord, CaseRecord
from lab.store.summary import summarize

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_LOG_BYTES = 64 * 1024
TEXT_ARTIFACTS = ("console", "fsck", "events")


def read_tail(path: str) -> str:
    """The end of a text artifact; a missing one says so instead of failing the page."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - MAX_LOG_BYTES))
            data = f.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror or exc})"
    prefix = f"(last {MAX_LOG_BYTES // 1024} KiB of {size} bytes)\n" if size > MAX_LOG_BYTES else ""
    return prefix + data.decode(errors="replace")


def group_campaigns(listing: list[CampaignListing]) -> dict[str, dict[str, list[CampaignListing]]]:
    """scenario -> kernel -> campaigns, newest first at each level (the listing's order)."""
    out: dict[str, dict[str, list[CampaignListing]]] = OrderedDict()
    for item in listing:
        c = item.campaign
        out.setdefault(c.scenario_name, OrderedDict()).setdefault(c.kernel_version, []).append(item)
    return out


def previous_of(listing: list[CampaignListing]) -> dict[str, str]:
    """campaign id -> the campaign of the same scenario just before it (its default baseline)."""
    prev: dict[str, str] = {}
    last: dict[str, str] = {}
    for item in reversed(listing):  # oldest first
        c = item.campaign
        if c.scenario_name in last:
            prev[c.id] = last[c.scenario_name]
        last[c.scenario_name] = c.id
    return prev


def create_app(store: ResultsStore, known: KnownIssues | None = None) -> FastAPI:
    app = FastAPI(title="pmemlab results", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    known_issues = known or KnownIssues(())

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context)

    @app.exception_handler(StoreError)
    def _missing(_request: Request, exc: StoreError) -> PlainTextResponse:
        return PlainTextResponse(str(exc), status_code=404)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        listing = store.list_campaigns()
        return page(request, "index.html", groups=group_campaigns(listing), previous=previous_of(listing))

    @app.get("/campaign/{campaign_id}", response_class=HTMLResponse)
    def campaign(request: Request, campaign_id: str) -> HTMLResponse:
        record = store.get_campaign(campaign_id)
        listing = store.list_campaigns()
        latency = [c for c in record.cases if c.workload == FAULT_LATENCY]
        return page(request, "campaign.html", campaign=record, summary=summarize(record.id, record.cases),
                    previous=previous_of(listing).get(record.id),
                    latency_plot=Markup(svg_figure(latency)) if latency else None)

    @app.get("/trend", response_class=HTMLResponse)
    def trend(request: Request, scenario: str, cell: str) -> HTMLResponse:
        rows = [(c, cases, cell_state(cases)) for c, cases in store.cell_history(scenario, cell)]
        return page(request, "trend.html", scenario=scenario, cell=cell, rows=rows)

    @app.get("/compare/{baseline}/{candidate}", response_class=HTMLResponse)
    def comparison(request: Request, baseline: str, candidate: str) -> HTMLResponse:
        result = compare(store.get_campaign(baseline), store.get_campaign(candidate), known_issues)
        return page(request, "compare.html", result=result, groups=result.by_change(), Change=Change)

    @app.get("/case/{campaign_id}/{case_id}", response_class=HTMLResponse)
    def case(request: Request, campaign_id: str, case_id: str) -> HTMLResponse:
        record: CampaignRecord = store.get_campaign(campaign_id)
        found: CaseRecord | None = next((c for c in record.cases if c.id == case_id), None)
        if found is None:
            raise StoreError(f"no case {case_id} in campaign {campaign_id}")
        logs = {a.id: [(art.kind, art.path, read_tail(art.path)) for art in a.artifacts
                       if art.kind in TEXT_ARTIFACTS] for a in found.attempts}
        plot = Markup(svg_figure([found])) if found.workload == FAULT_LATENCY else None
        return page(request, "case.html", campaign=record, case=found, logs=logs, latency_plot=plot)

    return app
