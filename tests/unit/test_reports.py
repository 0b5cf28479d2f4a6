"""Campaign reports: terminal summary, JSON, JUnit XML, HTML (structure and escaping)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from lab.markup import Html, index_ranges, table
from lab.power_cut import POWER_CUT_MODEL
from lab.report.campaign import render_summary, summary_rows, summary_to_json
from lab.report.html import detail_text, kind_section, write_html
from lab.report.junit import write_junit
from lab.store import CampaignRecord, CaseRecord, ResultsStore, summarize
from lab.ui import UI

NASTY_CELL = "fs=<ext4>&[bold]x[/bold]"
NASTY_SUMMARY = "lost records </td><script>alert('x')</script> & \x01bell"


def case_dict(case_id: str, cell_key: str, crash: int, expect: str) -> dict[str, Any]:
    return {"id": case_id, "cell_key": cell_key, "cell": {"fs": cell_key}, "repeat": 0, "crash_index": crash,
            "seed": 7 + crash, "expect": expect}


def result(verdict: str, run_dir: Path, summary: str, error: str | None = None) -> dict[str, Any]:
    return {"verdict": verdict, "error": error, "run_dir": str(run_dir),
            "findings": [{"oracle": "persistence", "verdict": verdict, "summary": summary,
                          "details": {"note": "<b>&amp;</b>"}}],
            "timings": {"boot": 1.0, "total": 2.5}}


@pytest.fixture()
def campaign(tmp_path: Path) -> CampaignRecord:
    """A stored campaign: a PASS, an unexpected VIOLATION, an unexpected INFRA-ERROR, an unfinished case."""
    cases = [case_dict("c-pass", "fs=ext4", 0, "PASS"), case_dict("c-viol", NASTY_CELL, 1, "PASS"),
             case_dict("c-infra", "fs=xfs", 2, "PASS"), case_dict("c-open", "fs=xfs", 3, "PASS")]
    outcomes = {"c-pass": ("PASS", "all acked records survived", None),
                "c-viol": ("VIOLATION", NASTY_SUMMARY, None),
                "c-infra": ("INFRA-ERROR", "capture lost", "QEMU did not start <exit 1>")}
    with ResultsStore.open(f"sqlite:///{tmp_path}/results.db") as store:
        store.create_campaign(campaign_id="camp-1", scenario_name="mapsync<basic>", scenario_path="s.toml",
                              scenario_text="", scenario_hash="h", image_id="img", kernel_version="6.1",
                              accelerator="tcg", jobs=2, cases=cases)
        for case_id, (verdict, summary, error) in outcomes.items():
            run_dir = tmp_path / "runs" / f"run {case_id}"  # a space: links must be URL-quoted
            run_dir.mkdir(parents=True)
            (run_dir / "result.json").write_text("{}")
            (run_dir / "workload.console.log").write_text("boot\n")
            attempt = store.start_attempt("camp-1", case_id, run_dir)
            store.finish_attempt(attempt, result(verdict, run_dir, summary, error), final=True)
        return store.get_campaign("camp-1")


# -- summary ------------------------------------------------------------------
def test_summary_rows(campaign: CampaignRecord) -> None:
    data, cases = campaign, campaign.cases
    rows = summary_rows(summarize(data.id, cases))
    assert rows == [
        ["fs=ext4", "1", "PASS 1", "PASS", "yes", "0", "0", "0"],
        [NASTY_CELL, "1", "VIOLATION 1", "PASS", "no (0/1)", "1", "0", "0"],
        ["fs=xfs", "2", "INFRA-ERROR 1", "PASS", "no (0/2)", "1", "1", "1"],
        ["total", "4", "PASS 1, VIOLATION 1, INFRA-ERROR 1", "PASS", "no (1/4)", "2", "1", "1"],
    ]


def test_render_summary_prints_cells_literally(campaign: CampaignRecord,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    data, cases = campaign, campaign.cases
    render_summary(UI(), summarize(data.id, cases))
    out = capsys.readouterr().out
    assert NASTY_CELL in out  # [bold] is text, not markup
    assert "VIOLATION 1" in out and "no (0/1)" in out
    assert "exit status 2" in out and "eADR" in out


def test_summary_to_json(campaign: CampaignRecord) -> None:
    data, cases = campaign, campaign.cases
    out = summary_to_json(summarize(data.id, cases), cases)
    json.dumps(out)
    assert out["exit_status"] == 2
    assert [c["cell_key"] for c in out["cells"]] == ["fs=ext4", NASTY_CELL, "fs=xfs"]
    assert out["total"]["runs"] == 4 and out["total"]["all_met"] is False
    by_id = {c["id"]: c for c in out["cases"]}
    assert by_id["c-viol"]["findings"][0]["summary"] == NASTY_SUMMARY
    assert by_id["c-infra"]["error"] == "QEMU did not start <exit 1>"
    assert by_id["c-open"]["verdict"] is None and by_id["c-open"]["attempts"] == 0


# -- JUnit --------------------------------------------------------------------
def test_junit_structure(campaign: CampaignRecord, tmp_path: Path) -> None:
    data = campaign
    path = write_junit(tmp_path / "junit.xml", data)
    root = ET.parse(path).getroot()  # parses: the control character was dropped, the rest escaped
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "mapsync<basic>"
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "4", "failures": "1", "errors": "1", "skipped": "1"}
    assert float(suite.get("time") or 0) == pytest.approx(7.5)
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["campaign.id"] == "camp-1" and "QMP stop" in (props["power_cut_model"] or "")
    testcases = {tc.get("name"): tc for tc in suite.findall("testcase")}
    assert list(testcases) == ["fs=ext4 repeat=0 crash=0", f"{NASTY_CELL} repeat=0 crash=1",
                               "fs=xfs repeat=0 crash=2", "fs=xfs repeat=0 crash=3"]
    assert {tc.get("classname") for tc in testcases.values()} == {"pmemlab.mapsync<basic>"}

    passed = testcases["fs=ext4 repeat=0 crash=0"]
    assert passed.find("failure") is None and passed.find("error") is None
    assert passed.get("time") == "2.500"
    failure = testcases[f"{NASTY_CELL} repeat=0 crash=1"].find("failure")
    assert failure is not None and failure.get("message") == "expected PASS, got VIOLATION"
    assert "persistence: VIOLATION lost records </td><script>" in (failure.text or "")
    error = testcases["fs=xfs repeat=0 crash=2"].find("error")
    assert error is not None and error.get("type") == "INFRA-ERROR"
    assert error.get("message") == "expected PASS, got INFRA-ERROR: QEMU did not start <exit 1>"
    assert testcases["fs=xfs repeat=0 crash=3"].find("skipped") is not None


def test_junit_expected_infra_error_passes(tmp_path: Path) -> None:
    case = CaseRecord(id="c", campaign_id="x", cell_key="cell", repeat=0, crash_index=0, seed=7,
                      expect="INFRA-ERROR", position=0, status="finished", verdict="INFRA-ERROR",
                      met_expectation=True)
    stored = CampaignRecord(id="x", scenario_name="s", scenario_path="s.toml", scenario_hash="h", image_id="i",
                            kernel_version="6.1", accelerator="tcg", jobs=1, status="finished", created_at=None,
                            cases=(case,))
    root = ET.parse(write_junit(tmp_path / "j.xml", stored)).getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0" and root.get("tests") == "1"


# -- HTML ---------------------------------------------------------------------
class _Page(HTMLParser):
    """Collects tags, links and text; checks that every non-void tag is closed in order."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.errors == [] and page.stack == []
    return page


