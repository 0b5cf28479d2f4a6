"""What a watch run reports: re-runs before a regression, the text report, JUnit and HTML with the
comparison, and the mail (a real SMTP server, aiosmtpd, started here; a local sendmail program).

The campaign runs themselves are seeded into the real store (tests/seed.py) in place of the QEMU
campaign child process: these tests are about what watch does with their results."""

from __future__ import annotations

import email
import email.policy
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.errors import ConfigError
from lab.store import ResultsStore
from lab.watch import run as watch_run
from lab.watch.mail import MailSettings, send
from lab.watch.plan import KernelSource, load_plan
from lab.watch.run import mail_summary, watch_once
from tests.seed import PAIR, add_campaign
from tests.unit.test_rerun import FakeRunner

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"


def plan_file(tmp: Path, extra: str = "") -> Path:
    (tmp / "kernel").mkdir(exist_ok=True)
    (tmp / "kernel" / "bzImage").write_bytes(b"\x00kernel" * 100)
    plan = tmp / "plan.toml"
    plan.write_text(f'name = "nightly"\nscenarios = ["{SMOKE}"]\ndb = "sqlite:///{tmp}/results.db"\n'
                    f'report_dir = "reports"\n[[kernel]]\nname = "mine"\ndirectory = "{tmp / "kernel"}"\n{extra}')
    return plan


