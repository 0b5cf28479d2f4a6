"""Bug-report commands (added to lab.cli's groups): `pmemlab check IMAGE` judges a crash image from a
report; `pmemlab run script REPRO` runs a report's own reproducer under power cuts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lab.bisect_step import CONFIG_FILE, KERNEL_FILE, MODULES_DIR, KernelLayout
from lab.cli_common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LAB_ERROR, EXIT_OK, accel_option, boot_mode,
                            cold_boot_option, db_option, image_and_accel, image_option, json_option, lab_errors,
                            open_store, verdict_exit)
from lab.guest.pmem import Filesystem
from lab.runner.guest_run import WorkloadResult
from lab.ui import UI

if TYPE_CHECKING:
    from lab.bisect import Outcome
    from lab.cases import Case
    from lab.image.cache import Image
    from lab.runner.machines import BootMode
    from lab.store.db import ResultsStore
    from lab.vm.accel import AccelVerdict
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
    raise SystemExit(verdict_exit(result.verdict))


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
    raise SystemExit(verdict_exit(result.verdict))


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


def _stored_case(db: str | None, case_id: str) -> tuple[ResultsStore, Case, str, Verdict | None]:
    """The stored case, the image it ran on, and its recorded verdict."""
    from lab.cases import Case

    store = open_store(db)
    stored = store.get_case(case_id)
    case = Case.from_dict(dict(stored.case))
    recorded = Verdict(stored.verdict) if stored.verdict else None
    return store, case, store.get_campaign(stored.campaign_id).image_id, recorded


def _run_once(case: Case, image: Image, accel: AccelVerdict, boot: BootMode, label: str) -> WorkloadResult:
    from lab.runner.guest_run import RunHooks
    from lab.runs import new_run_dir
    from lab.workloads.catalog import get_kind

    return get_kind(case.workload).run(case.check, image, accel, new_run_dir(label),
                                       RunHooks(boot=boot, oracles=dict(case.oracles)))


@click.command("minimize")
@click.argument("case_id")
@click.option("--times", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Runs per step; a step is kept only when every run fails the same way.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the smallest case here as a scenario (default: minimized-CASE_ID.toml).")
@db_option
@cold_boot_option
@accel_option
@json_option
@lab_errors
def minimize_cmd(case_id: str, times: int, output: Path | None, db: str | None, cold_boot: bool, accel: str,
                 as_json: bool) -> None:
    """Shrink a case whose verdict is not its expectation, while that verdict recurs: the crash point,
    the record count and size, parameters that do not matter. Ctrl-C keeps the smallest so far."""
    from lab.cases import export_case_scenario
    from lab.minimize import minimize
    from lab.scenario.pin import ImagePin
    from lab.vm.accel import lab_qemu_version

    ui = UI(as_json)
    _store, case, image_id, recorded = _stored_case(db, case_id)
    if recorded is None or recorded is case.expect or recorded is Verdict.INFRA_ERROR:
        ui.abort(f"case {case.id}: recorded verdict {recorded.value if recorded else 'none'}, expected "
                 f"{case.expect.value}: only a case that failed its expectation can be minimized", EXIT_LAB_ERROR)
    image, verdict = image_and_accel(image_id, accel)
    boot = boot_mode(cold_boot)
    ui.info(f"minimize case {case.id} ({case.workload}: {case.cell_key}): {recorded.value} (expected "
            f"{case.expect.value}) on image {image.id}, {times} run(s) per step", literal=True)
    result = minimize(case, recorded, times,
                      lambda c: _run_once(c, image, verdict, boot, f"minimize-{case.id}").verdict,
                      progress=lambda line: ui.info(line, literal=True))
    target = output or Path(f"minimized-{case.id}.toml")
    target.write_text(export_case_scenario(result.smallest,
                                           ImagePin(image.id, image.kernel_version, lab_qemu_version())))
    data = {**result.to_dict(), "output": str(target), "image_id": image.id}
    if as_json:
        ui.emit_json(data)
    else:
        kept = sum(1 for s in result.steps if s.kept)
        ui.info(f"{len(result.steps)} steps ({kept} kept), {data['runs']} runs, {result.seconds:.1f} s"
                f"{' (interrupted)' if result.interrupted else ''}; smallest case written to {target}", literal=True)


def _probe(store: ResultsStore, case: Case, image: Image, accel: AccelVerdict, boot: BootMode, times: int,
           what: str) -> tuple[list[Verdict], str]:
    """Run a stored case's export `times` times on one image, stored as one campaign (the step's
    evidence); its verdicts and the campaign id."""
    from lab.campaign import new_campaign_id
    from lab.cases import expand, export_case_scenario
    from lab.scenario import parse_scenario

    text = export_case_scenario(case)
    scenario = parse_scenario(text.encode(), Path(f"bisect-{case.id}.toml"))
    (exported,) = expand(scenario)
    campaign_id = new_campaign_id()
    store.create_campaign(campaign_id=campaign_id, scenario_name=f"bisect-{case.id}",
                          scenario_path=f"(bisect of case {case.id}: {what})", scenario_text=text,
                          scenario_hash=scenario.content_hash, image_id=image.id,
                          kernel_version=image.kernel_version, accelerator=accel.accel.value, jobs=1,
                          cases=[exported.to_dict()])
    verdicts = []
    for _ in range(times):
        attempt = store.start_attempt(campaign_id, exported.id, "")
        result = _run_once(exported, image, accel, boot, f"bisect-{case.id}")
        store.finish_attempt(attempt, result.to_dict(), final=True)
        verdicts.append(result.verdict)
    store.set_campaign_status(campaign_id, "finished")
    return verdicts, campaign_id


layout_options = [
    click.option("--recipe", default=None, help="With --git: the image recipe; a relative path is read from the "
                 "bisected tree at each commit (default: the lab's images/debian12-pmem.toml)."),
    click.option("--kernel-file", default=KERNEL_FILE, show_default=True,
                 help="With --git: where the build leaves the bzImage, relative to the tree."),
    click.option("--modules-dir", default=MODULES_DIR, show_default=True,
                 help="With --git: the build's INSTALL_MOD_PATH, relative to the tree (absent: no modules)."),
    click.option("--config-file", default=CONFIG_FILE, show_default=True,
                 help="With --git: the kernel .config, relative to the tree."),
    click.option("--build-timeout", type=click.FloatRange(1), default=7200.0, show_default=True,
                 help="With --git: seconds one build may take (past it: the commit is skipped)."),
]


def _layout(fn: Any) -> Any:
    for option in reversed(layout_options):
        fn = option(fn)
    return fn


@click.command("bisect")
@click.argument("case_id")
@click.option("--good", default=None, help="An image (ref or id) the case passes on.")
@click.option("--bad", default=None, help="An image (ref or id) the case fails on, later in --images.")
@click.option("--images", "images_text", default=None, help="Comma-separated image refs/ids, oldest first.")
@click.option("--git", "git_tree", type=click.Path(path_type=Path), default=None,
              help="Bisect commits of this kernel tree instead of images (with --good-rev, --bad-rev, --build-cmd).")
@click.option("--good-rev", default=None, help="With --git: a commit the case passes on.")
@click.option("--bad-rev", default=None, help="With --git: a later commit the case fails on.")
@click.option("--build-cmd", default=None,
              help="With --git: the shell command (sh -c, in the tree) that builds the checked-out kernel, e.g. "
              "'make -j16 bzImage modules && make modules_install INSTALL_MOD_PATH=.pmemlab-modules'.")
@_layout
@click.option("--times", type=click.IntRange(1, 20), default=1, show_default=True, help="Runs per image.")
@db_option
@cold_boot_option
@accel_option
@json_option
@lab_errors
def bisect_cmd(case_id: str, good: str | None, bad: str | None, images_text: str | None, git_tree: Path | None,
               good_rev: str | None, bad_rev: str | None, build_cmd: str | None, recipe: str | None,
               kernel_file: str, modules_dir: str, config_file: str, build_timeout: float, times: int,
               db: str | None, cold_boot: bool, accel: str, as_json: bool) -> None:
    """The first image in --images (or, with --git, the first commit) on which a stored case goes bad
    (exit 0 when found). Each step's runs are stored: one campaign per image or commit probed."""
    from lab.bisect import bisect
    from lab.errors import ConfigError, ImageError

    if git_tree is not None:
        if good or bad or images_text:
            raise ConfigError("--git bisects commits: give --good-rev/--bad-rev/--build-cmd, not --good/--bad/--images")
        if not (good_rev and bad_rev and build_cmd):
            raise ConfigError("--git needs --good-rev A, --bad-rev B and --build-cmd CMD")
        _bisect_git(case_id, git_tree, good_rev, bad_rev, build_cmd, recipe, KernelLayout(kernel_file, modules_dir,
                    config_file), build_timeout, times, db, cold_boot, accel, as_json)
        return
    if not (good and bad and images_text):
        raise ConfigError("give --good IMAGE --bad IMAGE --images REF,REF,... (or --git TREE to bisect commits)")
    ui = UI(as_json)
    store, case, _image_id, _recorded = _stored_case(db, case_id)
    images = [name.strip() for name in images_text.split(",") if name.strip()]
    boot = boot_mode(cold_boot)

    def probe(name: str) -> list[Verdict]:
        try:
            image, verdict = image_and_accel(name, accel)
        except ImageError as exc:
            ui.warn(f"{name}: {exc}")
            return []
        return _probe(store, case, image, verdict, boot, times, name)[0]

    ui.info(f"bisect case {case.id} ({case.workload}: {case.cell_key}, expects {case.expect.value}) over "
            f"{len(images)} images, {times} run(s) each", literal=True)
    result = bisect(images, good, bad, case.expect, probe, progress=lambda line: ui.info(line, literal=True))
    if as_json:
        ui.emit_json(result.to_dict())
    elif result.first_bad is not None:
        ui.info(f"first bad image: {result.first_bad} ({len(result.steps)} steps, {result.seconds:.1f} s)",
                literal=True)
    else:
        ui.info(f"no single first bad image: among {', '.join(result.candidates) or '(interrupted)'}", literal=True)
    raise SystemExit(EXIT_OK if result.first_bad is not None else EXIT_FAILED)