def test_html_structure(campaign: CampaignRecord, tmp_path: Path) -> None:
    data = campaign
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    path = write_html(out_dir / "index.html", data)
    page = parse_page(path)
    text = " ".join(page.text)
    names = [t for t, _ in page.tags]
    assert "style" in names and "script" not in names  # self-contained, and nothing injected ran
    assert not [a for t, a in page.tags if t in ("link", "img") or a.get("src")]  # no external assets
    assert POWER_CUT_MODEL in text and "QMP stop" in text and "eADR" in text
    assert names.count("article") == 4
    ids = [a.get("id") for t, a in page.tags if t == "article"]
    assert ids == ["case-c-pass", "case-c-viol", "case-c-infra", "case-c-open"]

    summary_cells = text.split("Summary", 1)[1]
    assert NASTY_CELL in summary_cells and "no (0/1)" in summary_cells
    assert NASTY_SUMMARY in text  # shown verbatim, as text
    assert "QEMU did not start <exit 1>" in text

    hrefs = [str(a["href"]) for t, a in page.tags if t == "a" and a.get("href")]
    assert hrefs and all(not h.startswith(("/", "http:", "https:", "file:")) for h in hrefs)
    for href in hrefs:  # relative to the page, URL-quoted, and they resolve
        assert (out_dir / unquote(href)).exists(), href
    assert any(h.endswith("workload.console.log") and "%20" in h for h in hrefs)


