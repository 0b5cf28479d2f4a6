"""The kernel-log oracle: no kernel problem on any machine's console."""

from __future__ import annotations

from pathlib import Path

from lab.guest.console import KernelProblem, scan_console
from lab.oracles.finding import Finding
from lab.verdict import Verdict


def check_consoles(consoles: dict[str, Path]) -> tuple[Finding, list[dict[str, object]]]:
    """Scan each named console log; any problem makes the finding KERNEL-BUG."""
    problems: list[dict[str, object]] = []
    for machine, path in consoles.items():
        text = path.read_text(errors="replace") if path.exists() else ""
        found: list[KernelProblem] = scan_console(text)
        problems += [{"machine": machine, **p.to_dict()} for p in found]
    if not problems:
        return Finding("kernel-log", Verdict.PASS, f"no kernel problem on {', '.join(consoles)}"), problems
    titles = "; ".join(f"{p['machine']}: {p['title']}" for p in problems[:3])
    return Finding("kernel-log", Verdict.KERNEL_BUG, f"{len(problems)} kernel problem(s): {titles}",
                   {"problems": problems}), problems
