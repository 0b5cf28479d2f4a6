"""Crash points: the instant of the power cut, chosen from workload events or time."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError


@dataclass(frozen=True)
class CrashPoint:
    """Cut after the host reads ACK `after_ack`, or `after_seconds` after the workload starts."""

    after_ack: int | None = None
    after_seconds: float | None = None
    seed: int | None = None  # set when after_ack was drawn at random

    def __post_init__(self) -> None:
        if (self.after_ack is None) == (self.after_seconds is None):
            raise ConfigError("crash point: give exactly one of after_ack or after_seconds")
        if self.after_ack is not None and self.after_ack < 0:
            raise ConfigError(f"crash point: after_ack must be >= 0, got {self.after_ack}")
        if self.after_seconds is not None and self.after_seconds < 0:
            raise ConfigError(f"crash point: after_seconds must be >= 0, got {self.after_seconds}")

    @classmethod
    def random_ack(cls, records: int, seed: int) -> "CrashPoint":
        """A seeded random ACK index in [0, records): same seed, same point."""
        return cls(after_ack=random.Random(seed).randrange(records), seed=seed)

    def validate_for(self, records: int) -> None:
        if self.after_ack is not None and self.after_ack >= records:
            raise ConfigError(f"--cut-after {self.after_ack}: the workload acknowledges records 0..{records - 1}, "
                              f"so the cut point must be below {records}")

    def describe(self) -> str:
        if self.after_ack is not None:
            drawn = f" (drawn with seed {self.seed})" if self.seed is not None else ""
            return f"after ACK {self.after_ack}{drawn}"
        # kinds count from their own start MARK (mapsync: its mmap succeeded; truncrace: "running")
        return f"{self.after_seconds:.3f} s into the workload (from its start mark)"

    def to_dict(self) -> dict[str, Any]:
        return {"after_ack": self.after_ack, "after_seconds": self.after_seconds, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CrashPoint":
        """The inverse of to_dict (absent keys are None)."""
        return cls(after_ack=data.get("after_ack"), after_seconds=data.get("after_seconds"), seed=data.get("seed"))
