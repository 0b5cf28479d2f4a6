"""Bisect a case over a git history with `git bisect run`: git searches, the lab is the test.

The driver only starts `git bisect`, runs `git bisect run STEP...` and always ends with `git bisect
reset` (Ctrl-C and SIGTERM too), so the user's tree is left as `git bisect` itself leaves it: on the
branch it was on. The step (`pmemlab bisect-step`, lab.bisect_step) builds the commit, runs the case
and exits 0 good, STEP_BAD bad, 125 skip; it appends one JSON line per step to a steps file, which is how
the driver learns each step's evidence. git aborts the whole bisection on a status of 128 or more,
so the step runs under a small shell wrapper (WRAPPER) that turns a death by signal into 125 and
passes only ABORT_STATUS through: the step's explicit "stop bisecting".
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lab.errors import ConfigError

ABORT_STATUS = 255  # the step's explicit abort: git bisect run stops
STEP_BAD = 100  # the step's "bad"; the wrapper hands git 1
GIT_TIMEOUT_S = 60.0  # every plain git command (rev-parse, start, reset)
STOP_GRACE_S = 60.0  # after Ctrl-C: time for a step to shut its machines down before SIGKILL

# git reads 0 good, 125 skip, 1..127 bad, 128+ abort. The step's own statuses pass (its bad is
# STEP_BAD, so a Python traceback's 1 or a usage error's 2 is never taken for "bad": that is the
# lab failing before it could judge anything, the same at every commit: abort); a death by signal
# (a crash, the OOM killer) says nothing about the commit: skip.
WRAPPER = f"""\
"$@"; rc=$?
case "$rc" in
  0|125|{ABORT_STATUS}) exit "$rc" ;;
  {STEP_BAD}) exit 1 ;;
esac
if [ "$rc" -ge 128 ]; then
  echo "pmemlab bisect: the step died (status $rc): skipping this commit" >&2; exit 125
fi
echo "pmemlab bisect: the step failed (status $rc) before judging the commit: stopping" >&2; exit {ABORT_STATUS}
"""

_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.MULTILINE)
_SHA = re.compile(r"^([0-9a-f]{40})\b")


@dataclass
class GitBisection:
    tree: Path
    good: str
    bad: str
    first_bad: str | None = None
    candidates: tuple[str, ...] = ()  # when skips leave a range: the commits the first bad one is among
    steps: list[dict[str, Any]] = field(default_factory=list)  # one per `git bisect run` step, from the steps file
    interrupted: bool = False
    aborted: str = ""  # why git bisect run stopped without an answer
    seconds: float = 0.0
    log: str = ""  # `git bisect log` before the reset: replayable with `git bisect replay`

    def to_dict(self) -> dict[str, Any]:
        return {"tree": str(self.tree), "good": self.good, "bad": self.bad, "first_bad": self.first_bad,
                "candidates": list(self.candidates), "steps": self.steps, "interrupted": self.interrupted,
                "aborted": self.aborted, "seconds": round(self.seconds, 2), "log": self.log}


def git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} in {tree}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def prepare(tree: Path, good_rev: str, bad_rev: str) -> tuple[Path, str, str]:
    """The work tree's top, and the two revisions as commit ids; refuse a tree git bisect would disturb."""
    if not tree.is_dir():
        raise ConfigError(f"--git {tree}: no such directory")
    probe = git(tree, "rev-parse", "--show-toplevel", check=False)
    if probe.returncode != 0:
        raise ConfigError(f"--git {tree}: not a git work tree ({probe.stderr.strip()})")
    top = Path(probe.stdout.strip())
    if git(top, "bisect", "log", check=False).returncode == 0:
        raise ConfigError(f"--git {top}: a git bisect is already in progress there (finish it with 'git bisect reset')")
    dirty = git(top, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if dirty:
        raise ConfigError(f"--git {top}: tracked files have uncommitted changes ({dirty.splitlines()[0].strip()} ...): "
                          "commit or stash them first")
    commits = []
    for flag, rev in (("--good-rev", good_rev), ("--bad-rev", bad_rev)):
        found = git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if found.returncode != 0:
            raise ConfigError(f"{flag} {rev}: not a commit in {top}")
        commits.append(found.stdout.strip())
    if commits[0] == commits[1]:
        raise ConfigError(f"--good-rev and --bad-rev are the same commit {commits[0][:12]}")
    if git(top, "merge-base", "--is-ancestor", commits[0], commits[1], check=False).returncode != 0:
        raise ConfigError(f"--good-rev {good_rev} is not an ancestor of --bad-rev {bad_rev}")
    return top, commits[0], commits[1]


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM git's process group (git, the wrapper, the step: it unwinds and stops its machines),
    wait until the whole group is gone, SIGKILL it after STOP_GRACE_S."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def read_steps(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    steps: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            continue  # a step killed while writing its record: the rest still count (and reset still runs)
    return steps


def bisect_git(tree: Path, good_rev: str, bad_rev: str, step: Sequence[str], steps_file: Path,
               progress: Callable[[str], None] = lambda _: None,
               env: dict[str, str] | None = None) -> GitBisection:
    """Run `git bisect run` over good..bad in `tree` with `step` as the test; always reset. The
    wrapper script goes beside `steps_file` (outside the tree)."""
    top, good, bad = prepare(tree, good_rev, bad_rev)
    result = GitBisection(top, good, bad)
    started = time.monotonic()
    output: list[str] = []
    proc: subprocess.Popen[str] | None = None
    try:
        wrapper = steps_file.with_name("step-wrapper.sh")
        wrapper.write_text(WRAPPER)
        git(top, "bisect", "start", bad, good, "--")
        # Its own session: Ctrl-C reaches only this process, which then stops git and the step in order.
        proc = subprocess.Popen(["git", "bisect", "run", "sh", str(wrapper), *step],
                                cwd=top, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if not line.startswith("running "):  # git's echo of the whole step command line, every step
                progress(line.rstrip("\n"))
        status = proc.wait()
        text = "".join(output)
        found = _FIRST_BAD.search(text)
        if found:
            result.first_bad = found.group(1)
            result.candidates = (found.group(1),)
        elif "could be any of" in text:
            tail = text.split("could be any of", 1)[1]
            result.candidates = tuple(m.group(1) for line in tail.splitlines() if (m := _SHA.match(line.strip())))
        else:
            lines = [line.strip() for line in output if line.strip()]
            result.aborted = f"git bisect run ended with status {status}: {lines[-1] if lines else 'no output'}"
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if proc is not None and proc.poll() is None:
            _stop_group(proc)
        result.log = git(top, "bisect", "log", check=False).stdout
        result.steps = read_steps(steps_file)
        result.seconds = time.monotonic() - started
        reset = git(top, "bisect", "reset", check=False)
        if reset.returncode != 0:
            progress(f"git bisect reset in {top} failed: {reset.stderr.strip()}")
    return result
