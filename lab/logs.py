"""The lab's logging: `-v`/`-vv` on stderr, and a `lab.log` in every run directory.

Every module logs to `logging.getLogger(__name__)` under the `lab` logger. The CLI puts one
stderr handler on it (warnings by default, -v info, -vv debug). A run keeps its own record in
`RUN_DIR/lab.log` at debug level, whatever the verbosity: `run_log(run_dir)` attaches a file
handler for the duration of the run that takes only the records of that run. Campaigns run
cases in parallel threads, so "of that run" is a context variable set in the run's own thread,
not the handler's presence: a record logged by another case's thread never reaches this file.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LAB = "lab"
LOG_FILE = "lab.log"
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(threadName)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
STDERR_HANDLER = "pmemlab-stderr"

_current: contextvars.ContextVar[Path | None] = contextvars.ContextVar("pmemlab_run_log", default=None)


def level_for(verbosity: int) -> int:
    """0: warnings, 1 (-v): info, 2+ (-vv): debug."""
    return logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG


def _lab_logger() -> logging.Logger:
    logger = logging.getLogger(LAB)
    if logger.level == logging.NOTSET or logger.level > logging.DEBUG:
        logger.setLevel(logging.DEBUG)  # handlers choose what they keep; run logs keep everything
    return logger


def configure_stderr(verbosity: int) -> None:
    """One stderr handler on the lab logger at the level -v/-vv ask for (replaced, never stacked)."""
    logger = _lab_logger()
    for old in [h for h in logger.handlers if h.get_name() == STDERR_HANDLER]:
        logger.removeHandler(old)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.set_name(STDERR_HANDLER)
    handler.setLevel(level_for(verbosity))
    logger.addHandler(handler)


class _RunFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk must not print a traceback per record: the run reports the full disk itself.
        pass


class _ThisRun(logging.Filter):
    """Takes a record only when the emitting thread's context says it belongs to `run_dir`."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return _current.get() == self.run_dir


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Keep this thread's lab records in run_dir/lab.log while the block runs (appended; a run
    already logging to this directory in this thread is left as it is)."""
    path = run_dir / LOG_FILE
    if _current.get() == run_dir:
        yield path
        return
    logger = _lab_logger()
    try:
        handler: logging.Handler | None = _RunFile(path, mode="a", encoding="utf-8", delay=True)
    except OSError:
        handler = None
    if handler is not None:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(FILE_FORMAT, DATE_FORMAT))
        handler.addFilter(_ThisRun(run_dir))
        logger.addHandler(handler)
    token = _current.set(run_dir)
    try:
        yield path
    finally:
        _current.reset(token)
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
