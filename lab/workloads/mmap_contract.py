"""mapsync-contract: what mmap(2) must answer for MAP_SHARED_VALIDATE and MAP_SYNC.

The guest helper (images/guest/mmapcontract.c) makes one mmap call per
probe on a fresh one-page file of the DAX (or not) filesystem and prints
what the kernel answered; the host holds the expected table and compares.

The expected answers, from mmap(2) and the MAP_SHARED_VALIDATE / MAP_SYNC
series (Linux 4.15):

  probe               flags                               DAX file    non-DAX file
  validate-plain      MAP_SHARED_VALIDATE                 success     success
  validate-sync       MAP_SHARED_VALIDATE|MAP_SYNC        success     EOPNOTSUPP
  shared-sync         MAP_SHARED|MAP_SYNC                 success     success (see below)
  validate-undefined  MAP_SHARED_VALIDATE|0x200000        EOPNOTSUPP  EOPNOTSUPP
  xflag-dax-sync      MAP_SHARED_VALIDATE|MAP_SYNC on a   success     EOPNOTSUPP
                      file with FS_XFLAG_DAX set

Whether a file is DAX is itself checked against the mount (dax.rst):
dax=always every file, dax=never none, dax=inode exactly the files with
FS_XFLAG_DAX (here: xflag-dax-sync's). A successful MAP_SHARED_VALIDATE|
MAP_SYNC mapping must carry VM_SYNC ("sf" in smaps VmFlags); otherwise the
call succeeded without the promise it exists for.

MAP_SHARED|MAP_SYNC is judged by the ``shared_sync`` parameter:

- "ignored" (default): mmap(2)'s words, "mappings of type MAP_SHARED will
  silently ignore this flag": the call succeeds on any file and the mapping
  has no VM_SYNC.
- "honoured": what Linux has done since 4.15 (measured on 6.1 here):
  do_mmap() computes VM_SYNC from the flags *before* it masks MAP_SHARED's
  down to LEGACY_MAP_MASK, so the mapping gets VM_SYNC, and ext4/xfs
  ->mmap (daxdev_mapping_supported) refuse it with EOPNOTSUPP on a non-DAX
  file. Success (with VM_SYNC) on a DAX file, EOPNOTSUPP otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lab.errors import ConfigError, GuestError
from lab.guest.pmem import DaxMode
from lab.image.cache import Image
from lab.markup import Html, e, table
from lab.oracles.finding import Finding
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.workloads.base import CheckSpec, WorkloadKind, json_lines, params_as
from lab.runner.check import BaseCheck
from lab.runner.guest_run import GuestRun, RunHooks, WorkloadResult, run_guarded

if TYPE_CHECKING:
    from lab.store.records import CaseRecord

NAME = "mapsync-contract"
HELPER = "mmapcontract"
HELPER_TIMEOUT_S = 120.0
SUCCESS = "success"
EOPNOTSUPP = "EOPNOTSUPP"

# probe -> the mmap flags it passes (as the helper prints them)
PROBES: dict[str, str] = {
    "validate-plain": "MAP_SHARED_VALIDATE",
    "validate-sync": "MAP_SHARED_VALIDATE|MAP_SYNC",
    "shared-sync": "MAP_SHARED|MAP_SYNC",
    "validate-undefined": "MAP_SHARED_VALIDATE|0x200000",
    "xflag-dax-sync": "MAP_SHARED_VALIDATE|MAP_SYNC",
}
SharedSync = Literal["ignored", "honoured"]


class MmapContractParams(BaseModel):
    """[workload] / [matrix] keys of the mapsync-contract kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probes: list[str] = Field(default_factory=lambda: list(PROBES))
    shared_sync: SharedSync = "ignored"

    @field_validator("probes")
    @classmethod
    def _known_probes(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in PROBES]
        if unknown:
            raise ValueError(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBES)}")
        if not value:
            raise ValueError("probes must name at least one probe")
        if len(set(value)) != len(value):
            raise ValueError("probes lists a probe twice")
        return value


# -- the contract: pure functions -------------------------------------------------------------