@pytest.fixture()
def seeded_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Each 'campaign run' stores the next seeded campaign: the baseline, then the candidate."""
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    queue = [("base1", "6.1.0-13-amd64", 1), ("cand2", "6.1.0-14-amd64", 2)]
    ran: list[str] = []

    def fake_run(_plan: Any, store_url: str, _scenario: Path) -> int:
        ident, kernel, column = queue.pop(0)
        with ResultsStore.open(store_url) as store:
            add_campaign(store, ident, kernel, {c: (v[0], v[column]) for c, v in PAIR.items()  # type: ignore[misc]
                                                if v[column] is not None}, tmp_path / "runs", scenario="smoke")
        ran.append(ident)
        return 1

    monkeypatch.setattr(watch_run, "_run_campaign", fake_run)
    yield ran


def two_runs(tmp: Path, plan_path: Path, verdicts: list[str | Exception]) -> tuple[int, Any, FakeRunner, list[str]]:
    plan = load_plan(plan_path)
    said: list[str] = []
    built: list[tuple[str, str, str]] = []
    with ResultsStore.open(plan.db) as store:
        runner = FakeRunner(store, tmp, verdicts)

        def build(source: KernelSource, version: str, ref: str) -> None:
            built.append((source.name, version, ref))

        watch_once(plan, store, build, said.append)  # first kernel: the baseline
        (tmp / "kernel" / "bzImage").write_bytes(b"\x00kernel v2" * 100)
        status, results = watch_once(plan, store, build, said.append, rerun_factory=lambda url, cid: runner)
    assert [b[0] for b in built] == ["mine", "mine"] and built[0][1] != built[1][1]
    return status, results, runner, said


def test_a_regression_is_rerun_then_reported_in_text_junit_and_html(tmp_path: Path, seeded_runs: list[str]) -> None:
    plan = plan_file(tmp_path, "[compare]\nreruns = 2\n[report]\njunit = true\n")
    status, results, runner, said = two_runs(tmp_path, plan, ["VIOLATION", "VIOLATION"])
    assert seeded_runs == ["base1", "cand2"]
    assert status == 1 and runner.calls == ["cfsext4-syncon-1"] * 2
    assert any("re-running the failing cases of 1 failing cell(s) up to 2 time(s)" in m for m in said)
    reports = {p.name: p for p in results[0].reports}
    assert set(reports) == {"cand2.txt", "cand2.junit.xml", "cand2.html"}
    text = reports["cand2.txt"].read_text()
    assert "CHANGED: 1 regression" in text and "re-runs: VIOLATION, VIOLATION" in text

    suite = ET.parse(reports["cand2.junit.xml"]).getroot().find("testsuite")
    assert suite is not None
    failures = {tc.get("name"): tc.find("failure") for tc in suite.iter("testcase") if tc.find("failure") is not None}
    assert list(failures) == ["fs=ext4,sync=on repeat=0 crash=1"]
    assert failures["fs=ext4,sync=on repeat=0 crash=1"].get("message") == (  # type: ignore[union-attr]
        "regression: expected PASS, got VIOLATION (baseline PASS)")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}  # type: ignore[union-attr]
    assert props["baseline.id"] == "base1" and suite.get("failures") == "1"

    html = reports["cand2.html"].read_text()
    assert '<section id="changes"><h2>Changes since baseline</h2>' in html
    assert '<span class="change bad">regression</span>' in html and "fs=ext4,sync=on" in html
    assert html.index('id="changes"') < html.index('id="summary"')


def test_a_regression_that_passes_on_a_rerun_is_flaky_not_a_failure(tmp_path: Path, seeded_runs: list[str]) -> None:
    plan = plan_file(tmp_path, "[report]\njunit = true\n")  # default: 2 re-runs
    status, results, runner, _ = two_runs(tmp_path, plan, ["PASS"])
    assert status == 0 and runner.calls == ["cfsext4-syncon-1"]
    text = results[0].texts[0]
    assert "CHANGED: 1 flaky" in text and "REGRESSION" not in text and "FLAKY (1)" in text
    suite = ET.parse(results[0].reports[1]).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("skipped") == "1"
    skipped = next(tc.find("skipped") for tc in suite.iter("testcase") if tc.find("skipped") is not None)
    assert skipped is not None and skipped.get("message", "").startswith("flaky, not a regression")


def test_no_reruns_when_the_plan_says_zero(tmp_path: Path, seeded_runs: list[str]) -> None:
    status, results, runner, _ = two_runs(tmp_path, plan_file(tmp_path, "[compare]\nreruns = 0\n"), [])
    assert status == 1 and runner.calls == [] and [p.suffix for p in results[0].reports] == [".txt"]


# -- mail ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture()
def smtp() -> Iterator[tuple[int, Inbox]]:
    controller_mod = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is in the 'test' extra")
    inbox = Inbox()
    port = free_port()
    controller = controller_mod.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def test_the_summary_mail_names_the_regression(tmp_path: Path, seeded_runs: list[str],
                                               smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    plan_path = plan_file(tmp_path, f'[report]\nmail_to = ["lab@example.org"]\nsmtp_host = "127.0.0.1"\n'
                                    f"smtp_port = {port}\n")
    status, results, _, _ = two_runs(tmp_path, plan_path, ["VIOLATION", "VIOLATION"])
    plan = load_plan(plan_path)
    summary = mail_summary(plan.name, status, results)
    assert summary is not None
    r = plan.report
    assert send(MailSettings(r.mail_to, "watch@example.org", r.sendmail, r.smtp_host, r.smtp_port), *summary) is None
    deadline = time.monotonic() + 10
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    [msg] = inbox.messages
    assert msg["To"] == "lab@example.org" and msg["From"] == "watch@example.org"
    assert msg["Subject"].startswith("pmemlab watch nightly: REGRESSION: smoke: CHANGED: 1 regression")
    body = msg.get_content().replace("\r\n", "\n")  # SMTP lines end in CRLF
    assert body.startswith("pmemlab watch nightly: REGRESSION (exit status 1)")
    assert "REGRESSION (1)\n  fs=ext4,sync=on: met -> not met" in body
    assert body.index("REGRESSION (1)") < body.index("FIXED (1)")  # what changed, worst first


def test_nothing_new_sends_no_mail() -> None:
    assert mail_summary("n", 0, [watch_run.SourceResult("mine", "v", new=False)]) is None


def test_a_failure_to_send_is_a_reason_not_an_exception(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    why = send(MailSettings(("a@example.org",), smtp_host="127.0.0.1", smtp_port=port), "s", "b")
    assert why is not None and why.startswith(f"SMTP 127.0.0.1:{port}: ConnectionRefusedError")
    missing = send(MailSettings(("a@example.org",), sendmail=str(tmp_path / "no-sendmail")), "s", "b")
    assert missing is not None and "no sendmail at" in missing
    failing = tmp_path / "sendmail-fails"
    failing.write_text("#!/bin/sh\necho 'queue full' >&2\nexit 75\n")
    failing.chmod(0o755)
    assert send(MailSettings(("a@example.org",), sendmail=str(failing)), "s", "b") == (
        f"{failing} exited with status 75: queue full")


def test_sendmail_gets_the_message_on_stdin(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    program = tmp_path / "sendmail"
    program.write_text(f'#!/bin/sh\necho "$@" > {spool}.args\ncat > {spool}\n')
    program.chmod(0o755)
    assert send(MailSettings(("a@example.org", "b@example.org"), sendmail=str(program)), "subj", "body\n") is None
    msg = email.message_from_bytes(spool.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "a@example.org, b@example.org" and msg["Subject"] == "subj"
    assert (tmp_path / "spool.args").read_text().strip() == "-t -oi"


# -- plan ---------------------------------------------------------------------------------------

def test_plan_reads_compare_report_and_git(tmp_path: Path) -> None:
    (tmp_path / "frag.config").write_text("CONFIG_FS_DAX=y\n")
    plan = load_plan(plan_file(tmp_path, '[[kernel]]\nname = "next"\ngit = "linux"\nbranch = "main"\n'
                                         'config_fragment = "frag.config"\n[compare]\nreruns = 3\n'
                                         '[report]\nmail_to = ["x@y.org"]\nsendmail = "/bin/true"\n'))
    assert plan.reruns == 3 and plan.report.mail_to == ("x@y.org",) and plan.report.sendmail == "/bin/true"
    git = plan.kernels[1].git
    assert git is not None and git.tree == tmp_path / "linux" and git.branch == "main" and git.build is None
    assert git.config_fragment == tmp_path / "frag.config"
    assert load_plan(plan_file(tmp_path)).reruns == 2


@pytest.mark.parametrize(("extra", "where"), [
    ("[compare]\nreruns = -1\n", "compare.reruns: Input should be greater than or equal to 0"),
    ("[compare]\nrerun = 1\n", "compare.rerun: Extra inputs"),
    ('[report]\nmail_to = ["nobody"]\n', "report: mail_to: expected mail addresses"),
    ('[report]\nsendmail = "/x"\nsmtp_host = "h"\n', "report: give sendmail or smtp_host, not both"),
    ('[[kernel]]\nname = "g"\ngit = "/t"\ndirectory = "/d"\n', "kernel[1]: give exactly one of"),
    ('[[kernel]]\nname = "g"\ndirectory = "/d"\nbranch = "x"\n', "kernel[1]: branch, build and config_fragment"),
    ('[[kernel]]\nname = "g"\ngit = "/t"\nconfig_fragment = "nope"\n', "kernel[1].config_fragment: no such file"),
])
def test_bad_plan_settings_name_the_field(tmp_path: Path, extra: str, where: str) -> None:
    path = plan_file(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert str(info.value).startswith(f"{path}: ") and where in str(info.value), str(info.value)


def test_compare_writes_junit_and_html_with_the_changes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.seed import seed_pair

    db = f"sqlite:///{tmp_path}/results.db"
    with ResultsStore.open(db) as store:
        seed_pair(store, tmp_path / "runs")
    env = {**os.environ, "PMEMLAB_DATA": str(tmp_path / "data"), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "compare", "base1", "cand2", "--db", db,
                           "--junit", str(tmp_path / "j.xml"), "--html", str(tmp_path / "r.html")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    html = (tmp_path / "r.html").read_text()
    assert "Changes since baseline" in html and '<span class="change bad">regression</span>' in html


def test_an_infra_error_with_a_comparison_is_a_junit_error_never_a_skip(tmp_path: Path) -> None:
    """The lab failed in the candidate (INFRA-ERROR where PASS was expected): CI reading the JUnit file
    must see an error whatever the comparison calls the cell."""
    from lab.compare import compare
    from lab.report.junit import write_junit
    from tests.seed import add_campaign

    with ResultsStore.open(f"sqlite:///{tmp_path}/results.db") as store:
        add_campaign(store, "b", "6.1.0-13-amd64", {"fs=ext4": ("PASS", ["PASS"])}, tmp_path / "runs")
        add_campaign(store, "c", "6.1.0-14-amd64", {"fs=ext4": ("PASS", ["INFRA-ERROR"])}, tmp_path / "runs")
        comparison = compare(store.get_campaign("b"), store.get_campaign("c"))
        suite = ET.parse(write_junit(tmp_path / "j.xml", store.get_campaign("c"), comparison)).getroot()[0]
    assert (suite.get("errors"), suite.get("skipped")) == ("1", "0")
    assert suite.find("testcase/error") is not None and suite.find("testcase/skipped") is None


def test_an_address_with_a_line_break_is_a_one_line_failure_not_a_traceback() -> None:
    why = send(MailSettings(to=("lab@example.org\r\nBcc: everyone@example.org",), smtp_host="127.0.0.1",
                            smtp_port=1), "subject", "body")
    assert why is not None and "could not be built" in why and "\n" not in why
