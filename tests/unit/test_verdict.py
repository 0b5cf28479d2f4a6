"""Verdict precedence and combination."""

from __future__ import annotations

import itertools
import json

import pytest

from lab.oracles.finding import Finding, verdict_of
from lab.verdict import Verdict, combine

V = Verdict
ORDER = [V.PASS, V.VIOLATION, V.HANG, V.INFRA_ERROR, V.KERNEL_BUG]  # least to most severe


def test_values_are_report_spellings() -> None:
    assert [v.value for v in ORDER] == ["PASS", "VIOLATION", "HANG", "INFRA-ERROR", "KERNEL-BUG"]
    assert str(V.KERNEL_BUG) == "KERNEL-BUG"
    assert json.dumps({"v": V.INFRA_ERROR}) == '{"v": "INFRA-ERROR"}'
    assert V("KERNEL-BUG") is V.KERNEL_BUG


def test_severity_order() -> None:
    assert [v.severity for v in ORDER] == sorted(v.severity for v in ORDER)
    assert len({v.severity for v in V}) == len(V)
    assert V.PASS.severity == 0


@pytest.mark.parametrize(("verdicts", "expected"), [
    ([V.PASS], V.PASS),
    ([V.PASS, V.PASS], V.PASS),
    ([V.PASS, V.VIOLATION], V.VIOLATION),
    ([V.VIOLATION, V.HANG], V.HANG),
    ([V.HANG, V.INFRA_ERROR], V.INFRA_ERROR),
    ([V.VIOLATION, V.INFRA_ERROR, V.PASS], V.INFRA_ERROR),
    ([V.INFRA_ERROR, V.KERNEL_BUG], V.KERNEL_BUG),
    ([V.KERNEL_BUG, V.PASS], V.KERNEL_BUG),
])
def test_combine(verdicts: list[Verdict], expected: Verdict) -> None:
    assert combine(verdicts) is expected
    assert combine(reversed(verdicts)) is expected
    assert combine(iter(verdicts)) is expected


def test_combine_never_passes_without_evidence() -> None:
    assert combine([]) is V.INFRA_ERROR
    assert verdict_of([]) is V.INFRA_ERROR


def test_combine_is_the_max_for_every_pair() -> None:
    for a, b in itertools.product(V, repeat=2):
        assert combine([a, b]) is max(a, b, key=lambda v: v.severity)


def test_pass_only_when_all_pass() -> None:
    for v in V:
        assert (combine([V.PASS, v]) is V.PASS) == (v is V.PASS)


@pytest.mark.parametrize("text", ["KERNEL-BUG", "kernel_bug", " Kernel-Bug "])
def test_parse(text: str) -> None:
    assert V.parse(text) is V.KERNEL_BUG


def test_parse_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown verdict"):
        V.parse("OK")


def test_finding_to_dict_round_trip() -> None:
    finding = Finding("fsck", V.VIOLATION, "xfs_repair found 2 problems", {"exit_code": 1})
    data = json.loads(json.dumps(finding.to_dict()))
    assert data == {"oracle": "fsck", "verdict": "VIOLATION",
                    "summary": "xfs_repair found 2 problems", "details": {"exit_code": 1}}
    assert Finding.from_dict(data) == finding


def test_verdict_of_findings() -> None:
    findings = [Finding("persistence", V.PASS, "ok"), Finding("kernel-log", V.KERNEL_BUG, "Oops")]
    assert verdict_of(findings) is V.KERNEL_BUG
    assert Finding("x", V.PASS, "s").details == {}
