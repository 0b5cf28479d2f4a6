"""Exports pin what ran: the image id, kernel and QEMU; running an export on another image is refused
(or, with --any-image, warned about). Nothing here boots a machine: the refusal comes first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cases import expand, export_case_scenario
from lab.cli import cli
from lab.errors import ConfigError
from lab.image.cache import set_ref
from lab.paths import scenarios_dir
from lab.scenario import load_scenario, parse_scenario
from lab.scenario.pin import ImagePin, verify_pin
from lab.store.db import ResultsStore

PIN = ImagePin("a" * 16, "6.1.0-28-amd64", "7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)")


def _case():  # type: ignore[no-untyped-def]
    return expand(load_scenario(scenarios_dir() / "mapsync.toml"))[0]


def test_export_writes_the_pin_and_it_reads_back() -> None:
    text = export_case_scenario(_case(), PIN)
    assert f'image_id = "{PIN.image_id}"' in text and 'kernel_version = "6.1.0-28-amd64"' in text
    assert f"qemu_version = {json.dumps(PIN.qemu_version)}" in text
    assert parse_scenario(text.encode(), Path("e.toml")).pin == PIN
    assert parse_scenario(export_case_scenario(_case()).encode(), Path("e.toml")).pin is None


def test_a_version_without_an_image_id_is_refused() -> None:
    text = export_case_scenario(_case()).replace('image = "debian12-pmem"',
                                                 'image = "debian12-pmem"\nkernel_version = "6.1"')
    with pytest.raises(ConfigError, match="'kernel_version' describes a pinned image: give 'image_id' too"):
        parse_scenario(text.encode(), Path("e.toml"))


def test_verify_pin() -> None:
    same = verify_pin(PIN, "ref", PIN.image_id, "6.1.0-28-amd64", PIN.qemu_version, False, "x.toml")
    assert same.warnings == ()
    with pytest.raises(ConfigError, match=f"x.toml pins image {PIN.image_id} .kernel 6.1.0-28-amd64., but image "
                                          "'ref' now resolves to bbbb .kernel 6.12.\\d+.: set image = "):
        verify_pin(PIN, "ref", "bbbb", "6.12.9", PIN.qemu_version, False, "x.toml")
    (warning,) = verify_pin(PIN, "ref", "bbbb", "6.12.9", PIN.qemu_version, True, "x.toml").warnings
    assert "running on it anyway (--any-image)" in warning
    (warning,) = verify_pin(PIN, "ref", PIN.image_id, "6.1", "10.0.2", False, "x.toml").warnings
    assert warning == f"x.toml ran under QEMU {PIN.qemu_version}; this host has QEMU 10.0.2"
    assert verify_pin(None, "ref", "anything", "6.1", "10.0.2", False, "x.toml").warnings == ()


def _fake_image(cache: Path, image_id: str, kernel: str) -> None:
    entry = cache / "images" / image_id
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(json.dumps({"kernel_version": kernel, "initramfs": "initramfs.cpio.gz"}))


def test_export_then_run_on_another_image_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PMEMLAB_CACHE", str(cache))
    monkeypatch.setenv("PMEMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "300")
    _fake_image(cache, "1111aaaa", "6.1.0-28-amd64")
    _fake_image(cache, "2222bbbb", "6.1.0-99-amd64")
    set_ref(cache, "debian12-pmem", "1111aaaa")
    case = _case()
    db = f"sqlite:///{tmp_path / 'r.db'}"
    store = ResultsStore.open(db)
    scenario = load_scenario(scenarios_dir() / "mapsync.toml")
    store.create_campaign(campaign_id="c1", scenario_name=scenario.name, scenario_path=str(scenario.path),
                          scenario_text=scenario.text, scenario_hash=scenario.content_hash, image_id="1111aaaa",
                          kernel_version="6.1.0-28-amd64", accelerator="tcg", jobs=1, cases=[case.to_dict()])
    attempt = store.start_attempt("c1", case.id, tmp_path)
    store.finish_attempt(attempt, {"verdict": "PASS", "status": "complete", "findings": [], "timings": {},
                                   "run_dir": str(tmp_path), "qemu_version": "7.2.19"}, final=True)
    runner = CliRunner()
    out = tmp_path / "export.toml"
    result = runner.invoke(cli, ["campaign", "export", case.id, "--db", db, "-o", str(out)])
    assert result.exit_code == 0, result.output
    exported = load_scenario(out)
    assert exported.pin == ImagePin("1111aaaa", "6.1.0-28-amd64", "7.2.19")

    set_ref(cache, "debian12-pmem", "2222bbbb")  # the ref moved on to another kernel
    result = runner.invoke(cli, ["campaign", "run", str(out), "--db", db])
    assert result.exit_code == 2
    assert (f"scenario {out} pins image 1111aaaa (kernel 6.1.0-28-amd64), but image 'debian12-pmem' now "
            "resolves to 2222bbbb (kernel 6.1.0-99-amd64)") in " ".join(result.output.split())

    # A campaign that ran the export on the other image (--any-image): its repro is refused the same way.
    store.create_campaign(campaign_id="c2", scenario_name=exported.name, scenario_path=str(out),
                          scenario_text=exported.text, scenario_hash=exported.content_hash, image_id="2222bbbb",
                          kernel_version="6.1.0-99-amd64", accelerator="tcg", jobs=1,
                          cases=[c.to_dict() for c in expand(exported)])
    (only,) = expand(exported)
    attempt = store.start_attempt("c2", only.id, tmp_path)
    store.finish_attempt(attempt, {"verdict": "PASS", "status": "complete", "findings": [], "timings": {},
                                   "run_dir": str(tmp_path)}, final=True)
    store.close()
    result = runner.invoke(cli, ["repro", only.id, "--db", db, "--accel", "tcg"])
    assert result.exit_code == 2
    assert "pins image 1111aaaa" in result.output and "--any-image" in result.output
