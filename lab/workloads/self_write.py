"""write-from-own-mapping: write(2) whose source buffer is a mapping of the file being written.

The kernel must fault the source pages in while it is in the middle of
writing the same file. On the page cache path (dax=never) that is the case
write_begin/write_end were designed around (Linux 2.6.24, "fs: introduce
write_begin, write_end, and perform_write aops"): the source page may be the
very page write_begin has locked and not yet brought up to date, so the
source is faulted in *before* write_begin and the copy runs with page faults
disabled, retrying shorter when it copies nothing - get it wrong and the
write deadlocks on its own page lock or livelocks. On DAX (dax=always) there
is no page cache page: the fault on the source runs under the filesystem's
write locks (i_rwsem; XFS's iolock vs mmaplock, ext4's invalidate lock).

The helper (images/guest/selfwrite.c) runs a fixed list of patterns - the
same page, overlapping and disjoint ranges, holes, an extending write, each
from a fresh MAP_SHARED mapping whose pages were never touched - and
compares each result with the same copy done through a malloc buffer on a
second identical file. Verdicts: a write that does not finish before the
deadline is HANG; a short or failed write, or content that matches neither
reference, is VIOLATION naming the pattern; a kernel problem on the console
is KERNEL-BUG (run_guarded's kernel-log oracle); otherwise PASS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lab.errors import AgentTimeout, ConfigError
from lab.guest.agent import CommandResult
from lab.guest.pmem import DaxMode
from lab.image.cache import Image
from lab.markup import e, table
from lab.oracles.finding import Finding
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.workloads.base import CheckSpec, WorkloadKind, json_lines, params_as, stderr_tail
from lab.runner.check import BaseCheck
from lab.runner.guest_run import GuestRun, RunHooks, WorkloadResult, run_guarded

if TYPE_CHECKING:
    from lab.store.records import CaseRecord

NAME = "write-from-own-mapping"
HELPER = "selfwrite"
WORK_DIR = "selfwrite"
BASE_TIMEOUT_S = 120.0  # the whole pattern list; each write takes milliseconds even under TCG
PER_PAGE_S = 0.1


class SelfWriteParams(BaseModel):
    """The [workload]/[matrix] keys of a write-from-own-mapping scenario (besides fs and dax).
    The pattern list is fixed in the helper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_pages: int = Field(default=4, ge=4, le=4096, description="pages of each test file (the last one a hole)")

    def argv(self, directory: str) -> list[str]:
        return [HELPER, "--dir", directory, "--size-pages", str(self.size_pages)]

    def timeout(self) -> float:
        return BASE_TIMEOUT_S + self.size_pages * PER_PAGE_S


@dataclass(frozen=True)
class SelfWriteCheck(BaseCheck):
    """One cell: pure data."""

    params: SelfWriteParams = SelfWriteParams()

    KIND: ClassVar[str] = NAME
    PARAMS: ClassVar[type[BaseModel]] = SelfWriteParams


def check_from_dict(data: dict[str, Any]) -> SelfWriteCheck:
    """The inverse of SelfWriteCheck.to_dict."""
    return SelfWriteCheck.from_dict(data)


def make_check(spec: CheckSpec) -> SelfWriteCheck:
    if spec.crash is not None:
        raise ConfigError(f"the {NAME} workload does not cut the power: remove the [crash] section")
    params = params_as(SelfWriteParams, spec.params)
    return SelfWriteCheck(spec.fs, spec.dax, params, shape=spec.shape, seed=spec.seed)


# -- judging the helper's output (pure) ------------------------------------------------------

def describe_failure(line: dict[str, Any]) -> str:
    """Why one pattern's line is not ok, in words."""
    name = line.get("pattern")
    where = f"write(2) of {line.get('expected_bytes')} bytes from file offset {line.get('src')} to {line.get('dst')}"
    if line.get("errno"):
        return f"pattern {name}: {where} failed with {line['errno']}"
    if line.get("bytes") != line.get("expected_bytes"):
        return f"pattern {name}: {where} wrote {line.get('bytes')} bytes"
    at, in_order = line.get("mismatch_at"), line.get("in_order_mismatch_at")
    byte = f" (byte {line['got']}, reference {line['want']})" if "got" in line and "want" in line else ""
    other = f"; from the in-order reference at offset {in_order}" if in_order not in (None, at) else ""
    return (f"pattern {name}: after {where} the file differs from the reference copy (through a separate "
            f"buffer) at offset {at}{byte}{other}")


