"""`pmemlab compare BASELINE CANDIDATE`: what changed between two stored campaigns (added to lab.cli's group)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lab.cli_common import db_option, json_option, lab_errors, open_store
from lab.errors import ConfigError
from lab.ui import UI

if TYPE_CHECKING:
    from lab.store.db import ResultsStore
    from lab.store.records import CampaignRecord


def load_campaign(store: ResultsStore, ident: str, role: str) -> CampaignRecord:
    """The campaign an id or unique prefix names; a case id is a one-line error."""
    from lab.store.records import CampaignRecord

    found = store.find(ident)
    if not isinstance(found, CampaignRecord):
        raise ConfigError(f"{role} {ident!r} is a case, not a campaign: give a campaign id (pmemlab results list)")
    return found


@click.command()
@click.argument("baseline")
@click.argument("candidate")
@click.option("--known-issues", "known_path", type=click.Path(path_type=Path), default=None,
              help="TOML file of known issues (see lab/known_issues.py): reported as known, not as regressions.")
@click.option("--rerun", "reruns", type=click.IntRange(0, 20), default=0, show_default=True,
              help="Re-run each failing case of a regression or new failure up to K times first "
                   "(pmemlab repro --record; a case that passes once makes its cell flaky).")
@click.option("--junit", type=click.Path(path_type=Path), default=None,
              help="Write the candidate's JUnit XML here: regressions and new failures as failures.")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Write the candidate's HTML report here, led by its changes since the baseline.")
@db_option
@json_option
@lab_errors
def compare(baseline: str, candidate: str, known_path: Path | None, reruns: int, junit: Path | None,
            html: Path | None, db: str | None, as_json: bool) -> None:
    """Compare two campaigns cell by cell. Exit 1 on a regression or new failure, 2 when the candidate
    lacks evidence (infra), else 0."""
    from lab.compare import compare as compare_campaigns
    from lab.compare import render_text
    from lab.known_issues import KnownIssues, load_known_issues
    known = load_known_issues(known_path) if known_path is not None else KnownIssues(())
    store = open_store(db)
    try:
        base = load_campaign(store, baseline, "baseline")
        cand = load_campaign(store, candidate, "candidate")
        result = compare_campaigns(base, cand, known)
        if reruns:
            from lab.rerun import confirm_failures, repro_runner

            ui = UI()
            result = confirm_failures(store, result, known, reruns, repro_runner(store.url, cand.id),
                                      lambda m: ui.info(m, literal=True)).comparison
    finally:
        store.close()
    if junit is not None:
        from lab.report.junit import write_junit

        write_junit(junit, result.candidate, result)
    if html is not None:
        from lab.cli_campaign import kind_sections
        from lab.report.html import write_html

        write_html(html, result.candidate, kind_sections(result.candidate.cases, html.parent), result)
    if as_json:
        UI(True).emit_json(result.to_dict())
    else:
        sys.stdout.write(render_text(result))
    raise SystemExit(result.exit_status)
