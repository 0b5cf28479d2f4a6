"""HTML pieces every report section uses: escaping, one table builder, index ranges.

The campaign page (lab/report) and the workload kinds' own sections build
their tables with these, so every table on a page escapes the same way.
A leaf module: it imports nothing of the lab, so kinds use it without
depending on the reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Html:
    """Markup that is already safe: a table puts it in a cell as it is (``css``: the cell's class)."""

    text: str
    css: str = ""


Cell = str | Html


def e(value: object) -> str:
    """Text as HTML: None is empty, everything else escaped (quotes included)."""
    return escape("" if value is None else str(value), quote=True)


def _td(cell: Cell, tag: str = "td") -> str:
    if isinstance(cell, Html):
        css = f' class="{e(cell.css)}"' if cell.css else ""
        return f"<{tag}{css}>{cell.text}</{tag}>"
    return f"<{tag}>{e(cell)}</{tag}>"


def table(columns: Sequence[Cell], rows: Iterable[Sequence[Cell]], *, css: str = "",
          total_row: bool = False) -> str:
    """A <table>: text cells are escaped, ``Html`` cells kept; total_row: the last row is a totals row."""
    body = [f"<tr>{''.join(_td(c) for c in row)}</tr>" for row in rows]
    if total_row and body:
        body[-1] = '<tr class="total">' + body[-1][len("<tr>"):]
    klass = f' class="{e(css)}"' if css else ""
    return (f"<table{klass}><thead><tr>{''.join(_td(c, 'th') for c in columns)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def index_ranges(indices: Iterable[int]) -> str:
    """Record indices as ranges for people: [0, 1, ..., 127, 130] -> "0-127, 130" (sorted, duplicates once)."""
    ordered = sorted(set(indices))
    parts: list[str] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        parts.append(str(ordered[start]) if end == start else f"{ordered[start]}-{ordered[end]}")
        start = end + 1
    return ", ".join(parts)
