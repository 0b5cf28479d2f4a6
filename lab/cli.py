"""The pmemlab command line: parse, call the core, render. Nothing else."""

from __future__ import annotations

import errno
import signal
import statistics
from pathlib import Path

import click

from lab import doctor as doctor_mod
from lab import logs
from lab.cli_campaign import campaign, repro, results
from lab.cli_cache import cache
from lab.cli_compare import compare
from lab.cli_serve import serve
from lab.cli_watch import schedule, watch
from lab.cli_hosts import attempt_cmd, host, image_push
from lab.cli_bugreport import bisect_cmd, bisect_step_cmd, check, minimize_cmd, run_script
from lab.cli_cluster import cluster, worker
from lab.cli_common import (EXIT_LAB_ERROR, verdict_exit, accel_option, backend_options, boot_mode, cold_boot_option,
                            host_option, image_and_accel, image_option, json_option, lab_errors, lab_version)
from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.image import cache as image_cache
from lab.image.builder import build as build_image
from lab.image.kernel import user_kernel
from lab.paths import cache_dir, images_dir
from lab.power_cut import POWER_CUT_MODEL
from lab.runs import new_run_dir, write_json
from lab.ui import UI
from lab.vm.accel import AccelVerdict
from lab.vm.backend import Backend, BackendChoice
from lab.vm.boot import MachineShape
from lab.vm.spec import Accel, Persistence
from lab.workloads.mapsync import MapsyncParams


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C does, so every `with Machine` cleans up.
    raise SystemExit(128 + signum)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(lab_version(), prog_name="pmemlab")
@click.option("-v", "--verbose", count=True, help="Log to stderr: -v what the lab does, -vv every step "
              "(QEMU command lines, shutdowns). Every run directory keeps a full lab.log regardless.")
def cli(verbose: int) -> None:
    """pmemlab: a persistent-memory test lab (QEMU NVDIMMs, DAX, power cuts, oracles)."""
    logs.configure_stderr(verbose)


# -- image ---------------------------------------------------------------
@cli.group()
def image() -> None:
    """Build and list guest images (kernel + initramfs)."""


@image.command("build")
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="Recipe TOML (default images/debian12-pmem.toml).")
@click.option("--kernel", "kernel_path", type=click.Path(path_type=Path), default=None,
              help="Your own bzImage instead of Debian's kernel.")
@click.option("--modules", type=click.Path(path_type=Path), default=None,
              help="Modules tree for --kernel (INSTALL_MOD_PATH or lib/modules/VERSION).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Kernel .config for --kernel (found next to it when omitted).")
@click.option("--ref", default=None, help="Name to give the image (default: the recipe name).")
@click.option("--force", is_flag=True, help="Rebuild even if the cache has this image.")
@json_option
@lab_errors
def image_build(recipe: Path | None, kernel_path: Path | None, modules: Path | None, config_path: Path | None,
                ref: str | None, force: bool, as_json: bool) -> None:
    """Build the guest image (content-addressed: unchanged inputs do no work)."""
    ui = UI(as_json)
    if kernel_path is None and (modules is not None or config_path is not None):
        ui.abort("--modules and --config go with --kernel PATH/bzImage", EXIT_LAB_ERROR)
    recipe = recipe or images_dir() / "debian12-pmem.toml"
    kernel = user_kernel(kernel_path, modules, config_path) if kernel_path else None
    result = build_image(recipe, cache_dir(), kernel=kernel, ref=ref, force=force)
    data = {"id": result.image.id, "path": str(result.image.path), "built": result.built,
            "seconds": round(result.seconds, 2), **result.image.manifest}
    if as_json:
        ui.emit_json(data)
        return
    state = "built" if result.built else "already in the cache"
    ui.info(f"image [bold]{result.image.id}[/bold] {state} ({result.seconds:.1f} s): "
            f"kernel {result.image.kernel_version}, {result.image.manifest['initramfs_bytes'] / 1e6:.1f} MB initramfs")
    ui.info(f"  {result.image.path}")


@image.command("list")
@json_option
@lab_errors
def image_list(as_json: bool) -> None:
    """Images in the cache, and the names that point at them."""
    ui = UI(as_json)
    refs = image_cache.list_refs(cache_dir())
    images = image_cache.list_images(cache_dir())
    if as_json:
        ui.emit_json({"refs": refs, "images": [i.manifest for i in images]})
        return
    names = {v: k for k, v in refs.items()}
    ui.table(f"images in {cache_dir()}", ["id", "ref", "kernel", "built"],
             [[i.id, names.get(i.id, ""), i.kernel_version, str(i.manifest.get("built_at", ""))] for i in images])


