"""JUnit XML for CI: one testsuite per campaign, one testcase per case.

A case whose verdict met its expectation passes (even INFRA-ERROR, when that
was the expectation). An unexpected INFRA-ERROR is an <error> (the lab failed,
the kernel was not judged); any other unmet expectation is a <failure>; a case
that never finished is <skipped>.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from lab.report.campaign import POWER_CUT_MODEL, latest_attempt
from lab.verdict import Verdict

INFRA = Verdict.INFRA_ERROR.value
# Characters XML 1.0 cannot carry at all (console logs do contain them): dropped.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: object) -> str:
    return _INVALID.sub("", str(value))


def case_name(case: dict[str, Any]) -> str:
    """Stable across campaigns of one scenario: CI tools track tests by name."""
    return f"{case.get('cell_key')} repeat={case.get('repeat')} crash={case.get('crash_index')}"


def case_seconds(case: dict[str, Any]) -> float:
    latest = latest_attempt(case) or {}
    timings = latest.get("timings") or (latest.get("result") or {}).get("timings") or {}
    try:
        return float(timings.get("total", 0.0))
    except (TypeError, ValueError):
        return 0.0


def findings_text(case: dict[str, Any]) -> str:
    latest = latest_attempt(case) or {}
    lines = [f"{f.get('oracle')}: {f.get('verdict')} {f.get('summary')}" for f in latest.get("findings") or []]
    if latest.get("error"):
        lines.append(f"error: {latest['error']}")
    if latest.get("run_dir"):
        lines.append(f"run directory: {latest['run_dir']}")
    return "\n".join(lines)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text:
        element.text = _clean(text)
    return element


def write_junit(path: str | Path, campaign: dict[str, Any], cases: list[dict[str, Any]]) -> Path:
    scenario = str(campaign.get("scenario_name") or "scenario")
    counts = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    root = ET.Element("testsuites", {"name": "pmemlab"})
    suite = _sub(root, "testsuite", name=scenario, id=campaign.get("id", ""),
                 timestamp=campaign.get("created_at") or "")
    props = _sub(suite, "properties")
    for key in ("id", "scenario_path", "scenario_hash", "image_id", "kernel_version", "accelerator", "jobs",
                "status"):
        _sub(props, "property", name=f"campaign.{key}", value=campaign.get(key, ""))
    _sub(props, "property", name="power_cut_model", value=POWER_CUT_MODEL)

    for case in sorted(cases, key=lambda c: int(c.get("position") or 0)):
        seconds = case_seconds(case)
        total_time += seconds
        testcase = _sub(suite, "testcase", name=case_name(case), classname=f"pmemlab.{scenario}",
                        time=f"{seconds:.3f}")
        verdict, expect = case.get("verdict"), case.get("expect")
        text = findings_text(case)
        if case.get("status") != "finished" or verdict is None:
            counts["skipped"] += 1
            _sub(testcase, "skipped", message=f"not finished (status {case.get('status')})")
        elif case.get("met_expectation"):
            pass
        elif verdict == INFRA:
            counts["errors"] += 1
            latest = latest_attempt(case) or {}
            _sub(testcase, "error", text, message=f"expected {expect}, got {verdict}: {latest.get('error') or ''}"
                 .rstrip(": "), type=verdict)
        else:
            counts["failures"] += 1
            _sub(testcase, "failure", text, message=f"expected {expect}, got {verdict}", type=verdict)
        _sub(testcase, "system-out", f"case {case.get('id')} seed {case.get('seed')} "
                                     f"infra retries {case.get('infra_retries', 0)}\n{text}")

    for element in (root, suite):
        for key, value in counts.items():
            element.set(key, str(value))
        element.set("time", f"{total_time:.3f}")
    ET.indent(root)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out
