"""Bisect a case over an ordered list of images: the first image on which it goes bad.

`images` is ordered oldest to newest (Debian kernel versions, or user kernels built with
`image build --kernel`); `good` and `bad` name two of them, good before bad. Each step runs the
case `times` times on one image and classifies it (`classify`): GOOD (every run met the case's
expectation), BAD (a run gave the failing verdict) or SKIP (the lab failed: INFRA-ERROR, or the
image could not be used). A skipped image is stepped around, as `git bisect skip` does: the
answer is then a range. The search is pure; `Probe` runs the case on one image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Sequence

from lab.errors import ConfigError
from lab.verdict import Verdict


class Outcome(str, Enum):
    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"


EXIT_CODES = {Outcome.GOOD: 0, Outcome.BAD: 1, Outcome.SKIP: 125}  # `git bisect run`'s convention

Probe = Callable[[str], Sequence[Verdict]]  # image -> the verdicts of `times` runs on it


def classify(verdicts: Sequence[Verdict], expect: Verdict) -> Outcome:
    """Any lab failure: SKIP (nothing can be claimed); else any verdict other than the expected one: BAD."""
    if not verdicts or any(v is Verdict.INFRA_ERROR for v in verdicts):
        return Outcome.SKIP
    return Outcome.GOOD if all(v is expect for v in verdicts) else Outcome.BAD


@dataclass(frozen=True)
class BisectStep:
    image: str
    verdicts: tuple[str, ...]
    outcome: Outcome
    seconds: float


@dataclass
class Bisection:
    images: tuple[str, ...]
    first_bad: str | None = None  # None: interrupted, or skips left a range
    candidates: tuple[str, ...] = ()  # the images the first bad one is among (one when found)
    steps: list[BisectStep] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"images": list(self.images), "first_bad": self.first_bad, "candidates": list(self.candidates),
                "seconds": round(self.seconds, 2),
                "steps": [{"image": s.image, "verdicts": list(s.verdicts), "outcome": s.outcome.value,
                           "seconds": round(s.seconds, 2)} for s in self.steps]}


def bisect(images: Sequence[str], good: str, bad: str, expect: Verdict, probe: Probe,
           progress: Callable[[str], None] = lambda _: None, verify_ends: bool = True) -> Bisection:
    """The first bad image between `good` and `bad` in `images`. With `verify_ends`, the two ends
    are run first and must be good and bad; otherwise ConfigError says which is not."""
    order = list(images)
    for name in (good, bad):
        if name not in order:
            raise ConfigError(f"--good/--bad {name!r} is not in --images ({', '.join(order)})")
    lo, hi = order.index(good), order.index(bad)
    if lo >= hi:
        raise ConfigError(f"--good {good} must come before --bad {bad} in --images")
    result = Bisection(tuple(order))
    started = time.monotonic()

    def run(index: int) -> Outcome:
        begun = time.monotonic()
        verdicts = tuple(probe(order[index]))
        outcome = classify(verdicts, expect)
        result.steps.append(BisectStep(order[index], tuple(v.value for v in verdicts), outcome,
                                       time.monotonic() - begun))
        progress(f"step {len(result.steps)}: {order[index]}: {', '.join(v.value for v in verdicts)} -> "
                 f"{outcome.value} ({result.steps[-1].seconds:.1f} s)")
        return outcome

    try:
        if verify_ends:
            for index, want in ((lo, Outcome.GOOD), (hi, Outcome.BAD)):
                got = run(index)
                if got is not want:
                    raise ConfigError(f"the case is {got.value} on {order[index]}, which was given as "
                                      f"{want.value}: nothing to bisect")
        skipped: set[int] = set()
        while True:
            middle = [i for i in range(lo + 1, hi) if i not in skipped]
            if not middle:
                break
            index = middle[len(middle) // 2]
            outcome = run(index)
            if outcome is Outcome.GOOD:
                lo = index
            elif outcome is Outcome.BAD:
                hi = index
            else:
                skipped.add(index)
    except KeyboardInterrupt:
        pass
    else:
        between = [order[i] for i in range(lo + 1, hi + 1)]
        result.candidates = tuple(between)
        result.first_bad = between[0] if len(between) == 1 else None
    result.seconds = time.monotonic() - started
    return result