# -- doctor --------------------------------------------------------------
@cli.command()
@image_option
@json_option
@lab_errors
def doctor(image_name: str, as_json: bool) -> None:
    """Check this host: QEMU, NVDIMM support, accelerator, image cache, disk, guest kernel config."""
    ui = UI(as_json)
    report = doctor_mod.run_checks(image_name)
    if as_json:
        ui.emit_json(report.to_dict())
    else:
        for item in report.checks:
            mark = "[green]ok[/green]  " if item.ok else "[red]FAIL[/red]"
            ui.info(f"{mark} {item.name}: {item.detail}")
            if not item.ok and item.fix:
                ui.info(f"      fix: {item.fix}")
    if not report.ok:
        raise SystemExit(1)


# -- vm ------------------------------------------------------------------
@cli.group()
def vm() -> None:
    """Single machines."""


@vm.command("smoke")
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), default="ext4", show_default=True)
@accel_option
@image_option
@json_option
@lab_errors
def vm_smoke(fs: str, accel: str, image_name: str, as_json: bool) -> None:
    """Boot, set up pmem, mount with DAX, verify, agent round trip, clean shutdown."""
    from lab.smoke import smoke

    ui = UI(as_json)
    img, verdict = image_and_accel(image_name, accel)
    run_dir = new_run_dir("smoke")
    ui.info(f"smoke: {fs} on image {img.id} (kernel {img.kernel_version}), accelerator {verdict.accel.value} "
            f"({verdict.reason})")
    result = smoke(img, Filesystem(fs), verdict, run_dir)
    write_json(run_dir / "result.json", result.to_dict())
    if as_json:
        ui.emit_json(result.to_dict())
    else:
        ui.info(f"{'[green]PASS[/green]' if result.ok else '[red]FAIL[/red]'} fs={result.fs} dax={result.dax} "
                f"boot_to_ready={result.boot_to_ready_s:.2f}s clean_shutdown={result.clean_shutdown} "
                f"kernel_problems={len(result.kernel_problems)}")
        ui.info("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
        ui.info(f"run directory: {run_dir}")
    if not result.ok:
        raise SystemExit(1)


# -- scenarios -----------------------------------------------------------
@cli.group()
def scenarios() -> None:
    """Scenario files (scenarios/*.toml)."""


@scenarios.command("list")
@json_option
@lab_errors
def scenarios_list(as_json: bool) -> None:
    """Every scenario: workload kind, purpose, matrix cells and cases, or why it does not load (exit 1)."""
    from rich.markup import escape

    from lab.cases import summarize_scenarios
    from lab.paths import scenarios_dir

    ui = UI(as_json)
    directory = scenarios_dir()
    summaries = summarize_scenarios(directory)
    if as_json:
        ui.emit_json([s.to_dict() for s in summaries])
    else:
        rows = [[escape(s.file), escape(s.name or "-"), escape(s.workload or "-"), _count(s.cells),
                 _count(s.cases), escape(s.purpose or "") if s.error is None else f"[red]{escape(s.error)}[/red]"]
                for s in summaries]
        ui.table(f"scenarios in {directory}", ["file", "name", "workload", "cells", "cases", "purpose"], rows)
    if any(s.error is not None for s in summaries):
        raise SystemExit(1)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


# -- run -----------------------------------------------------------------
@cli.group("run")
def run_group() -> None:
    """Power-cut checks."""


@run_group.command("mapsync")
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), default="ext4", show_default=True)
@click.option("--records", type=int, default=100, show_default=True, help="Records to write, one per page.")
@click.option("--cut-after", type=int, default=None, help="Cut the power right after the host reads ACK K.")
@click.option("--cut-random", is_flag=True, help="Draw K at random from --seed.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--cut-at-seconds", type=float, default=None, help="Cut this long after the workload's mmap succeeded.")
@click.option("--no-map-sync", is_flag=True, help="Plain MAP_SHARED: the negative control, expected to lose records.")
@click.option("--prealloc", is_flag=True, help="fallocate the file first (no block allocation at fault time).")
@click.option("--record-size", type=int, default=64, show_default=True)
@click.option("--records-per-page", type=int, default=1, show_default=True)
@click.option("--dax", type=click.Choice([d.value for d in DaxMode]), default="always", show_default=True,
              help="Mount option; 'never' checks that MAP_SYNC is refused with EOPNOTSUPP.")