def expected(probe: str, file_dax: bool, shared_sync: SharedSync = "ignored") -> str:
    """What mmap must answer for `probe` on a file that is (not) DAX: "success" or "EOPNOTSUPP"."""
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}")
    if probe == "validate-plain":
        return SUCCESS  # no extension flag: MAP_SHARED_VALIDATE behaves as MAP_SHARED
    if probe == "validate-undefined":
        return EOPNOTSUPP  # the very point of MAP_SHARED_VALIDATE: unknown flags are refused
    if probe == "shared-sync" and shared_sync == "ignored":
        return SUCCESS  # MAP_SHARED does not validate: MAP_SYNC is silently ignored
    return SUCCESS if file_dax else EOPNOTSUPP  # MAP_SYNC needs a DAX file


def expected_file_dax(probe: str, dax: DaxMode) -> bool:
    """STATX_ATTR_DAX the probe's file must have under mount option dax=`dax`."""
    if dax is DaxMode.ALWAYS:
        return True
    if dax is DaxMode.NEVER:
        return False
    return probe == "xflag-dax-sync"  # dax=inode: exactly the files with FS_XFLAG_DAX


def expected_xflag_dax(probe: str) -> bool:
    """FS_XFLAG_DAX on the probe's file: only xflag-dax-sync sets it; nothing may set it by itself."""
    return probe == "xflag-dax-sync"


def expected_vm_sync(probe: str, shared_sync: SharedSync = "ignored") -> bool:
    """Whether a *successful* mapping of `probe` must carry VM_SYNC (smaps "sf")."""
    if probe in ("validate-sync", "xflag-dax-sync"):
        return True
    if probe == "shared-sync":
        return shared_sync == "honoured"
    return False


def parse_lines(stdout: str) -> list[dict[str, Any]]:
    """The helper's JSON lines (anything else on stdout is ignored)."""
    return [data for data in json_lines(stdout) if "probe" in data]


def judge(lines: list[dict[str, Any]], dax: DaxMode, params: MmapContractParams) -> tuple[list[dict[str, Any]],
                                                                                          list[Finding]]:
    """Compare the helper's answers with the contract: (rows, findings).

    One row per requested probe: {probe, flags, file_dax, expected, got, ok, ...}. A wrong
    answer, a file whose DAX state contradicts the mount, or a MAP_SYNC mapping without VM_SYNC
    is a VIOLATION naming the row; a probe the helper could not set up (or did not report) is
    INFRA-ERROR: no evidence either way.
    """
    by_probe = {str(line.get("probe")): line for line in lines}
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []
    for probe in params.probes:
        line = by_probe.get(probe)
        if line is None or line.get("error"):
            why = line.get("error") if line else "the helper printed nothing for it"
            rows.append({"probe": probe, "flags": PROBES[probe], "expected": None, "got": None, "ok": None,
                         "error": why})
            findings.append(Finding("mmap-contract", Verdict.INFRA_ERROR,
                                    f"probe {probe} could not be run: {why}", {"probe": probe, "error": why}))
            continue
        file_dax = bool(line.get("file_dax"))
        got = SUCCESS if line.get("errno") in (None, "") else str(line.get("errno"))
        want = expected(probe, file_dax, params.shared_sync)
        want_dax = expected_file_dax(probe, dax)
        want_xflag = expected_xflag_dax(probe)
        vm_sync = line.get("vm_sync")
        want_vm_sync = expected_vm_sync(probe, params.shared_sync) if got == SUCCESS else None
        problems = []
        if got != want:
            problems.append(f"mmap answered {got}, mmap(2) says {want}")
        if file_dax != want_dax:
            problems.append(f"the file {'is' if file_dax else 'is not'} DAX (STATX_ATTR_DAX) under dax={dax.value}")
        if bool(line.get("xflag_dax")) != want_xflag:
            problems.append(f"FS_XFLAG_DAX is {'set' if line.get('xflag_dax') else 'clear'}, "
                            f"expected {'set' if want_xflag else 'clear'}")
        if want_vm_sync is not None and vm_sync is not None and bool(vm_sync) != want_vm_sync:
            problems.append(f"the mapping {'has' if vm_sync else 'lacks'} VM_SYNC (smaps 'sf'), "
                            f"expected {'it' if want_vm_sync else 'none'}")
        if got == SUCCESS and line.get("stored") is not True:
            problems.append("a store through the successful mapping did not complete")
        row = {"probe": probe, "flags": str(line.get("flags") or PROBES[probe]), "file_dax": file_dax,
               "expected_file_dax": want_dax, "xflag_dax": bool(line.get("xflag_dax")), "expected": want,
               "got": got, "vm_sync": vm_sync, "expected_vm_sync": want_vm_sync, "reload": line.get("reload"),
               "ok": not problems, "problems": problems}
        rows.append(row)
        if problems:
            findings.append(Finding("mmap-contract", Verdict.VIOLATION,
                                    f"{probe} ({row['flags']}) on a {'DAX' if file_dax else 'non-DAX'} file: "
                                    + "; ".join(problems), row))
    if not findings:
        findings.append(Finding("mmap-contract", Verdict.PASS,
                                f"all {len(rows)} probes answered as mmap(2) defines under dax={dax.value}",
                                {"probes": [r["probe"] for r in rows], "shared_sync": params.shared_sync}))
    shared = next((r for r in rows if r["probe"] == "shared-sync" and r.get("ok")), None)
    if shared is not None and params.shared_sync == "honoured":
        what = ("mapped with VM_SYNC" if shared["got"] == SUCCESS else f"refused with {shared['got']}")
        findings.append(Finding("mmap-contract-note", Verdict.PASS,
                                f"MAP_SHARED|MAP_SYNC on a {'DAX' if shared['file_dax'] else 'non-DAX'} file was "
                                f"{what}: the kernel honours MAP_SYNC where mmap(2) says MAP_SHARED ignores it "
                                "(judged with shared_sync = \"honoured\")", {"row": shared}))
    return rows, findings


