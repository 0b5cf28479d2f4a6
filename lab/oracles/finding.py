"""Finding: one oracle's conclusion about a recovered state.

Every oracle returns Findings; the case verdict is ``combine()`` over their
verdicts (see lab.verdict). ``details`` must stay JSON-able because findings
are stored and rendered as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.verdict import Verdict, combine


@dataclass(frozen=True)
class Finding:
    """oracle: who judged ('persistence', 'fsck', 'kernel-log', ...)."""

    oracle: str
    verdict: Verdict
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "oracle": self.oracle,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(oracle=str(data["oracle"]),
                   verdict=Verdict.parse(str(data["verdict"])),
                   summary=str(data["summary"]),
                   details=dict(data.get("details") or {}))


def verdict_of(findings: list[Finding]) -> Verdict:
    """Case verdict from its findings; no findings is INFRA-ERROR."""
    return combine(f.verdict for f in findings)
