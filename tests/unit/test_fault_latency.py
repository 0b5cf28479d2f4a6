"""fault-latency without QEMU: buckets, summaries, the published table, judging, the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.agent import CommandResult
from lab.guest.pmem import DaxMode, Filesystem
from lab.paths import REPO_ROOT, images_dir
from lab import latency_stats as stats
from lab.cli_campaign import kind_sections
from lab.latency_stats import Bucket, CellKey
from lab.report import html as html_report, latency
from lab.store.records import CampaignRecord, CaseRecord
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.workloads import catalog
from lab.workloads.base import CheckSpec
from lab.workloads.fault_latency import (
    KIND,
    FaultLatencyCheck,
    FaultLatencyParams,
    check_from_dict,
    copy_argv,
    judge_copy,
    judge_measurement,
)
from tests.unit.helpers import GuestProgram, stored_case

# -- buckets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("us, bounds", [(0, (0, 1)), (1, (0, 1)), (2, (2, 3)), (3, (2, 3)), (4, (4, 7)),
                                        (7, (4, 7)), (8, (8, 15)), (15, (8, 15)), (16, (16, 31)),
                                        (124, (64, 127)), (128, (128, 255)), (1000, (512, 1023)),
                                        (40260, (32768, 65535))])
def test_bucket_bounds_are_powers_of_two(us: int, bounds: tuple[int, int]) -> None:
    assert stats.bucket_bounds(us) == bounds


def test_bucket_bounds_refuse_negative() -> None:
    with pytest.raises(ValueError):
        stats.bucket_bounds(-1)


def test_histogram_truncates_to_whole_microseconds() -> None:
    # 15.999 us is still "8 - 15"; 16.0 is "16 - 31"; sub-microsecond samples are "0 - 1".
    hist = stats.histogram([9_000, 15_999, 16_000, 500, 1_999, 2_000, 31_999])
    assert [b.to_dict() for b in hist] == [{"lo": 0, "hi": 1, "count": 2}, {"lo": 2, "hi": 3, "count": 1},
                                           {"lo": 8, "hi": 15, "count": 2}, {"lo": 16, "hi": 31, "count": 2}]
    assert sum(b.count for b in hist) == 7


def test_bucket_text_is_the_cover_letters() -> None:
    assert Bucket(8, 15, 508).text() == "8 - 15 us: 508"


def test_summary() -> None:
    s = stats.summarize([9_000, 10_000, 11_000, 46_000])
    assert (s.count, s.min_us, s.avg_us, s.max_us, s.p50_us) == (4, 9.0, 19.0, 46.0, 10.5)
    assert stats.summarize([3_000, 1_000, 2_000]).p50_us == 2.0
    assert s.text() == "min=9 avg=19 max=46"
    with pytest.raises(ValueError):
        stats.summarize([])


def test_published_cells_reproduce_the_cover_letter() -> None:
    for pub in stats.PUBLISHED.values():
        assert sum(b.count for b in pub.buckets) == 512 == pub.summary.count
    block = latency.cover_letter_block("File empty, no background load, MAP_SYNC",
                                       *_pub(prealloc=False, background=False, map_sync=True))
    assert block == ("File empty, no background load, MAP_SYNC:\nmin=40 avg=124 max=242\n"
                     "32 - 63 us: 1\n64 - 127 us: 333\n128 - 255 us: 178")
    assert CellKey("ext4", "empty", False, True).label() == "File empty, no background load, MAP_SYNC"
    assert (CellKey("ext4", "written", False, False).label()
            == "File preallocated (written), no background load, no MAP_SYNC")


def test_both_preallocated_modes_face_the_published_preallocated_row() -> None:
    row = stats.PUBLISHED[(True, False, True)]
    assert stats.published(CellKey("xfs", "written", False, True)) is row
    assert stats.published(CellKey("xfs", "fallocate", False, True)) is row
    assert stats.published(CellKey("xfs", "empty", False, True)) is stats.PUBLISHED[(False, False, True)]
    assert stats.published(CellKey("xfs", "written", True, True)) is None  # not in the cover letter


def test_file_mode_of_stored_params_reads_old_records() -> None:
    assert stats.file_mode_of({"file": "written", "prealloc": True}) == "written"
    assert stats.file_mode_of({"prealloc": True}) == "fallocate"
    assert stats.file_mode_of({"prealloc": False}) == "empty"
    assert stats.file_mode_of({}) == "empty"
    with pytest.raises(ValueError, match="unknown file mode 'sparse'"):
        stats.file_mode_of({"file": "sparse"})


def _pub(prealloc: bool, background: bool, map_sync: bool) -> tuple[stats.Summary, tuple[Bucket, ...]]:
    pub = stats.PUBLISHED[(prealloc, background, map_sync)]
    return pub.summary, pub.buckets


def test_published_ratios() -> None:
    assert stats.published_ratio(True, False) == 1.0
    assert stats.published_ratio(False, False) == 5.64
    assert stats.published_ratio(False, True) == 4.87
    assert stats.published_ratio(True, True) is None  # the cover letter has no such cell


# -- cells from stored results -----------------------------------------------------------------

def _result(fs: str, file: str, map_sync: bool, background: bool, samples_us: list[int],
            verdict: str = "PASS") -> dict[str, Any]:
    params = {"pages": len(samples_us), "file": file, "map_sync": map_sync, "background_copy": background}
    return {"kind": "fault-latency", "verdict": verdict, "accelerator": "tcg",
            "check": {"kind": "fault-latency", "fs": fs, "dax": "always", "params": params},
            "metrics": {"samples_ns": [us * 1000 for us in samples_us]} if verdict == "PASS" else {}}


def _case(result: dict[str, Any]) -> CaseRecord:
    return stored_case(result, case={"check": result["check"]})


RESULTS = [
    _result("ext4", "empty", False, False, [20, 22, 24]),
    _result("ext4", "empty", True, False, [100, 120, 140]),
    _result("ext4", "empty", True, False, [130]),  # a repeat: pooled
    _result("ext4", "fallocate", False, False, [10, 10]),
    _result("ext4", "fallocate", True, False, [], verdict="INFRA-ERROR"),
    _result("ext4", "written", False, False, [10, 12]),
    _result("ext4", "written", True, False, [11, 11]),
]


def test_cells_pool_repeats_and_keep_failures() -> None:
    cells = {c.key: c for c in stats.cells_from_results(RESULTS)}
    sync = cells[CellKey("ext4", "empty", False, True)]
    assert sync.runs == 2 and sync.summary is not None
    assert (sync.summary.count, sync.summary.avg_us) == (4, 122.5)
    failed = cells[CellKey("ext4", "fallocate", False, True)]
    assert not failed.measured and failed.verdicts == ["INFRA-ERROR"]
    # Preallocated cells sort first, as in the cover letter: written, fallocate, then empty.
    assert [c.key.file for c in stats.cells_from_results(RESULTS)] == ["written", "written", "fallocate",
                                                                        "fallocate", "empty", "empty"]


def test_cells_read_results_stored_before_file_modes() -> None:
    old = _result("ext4", "empty", True, False, [50])
    old["check"]["params"] = {"pages": 1, "prealloc": True, "map_sync": True, "background_copy": False}
    [cell] = stats.cells_from_results([old])
    assert cell.key == CellKey("ext4", "fallocate", False, True)


def test_ratios_pair_map_sync_with_plain() -> None:
    written, ratio = stats.ratios(stats.cells_from_results(RESULTS))  # the fallocate pair lacks MAP_SYNC
    assert (written.file, written.ratio, written.published) == ("written", 1.0, 1.0)
    assert (ratio.fs, ratio.file, ratio.background) == ("ext4", "empty", False)
    assert ratio.ratio == round(122.5 / 22, 2) and ratio.published == 5.64
    assert ratio.extra_us == 100.5
    assert ratio.p50_ratio == round(125 / 22, 2)


def test_render_text_has_table_ratios_and_blocks() -> None:
    text = latency.render_text(stats.cells_from_results(RESULTS))
    assert "ext4  empty" in text and "5.64" in text and "ext4  written    none" in text
    assert "not measured: INFRA-ERROR" in text
    assert "[ext4] File empty, no background load, MAP_SYNC:\nmin=100 avg=122 max=140" in text
    assert "  published:\n  min=40 avg=124 max=242" in text
    # The written cell stands beside the cover letter's preallocated one, and the text says why.
    assert ("[ext4] File preallocated (written), no background load, MAP_SYNC:\nmin=11 avg=11 max=11\n"
            "8 - 15 us: 2\n  published:\n  min=9 avg=10 max=47") in text
    assert "preallocated file had written blocks" in text


def test_render_html_is_self_contained(tmp_path: Path) -> None:
    cases = [_case(r) for r in RESULTS] + [_case(_result("xfs<b>", "empty", True, False, [5]))]
    html = latency.render_html(cases, tmp_path)
    assert html.startswith('<section id="fault-latency">') and html.endswith("</section>")
    assert 'src="data:image/png;base64,' in html
    assert "xfs&lt;b&gt;" in html and "xfs<b>" not in html  # escaped
    assert "TCG" in html  # the emulation caveat
    assert (tmp_path / latency.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_html_without_results(tmp_path: Path) -> None:
    assert "No fault-latency results" in latency.render_html([], tmp_path)


def test_plot_png() -> None:
    png = latency.plot_png(stats.cells_from_results(RESULTS))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# -- the kind ------------------------------------------------------------------------------------

def test_kind_is_in_the_catalog() -> None:
    kind = catalog.get_kind("fault-latency")
    assert kind is KIND and not kind.uses_crash and kind.params is FaultLatencyParams


def test_campaign_page_has_the_latency_section(tmp_path: Path) -> None:
    cases = tuple(stored_case(r, case={"check": r["check"], "workload": "fault-latency"}) for r in RESULTS)
    campaign = CampaignRecord(id="x", scenario_name="fault-latency", scenario_path="s.toml", scenario_hash="h",
                              image_id="i", kernel_version="6.1", accelerator="tcg", jobs=1, status="finished",
                              created_at=None, cases=cases)
    page = html_report.write_html(tmp_path / "page.html", campaign, kind_sections(cases, tmp_path))
    assert '<section id="kind-fault-latency"><section id="fault-latency">' in page.read_text()


def test_the_kind_does_not_import_reports() -> None:
    code = ("import sys, lab.workloads.fault_latency; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('lab.'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, check=True)
    loaded = proc.stdout.split()
    assert "lab.latency_stats" in loaded and not [m for m in loaded if m.startswith("lab.report")], loaded


def test_params_defaults_and_validation() -> None:
    p = FaultLatencyParams()
    assert (p.pages, p.file, p.map_sync, p.background_copy) == (512, "empty", True, False)
    with pytest.raises(ValidationError):
        FaultLatencyParams(records=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        FaultLatencyParams(pages=0)
    with pytest.raises(ValidationError):
        FaultLatencyParams(file="sparse")  # type: ignore[arg-type]
    assert p.argv("/mnt/pmem/f") == ["faultlat", "measure", "--file", "/mnt/pmem/f", "--pages", "512",
                                     "--setup", "empty"]
    assert FaultLatencyParams(file="written", map_sync=False).argv("f")[-3:] == ["--setup", "written",
                                                                                 "--no-map-sync"]
    assert copy_argv("/mnt/pmem")[:2] == ["faultlat", "copy"]


def _spec(**kw: Any) -> CheckSpec:
    base: dict[str, Any] = dict(fs=Filesystem.XFS, dax=DaxMode.ALWAYS, params=FaultLatencyParams(pages=64),
                                crash=None, shape=MachineShape(cpus=1), seed=7)
    return CheckSpec(**{**base, **kw})


def test_old_records_prealloc_keeps_its_meaning() -> None:
    assert FaultLatencyParams(prealloc=True).file == "fallocate"  # type: ignore[call-arg]
    assert FaultLatencyParams(prealloc=False).file == "empty"  # type: ignore[call-arg]
    old = {"kind": "fault-latency", "fs": "ext4", "dax": "always", "seed": 3, "cpus": 1, "memory_mib": 1024,
           "nvdimm_size": 1 << 30, "params": {"pages": 8, "prealloc": True, "map_sync": True, "background_copy": False}}
    check = check_from_dict(old)
    assert check.params == FaultLatencyParams(pages=8, file="fallocate")
    assert check.to_dict()["params"]["file"] == "fallocate" and "prealloc" not in check.to_dict()["params"]
    with pytest.raises(ValidationError, match="not both"):
        FaultLatencyParams(prealloc=True, file="written")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="must be true or false"):
        FaultLatencyParams(prealloc="yes")  # type: ignore[call-arg]


def test_make_check_round_trips() -> None:
    check = KIND.make_check(_spec())
    assert isinstance(check, FaultLatencyCheck) and check.params.pages == 64 and check.seed == 7
    data = json.loads(json.dumps(check.to_dict()))
    assert data["kind"] == "fault-latency" and data["params"]["pages"] == 64
    assert check_from_dict(data) == check == KIND.check_from_dict(data)


def test_make_check_refuses_crash_and_non_dax() -> None:
    with pytest.raises(ConfigError, match="crash"):
        KIND.make_check(_spec(crash=CrashPoint(after_ack=3)))
    with pytest.raises(ConfigError, match="dax must be 'always'"):
        KIND.make_check(_spec(dax=DaxMode.NEVER))


def _outcome(stdout: str, code: int = 0, timed_out: bool = False, stderr: str = "") -> CommandResult:
    return CommandResult(["faultlat"], code, 9 if timed_out else 0, timed_out, stdout.encode(), stderr.encode(), 1.0)


def _done(samples_ns: list[int], faults: int | None = None) -> str:
    return (json.dumps({"event": "mmap", "ok": True, "map_sync": True}) + "\n"
            + json.dumps({"event": "done", "pages": len(samples_ns), "faults": faults or len(samples_ns),
                          "huge": False, "clock_overhead_ns": 40, "samples_ns": samples_ns}) + "\n")


def test_judge_measurement_pass_and_metrics() -> None:
    params = FaultLatencyParams(pages=4)
    findings, metrics = judge_measurement(_outcome(_done([9_500, 10_100, 12_000, 47_000])), params,
                                          Filesystem.EXT4)
    assert [f.verdict for f in findings] == [Verdict.PASS]
    assert metrics["summary"] == {"count": 4, "min_us": 9.5, "avg_us": 19.65, "max_us": 47.0, "p50_us": 11.05}
    assert metrics["histogram_text"] == ["8 - 15 us: 3", "32 - 63 us: 1"]
    assert sum(b["count"] for b in metrics["histogram"]) == 4
    assert metrics["cell"] == {"fs": "ext4", "file": "empty", "map_sync": True, "background_copy": False,
                               "pages": 4}


def test_judge_measurement_notes_stores_that_did_not_fault() -> None:
    findings, _ = judge_measurement(_outcome(_done([1_000] * 4, faults=1)), FaultLatencyParams(pages=4),
                                    Filesystem.EXT4)
    assert findings[0].verdict is Verdict.PASS and "only 1 page faults" in findings[0].details["note"]


def test_judge_measurement_failures() -> None:
    params = FaultLatencyParams(pages=4)
    mmap_failed = json.dumps({"event": "mmap", "ok": False, "errno": "EOPNOTSUPP", "map_sync": True}) + "\n"
    [f], metrics = judge_measurement(_outcome(mmap_failed, code=3), params, Filesystem.EXT4)
    assert f.verdict is Verdict.INFRA_ERROR and "EOPNOTSUPP" in f.summary and metrics == {}
    [f], _ = judge_measurement(_outcome(_done([1_000] * 3)), params, Filesystem.EXT4)  # 3 of 4 samples
    assert f.verdict is Verdict.INFRA_ERROR and "3 of 4" in f.summary
    [f], _ = judge_measurement(_outcome("", code=4, stderr="faultlat: open x: ENOSPC"), params, Filesystem.EXT4)
    assert f.verdict is Verdict.INFRA_ERROR and "ENOSPC" in f.details["stderr"]
    [f], _ = judge_measurement(_outcome(mmap_failed.replace("false", "true"), timed_out=True), params,
                               Filesystem.EXT4)
    assert f.verdict is Verdict.HANG and "deadline" in f.summary


def test_judge_copy() -> None:
    rounds = "".join(json.dumps({"event": "round", "round": i, "bytes": 1 << 24, "us": 9}) + "\n" for i in (1, 2))
    findings, info = judge_copy(_outcome(rounds, code=-1), killed=True)
    assert findings == [] and info == {"rounds": 2, "bytes": 2 << 24, "killed": True}
    [f], _ = judge_copy(_outcome("", code=4, stderr="faultlat: write d: ENOSPC"), killed=False)
    assert f.verdict is Verdict.INFRA_ERROR and "ended by itself" in f.summary


# -- the guest helper, built and run on this host (no DAX here: MAP_SYNC must be refused) --------

@pytest.fixture(scope="module")
def helper(guest_program: GuestProgram) -> Path:
    return guest_program("faultlat")


def test_helper_output_is_what_the_judge_reads(helper: Path, tmp_path: Path) -> None:
    params = FaultLatencyParams(pages=16, map_sync=False)
    argv = [str(helper)] + params.argv(str(tmp_path / "f"))[1:]
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    findings, metrics = judge_measurement(CommandResult(argv, proc.returncode, 0, False, proc.stdout, proc.stderr, 0),
                                          params, Filesystem.EXT4)
    assert findings[0].verdict is Verdict.PASS, findings
    assert metrics["summary"]["count"] == 16 and len(metrics["samples_ns"]) == 16


@pytest.mark.parametrize("setup, argv", [("written", ["--setup", "written"]), ("fallocate", ["--setup", "fallocate"]),
                                         ("fallocate", ["--prealloc"]), ("empty", [])])
def test_helper_sets_the_file_up_as_asked(helper: Path, tmp_path: Path, setup: str, argv: list[str]) -> None:
    path = tmp_path / "f"
    proc = subprocess.run([str(helper), "measure", "--file", str(path), "--pages", "4", "--no-map-sync", *argv],
                          capture_output=True, timeout=60, check=True)
    mmap, done = (json.loads(line) for line in proc.stdout.splitlines())
    assert mmap["file"] == done["file"] == setup
    data = path.read_bytes()
    assert len(data) == 4 * 4096 and not (tmp_path / "f.warmup").exists()
    # Each page got its one 8-byte store; whatever the setup, the rest reads as zeros.
    assert all(data[p * 4096 + 8:(p + 1) * 4096] == bytes(4088) for p in range(4))
    assert all(int.from_bytes(data[p * 4096:p * 4096 + 8], "little") == 0x706d656d6c616231 ^ p for p in range(4))


def test_helper_refuses_an_unknown_setup(helper: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(helper), "measure", "--file", str(tmp_path / "f"), "--pages", "4", "--setup", "sparse"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "faultlat: --setup expects empty, fallocate or written, got 'sparse'"


def test_helper_without_dax_refuses_map_sync(helper: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(helper), "measure", "--file", str(tmp_path / "f"), "--pages", "4"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 3
    assert json.loads(proc.stdout.splitlines()[0]) == {"event": "mmap", "ok": False, "errno": "EOPNOTSUPP",
                                                       "map_sync": True}


def test_helper_copy_rounds(helper: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(helper), "copy", "--src", str(tmp_path / "s"), "--dst", str(tmp_path / "d"),
                           "--mib", "1", "--rounds", "2"], capture_output=True, timeout=60, check=True)
    findings, info = judge_copy(CommandResult([], 0, 9, False, proc.stdout, b"", 0), killed=True)
    assert info["rounds"] == 2 and info["bytes"] == 2 << 20
    assert (tmp_path / "d").read_bytes() == (tmp_path / "s").read_bytes()


def test_helper_is_in_the_image_recipe() -> None:
    text = (images_dir() / "debian12-pmem.toml").read_text()
    assert '"faultlat" = "guest/faultlat.c"' in text
