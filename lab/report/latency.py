"""Page-fault latency: summaries, power-of-two histograms, the table beside the published figures.

The reference is the cover letter of the synchronous page fault series
("[PATCH 0/19 v3] dax, ext4, xfs: Synchronous page faults", Jan Kara,
2017-10-11): the latency of the first store to each of 512 pages of a DAX
mapping on a ramdisk, real hardware, file preallocated or empty, with and
without a background file copy, with and without MAP_SYNC. Its histograms
count whole microseconds in power-of-two buckets ("8 - 15 us: 508"); this
module buckets the same way, so a lab cell and a published cell read alike.

Absolute numbers from an emulated machine (TCG) are not comparable with the
published ones; what should carry over is the shape: the ratio MAP_SYNC /
plain for each (file, background load) pair. Everything here is pure except
``plot_png`` (matplotlib) and ``render_html`` (which also writes the PNG).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

KIND = "fault-latency"
PLOT_FILE = "fault-latency.png"
SOURCE = ("Jan Kara, \"[PATCH 0/19 v3] dax, ext4, xfs: Synchronous page faults\", linux-fsdevel, "
          "2017-10-11: 512 pages, ramdisk, real hardware")


# -- buckets and summaries -------------------------------------------------------------------

@dataclass(frozen=True)
class Bucket:
    lo: int  # whole microseconds, inclusive
    hi: int
    count: int

    def text(self) -> str:
        return f"{self.lo} - {self.hi} us: {self.count}"

    def to_dict(self) -> dict[str, int]:
        return {"lo": self.lo, "hi": self.hi, "count": self.count}


def bucket_bounds(us: int) -> tuple[int, int]:
    """The power-of-two bucket of a whole-microsecond value: 0-1, 2-3, 4-7, 8-15, ..."""
    if us < 0:
        raise ValueError(f"a latency cannot be negative: {us}")
    if us < 2:
        return 0, 1
    lo = 1 << (us.bit_length() - 1)
    return lo, 2 * lo - 1


def whole_us(ns: int) -> int:
    """Nanoseconds to whole microseconds, truncated (as the cover letter's integer µs)."""
    return max(0, int(ns)) // 1000


def histogram(samples_ns: Iterable[int]) -> list[Bucket]:
    """Non-empty power-of-two buckets, lowest first."""
    counts: dict[tuple[int, int], int] = {}
    for ns in samples_ns:
        bounds = bucket_bounds(whole_us(ns))
        counts[bounds] = counts.get(bounds, 0) + 1
    return [Bucket(lo, hi, n) for (lo, hi), n in sorted(counts.items())]


@dataclass(frozen=True)
class Summary:
    count: int
    min_us: float
    avg_us: float
    max_us: float
    p50_us: float | None = None  # the median: robust against an emulated machine's outliers (not published)

    def to_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "min_us": self.min_us, "avg_us": self.avg_us, "max_us": self.max_us,
                "p50_us": self.p50_us}

    def text(self) -> str:
        """The cover letter's line: whole microseconds."""
        return f"min={round(self.min_us)} avg={round(self.avg_us)} max={round(self.max_us)}"


def summarize(samples_ns: Sequence[int]) -> Summary:
    if not samples_ns:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples_ns)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return Summary(len(ordered), round(ordered[0] / 1000, 3), round(sum(ordered) / len(ordered) / 1000, 3),
                   round(ordered[-1] / 1000, 3), round(median / 1000, 3))


# -- cells -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellKey:
    fs: str
    prealloc: bool
    background: bool
    map_sync: bool

    @property
    def pair(self) -> tuple[str, bool, bool]:
        """What MAP_SYNC is compared against plain within."""
        return self.fs, self.prealloc, self.background

    def label(self) -> str:
        """Spelled as the cover letter spells its cells."""
        return (f"File {'preallocated' if self.prealloc else 'empty'}, "
                f"{'background load' if self.background else 'no background load'}, "
                f"{'MAP_SYNC' if self.map_sync else 'no MAP_SYNC'}")

    def sort_key(self) -> tuple[str, bool, bool, bool]:
        return self.fs, not self.prealloc, self.background, self.map_sync


@dataclass
class Cell:
    key: CellKey
    summary: Summary | None
    buckets: list[Bucket]
    runs: int = 1
    accelerator: str = ""
    verdicts: list[str] = field(default_factory=list)  # of the runs that did not measure

    @property
    def measured(self) -> bool:
        return self.summary is not None


@dataclass(frozen=True)
class Published:
    summary: Summary
    buckets: tuple[Bucket, ...]


def _pub(mn: int, avg: int, mx: int, *buckets: tuple[int, int, int]) -> Published:
    return Published(Summary(sum(b[2] for b in buckets), mn, avg, mx), tuple(Bucket(*b) for b in buckets))


