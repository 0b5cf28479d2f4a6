"""One self-contained HTML page per campaign: inline CSS, no scripts, no external assets.

Everything that came from a scenario, a guest or an oracle is escaped;
artifact links are relative to the page, so a copied run tree still works.
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from lab.report import latency
from lab.report.campaign import POWER_CUT_MODEL, SUMMARY_COLUMNS, latest_attempt, summarize, summary_rows

# Kind sections rendered here in lab/report (by kind name), so their kinds need not import reports.
_REPORT_SECTIONS: dict[str, Callable[[list[dict[str, Any]], Path], str]] = {latency.KIND: latency.render_html}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr.total td { font-weight: bold; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; }
dl.meta dt { font-weight: bold; }
p.model { background: #f7f7e8; border-left: 4px solid #cc9; padding: 0.5em 1em; }
article.case { border: 1px solid #ddd; border-radius: 4px; padding: 0.3em 1em; margin: 1em 0; }
.verdict { font-weight: bold; padding: 0 0.4em; border-radius: 3px; color: #fff; background: #777; }
.v-pass { background: #2a7d2a; } .v-violation { background: #b22; } .v-kernel-bug { background: #8b2b8b; }
.v-hang { background: #b7791f; } .v-infra-error { background: #b7791f; }
.unmet { color: #b22; font-weight: bold; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; }
"""

_VERDICT_CLASS = {"PASS": "v-pass", "VIOLATION": "v-violation", "KERNEL-BUG": "v-kernel-bug", "HANG": "v-hang",
                  "INFRA-ERROR": "v-infra-error"}


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _badge(verdict: str | None) -> str:
    css = _VERDICT_CLASS.get(verdict or "", "")
    return f'<span class="verdict {css}">{_e(verdict or "unfinished")}</span>'


def _href(target: str, page_dir: Path) -> str:
    """A relative URL from the page's directory to target (a path on this machine)."""
    rel = os.path.relpath(Path(target).resolve(), page_dir.resolve())
    return _e(quote(Path(rel).as_posix()))


def _table(columns: list[str], rows: list[list[str]], total: bool = False) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        css = ' class="total"' if total and i == len(rows) - 1 else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _header(campaign: dict[str, Any], exit_status: int) -> str:
    fields = [("scenario", campaign.get("scenario_name")), ("scenario file", campaign.get("scenario_path")),
              ("scenario hash", campaign.get("scenario_hash")), ("image", campaign.get("image_id")),
              ("kernel", campaign.get("kernel_version")), ("accelerator", campaign.get("accelerator")),
              ("jobs", campaign.get("jobs")), ("status", campaign.get("status")),
              ("created", campaign.get("created_at")), ("finished", campaign.get("finished_at")),
              ("exit status", exit_status)]
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in fields)
    return (f"<header><h1>Campaign {_e(campaign.get('id'))}: {_e(campaign.get('scenario_name'))}</h1>"
            f'<dl class="meta">{meta}</dl><p class="model">{_e(POWER_CUT_MODEL)}</p></header>')


def _findings(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "<p>No findings recorded.</p>"
    rows = []
    for f in findings:
        details = json.dumps(f.get("details") or {}, indent=1, sort_keys=True, default=str)
        rows.append(f"<tr><td>{_e(f.get('oracle'))}</td><td>{_badge(f.get('verdict'))}</td>"
                    f"<td>{_e(f.get('summary'))}</td><td><pre>{_e(details)}</pre></td></tr>")
    return ('<table class="findings"><thead><tr><th>oracle</th><th>verdict</th><th>summary</th>'
            f"<th>details</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _artifacts(latest: dict[str, Any], page_dir: Path) -> str:
    links = []
    if latest.get("run_dir"):
        links.append(f'<li><a href="{_href(latest["run_dir"], page_dir)}">run directory</a></li>')
    for artifact in latest.get("artifacts") or []:
        name = Path(str(artifact.get("path"))).name
        links.append(f'<li><a href="{_href(str(artifact.get("path")), page_dir)}">{_e(artifact.get("kind"))}: '
                     f"{_e(name)}</a></li>")
    return f'<ul class="artifacts">{"".join(links)}</ul>' if links else ""


def _case(case: dict[str, Any], page_dir: Path) -> str:
    latest = latest_attempt(case) or {}
    verdict, met = case.get("verdict"), case.get("met_expectation")
    met_text = "yes" if met else ("no" if met is False else "-")
    title = f"{case.get('cell_key')} repeat {case.get('repeat')} crash point {case.get('crash_index')}"
    facts = (f"expected {_e(case.get('expect'))}, got {_badge(verdict)}; met: "
             f"<span class=\"{'' if met or met is None else 'unmet'}\">{met_text}</span>; "
             f"case {_e(case.get('id'))}, seed {_e(case.get('seed'))}, status {_e(case.get('status'))}, "
             f"infra retries {_e(case.get('infra_retries', 0))}")
    error = f'<p class="error">error: {_e(latest["error"])}</p>' if latest.get("error") else ""
    return (f'<article class="case" id="case-{_e(case.get("id"))}"><h3>{_e(title)}</h3><p>{facts}</p>{error}'
            f"{_findings(latest.get('findings') or [])}{_artifacts(latest, page_dir)}</article>")


def _kind_sections(cases: list[dict[str, Any]], page_dir: Path) -> str:
    """Scenario-specific sections (latency tables, contract tables, ...) from each workload kind present."""
    from lab.workloads.catalog import kinds

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        by_kind.setdefault(str((case.get("case") or {}).get("workload", "mapsync")), []).append(case)
    sections = []
    for name, members in by_kind.items():
        kind = kinds().get(name)
        render = _REPORT_SECTIONS.get(name) or (kind.render_html if kind is not None else None)
        if render is not None:
            sections.append(f'<section id="kind-{_e(name)}">{render(members, page_dir)}</section>')
    return "".join(sections)


def write_html(path: str | Path, campaign: dict[str, Any], cases: list[dict[str, Any]]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = summarize(str(campaign.get("id")), cases)
    ordered = sorted(cases, key=lambda c: int(c.get("position") or 0))
    title = f"pmemlab campaign {campaign.get('id')}: {campaign.get('scenario_name')}"
    page = ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>'
            f"<body>{_header(campaign, summary.exit_status)}"
            f'<section id="summary"><h2>Summary</h2>{_table(SUMMARY_COLUMNS, summary_rows(summary), True)}</section>'
            f"{_kind_sections(ordered, out.parent)}"
            f'<section id="cases"><h2>Cases</h2>{"".join(_case(c, out.parent) for c in ordered)}</section>'
            "</body></html>\n")
    out.write_text(page, encoding="utf-8")
    return out
