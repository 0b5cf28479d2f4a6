"""One self-contained HTML page per campaign: inline CSS, no scripts, no external assets.

Everything that came from a scenario, a guest or an oracle is escaped;
artifact links are relative to the page, so a copied run tree still works.
Workload kinds contribute their own sections (``WorkloadKind.render_html``):
the caller renders them and hands them in, so this module knows no kind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lab.markup import Html, e, index_ranges, table
from lab.power_cut import POWER_CUT_MODEL
from lab.report.campaign import SUMMARY_COLUMNS, summary_rows
from lab.store.records import AttemptRecord, CampaignRecord, CaseRecord, FindingRecord, iso
from lab.store.summary import summarize

if TYPE_CHECKING:
    from lab.compare import Comparison

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr.total td { font-weight: bold; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; }
dl.meta dt, dl.details dt { font-weight: bold; }
dl.details { display: grid; grid-template-columns: max-content auto; gap: 0 0.8em; margin: 0; }
dl.details dd { margin: 0; }
p.model { background: #f7f7e8; border-left: 4px solid #cc9; padding: 0.5em 1em; }
article.case { border: 1px solid #ddd; border-radius: 4px; padding: 0.3em 1em; margin: 1em 0; }
.verdict { font-weight: bold; padding: 0 0.4em; border-radius: 3px; color: #fff; background: #777; }
.v-pass { background: #2a7d2a; } .v-violation { background: #b22; } .v-kernel-bug { background: #8b2b8b; }
.v-hang { background: #b7791f; } .v-infra-error { background: #b7791f; }
.unmet { color: #b22; font-weight: bold; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; }
.change { font-weight: bold; } .change.bad { color: #fff; background: #b22; padding: 0 0.4em; }
.change.flaky, .change.infra { color: #b7791f; } .change.fixed, .change.new-pass { color: #2a7d2a; }
"""

_VERDICT_CLASS = {"PASS": "v-pass", "VIOLATION": "v-violation", "KERNEL-BUG": "v-kernel-bug", "HANG": "v-hang",
                  "INFRA-ERROR": "v-infra-error"}


def _badge(verdict: str | None) -> str:
    css = _VERDICT_CLASS.get(verdict or "", "")
    return f'<span class="verdict {css}">{e(verdict or "unfinished")}</span>'


def _href(target: str, page_dir: Path) -> str:
    """A relative URL from the page's directory to target (a path on this machine)."""
    rel = os.path.relpath(Path(target).resolve(), page_dir.resolve())
    return e(quote(Path(rel).as_posix()))


def _header(campaign: CampaignRecord, exit_status: int) -> str:
    fields = [("scenario", campaign.scenario_name), ("scenario file", campaign.scenario_path),
              ("scenario hash", campaign.scenario_hash), ("image", campaign.image_id),
              ("kernel", campaign.kernel_version), ("accelerator", campaign.accelerator),
              ("jobs", campaign.jobs), ("status", campaign.status), ("created", iso(campaign.created_at)),
              ("finished", iso(campaign.finished_at)), ("exit status", exit_status)]
    meta = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in fields)
    return (f"<header><h1>Campaign {e(campaign.id)}: {e(campaign.scenario_name)}</h1>"
            f'<dl class="meta">{meta}</dl><p class="model">{e(POWER_CUT_MODEL)}</p></header>')


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def detail_text(value: Any) -> str:
    """One finding detail as text. Record lists read as ranges ("0-127, 130 (129)"), an empty one as
    "none"; corrupt-record lists ({"index", "reason"}) as ranges per reason; anything else as compact JSON."""
    if isinstance(value, list) and not value:
        return "none"
    if isinstance(value, list) and value and all(_is_index(v) for v in value):
        return f"{index_ranges(value)} ({len(set(value))})"
    if isinstance(value, list) and value and all(isinstance(v, Mapping) and _is_index(v.get("index"))
                                                 for v in value):
        by_reason: dict[str, list[int]] = {}
        for item in value:
            by_reason.setdefault(str(item.get("reason", "")), []).append(int(item["index"]))
        return "; ".join(f"{index_ranges(ix)}: {reason}" if reason else index_ranges(ix)
                         for reason, ix in by_reason.items())
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _details(details: Mapping[str, Any]) -> str:
    if not details:
        return ""
    items = "".join(f"<dt>{e(k)}</dt><dd><pre>{e(detail_text(v))}</pre></dd>" for k, v in sorted(details.items()))
    return f'<dl class="details">{items}</dl>'