@click.option("--keep-capture", is_flag=True, help="Keep the captured media in the run directory.")
@click.option("--persistence", type=click.Choice([p.value for p in Persistence]), default="eadr", show_default=True,
              help="What the cut keeps: every executed store (eadr), or only flushed+fenced lines (adr: QEMU 10 "
                   "with the store-tracing plugin).")
@click.option("--flush", type=click.Choice(["auto", "clwb", "clflushopt", "clflush", "nt", "none"]), default="auto",
              show_default=True, help="How the workload persists each record (nt: non-temporal stores).")
@click.option("--no-fence", is_flag=True, help="Leave out the fence after the flush (an ADR negative control).")
@click.option("--adr-states", type=click.IntRange(0, 64), default=0, show_default=True,
              help="ADR: crash states judged beyond adr:drop-all (subsets of the unpersisted lines, seeded).")
@cold_boot_option
@backend_options
@host_option
@accel_option
@image_option
@json_option
@lab_errors
def run_mapsync(fs: str, records: int, cut_after: int | None, cut_random: bool, seed: int,
                cut_at_seconds: float | None, no_map_sync: bool, prealloc: bool, record_size: int,
                records_per_page: int, dax: str, keep_capture: bool, persistence: str, flush: str, no_fence: bool,
                adr_states: int, cold_boot: bool, backend: str, libvirt_uri: str | None, host_name: str | None,
                accel: str, image_name: str, as_json: bool) -> None:
    """Cut the power during a MAP_SYNC workload and judge the recovered media."""
    from lab.report.mapsync import render_result
    from lab.runner.guest_run import RunHooks
    from lab.workloads import mapsync_kind

    ui = UI(as_json)
    crash = crash_point(records, cut_after, cut_random, seed, cut_at_seconds)
    params = MapsyncParams.from_options(records=records, record_size=record_size, records_per_page=records_per_page,
                                        prealloc=prealloc, map_sync=not no_map_sync, flush=flush,
                                        fence=not no_fence)
    model = Persistence(persistence)
    check = mapsync_kind.MapsyncCheck(Filesystem(fs), DaxMode(dax), params, crash, seed=seed,
                                      keep_capture=keep_capture, shape=MachineShape(persistence=model),
                                      adr_states=adr_states if model is Persistence.ADR else 0)
    machines = BackendChoice.parse(backend, libvirt_uri)
    if host_name is not None:
        _run_mapsync_on_host(ui, host_name, check, image_name, accel, cold_boot, backend, libvirt_uri, as_json)
    if machines.kind is Backend.LIBVIRT and model is Persistence.ADR:
        raise ConfigError("--persistence adr needs the qemu backend (a private QEMU 10 with its store-tracing plugin)")
    img, verdict = image_and_accel(image_name, accel)
    if model is Persistence.ADR:
        require_adr(verdict.accel)  # before any machine boots
    run_dir = new_run_dir("mapsync")
    boot = boot_mode(cold_boot or machines.kind is Backend.LIBVIRT)  # no ready snapshots under libvirt
    on = f" on libvirt ({machines.libvirt_uri})" if machines.kind is Backend.LIBVIRT else ""
    ui.info(f"mapsync power-cut check: {fs}, MAP_SYNC {'off' if no_map_sync else 'on'}, {model.value} model, "
            f"flush {flush}{' without fence' if no_fence else ''}, "
            f"{'prealloc' if prealloc else 'empty'} file, image {img.id} (kernel {img.kernel_version}), "
            f"{verdict.accel.value}, {boot.value} machines{on}")
    result = mapsync_kind.run(check, img, verdict, run_dir, RunHooks(progress=ui.info, boot=boot, backend=machines))
    if as_json:
        ui.emit_json({**result.to_dict(), "power_cut_model": POWER_CUT_MODEL})
    if result.errno == errno.ENOSPC:
        ui.abort(result.error or "disk full", EXIT_LAB_ERROR)
    if not as_json:
        render_result(ui, result)
    raise SystemExit(verdict_exit(result.verdict))