def judge(outcome: CommandResult, timeout: float, dax: DaxMode) -> tuple[list[Finding], dict[str, Any]]:
    """Findings and metrics from one `selfwrite` run."""
    lines = json_lines(outcome.stdout)
    start = next((d for d in lines if d.get("event") == "start"), None)
    results = [d for d in lines if "pattern" in d and "event" not in d]
    begun = [str(d.get("pattern")) for d in lines if d.get("event") == "begin"]
    reported = {str(d.get("pattern")) for d in results}
    expected = [str(p) for p in start.get("patterns", [])] if start else []
    pending = [p for p in begun if p not in reported]
    metrics: dict[str, Any] = {"file_dax": start.get("dax") if start else None,
                               "size_pages": start.get("size_pages") if start else None,
                               "patterns": results, "expected_patterns": expected}
    findings = [Finding("content", Verdict.VIOLATION, describe_failure(d), d) for d in results if not d.get("ok")]
    if outcome.timed_out:
        where = f"pattern {pending[0]}" if pending else "before any pattern began"
        findings.insert(0, Finding("deadline", Verdict.HANG,
                                   f"write(2) from a mapping of the same file did not complete within {timeout:g} s: "
                                   f"{where} ({len(reported)} of {len(expected) or '?'} patterns done)",
                                   {"pending": pending, "stderr": stderr_tail(outcome.stderr)}))
        return findings, metrics
    if outcome.signal and pending:
        findings.append(Finding("content", Verdict.VIOLATION,
                                f"pattern {pending[0]}: the writer was killed by signal {outcome.signal} "
                                "during write(2) from its own mapping", {"stderr": stderr_tail(outcome.stderr)}))
        return findings, metrics
    missing = [p for p in expected if p not in reported]
    if start is None or missing or outcome.exit_code not in (0, 1) or outcome.signal:
        findings.append(Finding("lab", Verdict.INFRA_ERROR,
                                f"{HELPER} {outcome.describe()} before reporting every pattern"
                                + (f" (missing: {', '.join(missing)})" if missing else ""),
                                {"stderr": stderr_tail(outcome.stderr)}))
        return findings, metrics
    want_dax = dax is DaxMode.ALWAYS
    if dax in (DaxMode.ALWAYS, DaxMode.NEVER) and start.get("dax") is not None and start["dax"] != want_dax:
        findings.append(Finding("lab", Verdict.INFRA_ERROR,
                                f"the test files are {'' if start['dax'] else 'not '}DAX on a dax={dax.value} "
                                "mount: the cell did not test what it names"))
    if not findings:
        findings.append(Finding("content", Verdict.PASS,
                                f"{len(results)} patterns: every write(2) from a mapping of the same file "
                                f"completed and matched the reference ({'DAX' if start.get('dax') else 'page cache'})",
                                {"matches": {str(d["pattern"]): d.get("matches") for d in results}}))
    return findings, metrics


# -- the campaign page's section ---------------------------------------------------------------

def _cell_name(result: Mapping[str, Any]) -> str:
    check = result.get("check") or {}
    return f"{check.get('fs')} dax={check.get('dax')}"


def _pattern_text(line: Mapping[str, Any]) -> str:
    if line.get("ok"):
        return f"ok ({line.get('matches')}, {float(line.get('write_us') or 0):.0f} us)"
    if line.get("errno"):
        return f"FAILED: {line['errno']}"
    if line.get("bytes") != line.get("expected_bytes"):
        return f"SHORT: {line.get('bytes')} of {line.get('expected_bytes')} bytes"
    return f"MISMATCH at {line.get('mismatch_at')}"


def render_html(cases: Sequence[CaseRecord], out_dir: Path) -> str:
    """One table: a row per pattern, a column per cell (fs, dax), how each write came out."""
    del out_dir  # nothing to write beside the page
    results = [c.latest.result for c in cases if c.latest is not None and isinstance(c.latest.result, Mapping)]
    cells = sorted({_cell_name(r) for r in results})
    outcome: dict[str, dict[str, str]] = {}
    for result in results:
        metrics = result.get("metrics") or {}
        for line in metrics.get("patterns") or []:
            outcome.setdefault(str(line.get("pattern")), {})[_cell_name(result)] = _pattern_text(line)
        done = {str(d.get("pattern")) for d in metrics.get("patterns") or []}
        for name in metrics.get("expected_patterns") or []:
            if name not in done:
                outcome.setdefault(str(name), {})[_cell_name(result)] = f"not finished ({result.get('verdict')})"
    intro = ("write(2) from a fresh MAP_SHARED mapping of the file being written, source pages not faulted in "
             "(unless the pattern says warm); each result compared with the same copy through a separate buffer "
             "(snapshot), or for a forward overlap an in-order copy.")
    if not outcome:
        return f"<h2>write from own mapping</h2><p>{e(intro)}</p><p>No pattern results.</p>"
    rows = [[name, *(outcome[name].get(cell, "-") for cell in cells)] for name in outcome]
    return f"<h2>write from own mapping</h2><p>{e(intro)}</p>{table(['pattern', *cells], rows)}"


# -- running ---------------------------------------------------------------------------------

def run(check: SelfWriteCheck, image: Image, accel: AccelVerdict, run_dir: Path,
        hooks: RunHooks) -> WorkloadResult:
    guest = GuestRun(NAME, check, image, accel, run_dir, hooks)
    params, timeout = check.params, check.params.timeout()

    def body(g: GuestRun) -> list[Finding]:
        with g.pmem_machine(check.fs, check.dax) as (machine, mnt):
            directory = f"{mnt.mountpoint}/{WORK_DIR}"
            machine.run(["mkdir", "-p", directory], timeout=10, check=True)
            hooks.progress(f"write(2) from own mapping, {params.size_pages}-page files, dax={check.dax.value}")
            with g.phase("workload"):
                handle = machine.agent.start(params.argv(directory), timeout=timeout)
                try:
                    outcome = handle.wait()
                except AgentTimeout as exc:  # not even the agent answered: name the pattern anyway
                    begun = [d.get("pattern") for d in json_lines(handle.output()[0]) if d.get("event") == "begin"]
                    raise AgentTimeout(f"{exc}; last pattern begun: {begun[-1] if begun else 'none'}") from None
            (g.run_dir / "selfwrite.out").write_bytes(outcome.stdout)
            findings, metrics = judge(outcome, timeout, check.dax)
            g.result.metrics.update(metrics)
            hang = next((f for f in findings if f.verdict is Verdict.HANG), None)
            if hang is not None:  # no polite poweroff on a filesystem that may be deadlocked
                raise AgentTimeout(hang.summary)
        return findings

    return run_guarded(guest, body)


KIND = WorkloadKind(
    name=NAME,
    purpose="write(2) from a mapping of the same file (same page, overlaps, holes, cold source); DAX, page cache",
    params=SelfWriteParams,
    uses_crash=False,
    make_check=make_check,
    check_from_dict=check_from_dict,
    run=run,
    render_html=render_html,
)
