"""Kernel-problem parser: recorded Linux 6.1 console logs and edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.guest.console import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    ConsoleScanner,
    KernelProblem,
    ProblemKind,
    classify,
    scan_console,
    scan_console_file,
    strip_prefix,
)

DATA = Path(__file__).parent / "data" / "console"
K = ProblemKind


def _log(name: str) -> str:
    return (DATA / name).read_bytes().decode()


def _summary(problems: list[KernelProblem]) -> list[tuple[ProblemKind, int, str]]:
    return [(p.kind, p.line_no, p.title) for p in problems]


def test_recorded_logs_use_crlf() -> None:
    logs = sorted(DATA.glob("*.log"))
    assert len(logs) >= 12
    for log in logs:
        raw = log.read_bytes()
        assert raw.count(b"\n") == raw.count(b"\r\n") > 0, log.name


def test_clean_boot_has_no_problems() -> None:
    # Carries "Warning: EXPERIMENTAL", "mount: ...: WARNING:", "no BUG: here",
    # "oops=panic" and "rcu:" boot lines: none is a kernel problem.
    assert scan_console_file(DATA / "clean_boot.log") == []


EXPECTED: dict[str, list[tuple[ProblemKind, int, str]]] = {
    "warning_dax.log": [
        (K.WARNING, 5, "WARNING: CPU: 1 PID: 312 at fs/dax.c:1165 dax_iomap_pte_fault+0x6b9/0x780"),
    ],
    "oops_null_deref_panic.log": [
        (K.BUG, 3, "BUG: kernel NULL pointer dereference, address: 0000000000000008"),
        (K.PANIC, 53, "Kernel panic - not syncing: Fatal exception"),
    ],
    "dmesg_x_page_fault.log": [
        (K.BUG, 3, "BUG: unable to handle page fault for address: ffffc90000a01000"),
    ],
    "kasan_uaf.log": [
        (K.KASAN, 3, "BUG: KASAN: use-after-free in ext4_dax_writeback_mapping_range+0x1c4/0x1f0"),
    ],
    "gpf_kasan.log": [
        (K.GPF, 2, "general protection fault, probably for non-canonical address "
                   "0xdffffc0000000002: 0000 [#1] PREEMPT SMP KASAN NOPTI"),
    ],
    "hung_task_no_timestamps.log": [
        (K.HUNG_TASK, 3, "INFO: task xfs_io:312 blocked for more than 122 seconds."),
    ],
    "rcu_stall.log": [
        (K.RCU_STALL, 2, "rcu: INFO: rcu_preempt self-detected stall on CPU"),
    ],
    "kernel_bug_at.log": [
        (K.BUG, 4, "kernel BUG at fs/xfs/xfs_message.c:102!"),
    ],
    "ubsan_shift.log": [
        (K.UBSAN, 3, "UBSAN: shift-out-of-bounds in fs/ext4/super.c:4191:25"),
    ],
    "interleaved_userland.log": [
        (K.WARNING, 5, "WARNING: CPU: 1 PID: 290 at mm/memory.c:3089 wp_page_copy+0x4a1/0x6c0"),
        (K.BUG, 19, "BUG: Bad page state in process pmem-workload  pfn:103c40"),
    ],
    "panic_no_root.log": [
        (K.PANIC, 7, "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_log(name: str) -> None:
    problems = scan_console_file(DATA / name)
    assert _summary(problems) == EXPECTED[name]
    for p in problems:
        # The title line is in the context, raw, with no line endings.
        assert any(p.title in line for line in p.context)
        assert not any(line.endswith(("\r", "\n")) for line in p.context)
        assert len(p.context) <= CONTEXT_BEFORE + 1 + CONTEXT_AFTER


def test_every_kind_is_covered_by_a_recording() -> None:
    seen = {kind for expected in EXPECTED.values() for kind, _, _ in expected}
    seen |= {f.kind for name in EXPECTED for p in scan_console_file(DATA / name) for f in p.folded}
    assert seen == set(ProblemKind)


def test_oops_is_folded_into_its_bug_and_panic_stays_visible() -> None:
    bug, panic = scan_console_file(DATA / "oops_null_deref_panic.log")
    assert [(f.kind, f.line_no, f.title) for f in bug.folded] == [
        (K.OOPS, 7, "Oops: 0000 [#1] PREEMPT SMP NOPTI")]
    assert panic.kind is K.PANIC and panic.folded == []
    assert panic.context[-1].endswith("---[ end Kernel panic - not syncing: Fatal exception ]---")


def test_kernel_bug_at_folds_invalid_opcode_and_stops_at_end_trace() -> None:
    (bug,) = scan_console_file(DATA / "kernel_bug_at.log")
    assert [f.title for f in bug.folded] == ["invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"]
    assert bug.context[-1].endswith("---[ end trace 0000000000000000 ]---")
    # The line after the end marker is not part of the incident.
    assert not any("assfail" in line and "102.573109" in line for line in bug.context)


def test_repeated_warning_is_counted_not_reported_twice() -> None:
    (warning,) = scan_console_file(DATA / "warning_dax.log")
    assert warning.repeats == [43]
    assert warning.count == 2
    # Context: lines before, the title, then CONTEXT_AFTER lines of the trace.
    assert warning.context[CONTEXT_BEFORE - 1].endswith("------------[ cut here ]------------")
    assert len(warning.context) == CONTEXT_BEFORE + 1 + CONTEXT_AFTER


def test_kasan_context_has_opening_banner() -> None:
    (kasan,) = scan_console_file(DATA / "kasan_uaf.log")
    assert kasan.context[1].endswith("=" * 66)
    assert kasan.context[3].endswith("Read of size 8 at addr ffff888106b9e2a8 by task pmem-workload/271")


def test_ubsan_context_stops_at_closing_banner() -> None:
    (ubsan,) = scan_console_file(DATA / "ubsan_shift.log")
    assert ubsan.context[-1].endswith("=" * 80)
    assert not any("DAX enabled" in line for line in ubsan.context)


def test_hung_task_report_folds_second_task_and_counts_later_repeat() -> None:
    (hung,) = scan_console_file(DATA / "hung_task_no_timestamps.log")
    assert [(f.line_no, f.title) for f in hung.folded] == [
        (28, "INFO: task kworker/u4:2:58 blocked for more than 122 seconds.")]
    assert hung.repeats == [68]


def test_rcu_detected_stall_folds_into_self_detected_stall() -> None:
    (stall,) = scan_console_file(DATA / "rcu_stall.log")
    assert [f.title for f in stall.folded] == ["rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"]


def test_gpf_kasan_line_is_not_a_separate_problem() -> None:
    (gpf,) = scan_console_file(DATA / "gpf_kasan.log")
    assert gpf.folded == []
    assert gpf.context[-1].endswith("---[ end trace 0000000000000000 ]---")


# --- matching rules -----------------------------------------------------------

@pytest.mark.parametrize(("line", "kind", "title"), [
    ("[   12.345678] BUG: kernel NULL pointer dereference, address: 0000000000000000",
     K.BUG, "BUG: kernel NULL pointer dereference, address: 0000000000000000"),
    ("BUG: KASAN: slab-out-of-bounds in foo+0x1/0x2", K.KASAN, "BUG: KASAN: slab-out-of-bounds in foo+0x1/0x2"),
    ("<4>[    1.000000] WARNING: CPU: 0 PID: 1 at fs/dax.c:123 func+0x12/0x34",
     K.WARNING, "WARNING: CPU: 0 PID: 1 at fs/dax.c:123 func+0x12/0x34"),
    ("[    1.000000][    T1] Oops: 0000 [#1] PREEMPT SMP NOPTI", K.OOPS, "Oops: 0000 [#1] PREEMPT SMP NOPTI"),
    ("[   9.000001][    C0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [xfs_io:300]",
     K.BUG, "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [xfs_io:300]"),
    ("Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP", K.OOPS,
     "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP"),
    ("[  3.000000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
     K.BUG, "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008"),
    ("kern  :emerg : [  2.000000] Kernel panic - not syncing: Fatal exception",
     K.PANIC, "Kernel panic - not syncing: Fatal exception"),
    ("kern  :err   : [  2.000000] INFO: task kworker/0:1:45 blocked for more than 120 seconds.",
     K.HUNG_TASK, "INFO: task kworker/0:1:45 blocked for more than 120 seconds."),
    ("[Thu Jan  4 10:00:35 2024] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
     K.RCU_STALL, "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"),
    ("INFO: rcu_sched detected expedited stalls on CPUs/tasks: {", K.RCU_STALL,
     "INFO: rcu_sched detected expedited stalls on CPUs/tasks: {"),
    ("[  1.0] UBSAN: array-index-out-of-bounds in fs/xfs/xfs_log.c:12:3  ", K.UBSAN,
     "UBSAN: array-index-out-of-bounds in fs/xfs/xfs_log.c:12:3"),
    ("[  1.0] stack segment: 0000 [#1] PREEMPT SMP", K.OOPS, "stack segment: 0000 [#1] PREEMPT SMP"),
    ("user output[  7.123456] general protection fault: 0000 [#1] SMP", K.GPF,
     "general protection fault: 0000 [#1] SMP"),
])
def test_classify(line: str, kind: ProblemKind, title: str) -> None:
    assert classify(line) == (kind, title)


@pytest.mark.parametrize("line", [
    "no WARNING: here",
    "workload: BUG: counter mismatch",
    "Oops, the test script made a typo",
    "[    0.021373] rcu: Preemptible hierarchical RCU implementation.",
    "[   87.375901] rcu: rcu_preempt kthread starved for 5150 jiffies!",
    "[   14.233601] EXT4-fs (pmem0): DAX enabled. Warning: EXPERIMENTAL, use at your own risk",
    "[   61.006035] KASAN: null-ptr-deref in range [0x0000000000000010-0x0000000000000017]",
    "[   23.403012] " + "=" * 66,
    "[   41.252418] ---[ end Kernel panic - not syncing: Fatal exception ]---",
    "[    0.000000] Command line: console=ttyS0 panic=-1 oops=panic",
    "",
])
def test_not_a_problem(line: str) -> None:
    assert classify(line) is None


def test_strip_prefix_forms() -> None:
    msg = "WARNING: CPU: 0 PID: 1 at x"
    for prefix in ["", "[   12.345678] ", "<4>[   12.345678] ", "kern  :warn  : [   12.345678] ",
                   "[   12.345678][    T1] ", "kern  :warn  : ", "[Thu Jan  4 10:00:35 2024] "]:
        assert strip_prefix(prefix + msg) == msg, prefix


# --- folding, dedup -------------------------------------------------------------

def _trace(ts: int, head: str, body: int = 3, end: bool = True) -> list[str]:
    lines = [f"[{ts:>5}.000000] {head}"]
    lines += [f"[{ts:>5}.000001]  frame_{i}+0x1/0x2" for i in range(body)]
    if end:
        lines.append(f"[{ts:>5}.000002] ---[ end trace 0000000000000000 ]---")
    return lines


def test_two_warnings_in_one_trace_are_one_problem() -> None:
    lines = (_trace(10, "WARNING: CPU: 0 PID: 1 at fs/dax.c:10 a+0x1/0x2", end=False)
             + _trace(10, "WARNING: CPU: 1 PID: 2 at fs/dax.c:20 b+0x1/0x2"))
    (warning,) = scan_console("\r\n".join(lines) + "\r\n")
    assert [f.title for f in warning.folded] == ["WARNING: CPU: 1 PID: 2 at fs/dax.c:20 b+0x1/0x2"]


def test_distinct_warnings_in_separate_traces_are_two_problems() -> None:
    lines = (_trace(10, "WARNING: CPU: 0 PID: 1 at fs/dax.c:10 a+0x1/0x2")
             + _trace(11, "WARNING: CPU: 0 PID: 1 at fs/dax.c:20 a+0x9/0x2"))
    problems = scan_console("\n".join(lines))
    assert [p.line_no for p in problems] == [1, 6]
    assert all(p.repeats == [] for p in problems)


def test_warning_then_panic_on_warn_is_two_problems() -> None:
    lines = _trace(10, "WARNING: CPU: 0 PID: 1 at fs/dax.c:10 a+0x1/0x2", end=False)
    lines.append("[   10.1] Kernel panic - not syncing: panic_on_warn set ...")
    problems = scan_console("\n".join(lines))
    assert [p.kind for p in problems] == [K.WARNING, K.PANIC]


def test_different_kind_inside_a_trace_is_reported() -> None:
    # A BUG line does not absorb a later WARNING, even within its span.
    text = "\n".join(["BUG: sleeping function called from invalid context at mm/x.c:1",
                      " frame+0x1/0x2",
                      "WARNING: CPU: 0 PID: 1 at fs/dax.c:10 a+0x1/0x2"])
    assert [p.kind for p in scan_console(text)] == [K.BUG, K.WARNING]


def test_oops_without_bug_is_reported_as_oops() -> None:
    (oops,) = scan_console("[ 1.000000] Oops: 0002 [#1] SMP\n[ 1.000001] Oops: 0002 [#2] SMP\n")
    assert oops.kind is K.OOPS and [f.line_no for f in oops.folded] == [2]


def test_span_ends_after_span_lines_without_end_marker() -> None:
    scanner = ConsoleScanner(context_after=2, span_lines=5)
    lines = ["BUG: scheduling while atomic: xfs_io/1/0x00000002"] + ["x"] * 5
    lines.append("BUG: scheduling while atomic: xfs_io/1/0x00000003")
    scanner.feed("\n".join(lines) + "\n")
    (bug,) = scanner.problems()
    assert bug.repeats == [7] and bug.folded == []
    assert bug.context == lines[:3]


# --- line endings, chunks, live tailing --------------------------------------

def test_lf_and_crlf_give_the_same_problems() -> None:
    text = _log("oops_null_deref_panic.log")
    assert [p.to_dict() for p in scan_console(text)] == \
        [p.to_dict() for p in scan_console(text.replace("\r\n", "\n"))]


def test_incremental_feed_in_tiny_chunks_matches_whole_scan() -> None:
    raw = (DATA / "interleaved_userland.log").read_bytes() + "é[ 99.000000] Kernel panic - not syncing: x\r\n".encode()
    scanner = ConsoleScanner()
    new: list[KernelProblem] = []
    for i in range(0, len(raw), 7):
        new += scanner.feed(raw[i:i + 7])
    new += scanner.finish()
    whole = scan_console(raw.decode())
    assert [p.to_dict() for p in scanner.problems()] == [p.to_dict() for p in whole]
    assert [p.line_no for p in new] == [p.line_no for p in whole] == [5, 19, 22]


def test_partial_line_waits_for_newline_or_finish() -> None:
    scanner = ConsoleScanner()
    assert scanner.feed("[   1.000000] Kernel panic - not sync") == []
    assert scanner.problems() == []
    assert [p.title for p in scanner.feed("ing: x\r\n")] == ["Kernel panic - not syncing: x"]
    assert scanner.feed("[   2.000000] WARNING: CPU: 0 PID: 1 at a.c:1 f") == []
    (late,) = scanner.finish()
    assert late.kind is K.WARNING and late.line_no == 2
    assert scanner.lines_seen == 2


def test_problems_are_snapshots_and_context_grows() -> None:
    scanner = ConsoleScanner()
    (first,) = scanner.feed("BUG: kernel NULL pointer dereference, address: 0\n")
    scanner.feed("#PF: supervisor read access in kernel mode\n")
    assert first.context == ["BUG: kernel NULL pointer dereference, address: 0"]
    (now,) = scanner.problems()
    assert now.context[-1] == "#PF: supervisor read access in kernel mode"


def test_to_dict_is_json() -> None:
    bug, _ = scan_console_file(DATA / "oops_null_deref_panic.log")
    data = json.loads(json.dumps(bug.to_dict()))
    assert data["kind"] == "BUG" and data["line_no"] == 3 and data["count"] == 1
    assert data["folded"] == [{"kind": "OOPS", "title": "Oops: 0000 [#1] PREEMPT SMP NOPTI", "line_no": 7}]
    assert data["context"][0].endswith("pmemlab-agent: ready on /dev/vport1p1 (protocol 1)")


def test_scan_console_file_replaces_bad_bytes(tmp_path: Path) -> None:
    log = tmp_path / "garbage.log"
    log.write_bytes(b"\xff\xfe\x00junk\r\n[    5.000000] BUG: unable to handle page fault for address: 0\r\n")
    (bug,) = scan_console_file(log)
    assert bug.line_no == 2 and bug.context[0] == "\ufffd\ufffd\x00junk"