# (prealloc, background, map_sync) -> the cover letter's cell. It has no preallocated
# file with background load.
PUBLISHED: dict[tuple[bool, bool, bool], Published] = {
    (True, False, False): _pub(9, 10, 46, (8, 15, 508), (16, 31, 3), (32, 63, 1)),
    (True, False, True): _pub(9, 10, 47, (8, 15, 508), (16, 31, 2), (32, 63, 2)),
    (False, False, False): _pub(21, 22, 70, (16, 31, 506), (32, 63, 5), (64, 127, 1)),
    (False, False, True): _pub(40, 124, 242, (32, 63, 1), (64, 127, 333), (128, 255, 178)),
    (False, True, False): _pub(21, 23, 67, (16, 31, 507), (32, 63, 4), (64, 127, 1)),
    (False, True, True): _pub(94, 112, 181, (64, 127, 489), (128, 255, 23)),
}


def published(key: CellKey) -> Published | None:
    return PUBLISHED.get((key.prealloc, key.background, key.map_sync))


def published_ratio(prealloc: bool, background: bool) -> float | None:
    sync, plain = PUBLISHED.get((prealloc, background, True)), PUBLISHED.get((prealloc, background, False))
    if sync is None or plain is None:
        return None
    return round(sync.summary.avg_us / plain.summary.avg_us, 2)


def cell_key_of(result: dict[str, Any]) -> CellKey:
    """The cell of one stored fault-latency result (WorkloadResult.to_dict())."""
    check = result.get("check") or {}
    params = check.get("params") or {}
    return CellKey(str(check.get("fs")), bool(params.get("prealloc")), bool(params.get("background_copy")),
                   bool(params.get("map_sync")))


def cells_from_results(results: Iterable[dict[str, Any]]) -> list[Cell]:
    """One Cell per (fs, prealloc, background, MAP_SYNC); repeats pool their samples."""
    samples: dict[CellKey, list[int]] = {}
    runs: dict[CellKey, int] = {}
    accel: dict[CellKey, str] = {}
    failed: dict[CellKey, list[str]] = {}
    for result in results:
        if result.get("kind") not in (None, KIND):
            continue
        key = cell_key_of(result)
        metrics = result.get("metrics") or {}
        got = metrics.get("samples_ns")
        if result.get("verdict") == "PASS" and got:
            samples.setdefault(key, []).extend(int(ns) for ns in got)
            runs[key] = runs.get(key, 0) + 1
            accel[key] = str(result.get("accelerator") or "")
        else:
            failed.setdefault(key, []).append(str(result.get("verdict") or "unfinished"))
    cells = []
    for key in sorted(set(samples) | set(failed), key=CellKey.sort_key):
        got = samples.get(key)
        cells.append(Cell(key, summarize(got) if got else None, histogram(got) if got else [],
                          runs.get(key, 0), accel.get(key, ""), failed.get(key, [])))
    return cells


