"""Kernel-problem parser for serial console logs and dmesg output.

Finds the lines Linux prints when it hits a problem (BUG, WARNING, Oops,
general protection fault, KASAN, UBSAN, hung task, RCU stall, panic) and
reports each incident once, with context, as a ``KernelProblem``.

Matching: a problem line must *start* with its marker after optional
prefixes: the ``dmesg -x`` "kern  :warn  : " decoration, a "<4>" log level,
a "[   12.345678]" (or ``dmesg -T``) timestamp and a "[    T1]" caller id.
So userland text like "no WARNING: here" is ignored. Userland output can
also be glued in front of a kernel line on the serial console (no newline
between them); a kernel timestamp in mid-line followed by a marker counts.

Incidents (the folding rule). One kernel incident often prints several
marker lines. A problem line opens an incident whose *span* runs to its end
marker ("---[ end trace", "---[ end Kernel panic", or for KASAN/UBSAN the
closing "=====" banner) or SPAN_LINES lines, whichever comes first. A later
marker line inside an open span is *folded* into that incident (kept in
``folded``, not reported) when

- it is of a kind the incident already has (a second WARNING in the same
  trace, a second blocked task in one hung-task report), or
- it is the Oops/GPF "die" line of an incident opened by BUG or KASAN
  (x86 prints "BUG: kernel NULL pointer dereference" then "Oops: 0000 [#1]").

Anything else is its own problem: notably PANIC is never folded, so a panic
after an Oops stays visible. An incident whose kind and title (digits and
addresses ignored) repeat an earlier problem is not reported again; the
earlier problem's ``repeats`` gets its line number (a WARN in a loop, a task
still blocked 120 s later).
"""

from __future__ import annotations

import codecs
import os
import re
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

CONTEXT_BEFORE = 3   # lines kept before a problem line (e.g. the KASAN banner)
CONTEXT_AFTER = 30   # lines kept after it, unless an end marker comes first
SPAN_LINES = 60      # how far an incident without an end marker reaches for folding


class ProblemKind(str, Enum):
    BUG = "BUG"
    WARNING = "WARNING"
    OOPS = "OOPS"
    GPF = "GPF"
    KASAN = "KASAN"
    HUNG_TASK = "HUNG_TASK"
    RCU_STALL = "RCU_STALL"
    PANIC = "PANIC"
    UBSAN = "UBSAN"


@dataclass(frozen=True)
class ProblemLine:
    """A marker line folded into an incident reported elsewhere."""

    kind: ProblemKind
    title: str
    line_no: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "title": self.title, "line_no": self.line_no}


@dataclass
class KernelProblem:
    """One incident: its first marker line (title, 1-based line_no) and context."""

    kind: ProblemKind
    title: str
    line_no: int
    context: list[str] = field(default_factory=list)
    folded: list[ProblemLine] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)  # line numbers of repeats

    @property
    def count(self) -> int:
        return 1 + len(self.repeats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "title": self.title,
            "line_no": self.line_no,
            "context": list(self.context),
            "folded": [f.to_dict() for f in self.folded],
            "repeats": list(self.repeats),
            "count": self.count,
        }


# --- line classification ---------------------------------------------------

_PREFIX = re.compile(
    r"(?:(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp"
    r"|local[0-7])\s*:\s*(?:emerg|alert|crit|err|warn|notice|info|debug)\s*:\s?)?"
    r"(?:<\d{1,3}>)?"
    r"(?:\[\s*\d+\.\d+\]\s?|\[[A-Z][a-z]{2} [^\]]*\d{4}\]\s?)?"  # uptime / dmesg -T
    r"(?:\[\s*[TC]\d+\]\s?)?"                                    # PRINTK_CALLER
)
_EMBEDDED_TIMESTAMP = re.compile(r"(?:<\d{1,3}>)?\[\s*\d+\.\d{6}\]\s?(?:\[\s*[TC]\d+\]\s?)?")

# Order matters: the first pattern that matches decides the kind.
_RULES: list[tuple[ProblemKind, re.Pattern[str]]] = [
    (ProblemKind.KASAN, re.compile(r"BUG: KASAN: ")),
    (ProblemKind.BUG, re.compile(r"(?:BUG: |kernel BUG at |watchdog: BUG: "
                                 r"|Unable to handle kernel )")),
    (ProblemKind.WARNING, re.compile(r"WARNING: ")),
    (ProblemKind.GPF, re.compile(r"general protection fault")),
    # "Oops: 0000 [#1]", arm64 "Internal error: Oops - BUG: ...", and the other
    # x86 die() headers such as "invalid opcode: 0000 [#1]".
    (ProblemKind.OOPS, re.compile(r"(?:Internal error: )?Oops(?: - [\w ]+)?: "
                                  r"|[A-Za-z][\w ,-]*: [0-9a-f]{4} \[#\d+\]")),
    (ProblemKind.HUNG_TASK, re.compile(r"INFO: task .+:\d+ blocked for more than \d+ seconds")),
    (ProblemKind.RCU_STALL, re.compile(r"(?:rcu: )?(?:INFO: )?rcu_\w+ (?:self-detected stall"
                                       r"|detected (?:expedited )?stalls)")),
    (ProblemKind.PANIC, re.compile(r"Kernel panic - not syncing")),
    (ProblemKind.UBSAN, re.compile(r"UBSAN: ")),
]
_END_MARKER = re.compile(r"---\[ end (?:trace|Kernel panic)")
_BANNER = re.compile(r"={20,}\s*$")
_BANNER_ENDED = {ProblemKind.KASAN, ProblemKind.UBSAN}
_DIE_LINES = {ProblemKind.OOPS, ProblemKind.GPF}
_DIE_AFTER = {ProblemKind.BUG, ProblemKind.KASAN}
# What differs between repeats of one problem: addresses, CPU/PID numbers,
# seconds. Source line numbers ("dax.c:123") stay: they tell sites apart.
_VOLATILE = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|(?<!\.[chS]:)\b\d+")