# -- the check and its run ----------------------------------------------------------------------

@dataclass(frozen=True)
class MmapContractCheck(BaseCheck):
    params: MmapContractParams = field(default_factory=MmapContractParams)

    KIND: ClassVar[str] = NAME
    PARAMS: ClassVar[type[BaseModel]] = MmapContractParams


def make_check(spec: CheckSpec) -> MmapContractCheck:
    if spec.crash is not None:
        raise ConfigError(f"{NAME} makes no power cut: a crash point does not apply")
    return MmapContractCheck(spec.fs, spec.dax, params_as(MmapContractParams, spec.params), shape=spec.shape,
                             seed=spec.seed)


def helper_argv(check: MmapContractCheck, directory: str) -> list[str]:
    argv = [HELPER, "--dir", directory]
    if list(check.params.probes) != list(PROBES):
        for probe in check.params.probes:
            argv += ["--probe", probe]
    return argv


def run_check(check: MmapContractCheck, image: Image, accel: AccelVerdict, run_dir: Path,
              hooks: RunHooks | None = None) -> WorkloadResult:
    run = GuestRun(NAME, check, image, accel, run_dir, hooks or RunHooks())

    def body(run: GuestRun) -> list[Finding]:
        with run.pmem_machine(check.fs, check.dax) as (machine, mnt):
            with run.phase("workload"):
                result = machine.agent.run(helper_argv(check, mnt.mountpoint), timeout=HELPER_TIMEOUT_S)
        (run_dir / "mmapcontract.jsonl").write_text(result.text)
        if result.timed_out or result.signal or result.exit_code not in (0, 1):
            raise GuestError(f"{HELPER} {result.describe()}; stderr: {result.err_text.strip()[-500:]}")
        lines = parse_lines(result.text)
        rows, findings = judge(lines, check.dax, check.params)
        run.result.metrics = {"rows": rows, "raw": lines, "fs": check.fs.value, "dax": check.dax.value,
                              "mount_dax_active": mnt.dax_active, "shared_sync": check.params.shared_sync}
        return findings

    return run_guarded(run, body)


