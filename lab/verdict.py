"""Verdicts: what a case's recovery concluded, and how several combine.

A case yields one verdict. Every oracle (persistence, fsck, kernel log, ...)
and the lab itself contribute findings, each pointing at a verdict; the case
verdict is the most severe of them. Precedence, most severe first:

    KERNEL-BUG > INFRA-ERROR > HANG > VIOLATION > PASS

Why this order:

- KERNEL-BUG wins over everything: a kernel problem on the console (BUG, Oops,
  KASAN, ...) is a real finding even if the lab also failed afterwards, often
  *because* the kernel broke.
- INFRA-ERROR beats HANG and VIOLATION: when the lab itself failed (capture
  lost, QEMU did not start), nothing else it saw can be trusted, so neither a
  hang nor a violation may be reported on that evidence. It is never a pass.
- HANG beats VIOLATION: a guest that stopped answering left the oracles with
  partial evidence; the hang is the primary observation.
- VIOLATION: an oracle saw a broken promise (an acknowledged record lost).
- PASS only when every finding passed.

No evidence at all is not a pass: ``combine([])`` is INFRA-ERROR.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Verdict(str, Enum):
    """Outcome of a case; the value is the spelling used in reports and stores."""

    PASS = "PASS"
    VIOLATION = "VIOLATION"
    KERNEL_BUG = "KERNEL-BUG"
    HANG = "HANG"
    INFRA_ERROR = "INFRA-ERROR"

    @property
    def severity(self) -> int:
        """Rank in the precedence order: higher is more severe, PASS is 0."""
        return _SEVERITY[self]

    @property
    def passed(self) -> bool:
        return self is Verdict.PASS

    @classmethod
    def parse(cls, text: str) -> Verdict:
        """Accept the value ("KERNEL-BUG") or the name ("kernel_bug"), any case."""
        key = text.strip().upper()
        for verdict in cls:
            if key in (verdict.value, verdict.name):
                return verdict
        raise ValueError(f"unknown verdict {text!r}; expected one of "
                         + ", ".join(v.value for v in cls))

    def __str__(self) -> str:
        return self.value


# Kept outside the class so the Enum does not treat it as a member.
_SEVERITY: dict[Verdict, int] = {
    Verdict.PASS: 0,
    Verdict.VIOLATION: 1,
    Verdict.HANG: 2,
    Verdict.INFRA_ERROR: 3,
    Verdict.KERNEL_BUG: 4,
}


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict; INFRA_ERROR when there is none (no evidence)."""
    return max(verdicts, key=lambda v: v.severity, default=Verdict.INFRA_ERROR)
