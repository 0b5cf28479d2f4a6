"""One `git bisect run` step: build the checked-out commit's kernel, build its image, run the case.

Where a build leaves its kernel (paths relative to the tree's top, each overridable):
  arch/x86/boot/bzImage   the kernel, as `make bzImage` leaves it
  .pmemlab-modules        the modules, as `make modules_install INSTALL_MOD_PATH=.pmemlab-modules`
                          leaves them (lib/modules/VERSION); absent: a kernel with everything built in
  .config                 the configuration the lab checks (FS_DAX, LIBNVDIMM, ACPI_NFIT, ...)
The build command is the user's, run by `sh -c` in the tree with a deadline; its output is kept in
the step's run directory, never in the tree. A kernel tree's .gitignore ignores dot files, so
.pmemlab-modules does not show up as a change that git bisect would trip over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.bisect import Outcome

KERNEL_FILE = "arch/x86/boot/bzImage"
MODULES_DIR = ".pmemlab-modules"
CONFIG_FILE = ".config"


@dataclass(frozen=True)
class KernelLayout:
    """Where the build leaves what the image builder needs, relative to the tree's top."""

    kernel: str = KERNEL_FILE
    modules: str = MODULES_DIR
    config: str = CONFIG_FILE


@dataclass(frozen=True)
class Build:
    ok: bool
    reason: str  # why not, when not ok
    seconds: float
    log: Path


def run_build(command: str, tree: Path, log: Path, timeout_s: float) -> Build:
    """`sh -c COMMAND` in `tree` within `timeout_s`, all output to `log`; its whole process group is
    ended on every exit path (a deadline, Ctrl-C), so no compiler outlives the step."""
    started = time.monotonic()
    with log.open("w") as handle:
        handle.write(f"$ {command}\n")
        handle.flush()
        proc = subprocess.Popen(["sh", "-c", command], cwd=tree, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Build(False, f"the build ran past its {timeout_s:g} s deadline (log: {log})",
                         time.monotonic() - started, log)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    seconds = time.monotonic() - started
    if status != 0:
        return Build(False, f"the build command exited with status {status} (log: {log})", seconds, log)
    return Build(True, "", seconds, log)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the build's process group, then SIGKILL whatever of it outlived its leader's exit."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def find_kernel(tree: Path, layout: KernelLayout) -> tuple[Path, Path | None, Path | None] | str:
    """(bzImage, modules dir or None, config or None), or why the build left no kernel."""
    bzimage = tree / layout.kernel
    if not bzimage.is_file():
        return f"the build left no kernel at {layout.kernel}"
    modules = tree / layout.modules
    config = tree / layout.config
    return bzimage, modules if modules.is_dir() else None, config if config.is_file() else None


def outcome_status(outcome: Outcome) -> int:
    from lab.bisect import EXIT_CODES

    return EXIT_CODES[outcome]
