"""ninep-mmap, host side: pattern, outcomes, judgement, params and checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.workloads import ninep_mmap as nm
from lab.workloads.base import CheckSpec
from lab.workloads.catalog import get_kind


def test_pattern_matches_the_helper() -> None:
    # ninepmmap write --seed 1 --size 16, as printed by the helper's read
    assert nm.pattern(1, 16).hex() == "838a91989fa6adb4bbc2c9d0d7dee5ec"
    a, b = nm.pattern(5, 8192), nm.pattern(6, 8192)
    assert len(a) == 8192 and all(x != y for x, y in zip(a, b)), "consecutive seeds differ in every byte"


def test_first_mismatch() -> None:
    assert nm.first_mismatch(b"abc", b"abc") is None
    assert nm.first_mismatch(b"abd", b"abc") == 2
    assert nm.first_mismatch(b"ab", b"abc") == 2
    assert nm.first_mismatch(b"", b"abc") == 0


@pytest.mark.parametrize(("write", "mismatch", "outcome"), [
    ({"mmap_errno": "EINVAL", "msync_errno": None}, 0, "refused"),
    ({"mmap_errno": None, "msync_errno": "EIO"}, 0, "accepted-msync-failed"),
    ({"mmap_errno": None, "msync_errno": None}, None, "accepted-visible"),
    ({"mmap_errno": None, "msync_errno": None}, 100, "accepted-not-visible"),
])
def test_write_outcome(write: dict[str, Any], mismatch: int | None, outcome: str) -> None:
    assert nm.write_outcome(write, mismatch) == outcome
    assert outcome in nm.WRITE_OUTCOMES


def test_read_outcome() -> None:
    want = nm.pattern(2, 32)
    assert nm.read_outcome({"mmap_errno": None, "hex": want.hex()}, want) == "sees-host"
    assert nm.read_outcome({"mmap_errno": None, "hex": nm.pattern(1, 32).hex()}, want) == "stale"
    assert nm.read_outcome({"mmap_errno": "EINVAL", "hex": None}, want) == "refused"


def metrics(cache: str, wrote: str, rw: str = "sees-host", r: str = "sees-host") -> dict[str, Any]:
    return {"cache": cache, "writable_shared_mmap": wrote,
            "writable_shared_mmap_errno": "EINVAL" if wrote == "refused" else None,
            "guest_sees_host": {"rw": rw, "r": r}}


def test_cache_mmap_both_ways_is_a_pass() -> None:
    [finding] = nm.judge("mmap", metrics("mmap", "accepted-visible"))
    assert finding.verdict is Verdict.PASS and "both ways" in finding.summary
    json.dumps(finding.to_dict())


@pytest.mark.parametrize(("wrote", "rw", "r"), [
    ("accepted-not-visible", "sees-host", "sees-host"),  # msync'd bytes lost on the way to the host
    ("refused", "refused", "sees-host"),  # cache=mmap must allow writable shared mappings
    ("accepted-msync-failed", "sees-host", "sees-host"),
    ("accepted-visible", "stale", "sees-host"),  # a fresh mapping kept the guest's old bytes
    ("accepted-visible", "sees-host", "stale"),
])
def test_cache_mmap_anything_less_is_a_violation(wrote: str, rw: str, r: str) -> None:
    [finding] = nm.judge("mmap", metrics("mmap", wrote, rw, r))
    assert finding.verdict is Verdict.VIOLATION
    assert finding.details["writable_shared_mmap"] == wrote


def test_cache_none_is_recorded_as_information() -> None:
    [finding] = nm.judge("none", metrics("none", "refused", "refused", "sees-host"))
    assert finding.verdict is Verdict.PASS and finding.oracle == "ninep-cache-none"
    assert "refused (EINVAL)" in finding.summary and "informational" in finding.summary
    [finding] = nm.judge("none", metrics("none", "accepted-visible"))
    assert finding.verdict is Verdict.PASS


def test_cache_none_msync_that_lies_is_a_violation() -> None:
    [finding] = nm.judge("none", metrics("none", "accepted-not-visible"))
    assert finding.verdict is Verdict.VIOLATION and "msync" in finding.summary


def test_params() -> None:
    assert nm.NinepMmapParams() == nm.NinepMmapParams(cache="mmap", size=8192)
    for bad in ({"cache": "loose"}, {"size": 0}, {"size": nm.MAX_SIZE + 1}, {"caches": ["mmap"]}):
        with pytest.raises(ValidationError):
            nm.NinepMmapParams(**bad)


def test_check_round_trip_and_make_check() -> None:
    kind = get_kind("ninep-mmap")
    assert kind is nm.KIND and kind.uses_crash is False
    spec = CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, nm.NinepMmapParams(cache="none", size=4096), None,
                     MachineShape(), seed=1234)
    check = kind.make_check(spec)
    assert check.guest_seed == 235 and check.host_seed == 236
    data = json.loads(json.dumps(check.to_dict()))
    assert kind.check_from_dict(data) == check and data["params"] == {"cache": "none", "size": 4096}
    with pytest.raises(ConfigError):
        kind.make_check(CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, nm.NinepMmapParams(), CrashPoint(after_ack=1),
                                  MachineShape(), 0))
    with pytest.raises(ConfigError):
        kind.check_from_dict({"params": {"cache": "sometimes"}})