def _bisect_git(case_id: str, tree: Path, good_rev: str, bad_rev: str, build_cmd: str, recipe: str | None,
                layout: KernelLayout, build_timeout: float, times: int, db: str | None, cold_boot: bool,
                accel: str, as_json: bool) -> None:
    import sys

    from lab.git_bisect import bisect_git, git
    from lab.paths import env_with_db
    from lab.runs import new_run_dir, write_json

    ui = UI(as_json)
    _store, case, _image_id, _recorded = _stored_case(db, case_id)  # refuse an unknown case before git moves
    run_dir = new_run_dir("bisect-git")
    steps_file = run_dir / "steps.jsonl"
    step = [sys.executable, "-m", "lab.cli", "bisect-step", case.id, "--build-cmd", build_cmd,
            "--build-timeout", str(build_timeout), "--times", str(times), "--steps-file", str(steps_file),
            "--kernel-file", layout.kernel, "--modules-dir", layout.modules, "--config-file", layout.config,
            "--accel", accel, "--run-dir", str(run_dir)]
    step += ["--recipe", recipe] if recipe else []
    step += ["--cold-boot"] if cold_boot else []
    ui.info(f"git bisect of case {case.id} ({case.workload}: {case.cell_key}, expects {case.expect.value}) in "
            f"{tree}: {good_rev} good, {bad_rev} bad, {times} run(s) per commit; steps in {run_dir}", literal=True)
    result = bisect_git(tree, good_rev, bad_rev, step, steps_file,
                        progress=lambda line: ui.info(line, literal=True) if not as_json else ui.err.print(line,
                                                                                                       markup=False),
                        env=env_with_db(db))  # the step reads the URL from PMEMLAB_DB: never in argv
    write_json(run_dir / "bisect.json", result.to_dict())
    if as_json:
        ui.emit_json({**result.to_dict(), "run_dir": str(run_dir)})
    else:
        ui.table("steps", ["commit", "outcome", "verdicts", "seconds", "why"],
                 [[s["commit"][:12], s["outcome"], ",".join(s["verdicts"]), f"{s['seconds']:.1f}", s["reason"]]
                  for s in result.steps], literal=True)
        if result.first_bad:
            subject = git(result.tree, "log", "-1", "--format=%s", result.first_bad, check=False).stdout.strip()
            ui.info(f"first bad commit: {result.first_bad} {subject} ({len(result.steps)} steps, "
                    f"{result.seconds:.1f} s)", literal=True)
        elif result.candidates:
            ui.info(f"no single first bad commit (skipped commits): among {', '.join(result.candidates)}",
                    literal=True)
        else:
            ui.info(f"no answer: {'interrupted' if result.interrupted else result.aborted}", literal=True)
    if result.interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    raise SystemExit(EXIT_OK if result.first_bad is not None else EXIT_FAILED)


