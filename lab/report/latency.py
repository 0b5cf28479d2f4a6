"""Page-fault latency rendered: the table beside the published figures, ratios, histograms, a chart.

The statistics (buckets, summaries, cells, ratios, the published figures)
are lab/latency_stats.py; this module only lays them out. Absolute numbers
from an emulated machine (TCG) are not comparable with the published ones;
what should carry over is the shape: the ratio MAP_SYNC / plain for each
(file, background load) pair. Everything here is pure except ``plot_png``/``plot_svg``
(matplotlib) and ``render_html`` (which also writes the PNG).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.latency_stats import (KIND, PUBLISHED, SOURCE, Bucket, Cell, Ratio, Summary, cells_from_results,
                               published, ratios)
from lab.markup import Html, e, table

if TYPE_CHECKING:
    from lab.store.records import CaseRecord

PLOT_FILE = "fault-latency.png"


def results_of_cases(cases: Iterable[CaseRecord]) -> list[Mapping[str, Any]]:
    """The latest attempt's result of each stored case."""
    out: list[Mapping[str, Any]] = []
    for case in cases:
        result = case.latest.result if case.latest else None
        if isinstance(result, Mapping):
            out.append(result)
        else:  # never ran to a result: still shown, as unfinished
            out.append({"kind": KIND, "verdict": case.verdict, "check": case.case.get("check") or {}})
    return out


# -- text ------------------------------------------------------------------------------------

TABLE_COLUMNS = ["fs", "file", "background", "MAP_SYNC", "samples", "min us", "avg us", "max us", "median us",
                 "published min/avg/max", "histogram (us: count)"]


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def compact_histogram(buckets: Iterable[Bucket]) -> str:
    return "  ".join(f"{b.lo}-{b.hi}:{b.count}" for b in buckets)


def table_rows(cells: Iterable[Cell]) -> list[list[str]]:
    rows = []
    for cell in cells:
        key, pub = cell.key, published(cell.key)
        pub_text = (f"{pub.summary.min_us:g}/{pub.summary.avg_us:g}/{pub.summary.max_us:g}"
                    if pub else "-")
        head = [key.fs, key.file, "copy" if key.background else "none",
                "on" if key.map_sync else "off"]
        if cell.summary is None:
            rows.append(head + ["0", "-", "-", "-", "-", pub_text, "not measured: " + ", ".join(cell.verdicts)])
            continue
        s = cell.summary
        rows.append(head + [str(s.count), _num(s.min_us), _num(s.avg_us), _num(s.max_us),
                            _num(s.p50_us) if s.p50_us is not None else "-", pub_text,
                            compact_histogram(cell.buckets)])
    return rows


def ratio_rows(items: Iterable[Ratio]) -> list[list[str]]:
    return [[r.fs, r.file, "copy" if r.background else "none",
             _num(r.plain_avg_us), _num(r.sync_avg_us), f"{r.ratio:.2f}", _num(r.extra_us),
             f"{r.p50_ratio:.2f}" if r.p50_ratio is not None else "-",
             f"{r.published:.2f}" if r.published is not None else "-"] for r in items]


RATIO_COLUMNS = ["fs", "file", "background", "plain avg us", "MAP_SYNC avg us", "ratio", "extra us",
                 "median ratio", "published ratio"]


def _text_table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(cells, widths)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows])


PREALLOCATED_NOTE = ("The cover letter's preallocated file had written blocks, so a MAP_SYNC fault needed no "
                     "metadata and cost what a plain one did: its preallocated row faces both preallocated modes "
                     "here. 'written' (zeros written through write(2), then fsync) is the like-for-like cell; "
                     "'fallocate' leaves unwritten extents, whose conversion every MAP_SYNC fault must commit.")


def cover_letter_block(label: str, summary: Summary, buckets: Iterable[Bucket]) -> str:
    """One cell as the cover letter prints it."""
    return "\n".join([f"{label}:", summary.text()] + [b.text() for b in buckets])


def render_text(cells: list[Cell]) -> str:
    """The whole comparison as plain text: table, ratios, each cell's histogram beside the published one."""
    parts = ["Page-fault latency of the first store to each page (microseconds)",
             _text_table(TABLE_COLUMNS, table_rows(cells)), "",
             "MAP_SYNC / plain (average latency)", _text_table(RATIO_COLUMNS, ratio_rows(ratios(cells))), ""]
    for cell in cells:
        if cell.summary is None:
            continue
        parts.append(cover_letter_block(f"[{cell.key.fs}] {cell.key.label()}", cell.summary, cell.buckets))
        pub = published(cell.key)
        if pub is not None:
            parts.append(cover_letter_block("  published", pub.summary, pub.buckets).replace("\n", "\n  "))
        parts.append("")
    parts.append(PREALLOCATED_NOTE)
    parts.append(f"Published figures: {SOURCE}.")
    return "\n".join(parts).rstrip() + "\n"


# -- plot ------------------------------------------------------------------------------------

# A chart group: the file's setup and the load, as its x-axis label; the published figures say only
# "preallocated" of their file.
_GROUP_ORDER = ("written", "fallocate", "preallocated", "empty")


def _group_label(group: tuple[str, bool]) -> str:
    return f"{group[0]}\n{'copy' if group[1] else 'no load'}"


def plot_png(cells: list[Cell], dpi: int = 100) -> bytes:
    """Bar chart of the average latency per cell, MAP_SYNC beside plain: one panel per
    filesystem measured, and the published figures in a last panel (own scale)."""
    buf = io.BytesIO()
    _figure(cells, dpi).savefig(buf, format="png")
    return buf.getvalue()


