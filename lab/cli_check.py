"""`pmemlab check IMAGE`: judge a crash image from a bug report (added to lab.cli's group)."""

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
