"""A git-tree kernel source: a new commit on a branch is built in a clean checkout, and its bzImage,
modules and .config are handed to the image builder (as `image build --kernel/--modules/--config`).

The build command runs under bash in a fresh `git clone --shared` of the tree at that commit (the
user's own tree and its work files are never touched), with:

    .config                   the config fragment (default: lab/watch/pmem.config), which
                              `make olddefconfig` completes
    PMEMLAB_MODULES           where `make modules_install INSTALL_MOD_PATH=` should put the modules
    PMEMLAB_CONFIG_FRAGMENT   the fragment's path, for a command that merges it its own way

and must leave arch/x86/boot/bzImage (or ./bzImage) and .config. The result is kept in
cache_dir()/kernels/git/SOURCE/COMMIT/ (bzImage, .config, modules/): a commit is built once.
A failed build is a KernelBuildError carrying the log's tail, never a pass. One that looks like the
host's trouble rather than the commit's (timed out, killed by a signal, a full disk, the compiler
out of memory) says so in `host_trouble`, and the watch builds that commit again on its next run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lab.errors import ConfigError, LabError
from lab.paths import cache_dir
from lab.watch.plan import GitKernel

DEFAULT_FRAGMENT = Path(__file__).resolve().parent / "pmem.config"
DEFAULT_BUILD = ('make olddefconfig && make -j"$(nproc)" bzImage modules'
                 ' && make modules_install INSTALL_MOD_PATH="$PMEMLAB_MODULES"')
BUILD_TIMEOUT_S = 6 * 3600  # a full kernel build on a small host; past this it is a failed build
LOG_TAIL_LINES = 25


# Log lines that blame the host, not the commit: a full disk, the OOM killer taking the compiler.
HOST_TROUBLE_SIGNS = ("No space left on device", "Cannot allocate memory", "signal terminated program",
                      "virtual memory exhausted", "out of memory allocating")


class KernelBuildError(LabError):
    """The build command failed: the message ends with the build log's tail. `host_trouble` says why
    the failure looks like the host's (worth building again), None when it looks like the commit's."""

    def __init__(self, message: str, host_trouble: str | None = None) -> None:
        super().__init__(message)
        self.host_trouble = host_trouble


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def host_trouble(status: int | None, tail: str) -> str | None:
    """Why a failed build looks like the host's trouble rather than the commit's; None if it does not."""
    if status is None:
        return "it timed out"
    if status < 0:
        return f"it was killed by {_signal_name(-status)}"
    if status in (128 + signal.SIGKILL, 128 + signal.SIGTERM):
        return f"a command of it was killed by {_signal_name(status - 128)}"
    sign = next((s for s in HOST_TROUBLE_SIGNS if s.lower() in tail.lower()), None)
    return f"its log says {sign!r}" if sign else None


def _git(tree: Path, *args: str, timeout: float = 120) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"git tree {tree}: git {' '.join(args)}: {exc}") from exc
    if proc.returncode != 0:
        raise ConfigError(f"git tree {tree}: git {' '.join(args)}: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def git_version(git: GitKernel) -> str:
    """BRANCH@COMMIT: a new commit on the branch is a new kernel."""
    if not git.tree.is_dir():
        raise ConfigError(f"git kernel tree {git.tree}: no such directory")
    return f"{git.branch}@{_git(git.tree, 'rev-parse', '--verify', '--quiet', git.branch + '^{commit}')}"


def commit_of(version: str) -> str:
    return version.rpartition("@")[2]


def output_dir(source: str, commit: str) -> Path:
    return cache_dir() / "kernels" / "git" / source / commit


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no build log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _run_build(command: str, cwd: Path, env: dict[str, str], log: Path, timeout: float) -> int | None:
    """The build's exit status, None past the timeout. Its own process group, killed on every way out."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def build_git_kernel(source: str, git: GitKernel, version: str, *, timeout: float = BUILD_TIMEOUT_S) -> Path:
    """The directory holding bzImage, .config and modules/ for that commit (built now or earlier)."""
    commit = commit_of(version)
    out = output_dir(source, commit)
    if (out / ".complete").is_file():
        return out
    fragment = git.config_fragment or DEFAULT_FRAGMENT
    work = out.parent / f".build-{commit}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        checkout = work / "src"
        _git(git.tree, "clone", "--quiet", "--shared", "--no-checkout", str(git.tree), str(checkout), timeout=600)
        _git(checkout, "checkout", "--quiet", "--detach", commit, timeout=600)
        shutil.copyfile(fragment, checkout / ".config")
        modules = work / "modules"
        modules.mkdir()
        env = {**os.environ, "PMEMLAB_MODULES": str(modules), "PMEMLAB_CONFIG_FRAGMENT": str(fragment)}
        log = work / "build.log"
        started = time.monotonic()
        status = _run_build(git.build or DEFAULT_BUILD, checkout, env, log, timeout)
        if status != 0:
            shutil.copyfile(log, out.parent / f"{commit}.failed.log")
            why = f"timed out after {timeout:.0f} s" if status is None else f"exited with status {status}"
            tail = _tail(log)
            raise KernelBuildError(f"kernel source {source}: build of {version} {why} "
                                   f"(command: {git.build or DEFAULT_BUILD}; log: {out.parent / (commit + '.failed.log')}); "
                                   f"last lines of its log:\n{tail}", host_trouble(status, tail))
        bzimage = next((p for p in (checkout / "arch" / "x86" / "boot" / "bzImage", checkout / "bzImage")
                        if p.is_file()), None)
        if bzimage is None or not (checkout / ".config").is_file():
            raise KernelBuildError(f"kernel source {source}: the build of {version} left no "
                                   "arch/x86/boot/bzImage (or ./bzImage) and .config in the checkout; "
                                   f"last lines of its log:\n{_tail(log)}")
        staged = work / "out"
        staged.mkdir()
        shutil.copyfile(bzimage, staged / "bzImage")
        shutil.copyfile(checkout / ".config", staged / ".config")
        if any(modules.iterdir()):
            modules.rename(staged / "modules")
        shutil.copyfile(log, staged / "build.log")
        (staged / ".complete").write_text(f"{version} built in {time.monotonic() - started:.0f} s\n")
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
