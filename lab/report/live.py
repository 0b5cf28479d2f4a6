"""Live campaign progress: one line per running machine with its phase, an overall bar with ETA."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from lab.cases import Case
from lab.verdict import Verdict


class LiveProgress:
    """Implements lab.campaign.Progress with rich; thread-safe (cases report from worker threads)."""

    def __init__(self, total: int, jobs: int, console: Console) -> None:
        self._lock = threading.Lock()
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self._overall = self._progress.add_task("campaign", total=total)
        self._slots: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
        self._console = console
        self._jobs = jobs

    def __enter__(self) -> "LiveProgress":
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def _slot(self, slot: str) -> TaskID:
        if slot not in self._slots:
            self._slots[slot] = self._progress.add_task(slot, total=None)
        return self._slots[slot]

    def case_started(self, slot: str, case: Case, attempt: int) -> None:
        with self._lock:
            crash = f" crash {case.crash.describe()}" if case.crash is not None else ""
            crash += f" {case.crash_state}" if case.crash_state else ""
            self._labels[slot] = f"{slot}: {escape(case.cell_key)}{crash}" + (
                f" (attempt {attempt})" if attempt > 1 else "")
            self._progress.update(self._slot(slot), description=self._labels[slot] + " — starting")

    def case_phase(self, slot: str, phase: str) -> None:
        with self._lock:
            self._progress.update(self._slot(slot), description=f"{self._labels.get(slot, slot)} — {phase}")

    def case_finished(self, slot: str, case: Case, verdict: Verdict, met: bool) -> None:
        with self._lock:
            self._progress.update(self._slot(slot), description=f"{slot}: idle")
            self._progress.advance(self._overall)
            mark = "[green]met[/green]" if met else "[red]NOT MET[/red]"
            state = f" {case.crash_state}" if case.crash_state else ""
            self._console.print(f"{escape(case.id)} {escape(case.cell_key)}{state}: {verdict.value} "
                                f"(expected {case.expect.value}) {mark}")


class LineProgress:
    """The same events as plain lines on stderr, for --json and non-terminals."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def case_started(self, slot: str, case: Case, attempt: int) -> None:
        self._console.print(f"{slot}: start {case.id} {case.cell_key} (attempt {attempt})", markup=False)

    def case_phase(self, slot: str, phase: str) -> None:
        pass

    def case_finished(self, slot: str, case: Case, verdict: Verdict, met: bool) -> None:
        state = f" {case.crash_state}" if case.crash_state else ""
        self._console.print(f"{slot}: {case.id} {case.cell_key}{state}: {verdict.value} "
                            f"(expected {case.expect.value}, {'met' if met else 'NOT MET'})", markup=False)
