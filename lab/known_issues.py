"""Known issues: failures a comparison reports as known, not as regressions.

A TOML file of [[issue]] tables:

    [[issue]]
    scenario = "mapsync*"          # glob on the scenario name (default "*")
    cell = "fs=xfs,*"              # glob on the cell key (required)
    kernel_min = "6.1"             # first affected kernel, inclusive (default: any)
    fixed_in = "6.1.0-15"          # first fixed kernel, exclusive (default: not fixed)
    reason = "XFS loses the last extent after a cut during unwritten conversion"
    link = "https://bugzilla.example/123"
    intermittent = true            # also covers a cell that is only sometimes failing (flaky)

Kernel versions compare by their runs of digits: 6.1.0-13-amd64 is (6, 1, 0, 13).
An issue whose fixed_in the candidate kernel has reached is "expired": reported, never applied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lab.tomlfile import load_model


def kernel_key(version: str) -> tuple[int, ...]:
    return tuple(int(d) for d in re.findall(r"\d+", version))


class _IssueModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scenario: str = "*"
    cell: str = Field(min_length=1)
    kernel_min: str | None = None
    fixed_in: str | None = None
    reason: str = Field(min_length=1)
    link: str | None = None
    intermittent: bool = False


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    issue: list[_IssueModel] = Field(default_factory=list)


@dataclass(frozen=True)
class KnownIssue:
    cell: str
    reason: str
    scenario: str = "*"
    kernel_min: str | None = None
    fixed_in: str | None = None
    link: str | None = None
    intermittent: bool = False

    @property
    def where(self) -> str:
        span = f"{self.kernel_min or ''}..{self.fixed_in or ''}"
        return f"{self.scenario}/{self.cell} [{span}]"

    def covers_cell(self, scenario: str, cell_key: str) -> bool:
        return fnmatchcase(scenario, self.scenario) and fnmatchcase(cell_key, self.cell)

    def in_range(self, kernel: str) -> bool:
        k = kernel_key(kernel)
        if self.kernel_min is not None and k < kernel_key(self.kernel_min):
            return False
        return not self.is_past(kernel)

    def is_past(self, kernel: str) -> bool:
        return self.fixed_in is not None and kernel_key(kernel) >= kernel_key(self.fixed_in)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "cell": self.cell, "kernel_min": self.kernel_min,
                "fixed_in": self.fixed_in, "reason": self.reason, "link": self.link,
                "intermittent": self.intermittent}


@dataclass(frozen=True)
class KnownIssues:
    issues: tuple[KnownIssue, ...]

    def match(self, scenario: str, cell_key: str, kernel: str, *, flaky: bool) -> KnownIssue | None:
        """The first issue covering this failing cell on this kernel; a flaky cell needs an intermittent one."""
        for issue in self.issues:
            if issue.covers_cell(scenario, cell_key) and issue.in_range(kernel) and (issue.intermittent or not flaky):
                return issue
        return None

    def expired(self, scenario: str, cell_keys: Sequence[str], kernel: str) -> list[KnownIssue]:
        return [i for i in self.issues
                if i.is_past(kernel) and any(i.covers_cell(scenario, key) for key in cell_keys)]


def load_known_issues(path: Path) -> KnownIssues:
    """Parse and validate; any problem is a ConfigError naming the file and the field."""
    model = load_model(path, _FileModel, "the known-issues file")
    return KnownIssues(tuple(KnownIssue(**m.model_dump()) for m in model.issue))
