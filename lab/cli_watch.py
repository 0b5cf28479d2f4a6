"""`pmemlab watch PLAN --once`: run a lab plan on each new kernel (lab/watch), added to lab.cli's group."""

from __future__ import annotations

import time
from pathlib import Path

import click

from lab.cli_common import lab_errors, open_store
from lab.ui import UI


@click.command()
@click.argument("plan_path", type=click.Path(path_type=Path))
@click.option("--once", is_flag=True, required=True,
              help="Check every kernel source once, run what is new, compare, report, exit (a timer calls this).")
@click.option("--dry-run", is_flag=True, help="Only say which sources have a new kernel; build and run nothing.")
@click.option("--db", default=None, help="Results database URL (default: the plan's db, else SQLite in the data dir).")
@lab_errors
def watch(plan_path: Path, once: bool, dry_run: bool, db: str | None) -> None:
    """Watch a lab plan's kernels. Exit status: the worst comparison's (0: nothing new or no regression;
    1: a regression or new failure; 2: no verdict). Another watch of the plan running: a message, status 0."""
    from lab.image.builder import build
    from lab.image.kernel import user_kernel
    from lab.paths import cache_dir, images_dir
    from lab.watch.plan import KernelSource, load_plan
    from lab.watch.run import WatchBusy, check_sources, plan_lock, watch_once

    assert once
    ui = UI()
    started = time.monotonic()
    plan = load_plan(plan_path)
    check_sources(plan)

    def build_image(source: KernelSource, ref: str) -> None:
        kernel = None
        if source.directory is not None:
            d = source.directory
            kernel = user_kernel(d / "bzImage", d / "modules" if (d / "modules").is_dir() else None,
                                 d / ".config" if (d / ".config").is_file() else None)
        result = build(images_dir() / "debian12-pmem.toml", cache_dir(), kernel=kernel, ref=ref)
        ui.info(f"image {ref} -> {result.image.id} (kernel {result.image.kernel_version}, "
                f"{'built' if result.built else 'cached'})", literal=True)

    try:
        with plan_lock(plan):
            store = open_store(db or plan.db)
            try:
                status, _ = watch_once(plan, store, build_image, lambda m: ui.info(m, literal=True), dry_run=dry_run)
            finally:
                store.close()
    except WatchBusy as exc:
        ui.info(f"not starting: {exc}", literal=True)
        status = 0
    ui.info(f"watch {plan.name}: done in {time.monotonic() - started:.1f} s, exit status {status}", literal=True)
    raise SystemExit(status)


@click.group()
def schedule() -> None:
    """Run a lab plan every day (systemd timer, or cron where systemd is absent)."""


@schedule.command("install")
@click.argument("plan_path", type=click.Path(path_type=Path))
@click.option("--at", "at", default="02:00", show_default=True, help="Time of day, HH:MM.")
@click.option("--unit-dir", type=click.Path(path_type=Path), default=None,
              help="Write the units here and enable nothing (default: the user's or the system's unit directory, "
                   "then systemctl enable --now).")
@lab_errors
def schedule_install(plan_path: Path, at: str, unit_dir: Path | None) -> None:
    """Write and enable a daily timer for `pmemlab watch PLAN --once`; where systemd is not running,
    print the crontab line instead."""
    import os

    from lab.watch.plan import load_plan
    from lab.watch.schedule import crontab_line, install_units, render_units, systemd_running
    from lab.watch.schedule import unit_dir as default_unit_dir

    ui = UI()
    plan = load_plan(plan_path)
    env = {k: v for k, v in os.environ.items() if k in ("PMEMLAB_DATA", "PMEMLAB_CACHE", "PATH")}
    if unit_dir is None and not systemd_running():
        ui.info("systemd is not running here: add this line to your crontab (crontab -e):", literal=True)
        click.echo(crontab_line(plan_path, at, env))
        return
    units = render_units(plan.name, plan_path, at, env)
    for path in install_units(units, unit_dir or default_unit_dir(), enable=unit_dir is None):
        ui.info(f"wrote {path}", literal=True)
    if unit_dir is None:
        ui.info(f"enabled {units.name}.timer: daily at {at}", literal=True)
