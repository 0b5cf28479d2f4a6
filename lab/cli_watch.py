"""`pmemlab watch PLAN --once|--loop`: run a lab plan on each new kernel (lab/watch), added to lab.cli's group."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lab.cli_common import lab_errors, open_store
from lab.ui import UI

if TYPE_CHECKING:
    from lab.watch.plan import Plan


@click.command()
@click.argument("plan_path", type=click.Path(path_type=Path))
@click.option("--once", is_flag=True,
              help="Check every kernel source once, run what is new, compare, report, exit (a timer calls this).")
@click.option("--loop", is_flag=True, help="Repeat --once every --interval seconds until SIGINT/SIGTERM.")
@click.option("--interval", type=click.FloatRange(1, 7 * 86400), default=3600.0, show_default=True,
              help="With --loop: seconds from the end of one check to the start of the next.")
@click.option("--dry-run", is_flag=True, help="Only say which sources have a new kernel; build and run nothing.")
@click.option("--db", default=None, help="Results database URL (default: the plan's db, else SQLite in the data dir).")
@click.option("--mail-to", multiple=True, help="Mail the summary here (repeatable; adds to the plan's [report] mail_to).")
@lab_errors
def watch(plan_path: Path, once: bool, loop: bool, interval: float, dry_run: bool, db: str | None,
          mail_to: tuple[str, ...]) -> None:
    """Watch a lab plan's kernels. Exit status: the worst comparison's (0: nothing new or no regression;
    1: a regression or new failure; 2: no verdict). Another watch of the plan running: a message, status 0.
    With --loop: a failing check is reported and the loop goes on; SIGINT/SIGTERM end it (a running
    campaign unwinds as on Ctrl-C): status 0 between checks, 130 during one."""
    from lab.watch.plan import load_plan
    from lab.watch.run import check_sources

    if once == loop:
        raise click.UsageError("give exactly one of --once or --loop")
    bad = [a for a in mail_to if "@" not in a]
    if bad:
        raise click.BadParameter(f"expected mail addresses, got {bad}", param_hint="--mail-to")
    ui = UI()
    plan = load_plan(plan_path)
    check_sources(plan)
    raise SystemExit(_loop(ui, plan, db, dry_run, mail_to, None if once else interval))


def _loop(ui: UI, plan: Plan, db: str | None, dry_run: bool, mail_to: tuple[str, ...],
          interval: float | None) -> int:
    """Checks until a signal (interval None: one check, as --once). A signal during a campaign or re-run
    is passed on to it as SIGINT (it unwinds as on Ctrl-C); during a build it interrupts us (the build's
    process group is killed on the way out); between checks it just ends the wait."""
    import signal
    import threading

    from lab.errors import LabError
    from lab.watch.run import CHILDREN, WatchInterrupted

    stop = threading.Event()
    in_check = False

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        ui.info(f"watch {plan.name}: {name}: stopping", literal=True)
        stop.set()
        if CHILDREN.current is not None:
            CHILDREN.stop()
        elif in_check and not CHILDREN.stopping:
            CHILDREN.stopping = True
            raise WatchInterrupted(f"stopped by {name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    iteration = 0
    status = 0
    try:
        while not stop.is_set():
            iteration += 1
            if interval is not None:
                ui.info(f"watch {plan.name}: check {iteration}", literal=True)
            try:
                in_check = True
                status = _check(ui, plan, db, dry_run, mail_to)
            except WatchInterrupted as exc:
                ui.info(f"watch {plan.name}: {exc}", literal=True)
                return 130
            except LabError as exc:
                if interval is None:
                    raise
                ui.info(f"watch {plan.name}: check {iteration} failed: {exc}", literal=True)  # the next may not
            finally:
                in_check = False
            if interval is None:
                return status
            if not stop.is_set():
                ui.info(f"watch {plan.name}: next check in {interval:.0f} s", literal=True)
                stop.wait(interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ui.info(f"watch {plan.name}: stopped after {iteration} check(s)", literal=True)
    return 0


def _check(ui: UI, plan: Plan, db: str | None, dry_run: bool, mail_to: tuple[str, ...]) -> int:
    """One --once: the plan's lock, new kernels built and run, compared, reported, mailed."""
    from lab.cli_campaign import kind_sections
    from lab.image.builder import build
    from lab.image.kernel import user_kernel
    from lab.paths import cache_dir, images_dir
    from lab.watch.gitkernel import build_git_kernel
    from lab.watch.mail import MailSettings, send
    from lab.watch.plan import KernelSource
    from lab.watch.run import WatchBusy, mail_summary, plan_lock, watch_once

    started = time.monotonic()

    def build_image(source: KernelSource, version: str, ref: str) -> None:
        kernel = None
        directory = source.directory
        if source.git is not None:
            ui.info(f"{source.name}: building {version} from {source.git.tree}", literal=True)
            directory = build_git_kernel(source.name, source.git, version)
        if directory is not None:
            d = directory
            kernel = user_kernel(d / "bzImage", d / "modules" if (d / "modules").is_dir() else None,
                                 d / ".config" if (d / ".config").is_file() else None)
        result = build(images_dir() / "debian12-pmem.toml", cache_dir(), kernel=kernel, ref=ref)
        ui.info(f"image {ref} -> {result.image.id} (kernel {result.image.kernel_version}, "
                f"{'built' if result.built else 'cached'})", literal=True)

    try:
        with plan_lock(plan):
            store = open_store(db or plan.db)
            try:
                status, results = watch_once(plan, store, build_image, lambda m: ui.info(m, literal=True),
                                             dry_run=dry_run, kind_sections=kind_sections)
            finally:
                store.close()
    except WatchBusy as exc:
        ui.info(f"not starting: {exc}", literal=True)
        return 0
    to = tuple(dict.fromkeys((*plan.report.mail_to, *mail_to)))
    summary = mail_summary(plan.name, status, results)
    if to and summary is not None:
        r = plan.report
        failure = send(MailSettings(to, r.mail_from, r.sendmail, r.smtp_host, r.smtp_port), *summary)
        ui.info(f"mail to {', '.join(to)}: " + (f"NOT SENT: {failure}" if failure else "sent"), literal=True)
    ui.info(f"watch {plan.name}: done in {time.monotonic() - started:.1f} s, exit status {status}", literal=True)
    return status


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
