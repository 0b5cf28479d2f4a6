"""[crash]: the crash strategies, each a model that turns one case group into its crash points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar, Literal, Self, Union

from pydantic import AfterValidator, Field, model_validator

from lab.crash.point import CrashPoint
from lab.scenario.fields import Strict, distinct

SeedFor = Callable[[int], int]  # crash point index -> the case seed


def _acks_only(acks: int) -> str:
    return f"the workload acknowledges {f'0..{acks - 1}' if acks else 'nothing'}"


class _Strategy(Strict):
    needs_acks: ClassVar[bool] = True  # its crash points are ACK indices (the kind must have ack_count)
    # How many of a cell's crash points one workload run may serve (freeze, capture, cont, go on to
    # the next); None: all of them. 1 gives every crash point its own workload run.
    cuts_per_run: int | None = Field(default=None, ge=1)
    # Cells with persistence = "adr": crash states judged at each cut beyond adr:drop-all (all
    # subsets of the unpersisted lines when there are at most 4, else seeded random ones).
    adr_states: int = Field(default=0, ge=0, le=64)
    # Only this one of those states (0: adr:drop-all, k: adr:subset-k): an exported ADR case.
    adr_state: int | None = Field(default=None, ge=0, le=64)

    @model_validator(mode="after")
    def _state_in_range(self) -> Self:
        if self.adr_state is not None and self.adr_state > self.adr_states:
            raise ValueError(f"adr_state {self.adr_state} is beyond adr_states = {self.adr_states} "
                             f"(0..{self.adr_states})")
        return self

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        """The crash points of one case group; `acks`: how many ACKs the workload emits (0 without ack_count)."""
        raise NotImplementedError

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        """(field, message) for crash points the workload never reaches with `acks` ACKs."""
        return []


class AfterAck(_Strategy):
    """Cut once, right after the host reads ACK `ack`."""

    strategy: Literal["after_ack"]
    ack: int = Field(ge=0)
    seed: int | None = Field(default=None, ge=0)  # provenance of a random draw (exported random_ack cases)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=self.ack, seed=self.seed)]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        return [("ack", f"ack {self.ack} is never reached ({_acks_only(acks)})")] if self.ack >= acks else []


class AckList(_Strategy):
    """One crash point per listed ACK."""

    strategy: Literal["ack_list"]
    acks: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), AfterValidator(distinct)]

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=ack) for ack in self.acks]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        late = [str(ack) for ack in self.acks if ack >= acks]
        if not late:
            return []
        what = f"ack {late[0]} is" if len(late) == 1 else f"acks {', '.join(late)} are"
        return [("acks", f"{what} never reached ({_acks_only(acks)})")]


class RandomAck(_Strategy):
    """`count` ACK indices drawn from each case's seed."""

    strategy: Literal["random_ack"]
    count: int = Field(ge=1)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint.random_ack(acks, seed_for(index)) for index in range(self.count)]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        return [] if acks else [("count", f"there is no ACK to draw from ({_acks_only(acks)})")]


class EveryNthAck(_Strategy):
    """A crash point after every `every`-th ACK: ACK every-1, 2*every-1, ... below the ACK count."""

    strategy: Literal["every_nth_ack"]
    every: int = Field(ge=1)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=ack) for ack in range(self.every - 1, acks, self.every)]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        if self.every <= acks:
            return []
        return [("every", f"every = {self.every} gives no crash point (the first would be ack {self.every - 1}; "
                          f"{_acks_only(acks)})")]


class TimeOffsets(_Strategy):
    """One crash point per offset, in seconds after the workload started (mapsync: after its mmap succeeded)."""

    needs_acks: ClassVar[bool] = False
    strategy: Literal["time_offsets"]
    seconds: Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=1),
                       AfterValidator(distinct)]

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_seconds=seconds) for seconds in self.seconds]


CrashModel = Union[AfterAck, AckList, RandomAck, EveryNthAck, TimeOffsets]
CrashStrategy = Annotated[CrashModel, Field(discriminator="strategy")]
STRATEGIES: dict[str, type[_Strategy]] = {"after_ack": AfterAck, "ack_list": AckList, "random_ack": RandomAck,
                                          "every_nth_ack": EveryNthAck, "time_offsets": TimeOffsets}
