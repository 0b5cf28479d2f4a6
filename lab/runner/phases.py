"""Phase timings: each named step of a run, in seconds, in order."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class PhaseTimer:
    def __init__(self, on_phase: Callable[[str], None] = lambda _: None) -> None:
        self.on_phase = on_phase  # live progress displays follow the phases
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.current: str | None = None  # the phase in progress: named in HANG and error findings

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.current = name
        self.on_phase(name)
        mark = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - mark, 3)
            self.current = None

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)