def _run_mapsync_on_host(ui: UI, host_name: str, check: object, image_name: str, accel: str, cold_boot: bool,
                         backend: str, libvirt_uri: str | None, as_json: bool) -> None:
    """The check on an inventory host over SSH (its own pmemlab and backend); only results come back."""
    from lab.hosts import inventory
    from lab.hostrun.single import check_case, run_on_host
    from lab.report.mapsync import render_result
    from lab.workloads import mapsync_kind

    if backend != "qemu" or libvirt_uri is not None:
        raise ConfigError("--host runs the host's own backend (its inventory entry): leave out --backend and "
                          "--libvirt-uri")
    lab_host = inventory.get(host_name)
    machines = lab_host.machines()
    img = image_cache.resolve(cache_dir(), image_name)
    boot = boot_mode(cold_boot or machines.kind is Backend.LIBVIRT)
    run_dir = new_run_dir("mapsync")
    ui.info(f"mapsync power-cut check on host {lab_host.name} ({lab_host.target}, {machines.kind.value} backend "
            f"there): image {img.id}, accelerator {accel} there, {boot.value} machines")
    case = check_case(mapsync_kind.NAME, check, img)
    result = run_on_host(lab_host, case, img, accel, boot, machines, run_dir, ui.info)
    if as_json:
        ui.emit_json({**result.to_dict(), "host": lab_host.name, "power_cut_model": POWER_CUT_MODEL})
    else:
        render_result(ui, result)
        ui.info(f"ran on host {lab_host.name}; run directory (results, logs, fsck output): {run_dir}")
    raise SystemExit(verdict_exit(result.verdict))


def require_adr(accel: Accel) -> None:
    """The ADR model's QEMU and plugin, checked (and the plugin built) before a machine boots."""
    from lab.adr.plugin import plugin_path
    from lab.adr.qemu import find_adr_qemu

    if accel is not Accel.TCG:
        raise ConfigError(f"--persistence adr traces stores with a TCG plugin: use --accel tcg, not {accel.value}")
    plugin_path(find_adr_qemu())


def crash_point(records: int, cut_after: int | None, cut_random: bool, seed: int,
                cut_at_seconds: float | None) -> CrashPoint:
    """One crash point from the CLI's options; a clear error when they conflict."""
    chosen = sum([cut_after is not None, cut_random, cut_at_seconds is not None])
    if chosen > 1:
        raise ConfigError("give one of --cut-after K, --cut-random, --cut-at-seconds S")
    if records <= 0:
        raise ConfigError(f"--records must be at least 1, got {records}")
    if cut_random:
        return CrashPoint.random_ack(records, seed)
    if cut_at_seconds is not None:
        return CrashPoint(after_seconds=cut_at_seconds)
    return CrashPoint(after_ack=cut_after if cut_after is not None else (records * 3) // 5)


# -- bench ---------------------------------------------------------------
@cli.group()
def bench() -> None:
    """Benchmarks: median of several runs, printed."""


@bench.command("boot")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True)
@accel_option
@image_option
@json_option
@lab_errors
def bench_boot(runs: int, accel: str, image_name: str, as_json: bool) -> None:
    """Boot N machines; min/median/max seconds from launch to agent ready."""
    from lab.bench import boot_times

    ui = UI(as_json)
    img, verdict = image_and_accel(image_name, accel)
    run_dir = new_run_dir("bench-boot")
    samples = boot_times(img, verdict, runs, run_dir, progress=ui.info)
    summary = {"runs": runs, "accelerator": verdict.accel.value, "min_s": round(min(samples), 3),
               "median_s": round(statistics.median(samples), 3), "max_s": round(max(samples), 3),
               "samples_s": [round(s, 3) for s in samples], "run_dir": str(run_dir)}
    write_json(run_dir / "result.json", summary)
    if as_json:
        ui.emit_json(summary)
    else:
        ui.info(f"boot-to-agent-ready over {runs} runs ({verdict.accel.value}): min {summary['min_s']:.2f} s, "
                f"median {summary['median_s']:.2f} s, max {summary['max_s']:.2f} s")


@bench.command("mapsync")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), default="ext4", show_default=True)
@click.option("--records", type=int, default=100, show_default=True)
@click.option("--persistence", type=click.Choice(["adr"]), default=None,
              help="Compare the eADR and ADR models instead of cold and restored machines.")
