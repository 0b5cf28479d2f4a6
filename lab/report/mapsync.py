"""Terminal rendering of a MAP_SYNC power-cut check."""

from __future__ import annotations

from lab.oracles.persistence import format_indices
from lab.power_cut import POWER_CUT_MODEL
from lab.runner.guest_run import WorkloadResult
from lab.ui import UI
from lab.verdict import Verdict

_STYLE = {Verdict.PASS: "green", Verdict.VIOLATION: "red", Verdict.KERNEL_BUG: "magenta",
          Verdict.HANG: "yellow", Verdict.INFRA_ERROR: "yellow"}


def render_result(ui: UI, result: WorkloadResult) -> None:
    check, metrics = result.check, result.metrics
    params = check.get("params", {})
    cut = metrics.get("cut") or {}
    style = _STYLE[result.verdict]
    ui.info(f"[bold {style}]{result.verdict.value}[/bold {style}]  {check.get('fs')} dax={check.get('dax')} "
            f"MAP_SYNC={'on' if params.get('map_sync', True) else 'off'} flush={params.get('flush', 'auto')}"
            f"{'' if params.get('fence', True) else ' (no fence)'} model={check.get('persistence', 'eadr')} "
            f"cut {cut.get('trigger_text', '-')}")
    adr = metrics.get("crash_state")
    if adr:
        states = ", ".join(f"{s['id']}" + (f" {s['verdict']}" if "verdict" in s else "") for s in adr["states"])
        ui.info(f"ADR at the cut: {adr['unpersisted_lines']} unpersisted lines ({adr['unpersisted_stores']} stores); "
                f"crash states judged: {states}")
    mmap = metrics.get("mmap") or {}
    if mmap and not mmap.get("ok", True):
        ui.info(f"mmap: failed with {mmap.get('errno')}")
    persistence = metrics.get("persistence")
    if persistence is not None:
        lost = format_indices(persistence["lost"]) if persistence["lost"] else "none"
        fsck_clean = (metrics.get("recovery") or {}).get("fsck_clean")
        ui.info(f"acked before the cut: {metrics.get('acked')}   survived: {persistence['survived']}   lost: {lost}   "
                f"corrupt: {len(persistence['corrupt'])}   fsck clean: {fsck_clean}")
    rows = [[f.oracle, f.verdict.value, f.summary] for f in result.findings]
    ui.table("findings", ["oracle", "verdict", "summary"], rows, literal=True)  # summaries are text
    ui.info("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    if result.error:
        ui.info(f"error: {result.error}")
    ui.info(f"[dim]{POWER_CUT_MODEL}[/dim]")
    ui.info(f"run directory: {result.run_dir}")
