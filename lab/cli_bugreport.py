"""Bug-report commands (added to lab.cli's groups): `pmemlab check IMAGE` judges a crash image from a
report; `pmemlab run script REPRO` runs a report's own reproducer under power cuts."""

from __future__ import annotations

from pathlib import Path

import click

from lab.cli_common import (EXIT_FAILED, EXIT_LAB_ERROR, EXIT_OK, accel_option, boot_mode, cold_boot_option,
                            image_and_accel, image_option, json_option, lab_errors)
from lab.guest.pmem import Filesystem
from lab.runner.guest_run import WorkloadResult
from lab.ui import UI
from lab.verdict import Verdict


@click.command("check")
@click.argument("image_file", metavar="IMAGE", type=click.Path(path_type=Path))
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), required=True,
              help="The filesystem the image holds.")
@click.option("--layout", type=click.Choice(["mapsync"]), default=None,
              help="The workload whose records the image holds: run the persistence check (needs --durable).")
@click.option("--records", type=click.IntRange(1), default=100, show_default=True,
              help="Records the workload meant to write.")
@click.option("--record-size", type=int, default=64, show_default=True)
@click.option("--records-per-page", type=int, default=1, show_default=True)
@click.option("--durable", default=None, help="Record indices acknowledged before the cut, e.g. 0-60 or 0-3,7.")
@click.option("--file", "record_file", default=None, help="The workload's file in the filesystem (default: the "
              "layout's own, mapsync.dat).")
@cold_boot_option
@accel_option
@image_option
@json_option
@lab_errors
def check(image_file: Path, fs: str, layout: str | None, records: int, record_size: int, records_per_page: int,
          durable: str | None, record_file: str | None, cold_boot: bool, accel: str, image_name: str,
          as_json: bool) -> None:
    """Judge a given crash image (a capture kept with --keep-capture, or a raw ext4/XFS image) with a
    power cut's oracles: recovery mount, persistence of the acknowledged records, fsck, kernel log.
    The machine runs on a copy; the file itself is never written."""
    from lab.crash.given_image import BadImage, ImageCheck, RecordSpec, check_image, inspect_image, parse_indices
    from lab.runner.guest_run import RunHooks
    from lab.runs import new_run_dir
    from lab.workloads.mapsync import WORKLOAD_FILE, MapsyncParams

    ui = UI(as_json)
    spec: RecordSpec | None = None
    if (layout is None) != (durable is None):
        ui.abort("--layout and --durable go together: the persistence check needs both", EXIT_LAB_ERROR)
    if layout is not None and durable is not None:
        params = MapsyncParams.from_options(records=records, record_size=record_size,
                                            records_per_page=records_per_page)
        indices = parse_indices(durable)
        if indices and indices[-1] >= records:
            ui.abort(f"--durable {durable}: record {indices[-1]} is beyond --records {records}", EXIT_LAB_ERROR)
        spec = RecordSpec(record_file or WORKLOAD_FILE, records, params.layout, tuple(indices))
    try:
        given = inspect_image(image_file, Filesystem(fs))
    except BadImage as exc:  # a verdict and its reason, never a traceback
        if as_json:
            ui.emit_json({"verdict": Verdict.INFRA_ERROR.value, "reason": str(exc), "path": str(image_file)})
        else:
            ui.err.print(f"{Verdict.INFRA_ERROR.value}: {exc}", markup=False)
        raise SystemExit(EXIT_LAB_ERROR)
    img, verdict = image_and_accel(image_name, accel)
    run_dir = new_run_dir("check")
    boot = boot_mode(cold_boot)
    ui.info(f"check {image_file}: a {given.format.value} holding {fs} ({given.size} bytes), image {img.id} "
            f"(kernel {img.kernel_version}), {verdict.accel.value}, {boot.value} machine", literal=True)
    result = check_image(ImageCheck(given, Filesystem(fs), spec), img, verdict, run_dir,
                         RunHooks(progress=ui.info, boot=boot))
    if as_json:
        ui.emit_json(result.to_dict())
    else:
        _render(ui, result)
    raise SystemExit(EXIT_LAB_ERROR if result.verdict is Verdict.INFRA_ERROR
                     else EXIT_OK if result.verdict.passed else EXIT_FAILED)