def strip_prefix(line: str) -> str:
    """The kernel message of ``line`` without dmesg/console decorations."""
    prefix = _PREFIX.match(line)  # every part is optional: it always matches
    return line[prefix.end():] if prefix else line


def classify(line: str) -> tuple[ProblemKind, str] | None:
    """(kind, title) when ``line`` is a kernel problem line, else None."""
    candidates = [strip_prefix(line)]
    candidates += [line[m.end():] for m in _EMBEDDED_TIMESTAMP.finditer(line) if m.start() > 0]
    for message in candidates:
        for kind, pattern in _RULES:
            if pattern.match(message):
                return kind, message.strip()
    return None


def _dedupe_key(kind: ProblemKind, title: str) -> tuple[ProblemKind, str]:
    return kind, _VOLATILE.sub("#", title)


# --- the scanner -------------------------------------------------------------

@dataclass
class _Incident:
    """An open incident: where folded lines go and where context is collected."""

    problem: KernelProblem
    kinds: set[ProblemKind]
    collect: bool            # False for a repeat: its context belongs to the first
    seen_after: int = 0
    closed: bool = False

    def accepts(self, kind: ProblemKind) -> bool:
        if kind is ProblemKind.PANIC:
            return False
        return kind in self.kinds or (kind in _DIE_LINES and bool(self.kinds & _DIE_AFTER))


class ConsoleScanner:
    """Incremental scanner for live tailing: feed chunks, read problems.

    ``feed`` accepts text or bytes (decoded as UTF-8, bad bytes replaced) in
    chunks of any size; partial lines wait for their newline, or ``finish()``.
    """

    def __init__(self, context_before: int = CONTEXT_BEFORE,
                 context_after: int = CONTEXT_AFTER, span_lines: int = SPAN_LINES) -> None:
        self._context_after = context_after
        self._span_lines = max(span_lines, context_after)
        self._recent: deque[str] = deque(maxlen=context_before)
        self._open: list[_Incident] = []
        self._problems: list[KernelProblem] = []
        self._by_key: dict[tuple[ProblemKind, str], KernelProblem] = {}
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line_no = 0

    @property
    def lines_seen(self) -> int:
        return self._line_no

    def feed(self, chunk: str | bytes) -> list[KernelProblem]:
        """Scan the complete lines in ``chunk``; returns problems new in it (snapshots)."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        before = len(self._problems)
        for line in lines:
            self._line(line.rstrip("\r"))
        return [_snapshot(p) for p in self._problems[before:]]

    def finish(self) -> list[KernelProblem]:
        """Scan a trailing line that has no newline; returns problems new in it."""
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        before = len(self._problems)
        if rest:
            self._line(rest.rstrip("\r"))
        return [_snapshot(p) for p in self._problems[before:]]

    def problems(self) -> list[KernelProblem]:
        """All problems so far, in order of appearance (snapshots)."""
        return [_snapshot(p) for p in self._problems]

    def _line(self, raw: str) -> None:
        self._line_no += 1
        hit = classify(raw)
        opened: _Incident | None = None
        if hit is not None:
            opened = self._problem_line(hit[0], hit[1], raw)
        for incident in self._open:
            if incident is not opened:
                self._advance(incident, raw)
        self._open = [i for i in self._open if not i.closed]
        if opened is not None:
            self._open.append(opened)
        self._recent.append(raw)

    def _problem_line(self, kind: ProblemKind, title: str, raw: str) -> _Incident | None:
        """Fold, count as a repeat, or report; returns the incident it opens."""
        for incident in reversed(self._open):
            if incident.accepts(kind):
                incident.problem.folded.append(ProblemLine(kind, title, self._line_no))
                incident.kinds.add(kind)
                return None
        key = _dedupe_key(kind, title)
        earlier = self._by_key.get(key)
        if earlier is not None:
            earlier.repeats.append(self._line_no)
            return _Incident(earlier, {kind}, collect=False)
        problem = KernelProblem(kind, title, self._line_no, [*self._recent, raw])
        self._problems.append(problem)
        self._by_key[key] = problem
        return _Incident(problem, {kind}, collect=True)

    def _advance(self, incident: _Incident, raw: str) -> None:
        incident.seen_after += 1
        if incident.collect and incident.seen_after <= self._context_after:
            incident.problem.context.append(raw)
        message = strip_prefix(raw)
        ended = bool(_END_MARKER.match(message)) or (
            bool(incident.kinds & _BANNER_ENDED) and bool(_BANNER.match(message)))
        if ended or incident.seen_after >= self._span_lines:
            incident.closed = True
        elif incident.seen_after >= self._context_after:
            incident.collect = False


def _snapshot(problem: KernelProblem) -> KernelProblem:
    # Callers get copies: the scanner keeps filling context as lines arrive.
    return replace(problem, context=list(problem.context), folded=list(problem.folded),
                   repeats=list(problem.repeats))


def scan_console(text: str) -> list[KernelProblem]:
    """Every kernel problem in a whole console log or dmesg text."""
    scanner = ConsoleScanner()
    scanner.feed(text)
    scanner.finish()
    return scanner.problems()


def scan_console_file(path: str | os.PathLike[str]) -> list[KernelProblem]:
    """Every kernel problem in a log file (read as bytes: consoles carry garbage)."""
    scanner = ConsoleScanner()
    with open(path, "rb") as log:
        while chunk := log.read(1 << 20):
            scanner.feed(chunk)
    scanner.finish()
    return scanner.problems()