def test_html_escapes_everything(campaign: CampaignRecord, tmp_path: Path) -> None:
    data = campaign
    raw = write_html(tmp_path / "r.html", data).read_text(encoding="utf-8")
    assert "<script>" not in raw and "</td><script>" not in raw
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in raw
    assert "mapsync&lt;basic&gt;" in raw and "<basic>" not in raw
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in raw  # finding details, double-escaped as they should be


def test_html_takes_the_kinds_sections_from_the_caller(campaign: CampaignRecord, tmp_path: Path) -> None:
    section = kind_section("mapsync-contract", "<h2>contract</h2>")
    raw = write_html(tmp_path / "r.html", campaign, [section]).read_text(encoding="utf-8")
    assert raw.index('<section id="summary">') < raw.index(section) < raw.index('<section id="cases">')


# -- HTML pieces ----------------------------------------------------------------
@pytest.mark.parametrize(("indices", "text"), [
    ([], ""), ([5], "5"), ([3, 4], "3-4"), (list(range(128)) + [130], "0-127, 130"),
    ([9, 1, 2, 3, 2, 7], "1-3, 7, 9"),
])
def test_index_ranges(indices: list[int], text: str) -> None:
    assert index_ranges(indices) == text


def test_detail_text_reads_record_lists_as_ranges() -> None:
    assert detail_text(list(range(128)) + [130]) == "0-127, 130 (129)"
    corrupt = [{"index": i, "reason": "torn"} for i in (4, 5, 6)] + [{"index": 9, "reason": "bad crc"}]
    assert detail_text(corrupt) == "4-6: torn; 9: bad crc"
    assert detail_text("0-3, 7") == "0-3, 7"
    assert detail_text([]) == "none"
    assert detail_text({"a": [1, "x"]}) == '{"a": [1, "x"]}'
    assert detail_text([True, False]) == "[true, false]"  # booleans are not record indices


def test_html_findings_show_lost_records_as_ranges(tmp_path: Path) -> None:
    with ResultsStore.open(f"sqlite:///{tmp_path}/results.db") as store:
        store.create_campaign(campaign_id="c", scenario_name="s", scenario_path="s.toml", scenario_text="",
                              scenario_hash="h", image_id="i", kernel_version="6.1", accelerator="tcg", jobs=1,
                              cases=[case_dict("lossy", "fs=ext4", 0, "PASS")])
        attempt = store.start_attempt("c", "lossy", tmp_path)
        found = {"oracle": "persistence", "verdict": "VIOLATION", "summary": "129 lost",
                 "details": {"lost": list(range(128)) + [130], "durable": "0-199"}}
        store.finish_attempt(attempt, {"verdict": "VIOLATION", "findings": [found]}, final=True)
        page = parse_page(write_html(tmp_path / "r.html", store.get_campaign("c")))
    text = " ".join(page.text)
    assert "0-127, 130 (129)" in text and "0-199" in text
    assert "\n1\n" not in text and "126," not in text  # not one number per line


def test_table_escapes_text_keeps_html_and_marks_the_total() -> None:
    html = table(["a<b", Html("<i>c</i>")], [["x&y", Html("<b>ok</b>", css="unmet")], ["total", "2"]],
                 css="findings", total_row=True)
    assert html == ('<table class="findings"><thead><tr><th>a&lt;b</th><th><i>c</i></th></tr></thead><tbody>'
                    '<tr><td>x&amp;y</td><td class="unmet"><b>ok</b></td></tr>'
                    '<tr class="total"><td>total</td><td>2</td></tr></tbody></table>')


def test_summary_json_states_the_power_cut_model(campaign: CampaignRecord) -> None:
    out = summary_to_json(summarize(campaign.id, campaign.cases), campaign.cases)
    assert out["power_cut_model"] == POWER_CUT_MODEL
    assert out["exit_meaning"].startswith("incomplete evidence")
