"""Persistence oracle on synthetic captures."""

from __future__ import annotations

import json

import pytest

from lab.oracles.persistence import PersistenceResult, check_persistence, format_indices
from lab.oracles.records import PAGE_SIZE, RecordLayout, build_record
from lab.verdict import Verdict

ONE = RecordLayout(256, 1)      # one record per page
PACKED = RecordLayout(256, 16)  # a page holds 16 records


def capture(layout: RecordLayout, written: range | list[int], pages: int | None = None) -> bytearray:
    """A file as the workload leaves it: records in ``written``, zeros elsewhere."""
    last = max(written, default=-1)
    size = pages * PAGE_SIZE if pages is not None else (last // layout.records_per_page + 1) * PAGE_SIZE
    data = bytearray(size)
    for i in written:
        data[layout.offset(i):layout.end(i)] = build_record(i, layout)
    return data


def judge(data: bytearray, durable: range | list[int], layout: RecordLayout,
          total: int | None = None) -> PersistenceResult:
    return check_persistence(bytes(data), durable, layout, total)


@pytest.mark.parametrize("layout", [ONE, PACKED])
def test_all_intact_passes(layout: RecordLayout) -> None:
    result = judge(capture(layout, range(60)), range(60), layout, total=64)
    assert result.ok and result.intact == list(range(60))
    assert result.lost == [] and result.corrupt == []
    assert result.survived == 60
    finding = result.finding()
    assert finding.verdict is Verdict.PASS and finding.oracle == "persistence"
    assert finding.summary == "all 60 acknowledged records intact (60 of 64 records survived)"


def test_unacknowledged_records_may_be_missing_or_torn() -> None:
    data = capture(PACKED, range(40), pages=4)
    data[PACKED.offset(39) + 100] ^= 0xFF  # 39 torn, but never acknowledged
    result = judge(data, range(30), PACKED, total=64)
    assert result.finding().verdict is Verdict.PASS
    assert result.survived == 39  # 0..38 intact; 39 torn; 40.. never written


def test_missing_page_is_a_violation() -> None:
    data = capture(ONE, range(60))
    for i in (57, 58, 59):
        data[ONE.offset(i):ONE.end(i)] = bytes(256)
    result = judge(data, range(60), ONE)
    assert result.lost == [57, 58, 59]
    finding = result.finding()
    assert finding.verdict is Verdict.VIOLATION
    assert finding.summary == "3 of 60 acknowledged records lost: 57, 58, 59"
    assert finding.details["lost"] == [57, 58, 59]


def test_missing_page_with_packed_records_loses_the_whole_page() -> None:
    data = capture(PACKED, range(64))
    data[PAGE_SIZE:2 * PAGE_SIZE] = bytes(PAGE_SIZE)  # records 16..31
    result = judge(data, range(64), PACKED)
    assert result.lost == list(range(16, 32))
    assert result.finding().summary == "16 of 64 acknowledged records lost: 16-31"


def test_corrupted_checksum() -> None:
    data = capture(ONE, range(10))
    data[ONE.end(4) - 1] ^= 0x80
    result = judge(data, range(10), ONE)
    assert [c["index"] for c in result.corrupt] == [4]
    assert "checksum" in result.corrupt[0]["reason"]
    finding = result.finding()
    assert finding.verdict is Verdict.VIOLATION
    assert finding.summary.startswith("1 of 10 acknowledged records corrupt: 4 (record 4: checksum")


def test_corrupted_fill() -> None:
    data = capture(PACKED, range(20))
    data[PACKED.offset(17) + 100] = 0
    result = judge(data, range(20), PACKED)
    assert [c["index"] for c in result.corrupt] == [17]
    assert "fill mismatch" in result.corrupt[0]["reason"]
    assert result.finding().verdict is Verdict.VIOLATION


def test_record_written_at_the_wrong_offset() -> None:
    data = capture(PACKED, range(20))
    data[PACKED.offset(8):PACKED.end(8)] = build_record(9, PACKED)
    result = judge(data, range(20), PACKED)
    assert [c["index"] for c in result.corrupt] == [8]
    assert "seq 9 (expected 8)" in result.corrupt[0]["reason"]
    assert result.survived == 19


def test_short_file() -> None:
    data = capture(ONE, range(10))[:ONE.offset(7) + 100]  # cut inside record 7
    result = judge(data, range(10), ONE)
    assert result.lost == [7, 8, 9]
    assert result.file_too_short and result.required_size == ONE.end(9)
    summary = result.finding().summary
    assert summary.startswith("3 of 10 acknowledged records lost: 7, 8, 9; ")
    assert f"file is {len(data)} bytes, shorter than the {ONE.end(9)}" in summary


def test_short_file_beyond_last_durable_record_is_fine() -> None:
    data = capture(PACKED, range(10))[:PACKED.end(9)]
    assert judge(data, range(10), PACKED).finding().verdict is Verdict.PASS


def test_empty_durable_set_passes() -> None:
    result = judge(bytearray(), [], PACKED)
    finding = result.finding()
    assert finding.verdict is Verdict.PASS
    assert finding.summary == "no records acknowledged, nothing promised (0 of 0 records survived)"
    assert result.required_size == 0


def test_durable_is_sorted_and_deduplicated() -> None:
    result = judge(capture(ONE, range(5)), [4, 0, 2, 2], ONE)
    assert result.durable == [0, 2, 4]
    assert result.survived == 5 and result.total_records == 5


def test_default_total_covers_durable_past_end_of_file() -> None:
    result = judge(capture(ONE, range(2)), [0, 5], ONE)
    assert result.total_records == 6 and result.lost == [5]


def test_negative_index_rejected() -> None:
    with pytest.raises(ValueError):
        judge(capture(ONE, range(2)), [-1, 0], ONE)


def test_details_are_json() -> None:
    data = capture(PACKED, range(40))
    data[PACKED.offset(3):PACKED.end(3)] = bytes(256)
    data[PACKED.offset(5) + 40] ^= 1
    details = json.loads(json.dumps(judge(data, range(40), PACKED).finding().to_dict()))["details"]
    assert details["lost"] == [3]
    assert details["corrupt"][0]["index"] == 5
    assert details["durable"] == "0-39" and details["durable_count"] == 40
    assert details["records_per_page"] == 16 and details["record_size"] == 256


def test_both_lost_and_corrupt_in_summary() -> None:
    data = capture(ONE, range(8))
    data[ONE.offset(1):ONE.end(1)] = bytes(256)
    data[ONE.offset(6) + 9] ^= 1
    summary = judge(data, range(8), ONE).finding().summary
    assert summary.startswith("1 of 8 acknowledged records lost: 1; 1 of 8 acknowledged records corrupt: 6")


@pytest.mark.parametrize(("indices", "text"), [
    ([], ""),
    ([57, 58, 59], "57, 58, 59"),
    ([0, 1, 2, 3, 7], "0-3, 7"),
    ([7, 3, 2, 1, 0, 3], "0-3, 7"),
    ([1, 2, 5, 6, 7, 8, 9, 20], "1, 2, 5-9, 20"),
])
def test_format_indices(indices: list[int], text: str) -> None:
    assert format_indices(indices) == text


def test_format_indices_limit() -> None:
    assert format_indices(list(range(0, 50, 2)), limit=3) == "0, 2, 4, ... (+22 more)"
    assert format_indices(list(range(0, 50, 2)), limit=None).count(",") == 24