def _render(ui: UI, result: WorkloadResult) -> None:
    ui.info(f"{result.verdict.value}  {result.check['format']} {result.check['fs']} dax={result.check['dax']}",
            literal=True)
    ui.table("findings", ["oracle", "verdict", "summary"],
             [[f.oracle, f.verdict.value, f.summary] for f in result.findings], literal=True)
    ui.info("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()), literal=True)
    if result.error:
        ui.info(f"error: {result.error}", literal=True)
    ui.info(f"run directory: {result.run_dir}", literal=True)


@click.command("script")
@click.argument("repro", type=click.Path(path_type=Path))
@click.option("--check", "check_script", type=click.Path(path_type=Path), default=None,
              help="Shell script run in the recovery machine: sh CHECK MOUNTPOINT LAST_ACK; non-zero exit is a finding.")
@click.option("--fs", type=click.Choice([f.value for f in Filesystem]), default="ext4", show_default=True)
@click.option("--dax", type=click.Choice(["always", "inode", "never"]), default="always", show_default=True)
@click.option("--cut-after-ack", type=int, default=None, help="Cut right after the host reads ACK K (needs --acks).")
@click.option("--cut-at-mark", default=None, help="Cut when the host reads MARK NAME.")
@click.option("--cut-at-seconds", type=float, default=None,
              help="Cut this long after the reproducer started (or after --cut-at-mark's MARK).")
@click.option("--acks", type=click.IntRange(0), default=0, show_default=True,
              help="How many ACKs (0..N-1) the reproducer emits.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="Seconds the reproducer may run.")
@click.option("--keep-capture", is_flag=True, help="Keep the captured media (for 'pmemlab check').")
@cold_boot_option
@accel_option
@image_option
@json_option
@lab_errors
def run_script(repro: Path, check_script: Path | None, fs: str, dax: str, cut_after_ack: int | None,
               cut_at_mark: str | None, cut_at_seconds: float | None, acks: int, timeout_s: float,
               keep_capture: bool, cold_boot: bool, accel: str, image_name: str, as_json: bool) -> None:
    """Run your own reproducer (REPRO.c, compiled statically here, or REPRO.sh for the guest's busybox
    sh) on the mounted DAX filesystem (its first argument), cut the power at one of its events, recover
    and judge: recovery mount, the --check script, fsck, kernel log."""
    from pydantic import ValidationError

    from lab.crash.point import CrashPoint
    from lab.errors import ConfigError
    from lab.guest.pmem import DaxMode
    from lab.runner.guest_run import RunHooks
    from lab.runs import new_run_dir
    from lab.workloads.script import START_MARK, ScriptCheck, ScriptParams, run

    ui = UI(as_json)
    if cut_after_ack is not None and (cut_at_mark is not None or cut_at_seconds is not None):
        raise ConfigError("give --cut-after-ack K, or --cut-at-mark NAME and/or --cut-at-seconds T")
    if cut_after_ack is None and cut_at_mark is None and cut_at_seconds is None:
        raise ConfigError("give a crash point: --cut-after-ack K, --cut-at-mark NAME or --cut-at-seconds T")
    crash = (CrashPoint(after_ack=cut_after_ack) if cut_after_ack is not None
             else CrashPoint(after_seconds=cut_at_seconds or 0.0))
    try:
        params = ScriptParams.model_validate({"script": str(repro), "check": str(check_script or ""), "acks": acks,
                                              "mark": cut_at_mark or START_MARK, "timeout_s": timeout_s})
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ConfigError(str(problem["msg"]).removeprefix("Value error, ")) from None
    check = ScriptCheck(Filesystem(fs), DaxMode(dax), params, crash, keep_capture=keep_capture)
    img, verdict = image_and_accel(image_name, accel)
    run_dir = new_run_dir("script")
    boot = boot_mode(cold_boot)
    ui.info(f"script {repro} on {fs} (dax={dax}), cut {check.trigger.describe()}, image {img.id} "
            f"(kernel {img.kernel_version}), {verdict.accel.value}, {boot.value} machines", literal=True)
    result = run(check, img, verdict, run_dir, RunHooks(progress=ui.info, boot=boot))
    if as_json:
        ui.emit_json(result.to_dict())
    else:
        _render_script(ui, result)
    raise SystemExit(EXIT_LAB_ERROR if result.verdict is Verdict.INFRA_ERROR
                     else EXIT_OK if result.verdict.passed else EXIT_FAILED)


def _render_script(ui: UI, result: WorkloadResult) -> None:
    cut = result.metrics.get("cut") or {}
    ui.info(f"{result.verdict.value}  {result.check['fs']} dax={result.check['dax']} cut "
            f"{cut.get('trigger_text', '-')} (ACKs read before it: {result.metrics.get('acked', '-')})", literal=True)
    ui.table("findings", ["oracle", "verdict", "summary"],
             [[f.oracle, f.verdict.value, f.summary] for f in result.findings], literal=True)
    ui.info("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()), literal=True)
    if result.error:
        ui.info(f"error: {result.error}", literal=True)
    ui.info(f"run directory: {result.run_dir}", literal=True)
