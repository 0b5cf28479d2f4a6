"""Terminal rendering of a MAP_SYNC power-cut check."""

from __future__ import annotations

from lab.crash.mapsync_check import CheckResult
from lab.oracles.persistence import format_indices
from lab.ui import UI
from lab.verdict import Verdict

_STYLE = {Verdict.PASS: "green", Verdict.VIOLATION: "red", Verdict.KERNEL_BUG: "magenta",
          Verdict.HANG: "yellow", Verdict.INFRA_ERROR: "yellow"}

POWER_CUT_MODEL = ("power-cut model: vCPUs frozen (QMP stop), NVDIMM backing file captured, machine destroyed; "
                   "guest RAM is lost. No CPU cache is modelled (eADR semantics): missing flushes are not visible.")


def render_result(ui: UI, result: CheckResult) -> None:
    data = result.to_dict()
    style = _STYLE[result.verdict]
    ui.info(f"[bold {style}]{result.verdict.value}[/bold {style}]  {data['fs']} dax={data['dax']} "
            f"MAP_SYNC={'on' if data['map_sync'] else 'off'} cut {data['crash_point_text']}")
    if data["mmap"] and not data["mmap"].get("ok", True):
        ui.info(f"mmap: failed with {data['mmap'].get('errno')}")
    if result.cut is not None:
        lost = format_indices(result.lost) if result.lost else "none"
        ui.info(f"acked before the cut: {data['acked']}   survived: {data['survived']}   lost: {lost}   "
                f"corrupt: {len(result.corrupt)}   fsck clean: {data['fsck_clean']}")
    rows = [[f.oracle, f.verdict.value, f.summary] for f in result.findings]
    ui.table("findings", ["oracle", "verdict", "summary"], rows)
    ui.info("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    if result.error:
        ui.info(f"error: {result.error}")
    ui.info(f"[dim]{POWER_CUT_MODEL}[/dim]")
    ui.info(f"run directory: {result.run_dir}")