def _run(check: Any, image: Image, accel: AccelVerdict, run_dir: Path, hooks: RunHooks) -> WorkloadResult:
    return run_check(check, image, accel, run_dir, hooks)


# -- report ------------------------------------------------------------------------------------

def _case_result(case: CaseRecord) -> Mapping[str, Any] | None:
    """The stored result of a case's newest attempt (or its run directory's result.json)."""
    latest = case.latest
    if latest is None:
        return None
    result: Any = latest.result
    if not result and latest.run_dir:
        try:
            result = json.loads((Path(latest.run_dir) / "result.json").read_text())
        except (OSError, ValueError):
            return None
    return result if isinstance(result, Mapping) else None


def _contract_cell(entry: Mapping[str, Any] | None) -> str | Html:
    if entry is None:
        return "-"
    if entry.get("ok") is None:
        return Html(f"not run: {e(entry.get('error'))}", css="unmet")
    dax = "DAX" if entry.get("file_dax") else "non-DAX"
    sync = " VM_SYNC" if entry.get("vm_sync") else ""
    text = f"{e(entry.get('got'))} <small>({dax}{sync})</small>"
    if entry.get("ok"):
        return Html(text)
    why = "; ".join(str(p) for p in entry.get("problems") or [])
    return Html(f"{text}<br>expected {e(entry.get('expected'))}<br><small>{e(why)}</small>", css="unmet")


def render_html(cases: Sequence[CaseRecord], out_dir: Path) -> str:
    """The contract table: per probe, expected vs got in every fs/dax cell of the campaign."""
    del out_dir  # nothing linked: the table is inline
    found: list[tuple[tuple[str, str, str], list[Mapping[str, Any]]]] = []
    for case in cases:
        result = _case_result(case)
        if not result:
            continue
        metrics = result.get("metrics") or {}
        check = result.get("check") or {}
        cell = (str(metrics.get("fs") or check.get("fs")), str(metrics.get("dax") or check.get("dax")),
                str((check.get("params") or {}).get("shared_sync") or metrics.get("shared_sync") or "ignored"))
        found.append((cell, list(metrics.get("rows") or [])))
    show_shared = len({cell[2] for cell, _ in found}) > 1 or any(cell[2] != "ignored" for cell, _ in found)
    dax_order = [d.value for d in (DaxMode.ALWAYS, DaxMode.NEVER, DaxMode.INODE)]
    cells: dict[tuple[str, str, str], dict[str, Mapping[str, Any]]] = {}
    for cell, rows in found:
        for row in rows:
            cells.setdefault(cell, {})[str(row.get("probe"))] = row  # a later repeat replaces an earlier one
    if not cells:
        return '<section id="mmap-contract"><h2>mmap contract</h2><p>No contract results stored.</p></section>'
    order = sorted(cells, key=lambda c: (c[0], dax_order.index(c[1]) if c[1] in dax_order else 9, c[2]))
    names = [f"{c[0]} dax={c[1]}" + (f" shared_sync={c[2]}" if show_shared else "") for c in order]
    probes = [p for p in PROBES if any(p in cells[label] for label in order)]
    table_rows = [[probe, PROBES[probe], *(_contract_cell(cells[label].get(probe)) for label in order)]
                  for probe in probes]
    return ('<section id="mmap-contract"><h2>mmap contract</h2>'
            "<p>What mmap answered per probe (success or errno), with the file's STATX_ATTR_DAX and "
            "whether the mapping carried VM_SYNC; cells that differ from mmap(2) are marked.</p>"
            f"{table(['probe', 'flags', *names], table_rows)}</section>")


KIND = WorkloadKind(
    name=NAME,
    purpose="mmap(2)'s answers for MAP_SHARED_VALIDATE/MAP_SYNC on DAX and non-DAX files",
    params=MmapContractParams,
    uses_crash=False,
    make_check=make_check,
    check_from_dict=MmapContractCheck.from_dict,
    run=_run,
    render_html=render_html,
)