def _findings(findings: Sequence[FindingRecord]) -> str:
    if not findings:
        return "<p>No findings recorded.</p>"
    rows: list[list[str | Html]] = [[f.oracle, Html(_badge(f.verdict)), f.summary, Html(_details(f.details))]
                                    for f in findings]
    return table(["oracle", "verdict", "summary", "details"], rows, css="findings")


def _artifacts(latest: AttemptRecord, page_dir: Path) -> str:
    links = []
    if latest.run_dir:
        links.append(f'<li><a href="{_href(latest.run_dir, page_dir)}">run directory</a></li>')
    for artifact in latest.artifacts:
        links.append(f'<li><a href="{_href(artifact.path, page_dir)}">{e(artifact.kind)}: '
                     f"{e(Path(artifact.path).name)}</a></li>")
    return f'<ul class="artifacts">{"".join(links)}</ul>' if links else ""


def _hosts(case: CaseRecord) -> str:
    """Which host ran each attempt (a cluster campaign spreads them), e.g. "; ran on w1 (INFRA-ERROR), w2"."""
    hosts = [a.host + (f" ({a.verdict})" if a is not case.latest and a.verdict else "")
             for a in case.attempts if a.host]
    return f"; ran on {e(', '.join(hosts))}" if hosts else ""


def _case(case: CaseRecord, page_dir: Path) -> str:
    latest = case.latest
    met = case.met_expectation
    met_text = "yes" if met else ("no" if met is False else "-")
    title = case.title
    facts = (f"expected {e(case.expect)}, got {_badge(case.verdict)}; met: "
             f"<span class=\"{'' if met or met is None else 'unmet'}\">{met_text}</span>; "
             f"case {e(case.id)}, seed {e(case.seed)}, status {e(case.status)}, "
             f"infra retries {e(case.infra_retries)}{_hosts(case)}")
    error = f'<p class="error">error: {e(latest.error)}</p>' if latest and latest.error else ""
    findings = _findings(latest.findings if latest else ())
    links = _artifacts(latest, page_dir) if latest else ""
    return (f'<article class="case" id="case-{e(case.id)}"><h3>{e(title)}</h3><p>{facts}</p>{error}'
            f"{findings}{links}</article>")


def kind_section(kind: str, body: str) -> str:
    """A workload kind's own part of the page (its render_html output), under an anchor of its name."""
    return f'<section id="kind-{e(kind)}">{body}</section>'


def write_html(path: str | Path, campaign: CampaignRecord, sections: Sequence[str] = (),
               changes: Comparison | None = None) -> Path:
    """The campaign page; ``sections``: HTML from the workload kinds (see ``kind_section``), placed
    between the summary and the cases. ``changes``: the comparison with a baseline, when there is one:
    a "Changes since baseline" section leads the page."""
    from lab.report.changes import render_changes_html

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = summarize(campaign.id, campaign.cases)
    ordered = sorted(campaign.cases, key=lambda c: c.position)
    title = f"pmemlab campaign {campaign.id}: {campaign.scenario_name}"
    page = ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style></head>'
            f"<body>{_header(campaign, summary.exit_status)}"
            f"{render_changes_html(changes) if changes is not None else ''}"
            f'<section id="summary"><h2>Summary</h2>'
            f"{table(SUMMARY_COLUMNS, summary_rows(summary), total_row=True)}</section>"
            f"{''.join(sections)}"
            f'<section id="cases"><h2>Cases</h2>{"".join(_case(c, out.parent) for c in ordered)}</section>'
            "</body></html>\n")
    out.write_text(page, encoding="utf-8")
    return out