@click.command("bisect-step", hidden=True)
@click.argument("case_id")
@click.option("--build-cmd", required=True)
@click.option("--steps-file", type=click.Path(path_type=Path), required=True)
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@_layout
@click.option("--times", type=click.IntRange(1, 20), default=1)
@db_option
@cold_boot_option
@accel_option
@lab_errors
def bisect_step_cmd(case_id: str, build_cmd: str, steps_file: Path, run_dir: Path, recipe: str | None,
                    kernel_file: str, modules_dir: str, config_file: str, build_timeout: float, times: int,
                    db: str | None, cold_boot: bool, accel: str) -> None:
    """One `git bisect run` step at the checked-out commit: exit 0 good, 100 bad (lab.git_bisect.WRAPPER
    hands git 1), 125 skip (the build or the lab failed), 255 abort. Appends its evidence to --steps-file."""
    import json
    import subprocess
    import time

    from lab.bisect import EXIT_CODES, Outcome
    from lab.git_bisect import ABORT_STATUS, STEP_BAD

    started = time.monotonic()
    tree = Path.cwd()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=60).stdout.strip()
    record: dict[str, Any] = {"commit": commit, "outcome": Outcome.SKIP.value, "verdicts": [], "reason": "",
                              "image_id": None, "campaign_id": None, "build_log": None, "build_seconds": None}
    status = EXIT_CODES[Outcome.SKIP]
    try:
        try:
            store, case, _image_id, _recorded = _stored_case(db, case_id)
        except Exception as exc:  # the same for every commit: stop bisecting
            record.update(outcome="abort", reason=f"case {case_id}: {exc}")
            status = ABORT_STATUS
        else:
            outcome, status = _step(record, store, case, tree, build_cmd, build_timeout, run_dir, recipe,
                                    KernelLayout(kernel_file, modules_dir, config_file), times, cold_boot, accel)
            record["outcome"] = outcome.value
    except Exception as exc:  # a lab failure at one commit claims nothing about it: skip
        record.update(outcome=Outcome.SKIP.value, reason=f"the lab failed: {type(exc).__name__}: {exc}")
        status = EXIT_CODES[Outcome.SKIP]
    except BaseException:  # SIGTERM (the bisection was stopped) or Ctrl-C: no verdict about this commit
        record.update(outcome="interrupted", reason="the bisection was stopped during this step")
        raise
    finally:
        record["seconds"] = round(time.monotonic() - started, 2)
        with steps_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"pmemlab bisect-step {commit[:12]}: {record['outcome']}"
              f"{' (' + record['reason'] + ')' if record['reason'] else ''}", flush=True)
    raise SystemExit(STEP_BAD if status == EXIT_CODES[Outcome.BAD] else status)