def results_of_cases(cases: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest attempt's result of each stored case (lab.store get_campaign shape)."""
    out = []
    for case in cases:
        attempt = case.get("latest_attempt") or {}
        result = attempt.get("result")
        if isinstance(result, dict):
            out.append(result)
        else:  # never ran to a result: still shown, as unfinished
            check = (case.get("case") or {}).get("check") or {}
            out.append({"kind": KIND, "verdict": case.get("verdict"), "check": check})
    return out


@dataclass(frozen=True)
class Ratio:
    fs: str
    prealloc: bool
    background: bool
    plain_avg_us: float
    sync_avg_us: float
    published: float | None
    plain_p50_us: float | None = None
    sync_p50_us: float | None = None

    @property
    def ratio(self) -> float:
        return round(self.sync_avg_us / self.plain_avg_us, 2) if self.plain_avg_us > 0 else float("inf")

    @property
    def p50_ratio(self) -> float | None:
        if not self.plain_p50_us or self.sync_p50_us is None:
            return None
        return round(self.sync_p50_us / self.plain_p50_us, 2)

    @property
    def extra_us(self) -> float:
        return round(self.sync_avg_us - self.plain_avg_us, 1)


def ratios(cells: Iterable[Cell]) -> list[Ratio]:
    """MAP_SYNC avg / plain avg for every (fs, prealloc, background) with both measured."""
    by_key = {c.key: c for c in cells if c.summary is not None}
    out = []
    for key in sorted(by_key, key=CellKey.sort_key):
        if not key.map_sync:
            continue
        plain = by_key.get(CellKey(key.fs, key.prealloc, key.background, False))
        if plain is None or plain.summary is None:
            continue
        sync = by_key[key].summary
        assert sync is not None
        out.append(Ratio(key.fs, key.prealloc, key.background, plain.summary.avg_us, sync.avg_us,
                         published_ratio(key.prealloc, key.background), plain.summary.p50_us, sync.p50_us))
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
        head = [key.fs, "preallocated" if key.prealloc else "empty", "copy" if key.background else "none",
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
    return [[r.fs, "preallocated" if r.prealloc else "empty", "copy" if r.background else "none",
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
    parts.append(f"Published figures: {SOURCE}.")
    return "\n".join(parts).rstrip() + "\n"


# -- plot ------------------------------------------------------------------------------------

def _group_label(prealloc: bool, background: bool) -> str:
    return f"{'prealloc' if prealloc else 'empty'}\n{'copy' if background else 'no load'}"


def plot_png(cells: list[Cell], dpi: int = 100) -> bytes:
    """Bar chart of the average latency per cell, MAP_SYNC beside plain: one panel per
    filesystem measured, and the published figures in a last panel (own scale)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    measured = [c for c in cells if c.summary is not None]
    fss = sorted({c.key.fs for c in measured})
    panels: list[tuple[str, dict[tuple[bool, bool, bool], float]]] = []
    for fs in fss:
        values = {(c.key.prealloc, c.key.background, c.key.map_sync): c.summary.avg_us  # type: ignore[union-attr]
                  for c in measured if c.key.fs == fs}
        accel = next((c.accelerator for c in measured if c.key.fs == fs and c.accelerator), "")
        panels.append((f"{fs}, this lab{f' ({accel})' if accel else ''}", values))
    panels.append(("published (ramdisk, 2017)", {k: p.summary.avg_us for k, p in PUBLISHED.items()}))

    fig = Figure(figsize=(4.2 * len(panels), 3.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, values) in zip(axes, panels):
        groups = sorted({(p, b) for p, b, _ in values}, key=lambda g: (not g[0], g[1]))
        xs = range(len(groups))
        width = 0.38
        for offset, sync, color in ((-width / 2, False, "#6b8fb3"), (width / 2, True, "#c0504d")):
            heights = [values.get((p, b, sync), 0.0) for p, b in groups]
            bars = ax.bar([x + offset for x in xs], heights, width, color=color,
                          label="MAP_SYNC" if sync else "plain")
            ax.bar_label(bars, labels=[_num(h) if h else "" for h in heights], fontsize=7, padding=1)
        ax.set_xticks(list(xs), [_group_label(p, b) for p, b in groups], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("average first-store latency (us)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
        ax.legend(fontsize=7, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# -- HTML ------------------------------------------------------------------------------------

def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _html_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(cases: list[dict[str, Any]], out_dir: Path) -> str:
    """The fault-latency section of a campaign page: table beside the published figures,
    MAP_SYNC/plain ratios, every histogram, and the bar chart (also written to out_dir)
    embedded as a data: URI so the page stays self-contained."""
    cells = cells_from_results(results_of_cases(cases))
    accels = sorted({c.accelerator for c in cells if c.accelerator})
    intro = ("Latency of the first store to each page of a DAX mapping (each store takes a write fault), "
             "file preallocated with fallocate or empty (ftruncate to size), with and without MAP_SYNC, "
             "with and without a background file copy on the same filesystem. Histograms count whole "
             "microseconds in power-of-two buckets, as the published figures do. "
             f"Published figures: {SOURCE}.")
    if "tcg" in accels:
        intro += (" These machines ran under TCG (an emulated CPU): absolute latencies are far above real "
                  "hardware; compare the MAP_SYNC/plain ratios, not the microseconds.")
    parts = [f'<section id="fault-latency"><h2>Page-fault latency</h2><p>{_e(intro)}</p>']
    if not cells:
        parts.append("<p>No fault-latency results.</p></section>")
        return "".join(parts)
    parts.append(_html_table(TABLE_COLUMNS, table_rows(cells)))
    parts.append("<h3>MAP_SYNC / plain</h3>")
    parts.append(_html_table(RATIO_COLUMNS, ratio_rows(ratios(cells))))
    if any(c.summary is not None for c in cells):
        try:
            png = plot_png(cells)
        except ImportError as exc:  # the page still renders without the chart
            parts.append(f"<p>(no chart: {_e(exc)})</p>")
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
    parts.append("<h3>Histograms</h3><table><thead><tr><th>cell</th><th>this lab</th><th>published</th>"
                 "</tr></thead><tbody>")
    for cell in cells:
        if cell.summary is None:
            continue
        pub = published(cell.key)
        ours = cover_letter_block(cell.key.label(), cell.summary, cell.buckets)
        theirs = cover_letter_block(cell.key.label(), pub.summary, pub.buckets) if pub else "-"
        parts.append(f"<tr><td>{_e(cell.key.fs)}: {_e(cell.key.label())} ({cell.runs} run"
                     f"{'s' if cell.runs != 1 else ''})</td><td><pre>{_e(ours)}</pre></td>"
                     f"<td><pre>{_e(theirs)}</pre></td></tr>")
    parts.append("</tbody></table></section>")
    return "".join(parts)
