"""`pmemlab cache list|gc`: what the ready-snapshot cache holds, and tidying it (added to lab.cli's group)."""

from __future__ import annotations

import re
import time

import click

from lab.cli_common import json_option, lab_errors
from lab.errors import ConfigError
from lab.runner import snapshot_cache
from lab.runner.machines import snapshots_dir
from lab.ui import UI

_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)i?B?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8G', '500M', '1.5GiB', '0' -> bytes; anything else is a one-line error."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ConfigError(f"--max-size {text!r}: expected a size such as 8G, 500M or 0")
    power = " KMGT".index(match["unit"].upper() or " ")
    return int(float(match["n"]) * 1024**power)


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


@click.group()
def cache() -> None:
    """The ready-snapshot cache (one saved machine per image, filesystem, shape and QEMU)."""


@cache.command("list")
@json_option
@lab_errors
def cache_list(as_json: bool) -> None:
    """Entries, their size on disk, when last used, and whether they can still be used."""
    ui = UI(as_json)
    found = snapshot_cache.entries(snapshots_dir())
    if as_json:
        ui.emit_json({"directory": str(snapshots_dir()), "entries": [
            {"key": e.key, "bytes": e.allocated, "last_used": e.last_used, "stale": e.stale} for e in found]})
        return
    now = time.time()
    ui.table(f"ready snapshots in {snapshots_dir()} ({_mb(sum(e.allocated for e in found))})",
             ["key", "size", "last used", "state"],
             [[e.key, _mb(e.allocated), f"{(now - e.last_used) / 3600:.1f} h ago", e.stale or "usable"]
              for e in sorted(found, key=lambda e: -e.last_used)])


@cache.command("gc")
@click.option("--max-size", default="8G", show_default=True,
              help="Keep the most recently used entries within this size (0: remove every entry not in use).")
@click.option("--unused-days", type=click.FloatRange(min=0), default=snapshot_cache.UNUSED_DAYS, show_default=True,
              help="Remove entries nobody used for this long, whatever the size.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@json_option
@lab_errors
def cache_gc(max_size: str, unused_days: float, dry_run: bool, as_json: bool) -> None:
    """Remove ready snapshots that can never be used again (broken, older format, QEMU changed or gone,
    builds abandoned by a dead process), then the least recently used beyond --max-size. Entries a
    running lab process uses are never removed."""
    ui = UI(as_json)
    report = snapshot_cache.collect(snapshots_dir(), parse_size(max_size), unused_days, dry_run=dry_run)
    if as_json:
        ui.emit_json({"dry_run": dry_run, **report.to_dict()})
        return
    verb = "would remove" if dry_run else "removed"
    for removed in report.removed:
        ui.info(f"{verb} {removed['key']} ({_mb(int(removed['bytes']))}): {removed['why']}")
    if report.in_use:
        ui.info(f"kept {len(report.in_use)} entries in use by a running lab process")
    ui.info(f"{verb} {len(report.removed)} entries, {_mb(report.freed_bytes)}; {report.kept} entries "
            f"({_mb(report.kept_bytes)}) kept in {snapshots_dir()}")