def _step(record: dict[str, Any], store: ResultsStore, case: Case, tree: Path, build_cmd: str, build_timeout: float,
          run_dir: Path, recipe: str | None, layout: KernelLayout, times: int, cold_boot: bool,
          accel: str) -> tuple[Outcome, int]:
    from lab.bisect import EXIT_CODES, Outcome, classify
    from lab.bisect_step import find_kernel, run_build
    from lab.errors import ImageError
    from lab.image.builder import build
    from lab.image.kernel import user_kernel
    from lab.paths import cache_dir, images_dir

    def skip(reason: str) -> tuple[Outcome, int]:
        record["reason"] = reason
        return Outcome.SKIP, EXIT_CODES[Outcome.SKIP]

    commit = record["commit"]
    log = run_dir / f"build-{commit[:12]}.log"
    record["build_log"] = str(log)
    built = run_build(build_cmd, tree, log, build_timeout)
    record["build_seconds"] = round(built.seconds, 2)
    if not built.ok:
        return skip(built.reason)
    found = find_kernel(tree, layout)
    if isinstance(found, str):
        return skip(found)
    bzimage, modules, config = found
    recipe_path = images_dir() / "debian12-pmem.toml" if recipe is None else (
        Path(recipe) if Path(recipe).is_absolute() else tree / recipe)
    try:
        kernel = user_kernel(bzimage, modules, config)
        image = build(recipe_path, cache_dir(), kernel=kernel, ref=f"git-{commit[:12]}").image
    except ImageError as exc:  # includes a config lacking what the lab needs
        return skip(f"no image from this build: {exc}")
    record["image_id"] = image.id
    image, verdict = image_and_accel(image.id, accel)
    verdicts, campaign_id = _probe(store, case, image, verdict, boot_mode(cold_boot), times, f"commit {commit}")
    record.update(verdicts=[v.value for v in verdicts], campaign_id=campaign_id)
    outcome = classify(verdicts, case.expect)
    if outcome is Outcome.SKIP:
        record["reason"] = "the lab gave INFRA-ERROR: nothing can be claimed about this commit"
    return outcome, EXIT_CODES[outcome]
