"""A git-tree kernel source (a real git repository; its 'build' copies the cached Debian kernel, since
building a real Linux tree takes far too long here), and `watch --loop` with its signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.image.kernel import user_kernel
from lab.paths import cache_dir
from lab.store import ResultsStore
from lab.watch.gitkernel import KernelBuildError, build_git_kernel, git_version, host_trouble
from lab.watch.plan import GitKernel, load_plan
from lab.watch.sources import directory_version

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"


def git(tree: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def make_tree(tmp: Path) -> Path:
    tree = tmp / "linux"
    tree.mkdir()
    git(tree, "init", "-q", "-b", "main")
    (tree / "Makefile").write_text("# a kernel tree stand-in\n")
    git(tree, "add", ".")
    git(tree, "commit", "-q", "-m", "one")
    return tree


def debian_kernel() -> Path:
    trees = sorted((cache_dir() / "kernels").glob("linux-image-*/.complete"))
    if not trees:
        pytest.skip("no cached Debian kernel (pmemlab image build fetches one)")
    return trees[-1].parent


def copy_build(debian: Path, counter: Path) -> str:
    """What `make olddefconfig && make && make modules_install` leaves, copied from Debian's kernel. It
    first proves it runs in a clean checkout with the fragment as .config."""
    return (f"grep -q '^CONFIG_FS_DAX=y' .config && test -n \"$PMEMLAB_CONFIG_FRAGMENT\" && test ! -e dirty.txt"
            f" && git rev-parse HEAD && echo built >> {counter}"
            f" && mkdir -p arch/x86/boot \"$PMEMLAB_MODULES/lib/modules\""
            f" && cp {debian}/boot/vmlinuz-* arch/x86/boot/bzImage && cp {debian}/boot/config-* .config"
            f" && cp -al {debian}/lib/modules/* \"$PMEMLAB_MODULES/lib/modules/\"")


def test_a_new_commit_is_built_once_in_a_clean_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = debian_kernel()
    version = next((debian / "lib" / "modules").iterdir()).name
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    tree = make_tree(tmp_path)
    (tree / "dirty.txt").write_text("a work file of the user's: not in the build\n")
    counter = tmp_path / "builds"
    source = GitKernel(tree, "main", copy_build(debian, counter))
    first = git_version(source)
    assert first == f"main@{git(tree, 'rev-parse', 'HEAD')}"
    out = build_git_kernel("next", source, first)
    assert out == tmp_path / "cache" / "kernels" / "git" / "next" / first.partition("@")[2]
    assert first.partition("@")[2] in (out / "build.log").read_text()  # built at that commit
    kernel = user_kernel(out / "bzImage", out / "modules", out / ".config")  # what `image build` is handed
    assert kernel.version == version and kernel.moddir == out / "modules" / "lib" / "modules" / version
    assert kernel.config == out / ".config"
    assert build_git_kernel("next", source, first) == out and counter.read_text() == "built\n"  # once
    assert git_version(source) == first  # nothing new
    (tree / "Makefile").write_text("# two\n")
    git(tree, "commit", "-q", "-am", "two")
    second = git_version(source)
    assert second != first and build_git_kernel("next", source, second) != out
    assert counter.read_text() == "built\nbuilt\n" and not list(out.parent.glob(".build-*"))


def test_a_failed_build_says_why_with_the_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMEMLAB_CACHE", str(tmp_path / "cache"))
    tree = make_tree(tmp_path)
    source = GitKernel(tree, "main", "echo compiling fs/dax.c; echo 'fs/dax.c:12: error: oops' >&2; exit 3")
    with pytest.raises(KernelBuildError) as info:
        build_git_kernel("next", source, git_version(source))
    assert "exited with status 3" in str(info.value) and str(info.value).endswith(
        "last lines of its log:\ncompiling fs/dax.c\nfs/dax.c:12: error: oops")
    assert info.value.host_trouble is None, "a compile error is the commit's, not the host's"
    no_output = GitKernel(tree, "main", "true")
    with pytest.raises(KernelBuildError, match="left no arch/x86/boot/bzImage"):
        build_git_kernel("other", no_output, git_version(no_output))
    with pytest.raises(ConfigError, match="git rev-parse"):
        git_version(GitKernel(tree, "no-such-branch"))


def pmemlab(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, env=env_of(tmp),
                          timeout=120, cwd=REPO)


def env_of(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PMEMLAB_DATA": str(tmp / "data"), "PMEMLAB_CACHE": str(tmp / "cache"), "NO_COLOR": "1",
            "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def git_plan(tmp: Path, build: str) -> Path:
    tree = make_tree(tmp)
    plan = tmp / "plan.toml"
    plan.write_text(f'name = "nightly"\nscenarios = ["{SMOKE}"]\ndb = "sqlite:///{tmp}/results.db"\n'
                    f'report_dir = "reports"\n[[kernel]]\nname = "next"\ngit = "{tree}"\nbranch = "main"\n'
                    f"build = '''{build}'''\n")
    return plan


def test_watch_reports_a_build_failure_and_does_not_rebuild_it(tmp_path: Path) -> None:
    plan = git_plan(tmp_path, "echo 'drivers/nvdimm/pmem.c:7: error: boom' >&2; exit 2")
    proc = pmemlab("watch", str(plan), "--once", tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "BUILD FAILED" in proc.stdout and "drivers/nvdimm/pmem.c:7: error: boom" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    [report] = (tmp_path / "reports").glob("build-next-main-*.txt")
    assert "error: boom" in report.read_text()
    again = pmemlab("watch", str(plan), "--once", tmp=tmp_path)
    assert again.returncode == 0 and "already ran (no new kernel)" in again.stdout
    with ResultsStore.open(load_plan(plan).db) as store:
        assert store.list_campaigns() == []


@pytest.mark.parametrize("status, tail, why", [
    (None, "", "it timed out"),
    (-9, "", "it was killed by SIGKILL"),
    (137, "", "a command of it was killed by SIGKILL"),
    (2, "gcc: fatal error: Killed signal terminated program cc1", "its log says 'signal terminated program'"),
    (2, "fs/dax.o: No space left on device", "its log says 'No space left on device'"),
    (2, "fs/dax.c:12: error: 'x' undeclared", None),
    (1, "", None),
])
def test_a_build_failure_blames_the_host_only_on_its_signs(status: int | None, tail: str, why: str | None) -> None:
    assert host_trouble(status, tail) == why


def test_a_build_that_failed_by_the_hosts_trouble_is_built_again_next_run(tmp_path: Path) -> None:
    counter = tmp_path / "builds"
    plan = git_plan(tmp_path, f"echo x >> {counter}; echo 'cc1: out of memory allocating 65536 bytes' >&2; exit 2")
    first = pmemlab("watch", str(plan), "--once", tmp=tmp_path)
    assert first.returncode == 2 and "looks like this host's trouble" in first.stdout, first.stdout + first.stderr
    again = pmemlab("watch", str(plan), "--once", tmp=tmp_path)
    assert again.returncode == 2 and "already ran" not in again.stdout, again.stdout
    assert counter.read_text().count("x") == 2, "the commit was not built again"


class Watcher:
    """`pmemlab watch --loop` in the background, its output collected line by line."""

    def __init__(self, plan: Path, tmp: Path, interval: str = "1") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "watch", str(plan), "--loop", "--interval",
                                      interval], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env_of(tmp), cwd=REPO)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),  # type: ignore[union-attr]
                                       daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.lines)
            time.sleep(0.05)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def test_loop_repeats_goes_on_after_a_failing_check_and_stops_on_sigterm(tmp_path: Path) -> None:
    kernel = tmp_path / "kernel"
    kernel.mkdir()  # no bzImage yet: each check fails, the loop goes on
    plan = tmp_path / "plan.toml"
    plan.write_text(f'name = "nightly"\nscenarios = ["{SMOKE}"]\ndb = "sqlite:///{tmp_path}/results.db"\n'
                    f'[[kernel]]\nname = "mine"\ndirectory = "{kernel}"\n')
    watcher = Watcher(plan, tmp_path)
    try:
        watcher.wait_for("check 2 failed: kernel directory")
        # Remembered as seen before it appears (a bzImage is all the version hashes), so no check can
        # find it new in between and start an image build.
        staged = tmp_path / "staged"
        staged.mkdir()
        (staged / "bzImage").write_bytes(b"\x00kernel" * 100)
        with ResultsStore.open(f"sqlite:///{tmp_path}/results.db") as store:
            store.watch_record_seen("nightly", "mine", directory_version(staged))
        (staged / "bzImage").rename(kernel / "bzImage")
        watcher.wait_for("already ran (no new kernel)")
        watcher.wait_for("next check in 1 s")
    finally:
        status = watcher.stop(signal.SIGTERM)
    assert status == 0, watcher.text
    assert "SIGTERM: stopping" in watcher.text and "stopped after" in watcher.text
    assert "check 1 failed: kernel directory" in watcher.text and "Traceback" not in watcher.text


def test_sigint_during_a_build_stops_it_and_the_loop(tmp_path: Path) -> None:
    pid_file = tmp_path / "build.pid"
    plan = git_plan(tmp_path, f"echo $$ > {pid_file}; exec sleep 120")
    watcher = Watcher(plan, tmp_path, interval="3600")
    try:
        watcher.wait_for("next: building main@")
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        status = watcher.stop(signal.SIGINT)
    assert status == 130, watcher.text
    assert "SIGINT: stopping" in watcher.text and "stopped by SIGINT" in watcher.text
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # the build's process group went with it
    assert "Traceback" not in watcher.text


def test_a_stop_passes_sigint_on_to_the_running_child_once(tmp_path: Path) -> None:
    from lab.watch.run import WatchInterrupted, _Children

    marker = tmp_path / "got"
    child = ("import signal, sys, time\n"
             "def on(*_):\n"
             f"    open({str(marker)!r}, 'a').write('SIGINT\\n')\n"
             "    if not getattr(on, 'unwinding', False):\n"
             "        on.unwinding = True; time.sleep(1.0); sys.exit(130)\n"
             "signal.signal(signal.SIGINT, on)\n"
             f"open({str(tmp_path / 'ready')!r}, 'w').close()\n"
             "time.sleep(60)\n")
    children = _Children()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            children.run([sys.executable, "-c", child, "campaign", "run"])
        except BaseException as exc:  # noqa: BLE001 (what the thread ended with is the assertion)
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():  # its handler installed
        assert time.monotonic() < deadline and thread.is_alive(), errors
        time.sleep(0.02)
    started = time.monotonic()
    children.stop()
    time.sleep(0.3)  # apart, so two signals cannot coalesce into one handler call
    children.stop()  # a second Ctrl-C (or SIGTERM) while the child unwinds must not reach it
    thread.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - started < 10
    assert len(errors) == 1 and isinstance(errors[0], WatchInterrupted) and "status 130" in str(errors[0])
    assert marker.read_text() == "SIGINT\n" and children.current is None
    with pytest.raises(WatchInterrupted, match="stopped before"):
        children.run([sys.executable, "-c", "pass", "campaign", "run"])  # nothing new starts once stopping