@click.option("--flush", type=click.Choice(["auto", "clwb", "clflushopt", "clflush", "nt", "none"]), default="auto",
              show_default=True, help="With --persistence: how the workload persists records.")
@click.option("--adr-states", type=click.IntRange(0, 64), default=8, show_default=True,
              help="With --persistence: ADR crash states beyond adr:drop-all per cut.")
@accel_option
@image_option
@json_option
@lab_errors
def bench_mapsync(runs: int, fs: str, records: int, persistence: str | None, flush: str, adr_states: int, accel: str,
                  image_name: str, as_json: bool) -> None:
    """Full crash points (machine .. oracles) on both paths, cold boots and restored ready snapshots,
    interleaved: medians, per-phase medians, speedup. With --persistence adr: eADR beside ADR."""
    from lab.bench import mapsync_paths

    ui = UI(as_json)
    img, verdict = image_and_accel(image_name, accel)
    if persistence is not None:
        require_adr(verdict.accel)
        _bench_models(ui, img, verdict, Filesystem(fs), records, runs, flush, adr_states, as_json)
        return
    run_dir = new_run_dir("bench-mapsync")
    summary = mapsync_paths(img, verdict, Filesystem(fs), records, runs, run_dir, progress=ui.info)
    write_json(run_dir / "result.json", summary)
    if as_json:
        ui.emit_json(summary)
        return
    cold, snap = summary["cold"], summary["snapshot"]
    ui.info(f"full crash point over {runs} runs ({verdict.accel.value}, {fs}, {records} records): cold median "
            f"{cold['median_s']:.2f} s, snapshot median {snap['median_s']:.2f} s, speedup {summary['speedup']}x "
            f"(ready snapshot found/built in {summary['snapshot_ready_s']:.1f} s, not counted)")
    phases = list(dict.fromkeys([*cold["phase_median_s"], *snap["phase_median_s"]]))
    ui.table("median seconds per phase", ["phase", "cold", "snapshot"],
             [[p, _seconds(cold["phase_median_s"].get(p)), _seconds(snap["phase_median_s"].get(p))] for p in phases])


def _bench_models(ui: UI, img: image_cache.Image, verdict: AccelVerdict, fs: Filesystem, records: int, runs: int,
                  flush: str, adr_states: int, as_json: bool) -> None:
    from lab.bench import mapsync_models

    run_dir = new_run_dir("bench-mapsync-adr")
    summary = mapsync_models(img, verdict, fs, records, runs, run_dir, flush, adr_states, progress=ui.info)
    write_json(run_dir / "result.json", summary)
    if as_json:
        ui.emit_json(summary)
        return
    eadr, adr = summary["eadr"], summary["adr"]
    ui.info(f"mapsync over {runs} runs ({verdict.accel.value}, {fs.value}, {records} records, flush {flush}): eadr "
            f"median {eadr['median_s']:.2f} s, adr median {adr['median_s']:.2f} s; armed-window (workload) slowdown "
            f"{summary['armed_window_slowdown']}x; ADR crash states per cut {summary['crash_states_per_cut_median']} "
            f"({summary['unpersisted_lines_median']} unpersisted lines), {summary['crash_states_per_second']} per second")
    phases = list(dict.fromkeys([*eadr["phase_median_s"], *adr["phase_median_s"]]))
    ui.table("median seconds per phase", ["phase", "eadr", "adr"],
             [[p, _seconds(eadr["phase_median_s"].get(p)), _seconds(adr["phase_median_s"].get(p))] for p in phases])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@bench.command("restore")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), default="ext4", show_default=True)
@accel_option
@image_option
@json_option
@lab_errors
def bench_restore(runs: int, fs: str, accel: str, image_name: str, as_json: bool) -> None:
    """Restore N machines from the ready snapshot: seconds from QEMU's start to the agent's answer."""
    from lab.bench import restore_times

    ui = UI(as_json)
    img, verdict = image_and_accel(image_name, accel)
    run_dir = new_run_dir("bench-restore")
    summary = restore_times(img, verdict, Filesystem(fs), runs, run_dir, progress=ui.info)
    write_json(run_dir / "result.json", summary)
    if as_json:
        ui.emit_json(summary)
    else:
        ui.info(f"restore-to-agent-answer over {runs} runs ({verdict.accel.value}, {fs} snapshot): min "
                f"{summary['min_s']:.3f} s, median {summary['median_s']:.3f} s, max {summary['max_s']:.3f} s")


