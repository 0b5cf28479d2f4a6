"""JUnit XML for CI: one testsuite per campaign, one testcase per case.

A case whose verdict met its expectation passes (even INFRA-ERROR, when that
was the expectation). An unexpected INFRA-ERROR is an <error> (the lab failed,
the kernel was not judged); any other unmet expectation is a <failure>; a case
that never finished is <skipped>.

With a comparison (lab/compare.py), CI fails on what changed: only the cases of a regression or a new
failure are <failure>s; a case of a cell still failing, known or flaky is <skipped> with that reason
(visible, not red), and each testcase carries its cell's change class as a property.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from lab.power_cut import POWER_CUT_MODEL
from lab.store.records import CampaignRecord, CaseRecord, iso
from lab.verdict import Verdict

if TYPE_CHECKING:
    from lab.compare import Comparison

INFRA = Verdict.INFRA_ERROR.value
# Characters XML 1.0 cannot carry at all (console logs do contain them): dropped.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


_ACCOUNTED_FOR = {"still failing", "known", "flaky"}  # compare's Change values a skip may carry


def _clean(value: object) -> str:
    return _INVALID.sub("", "" if value is None else str(value))


def case_name(case: CaseRecord) -> str:
    """Stable across campaigns of one scenario: CI tools track tests by name."""
    state = f" state={case.crash_state}" if case.crash_state else ""
    return f"{case.cell_key} repeat={case.repeat} crash={case.crash_index}{state}"


def case_seconds(case: CaseRecord) -> float:
    latest = case.latest
    if latest is None:
        return 0.0
    timings = latest.timings or (latest.result or {}).get("timings") or {}
    try:
        return float(timings.get("total", 0.0))
    except (TypeError, ValueError):
        return 0.0


def findings_text(case: CaseRecord) -> str:
    latest = case.latest
    if latest is None:
        return ""
    lines = [f"{f.oracle}: {f.verdict} {f.summary}" for f in latest.findings]
    if latest.error:
        lines.append(f"error: {latest.error}")
    if latest.run_dir:
        lines.append(f"run directory: {latest.run_dir}")
    return "\n".join(lines)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text:
        element.text = _clean(text)
    return element


def write_junit(path: str | Path, campaign: CampaignRecord, comparison: Comparison | None = None) -> Path:
    changes = {c.cell_key: c for c in comparison.cells} if comparison is not None else {}
    scenario = campaign.scenario_name or "scenario"
    counts = {"tests": len(campaign.cases), "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    root = ET.Element("testsuites", {"name": "pmemlab"})
    suite = _sub(root, "testsuite", name=scenario, id=campaign.id, timestamp=iso(campaign.created_at))
    props = _sub(suite, "properties")
    for key, value in (("id", campaign.id), ("scenario_path", campaign.scenario_path),
                       ("scenario_hash", campaign.scenario_hash), ("image_id", campaign.image_id),
                       ("kernel_version", campaign.kernel_version), ("accelerator", campaign.accelerator),
                       ("jobs", campaign.jobs), ("status", campaign.status)):
        _sub(props, "property", name=f"campaign.{key}", value=value)
    _sub(props, "property", name="power_cut_model", value=POWER_CUT_MODEL)
    if comparison is not None:
        _sub(props, "property", name="baseline.id", value=comparison.baseline.id)
        _sub(props, "property", name="baseline.kernel_version", value=comparison.baseline.kernel_version)

    for case in sorted(campaign.cases, key=lambda c: c.position):
        seconds = case_seconds(case)
        total_time += seconds
        testcase = _sub(suite, "testcase", name=case_name(case), classname=f"pmemlab.{scenario}",
                        time=f"{seconds:.3f}")
        verdict, expect = case.verdict, case.expect
        text = findings_text(case)
        cell = changes.get(case.cell_key)
        if cell is not None:
            _sub(_sub(testcase, "properties"), "property", name="change", value=cell.change.value)
        # Only failures the comparison already accounts for are skipped; an INFRA-ERROR never is (the lab
        # failed: CI must see an error), nor a failure in a cell that merely appeared.
        if (cell is not None and case.finished and not case.met_expectation and verdict != INFRA
                and cell.change.value in _ACCOUNTED_FOR):
            counts["skipped"] += 1
            why = f"{cell.change.value}" + (f" (known issue: {cell.known.reason})" if cell.known else "")
            _sub(testcase, "skipped", text, message=f"{why}, not a regression: expected {expect}, got {verdict}")
        elif not case.finished:
            counts["skipped"] += 1
            _sub(testcase, "skipped", message=f"not finished (status {case.status})")
        elif case.met_expectation:
            pass
        elif verdict == INFRA:
            counts["errors"] += 1
            error = case.latest.error if case.latest else None
            _sub(testcase, "error", text, message=f"expected {expect}, got {verdict}: {error or ''}".rstrip(": "),
                 type=verdict)
        else:
            counts["failures"] += 1
            what = f"{cell.change.value}: " if cell is not None else ""
            base = next((c.baseline for c in cell.cases if c.case_id == case.id), None) if cell else None
            since = f" (baseline {base})" if base else ""
            _sub(testcase, "failure", text, message=f"{what}expected {expect}, got {verdict}{since}", type=verdict)
        _sub(testcase, "system-out", f"case {case.id} seed {case.seed} infra retries {case.infra_retries}\n{text}")

    for element in (root, suite):
        for key, value in counts.items():
            element.set(key, str(value))
        element.set("time", f"{total_time:.3f}")
    ET.indent(root)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out
