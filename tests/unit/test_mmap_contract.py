"""mapsync-contract, host side: the expected table, the comparison, params, checks, the HTML table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.store.records import CaseRecord
from lab.verdict import Verdict, combine
from lab.vm.boot import MachineShape
from lab.workloads import mmap_contract as mc
from lab.workloads.base import CheckSpec
from lab.workloads.catalog import get_kind
from tests.unit.helpers import stored_case

E = "EOPNOTSUPP"
S = "success"


def line(probe: str, file_dax: bool, errno: str | None, vm_sync: bool | None = None,
         xflag: bool | None = None) -> dict[str, Any]:
    """One helper line as mmapcontract prints it."""
    ok = errno is None
    return {"probe": probe, "flags": mc.PROBES[probe], "file_dax": file_dax,
            "xflag_dax": probe == "xflag-dax-sync" if xflag is None else xflag, "errno": errno,
            "vm_sync": (vm_sync if vm_sync is not None else False) if ok else None,
            "stored": True if ok else None, "reload": "dontcache" if probe == "xflag-dax-sync" else "none"}


# What the Debian 6.1 guest answered on ext4 and xfs (the same on both), per mount option.
MEASURED = {
    DaxMode.ALWAYS: [line("validate-plain", True, None), line("validate-sync", True, None, True),
                     line("shared-sync", True, None, True), line("validate-undefined", True, E),
                     line("xflag-dax-sync", True, None, True)],
    DaxMode.NEVER: [line("validate-plain", False, None), line("validate-sync", False, E),
                    line("shared-sync", False, E), line("validate-undefined", False, E),
                    line("xflag-dax-sync", False, E)],
    DaxMode.INODE: [line("validate-plain", False, None), line("validate-sync", False, E),
                    line("shared-sync", False, E), line("validate-undefined", False, E),
                    line("xflag-dax-sync", True, None, True)],
}
HONOURED = mc.MmapContractParams(shared_sync="honoured")
IGNORED = mc.MmapContractParams()


def verdict(findings: list[Any]) -> Verdict:
    return combine(f.verdict for f in findings)


# -- the expected table -------------------------------------------------------------------------

@pytest.mark.parametrize(("probe", "dax_file", "non_dax_file"), [
    ("validate-plain", S, S),
    ("validate-sync", S, E),
    ("shared-sync", S, S),
    ("validate-undefined", E, E),
    ("xflag-dax-sync", S, E),
])
def test_expected_table_is_mmap2(probe: str, dax_file: str, non_dax_file: str) -> None:
    assert mc.expected(probe, True) == dax_file
    assert mc.expected(probe, False) == non_dax_file


def test_shared_sync_honoured_follows_the_file() -> None:
    assert mc.expected("shared-sync", True, "honoured") == S
    assert mc.expected("shared-sync", False, "honoured") == E
    assert mc.expected_vm_sync("shared-sync", "honoured") is True
    assert mc.expected_vm_sync("shared-sync", "ignored") is False
    assert mc.expected_vm_sync("validate-sync") is True and mc.expected_vm_sync("validate-plain") is False


def test_expected_file_dax_per_mount_option() -> None:
    for probe in mc.PROBES:
        assert mc.expected_file_dax(probe, DaxMode.ALWAYS) is True
        assert mc.expected_file_dax(probe, DaxMode.NEVER) is False
        assert mc.expected_file_dax(probe, DaxMode.INODE) is (probe == "xflag-dax-sync")


def test_unknown_probe_is_refused() -> None:
    with pytest.raises(ValueError):
        mc.expected("map-private", True)


# -- the comparison -----------------------------------------------------------------------------

@pytest.mark.parametrize("dax", list(DaxMode))
def test_measured_answers_pass_when_shared_sync_is_honoured(dax: DaxMode) -> None:
    rows, findings = mc.judge(MEASURED[dax], dax, HONOURED)
    assert [r["probe"] for r in rows] == list(mc.PROBES)
    assert all(r["ok"] for r in rows), rows
    assert verdict(findings) is Verdict.PASS
    assert any(f.oracle == "mmap-contract-note" for f in findings), "the deviation from mmap(2) is noted"


@pytest.mark.parametrize("dax", list(DaxMode))
def test_measured_answers_violate_mmap2_on_shared_sync(dax: DaxMode) -> None:
    rows, findings = mc.judge(MEASURED[dax], dax, IGNORED)
    bad = [r for r in rows if not r["ok"]]
    assert [r["probe"] for r in bad] == ["shared-sync"]
    assert verdict(findings) is Verdict.VIOLATION
    violation = next(f for f in findings if f.verdict is Verdict.VIOLATION)
    assert violation.details["probe"] == "shared-sync"
    if dax is DaxMode.ALWAYS:  # accepted, but MAP_SYNC was not ignored: VM_SYNC is on
        assert bad[0]["got"] == S and "VM_SYNC" in violation.summary
    else:  # refused on the non-DAX file
        assert bad[0]["got"] == E and bad[0]["expected"] == S


def test_rows_have_the_contract_fields() -> None:
    rows, _ = mc.judge(MEASURED[DaxMode.INODE], DaxMode.INODE, HONOURED)
    row = next(r for r in rows if r["probe"] == "xflag-dax-sync")
    assert {"probe", "expected", "got", "ok"} <= set(row)
    assert row == {**row, "expected": S, "got": S, "ok": True, "file_dax": True, "vm_sync": True}
    json.dumps(rows)  # stored as is


@pytest.mark.parametrize(("probe", "bad_errno"), [
    ("validate-sync", E),  # MAP_SYNC refused on a DAX file
    ("validate-undefined", None),  # an undefined flag accepted
    ("validate-plain", "EINVAL"),  # MAP_SHARED_VALIDATE itself unknown
])
def test_a_wrong_errno_is_a_violation(probe: str, bad_errno: str | None) -> None:
    lines = [line(probe, True, bad_errno) if item["probe"] == probe else item for item in MEASURED[DaxMode.ALWAYS]]
    rows, findings = mc.judge(lines, DaxMode.ALWAYS, HONOURED)
    assert verdict(findings) is Verdict.VIOLATION
    row = next(r for r in rows if r["probe"] == probe)
    assert row["ok"] is False and row["got"] == (bad_errno or S)
    finding = next(f for f in findings if f.verdict is Verdict.VIOLATION)
    assert finding.details == row and probe in finding.summary


def test_map_sync_accepted_on_a_non_dax_file_is_a_violation() -> None:
    lines = [dict(item) for item in MEASURED[DaxMode.NEVER]]
    lines[1].update(errno=None, vm_sync=True, stored=True)
    rows, findings = mc.judge(lines, DaxMode.NEVER, HONOURED)
    assert verdict(findings) is Verdict.VIOLATION
    assert rows[1]["expected"] == E and rows[1]["got"] == S


def test_map_sync_without_vm_sync_is_a_violation() -> None:
    lines = [dict(item) for item in MEASURED[DaxMode.ALWAYS]]
    lines[1]["vm_sync"] = False
    rows, findings = mc.judge(lines, DaxMode.ALWAYS, HONOURED)
    assert verdict(findings) is Verdict.VIOLATION
    assert "lacks VM_SYNC" in rows[1]["problems"][0]


def test_a_file_whose_dax_state_contradicts_the_mount_is_a_violation() -> None:
    lines = [dict(item) for item in MEASURED[DaxMode.INODE]]
    lines[4].update(file_dax=False, errno=E, vm_sync=None, stored=None)  # FS_XFLAG_DAX did not take
    rows, findings = mc.judge(lines, DaxMode.INODE, HONOURED)
    assert verdict(findings) is Verdict.VIOLATION
    assert rows[4]["got"] == rows[4]["expected"] == E, "the answer fits the file..."
    assert any("is not DAX" in p for p in rows[4]["problems"]), "...but the file should be DAX"


def test_a_probe_not_run_is_no_evidence() -> None:
    lines = [item for item in MEASURED[DaxMode.ALWAYS] if item["probe"] not in ("shared-sync", "xflag-dax-sync")]
    lines.append({"probe": "xflag-dax-sync", "flags": "x", "error": "FS_IOC_FSSETXATTR: EOPNOTSUPP"})
    rows, findings = mc.judge(lines, DaxMode.ALWAYS, HONOURED)
    assert verdict(findings) is Verdict.INFRA_ERROR
    missing = {r["probe"]: r for r in rows if r["ok"] is None}
    assert set(missing) == {"shared-sync", "xflag-dax-sync"}
    assert "FSSETXATTR" in missing["xflag-dax-sync"]["error"]


def test_only_the_requested_probes_are_judged() -> None:
    params = mc.MmapContractParams(probes=["validate-undefined"])
    rows, findings = mc.judge(MEASURED[DaxMode.NEVER], DaxMode.NEVER, params)
    assert [r["probe"] for r in rows] == ["validate-undefined"] and verdict(findings) is Verdict.PASS


def test_parse_lines_skips_noise() -> None:
    text = "garbage\n" + "\n".join(json.dumps(item) for item in MEASURED[DaxMode.NEVER]) + "\n{broken\n"
    assert mc.parse_lines(text) == MEASURED[DaxMode.NEVER]


# -- params, checks, the kind ---------------------------------------------------------------------

def test_params_defaults_and_validation() -> None:
    params = mc.MmapContractParams()
    assert params.probes == list(mc.PROBES) and params.shared_sync == "ignored"
    with pytest.raises(ValidationError):
        mc.MmapContractParams(probs=["x"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        mc.MmapContractParams(probes=["nope"])
    with pytest.raises(ValidationError):
        mc.MmapContractParams(probes=[])
    with pytest.raises(ValidationError):
        mc.MmapContractParams(shared_sync="maybe")  # type: ignore[arg-type]


def test_check_round_trip_and_make_check() -> None:
    kind = get_kind("mapsync-contract")
    assert kind is mc.KIND and kind.uses_crash is False and kind.render_html is not None
    spec = CheckSpec(fs=Filesystem.XFS, dax=DaxMode.INODE, params=HONOURED, crash=None,
                     shape=MachineShape(nvdimm_size=512 << 20), seed=9)
    check = kind.make_check(spec)
    data = json.loads(json.dumps(check.to_dict()))
    assert kind.check_from_dict(data) == check
    assert data["params"]["shared_sync"] == "honoured" and data["fs"] == "xfs" and data["dax"] == "inode"
    with pytest.raises(ConfigError):
        kind.make_check(CheckSpec(Filesystem.EXT4, DaxMode.ALWAYS, IGNORED, CrashPoint(after_ack=1),
                                  MachineShape(), 1))
    with pytest.raises(ConfigError):
        kind.check_from_dict({"dax": "inode"})


def test_make_check_accepts_an_equivalent_params_model() -> None:
    class Other(BaseModel):
        probes: list[str] = ["validate-sync"]
        shared_sync: str = "honoured"

    check = mc.make_check(CheckSpec(Filesystem.EXT4, DaxMode.NEVER, Other(), None, MachineShape(), 0))
    assert check.params == mc.MmapContractParams(probes=["validate-sync"], shared_sync="honoured")


def test_helper_argv() -> None:
    assert mc.helper_argv(mc.MmapContractCheck(Filesystem.EXT4, DaxMode.ALWAYS), "/mnt/pmem") == \
        ["mmapcontract", "--dir", "/mnt/pmem"]
    some = mc.MmapContractCheck(Filesystem.EXT4, DaxMode.ALWAYS,
                                mc.MmapContractParams(probes=["shared-sync", "validate-sync"]))
    assert mc.helper_argv(some, "/d") == ["mmapcontract", "--dir", "/d", "--probe", "shared-sync",
                                          "--probe", "validate-sync"]


def _case(fs: str, dax: DaxMode, params: mc.MmapContractParams, run_dir: Path | None = None) -> CaseRecord:
    rows, findings = mc.judge(MEASURED[dax], dax, params)
    result: dict[str, Any] = {"check": mc.MmapContractCheck(Filesystem(fs), dax, params).to_dict(),
                              "metrics": {"rows": rows, "fs": fs, "dax": dax.value, "shared_sync": params.shared_sync},
                              "verdict": verdict(findings).value}
    if run_dir is not None:
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps(result))
        return stored_case(None, verdict=result["verdict"], run_dir=str(run_dir))  # read from result.json
    return stored_case(result)


def test_render_html_contract_table(tmp_path: Path) -> None:
    cases = [_case("ext4", DaxMode.ALWAYS, HONOURED), _case("xfs", DaxMode.NEVER, IGNORED),
             _case("ext4", DaxMode.INODE, HONOURED, tmp_path / "run1"), stored_case(attempted=False)]
    html = mc.render_html(cases, tmp_path)
    assert html.startswith('<section id="mmap-contract">') and html.endswith("</section>")
    labels = ["ext4 dax=always shared_sync=honoured", "ext4 dax=inode shared_sync=honoured",
              "xfs dax=never shared_sync=ignored"]
    positions = [html.index(f"<th>{label}</th>") for label in labels]
    assert positions == sorted(positions), "columns: fs, then dax always/never/inode"
    assert html.count("<tr><td>") == len(mc.PROBES)
    assert html.count('class="unmet"') == 1, "only xfs dax=never shared-sync misses mmap(2)'s answer"
    assert "expected success" in html and "MAP_SHARED_VALIDATE|0x200000" in html
    assert "<script" not in html


def test_render_html_without_results(tmp_path: Path) -> None:
    assert "No contract results" in mc.render_html([], tmp_path)


def test_render_html_one_judgement_needs_no_shared_sync_label(tmp_path: Path) -> None:
    html = mc.render_html([_case("ext4", DaxMode.NEVER, IGNORED), _case("ext4", DaxMode.ALWAYS, IGNORED)], tmp_path)
    assert html.index("<th>ext4 dax=always</th>") < html.index("<th>ext4 dax=never</th>")
    assert "shared_sync" not in html
