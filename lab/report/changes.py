"""The "Changes since baseline" section of a campaign's HTML page (lab/report/html.py), from a
lab/compare.py comparison: what changed first (worst first), unchanged cells only counted."""

from __future__ import annotations

from lab.compare import Comparison
from lab.markup import Html, e, table

COLUMNS = ["change", "cell", "baseline", "candidate", "cases"]


def _cases(cell_cases: list[str]) -> Html:
    return Html("<br>".join(e(c) for c in cell_cases))


def render_changes_html(result: Comparison) -> str:
    b = result.baseline
    groups = result.by_change()
    rows: list[list[str | Html]] = []
    for change, cells in groups.items():
        if not change.changed:
            continue
        for cell in cells:
            lines = [f"{c.case_id}: {c.baseline or '-'} -> {c.candidate or '-'} (expected {c.expect}"
                     + (f"; re-runs: {', '.join(c.reruns)}" if c.reruns else "") + ")" for c in cell.cases[:5]]
            if cell.known is not None:
                lines.append(f"known issue: {cell.known.reason}")
            css = "bad" if change.bad else change.value.replace(" ", "-")
            rows.append([Html(f'<span class="change {e(css)}">{e(change.value)}</span>'), cell.cell_key,
                         cell.baseline.value, cell.candidate.value, _cases(lines)])
    still = ", ".join(f"{len(cells)} {ch.value}" for ch, cells in groups.items() if cells and not ch.changed)
    head = (f'<section id="changes"><h2>Changes since baseline</h2><p>Baseline: campaign {e(b.id)} '
            f"({e(b.scenario_name)}, kernel {e(b.kernel_version)}).</p>")
    body = table(COLUMNS, rows) if rows else "<p>No change since the baseline.</p>"
    tail = f"<p>Unchanged: {e(still)}.</p>" if still else ""
    expired = "".join(f"<li>{e(i.where)}: {e(i.reason)}</li>" for i in result.expired)
    if expired:
        tail += f"<p>Expired known issues (their kernel range is past):</p><ul>{expired}</ul>"
    return head + body + tail + "</section>"