@bench.command("qemu")
@click.option("--runs", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), default="ext4", show_default=True)
@click.option("--records", type=int, default=100, show_default=True)
@accel_option
@image_option
@json_option
@lab_errors
def bench_qemu(runs: int, fs: str, records: int, accel: str, image_name: str, as_json: bool) -> None:
    """The system QEMU beside the ADR model's QEMU, interleaved: cold boot, restore and a full crash
    point (eADR) on each; medians and ratios."""
    from lab.adr.qemu import find_adr_qemu
    from lab.bench import qemu_versions

    ui = UI(as_json)
    img, verdict = image_and_accel(image_name, accel)
    find_adr_qemu()  # one line naming what is missing, before any machine boots
    run_dir = new_run_dir("bench-qemu")
    summary = qemu_versions(img, verdict, Filesystem(fs), records, runs, run_dir, progress=ui.info)
    write_json(run_dir / "result.json", summary)
    if as_json:
        ui.emit_json(summary)
        return
    rows = [[k, f"{summary['system'][f'{k}_median_s']:.3f}", f"{summary['adr-qemu'][f'{k}_median_s']:.3f}",
             f"{summary['ratio_adr_qemu_over_system'][k]}x"] for k in ("boot", "restore", "crash_point")]
    ui.table(f"median seconds over {runs} interleaved runs ({verdict.accel.value}, {fs}); system: "
             f"{summary['system']['binary']}, adr-qemu: {summary['adr-qemu']['binary']}",
             ["measure", "system QEMU", "ADR model's QEMU", "ratio"], rows)
    ui.info(f"verdicts: system {summary['system']['verdicts']}, adr-qemu {summary['adr-qemu']['verdicts']}")


@bench.command("campaign")
@click.argument("scenario_path", type=click.Path(path_type=Path))
@click.option("--jobs", "jobs_text", default="1,2", show_default=True, help="Comma-separated -j values to compare.")
@click.option("--cluster", default=None, metavar="tls://HOST:PORT",
              help="Also run it on this Dask scheduler's workers (pmemlab[cluster]).")
@cold_boot_option
@accel_option
@image_option
@json_option
@lab_errors
def bench_campaign(scenario_path: Path, jobs_text: str, cluster: str | None, cold_boot: bool, accel: str,
                   image_name: str, as_json: bool) -> None:
    """Campaign throughput (crash points per minute) at each -j, and the lab's overhead per case."""
    from lab.bench import campaign_throughput

    ui = UI(as_json)
    try:
        jobs_list = [int(j) for j in jobs_text.split(",") if j.strip()]
    except ValueError:
        ui.abort(f"--jobs {jobs_text!r}: expected comma-separated integers such as 1,2", EXIT_LAB_ERROR)
    img, verdict = image_and_accel(image_name, accel)
    run_dir = new_run_dir("bench-campaign")
    summary = campaign_throughput(scenario_path, img, verdict, jobs_list, run_dir, progress=ui.info,
                                  cold_boot=cold_boot, cluster=cluster, accel_request=accel)
    write_json(run_dir / "result.json", summary)
    if as_json:
        ui.emit_json(summary)
        return
    rows = summary["results"]
    assert isinstance(rows, list)
    ui.table(f"campaign throughput: {summary['scenario']} ({verdict.accel.value})",
             ["run", "machines", "cases", "met", "wall s", "crash points/min", "case median s",
              "lab overhead/case (median, max) s"],
             [[str(r["run"]), str(r["jobs"]), str(r["cases"]), str(r["met"]), str(r["wall_s"]),
               str(r["crash_points_per_minute"]),
               str(r["case_median_s"]), f"{r['overhead_median_s']}, {r['overhead_max_s']}"] for r in rows])


cli.add_command(campaign)
cli.add_command(host)
cli.add_command(attempt_cmd)
image.add_command(image_push)
cli.add_command(results)
cli.add_command(repro)
cli.add_command(check)
cli.add_command(minimize_cmd)
cli.add_command(bisect_cmd)
cli.add_command(bisect_step_cmd)
cli.add_command(compare)
cli.add_command(serve)
cli.add_command(watch)
cli.add_command(schedule)
run_group.add_command(run_script)
cli.add_command(worker)
cli.add_command(cluster)
cli.add_command(cache)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    cli()


if __name__ == "__main__":
    main()