def plot_svg(cells: list[Cell]) -> str:
    """The same chart as inline SVG markup (the dashboard's pages: no image files, no scripts)."""
    buf = io.StringIO()
    _figure(cells, 72).savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: it goes inside HTML


def _figure(cells: list[Cell], dpi: int) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    measured = [c for c in cells if c.summary is not None]
    fss = sorted({c.key.fs for c in measured})
    panels: list[tuple[str, dict[tuple[tuple[str, bool], bool], float]]] = []
    for fs in fss:
        values: dict[tuple[tuple[str, bool], bool], float] = {
            ((c.key.file, c.key.background), c.key.map_sync): c.summary.avg_us  # type: ignore[union-attr]
            for c in measured if c.key.fs == fs}
        accel = next((c.accelerator for c in measured if c.key.fs == fs and c.accelerator), "")
        panels.append((f"{fs}, this lab{f' ({accel})' if accel else ''}", values))
    panels.append(("published (ramdisk, 2017)",
                   {(("preallocated" if pre else "empty", bg), sync): p.summary.avg_us
                    for (pre, bg, sync), p in PUBLISHED.items()}))

    fig = Figure(figsize=(4.2 * len(panels), 3.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, values) in zip(axes, panels):
        groups = sorted({g for g, _ in values}, key=lambda g: (_GROUP_ORDER.index(g[0]), g[1]))
        xs = range(len(groups))
        width = 0.38
        for offset, sync, color in ((-width / 2, False, "#6b8fb3"), (width / 2, True, "#c0504d")):
            heights = [values.get((g, sync), 0.0) for g in groups]
            bars = ax.bar([x + offset for x in xs], heights, width, color=color,
                          label="MAP_SYNC" if sync else "plain")
            ax.bar_label(bars, labels=[_num(h) if h else "" for h in heights], fontsize=7, padding=1)
        ax.set_xticks(list(xs), [_group_label(g) for g in groups], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("average first-store latency (us)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
        ax.legend(fontsize=7, frameon=False)
    return fig


def svg_figure(cases: Sequence[CaseRecord]) -> str:
    """The chart of some stored cases as an HTML <figure> with inline SVG; a line saying why not
    when they hold no fault-latency samples or matplotlib is missing."""
    cells = [c for c in cells_from_results(results_of_cases(cases)) if c.summary is not None]
    if not cells:
        return '<p class="no-plot">No fault-latency samples to plot.</p>'
    try:
        svg = plot_svg(cells)
    except ImportError as exc:
        return f'<p class="no-plot">(no chart: {e(exc)})</p>'
    return (f'<figure class="fault-latency">{svg}<figcaption>Average first-store latency per cell, MAP_SYNC '
            "beside plain; the last panel is the published figures.</figcaption></figure>")


# -- HTML ------------------------------------------------------------------------------------

def render_html(cases: Sequence[CaseRecord], out_dir: Path) -> str:
    """The fault-latency section of a campaign page: table beside the published figures,
    MAP_SYNC/plain ratios, every histogram, and the bar chart (also written to out_dir)
    embedded as a data: URI so the page stays self-contained."""
    cells = cells_from_results(results_of_cases(cases))
    accels = sorted({c.accelerator for c in cells if c.accelerator})
    intro = ("Latency of the first store to each page of a DAX mapping (each store takes a write fault), "
             "the file preallocated (written: zeros written through write(2); fallocate: unwritten extents) "
             "or empty (ftruncate to size), with and without MAP_SYNC, with and without a background file "
             "copy on the same filesystem. Histograms count whole microseconds in power-of-two buckets, as "
             f"the published figures do. {PREALLOCATED_NOTE} Published figures: {SOURCE}.")
    if "tcg" in accels:
        intro += (" These machines ran under TCG (an emulated CPU): absolute latencies are far above real "
                  "hardware; compare the MAP_SYNC/plain ratios, not the microseconds.")
    parts = [f'<section id="fault-latency"><h2>Page-fault latency</h2><p>{e(intro)}</p>']
    if not cells:
        parts.append("<p>No fault-latency results.</p></section>")
        return "".join(parts)
    parts.append(table(TABLE_COLUMNS, table_rows(cells)))
    parts.append("<h3>MAP_SYNC / plain</h3>")
    parts.append(table(RATIO_COLUMNS, ratio_rows(ratios(cells))))
    if any(c.summary is not None for c in cells):
        try:
            png = plot_png(cells)
        except ImportError as exc:  # the page still renders without the chart
            parts.append(f"<p>(no chart: {e(exc)})</p>")
        else:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / PLOT_FILE).write_bytes(png)
            except OSError:
                pass  # the embedded copy is the one the page uses
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="average first-store latency per cell, MAP_SYNC vs plain" '
                         f'src="data:image/png;base64,{data}"><figcaption>Average latency per cell; the '
                         f"last panel is the published figures.</figcaption></figure>")
    rows: list[list[str | Html]] = []
    for cell in cells:
        if cell.summary is None:
            continue
        pub = published(cell.key)
        ours = cover_letter_block(cell.key.label(), cell.summary, cell.buckets)
        theirs = cover_letter_block(cell.key.label(), pub.summary, pub.buckets) if pub else "-"
        rows.append([f"{cell.key.fs}: {cell.key.label()} ({cell.runs} run{'s' if cell.runs != 1 else ''})",
                     Html(f"<pre>{e(ours)}</pre>"), Html(f"<pre>{e(theirs)}</pre>")])
    parts.append("<h3>Histograms</h3>" + table(["cell", "this lab", "published"], rows))
    parts.append("</section>")
    return "".join(parts)
